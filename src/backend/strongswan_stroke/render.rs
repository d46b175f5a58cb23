//! Desired state → `ipsec.conf` and `ipsec.secrets` text (pure, through the templates).
//!
//! Fixes over the Python monitor's rendering (reference §3.1), each covered by a test:
//! - `left=<local_ip>` when `options:local_ip` is set (Python always wrote `%any`);
//! - the protoport selectors and the `ipsec_skb_mark` shunts use the tunnel's real UDP port
//!   (`options:dst_port`), not the IANA default;
//! - the PSK is written `0x`-hex, so no byte of it can leave its field;
//! - two tunnels whose PSK lines would have the same selectors but different keys are
//!   rejected with a reason instead of letting charon pick one of the keys silently;
//! - identical secrets lines are written once;
//! - the `ca` section has `auto=add`: without it charon ignores the section (the default is
//!   `auto=ignore`), so the Python monitor's CA mode never loaded the CA.
//!
//! The on-disk file may also carry certificate stamps (see [`super::stamps`]); they are
//! appended by the caller and are not part of what is rendered here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::backend::secrets::psk_hex;
use crate::backend::templates::{TemplateError, Templates};
use crate::model::{Auth, Desired, DesiredTunnel, TunnelType};

pub const CONF_TEMPLATE: &str = "strongswan/ipsec.conf";
pub const SECRETS_TEMPLATE: &str = "strongswan/ipsec.secrets";
pub const OVS_CONF_TEMPLATE: &str = "strongswan/ovs.conf";

/// The compiled-in templates; an admin may override each one (see `backend::templates`).
pub const DEFAULTS: &[(&str, &str)] = &[
    (
        CONF_TEMPLATE,
        include_str!("../../../templates/strongswan/ipsec.conf"),
    ),
    (
        SECRETS_TEMPLATE,
        include_str!("../../../templates/strongswan/ipsec.secrets"),
    ),
    (
        OVS_CONF_TEMPLATE,
        include_str!("../../../templates/strongswan/ovs.conf"),
    ),
];

/// Prefix of the drop shunts rendered for `ipsec_skb_mark`.
pub const SHUNT_PREFIX: &str = "prevent_unencrypted_";

#[derive(Serialize)]
struct Shunt {
    name: String,
    protoport: String,
    mark: String,
}

#[derive(Serialize)]
struct Conn {
    name: String,
    left: String,
    right: String,
    psk: bool,
    leftid: Option<String>,
    rightid: Option<String>,
    leftcert: Option<String>,
    rightcert: Option<String>,
    custom: Vec<(String, String)>,
    leftprotoport: String,
    rightprotoport: String,
}

#[derive(Serialize)]
struct SecretLine {
    local: String,
    remote: String,
    kind: &'static str,
    /// `0x…` for a PSK: never written verbatim.
    value: String,
}

#[derive(Serialize)]
struct ConfCtx {
    shunts: Vec<Shunt>,
    ca_cert: Option<String>,
    conns: Vec<Conn>,
}

#[derive(Serialize)]
struct SecretsCtx {
    secrets: Vec<SecretLine>,
}

/// What a desired state renders to. Deliberately not `Debug`: `secrets` holds PSKs.
pub struct Rendered {
    pub conf: String,
    pub secrets: String,
    /// Every connection the file defines (tunnels and shunts): what charon must have loaded.
    pub conns: BTreeSet<String>,
    /// Certificate files the connections load, to stamp (see [`super::stamps`]).
    pub certs: BTreeSet<PathBuf>,
    /// Tunnels left out of the files, with the reason.
    pub rejected: BTreeMap<String, String>,
}

/// `left=`: the tunnel's `local_ip`, else `%any` (charon picks the source by route).
fn left(t: &DesiredTunnel) -> String {
    t.conf
        .local_ip
        .map_or_else(|| "%any".to_owned(), |ip| ip.to_string())
}

/// `(leftprotoport, rightprotoport)` of each connection of `t`, in `conn_names` order:
/// the inbound connection has the tunnel port on our side, the outbound one on the peer's.
fn protoports(t: &DesiredTunnel) -> Vec<(String, String)> {
    match t.conf.udp_port() {
        None => vec![("gre".into(), "gre".into())],
        Some(port) => vec![
            (format!("udp/{port}"), "udp".into()),
            ("udp".into(), format!("udp/{port}")),
        ],
    }
}

fn conns_of(t: &DesiredTunnel, desired: &Desired) -> Vec<Conn> {
    let c = &t.conf;
    let pki = c.pki.as_ref().or(desired.global.pki.as_ref());
    let path = |p: &PathBuf| p.display().to_string();
    t.conn_names()
        .into_iter()
        .zip(protoports(t))
        .map(|(name, (leftprotoport, rightprotoport))| Conn {
            name,
            left: left(t),
            right: c.remote_ip.to_string(),
            psk: matches!(c.auth, Auth::Psk(_)),
            leftid: c.auth.remote_name().and(pki.map(|p| p.local_name.clone())),
            rightid: c.auth.remote_name().map(str::to_owned),
            leftcert: c.auth.remote_name().and(pki.map(|p| path(&p.certificate))),
            rightcert: match &c.auth {
                Auth::SelfSigned { remote_cert, .. } => Some(path(remote_cert)),
                _ => None,
            },
            custom: c
                .custom
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            leftprotoport,
            rightprotoport,
        })
        .collect()
}

/// The drop shunts for `ipsec_skb_mark`: one per protocol at its default port (as the Python
/// monitor did) plus one per other port a tunnel really uses.
fn shunts(desired: &Desired) -> Vec<Shunt> {
    let Some(mark) = desired.global.skb_mark else {
        return Vec::new();
    };
    let mut ports: BTreeSet<(TunnelType, Option<u16>)> =
        [TunnelType::Gre, TunnelType::Geneve, TunnelType::Vxlan]
            .into_iter()
            .map(|k| (k, k.default_udp_port()))
            .collect();
    ports.extend(
        desired
            .tunnels
            .values()
            .map(|t| (t.conf.kind, t.conf.udp_port())),
    );
    ports
        .into_iter()
        .map(|(kind, port)| {
            let default = port == kind.default_udp_port();
            Shunt {
                name: match port {
                    Some(p) if !default => format!("{SHUNT_PREFIX}{kind}_{p}"),
                    _ => format!("{SHUNT_PREFIX}{kind}"),
                },
                protoport: port.map_or_else(|| "gre".to_owned(), |p| format!("udp/{p}")),
                mark: mark.to_string(),
            }
        })
        .collect()
}

/// The secrets line of `t`: `(selectors, kind, value)`.
fn secret_of(t: &DesiredTunnel, desired: &Desired) -> Option<(String, &'static str, String)> {
    let selectors = format!("{} {}", left(t), t.conf.remote_ip);
    match &t.conf.auth {
        Auth::Psk(psk) => Some((selectors, "PSK", psk_hex(psk))),
        Auth::SelfSigned { .. } | Auth::CaSigned { .. } => {
            let pki = t.conf.pki.as_ref().or(desired.global.pki.as_ref())?;
            Some((selectors, "RSA", p_display(&pki.private_key)))
        }
    }
}

fn p_display(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Tunnels that cannot be rendered next to the others, with the reason: a secrets line whose
/// selectors another tunnel (earlier by name) already uses with a different secret.
pub fn rejections(desired: &Desired) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, (&str, String)> = BTreeMap::new();
    let mut rejected = BTreeMap::new();
    for (name, t) in &desired.tunnels {
        let Some((sel, _, value)) = secret_of(t, desired) else {
            continue;
        };
        match seen.get(&sel) {
            Some((first, v)) if *v != value => {
                rejected.insert(
                    name.clone(),
                    format!(
                        "tunnel '{first}' uses a different secret for the same endpoints \
                         ({sel}); strongSwan would pick one of them"
                    ),
                );
            }
            Some(_) => {}
            None => {
                seen.insert(sel, (name.as_str(), value));
            }
        }
    }
    rejected
}

/// Renders the files for `desired`.
pub fn render(templates: &Templates, desired: &Desired) -> Result<Rendered, TemplateError> {
    let rejected = rejections(desired);
    let accepted = || {
        desired
            .tunnels
            .iter()
            .filter(|(n, _)| !rejected.contains_key(*n))
            .map(|(_, t)| t)
    };
    let shunts = shunts(desired);
    let conns: Vec<Conn> = accepted().flat_map(|t| conns_of(t, desired)).collect();
    let mut secrets: Vec<SecretLine> = Vec::new();
    let mut written = BTreeSet::new();
    for t in accepted() {
        let Some((sel, kind, value)) = secret_of(t, desired) else {
            continue;
        };
        if written.insert(sel) {
            secrets.push(SecretLine {
                local: left(t),
                remote: t.conf.remote_ip.to_string(),
                kind,
                value,
            });
        }
    }
    let pki = desired.global.pki.as_ref();
    let ca_cert = pki.and_then(|p| p.ca_cert.as_ref()).map(|p| p_display(p));
    let mut certs: BTreeSet<PathBuf> = pki.and_then(|p| p.ca_cert.clone()).into_iter().collect();
    for c in &conns {
        certs.extend(c.leftcert.iter().chain(&c.rightcert).map(PathBuf::from));
    }
    let names = shunts
        .iter()
        .map(|s| s.name.clone())
        .chain(conns.iter().map(|c| c.name.clone()))
        .collect();
    let ctx = ConfCtx {
        shunts,
        ca_cert,
        conns,
    };
    Ok(Rendered {
        conf: templates.render(CONF_TEMPLATE, &ctx)?,
        secrets: templates.render(SECRETS_TEMPLATE, &SecretsCtx { secrets })?,
        conns: names,
        certs,
        rejected,
    })
}

/// The files as they are before any tunnel exists (restart and cleanup).
pub fn empty(templates: &Templates) -> Result<Rendered, TemplateError> {
    render(templates, &Desired::default())
}

/// The charon drop-in written before a restart.
pub fn ovs_conf(templates: &Templates) -> Result<String, TemplateError> {
    templates.render(OVS_CONF_TEMPLATE, &serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{desired, psk_tunnel, templates, with};
    use super::*;
    use crate::model::SkbMark;

    fn section<'a>(conf: &'a str, conn: &str) -> Vec<&'a str> {
        let head = format!("conn {conn}\n");
        let start = conf.find(&head).expect(conn) + head.len();
        conf[start..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(str::trim)
            .collect()
    }

    #[test]
    fn local_ip_and_dst_port_are_honoured() {
        let t = with(psk_tunnel("gnv", "geneve", "192.0.2.2", "k", 3), |c| {
            c.local_ip = Some("192.0.2.1".parse().unwrap());
            c.dst_port = Some(6090);
        });
        let r = render(&templates(), &desired(vec![t])).unwrap();
        assert_eq!(
            section(&r.conf, "gnv-in-3"),
            [
                "left=192.0.2.1",
                "right=192.0.2.2",
                "authby=psk",
                "leftprotoport=udp/6090",
                "rightprotoport=udp"
            ]
        );
        assert_eq!(
            section(&r.conf, "gnv-out-3")[3..],
            ["leftprotoport=udp", "rightprotoport=udp/6090"]
        );
        assert_eq!(
            r.secrets.lines().last(),
            Some("192.0.2.1 192.0.2.2 : PSK 0x6b")
        );
    }

    #[test]
    fn hostile_psk_cannot_leave_its_field() {
        let t = psk_tunnel("g", "gre", "192.0.2.9", "x\"\nconn evil\n#", 1);
        let r = render(&templates(), &desired(vec![t])).unwrap();
        assert!(!r.secrets.contains("evil") && !r.conf.contains("evil"));
        assert_eq!(r.secrets.lines().count(), 3, "{}", r.secrets);
    }

    #[test]
    fn conflicting_psks_for_the_same_endpoints_are_rejected_not_guessed() {
        let a = psk_tunnel("a", "vxlan", "192.0.2.2", "one", 1);
        let b = psk_tunnel("b", "gre", "192.0.2.2", "two", 1);
        let c = psk_tunnel("c", "geneve", "192.0.2.2", "one", 1);
        let r = render(&templates(), &desired(vec![a, b, c])).unwrap();
        assert_eq!(r.rejected.keys().collect::<Vec<_>>(), ["b"]);
        assert!(
            r.rejected["b"].contains("tunnel 'a'"),
            "{}",
            r.rejected["b"]
        );
        assert!(!r.conf.contains("conn b-1"));
        assert!(r.conns.contains("c-in-1") && r.conns.contains("a-out-1"));
        assert_eq!(r.secrets.matches(": PSK").count(), 1);
    }

    #[test]
    fn shunts_cover_the_ports_in_use() {
        let t = with(psk_tunnel("v", "vxlan", "192.0.2.2", "k", 1), |c| {
            c.dst_port = Some(4790)
        });
        let mut d = desired(vec![t]);
        d.global.skb_mark = Some(SkbMark { value: 0, mask: 1 });
        let r = render(&templates(), &d).unwrap();
        for (name, pp) in [
            ("prevent_unencrypted_gre", "gre"),
            ("prevent_unencrypted_geneve", "udp/6081"),
            ("prevent_unencrypted_vxlan", "udp/4789"),
            ("prevent_unencrypted_vxlan_4790", "udp/4790"),
        ] {
            assert_eq!(
                section(&r.conf, name),
                ["type=drop", &format!("leftprotoport={pp}"), "mark=0/1"]
            );
            assert!(r.conns.contains(name));
        }
    }
}
