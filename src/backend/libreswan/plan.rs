//! The pure part of a pass: what to do given the desired state and an observation.
//!
//! The reconcile rules are the Python monitor's at OVS HEAD (reference §3.2), per
//! connection:
//! - active (an ESP SA exists): nothing; its tracking timestamp is dropped at observe time;
//! - loaded, not active, started more than 15 s ago: delete it ("defunct"); the next pass
//!   loads it again. If the IKE SA with the peer is up and the tunnel's other conn is
//!   established over it, initiate it over that IKE SA instead: deleting the conn pluto
//!   lists the IKE SA under deletes the IKE SA and every Child SA over it (found by the
//!   QEMU tier). Not while pluto shows a negotiation of it in progress (a half-open IKE
//!   SA retransmitting, a Child SA being negotiated): under load IKE_AUTH alone can take
//!   longer than 15 s, and deleting the conn aborts it, so the next attempt met the same
//!   fate, forever. That wait is bounded by [`NEGOTIATION_LIMIT`];
//! - loaded, not active, added (inbound, waiting for the peer) more than 15 s ago: initiate
//!   it ourselves ("Bringing up ipsec connection"), unless the peer's negotiation of it is
//!   in progress or the IKE SA with the peer is already up, so the peer's CREATE_CHILD_SA
//!   is on its way (same wait and bound);
//! - loaded, not active, untracked, and pluto negotiating it (or, on the end that answers,
//!   the IKE SA with the peer up): track it from now instead of initiating a second
//!   negotiation. A monitor restarted while its conns were being started or awaited finds
//!   them so; initiating the inbound ones made the two peers' Child SA exchanges cross;
//! - loaded, not active, untracked: it went down; initiate it (a GRE conn on the end that
//!   answers waits one grace for the peer first);
//! - not loaded: load it; the outbound side is also initiated, the inbound side only added,
//!   so that the two peers do not start crossing negotiations; GRE's single conn is
//!   initiated by the end with the lower address only (`backend::initiator`);
//! - loaded or active, ours, not desired: delete it ("is outdated").
//!
//! "Ours" means named in the config file we found at start-up or loaded by this process, or
//! named as another version of a desired tunnel's conn (a run killed after writing the new
//! file leaves the old version's conns, which the file no longer names): an admin's own
//! conns in the root config are never touched.
//!
//! A pass over a few tunnels ([`Scope::Tunnels`]) sees only their part of pluto's status
//! (`PlutoStatus::parse_in`) and plans only their conns; shunts are left to full passes (a
//! change of the skb mark makes one).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::certs::CaBundle;
use super::nss::CertSource;
use super::render::SHUNT_PREFIX;
use super::status::PlutoStatus;
use crate::backend::Scope;
use crate::backend::strongswan_stroke::plan::{covers, tunnel_candidates};
use crate::model::{Desired, DesiredTunnel, SkbMark, TunnelType};

/// A started or added connection gets this long to come up (the Python monitor's
/// `RECONCILIATION_INTERVAL`).
pub const GRACE: Duration = Duration::from_secs(15);

/// How long after its start or add a connection that pluto still shows negotiating is left
/// to pluto. Past it the conn is handled as if nothing were negotiating (deleted as defunct
/// and reloaded, or initiated), so one that never establishes is still retried. Twice
/// pluto's default `retransmit-timeout` (60 s): one whole attempt under load fits.
pub const NEGOTIATION_LIMIT: Duration = Duration::from_secs(120);

/// Why an inbound conn with no state of its own is left alone: pluto shares one IKE SA per
/// peer, and once it is up the peer creates this Child SA over it. Initiating ours too makes
/// two CREATE_CHILD_SA exchanges cross, which pluto 4.10 can abort on ("state already has
/// outstanding crypto", then an assertion: seen in the QEMU tier under load).
pub const PEER_CHILD_AWAITED: &str = "IKE SA up, Child SA awaited from the peer";

/// Why a connection is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Loaded as responder (`--add`): waits for the peer to initiate.
    Added,
    /// Initiated by us.
    Started,
}

/// One observation: pluto's status, our files, our NSS nicknames, and the age of every
/// pending connection.
#[derive(Debug, Default)]
pub struct Observed {
    pub pluto: PlutoStatus,
    /// SHA-256 of `--ipsec-conf` and `--ipsec-secrets` as found (never their text: the
    /// secrets file holds PSKs); `None` for a missing file.
    pub conf_hash: Option<[u8; 32]>,
    pub secrets_hash: Option<[u8; 32]>,
    /// Our nicknames in the NSS database, when it was listed.
    pub nss: Option<BTreeSet<String>>,
    /// SHA-256 of the certificate files we imported, by nickname, as they are now.
    pub cert_hashes: BTreeMap<String, Option<[u8; 32]>>,
    /// The members of `ca_cert` as read now; `None` without a CA.
    pub ca_bundle: Option<CaBundle>,
    pub pending: BTreeMap<String, (Pending, Duration)>,
    /// GRE tunnels whose peer has the lower address: this end only answers (see
    /// `backend::initiator`). Filled for tunnels that are not up.
    pub gre_answers: BTreeSet<String>,
}

/// What the backend remembers between passes and `plan` needs.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    /// Connections this monitor may delete (see the module doc).
    pub owned: BTreeSet<String>,
    /// Nicknames imported or verified, with the source and the hash of its certificate.
    pub synced: BTreeMap<String, (CertSource, Option<[u8; 32]>)>,
    /// Peer nicknames left in NSS on purpose although no tunnel wants them
    /// ([`Action::KeepCert`]).
    pub kept: BTreeSet<String>,
    /// The mark of the loaded shunts.
    pub shunt_mark: Option<SkbMark>,
    /// The start alias each conn was written with (see `render`), by conn.
    pub starts: BTreeMap<String, String>,
}

/// Why a connection is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteWhy {
    Outdated,
    Defunct,
}

/// One step of a Libreswan pass. `Display` is the log line (the wording OVS's tests grep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Rewrite `--ipsec-conf`/`--ipsec-secrets` (each only if its content changed).
    WriteFiles,
    ImportCert {
        nick: String,
        source: CertSource,
    },
    RemoveCert {
        nick: String,
    },
    /// A peer's certificate no tunnel wants any more, left in NSS (see `nss::is_peer`).
    KeepCert {
        nick: String,
    },
    /// `ca_cert` cannot be used: the members imported stay, the CA-signed tunnels get the
    /// reason (see `certs`).
    BadBundle {
        reason: String,
    },
    Delete {
        conn: String,
        why: DeleteWhy,
    },
    /// Only a log line: a pending conn is past its grace but pluto is negotiating it.
    Negotiating {
        conn: String,
        state: String,
    },
    /// Only a log line: a port's active connections drifted from the desired ones.
    Reconcile {
        port: String,
        active: Vec<String>,
        desired: Vec<String>,
    },
    /// Load as responder.
    Add {
        conn: String,
    },
    /// Load and initiate.
    Start {
        conn: String,
    },
    /// A GRE conn that went down on the end that answers: wait one grace for the peer to
    /// start it again (both starting it at once breaks it, see `backend::initiator`).
    Await {
        conn: String,
    },
    /// Track a loaded, untracked conn that pluto is already negotiating (or, on the end
    /// that answers, whose Child SA the peer is about to create) as `pending` from now.
    Adopt {
        conn: String,
        pending: Pending,
        state: String,
    },
    /// Initiate a loaded connection.
    BringUp {
        conn: String,
        went_down: bool,
    },
    LoadShunt {
        conn: String,
    },
    DeleteShunt {
        conn: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WriteFiles => f.write_str("Refreshing LibreSwan configuration"),
            Self::ImportCert { nick, .. } => {
                write!(f, "Importing certificate {nick} into the NSS database")
            }
            Self::RemoveCert { nick } => {
                write!(f, "Removing certificate {nick} from the NSS database")
            }
            Self::KeepCert { nick } => write!(
                f,
                "Keeping unused certificate {nick} in the NSS database: pluto may hold a copy"
            ),
            Self::BadBundle { reason } => {
                write!(f, "{reason}; the CAs in the NSS database stay as they are")
            }
            Self::Delete {
                conn,
                why: DeleteWhy::Outdated,
            } => write!(f, "{conn} is outdated, removing"),
            Self::Delete {
                conn,
                why: DeleteWhy::Defunct,
            } => write!(f, "Connection {conn} is defunct, removing"),
            Self::Negotiating { conn, state } => write!(
                f,
                "Connection {conn} is still negotiating ({state}), leaving it to pluto"
            ),
            Self::Reconcile {
                port,
                active,
                desired,
            } => write!(
                f,
                "Active connections for port {port} {active:?} do not match desired {desired:?}, need to reconcile"
            ),
            Self::Add { conn } => write!(f, "Adding ipsec connection {conn}"),
            Self::Start { conn } => write!(f, "Starting ipsec connection {conn}"),
            Self::Await { conn } => write!(
                f,
                "Connection {conn} went down, waiting for the peer to bring it up"
            ),
            Self::Adopt { conn, state, .. } => write!(
                f,
                "Connection {conn} is already negotiating ({state}), not starting it again"
            ),
            Self::BringUp {
                conn,
                went_down: false,
            } => write!(f, "Bringing up ipsec connection {conn}"),
            Self::BringUp {
                conn,
                went_down: true,
            } => write!(f, "Connection {conn} went down, bringing it up"),
            Self::LoadShunt { conn } => write!(f, "Loading shunt connection {conn}"),
            Self::DeleteShunt { conn } => write!(f, "Removing shunt connection {conn}"),
        }
    }
}

/// The inbound conn of a UDP tunnel is only added, and so is a GRE tunnel's single conn on
/// the end with the higher address; every other conn is started.
fn is_responder(t: &DesiredTunnel, conn: &str, observed: &Observed) -> bool {
    match t.conf.kind {
        TunnelType::Gre => observed.gre_answers.contains(&t.conf.name),
        _ => conn.starts_with(&format!("{}-in-", t.conf.name)),
    }
}

/// The shunt connection names `desired` needs.
pub fn wanted_shunts(desired: &Desired) -> BTreeSet<String> {
    match desired.global.skb_mark {
        Some(_) => super::render::SHUNTS
            .iter()
            .map(|(n, _)| format!("{SHUNT_PREFIX}{n}"))
            .collect(),
        None => BTreeSet::new(),
    }
}

/// The plan. `files` are the hashes of the files `desired` renders to (`None` when they
/// cannot be rendered: the write then reports the error).
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    memory: &Memory,
    files: Option<([u8; 32], [u8; 32])>,
) -> Vec<Action> {
    plan_in(desired, observed, memory, files, &Scope::All)
}

/// [`plan`] for the tunnels of `scope`, from an observation that may hold only theirs.
pub fn plan_in(
    desired: &Desired,
    observed: &Observed,
    memory: &Memory,
    files: Option<([u8; 32], [u8; 32])>,
    scope: &Scope,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let files_differ = files.is_none_or(|(conf, secrets)| {
        observed.conf_hash != Some(conf) || observed.secrets_hash != Some(secrets)
    });
    if files_differ {
        actions.push(Action::WriteFiles);
    }
    super::certs::plan_certs(desired, observed, memory, &mut actions);

    let st = &observed.pluto;
    let in_scope = || {
        desired
            .tunnels
            .iter()
            .filter(|(name, _)| scope.covers(name))
            .map(|(_, t)| t)
    };
    let wanted: BTreeSet<String> = in_scope().flat_map(|t| t.conn_names()).collect();
    // Ours also: another version of a desired tunnel's conn (`X-N`, `X-in-N`, `X-out-N`),
    // which a run killed between writing the file and deleting it leaves behind.
    let other_version = |c: &str| {
        tunnel_candidates(c)
            .iter()
            .any(|t| desired.tunnels.contains_key(*t))
    };
    for conn in st.loaded.union(&st.active) {
        if covers(scope, conn)
            && !wanted.contains(conn)
            && (memory.owned.contains(conn) || other_version(conn))
        {
            actions.push(Action::Delete {
                conn: conn.clone(),
                why: DeleteWhy::Outdated,
            });
        }
    }
    if *scope == Scope::All {
        plan_shunts(desired, observed, memory, &mut actions);
    }
    for t in in_scope() {
        plan_tunnel(t, observed, memory, &mut actions);
    }
    actions
}

fn plan_shunts(desired: &Desired, observed: &Observed, memory: &Memory, out: &mut Vec<Action>) {
    let wanted = wanted_shunts(desired);
    let mark_changed = memory.shunt_mark != desired.global.skb_mark;
    for conn in &observed.pluto.loaded {
        if conn.starts_with(SHUNT_PREFIX) && (!wanted.contains(conn) || mark_changed) {
            out.push(Action::DeleteShunt { conn: conn.clone() });
        }
    }
    for conn in wanted {
        if !observed.pluto.loaded.contains(&conn) || mark_changed {
            out.push(Action::LoadShunt { conn });
        }
    }
}

fn plan_tunnel(t: &DesiredTunnel, observed: &Observed, memory: &Memory, out: &mut Vec<Action>) {
    let st = &observed.pluto;
    let conns = t.conn_names();
    let drifted = conns.iter().any(|c| {
        !st.active.contains(c)
            && !observed.pending.contains_key(c)
            && (st.loaded.contains(c) || memory.owned.contains(c))
    });
    if drifted {
        out.push(Action::Reconcile {
            port: t.conf.name.clone(),
            active: conns
                .iter()
                .filter(|c| st.active.contains(*c))
                .cloned()
                .collect(),
            desired: conns.clone(),
        });
    }
    let carrying = conns.iter().any(|c| st.active.contains(c));
    for conn in conns {
        if st.active.contains(&conn) {
            continue;
        }
        let pending = observed.pending.get(&conn);
        if !st.loaded.contains(&conn) {
            out.push(if is_responder(t, &conn, observed) {
                Action::Add { conn }
            } else {
                Action::Start { conn }
            });
            continue;
        }
        let negotiating = st.negotiating.get(&conn).cloned().or_else(|| {
            (is_responder(t, &conn, observed) && st.ike_up.contains(&conn))
                .then(|| PEER_CHILD_AWAITED.to_owned())
        });
        match (pending, negotiating) {
            (Some((_, age)), Some(state)) if *age >= GRACE && *age < NEGOTIATION_LIMIT => {
                out.push(Action::Negotiating { conn, state })
            }
            // Not defunct while the tunnel's other direction is established over the IKE SA
            // with the peer: pluto lists that IKE SA under one conn, and deleting the conn
            // deletes it and every Child SA over it. This happens when both ends initiate at
            // once: the peer's IKE SA supersedes ours and pluto drops our queued Child SA.
            (Some((Pending::Started, age)), _)
                if *age >= GRACE && carrying && st.ike_up.contains(&conn) =>
            {
                out.push(Action::BringUp {
                    conn,
                    went_down: false,
                })
            }
            (Some((Pending::Started, age)), _) if *age >= GRACE => out.push(Action::Delete {
                conn,
                why: DeleteWhy::Defunct,
            }),
            (Some((Pending::Added, age)), _) if *age >= GRACE => out.push(Action::BringUp {
                conn,
                went_down: false,
            }),
            (Some(_), _) => {}
            (None, Some(state)) => out.push(Action::Adopt {
                pending: match is_responder(t, &conn, observed) {
                    true => Pending::Added,
                    false => Pending::Started,
                },
                conn,
                state,
            }),
            (None, _) if observed.gre_answers.contains(&t.conf.name) => {
                out.push(Action::Await { conn })
            }
            (None, _) => out.push(Action::BringUp {
                conn,
                went_down: true,
            }),
        }
    }
}
