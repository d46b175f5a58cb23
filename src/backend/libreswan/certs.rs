//! Which NSS nicknames a desired state needs, and the (pure) part of a pass that brings the
//! database there.
//!
//! `certutil -A` imports one certificate per nickname (the first of a PEM file), so a
//! `ca_cert` bundle is imported member by member, each under `ovs-ca-<id>`
//! ([`crate::model::bundle`]): the nickname follows the member's content, so a changed bundle
//! imports and removes exactly the members that changed, and a member present under its
//! nickname is in the database already (after a monitor restart too: nothing is imported
//! again). A bundle that cannot be read or parsed changes nothing in the database; the
//! tunnels that rely on it are told why ([`Action::BadBundle`]).
//!
//! Other nicknames follow their file's content: a file is compared with the database only when
//! the nickname is new to us or the file's SHA-256 changed, so a file merely touched (mtime
//! only) costs no `certutil` or `pk12util` call. A renewed certificate (in place or at a new
//! path) is imported in place of the old one; `apply` then makes pluto reread its
//! certificates, which leaves established SAs alone.

use std::collections::{BTreeMap, BTreeSet};

use super::nss::{self, CertSource};
use super::plan::{Action, Memory, Observed};
use crate::model::bundle::BundleCa;
use crate::model::{Auth, Desired};

/// The members of `ca_cert` as observed, or why they cannot be used.
pub type CaBundle = Result<Vec<BundleCa>, String>;

/// The nickname of bundle member `ca`.
pub fn ca_nick(ca: &BundleCa) -> String {
    format!("{}{}", nss::CA_PREFIX, ca.id())
}

/// Whether `desired` uses certificates at all (then the database is listed every pass).
pub fn uses_certs(desired: &Desired) -> bool {
    desired.global.pki.is_some()
        || desired
            .tunnels
            .values()
            .any(|t| matches!(t.conf.auth, Auth::SelfSigned { .. }))
}

/// The nicknames `desired` needs, with their source; `cas` are the members of its
/// `ca_cert` (none when it has no CA or the bundle is unusable).
pub fn wanted_certs(desired: &Desired, cas: &[BundleCa]) -> BTreeMap<String, CertSource> {
    let mut out = BTreeMap::new();
    if let Some(pki) = &desired.global.pki {
        out.insert(
            format!("{}{}", nss::CERTKEY_PREFIX, pki.local_name),
            CertSource::Local {
                cert: pki.certificate.clone(),
                key: pki.private_key.clone(),
            },
        );
        if pki.ca_cert.is_some() {
            for ca in cas {
                out.insert(ca_nick(ca), CertSource::Ca(ca.der.clone()));
            }
        }
    }
    for t in desired.tunnels.values() {
        if let Auth::SelfSigned {
            remote_cert,
            remote_name,
        } = &t.conf.auth
        {
            out.insert(
                format!("{}{remote_name}", nss::CERT_PREFIX),
                CertSource::Peer(remote_cert.clone()),
            );
        }
    }
    out
}

/// Appends the certificate actions of a pass to `out`.
pub fn plan_certs(desired: &Desired, observed: &Observed, memory: &Memory, out: &mut Vec<Action>) {
    let trusts_ca = desired
        .global
        .pki
        .as_ref()
        .is_some_and(|p| p.ca_cert.is_some());
    let (cas, bad_bundle) = match (&observed.ca_bundle, trusts_ca) {
        (Some(Ok(cas)), true) => (cas.as_slice(), None),
        (Some(Err(reason)), true) => (&[][..], Some(reason)),
        _ => (&[][..], None),
    };
    if let Some(reason) = bad_bundle {
        out.push(Action::BadBundle {
            reason: reason.clone(),
        });
    }
    let wanted = wanted_certs(desired, cas);
    let present: BTreeSet<&String> = observed
        .nss
        .iter()
        .flatten()
        .chain(memory.synced.keys())
        .collect();
    // A peer's self-signed certificate is CA:TRUE, and pluto takes every such certificate in
    // NSS as a trust anchor for CA-signed peers: while a CA is trusted, one kept after its
    // tunnel would vouch for certificates its key signs. Then it is removed (and a tunnel
    // added back with it needs a pluto restart, see `nss::is_peer`).
    let keep_peers = !trusts_ca;
    for nick in present {
        let unusable_bundle_member = bad_bundle.is_some() && nick.starts_with(nss::CA_PREFIX);
        if wanted.contains_key(nick)
            || unusable_bundle_member
            || (keep_peers && memory.kept.contains(nick))
        {
            continue;
        }
        let nick = nick.clone();
        out.push(if keep_peers && nss::is_peer(&nick) {
            Action::KeepCert { nick }
        } else {
            Action::RemoveCert { nick }
        });
    }
    for (nick, source) in wanted {
        let listed = observed.nss.as_ref().is_none_or(|n| n.contains(&nick));
        let in_sync = match &source {
            // The nickname names the content: listed means present as wanted.
            CertSource::Ca(_) => match &observed.nss {
                Some(n) => n.contains(&nick),
                None => memory.synced.contains_key(&nick),
            },
            _ => memory.synced.get(&nick).is_some_and(|(src, hash)| {
                *src == source && observed.cert_hashes.get(&nick) == Some(hash) && listed
            }),
        };
        if !in_sync {
            out.push(Action::ImportCert { nick, source });
        }
    }
}
