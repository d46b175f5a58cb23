//! `apply` for the VICI backend: a plan's actions become one pipelined batch of VICI
//! requests on the command connection, and each answer is accounted for in what we
//! remember having loaded. Apart from `mod.rs` because this bookkeeping (credentials,
//! bundle members, connections, initiations, unloads) is most of the backend's code.

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::{debug, warn};

use super::creds::{CredKey, CredSource, Sha, load_request, psk_source, unload_request, users};
use super::observe::ObservedConn;
use super::plan::{Action, body_digest};
use super::{StrongSwanVici, backend_error, bundles};
use crate::backend::vici::{Body, Message, check};
use crate::backend::{ApplyReport, BackendError};
use crate::model::{Auth, Desired};

/// What a request of the batch was for, to account for its answer.
enum Pending {
    Cred(CredKey, Sha),
    Conn {
        name: String,
        digest: Sha,
        tunnel: Option<String>,
        /// As `list-conns` would show it once loaded.
        listed: ObservedConn,
    },
    Initiate {
        conn: String,
        child: String,
    },
    Terminate(String),
    UnloadConn(String),
    UnloadCred(CredKey),
    /// `flush-certs` after a renewed certificate was loaded.
    Flush,
    /// A change to a CA bundle's authorities.
    Member(bundles::Member),
    /// An authority an earlier run left, unloaded.
    Stale,
}

/// `terminate` for every IKE_SA of connection `name`: forced (charon sends the DELETE and
/// destroys the SA without waiting for the answer) and without blocking (`timeout -1`).
fn terminate_request(name: &str) -> Message {
    Message::new()
        .kv("ike", name)
        .kv("force", "yes")
        .kv("timeout", "-1")
}

impl StrongSwanVici {
    /// Sends every request of the plan in one pipelined batch and accounts for the answers.
    pub(super) async fn apply_actions(
        &mut self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> Result<ApplyReport, BackendError> {
        let mut report = ApplyReport::default();
        // A PSK's source, looked up for the credentials loaded only.
        let psk = |key: &CredKey| match key {
            CredKey::Shared(t) => desired.tunnels.get(t).and_then(psk_source),
            _ => None,
        };
        let mut requests: Vec<(String, Body)> = Vec::new();
        let mut pending = Vec::new();
        let mut renewed = false;
        // A certificate dropped at one path while one is loaded from another is a renewal
        // written at a new path: the cache must forget the old one as for one in place.
        let moved = actions
            .iter()
            .any(|a| matches!(a, Action::UnloadCred(CredKey::Cert(_))));
        // While the configured bundle has never parsed (the model holds no reading of that
        // path), it may list authorities an earlier run left: none is unloaded as stale.
        let ca_cert = desired.global.pki.as_ref().and_then(|p| p.ca_cert.as_ref());
        let bundle_failed = ca_cert
            .is_some_and(|path| desired.global.ca_bundle.as_ref().map(|b| &b.path) != Some(path));
        for action in actions {
            match action {
                Action::LoadCred(CredKey::Authority(path)) => {
                    // The model reads bundles: a CA-signed tunnel is only desired while its
                    // bundle parses, so the bundle in force is the one its tunnels name.
                    let bundle = desired.global.ca_bundle.as_ref().filter(|b| b.path == path);
                    if let Some(bundle) = bundle {
                        let loaded = Arc::make_mut(&mut self.loaded);
                        for (cmd, body, member) in bundles::load(loaded, bundle) {
                            requests.push((cmd, body.into()));
                            pending.push(Pending::Member(member));
                        }
                    }
                }
                Action::UnloadStaleAuthorities(_) if bundle_failed => {}
                Action::UnloadStaleAuthorities(_) => {
                    for (cmd, body) in bundles::unload_stale(Arc::make_mut(&mut self.loaded)) {
                        requests.push((cmd, body.into()));
                        pending.push(Pending::Stale);
                    }
                }
                Action::UnloadCred(CredKey::Authority(path)) => {
                    let loaded = Arc::make_mut(&mut self.loaded);
                    for (cmd, body, member) in bundles::unload(loaded, &path) {
                        requests.push((cmd, body.into()));
                        pending.push(Pending::Member(member));
                    }
                }
                Action::LoadCred(key) => {
                    let source = psk(&key);
                    let (secret, owner) = match (&key, &source) {
                        (CredKey::Shared(t), Some(CredSource::Psk { owner, .. })) => {
                            let psk = desired.tunnels.get(t).and_then(|t| match &t.conf.auth {
                                Auth::Psk(p) => Some(p.expose().as_bytes().to_vec()),
                                _ => None,
                            });
                            (psk, Some(owner.clone()))
                        }
                        (k, _) => match k.path() {
                            Some(p) => match tokio::fs::read(p).await {
                                Ok(b) if matches!(k, CredKey::Key(_)) => {
                                    if let Some(w) = crate::backend::files::exposed_key(p) {
                                        warn!("{w}");
                                    }
                                    (Some(b), None)
                                }
                                Ok(b) => (Some(b), None),
                                Err(e) => {
                                    for t in users(desired, &key) {
                                        report
                                            .errors
                                            .insert(t, format!("cannot read {}: {e}", p.display()));
                                    }
                                    continue;
                                }
                            },
                            None => (None, None),
                        },
                    };
                    let Some(secret) = secret else { continue };
                    let digest = match &source {
                        Some(CredSource::Psk { digest, .. }) => *digest,
                        _ => crate::backend::files::sha256(&secret),
                    };
                    let (cmd, body) = load_request(&key, &secret, owner.as_deref());
                    renewed |= matches!(key, CredKey::Cert(_))
                        && (moved || self.loaded.creds.contains_key(&key));
                    requests.push((cmd.to_owned(), body.into()));
                    pending.push(Pending::Cred(key, digest));
                }
                Action::LoadConn(c) => {
                    let digest = body_digest(&c.body);
                    let listed = c.listed();
                    requests.push(("load-conn".to_owned(), c.body.into()));
                    pending.push(Pending::Conn {
                        name: c.name,
                        digest,
                        tunnel: c.tunnel,
                        listed,
                    });
                }
                Action::Initiate { conn, start } => {
                    Arc::make_mut(&mut self.loaded)
                        .attempts
                        .insert(conn.clone(), self.epoch.elapsed());
                    // Every child in the same IKE_SA: charon reuses the IKE_SA of the
                    // connection for the second one even while it is still connecting.
                    for child in start.children {
                        let body = Message::new()
                            .kv("child", child.as_str())
                            .kv("ike", conn.as_str())
                            .kv("timeout", "-1")
                            .kv("init-limits", "no");
                        requests.push(("initiate".to_owned(), body.into()));
                        pending.push(Pending::Initiate {
                            conn: conn.clone(),
                            child,
                        });
                    }
                }
                Action::UnloadConn(name) => {
                    // unload-conn removes the config and its trap policies but leaves its
                    // established IKE_SA and CHILD_SAs (and their kernel SAs and policies)
                    // in place: close them first, without waiting for the peer.
                    requests.push(("terminate".to_owned(), terminate_request(&name).into()));
                    pending.push(Pending::Terminate(name.clone()));
                    requests.push((
                        "unload-conn".to_owned(),
                        Message::new().kv("name", name.as_str()).into(),
                    ));
                    pending.push(Pending::UnloadConn(name));
                }
                Action::UnloadCred(key) => {
                    let key_id = key
                        .path()
                        .and_then(|p| self.loaded.key_ids.get(p))
                        .map(String::as_str);
                    match unload_request(&key, key_id) {
                        Some((cmd, body)) => {
                            requests.push((cmd.to_owned(), body.into()));
                            pending.push(Pending::UnloadCred(key));
                        }
                        None => {
                            // charon cannot unload it; forget it so it is loaded again if needed.
                            Arc::make_mut(&mut self.loaded).creds.remove(&key);
                        }
                    }
                }
            }
        }
        if renewed {
            // charon's certificate cache would keep presenting (and trusting) the old one.
            requests.push(("flush-certs".to_owned(), Message::new().into()));
            pending.push(Pending::Flush);
        }
        let answers = self.batch(requests).await.map_err(backend_error)?;
        self.reopened = false;
        // Bundles with a member that failed to load: not recorded as loaded, so retried.
        let mut failed = BTreeSet::new();
        for (p, answer) in pending.into_iter().zip(answers) {
            // A terminate is part of its unload, not an action of its own.
            if !matches!(p, Pending::Terminate(_)) {
                report.applied += 1;
            }
            match p {
                Pending::Cred(key, digest) => match check("load credential", &answer) {
                    Ok(()) => {
                        if let (CredKey::Key(path), Some(id)) = (&key, answer.str("id")) {
                            Arc::make_mut(&mut self.loaded)
                                .key_ids
                                .insert(path.clone(), id.to_owned());
                        }
                        Arc::make_mut(&mut self.loaded).creds.insert(key, digest);
                    }
                    Err(e) => {
                        for t in users(desired, &key) {
                            report.errors.insert(t, e.to_string());
                        }
                    }
                },
                Pending::Conn {
                    name,
                    digest,
                    tunnel,
                    listed,
                } => match check("load-conn", &answer) {
                    Ok(()) => {
                        if let Some((conns, _)) = &mut self.listed {
                            Arc::make_mut(conns).insert(name.clone(), listed);
                        }
                        Arc::make_mut(&mut self.loaded).conns.insert(name, digest);
                    }
                    Err(e) => {
                        let who = tunnel.unwrap_or_else(|| name.clone());
                        warn!("cannot load connection {name}: {e}");
                        report
                            .errors
                            .insert(who, format!("cannot load connection {name}: {e}"));
                    }
                },
                Pending::Initiate { conn, child } => {
                    // The trap policy starts it on the first packet anyway; status shows it.
                    if let Err(e) = check("initiate", &answer) {
                        debug!("initiate {child} of {conn}: {e}");
                    }
                }
                Pending::Terminate(name) => {
                    // "no matching SAs to terminate found" when none was up: nothing to do.
                    if let Err(e) = check("terminate", &answer) {
                        debug!("terminate {name}: {e}");
                    }
                }
                Pending::UnloadConn(name) => {
                    if let Err(e) = check("unload-conn", &answer) {
                        warn!("cannot unload connection {name}: {e}");
                    }
                    if let Some((conns, _)) = &mut self.listed {
                        Arc::make_mut(conns).remove(&name);
                    }
                    Arc::make_mut(&mut self.loaded).conns.remove(&name);
                    Arc::make_mut(&mut self.loaded).attempts.remove(&name);
                }
                Pending::Flush => {
                    if let Err(e) = check("flush-certs", &answer) {
                        warn!("{e}");
                    }
                }
                Pending::Member(member) => {
                    let loaded = Arc::make_mut(&mut self.loaded);
                    if let Err((key, e)) = bundles::answered(loaded, member, &answer, &mut failed) {
                        warn!("{e}");
                        for t in users(desired, &key) {
                            report.errors.insert(t, e.clone());
                        }
                    }
                }
                Pending::Stale => {
                    if let Err(e) = check("unload-authority", &answer) {
                        warn!("{e}");
                    }
                }
                Pending::UnloadCred(key) => {
                    if let Err(e) = check("unload credential", &answer) {
                        warn!("{e}");
                    }
                    if let Some(p) = key.path() {
                        Arc::make_mut(&mut self.loaded).key_ids.remove(p);
                    }
                    Arc::make_mut(&mut self.loaded).creds.remove(&key);
                }
            }
        }
        Ok(report)
    }
}
