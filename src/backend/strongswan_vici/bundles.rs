//! Applying a `ca_cert` bundle to charon: one authority per member (see [`super::creds`]),
//! loaded and unloaded by [`super::creds::bundle_changes`], with the answers accounted so a
//! bundle counts as loaded only when every change it needed succeeded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::creds::{CredKey, Sha, bundle_changes};
use super::observe::Loaded;
use crate::backend::vici::{Message, check};
use crate::model::bundle::CaBundle;

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
