//! Tunnel versions that survive a restart of the monitor.
//!
//! Connection names carry the tunnel's version (`tun-in-3`). If a restarted monitor counted
//! from 1 again, every tunnel that had changed before would get new connection names and its
//! established SAs would be replaced for nothing. So the registry's versions are saved, with a
//! digest of each tunnel's effective configuration, in a file in the run directory (a tmpfs:
//! a reboot, which also loses every SA, forgets it). At start-up a tunnel whose configuration
//! is unchanged keeps its version; one changed while the monitor was down gets the next one.
//!
//! The digest covers the PSK, so that a key changed while the monitor was down is noticed; the
//! file is therefore 0600, like the secrets files the IKE daemons already hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::types::{Auth, TunnelConf, Validity};

/// A tunnel's saved version and configuration digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVersion {
    pub version: u64,
    /// Hex SHA-256 of [`canonical`].
    pub digest: String,
}

/// Saved versions by tunnel name.
pub type SavedVersions = BTreeMap<String, SavedVersion>;

/// The digest of a validity, stable across builds (unlike `Debug` output).
pub fn digest(v: &Validity) -> String {
    let text = match v {
        Validity::Valid(conf) => canonical(conf),
        Validity::Invalid(reason) => format!("invalid\n{reason}"),
    };
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True when `saved` (a digest from the versions file) describes `v`. Builds before the
/// effective configuration stored a default `dst_port` spelled out as unset digested it as
/// that port; such a digest matches too, so the first start of a newer monitor keeps every
/// version (and connection name) instead of renaming the tunnels that spelled the default.
pub fn matches(saved: &str, v: &Validity) -> bool {
    if saved == digest(v) {
        return true;
    }
    match v {
        Validity::Valid(conf) if conf.dst_port.is_none() => {
            conf.kind.default_udp_port().is_some_and(|port| {
                let mut spelled = TunnelConf::clone(conf);
                spelled.dst_port = Some(port);
                saved == digest(&Validity::Valid(spelled.into()))
            })
        }
        _ => false,
    }
}

/// Every field of the effective configuration, one per line, in a fixed order.
fn canonical(c: &TunnelConf) -> String {
    let opt = |o: Option<String>| o.unwrap_or_default();
    let mut lines = vec![
        format!("name={}", c.name),
        format!("type={}", c.kind),
        format!("local_ip={}", opt(c.local_ip.map(|i| i.to_string()))),
        format!("remote_ip={}", c.remote_ip),
        format!("dst_port={}", opt(c.dst_port.map(|p| p.to_string()))),
    ];
    match &c.auth {
        Auth::Psk(psk) => lines.push(format!("psk={}", psk.expose())),
        Auth::SelfSigned {
            remote_cert,
            remote_name,
        } => {
            lines.push(format!("remote_cert={}", remote_cert.display()));
            lines.push(format!("remote_name={remote_name}"));
        }
        Auth::CaSigned { remote_name } => lines.push(format!("ca_remote_name={remote_name}")),
    }
    if let Some(pki) = &c.pki {
        lines.push(format!("certificate={}", pki.certificate.display()));
        lines.push(format!("private_key={}", pki.private_key.display()));
        lines.push(format!(
            "ca_cert={}",
            opt(pki.ca_cert.as_ref().map(|p| p.display().to_string()))
        ));
        lines.push(format!("local_name={}", pki.local_name));
    }
    lines.extend(c.custom.iter().map(|(k, v)| format!("ipsec_{k}={v}")));
    if let Some(next) = &c.static_keying.psk_next {
        lines.push(format!("psk_next={}", next.expose()));
    }
    if let Some(g) = &c.static_keying.peer_generation {
        lines.push(format!(
            "peer_generation={}",
            g.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
    }
    lines.join("\n")
}

/// Parses the saved file; a damaged file is reported, and the caller starts from scratch.
pub fn parse(text: &str) -> Result<SavedVersions, String> {
    serde_json::from_str(text).map_err(|e| format!("saved tunnel versions are unreadable: {e}"))
}

pub fn render(saved: &SavedVersions) -> String {
    serde_json::to_string_pretty(saved).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Secret, TunnelType};
    use std::sync::Arc;

    fn conf(psk: &str) -> Validity {
        Validity::Valid(Arc::new(TunnelConf::new(
            "t",
            TunnelType::Geneve,
            "192.0.2.2".parse().unwrap(),
            Auth::Psk(Secret::new(psk)),
        )))
    }

    #[test]
    fn digest_follows_every_change_including_the_psk() {
        assert_eq!(digest(&conf("a")), digest(&conf("a")));
        assert_ne!(digest(&conf("a")), digest(&conf("b")));
        assert_ne!(digest(&conf("a")), digest(&Validity::Invalid(": x".into())));
        assert_eq!(digest(&conf("a")).len(), 64);
    }

    /// A digest saved by a build that kept `dst_port=6081` apart from an unset port still
    /// matches the same tunnel, now stored without a port; another port does not.
    #[test]
    fn a_digest_of_the_default_port_spelled_out_matches_the_tunnel_without_it() {
        let plain = conf("a");
        let Validity::Valid(c) = &plain else {
            unreachable!()
        };
        let with_port = |p: u16| {
            let mut spelled = TunnelConf::clone(c);
            spelled.dst_port = Some(p);
            digest(&Validity::Valid(Arc::new(spelled)))
        };
        assert!(matches(&digest(&plain), &plain));
        assert!(matches(&with_port(6081), &plain));
        assert!(!matches(&with_port(4789), &plain));
        assert!(!matches(&with_port(6081), &conf("b")));
    }

    /// The first start after an upgrade: a tunnel that spelled out its default port, saved
    /// with the old digest, keeps its version whether the port is still spelled out or not.
    #[test]
    fn an_upgrade_keeps_the_version_of_a_tunnel_with_the_default_port_spelled_out() {
        use crate::model::cert::fake::FakeCerts;
        use crate::model::registry::{ModelEvent, Registry};
        use crate::model::rows::InterfaceRow;
        let Validity::Valid(c) = conf("a") else {
            unreachable!()
        };
        let mut old = TunnelConf::clone(&c);
        old.dst_port = Some(6081);
        let saved = SavedVersions::from([(
            "t".to_string(),
            SavedVersion {
                version: 3,
                digest: digest(&Validity::Valid(Arc::new(old))),
            },
        )]);
        let base = [("remote_ip", "192.0.2.2"), ("psk", "a")];
        for opts in [base.to_vec(), [&base[..], &[("dst_port", "6081")]].concat()] {
            let mut reg = Registry::new();
            reg.seed(saved.clone());
            let row = InterfaceRow::for_test("t", "geneve", &opts);
            let events = reg.update(None, [&row], &mut FakeCerts::with(&[]));
            assert_eq!(events, [ModelEvent::Appeared { name: "t".into() }]);
            assert_eq!(reg.desired().tunnels["t"].version, 3, "{opts:?}");
            // The file is saved again with today's digest.
            assert_eq!(reg.saved_versions()["t"].digest, digest(&conf("a")));
        }
    }

    #[test]
    fn round_trip_and_damaged_file() {
        let saved = SavedVersions::from([(
            "t".to_string(),
            SavedVersion {
                version: 3,
                digest: digest(&conf("a")),
            },
        )]);
        assert_eq!(parse(&render(&saved)).unwrap(), saved);
        assert!(parse("{not json").is_err());
    }
}
