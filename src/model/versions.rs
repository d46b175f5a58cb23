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
//!
//! What a version follows is the configuration *without the paths of credential files*
//! (`certificate`, `private_key`, `ca_cert`, `remote_cert`; see [`same_version`]). Every
//! backend loads those files by content and reloads a changed one into the running daemon
//! without touching an established SA (VICI `load-*`, NSS imports, stroke's certificate
//! stamps and `rereadall`), so a renewal written at a new path is the same tunnel as one
//! written in place: a new version would rename its connections and replace them with their
//! SAs for nothing. The identities the files carry (`local_name`, `remote_name`) and whether a
//! CA is configured at all still count. Digests saved by builds that hashed the paths still
//! match the same paths ([`matches`]), so an upgrade renames nothing; paths changed while an
//! older build's digest was on file cannot be told from another configuration, and give the
//! next version once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::path::PathBuf;
use std::sync::Arc;

use super::types::{Auth, Pki, TunnelConf, Validity};

/// A tunnel's saved version and configuration digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVersion {
    pub version: u64,
    /// Hex SHA-256 of [`canonical`].
    pub digest: String,
}

/// Saved versions by tunnel name.
pub type SavedVersions = BTreeMap<String, SavedVersion>;

/// The digest of a validity, stable across builds (unlike `Debug` output). Credential paths
/// are left out (see the module docs).
pub fn digest(v: &Validity) -> String {
    match v {
        Validity::Valid(conf) => sha_hex(&canonical(&without_paths(conf))),
        Validity::Invalid(reason) => sha_hex(&format!("invalid\n{reason}")),
    }
}

/// The digest builds before this one saved: the same text with the credential paths in it.
fn legacy_digest(conf: &TunnelConf) -> String {
    sha_hex(&canonical(conf))
}

fn sha_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True when `a` and `b` are the same version of a tunnel: equal, or both valid and differing
/// only in the paths of credential files, which every backend reloads by content.
pub fn same_version(a: &Validity, b: &Validity) -> bool {
    match (a, b) {
        (Validity::Valid(a), Validity::Valid(b)) => a == b || without_paths(a) == without_paths(b),
        _ => a == b,
    }
}

/// `c` with the paths of its credential files emptied; whether a CA is configured stays.
fn without_paths(c: &TunnelConf) -> TunnelConf {
    let mut out = c.clone();
    if let Auth::SelfSigned { remote_cert, .. } = &mut out.auth {
        *remote_cert = PathBuf::new();
    }
    out.pki = c.pki.as_ref().map(|p| {
        Arc::new(Pki {
            certificate: PathBuf::new(),
            private_key: PathBuf::new(),
            ca_cert: p.ca_cert.as_ref().map(|_| PathBuf::new()),
            local_name: p.local_name.clone(),
        })
    });
    out
}

/// True when `saved` (a digest from the versions file) describes `v`. Two older digests
/// match too, so the first start of a newer monitor keeps every version (and connection
/// name): builds before the effective configuration stored a default `dst_port` spelled
/// out as unset digested it as that port, and builds before credential paths stopped
/// counting ([`same_version`]) digested the paths.
pub fn matches(saved: &str, v: &Validity) -> bool {
    if saved == digest(v) {
        return true;
    }
    let Validity::Valid(conf) = v else {
        return false;
    };
    let mut spellings = vec![TunnelConf::clone(conf)];
    if conf.dst_port.is_none()
        && let Some(port) = conf.kind.default_udp_port()
    {
        let mut spelled = TunnelConf::clone(conf);
        spelled.dst_port = Some(port);
        spellings.push(spelled);
    }
    spellings
        .iter()
        .any(|c| saved == legacy_digest(c) || saved == sha_hex(&canonical(&without_paths(c))))
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

    fn cert_conf(cert: &str, key: &str, peer: &str) -> Arc<TunnelConf> {
        let mut c = TunnelConf::new(
            "t",
            TunnelType::Geneve,
            "192.0.2.2".parse().unwrap(),
            Auth::SelfSigned {
                remote_cert: peer.into(),
                remote_name: "host2".into(),
            },
        );
        c.pki = Some(Arc::new(Pki {
            certificate: cert.into(),
            private_key: key.into(),
            ca_cert: None,
            local_name: "host1".into(),
        }));
        Arc::new(c)
    }

    /// Credential paths are not part of a version: moved files digest alike, and a digest an
    /// earlier build saved with the paths in it still matches the same paths (an upgrade
    /// renames nothing); another identity or a CA added is another version.
    #[test]
    fn credential_paths_do_not_count_and_old_digests_with_paths_still_match() {
        let a = Validity::Valid(cert_conf("/a/c.pem", "/a/k.pem", "/p.pem"));
        let moved = Validity::Valid(cert_conf("/b/c.pem", "/b/k.pem", "/q.pem"));
        assert!(same_version(&a, &moved));
        assert_eq!(digest(&a), digest(&moved));
        assert!(matches(&digest(&a), &moved));

        let Validity::Valid(conf) = &a else {
            unreachable!()
        };
        let old = legacy_digest(conf);
        assert_ne!(old, digest(&a));
        assert!(matches(&old, &a));
        // With the port spelled out too (both older formats at once).
        let mut spelled = TunnelConf::clone(conf);
        spelled.dst_port = Some(6081);
        assert!(matches(&legacy_digest(&spelled), &a));

        let mut other = TunnelConf::clone(conf);
        other.auth = Auth::SelfSigned {
            remote_cert: "/p.pem".into(),
            remote_name: "host3".into(),
        };
        assert!(!same_version(&a, &Validity::Valid(other.into())));
        let mut with_ca = TunnelConf::clone(conf);
        with_ca.pki = conf.pki.as_ref().map(|p| {
            let mut p = Pki::clone(p);
            p.ca_cert = Some("/a/ca.pem".into());
            Arc::new(p)
        });
        assert!(!same_version(&a, &Validity::Valid(with_ca.into())));
        assert!(!same_version(&a, &Validity::Invalid(": x".into())));
    }

    /// PSK tunnels digest exactly as before: their saved digests match without a fallback.
    #[test]
    fn psk_digests_are_unchanged() {
        assert_eq!(digest(&conf("a")), sha_hex(&canonical_of(&conf("a"))));
    }

    fn canonical_of(v: &Validity) -> String {
        match v {
            Validity::Valid(c) => canonical(c),
            Validity::Invalid(_) => String::new(),
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
