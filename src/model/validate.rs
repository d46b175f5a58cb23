//! Validation of one Interface row into a [`Validity`], and of the global PKI keys, in the
//! reference's order.
//!
//! The Python monitor's checks come first, in its order and with its exact reasons (OVS's
//! tests and operators grep them); its key tests are truthiness tests, so an empty value
//! counts as unset. Then come our own checks, which the Python monitor lacked: every value
//! that reaches a backend must pass its [`grammar`], `local_ip` and `remote_ip` must be of
//! the same family, and `dst_port` is honoured for UDP tunnels.
//!
//! Two deliberate differences:
//! - A `remote_cert` whose CN cannot be read is reported as such (Python silently fell back
//!   to "must choose a authentication method", and crashed with Libreswan).
//! - Python's "must set 'private_key'" reason cannot occur: the PKI in force always has both
//!   a certificate and a key (an invalid global configuration is never applied), so tunnels
//!   are checked against it and only the 'certificate' reason remains.
//!
//! A [`TunnelConf`] carries `pki: Some(..)` only in certificate modes, so a PKI change gives
//! a new configuration (and version) to exactly the tunnels that depend on it. It holds the
//! *effective* configuration, one value per meaning: addresses are parsed, and a `dst_port`
//! equal to the type's default is stored as unset, so spelling out a default (as OVN does)
//! changes neither the version nor any connection name.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::cert::CertSource;
use super::grammar::{self, CUSTOM_PREFIX, GrammarError};
use super::rows::InterfaceRow;
use super::types::{Auth, Family, Pki, RawTunnel, StaticKeying, TunnelConf, TunnelType, Validity};

pub const REMOTE_IP_NOT_SET: &str = ": 'remote_ip' is not set";
pub const PSK_WITH_PKI: &str = ": 'certificate', 'private_key', 'ca_cert', 'remote_cert', and 'remote_name' must be unset with PSK";
pub const NO_CERTIFICATE: &str = ": must set 'certificate' as local certificate when using CA-signed certificate or self-signed certificate to authenticate peers";
pub const NO_PEER_AUTH: &str = ": must set 'remote_cert' when using self-signed certificate authentication or 'ca_cert' when using CA-signed certificate authentication";
pub const NO_AUTH_METHOD: &str = ": must choose a authentication method";

/// `ipsec_*` options read by the static-key backend itself: never passed to an IKE daemon
/// (one is a secret) and never shown as custom options.
pub const STATIC_KEYING_OPTIONS: [&str; 2] = ["ipsec_psk_next", "ipsec_peer_generation"];

/// Options whose presence makes a gre/geneve/vxlan row an IPsec tunnel.
const AUTH_KEYS: [&str; 3] = ["psk", "remote_cert", "remote_name"];

/// True when the row is an IPsec tunnel: a gre, geneve or vxlan interface whose options
/// have `psk`, `remote_cert` or `remote_name` (key presence is enough).
pub fn is_ipsec_tunnel(row: &InterfaceRow) -> bool {
    TunnelType::parse(&row.kind).is_some() && AUTH_KEYS.iter().any(|k| row.options.contains_key(k))
}

/// The row as configured, for display; the PSK is reduced to whether it is set.
pub fn raw(row: &InterfaceRow) -> RawTunnel {
    let get = |key: &str| row.options.get(key).cloned();
    RawTunnel {
        kind: row.kind.clone(),
        local_ip: get("local_ip"),
        remote_ip: get("remote_ip"),
        dst_port: get("dst_port"),
        remote_cert: get("remote_cert"),
        remote_name: get("remote_name"),
        psk_set: row.options.contains_key("psk"),
        custom: custom_options(row)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

/// Validates an IPsec tunnel row against the PKI in force.
pub fn validate(
    row: &InterfaceRow,
    pki: Option<&Arc<Pki>>,
    certs: &mut dyn CertSource,
) -> Validity {
    match tunnel_conf(row, pki, certs) {
        Ok(conf) => Validity::Valid(Arc::new(conf)),
        Err(reason) => Validity::Invalid(reason),
    }
}

/// The global PKI from `Open_vSwitch:other_config`: `Ok(None)` when none of `certificate`,
/// `private_key`, `ca_cert` is set, `Ok(Some(..))` when the first two are set and the
/// certificate's CN is a valid identity, else the reason (without a leading ": ").
pub fn global_pki(
    other_config: &BTreeMap<String, String>,
    certs: &mut dyn CertSource,
) -> Result<Option<Pki>, String> {
    let get = |key: &str| {
        other_config
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let (certificate, private_key, ca_cert) =
        match (get("certificate"), get("private_key"), get("ca_cert")) {
            (None, None, None) => return Ok(None),
            (Some(c), Some(k), ca) => (c, k, ca),
            (Some(_), None, _) => return Err("'private_key' is not set".to_owned()),
            (None, Some(_), _) => return Err("'certificate' is not set".to_owned()),
            (None, None, Some(_)) => {
                return Err("'ca_cert' is set without 'certificate' and 'private_key'".to_owned());
            }
        };
    let certificate = grammar::path("certificate", certificate).map_err(|e| e.to_string())?;
    let private_key = grammar::path("private_key", private_key).map_err(|e| e.to_string())?;
    let ca_cert = ca_cert
        .map(|ca| grammar::path("ca_cert", ca))
        .transpose()
        .map_err(|e| e.to_string())?;
    let info = certs
        .cert_info(&certificate)
        .map_err(|e| format!("invalid 'certificate': {e}"))?;
    let local_name = grammar::identity("CN of certificate", &info.cn).map_err(|e| e.to_string())?;
    Ok(Some(Pki {
        certificate,
        private_key,
        ca_cert,
        local_name,
    }))
}

/// `options:ipsec_*` entries, in key order.
fn custom_options(row: &InterfaceRow) -> impl Iterator<Item = (&str, &str)> {
    row.options
        .iter()
        .filter(|(k, _)| {
            k.starts_with(CUSTOM_PREFIX) && !STATIC_KEYING_OPTIONS.contains(&k.as_str())
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

fn reason(e: GrammarError) -> String {
    format!(": {e}")
}

/// The authentication mode the row chose, as the Python monitor decides it.
enum Mode<'a> {
    Psk(&'a str),
    Cert { pki: &'a Arc<Pki>, peer: Peer<'a> },
}

/// How a certificate-mode peer is named.
enum Peer<'a> {
    /// `remote_cert` (its CN replaces any `remote_name`, which must still be well-formed).
    SelfSigned {
        remote_cert: &'a str,
        remote_name: Option<&'a str>,
    },
    CaSigned {
        remote_name: &'a str,
    },
}

/// The Python monitor's checks, in its order, with its reasons.
fn python_checks<'a>(
    opt: impl Fn(&str) -> Option<&'a str>,
    pki: Option<&'a Arc<Pki>>,
) -> Result<Mode<'a>, &'static str> {
    if opt("remote_ip").is_none() {
        return Err(REMOTE_IP_NOT_SET);
    }
    let (remote_cert, remote_name) = (opt("remote_cert"), opt("remote_name"));
    if let Some(psk) = opt("psk") {
        return match pki.is_some() || remote_cert.is_some() || remote_name.is_some() {
            true => Err(PSK_WITH_PKI),
            false => Ok(Mode::Psk(psk)),
        };
    }
    let peer = match (remote_cert, remote_name) {
        (Some(remote_cert), remote_name) => Peer::SelfSigned {
            remote_cert,
            remote_name,
        },
        (None, Some(remote_name)) => Peer::CaSigned { remote_name },
        (None, None) => return Err(NO_AUTH_METHOD),
    };
    let pki = pki.ok_or(NO_CERTIFICATE)?;
    if matches!(peer, Peer::CaSigned { .. }) && pki.ca_cert.is_none() {
        return Err(NO_PEER_AUTH);
    }
    Ok(Mode::Cert { pki, peer })
}

fn tunnel_conf(
    row: &InterfaceRow,
    pki: Option<&Arc<Pki>>,
    certs: &mut dyn CertSource,
) -> Result<TunnelConf, String> {
    let opt = |key: &str| {
        row.options
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let mode = python_checks(opt, pki)?;

    grammar::interface_name(&row.name).map_err(reason)?;
    let kind = TunnelType::parse(&row.kind).ok_or_else(|| {
        reason(GrammarError::value(
            "type",
            &row.kind,
            "is not gre, geneve or vxlan",
        ))
    })?;
    let remote_ip =
        grammar::ip_address("remote_ip", opt("remote_ip").unwrap_or_default()).map_err(reason)?;
    let local_ip = row
        .options
        .get("local_ip")
        .map(|v| grammar::ip_address("local_ip", v))
        .transpose()
        .map_err(reason)?;
    check_family(local_ip, remote_ip)?;
    // GRE has no ports: dst_port is ignored there, as OVS ignores it. The type's default
    // port spelled out is the same tunnel as no port: one configuration, one version.
    let dst_port = match kind {
        TunnelType::Gre => None,
        TunnelType::Geneve | TunnelType::Vxlan => row
            .options
            .get("dst_port")
            .map(|v| grammar::dst_port(v))
            .transpose()
            .map_err(reason)?
            .filter(|p| Some(*p) != kind.default_udp_port()),
    };
    let static_keying = static_keying(&opt, matches!(mode, Mode::Psk(_)))?;
    let (auth, pki) = match mode {
        Mode::Psk(psk) => (Auth::Psk(grammar::psk(psk).map_err(reason)?), None),
        Mode::Cert { pki, peer } => (cert_auth(peer, certs)?, Some(Arc::clone(pki))),
    };
    let custom = custom_options(row)
        .map(|(k, v)| grammar::custom_option(k, v))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(reason)?;
    Ok(TunnelConf {
        name: row.name.clone(),
        kind,
        local_ip,
        remote_ip,
        family: Family::of(&remote_ip),
        dst_port,
        auth,
        pki,
        custom,
        static_keying,
    })
}

/// `ipsec_psk_next` and `ipsec_peer_generation`; the first only makes sense with `psk`.
fn static_keying<'a>(
    opt: &impl Fn(&str) -> Option<&'a str>,
    psk_mode: bool,
) -> Result<StaticKeying, String> {
    let [next_key, generation_key] = STATIC_KEYING_OPTIONS;
    let psk_next = opt(next_key)
        .map(|v| grammar::secret(next_key, v))
        .transpose()
        .map_err(reason)?;
    if psk_next.is_some() && !psk_mode {
        return Err(format!(": '{next_key}' can only be used with 'psk'"));
    }
    let peer_generation = opt(generation_key)
        .map(|v| grammar::generation(generation_key, v))
        .transpose()
        .map_err(reason)?;
    Ok(StaticKeying {
        psk_next,
        peer_generation,
    })
}

fn check_family(local_ip: Option<IpAddr>, remote_ip: IpAddr) -> Result<(), String> {
    match local_ip.map(|l| Family::of(&l)) {
        Some(local) if local != Family::of(&remote_ip) => Err(format!(
            ": 'local_ip' is {local} but 'remote_ip' is {}: both must be of the same address family",
            Family::of(&remote_ip)
        )),
        _ => Ok(()),
    }
}

/// The peer's identity: the CN of `remote_cert` (self-signed), or `remote_name` (CA-signed).
fn cert_auth(peer: Peer<'_>, certs: &mut dyn CertSource) -> Result<Auth, String> {
    let remote_name = |n: &str| grammar::identity("remote_name", n).map_err(reason);
    match peer {
        Peer::CaSigned { remote_name: name } => Ok(Auth::CaSigned {
            remote_name: remote_name(name)?,
        }),
        Peer::SelfSigned {
            remote_cert,
            remote_name: name,
        } => {
            name.map(remote_name).transpose()?;
            let remote_cert = grammar::path("remote_cert", remote_cert).map_err(reason)?;
            let info = certs
                .cert_info(&remote_cert)
                .map_err(|e| format!(": invalid 'remote_cert': {e}"))?;
            let remote_name = grammar::identity("CN of remote_cert", &info.cn).map_err(reason)?;
            Ok(Auth::SelfSigned {
                remote_cert,
                remote_name,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cert::fake::FakeCerts;
    use crate::model::types::Secret;

    type Opts<'a> = &'a [(&'a str, &'a str)];

    fn row(name: &str, kind: &str, opts: &[(&str, &str)]) -> InterfaceRow {
        InterfaceRow::for_test(name, kind, opts)
    }

    fn pki(ca: bool) -> Arc<Pki> {
        Arc::new(Pki {
            certificate: "/etc/ovs/cert.pem".into(),
            private_key: "/etc/ovs/key.pem".into(),
            ca_cert: ca.then(|| "/etc/ovs/ca.pem".into()),
            local_name: "host1".to_owned(),
        })
    }

    fn certs() -> FakeCerts {
        FakeCerts::with(&[
            ("/peer.pem", "host2"),
            ("/bad-cn.pem", "host 2"),
            ("/etc/ovs/cert.pem", "host1"),
        ])
    }

    fn reason_of(r: &InterfaceRow, pki: Option<&Arc<Pki>>) -> String {
        match validate(r, pki, &mut certs()) {
            Validity::Invalid(reason) => reason,
            Validity::Valid(conf) => panic!("{} unexpectedly valid: {conf:?}", r.name),
        }
    }

    fn conf_of(r: &InterfaceRow, pki: Option<&Arc<Pki>>) -> Arc<TunnelConf> {
        match validate(r, pki, &mut certs()) {
            Validity::Valid(conf) => conf,
            Validity::Invalid(reason) => panic!("{} invalid: {reason}", r.name),
        }
    }

    #[test]
    fn which_rows_are_ipsec_tunnels() {
        assert!(is_ipsec_tunnel(&row("t", "gre", &[("psk", "")])));
        assert!(is_ipsec_tunnel(&row(
            "t",
            "geneve",
            &[("remote_name", "x")]
        )));
        assert!(is_ipsec_tunnel(&row(
            "t",
            "vxlan",
            &[("remote_cert", "/x")]
        )));
        assert!(!is_ipsec_tunnel(&row("t", "stt", &[("psk", "x")])));
        assert!(!is_ipsec_tunnel(&row("t", "erspan", &[("psk", "x")])));
        assert!(!is_ipsec_tunnel(&row(
            "t",
            "gre",
            &[("remote_ip", "192.0.2.1")]
        )));
    }

    /// Every Python reason, in Python's order of precedence.
    #[test]
    fn python_reasons_in_order() {
        let ca = pki(true);
        let no_ca = pki(false);
        let cases: &[(Opts, Option<&Arc<Pki>>, &str)] = &[
            (&[("psk", "x")], None, REMOTE_IP_NOT_SET),
            (&[("psk", "x"), ("remote_ip", "")], None, REMOTE_IP_NOT_SET),
            // remote_ip comes before any other problem, even a PSK conflict.
            (
                &[("psk", "x"), ("remote_name", "h")],
                Some(&ca),
                REMOTE_IP_NOT_SET,
            ),
            (
                &[("remote_ip", "192.0.2.2"), ("psk", "x")],
                Some(&no_ca),
                PSK_WITH_PKI,
            ),
            (
                &[
                    ("remote_ip", "192.0.2.2"),
                    ("psk", "x"),
                    ("remote_name", "h"),
                ],
                None,
                PSK_WITH_PKI,
            ),
            (
                &[
                    ("remote_ip", "192.0.2.2"),
                    ("psk", "x"),
                    ("remote_cert", "/peer.pem"),
                ],
                None,
                PSK_WITH_PKI,
            ),
            (
                &[("remote_ip", "192.0.2.2"), ("remote_name", "h")],
                None,
                NO_CERTIFICATE,
            ),
            (
                &[("remote_ip", "192.0.2.2"), ("remote_cert", "/peer.pem")],
                None,
                NO_CERTIFICATE,
            ),
            (
                &[("remote_ip", "192.0.2.2"), ("remote_name", "h")],
                Some(&no_ca),
                NO_PEER_AUTH,
            ),
            (
                &[("remote_ip", "192.0.2.2"), ("psk", "")],
                None,
                NO_AUTH_METHOD,
            ),
            (
                &[("remote_ip", "192.0.2.2"), ("remote_name", "")],
                Some(&ca),
                NO_AUTH_METHOD,
            ),
        ];
        for (opts, pki, want) in cases {
            assert_eq!(reason_of(&row("t", "gre", opts), *pki), *want, "{opts:?}");
        }
    }

    /// Our checks come after Python's and name the key.
    #[test]
    fn extra_reasons() {
        let ca = pki(true);
        let psk = |extra: &[(&'static str, &'static str)]| {
            let mut o = vec![("remote_ip", "192.0.2.2"), ("psk", "secret")];
            o.extend_from_slice(extra);
            o
        };
        let cases = [
            (
                "bad name",
                "gre",
                psk(&[]),
                ": 'name' value \"bad name\" is not a valid interface name",
            ),
            (
                "t",
                "gre",
                vec![("remote_ip", "flow"), ("psk", "s")],
                ": 'remote_ip' value \"flow\" is not supported",
            ),
            (
                "t",
                "gre",
                psk(&[("local_ip", "flow")]),
                ": 'local_ip' value \"flow\" is not supported",
            ),
            (
                "t",
                "gre",
                psk(&[("local_ip", "fd01::1")]),
                ": 'local_ip' is IPv6 but 'remote_ip' is IPv4: both must be of the same address family",
            ),
            (
                "t",
                "vxlan",
                psk(&[("dst_port", "0")]),
                ": 'dst_port' value \"0\" is not a port number",
            ),
            (
                "t",
                "gre",
                psk(&[("ipsec_auto", "start")]),
                ": 'ipsec_auto' is reserved",
            ),
            (
                "t",
                "gre",
                vec![("remote_ip", "192.0.2.2"), ("psk", "a\0b")],
                ": 'psk' contains a NUL byte",
            ),
        ];
        for (name, kind, opts, want) in cases {
            let got = reason_of(&row(name, kind, &opts), None);
            assert!(got.starts_with(want), "{opts:?}: {got}");
        }
        let cert_cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("remote_cert", "/missing.pem")],
                ": invalid 'remote_cert': cannot read '/missing.pem': No such file or directory (os error 2)",
            ),
            (
                &[("remote_cert", "peer.pem")],
                ": 'remote_cert' value \"peer.pem\" is not an absolute path",
            ),
            (
                &[("remote_cert", "/bad-cn.pem")],
                ": 'CN of remote_cert' value \"host 2\" is not a valid IKE identity",
            ),
            (
                &[("remote_name", "-h")],
                ": 'remote_name' value \"-h\" is not a valid IKE identity",
            ),
            (
                &[("remote_cert", "/peer.pem"), ("remote_name", "a\"b")],
                ": 'remote_name' value \"a\\\"b\"",
            ),
        ];
        for (extra, want) in cert_cases {
            let mut opts = vec![("remote_ip", "192.0.2.2")];
            opts.extend_from_slice(extra);
            let got = reason_of(&row("t", "gre", &opts), Some(&ca));
            assert!(got.starts_with(want), "{extra:?}: {got}");
        }
    }

    #[test]
    fn valid_modes() {
        let psk = conf_of(
            &row(
                "vx",
                "vxlan",
                &[
                    ("remote_ip", "fd01::2"),
                    ("local_ip", "fd01::1"),
                    ("psk", "a b\n'\"ü"),
                    ("dst_port", "4790"),
                    ("ipsec_encapsulation", "yes"),
                ],
            ),
            None,
        );
        assert_eq!(psk.auth, Auth::Psk(Secret::new("a b\n'\"ü")));
        assert_eq!(
            (psk.family, psk.udp_port(), psk.pki.clone()),
            (Family::V6, Some(4790), None)
        );
        assert_eq!(
            psk.custom.get("encapsulation").map(String::as_str),
            Some("yes")
        );
        // dst_port is ignored for GRE, whatever it holds.
        let gre = conf_of(
            &row(
                "g",
                "gre",
                &[
                    ("remote_ip", "192.0.2.2"),
                    ("psk", "k"),
                    ("dst_port", "junk"),
                ],
            ),
            None,
        );
        assert_eq!((gre.dst_port, gre.udp_port()), (None, None));

        let ca = pki(true);
        let self_signed = conf_of(
            &row(
                "t",
                "geneve",
                &[
                    ("remote_ip", "192.0.2.2"),
                    ("remote_cert", "/peer.pem"),
                    ("remote_name", "ignored"),
                ],
            ),
            Some(&ca),
        );
        assert_eq!(
            self_signed.auth,
            Auth::SelfSigned {
                remote_cert: "/peer.pem".into(),
                remote_name: "host2".to_owned()
            }
        );
        assert_eq!(self_signed.pki.as_ref(), Some(&ca));
        // remote_cert needs no ca_cert.
        let no_ca = pki(false);
        assert!(
            conf_of(
                &row(
                    "t",
                    "gre",
                    &[("remote_ip", "192.0.2.2"), ("remote_cert", "/peer.pem")]
                ),
                Some(&no_ca)
            )
            .pki
            .is_some()
        );
        let ca_signed = conf_of(
            &row(
                "t",
                "gre",
                &[("remote_ip", "192.0.2.2"), ("remote_name", "host2")],
            ),
            Some(&ca),
        );
        assert_eq!(
            ca_signed.auth,
            Auth::CaSigned {
                remote_name: "host2".to_owned()
            }
        );
    }

    /// Issue 22: OVN spells out `dst_port=6081`; that must be the tunnel without it.
    #[test]
    fn an_explicit_default_port_is_the_same_configuration_as_none() {
        let base = [("remote_ip", "192.0.2.2"), ("psk", "k")];
        for (kind, default, other) in [("geneve", "6081", 4789), ("vxlan", "04789", 6081)] {
            let plain = conf_of(&row("t", kind, &base), None);
            let mut opts = base.to_vec();
            opts.push(("dst_port", default));
            assert_eq!(conf_of(&row("t", kind, &opts), None), plain, "{kind}");
            let other_port = other.to_string();
            opts.pop();
            opts.push(("dst_port", &other_port));
            let moved = conf_of(&row("t", kind, &opts), None);
            assert_eq!(moved.udp_port(), Some(other));
            assert_ne!(moved, plain, "{kind}: another port is another tunnel");
        }
    }

    #[test]
    fn raw_never_keeps_the_psk() {
        let r = raw(&row(
            "t",
            "gre",
            &[("psk", "topsecret"), ("remote_ip", "x"), ("ipsec_a", "b")],
        ));
        assert!(r.psk_set);
        assert_eq!(r.custom.get("ipsec_a").map(String::as_str), Some("b"));
        assert!(!format!("{r:?}").contains("topsecret"));
        let conf = conf_of(
            &row(
                "t",
                "gre",
                &[("psk", "topsecret"), ("remote_ip", "192.0.2.1")],
            ),
            None,
        );
        assert!(!format!("{conf:?}").contains("topsecret"));
    }

    #[test]
    fn global_pki_rules() {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut c = certs();
        assert_eq!(global_pki(&map(&[]), &mut c), Ok(None));
        assert_eq!(global_pki(&map(&[("certificate", "")]), &mut c), Ok(None));
        let full = global_pki(
            &map(&[
                ("certificate", "/etc/ovs/cert.pem"),
                ("private_key", "/etc/ovs/key.pem"),
                ("ca_cert", "/etc/ovs/ca.pem"),
            ]),
            &mut c,
        );
        assert_eq!(full, Ok(Some((*pki(true)).clone())));
        let errs = [
            (
                vec![("ca_cert", "/ca.pem")],
                "'ca_cert' is set without 'certificate' and 'private_key'",
            ),
            (
                vec![("certificate", "/etc/ovs/cert.pem")],
                "'private_key' is not set",
            ),
            (vec![("private_key", "/k.pem")], "'certificate' is not set"),
            (
                vec![("certificate", "/nope.pem"), ("private_key", "/k.pem")],
                "invalid 'certificate': cannot read '/nope.pem'",
            ),
            (
                vec![("certificate", "/bad-cn.pem"), ("private_key", "/k.pem")],
                "'CN of certificate' value \"host 2\"",
            ),
            (
                vec![
                    ("certificate", "/etc/ovs/cert.pem"),
                    ("private_key", "k.pem"),
                ],
                "'private_key' value \"k.pem\" is not an absolute path",
            ),
            (
                vec![
                    ("certificate", "/etc/ovs/cert.pem"),
                    ("private_key", "/k.pem"),
                    ("ca_cert", "/a\nb"),
                ],
                "'ca_cert' value \"/a\\nb\"",
            ),
        ];
        for (kv, want) in errs {
            let got = global_pki(&map(&kv), &mut c).unwrap_err();
            assert!(got.starts_with(want), "{kv:?}: {got}");
        }
    }

    #[test]
    fn static_keying_options_are_parsed_and_kept_out_of_custom_options() {
        let gen_hex = "00112233445566778899aabbccddeeff";
        let opts = [
            ("psk", "now"),
            ("remote_ip", "192.0.2.1"),
            ("ipsec_psk_next", "later-secret"),
            ("ipsec_peer_generation", gen_hex),
        ];
        let r = row("t", "geneve", &opts);
        let conf = conf_of(&r, None);
        assert_eq!(
            conf.static_keying.psk_next.as_ref().map(Secret::expose),
            Some("later-secret")
        );
        assert_eq!(
            conf.static_keying.peer_generation.map(|g| g[15]),
            Some(0xff)
        );
        assert!(conf.custom.is_empty(), "{:?}", conf.custom);
        let shown = raw(&r);
        assert!(shown.custom.is_empty());
        assert!(!format!("{shown:?}{conf:?}").contains("later-secret"));
    }

    #[test]
    fn static_keying_options_are_checked() {
        let base = [("psk", "now"), ("remote_ip", "192.0.2.1")];
        let with = |key: &str, value: &str| {
            let mut o = base.to_vec();
            o.push((key, value));
            reason_of(&row("t", "gre", &o), None)
        };
        assert!(with("ipsec_peer_generation", "ABC").contains("32 lowercase hex"));
        assert!(with("ipsec_peer_generation", &"g".repeat(32)).contains("32 lowercase hex"));
        let err = with("ipsec_psk_next", &"x".repeat(PSK_MAX_TEST + 1));
        assert!(
            err.contains("ipsec_psk_next") && !err.contains("xxxx"),
            "{err}"
        );
        let cert = row(
            "t",
            "gre",
            &[
                ("remote_ip", "192.0.2.1"),
                ("remote_name", "host2"),
                ("ipsec_psk_next", "s"),
            ],
        );
        assert!(reason_of(&cert, Some(&pki(true))).contains("only be used with 'psk'"));
    }

    const PSK_MAX_TEST: usize = crate::model::grammar::PSK_MAX;
}
