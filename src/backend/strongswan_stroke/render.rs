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
//! - the `ca` sections have `auto=add`: without it charon ignores a section (the default is
//!   `auto=ignore`), so the Python monitor's CA mode never loaded the CA;
//! - every CA of a `ca_cert` bundle is trusted, each from its own file and section
//!   ([`super::cafiles`]);
//! - private keys are `: PKCS8 <file>`, which lets charon find the key's type: with the
//!   Python monitor's `: RSA` every EC key failed to load.
//!
//! The on-disk file may also carry certificate stamps (see [`super::stamps`]); they are
//! appended by the caller and are not part of what is rendered here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::cafiles::{self, CaSection};

use crate::backend::secrets::psk_hex;
use crate::backend::templates::{SectionCache, TemplateError, Templates, assemble};
use crate::model::{Auth, Desired, DesiredTunnel, Pki, TunnelType};

pub const CONF_TEMPLATE: &str = "strongswan/ipsec.conf";
/// One `conn` section of a tunnel, rendered on its own so it can be cached.
pub const CONN_TEMPLATE: &str = "strongswan/conn.conf";
pub const SECRETS_TEMPLATE: &str = "strongswan/ipsec.secrets";
/// One tunnel's line of `ipsec.secrets`, rendered on its own so it can be cached.
pub const SECRET_TEMPLATE: &str = "strongswan/secret.conf";
pub const OVS_CONF_TEMPLATE: &str = "strongswan/ovs.conf";

/// The compiled-in templates; an admin may override each one (see `backend::templates`).
pub const DEFAULTS: &[(&str, &str)] = &[
    (
        CONF_TEMPLATE,
        include_str!("../../../templates/strongswan/ipsec.conf"),
    ),
    (
        CONN_TEMPLATE,
        include_str!("../../../templates/strongswan/conn.conf"),
    ),
    (
        SECRETS_TEMPLATE,
        include_str!("../../../templates/strongswan/ipsec.secrets"),
    ),
    (
        SECRET_TEMPLATE,
        include_str!("../../../templates/strongswan/secret.conf"),
    ),
    (
        OVS_CONF_TEMPLATE,
        include_str!("../../../templates/strongswan/ovs.conf"),
    ),
];

/// Prefix of the drop shunts rendered for `ipsec_skb_mark`.
pub const SHUNT_PREFIX: &str = "prevent_unencrypted_";

#[derive(Clone, Serialize)]
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
struct ConfCtx<'a> {
    shunts: Vec<Shunt>,
    /// The bundle file itself (kept for administrators' templates written before bundles).
    ca_cert: Option<String>,
    cas: Vec<CaSection>,
    /// The tunnels' `conn` sections, already rendered through [`CONN_TEMPLATE`].
    sections: Vec<&'a str>,
}

#[derive(Serialize)]
struct ConnCtx<'a> {
    c: &'a Conn,
}

/// What a tunnel's sections are rendered from: the tunnel and the PKI it falls back to.
#[derive(PartialEq)]
pub struct SectionInput {
    tunnel: DesiredTunnel,
    pki: Option<Pki>,
}

/// The tunnels' rendered text, kept between passes (see [`SectionCache`]).
pub type Sections = SectionCache<SectionInput, Arc<TunnelText>>;

#[derive(Serialize)]
struct SecretsCtx<'a> {
    /// Lines already rendered through [`SECRET_TEMPLATE`], one per distinct selector pair.
    lines: Vec<&'a str>,
}

#[derive(Serialize)]
struct SecretCtx {
    s: SecretLine,
}

/// A tunnel's rendered text, kept between passes. Not `Debug`: `secret` holds its PSK.
pub struct TunnelText {
    /// Its `conn` sections.
    conf: String,
    /// Its secrets line, with the selectors two tunnels must not share with different
    /// secrets.
    secret: Option<(String, String)>,
}

/// What a desired state renders to. Deliberately not `Debug`: `secrets` holds PSKs.
pub struct Rendered {
    pub conf: String,
    pub secrets: String,
    /// Every connection the file defines (tunnels and shunts): what charon must have loaded.
    pub conns: BTreeSet<String>,
    /// Certificate and private key files the connections load, to stamp (see
    /// [`super::conffile`]).
    pub certs: BTreeSet<PathBuf>,
    /// The private keys `ipsec.secrets` names.
    pub keys: BTreeSet<PathBuf>,
    /// The CA files the `ca` sections name, with their content (DER).
    pub cas: BTreeMap<PathBuf, Vec<u8>>,
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

/// The PKI a tunnel's certificate auth uses: its own, else the global one.
fn pki_of<'a>(t: &'a DesiredTunnel, desired: &'a Desired) -> Option<&'a Pki> {
    t.conf.pki.as_deref().or(desired.global.pki.as_deref())
}

fn conns_of(t: &DesiredTunnel, pki: Option<&Pki>) -> Vec<Conn> {
    let c = &t.conf;
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
    secret_for(t, pki_of(t, desired))
}

/// The selectors of `t`'s secrets line (`left right`).
pub fn selectors(t: &DesiredTunnel) -> String {
    format!("{} {}", left(t), t.conf.remote_ip)
}

fn secret_for(t: &DesiredTunnel, pki: Option<&Pki>) -> Option<(String, &'static str, String)> {
    let selectors = selectors(t);
    match &t.conf.auth {
        Auth::Psk(psk) => Some((selectors, "PSK", psk_hex(psk))),
        Auth::SelfSigned { .. } | Auth::CaSigned { .. } => {
            Some((selectors, "PKCS8", p_display(&pki?.private_key)))
        }
    }
}

fn p_display(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Tunnels that cannot be rendered next to the others, with the reason: a secrets line whose
/// selectors another tunnel (earlier by name) already uses with a different secret.
pub fn rejections(desired: &Desired) -> BTreeMap<String, String> {
    let secrets: Vec<_> = desired
        .tunnels
        .iter()
        .map(|(name, t)| (name.as_str(), secret_of(t, desired)))
        .collect();
    conflicts(secrets.iter().map(|(name, s)| {
        (
            *name,
            s.as_ref().map(|(sel, _, v)| (sel.as_str(), v.as_str())),
        )
    }))
}

/// [`rejections`] over `(tunnel, (selectors, secret))` in name order.
fn conflicts<'a>(
    secrets: impl Iterator<Item = (&'a str, Option<(&'a str, &'a str)>)>,
) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut rejected = BTreeMap::new();
    for (name, secret) in secrets {
        let Some((sel, value)) = secret else {
            continue;
        };
        match seen.get(sel) {
            Some((first, v)) if *v != value => {
                rejected.insert(
                    name.to_owned(),
                    format!(
                        "tunnel '{first}' uses a different secret for the same endpoints \
                         ({sel}); strongSwan would pick one of them"
                    ),
                );
            }
            Some(_) => {}
            None => {
                seen.insert(sel, (name, value));
            }
        }
    }
    rejected
}

/// Renders one tunnel's `conn` sections and secrets line.
fn tunnel_text(templates: &Templates, i: &SectionInput) -> Result<Arc<TunnelText>, TemplateError> {
    let t = &i.tunnel;
    let conf = conns_of(t, i.pki.as_ref())
        .iter()
        .map(|c| templates.render(CONN_TEMPLATE, &ConnCtx { c }))
        .collect::<Result<String, _>>()?;
    let secret = match secret_for(t, i.pki.as_ref()) {
        Some((sel, kind, value)) => {
            let s = SecretLine {
                local: left(t),
                remote: t.conf.remote_ip.to_string(),
                kind,
                value,
            };
            Some((sel, templates.render(SECRET_TEMPLATE, &SecretCtx { s })?))
        }
        None => None,
    };
    Ok(Arc::new(TunnelText { conf, secret }))
}

/// Renders the files for `desired`, reusing the text of unchanged tunnels from `sections`;
/// the CA files are in `ca_dir`.
pub fn render(
    ca_dir: &Path,
    templates: &Templates,
    sections: &Sections,
    desired: &Desired,
) -> Result<Rendered, TemplateError> {
    let texts = sections.render_all(
        desired.tunnels.iter().map(|(name, t)| {
            let input = SectionInput {
                tunnel: t.clone(),
                pki: pki_of(t, desired).cloned(),
            };
            (name.as_str(), input)
        }),
        |i| tunnel_text(templates, i),
    )?;
    let named = || desired.tunnels.iter().zip(&texts);
    let rejected = conflicts(named().map(|((name, _), text)| {
        let secret = text.secret.as_ref();
        (
            name.as_str(),
            secret.map(|(sel, line)| (sel.as_str(), line.as_str())),
        )
    }));
    let accepted = || named().filter(|((n, _), _)| !rejected.contains_key(*n));
    let shunts = shunts(desired);
    let mut names: BTreeSet<String> = shunts.iter().map(|s| s.name.clone()).collect();
    let pki = desired.global.pki.as_ref();
    let mut certs = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut written = BTreeSet::new();
    let mut lines = Vec::new();
    for ((_, t), text) in accepted() {
        names.extend(t.conn_names());
        if t.conf.auth.remote_name().is_some()
            && let Some(p) = pki_of(t, desired)
        {
            certs.insert(p.certificate.clone());
            keys.insert(p.private_key.clone());
        }
        if let Auth::SelfSigned { remote_cert, .. } = &t.conf.auth {
            certs.insert(remote_cert.clone());
        }
        if let Some((sel, line)) = &text.secret
            && written.insert(sel.as_str())
        {
            lines.push(line.as_str());
        }
    }
    let ca_cert = pki.and_then(|p| p.ca_cert.as_ref());
    // The bundle the model read for that path (see `model::Global::ca_bundle`).
    let members = (desired.global.ca_bundle.as_ref())
        .filter(|b| Some(&b.path) == ca_cert)
        .map_or(&[][..], |b| &b.members[..]);
    let (ca_sections, cas) = cafiles::sections(ca_dir, members);
    let ca_cert = ca_cert.map(|p| p_display(p));
    let sections: Vec<&str> = accepted().map(|(_, text)| text.conf.as_str()).collect();
    let conf = assemble(&sections, |sections| {
        let ctx = ConfCtx {
            shunts: shunts.clone(),
            ca_cert: ca_cert.clone(),
            cas: ca_sections.clone(),
            sections,
        };
        templates.render(CONF_TEMPLATE, &ctx)
    })?;
    Ok(Rendered {
        conf,
        secrets: assemble(&lines, |lines| {
            templates.render(SECRETS_TEMPLATE, &SecretsCtx { lines })
        })?,
        conns: names,
        certs: certs.union(&keys).cloned().collect(),
        keys,
        cas,
        rejected,
    })
}

/// The files as they are before any tunnel exists (restart and cleanup).
pub fn empty(templates: &Templates) -> Result<Rendered, TemplateError> {
    render(
        Path::new("/"),
        templates,
        &Sections::default(),
        &Desired::default(),
    )
}

/// The charon drop-in written before a restart.
pub fn ovs_conf(templates: &Templates) -> Result<String, TemplateError> {
    templates.render(OVS_CONF_TEMPLATE, &serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{ca_dir, desired, psk_tunnel, rendered, templates, with};
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
        let r = rendered(&desired(vec![t]));
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
        let r = rendered(&desired(vec![t]));
        assert!(!r.secrets.contains("evil") && !r.conf.contains("evil"));
        assert_eq!(r.secrets.lines().count(), 3, "{}", r.secrets);
    }

    #[test]
    fn conflicting_psks_for_the_same_endpoints_are_rejected_not_guessed() {
        let a = psk_tunnel("a", "vxlan", "192.0.2.2", "one", 1);
        let b = psk_tunnel("b", "gre", "192.0.2.2", "two", 1);
        let c = psk_tunnel("c", "geneve", "192.0.2.2", "one", 1);
        let r = rendered(&desired(vec![a, b, c]));
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
        let r = rendered(&d);
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

    #[test]
    fn sections_keep_the_python_layout_and_are_reused_until_their_tunnel_changes() {
        let sections = Sections::default();
        let a = psk_tunnel("a", "vxlan", "192.0.2.2", "one", 1);
        let b = psk_tunnel("b", "gre", "192.0.2.3", "two", 1);
        let r = render(
            ca_dir(),
            &templates(),
            &sections,
            &desired(vec![a.clone(), b]),
        )
        .unwrap();
        let tail = "conn a-in-1\n    left=%any\n    right=192.0.2.2\n    authby=psk\n    \
                    leftprotoport=udp/4789\n    rightprotoport=udp\n\n\
                    conn a-out-1\n    left=%any\n    right=192.0.2.2\n    authby=psk\n    \
                    leftprotoport=udp\n    rightprotoport=udp/4789\n\n\
                    conn b-1\n    left=%any\n    right=192.0.2.3\n    authby=psk\n    \
                    leftprotoport=gre\n    rightprotoport=gre\n\n";
        assert!(
            r.conf
                .ends_with(&format!("esp=aes256gcm16-modp2048\n\n{tail}")),
            "{}",
            r.conf
        );
        // b changes (new remote, new version): its section follows, a's is reused as is.
        let b2 = psk_tunnel("b", "gre", "192.0.2.4", "two", 2);
        let r2 = render(ca_dir(), &templates(), &sections, &desired(vec![a, b2])).unwrap();
        assert!(
            r2.conf
                .contains("conn b-2\n    left=%any\n    right=192.0.2.4\n")
        );
        assert!(!r2.conf.contains("b-1") && r2.conf.contains("conn a-out-1\n"));
        assert_eq!(r2.conf.len(), r.conf.len());
    }
}
