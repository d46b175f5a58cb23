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
