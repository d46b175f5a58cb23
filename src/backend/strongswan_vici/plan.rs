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
use crate::backend::vici::Message;
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

/// The digest of a `load-conn` body (an unencodable body gets a digest that never matches,
/// so the load is attempted and its error reported).
pub fn body_digest(body: &Message) -> Sha {
    let mut bytes = Vec::new();
    match body.encode(&mut bytes) {
        Ok(()) => crate::backend::files::sha256(&bytes),
        Err(_) => [0xff; 32],
    }
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
mod tests {
    use super::*;
    use crate::backend::strongswan_vici::conns::desired_conns;
    use crate::backend::strongswan_vici::observe::IkeSa;
    use crate::backend::strongswan_vici::test_support::{
        cert_tunnel, desired, pki_files, psk_tunnel,
    };
    use crate::model::TunnelType;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// What charon and our memory look like after `actions` were applied successfully
    /// (an initiate leaves a CONNECTING IKE_SA).
    fn converge(d: &Desired, mut o: Observed, actions: &[Action]) -> Observed {
        let (conns, _) = desired_conns(d);
        let creds = desired_creds(d);
        for a in actions {
            match a {
                Action::LoadCred(k) => {
                    let digest = match &creds[k] {
                        CredSource::Psk { digest, .. } => *digest,
                        CredSource::File => o.files[k.path().unwrap()].unwrap(),
                    };
                    Arc::make_mut(&mut o.loaded).creds.insert(k.clone(), digest);
                }
                Action::LoadConn(c) => {
                    Arc::make_mut(&mut o.conns).insert(c.name.clone(), c.listed());
                    Arc::make_mut(&mut o.loaded)
                        .conns
                        .insert(c.name.clone(), body_digest(&c.body));
                }
                Action::Initiate { conn, .. } => {
                    Arc::make_mut(&mut o.loaded)
                        .attempts
                        .insert(conn.clone(), o.clock);
                    o.sas.push(IkeSa {
                        conn: conn.clone(),
                        state: "CONNECTING".into(),
                        ..Default::default()
                    })
                }
                Action::UnloadConn(n) => {
                    Arc::make_mut(&mut o.conns).remove(n);
                    Arc::make_mut(&mut o.loaded).conns.remove(n);
                }
                Action::UnloadCred(k) => {
                    Arc::make_mut(&mut o.loaded).creds.remove(k);
                }
                Action::UnloadStaleAuthorities(_) => {
                    Arc::make_mut(&mut o.loaded).adoptable.clear();
                }
            }
        }
        assert!(conns.iter().all(|c| o.conns.contains_key(&c.name)));
        o
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions.iter().map(ToString::to_string).collect()
    }

    const INIT: &str = "unless the peer's address is lower";

    #[test]
    fn cold_start_loads_creds_then_one_conn_and_starts_it() {
        let d = desired(
            vec![psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1)],
            None,
        );
        let a = plan(&d, &Observed::default());
        assert_eq!(
            names(&a),
            [
                "load pre-shared key of tunnel vx1".to_owned(),
                "load connection vx1-1".to_owned(),
                format!("initiate connection vx1-1 {INIT}"),
            ]
        );
        match &a[2] {
            Action::Initiate { start, .. } => {
                assert_eq!(start.children, ["vx1-in-1", "vx1-out-1"])
            }
            other => panic!("{other}"),
        }
        let o = converge(&d, Observed::default(), &a);
        assert!(plan(&d, &o).is_empty(), "{:?}", names(&plan(&d, &o)));
    }

    #[test]
    fn adding_one_tunnel_at_scale_is_constant_work() {
        let tunnels: Vec<_> = (0..1000)
            .map(|i| psk_tunnel(&format!("t{i}"), TunnelType::Geneve, "192.0.2.2", 1))
            .collect();
        let mut d = desired(tunnels, None);
        let o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
        let t = psk_tunnel("new", TunnelType::Geneve, "192.0.2.9", 1);
        d.tunnels.insert("new".into(), t);
        assert_eq!(plan(&d, &o).len(), 3);
    }

    #[test]
    fn a_tunnel_without_ike_sa_is_initiated_again_only_after_the_retry_delay() {
        let d = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.3", 1)], None);
        let mut o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
        // The peer refused (it had not loaded its side): charon dropped the IKE_SA.
        o.sas.clear();
        o.clock = RETRY_INITIATE / 2;
        assert!(plan(&d, &o).is_empty());
        o.clock = RETRY_INITIATE;
        assert_eq!(
            names(&plan(&d, &o)),
            [format!("initiate connection g-1 {INIT}")]
        );
        // This end leaves it to the peer (lower address): nothing planned, pass after pass.
        o.answers.insert("g-1".into());
        assert!(plan(&d, &o).is_empty());
        o.answers.clear();
        // An IKE_SA in any state (the peer may have started it) means nothing to do.
        o.sas.push(IkeSa {
            conn: "g-1".into(),
            state: "ESTABLISHED".into(),
            ..Default::default()
        });
        assert!(plan(&d, &o).is_empty());
    }

    #[test]
    fn modify_loads_new_version_then_unloads_old_and_delete_unloads() {
        let d1 = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.3", 1)], None);
        let o = converge(&d1, Observed::default(), &plan(&d1, &Observed::default()));
        let d2 = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.4", 2)], None);
        let a = plan(&d2, &o);
        assert_eq!(
            names(&a),
            [
                "load pre-shared key of tunnel g".to_owned(),
                "load connection g-2".to_owned(),
                format!("initiate connection g-2 {INIT}"),
                "unload connection g-1".to_owned(),
            ]
        );
        let o = converge(&d2, o, &a);
        let a = plan(&Desired::default(), &o);
        assert_eq!(
            names(&a),
            ["unload connection g-2", "unload pre-shared key of tunnel g"]
        );
    }

    #[test]
    fn monitor_restart_reloads_in_place_and_unloads_nothing_current() {
        let d = desired(
            vec![psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1)],
            None,
        );
        let mut o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
        o.sas[0].state = "ESTABLISHED".into();
        // A new monitor process: charon kept everything, our memory is empty.
        o.loaded = Default::default();
        let a = plan(&d, &o);
        assert!(
            a.iter()
                .all(|a| matches!(a, Action::LoadCred(_) | Action::LoadConn(_))),
            "{:?}",
            names(&a)
        );
    }

    #[test]
    fn foreign_connections_are_never_unloaded_and_ours_of_any_release_are() {
        let mut o = Observed::default();
        let conn = |children: &[(&str, &str)]| ObservedConn {
            children: children
                .iter()
                .map(|(n, m)| (n.to_string(), m.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        Arc::make_mut(&mut o.conns).insert("site-to-site".into(), conn(&[("net", "TUNNEL")]));
        Arc::make_mut(&mut o.conns).insert("office-1".into(), conn(&[("office-1", "TUNNEL")]));
        Arc::make_mut(&mut o.conns).insert(
            "lab-2".into(),
            conn(&[("lab-2", "TRANSPORT"), ("x", "TRANSPORT")]),
        );
        Arc::make_mut(&mut o.conns).insert("empty-3".into(), conn(&[]));
        // Earlier releases: one connection per direction.
        Arc::make_mut(&mut o.conns).insert("old-in-4".into(), conn(&[("old-in-4", "TRANSPORT")]));
        // This release.
        Arc::make_mut(&mut o.conns).insert(
            "vx-5".into(),
            conn(&[("vx-in-5", "TRANSPORT"), ("vx-out-5", "TRANSPORT")]),
        );
        Arc::make_mut(&mut o.conns).insert("g-6".into(), conn(&[("g-6", "TRANSPORT")]));
        let a = plan(&Desired::default(), &o);
        assert_eq!(
            names(&a),
            [
                "unload connection g-6",
                "unload connection old-in-4",
                "unload connection vx-5"
            ]
        );
    }

    #[test]
    fn renewed_certificate_content_reloads_only_that_credential() {
        let d = desired(vec![cert_tunnel("t", "192.0.2.2", "right", true)], None);
        let mut o = Observed::default();
        pki_files(&mut o);
        let o = converge(&d, o.clone(), &plan(&d, &o));
        assert!(plan(&d, &o).is_empty());
        let mut renewed = o.clone();
        renewed.files.insert(
            "/pki/cacert.pem".into(),
            Some(crate::backend::files::sha256(b"new CA")),
        );
        assert_eq!(
            names(&plan(&d, &renewed)),
            ["load CA certificate /pki/cacert.pem"]
        );
        // A file that became unreadable keeps what charon has.
        let mut gone = o;
        gone.files.insert("/pki/cacert.pem".into(), None);
        assert!(plan(&d, &gone).is_empty());
    }

    /// The certificate and key renewed at new paths under the same version: the old key is
    /// unloaded before the new one is loaded (the same key gets the same id in charon), the
    /// connection is not touched, and the old certificate is only forgotten.
    #[test]
    fn credentials_at_new_paths_reload_by_content_and_keep_the_connection() {
        let d = desired(vec![cert_tunnel("t", "192.0.2.2", "right", true)], None);
        let mut o = Observed::default();
        pki_files(&mut o);
        let o = converge(&d, o.clone(), &plan(&d, &o));
        let mut moved = d.clone();
        let t = moved.tunnels.get_mut("t").unwrap();
        let conf = Arc::make_mut(&mut t.conf);
        let pki = Arc::make_mut(conf.pki.as_mut().unwrap());
        pki.certificate = "/pki/2027/left-cert.pem".into();
        pki.private_key = "/pki/2027/left-privkey.pem".into();
        moved.global.pki = conf.pki.clone();
        let mut o2 = o.clone();
        for p in ["/pki/2027/left-cert.pem", "/pki/2027/left-privkey.pem"] {
            o2.files
                .insert(p.into(), Some(crate::backend::files::sha256(p.as_bytes())));
        }
        assert_eq!(
            names(&plan(&moved, &o2)),
            [
                "unload private key /pki/left-privkey.pem",
                "load private key /pki/2027/left-privkey.pem",
                "load certificate /pki/2027/left-cert.pem",
                "unload certificate /pki/left-cert.pem",
            ]
        );
    }

    /// Authorities an earlier run left are unloaded last, after the bundles that may claim
    /// them were loaded; with none left, nothing is planned for them.
    #[test]
    fn authorities_left_by_an_earlier_run_are_unloaded_after_the_bundles_load() {
        let d = desired(vec![cert_tunnel("t", "192.0.2.2", "right", true)], None);
        let mut o = Observed::default();
        pki_files(&mut o);
        Arc::make_mut(&mut o.loaded).adoptable = ["0011223344556677".to_owned()].into();
        let a = plan(&d, &o);
        let ca = a
            .iter()
            .position(|a| a.to_string() == "load CA certificate /pki/cacert.pem");
        assert!(ca.is_some_and(|i| i + 1 < a.len()), "{a:?}");
        assert_eq!(
            a.last(),
            Some(&Action::UnloadStaleAuthorities(vec![
                "0011223344556677".to_owned()
            ]))
        );
        let o = converge(&d, o.clone(), &a);
        assert!(
            !plan(&d, &o)
                .iter()
                .any(|a| matches!(a, Action::UnloadStaleAuthorities(_)))
        );
    }

    #[test]
    fn psk_change_reloads_the_secret() {
        let d = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.3", 1)], None);
        let mut o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
        Arc::make_mut(&mut o.loaded).creds.insert(
            CredKey::Shared("g".into()),
            crate::backend::files::sha256(b"old secret"),
        );
        assert_eq!(names(&plan(&d, &o)), ["load pre-shared key of tunnel g"]);
    }
}
