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
use super::pki_check;
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
pub fn raw(row: &InterfaceRow) -> Box<RawTunnel> {
    let get = |key: &str| row.options.get(key).cloned();
    Box::new(RawTunnel {
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
    })
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
        Mode::Cert { pki, peer } => {
            let auth = cert_auth(peer, certs)?;
            pki_check::check(pki, &auth, certs)?;
            (auth, Some(Arc::clone(pki)))
        }
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
#[path = "validate_tests.rs"]
mod tests;
