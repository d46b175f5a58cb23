//! The pure plan: which credentials and connections to load, start or unload.
//!
//! A connection is (re)loaded when charon does not have it or when what we sent differs from
//! what we would send now (digest of the `load-conn` body); `load-conn` of an existing name
//! replaces its config without touching established SAs, so a monitor restart that reloads
//! every connection once is harmless. A connection is unloaded only when it is ours (loaded
//! by this monitor, or named and shaped like ours) and no longer wanted.
//!
//! A tunnel's children are initiated right after its connection is loaded, and again every
//! [`RETRY_INITIATE`] while it has no IKE_SA at all: charon gives up on an IKE_SA the peer
//! refused (typically because the peer had not loaded its side yet) and only retries the
//! ones that time out. Whether this end really initiates is decided when the action is
//! carried out (see [`super::initiator`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::ops::Bound;
use std::time::Duration;

use super::conns::{ConnMemo, DesiredConn, Digested, SHUNT_PREFIX, Start};
use super::creds::{CredKey, CredSource, Sha, desired_creds, psk_source};
use super::observe::{Loaded, Observed, ObservedConn};
use crate::backend::Scope;
use crate::backend::vici::Encoded;
use crate::model::{Auth, Desired};

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    LoadCred(CredKey),
    LoadConn(Box<DesiredConn>),
    /// Start a tunnel's children now rather than on the first packet, if this end is the
    /// one that initiates.
    Initiate {
        conn: String,
        start: Start,
    },
    UnloadConn(String),
    UnloadCred(CredKey),
    /// Unload the authorities (by id) an earlier run of the monitor left in charon, unless a
    /// bundle loaded before this action in the same pass claims them (`super::bundles`).
    UnloadStaleAuthorities(Vec<String>),
}

/// How the log lines of [`Action::LoadConn`] and [`Action::UnloadConn`] start (tests count
/// them and look for their absence).
pub const LOAD_CONNECTION: &str = "load connection";
pub const UNLOAD_CONNECTION: &str = "unload connection";

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::LoadCred(k) => write!(f, "load {}", cred_label(k)),
            Action::LoadConn(c) => write!(f, "{LOAD_CONNECTION} {}", c.name),
            Action::Initiate { conn, .. } => {
                write!(
                    f,
                    "initiate connection {conn} unless the peer's address is lower"
                )
            }
            Action::UnloadConn(c) => write!(f, "{UNLOAD_CONNECTION} {c}"),
            Action::UnloadCred(k) => write!(f, "unload {}", cred_label(k)),
            Action::UnloadStaleAuthorities(ids) => write!(
                f,
                "unload the CA authorities an earlier run left in charon unless a bundle lists them: {}",
                ids.iter()
                    .map(|id| super::creds::authority_name(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn cred_label(k: &CredKey) -> String {
    match k {
        CredKey::Shared(t) => format!("pre-shared key of tunnel {t}"),
        CredKey::Key(p) => format!("private key {}", p.display()),
        CredKey::Cert(p) => format!("certificate {}", p.display()),
        CredKey::Authority(p) => format!("CA certificate {}", p.display()),
    }
}

/// The digest of a `load-conn` body (what charon was sent, compared with what we would send).
pub fn body_digest(body: &Encoded) -> Sha {
    crate::backend::files::sha256(body.bytes())
}

/// How long a tunnel without any IKE_SA waits before its children are initiated again.
pub const RETRY_INITIATE: Duration = Duration::from_secs(10);

pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Action> {
    plan_with(&ConnMemo::default(), desired, observed)
}

/// [`plan`], with the connections of unchanged tunnels taken from `memo`.
pub fn plan_with(memo: &ConnMemo, desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    let creds = desired_creds(desired);
    // A private key no longer wanted at its path goes before the loads: the same key at a
    // new path (a renewal with the same key, written elsewhere) gets the same key id from
    // charon, and unloading that id after loading it would remove the key we still use.
    let gone = |key: &&CredKey| !creds.contains_key(*key);
    let (old_keys, old_others): (Vec<&CredKey>, Vec<&CredKey>) = observed
        .loaded
        .creds
        .keys()
        .filter(gone)
        .partition(|k| matches!(k, CredKey::Key(_)));
    actions.extend(old_keys.into_iter().cloned().map(Action::UnloadCred));
    for (key, source) in &creds {
        let loaded = observed.loaded.creds.get(key);
        let current = match source {
            CredSource::Psk { digest, .. } => Some(*digest),
            CredSource::File => key
                .path()
                .and_then(|p| observed.files.get(p).copied().flatten()),
        };
        let stale = match (loaded, current) {
            (None, _) => true,
            (Some(l), Some(c)) => *l != c,
            // Unreadable now: keep what charon has rather than drop a working credential.
            (Some(_), None) => false,
        };
        if stale {
            actions.push(Action::LoadCred(key.clone()));
        }
    }

    let (conns, _rejected) = memo.conns(desired);
    let wanted: BTreeSet<&str> = conns.iter().map(|c| c.conn.name.as_str()).collect();
    let with_sa: HashSet<&str> = observed.sas.iter().map(|sa| sa.conn.as_str()).collect();
    for d in conns.iter() {
        conn_actions(d, observed, |c| with_sa.contains(c), &mut actions);
    }
    for (name, conn) in observed.conns.iter() {
        if !wanted.contains(name.as_str()) && is_ours(name, conn, observed) {
            actions.push(Action::UnloadConn(name.clone()));
        }
    }
    actions.extend(old_others.into_iter().cloned().map(Action::UnloadCred));
    // Last: the bundles loaded above claim the members they list first.
    if !observed.loaded.adoptable.is_empty() {
        let ids = observed.loaded.adoptable.iter().cloned().collect();
        actions.push(Action::UnloadStaleAuthorities(ids));
    }
    actions
}

/// Loads `d` unless charon has exactly it, and initiates it when it has no IKE_SA, its last
/// attempt is [`RETRY_INITIATE`] old, and this end is not the one that waits for the peer.
fn conn_actions(
    d: &Digested,
    observed: &Observed,
    has_sa: impl Fn(&str) -> bool,
    actions: &mut Vec<Action>,
) {
    let c = &d.conn;
    let current = observed.conns.contains_key(&c.name)
        && observed.loaded.conns.get(&c.name) == Some(&d.digest);
    if !current {
        actions.push(Action::LoadConn(Box::new(c.clone())));
    }
    if let Some(start) = &c.start {
        let due = observed
            .loaded
            .attempts
            .get(&c.name)
            .is_none_or(|at| observed.clock >= *at + RETRY_INITIATE);
        if !has_sa(&c.name) && due && !observed.answers.contains(&c.name) {
            actions.push(Action::Initiate {
                conn: c.name.clone(),
                start: start.clone(),
            });
        }
    }
}

/// [`plan_with`] for a pass over `scope`. A pass over a few PSK tunnels plans from those
/// tunnels alone: their PSKs, their connection, and their connections that are no longer
/// wanted (found by name in the listing), in the order [`plan_with`] would give them.
/// Certificates (shared by tunnels) and drop shunts (which follow every tunnel's port) make
/// it plan everything, as does [`Scope::All`].
pub fn plan_in(
    memo: &ConnMemo,
    desired: &Desired,
    observed: &Observed,
    scope: &Scope,
) -> Vec<Action> {
    let Some(names) = scoped(desired, &observed.loaded, scope) else {
        return plan_with(memo, desired, observed);
    };
    let (mut creds, mut conns, mut unload_conns, mut unload_creds) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let key = CredKey::Shared(name.clone());
        let mut wanted = None;
        match desired.tunnels.get(name) {
            Some(t) => {
                if let Some(CredSource::Psk { digest, .. }) = psk_source(t)
                    && observed.loaded.creds.get(&key) != Some(&digest)
                {
                    creds.push(Action::LoadCred(key));
                }
                // A tunnel that cannot be expressed has no connection; status says why.
                if let Ok(d) = memo.conn(name, t) {
                    let has_sa = |c: &str| observed.sas.iter().any(|sa| sa.conn == c);
                    conn_actions(&d, observed, has_sa, &mut conns);
                    wanted = Some(d.conn.name.clone());
                }
            }
            None => {
                memo.forget(name);
                if observed.loaded.creds.contains_key(&key) {
                    unload_creds.push(Action::UnloadCred(key));
                }
            }
        }
        for (conn, listed) in tunnel_conns(&observed.conns, name) {
            if wanted.as_deref() != Some(conn) && is_ours(conn, listed, observed) {
                unload_conns.push(Action::UnloadConn(conn.to_owned()));
            }
        }
    }
    creds.append(&mut conns);
    creds.append(&mut unload_conns);
    creds.append(&mut unload_creds);
    creds
}

/// Above this many tunnels a pass plans (and lists SAs for) everything: one listing costs
/// less than a `list-sas` round trip per tunnel.
pub const SCOPED_MAX: usize = 16;

/// The tunnel names of a pass that can be planned on their own (see [`plan_in`]), given
/// what we `loaded` into charon.
pub fn scoped<'a>(
    desired: &Desired,
    loaded: &Loaded,
    scope: &'a Scope,
) -> Option<&'a BTreeSet<String>> {
    let Scope::Tunnels(names) = scope else {
        return None;
    };
    // CredKey orders PSKs first: only PSKs are loaded when the last key is one.
    let only_psks = loaded
        .creds
        .keys()
        .next_back()
        .is_none_or(|k| matches!(k, CredKey::Shared(_)));
    let psk_tunnels = names
        .iter()
        .filter_map(|n| desired.tunnels.get(n))
        .all(|t| matches!(t.conf.auth, Auth::Psk(_)) && t.conf.pki.is_none());
    let small = names.len() <= SCOPED_MAX;
    (small && desired.global.skb_mark.is_none() && only_psks && psk_tunnels).then_some(names)
}

/// Listed connections named like one of tunnel `tunnel`'s versions (`<tunnel>-<N>`).
fn tunnel_conns<'a>(
    listed: &'a BTreeMap<String, ObservedConn>,
    tunnel: &str,
) -> impl Iterator<Item = (&'a str, &'a ObservedConn)> {
    let prefix = format!("{tunnel}-");
    listed
        .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
        .map(|(name, conn)| (name.as_str(), conn))
        .take_while(move |(name, _)| name.starts_with(&prefix))
        .filter(move |(name, _)| {
            name.get(tunnel.len() + 1..)
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Ours: loaded by this monitor, or left by an earlier run — a versioned name (`X-N`) whose
/// children are all transport and named `X-N`, `X-in-N` or `X-out-N` (this also matches the
/// one-child `X-in-N`/`X-out-N` connections of earlier releases), or a drop shunt with our
/// prefix.
pub fn is_ours(name: &str, conn: &ObservedConn, observed: &Observed) -> bool {
    if observed.loaded.conns.contains_key(name) {
        return true;
    }
    if let Some(rest) = name.strip_prefix(SHUNT_PREFIX) {
        return !rest.is_empty() && conn.children.values().all(|m| m == "DROP");
    }
    let Some((head, v)) = name.rsplit_once('-') else {
        return false;
    };
    if head.is_empty() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let shapes = [
        name.to_owned(),
        format!("{head}-in-{v}"),
        format!("{head}-out-{v}"),
    ];
    !conn.children.is_empty()
        && conn
            .children
            .iter()
            .all(|(child, mode)| mode == "TRANSPORT" && shapes.contains(child))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
