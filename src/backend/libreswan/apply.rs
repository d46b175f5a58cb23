//! Carrying out a plan, batched: the Python monitor runs one `ipsec` subprocess per
//! connection (2,000 for 1,000 tunnels); here all new conns are loaded by one `addconn` per
//! [`ADDCONN_BATCH`] names, and all new outbound conns of a pass are initiated by one `whack`
//! through their shared start alias (see `render`). Only what is per connection by nature
//! (bringing up a conn that is already loaded, deleting one, a retry after a batch failed)
//! runs one `whack` per conn, through a pool of concurrent children.
//!
//! Order matters: certificate imports first (a conn referring to a missing nickname fails to
//! load), then files (addconn reads the config, pluto the secrets), then deletions, then
//! certificate removals (never under a loaded conn) and pluto's certificate reload, then
//! loads, then initiations. A failure is reported against its tunnel (→ `ipsec-state=error`)
//! and the half-loaded conn is deleted, as the Python monitor does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tracing::{error, warn};

use super::certs::uses_certs;
use super::nss::CertSource;
use super::plan::{Action, Pending};
use super::render::{self, START_PREFIX};
use super::{Libreswan, LibreswanError};
use crate::backend::ApplyReport;
use crate::backend::command::{Cmd, CmdOutput, CommandError};
use crate::backend::files::{CONFIG_MODE, SECRET_MODE, exposed_key, sha256_of, write_if_changed};
use crate::model::{Auth, Desired};

/// Names per `addconn` call: far below any argv limit, and a failing batch is retried one
/// by one, so a smaller batch costs less when one conn is bad.
pub const ADDCONN_BATCH: usize = 200;

/// What `whack --initiate` prints when it gives up at once.
const INITIATE_FAILED: &str = "ailed to initiate connection";

/// Words of the lines in which pluto refuses to initiate one conn of an alias ("we cannot
/// identify ourselves…", "cannot initiate…", "failed to initiate…"; v3 to v5).
const REFUSALS: &[&str] = &["cannot", "ailed"];

/// The actions of one pass, grouped by kind in execution order.
#[derive(Default)]
struct Batches {
    write_files: bool,
    remove_certs: Vec<String>,
    keep_certs: Vec<String>,
    import_certs: Vec<(String, CertSource)>,
    bad_bundle: Option<String>,
    deletes: Vec<String>,
    delete_shunts: Vec<String>,
    load_shunts: Vec<String>,
    adds: Vec<String>,
    starts: Vec<String>,
    bring_ups: Vec<String>,
    awaits: Vec<String>,
    adopts: Vec<(String, Pending)>,
}

impl Batches {
    fn new(actions: Vec<Action>) -> (Self, usize) {
        let mut b = Self::default();
        let mut n = 0;
        for a in actions {
            n += 1;
            match a {
                Action::WriteFiles => b.write_files = true,
                Action::RemoveCert { nick } => b.remove_certs.push(nick),
                Action::KeepCert { nick } => b.keep_certs.push(nick),
                Action::BadBundle { reason } => b.bad_bundle = Some(reason),
                Action::ImportCert { nick, source } => b.import_certs.push((nick, source)),
                Action::Delete { conn, .. } => b.deletes.push(conn),
                Action::DeleteShunt { conn } => b.delete_shunts.push(conn),
                Action::LoadShunt { conn } => b.load_shunts.push(conn),
                Action::Add { conn } => b.adds.push(conn),
                Action::Start { conn } => b.starts.push(conn),
                Action::BringUp { conn, .. } => b.bring_ups.push(conn),
                Action::Await { conn } => b.awaits.push(conn),
                Action::Adopt { conn, pending, .. } => b.adopts.push((conn, pending)),
                Action::Reconcile { .. } | Action::Negotiating { .. } => n -= 1,
            }
        }
        (b, n)
    }
}

/// Which tunnel each conn belongs to, and which tunnels need which certificates.
struct Owners {
    conn: BTreeMap<String, String>,
    /// The tunnels authenticated by certificates (they need ours and the CAs).
    certs: Vec<String>,
    /// The CA-signed tunnels (they need the CAs).
    ca_signed: Vec<String>,
    /// The tunnels that need each peer's nickname.
    peers: BTreeMap<String, Vec<String>>,
}

impl Owners {
    fn new(desired: &Desired) -> Self {
        let mut o = Self {
            conn: BTreeMap::new(),
            certs: Vec::new(),
            ca_signed: Vec::new(),
            peers: BTreeMap::new(),
        };
        for (name, t) in &desired.tunnels {
            for c in t.conn_names() {
                o.conn.insert(c, name.clone());
            }
            match &t.conf.auth {
                Auth::Psk(_) => continue,
                Auth::CaSigned { .. } => o.ca_signed.push(name.clone()),
                Auth::SelfSigned { remote_name, .. } => o
                    .peers
                    .entry(format!("{}{remote_name}", super::nss::CERT_PREFIX))
                    .or_default()
                    .push(name.clone()),
            }
            o.certs.push(name.clone());
        }
        o
    }

    /// The tunnels that need `nick`, which holds `source`.
    fn users(&self, nick: &str, source: &CertSource) -> &[String] {
        match source {
            CertSource::Peer(_) => self.peers.get(nick).map_or(&[], Vec::as_slice),
            CertSource::Local { .. } | CertSource::Ca(_) => &self.certs,
        }
    }

    fn tunnel(&self, conn: &str) -> String {
        self.conn
            .get(conn)
            .cloned()
            .unwrap_or_else(|| conn.to_owned())
    }
}

/// Runs `cmds` with at most `limit` children at a time; results in completion order.
async fn pool(
    cmds: Vec<(String, Cmd)>,
    limit: usize,
) -> Vec<(String, Result<CmdOutput, CommandError>)> {
    let mut set = JoinSet::new();
    let mut todo = cmds.into_iter();
    let mut out = Vec::new();
    loop {
        while set.len() < limit.max(1) {
            let Some((key, cmd)) = todo.next() else { break };
            set.spawn(async move {
                let r = cmd.run().await;
                (key, r)
            });
        }
        match set.join_next().await {
            Some(Ok(r)) => out.push(r),
            // A task can only fail by panicking or being cancelled; neither happens here.
            Some(Err(e)) => warn!("command task failed: {e}"),
            None => return out,
        }
    }
}

/// The conns that a `whack` on an alias names in a refusal line (`NNN "conn"…: cannot…`).
pub(super) fn refused(stdout: &str) -> BTreeSet<&str> {
    stdout
        .lines()
        .filter(|l| REFUSALS.iter().any(|w| l.contains(w)))
        .filter_map(|l| l.split('"').nth(1))
        .collect()
}

/// A completed command counts as failed on a non-zero exit or unfiltered stderr.
pub(super) fn failure(r: &Result<CmdOutput, CommandError>) -> Option<String> {
    match r {
        Ok(o) if o.code == 0 && o.stderr.trim().is_empty() => None,
        Ok(o) => Some(match reason(o) {
            Some(why) => format!("exit code {}: {why}", o.code),
            // pluto 4's addconn prints nothing when pluto refuses a conn.
            None => format!("exit code {} (no reason printed; see pluto's log)", o.code),
        }),
        Err(e) => Some(e.to_string()),
    }
}

/// Whether a command was stopped at `--command-timeout` (its outcome is unknown, not a
/// refusal: the timeout was already logged).
pub(super) fn timed_out(r: &Result<CmdOutput, CommandError>) -> bool {
    matches!(r, Err(CommandError::Timeout { .. }))
}

/// Lines of a failure's explanation kept in a message, and characters per line.
const REASON_LINES: usize = 3;
const REASON_CHARS: usize = 200;

/// Why a command failed, in its own words: its stderr, else pluto's reply on stdout (v5's
/// addconn prints `"X": failed to add connection: …` there; v4's `auto` prints numbered
/// lines, of which `000` ones are comments). The last lines are kept (the verdict comes
/// last), each cut short and with control characters replaced: the text ends up in the log
/// and in `ipsec-error`. whack never prints a PSK or a key.
fn reason(o: &CmdOutput) -> Option<String> {
    let stderr: Vec<&str> = o
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let lines = if stderr.is_empty() {
        o.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("000 "))
            .collect()
    } else {
        stderr
    };
    let kept: Vec<String> = lines
        .iter()
        .skip(lines.len().saturating_sub(REASON_LINES))
        .map(|l| {
            l.chars()
                .take(REASON_CHARS)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(" / "))
}

impl Libreswan {
    /// Writes both files; rereads secrets when they changed. Returns the config text.
    pub(super) async fn write_files(&self, desired: &Desired) -> Result<String, LibreswanError> {
        let render::Rendered { conf, secrets } = self.render(desired)?;
        write_if_changed(&self.paths.conf, conf.as_bytes(), CONFIG_MODE)?;
        if write_if_changed(&self.paths.secrets, secrets.as_bytes(), SECRET_MODE)? {
            // pluto keeps running with the old secrets if this fails; the conns that need
            // the new ones fail and are retried by the next pass.
            let _ = self
                .ipsec("reread the IPsec secrets", self.cmds.rereadsecrets())
                .run_checked()
                .await;
        }
        Ok(conf)
    }

    /// Gives `starts` a fresh start alias when there is more than one (a single conn is
    /// initiated by name) and forgets the aliases of conns no longer desired.
    fn assign_start_alias(&mut self, starts: &[String], owners: &Owners) -> Option<String> {
        self.memory
            .starts
            .retain(|c, _| owners.conn.contains_key(c));
        if starts.len() < 2 {
            return None;
        }
        // Never reused, not even by a later run: conns of an old batch may still be loaded,
        // and initiating them again would negotiate a second Child SA.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.last_token = now.max(self.last_token + 1);
        let alias = format!("{START_PREFIX}{:x}", self.last_token);
        for c in starts {
            self.memory.starts.insert(c.clone(), alias.clone());
        }
        Some(alias)
    }

    pub(super) async fn run_actions(
        &mut self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> Result<ApplyReport, LibreswanError> {
        let (b, applied) = Batches::new(actions);
        let owners = Owners::new(desired);
        let mut report = ApplyReport {
            applied,
            ..ApplyReport::default()
        };
        if let Some(reason) = &b.bad_bundle {
            for t in &owners.ca_signed {
                report.errors.insert(t.clone(), reason.clone());
            }
        }
        let (blocked, imported) = self.import_certs(&b, &owners, &mut report).await;
        let skip = |c: &String| blocked.contains(&owners.tunnel(c));
        let starts: Vec<String> = b.starts.iter().filter(|c| !skip(c)).cloned().collect();
        let alias = self.assign_start_alias(&starts, &owners);
        // A new start alias is a change of the file even when the plan saw none.
        let alias = if b.write_files || alias.is_some() {
            let conf = self.write_files(desired).await?;
            // An admin's template override without `connalias`: initiate one by one.
            alias.filter(|a| conf.contains(a.as_str()))
        } else {
            None
        };

        self.delete_conns(&b.deletes).await;
        for c in &b.deletes {
            if !owners.conn.contains_key(c) {
                self.memory.owned.remove(c);
            }
        }
        self.delete_conns(&b.delete_shunts).await;
        // Only now that no conn of ours refers to them (see `remove_certs`).
        let removed = self.remove_certs(&b.remove_certs).await;
        for nick in &b.keep_certs {
            self.memory.synced.remove(nick);
            self.memory.kept.insert(nick.clone());
        }
        self.nss_wanted = uses_certs(desired) || !self.memory.synced.is_empty();
        if imported || removed {
            self.reload_certs().await;
        }
        if !b.load_shunts.is_empty() {
            self.load_shunts(&b.load_shunts, desired).await;
        }

        let loads: Vec<String> = b
            .adds
            .iter()
            .filter(|c| !skip(c))
            .chain(&starts)
            .cloned()
            .collect();
        let failed = self.load_conns(&loads, &owners, &mut report).await;
        let added: Vec<String> = b
            .adds
            .iter()
            .filter(|c| !skip(c) && !failed.contains(*c))
            .cloned()
            .collect();
        let starts: Vec<String> = starts.into_iter().filter(|c| !failed.contains(c)).collect();
        let mut started = match &alias {
            Some(alias) => {
                self.initiate_alias(alias, &starts, &owners, &mut report)
                    .await
            }
            None => self.initiate(&starts, &owners, &mut report).await,
        };
        started.extend(self.initiate(&b.bring_ups, &owners, &mut report).await);
        // A pending connection's grace (plan::GRACE) starts when this apply's commands have
        // all returned: pluto serializes whack calls, so with many tunnels the last initiate
        // returns long after the first, and a grace counted from before would expire on
        // connections that never had a chance — deleted as "defunct", started again, forever.
        let now = Instant::now();
        for c in added.into_iter().chain(b.awaits) {
            self.pending.insert(c, (Pending::Added, now));
        }
        for c in started {
            self.pending.insert(c, (Pending::Started, now));
        }
        for (c, pending) in b.adopts {
            self.pending.insert(c, (pending, now));
        }
        Ok(report)
    }

    /// Imports NSS nicknames; returns the tunnels whose certificates failed and whether the
    /// database changed.
    async fn import_certs(
        &mut self,
        b: &Batches,
        owners: &Owners,
        report: &mut ApplyReport,
    ) -> (BTreeSet<String>, bool) {
        let mut blocked = BTreeSet::new();
        let mut changed = false;
        for (nick, source) in &b.import_certs {
            if let CertSource::Local { key, .. } = source
                && let Some(w) = exposed_key(key)
            {
                warn!("{w}");
            }
            match self.nss.ensure(nick, source).await {
                Ok(imported) => {
                    changed |= imported;
                    self.memory.kept.remove(nick);
                    let hash = source.cert_path().and_then(sha256_of);
                    self.memory
                        .synced
                        .insert(nick.clone(), (source.clone(), hash));
                }
                Err(e) => {
                    self.memory.synced.remove(nick);
                    for t in owners.users(nick, source) {
                        report
                            .errors
                            .insert(t.clone(), format!("cannot import {nick}: {e}"));
                        blocked.insert(t.clone());
                    }
                }
            }
        }
        (blocked, changed)
    }

    /// Deletes NSS nicknames no tunnel wants; returns whether the database changed. Runs
    /// after the conns that used them are deleted: `--rereadcerts` reloads the certificates
    /// of loaded conns and fails on one deleted under them ("NSS: could not extract CKAID").
    async fn remove_certs(&mut self, nicks: &[String]) -> bool {
        let mut changed = false;
        for nick in nicks {
            match self.nss.delete(nick).await {
                Ok(()) => changed = true,
                // Already gone (deleted by hand) is what we wanted.
                Err(e) => warn!("{e}"),
            }
            self.memory.synced.remove(nick);
            self.memory.kept.remove(nick);
        }
        changed
    }

    /// Makes pluto drop what it cached from the NSS database.
    async fn reload_certs(&self) {
        // pluto verifies peers against a cache of the root CAs it read from NSS, and every
        // verification extends the cache's life: a CA imported after it was filled
        // (self-signed mode first, or a re-issued CA) stays unknown to pluto, and every peer
        // it signed fails with "issuer has been marked as not trusted" for as long as
        // negotiations keep retrying; a removed CA would stay trusted.
        for args in self.cmds.reload_certs() {
            let what = format!("make pluto reread certificates ({})", args.join(" "));
            if let Err(e) = self.ipsec(what, args).run_checked().await {
                warn!("{e}");
            }
        }
    }

    async fn delete_conns(&mut self, conns: &[String]) {
        let cmds = conns
            .iter()
            .map(|c| {
                let what = format!("delete ipsec connection {c}");
                (c.clone(), self.ipsec(what, self.cmds.delete(c)))
            })
            .collect();
        for (conn, r) in pool(cmds, self.concurrency).await {
            self.pending.remove(&conn);
            if let Some(f) = failure(&r) {
                warn!("Failed to delete ipsec connection {conn}: {f}");
            }
        }
    }

    /// Loads shunts with `addconn` and routes them (a `type=drop` conn only drops once its
    /// policy is installed). No `--asynchronous` with the add: Libreswan 5 rejects it.
    async fn load_shunts(&mut self, shunts: &[String], desired: &Desired) {
        let load = self.ipsec("load the shunt connections", self.cmds.addconn(shunts));
        if let Some(f) = failure(&load.run().await) {
            warn!("Failed to load the shunt connections: {f}");
            return;
        }
        let cmds = shunts
            .iter()
            .map(|c| {
                let what = format!("route shunt connection {c}");
                (c.clone(), self.ipsec(what, self.cmds.route(c)))
            })
            .collect();
        let mut ok = true;
        for (conn, r) in pool(cmds, self.concurrency).await {
            if let Some(f) = failure(&r) {
                warn!("Failed to route shunt connection {conn}: {f}");
                ok = false;
            }
        }
        if ok {
            self.memory.shunt_mark = desired.global.skb_mark;
        }
    }

    /// Loads `conns` in batches; a failing batch is retried one conn at a time to find the
    /// culprits, which are reported, deleted and returned.
    async fn load_conns(
        &mut self,
        conns: &[String],
        owners: &Owners,
        report: &mut ApplyReport,
    ) -> BTreeSet<String> {
        let mut failed = BTreeSet::new();
        for chunk in conns.chunks(ADDCONN_BATCH) {
            self.memory.owned.extend(chunk.iter().cloned());
            let cmd = self.ipsec("load ipsec connections", self.cmds.addconn(chunk));
            if failure(&cmd.run().await).is_none() {
                continue;
            }
            let singles = chunk
                .iter()
                .map(|c| {
                    let what = format!("add ipsec connection {c}");
                    let args = self.cmds.addconn(std::slice::from_ref(c));
                    (c.clone(), self.ipsec(what, args))
                })
                .collect();
            for (conn, r) in pool(singles, self.concurrency).await {
                if let Some(f) = failure(&r) {
                    warn!("Failed to add ipsec connection {conn}: {f}");
                    report.errors.insert(
                        owners.tunnel(&conn),
                        format!("cannot load connection {conn}: {f}"),
                    );
                    failed.insert(conn);
                }
            }
        }
        let failed_list: Vec<String> = failed.iter().cloned().collect();
        self.delete_conns(&failed_list).await;
        failed
    }

    /// Initiates `conns`, all written with start alias `alias`, with one `whack`; the conns
    /// pluto refused, or all of them when that call failed, are initiated one by one, which
    /// reports and deletes those that fail again. Returns the conns that pluto accepted.
    async fn initiate_alias(
        &mut self,
        alias: &str,
        conns: &[String],
        owners: &Owners,
        report: &mut ApplyReport,
    ) -> Vec<String> {
        let what = format!("start {} ipsec connections", conns.len());
        let r = self.ipsec(what, self.cmds.initiate(alias)).run().await;
        let refused = match (failure(&r), &r) {
            (None, Ok(o)) => refused(&o.stdout),
            (f, _) => {
                let f = f.unwrap_or_default();
                warn!(
                    "Failed to start ipsec connections by alias {alias}: {f}; starting them one by one"
                );
                conns.iter().map(String::as_str).collect()
            }
        };
        let (retry, mut started): (Vec<String>, Vec<String>) = conns
            .iter()
            .cloned()
            .partition(|c| refused.contains(c.as_str()));
        started.extend(self.initiate(&retry, owners, report).await);
        started
    }

    /// Initiates `conns` one by one; returns those that pluto accepted.
    async fn initiate(
        &mut self,
        conns: &[String],
        owners: &Owners,
        report: &mut ApplyReport,
    ) -> Vec<String> {
        let cmds = conns
            .iter()
            .map(|c| {
                let what = format!("start ipsec connection {c}");
                (c.clone(), self.ipsec(what, self.cmds.initiate(c)))
            })
            .collect();
        let (mut failed, mut started) = (Vec::new(), Vec::new());
        for (conn, r) in pool(cmds, self.concurrency).await {
            let tunnel = owners.tunnel(&conn);
            if let Ok(o) = &r
                && o.stdout.contains(INITIATE_FAILED)
            {
                error!("Failed to initiate connection through Interface {tunnel}.");
            }
            let f = failure(&r).or_else(|| {
                r.as_ref()
                    .ok()
                    .filter(|o| o.stdout.contains(INITIATE_FAILED))
                    .map(|_| "pluto failed to initiate it".to_owned())
            });
            match f {
                // pluto took the request but kept `whack` waiting (its crypto helpers busy
                // with many Child SAs at once, as after a restart of this monitor): the conn
                // is tracked as started, and the grace decides its fate like any other's.
                Some(_) if timed_out(&r) => started.push(conn),
                Some(f) => {
                    warn!("Failed to start ipsec connection {conn}: {f}");
                    report
                        .errors
                        .insert(tunnel, format!("cannot start connection {conn}: {f}"));
                    failed.push(conn);
                }
                None => started.push(conn),
            }
        }
        self.delete_conns(&failed).await;
        started
    }
}
