//! Credentials in charon's memory: PSKs (`load-shared`), our private key (`load-key`), our
//! certificate and self-signed peer certificates (`load-cert`), and the CA (`load-authority`).
//! No secret is ever written to disk by this backend.
//!
//! Each credential has a key that lets us remove exactly ours: PSKs carry the id
//! `ovs-psk-<tunnel>`, the key is unloaded by the key id charon returned, the CA is the
//! authority `ovs-ca`. charon 5.9 cannot unload a single certificate; certificates are public
//! and bound to an identity, so a stale one stays until charon restarts (documented).
//!
//! A credential is reloaded when its content changes (the file's SHA-256, or the PSK's), not
//! only when its path does; reloading a credential never touches an established SA.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::backend::vici::{Message, Value};
use crate::model::{Auth, Desired, DesiredTunnel};

/// Name of the authority that holds `other_config:ca_cert`.
pub const CA_AUTHORITY: &str = "ovs-ca";

/// One credential we load.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CredKey {
    /// The PSK of a tunnel.
    Shared(String),
    /// Our private key file.
    Key(PathBuf),
    /// A certificate file (ours, or a self-signed peer's).
    Cert(PathBuf),
    /// The CA certificate file.
    Authority(PathBuf),
}

impl CredKey {
    pub fn path(&self) -> Option<&Path> {
        match self {
            CredKey::Shared(_) => None,
            CredKey::Key(p) | CredKey::Cert(p) | CredKey::Authority(p) => Some(p),
        }
    }
}

/// A content digest; for PSKs it only ever lives in memory.
pub type Sha = [u8; 32];

/// The digest that tells whether a loaded PSK is current: the key and the peer it is for.
pub fn psk_digest(psk: &str, owner: &str) -> Sha {
    let mut h = Sha256::new();
    h.update(owner.as_bytes());
    h.update([0]);
    h.update(psk.as_bytes());
    h.finalize().into()
}

/// What a desired credential is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredSource {
    /// PSK digest and the peer address it belongs to.
    Psk {
        digest: Sha,
        owner: String,
    },
    File,
}

/// A tunnel's PSK credential (its key is `CredKey::Shared(<tunnel>)`); `None` without PSK.
pub fn psk_source(t: &DesiredTunnel) -> Option<CredSource> {
    let Auth::Psk(psk) = &t.conf.auth else {
        return None;
    };
    let owner = t.conf.remote_ip.to_string();
    Some(CredSource::Psk {
        digest: psk_digest(psk.expose(), &owner),
        owner,
    })
}

/// Every credential `desired` needs.
pub fn desired_creds(desired: &Desired) -> BTreeMap<CredKey, CredSource> {
    let mut out = BTreeMap::new();
    for (name, t) in &desired.tunnels {
        let conf = &t.conf;
        match &conf.auth {
            Auth::Psk(_) => {
                out.extend(psk_source(t).map(|s| (CredKey::Shared(name.clone()), s)));
            }
            Auth::SelfSigned { remote_cert, .. } => {
                out.insert(CredKey::Cert(remote_cert.clone()), CredSource::File);
            }
            Auth::CaSigned { .. } => {}
        }
        if let Some(pki) = &conf.pki {
            out.insert(CredKey::Cert(pki.certificate.clone()), CredSource::File);
            out.insert(CredKey::Key(pki.private_key.clone()), CredSource::File);
            if let (Auth::CaSigned { .. }, Some(ca)) = (&conf.auth, &pki.ca_cert) {
                out.insert(CredKey::Authority(ca.clone()), CredSource::File);
            }
        }
    }
    out
}

/// The VICI id of a tunnel's PSK.
pub fn shared_id(tunnel: &str) -> String {
    format!("ovs-psk-{tunnel}")
}

/// The `load-*` command and body for a credential. `secret` is the PSK (for `Shared`) or the
/// file's content.
pub fn load_request(key: &CredKey, secret: &[u8], owner: Option<&str>) -> (&'static str, Message) {
    let data = Value(secret.to_vec());
    match key {
        CredKey::Shared(tunnel) => (
            "load-shared",
            Message::new()
                .kv("id", shared_id(tunnel))
                .kv("type", "IKE")
                .kv("data", data)
                .list("owners", owner),
        ),
        CredKey::Key(_) => (
            "load-key",
            Message::new().kv("type", "any").kv("data", data),
        ),
        CredKey::Cert(_) => (
            "load-cert",
            Message::new()
                .kv("type", "X509")
                .kv("flag", "NONE")
                .kv("data", data),
        ),
        CredKey::Authority(_) => (
            "load-authority",
            Message::new().section(CA_AUTHORITY, Message::new().kv("cacert", data)),
        ),
    }
}

/// The `unload-*` request for a credential we loaded; `key_id` is what `load-key` returned.
/// `None` for certificates, which charon cannot unload one by one.
pub fn unload_request(key: &CredKey, key_id: Option<&str>) -> Option<(&'static str, Message)> {
    match key {
        CredKey::Shared(t) => Some(("unload-shared", Message::new().kv("id", shared_id(t)))),
        CredKey::Key(_) => key_id.map(|id| ("unload-key", Message::new().kv("id", id))),
        CredKey::Authority(_) => {
            Some(("unload-authority", Message::new().kv("name", CA_AUTHORITY)))
        }
        CredKey::Cert(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::strongswan_vici::test_support::{cert_tunnel, desired, psk_tunnel};
    use crate::model::TunnelType;

    #[test]
    fn psk_tunnels_need_one_shared_key_each_and_nothing_on_disk() {
        let d = desired(
            vec![
                psk_tunnel("a", TunnelType::Gre, "192.0.2.2", 1),
                psk_tunnel("b", TunnelType::Vxlan, "192.0.2.3", 1),
            ],
            None,
        );
        let c = desired_creds(&d);
        assert_eq!(c.len(), 2);
        match &c[&CredKey::Shared("b".into())] {
            CredSource::Psk { owner, digest } => {
                assert_eq!(owner, "192.0.2.3");
                assert_eq!(*digest, psk_digest("swordfish", "192.0.2.3"));
            }
            other => panic!("{other:?}"),
        }
        let (cmd, m) = load_request(
            &CredKey::Shared("b".into()),
            b"swordfish",
            Some("192.0.2.3"),
        );
        assert_eq!(cmd, "load-shared");
        assert_eq!(m.str("id"), Some("ovs-psk-b"));
        assert_eq!(m.str("data"), Some("swordfish"));
        assert_eq!(m.strs("owners"), ["192.0.2.3"]);
        assert!(!format!("{m:?}").contains("swordfish"));
    }

    #[test]
    fn certificate_modes_need_cert_key_and_peer_cert_or_ca() {
        let ss = desired_creds(&desired(
            vec![cert_tunnel("t", "192.0.2.2", "right", false)],
            None,
        ));
        let keys: Vec<_> = ss.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                CredKey::Key("/pki/left-privkey.pem".into()),
                CredKey::Cert("/pki/left-cert.pem".into()),
                CredKey::Cert("/pki/right-cert.pem".into()),
            ]
        );
        let ca = desired_creds(&desired(
            vec![cert_tunnel("t", "192.0.2.2", "right", true)],
            None,
        ));
        assert!(ca.contains_key(&CredKey::Authority("/pki/cacert.pem".into())));
        assert!(!ca.contains_key(&CredKey::Cert("/pki/right-cert.pem".into())));
    }

    #[test]
    fn unload_uses_our_ids() {
        let (cmd, m) = unload_request(&CredKey::Shared("t".into()), None).unwrap();
        assert_eq!((cmd, m.str("id")), ("unload-shared", Some("ovs-psk-t")));
        let (cmd, m) = unload_request(&CredKey::Key("/k".into()), Some("ab12")).unwrap();
        assert_eq!((cmd, m.str("id")), ("unload-key", Some("ab12")));
        assert!(unload_request(&CredKey::Cert("/c".into()), None).is_none());
    }
}
