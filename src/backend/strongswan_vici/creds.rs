//! Credentials in charon's memory: PSKs (`load-shared`), our private key (`load-key`), our
//! certificate and self-signed peer certificates (`load-cert`), and the CAs (`load-authority`).
//! No secret is ever written to disk by this backend.
//!
//! Each credential has a key that lets us remove exactly ours: PSKs carry the id
//! `ovs-psk-<tunnel>`, the key is unloaded by the key id charon returned, each CA of a
//! `ca_cert` bundle is the authority `ovs-ca-<id>` ([`crate::model::bundle`]: charon takes
//! only the first certificate of the data it is given, so a bundle is loaded member by
//! member, and a changed bundle loads and unloads only the members that changed). charon 5.9 cannot unload a single certificate; certificates are public
//! and bound to an identity, so a stale one stays until charon restarts (documented).
//!
//! A credential is reloaded when its content changes (the file's SHA-256, or the PSK's), not
//! only when its path does; reloading a credential never touches an established SA.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::backend::vici::{Message, Value};
use crate::model::bundle::BundleCa;
use crate::model::{Auth, Desired, DesiredTunnel};

/// Prefix of the authorities that hold the members of `other_config:ca_cert`.
pub const CA_AUTHORITY: &str = "ovs-ca";

/// The authority of the bundle member with [`BundleCa::id`] `id`.
pub fn authority_name(id: &str) -> String {
    format!("{CA_AUTHORITY}-{id}")
}

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
        CredKey::Authority(_) => {
            let digest: Sha = Sha256::digest(secret).into();
            let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            (
                "load-authority",
                Message::new().section(&authority_name(&id), Message::new().kv("cacert", data)),
            )
        }
    }
}

/// The `unload-*` request for a credential we loaded; `key_id` is what `load-key` returned,
/// or the bundle member's id for an authority. `None` for certificates, which charon cannot
/// unload one by one.
pub fn unload_request(key: &CredKey, key_id: Option<&str>) -> Option<(&'static str, Message)> {
    match key {
        CredKey::Shared(t) => Some(("unload-shared", Message::new().kv("id", shared_id(t)))),
        CredKey::Key(_) => key_id.map(|id| ("unload-key", Message::new().kv("id", id))),
        CredKey::Authority(_) => key_id.map(|id| {
            (
                "unload-authority",
                Message::new().kv("name", authority_name(id)),
            )
        }),
        CredKey::Cert(_) => None,
    }
}

/// One request that brings charon's authorities closer to a bundle.
#[derive(Debug)]
pub struct MemberChange {
    /// The member's [`BundleCa::id`].
    pub id: String,
    /// `true` to load it, `false` to unload it.
    pub load: bool,
    pub cmd: &'static str,
    pub body: Message,
}

/// The requests that make the authorities loaded for bundle `path` (`held`: the member ids
/// loaded, by bundle path) exactly `cas`: the new members are loaded, the members gone are
/// unloaded unless another bundle still holds them; members kept are not touched.
pub fn bundle_changes(
    held: &BTreeMap<PathBuf, BTreeSet<String>>,
    path: &Path,
    cas: &[BundleCa],
) -> Vec<MemberChange> {
    let none = BTreeSet::new();
    let mine = held.get(path).unwrap_or(&none);
    let (add, remove) = crate::model::bundle::diff(mine, cas);
    let key = CredKey::Authority(path.to_owned());
    let elsewhere = |id: &String| held.iter().any(|(p, ids)| p != path && ids.contains(id));
    let loads = add.into_iter().map(|ca| {
        let (cmd, body) = load_request(&key, &ca.der, None);
        MemberChange {
            id: ca.id(),
            load: true,
            cmd,
            body,
        }
    });
    let unloads = remove
        .into_iter()
        .filter(|id| !elsewhere(id))
        .filter_map(|id| {
            let (cmd, body) = unload_request(&key, Some(&id))?;
            Some(MemberChange {
                id,
                load: false,
                cmd,
                body,
            })
        });
    loads.chain(unloads).collect()
}

/// The tunnels that use a credential, for per-tunnel error reports.
pub fn users(desired: &Desired, key: &CredKey) -> Vec<String> {
    desired
        .tunnels
        .iter()
        .filter(|(name, t)| match key {
            CredKey::Shared(n) => n == *name,
            CredKey::Cert(p) => {
                matches!(&t.conf.auth, Auth::SelfSigned { remote_cert, .. } if remote_cert == p)
                    || t.conf.pki.as_ref().is_some_and(|k| &k.certificate == p)
            }
            CredKey::Key(p) => t.conf.pki.as_ref().is_some_and(|k| &k.private_key == p),
            CredKey::Authority(p) => t
                .conf
                .pki
                .as_ref()
                .is_some_and(|k| k.ca_cert.as_ref() == Some(p)),
        })
        .map(|(n, _)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::strongswan_vici::test_support::{cert_tunnel, desired, member, psk_tunnel};
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
    fn a_bundle_is_loaded_member_by_member_and_only_changes_are_sent() {
        let (ca1, ca2, ca3) = (member(b"ca1"), member(b"ca2"), member(b"ca3"));
        let path = Path::new("/pki/bundle.pem");
        let mut held = BTreeMap::new();
        let first = bundle_changes(&held, path, &[ca1.clone(), ca2.clone()]);
        let names: Vec<_> = first
            .iter()
            .map(|c| {
                (
                    c.cmd,
                    c.load,
                    c.body.sections().next().map(|(n, _)| n.to_owned()),
                )
            })
            .collect();
        let name = |ca: &BundleCa| Some(authority_name(&ca.id()));
        assert_eq!(
            names,
            [
                ("load-authority", true, name(&ca1)),
                ("load-authority", true, name(&ca2)),
            ]
        );
        held.insert(path.to_owned(), BTreeSet::from([ca1.id(), ca2.id()]));
        // ca1 dropped, ca3 added, ca2 untouched.
        let next = bundle_changes(&held, path, &[ca2.clone(), ca3.clone()]);
        assert_eq!(next.len(), 2);
        assert!(next[0].load && next[0].id == ca3.id());
        assert!(!next[1].load && next[1].id == ca1.id());
        assert_eq!(next[1].cmd, "unload-authority");
        assert_eq!(next[1].body.str("name"), name(&ca1).as_deref());
        // A member another bundle still holds is not unloaded.
        held.insert("/pki/other.pem".into(), BTreeSet::from([ca1.id()]));
        let gone = bundle_changes(&held, path, &[]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, ca2.id());
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
