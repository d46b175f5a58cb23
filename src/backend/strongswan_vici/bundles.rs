//! Applying a `ca_cert` bundle to charon: one authority per member (see [`super::creds`]),
//! loaded and unloaded by [`super::creds::bundle_changes`], with the answers accounted so a
//! bundle counts as loaded only when every change it needed succeeded.
//!
//! A member charon already holds is claimed rather than loaded again: one held for another
//! bundle file (the same CA in two files, or a bundle moved to a new path: unloading the old
//! path must not take the members the new one still lists), or one an earlier run of the
//! monitor left in charon ([`Loaded::adoptable`]). Authorities an earlier run left that no
//! bundle lists any more are unloaded by [`unload_stale`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::creds::{CredKey, Sha, authority_name, bundle_changes};
use super::observe::Loaded;
use crate::backend::vici::{Message, check};
use crate::model::bundle::{BundleCa, CaBundle};

/// One member change sent to charon; `done` (the bundle file's digest) on the last request of
/// a bundle's load.
pub struct Member {
    path: PathBuf,
    id: String,
    load: bool,
    done: Option<Sha>,
}

/// A request and what it was for.
pub type Request = (String, Message, Member);

/// The requests that load `bundle` (the model's reading of it, see
/// `model::Global::ca_bundle`). A bundle already as loaded needs none and is recorded in
/// `loaded` at once.
pub fn load(loaded: &mut Loaded, bundle: &CaBundle) -> Vec<Request> {
    let path = &bundle.path;
    claim(loaded, path, &bundle.members);
    let changes = bundle_changes(&loaded.authorities, path, &bundle.members);
    if changes.is_empty() {
        loaded
            .creds
            .insert(CredKey::Authority(path.to_owned()), bundle.sha256);
    }
    let n = changes.len();
    changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let member = Member {
                path: path.to_owned(),
                id: c.id,
                load: c.load,
                done: (i + 1 == n).then_some(bundle.sha256),
            };
            (c.cmd.to_owned(), c.body, member)
        })
        .collect()
}

/// Records the members of `cas` that charon already holds (for another bundle, or left by an
/// earlier run) as held for `path` too, so that [`bundle_changes`] does not load them again.
fn claim(loaded: &mut Loaded, path: &Path, cas: &[BundleCa]) {
    for ca in cas {
        let id = ca.id();
        let mine = loaded
            .authorities
            .get(path)
            .is_some_and(|ids| ids.contains(&id));
        let elsewhere = loaded
            .authorities
            .iter()
            .any(|(p, ids)| p != path && ids.contains(&id));
        if !mine && (loaded.adoptable.remove(&id) || elsewhere) {
            debug!(
                "CA '{}' of {} is in charon already as {}: not loaded again",
                ca.subject,
                path.display(),
                authority_name(&id)
            );
            loaded
                .authorities
                .entry(path.to_owned())
                .or_default()
                .insert(id);
        }
    }
}

/// The requests that unload the authorities an earlier run left in charon and no bundle
/// claimed (call it after the pass's bundles were loaded). They are forgotten at once: a
/// failed unload is logged, not retried.
pub fn unload_stale(loaded: &mut Loaded) -> Vec<(String, Message)> {
    std::mem::take(&mut loaded.adoptable)
        .into_iter()
        .map(|id| {
            let name = authority_name(&id);
            (
                "unload-authority".to_owned(),
                Message::new().kv("name", name),
            )
        })
        .collect()
}

/// The requests that unload bundle `path`, which is forgotten at once.
pub fn unload(loaded: &mut Loaded, path: &Path) -> Vec<Request> {
    let requests = bundle_changes(&loaded.authorities, path, &[])
        .into_iter()
        .map(|c| {
            let member = Member {
                path: path.to_owned(),
                id: c.id,
                load: false,
                done: None,
            };
            (c.cmd.to_owned(), c.body, member)
        })
        .collect();
    loaded.creds.remove(&CredKey::Authority(path.to_owned()));
    loaded.authorities.remove(path);
    requests
}

/// Accounts charon's answer to a member change. `failed` collects the bundles with a member
/// that did not load (they are not recorded, so the next pass tries again); such an error is
/// returned, as the reason for the tunnels using the bundle. A failed unload is only logged.
pub fn answered(
    loaded: &mut Loaded,
    m: Member,
    answer: &Message,
    failed: &mut BTreeSet<PathBuf>,
) -> Result<(), (CredKey, String)> {
    let what = if m.load {
        "load-authority"
    } else {
        "unload-authority"
    };
    let outcome = check(what, answer);
    match (&outcome, m.load) {
        (Ok(()), true) => {
            loaded
                .authorities
                .entry(m.path.clone())
                .or_default()
                .insert(m.id);
        }
        (Ok(()), false) => {
            if let Some(ids) = loaded.authorities.get_mut(&m.path) {
                ids.remove(&m.id);
            }
        }
        (Err(_), true) => {
            failed.insert(m.path.clone());
        }
        (Err(e), false) => warn!("{e}"),
    }
    if let Some(digest) = m.done
        && !failed.contains(&m.path)
    {
        loaded
            .creds
            .insert(CredKey::Authority(m.path.clone()), digest);
    }
    match outcome {
        Err(e) if m.load => Err((CredKey::Authority(m.path), e.to_string())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::strongswan_vici::test_support::member;

    /// Members charon holds already (left by an earlier run, or for another bundle file) are
    /// claimed without a request; the rest are loaded, and what no bundle claimed is unloaded.
    #[test]
    fn members_charon_holds_are_claimed_not_loaded_again() {
        let (ca1, ca2, ca3) = (member(b"ca1"), member(b"ca2"), member(b"ca3"));
        let mut loaded = Loaded {
            adoptable: [ca1.id(), ca3.id()].into(),
            ..Loaded::default()
        };
        let old = Path::new("/pki/old.pem");
        loaded.authorities.insert(old.to_owned(), [ca2.id()].into());
        let new = Path::new("/pki/new.pem");
        claim(&mut loaded, new, &[ca1.clone(), ca2.clone()]);
        assert_eq!(loaded.authorities[new], [ca1.id(), ca2.id()].into());
        assert!(bundle_changes(&loaded.authorities, new, &[ca1.clone(), ca2.clone()]).is_empty());
        // The old path's unload keeps CA2, which the new path holds.
        assert!(unload(&mut loaded, old).is_empty());
        let stale = unload_stale(&mut loaded);
        assert_eq!(stale.len(), 1);
        assert_eq!(
            stale[0].1.str("name"),
            Some(authority_name(&ca3.id()).as_str())
        );
        assert!(loaded.adoptable.is_empty());
    }
}
