//! The soak's invariants, checked on every node after every step:
//!
//! - the monitor answers `version` on its control socket;
//! - the IKE daemon holds exactly one connection of ours per valid tunnel: nothing missing, no
//!   connection of a deleted tunnel or a hostile row, no outdated version left beside the
//!   current one;
//! - OVSDB: every valid tunnel is in a healthy `ipsec-state` without `ipsec-error`, every
//!   hostile row is `invalid` with its reason;
//! - no PSK (in any of the forms secrets files use) and no private key line in the log;
//! - the files the monitor keeps are 0600 and never seen half-written (a watcher thread reads
//!   them continuously, see [`FileWatch`]);
//! - the worker's open file descriptors and RSS stay within a bound of what they were when
//!   that process first converged.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovs_monitor_ipsec::backend::secrets::psk_hex;
use ovs_monitor_ipsec::model::Secret;

use crate::common::kernel;
use crate::node::Node;
use crate::soak::Mode;
use crate::tunnels::{Desired, Slot};

/// Growth of the worker's open descriptors over its baseline that is a leak.
const FD_SLACK: usize = 16;
/// Growth of the worker's RSS over its baseline that is a leak (KiB).
const RSS_SLACK_KB: u64 = 24 * 1024;

/// Libreswan on a kernel without ESP: no Child SA ever installs, so the monitor deletes each
/// connection as defunct 15 s after its start and loads it again at the next pass (15 s
/// later; docs/libreswan.md). A valid tunnel's connection may be missing that long, and its
/// status carry one of these reasons of a negotiation that does not complete; missing for
/// longer than this is a violation, and so is any other error.
const CHURN_GRACE: Duration = Duration::from_secs(45);
const CHURN_ERRORS: &[&str] = &[
    "IKE SA established but no IPsec SA",
    "not loaded in pluto",
    "negotiating: ",
    "waiting for the peer to start it",
];

#[derive(Default)]
pub struct Checker {
    /// Every secret the soak ever used, in every form it could be written in.
    secrets: BTreeSet<String>,
    /// Per node: how far its log was already searched for secrets.
    log_seen: BTreeMap<usize, usize>,
    /// Per worker pid: (fds, RSS KiB) when it first converged.
    baseline: BTreeMap<i32, (usize, u64)>,
    /// Per (node, tunnel): since when a valid tunnel's connection is missing, where that is
    /// churn of a kernel without ESP ([`CHURN_GRACE`]).
    missing_since: BTreeMap<(usize, String), Instant>,
    /// Per (node, tunnel) changed by the current step: the `ipsec-version` OVSDB published
    /// before, which must change (the monitor took the change in) before the step is done.
    pending: BTreeMap<(usize, String), Option<String>>,
    /// The largest figures seen, for the report.
    pub max_fds: usize,
    pub max_rss_kb: u64,
}

impl Checker {
    pub fn add_psk(&mut self, psk: &str) {
        use base64::Engine as _;
        self.secrets.insert(psk.to_owned());
        self.secrets.insert(
            psk_hex(&Secret::new(psk))
                .trim_start_matches("0x")
                .to_owned(),
        );
        self.secrets
            .insert(base64::engine::general_purpose::STANDARD.encode(psk));
    }

    /// Lines of a private key's PEM body.
    pub fn add_private_key(&mut self, pem: &str) {
        for l in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
        {
            self.secrets.insert(l.to_owned());
        }
    }

    /// Tunnel `name` on node `n` is about to change: its published version must move.
    pub fn expect_new_version(&mut self, n: usize, name: &str, published: Option<String>) {
        self.pending
            .entry((n, name.to_owned()))
            .or_insert(published);
    }

    /// Every invariant held: the changes of the step are taken in.
    pub fn settled(&mut self) {
        self.pending.clear();
    }

    /// Problems that, once seen, stay violations whatever happens next: secrets in a log.
    pub fn permanent(&mut self, node: &Node) -> Vec<String> {
        let from = self.log_seen.get(&node.idx).copied().unwrap_or(0);
        // Overlap with what was searched, so that a secret cut by the last read is found.
        let text = node.log_since(from.saturating_sub(256));
        self.log_seen
            .insert(node.idx, from.saturating_sub(256) + text.len());
        self.secrets
            .iter()
            .filter(|s| text.contains(s.as_str()))
            .map(|s| {
                format!(
                    "node {}: a secret is in the monitor's log ({} chars)",
                    node.idx,
                    s.len()
                )
            })
            .collect()
    }

    /// What does not hold (yet) on `node`; empty when every invariant holds.
    pub fn converged(&mut self, node: &Node, want: &Desired) -> Vec<String> {
        let mut bad = Vec::new();
        let n = node.idx;
        if !node.mon.appctl(&["version"]).status.success() {
            bad.push(format!("node {n}: the monitor does not answer `version`"));
            return bad;
        }
        let churn = self.churns(node);
        let rows = interfaces(node);
        match node.loaded() {
            None => bad.push(format!("node {n}: the IKE daemon does not answer")),
            Some(conns) => {
                let problems = conn_problems(n, &conns, want, node.mode != Mode::Vici);
                bad.extend(match churn {
                    true => self.beyond_churn(n, problems, want),
                    false => problems,
                });
                bad.extend(version_problems(n, &conns, &rows));
            }
        }
        bad.extend(ovsdb_problems(n, &rows, want, churn));
        for ((_, name), old) in self
            .pending
            .range((n, String::new())..(n + 1, String::new()))
        {
            let now = rows.get(name).and_then(|r| r.get("ipsec-version"));
            if now == old.as_ref() {
                bad.push(format!(
                    "node {n}: {name} still published as version {now:?}: the change is not taken in"
                ));
            }
        }
        if bad.is_empty() {
            bad.extend(self.resources(node));
        }
        bad
    }

    /// Whether `node`'s connections churn: Libreswan on a kernel without ESP ([`CHURN_GRACE`]).
    pub fn churns(&self, node: &Node) -> bool {
        node.mode == Mode::Libreswan && !kernel::has_esp()
    }

    /// `problems` without the valid tunnels whose connection has been missing for less than
    /// [`CHURN_GRACE`].
    fn beyond_churn(&mut self, n: usize, problems: Vec<String>, want: &Desired) -> Vec<String> {
        let now = Instant::now();
        let mut young = BTreeSet::new();
        for t in want.valid_names() {
            let key = (n, t.clone());
            if !problems.contains(&missing(n, &t)) {
                self.missing_since.remove(&key);
            } else if now.duration_since(*self.missing_since.entry(key).or_insert(now))
                < CHURN_GRACE
            {
                young.insert(missing(n, &t));
            }
        }
        problems
            .into_iter()
            .filter(|p| !young.contains(p))
            .collect()
    }

    fn resources(&mut self, node: &Node) -> Vec<String> {
        let Some(pid) = node.worker_pid() else {
            return vec![format!("node {}: no pidfile", node.idx)];
        };
        let Some((fds, rss)) = usage(pid) else {
            return vec![format!("node {}: worker {pid} not found", node.idx)];
        };
        self.max_fds = self.max_fds.max(fds);
        self.max_rss_kb = self.max_rss_kb.max(rss);
        let (bfd, brss) = *self.baseline.entry(pid).or_insert((fds, rss));
        let mut bad = Vec::new();
        if fds > bfd + FD_SLACK {
            bad.push(format!("node {}: {fds} open fds, {bfd} at start", node.idx));
        }
        if rss > brss + RSS_SLACK_KB {
            bad.push(format!(
                "node {}: RSS {rss} KiB, {brss} KiB at start",
                node.idx
            ));
        }
        bad
    }
}

/// (open fds, RSS in KiB) of `pid`.
pub fn usage(pid: i32) -> Option<(usize, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((fds, rss))
}

/// The tunnel and version of a connection named `X-N`, `X-in-N` or `X-out-N`.
fn tunnel_of(conn: &str) -> Option<(&str, &str)> {
    let (b, v) = conn.rsplit_once('-')?;
    let b = b
        .strip_suffix("-in")
        .or(b.strip_suffix("-out"))
        .unwrap_or(b);
    v.chars().all(|c| c.is_ascii_digit()).then_some((b, v))
}

/// What is wrong with the connections `conns` an IKE daemon holds for `want`. With `split`
/// (stroke, Libreswan) a UDP tunnel has two connections, `X-in-N` and `X-out-N`; otherwise
/// every tunnel has one.
pub fn conn_problems(n: usize, conns: &[String], want: &Desired, split: bool) -> Vec<String> {
    // Per tunnel, the versions loaded and how many connections.
    let mut per: BTreeMap<&str, (BTreeSet<&str>, usize)> = BTreeMap::new();
    for c in conns {
        let (t, v) = tunnel_of(c).unwrap_or((c, ""));
        let e = per.entry(t).or_default();
        e.0.insert(v);
        e.1 += 1;
    }
    let valid: BTreeSet<String> = want.valid_names().into_iter().collect();
    let mut bad = Vec::new();
    for (b, (names, count)) in &per {
        if !valid.contains(*b) {
            bad.push(format!(
                "node {n}: the IKE daemon holds {b} {names:?}, not a valid tunnel"
            ));
        } else if names.len() > 1 {
            bad.push(format!(
                "node {n}: the IKE daemon holds versions {names:?} of {b}"
            ));
        } else if *count != expected_conns(b, split) {
            // One direction of the tunnel is missing.
            bad.push(missing(n, b));
        }
    }
    for v in &valid {
        if !per.contains_key(v.as_str()) {
            bad.push(missing(n, v));
        }
    }
    bad
}

/// How many connections tunnel `name` (a slot's `cN`) has.
fn expected_conns(name: &str, split: bool) -> usize {
    let slot = name.strip_prefix('c').and_then(|i| i.parse().ok());
    match slot {
        Some(i) if split && Slot { i }.kind() != "gre" => 2,
        _ => 1,
    }
}

fn missing(n: usize, tunnel: &str) -> String {
    format!("node {n}: {tunnel} is not loaded in the IKE daemon")
}

/// `external_ids` of every Interface, by name.
fn interfaces(node: &Node) -> Rows {
    let out = node.db.vsctl(&[
        "--format=json",
        "--columns=name,external_ids",
        "list",
        "Interface",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let mut all = BTreeMap::new();
    for row in v["data"].as_array().into_iter().flatten() {
        let name = row[0].as_str().unwrap_or_default().to_owned();
        let ids = row[1][1]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv[0].as_str()?.to_owned(), kv[1].as_str()?.to_owned())))
            .collect();
        all.insert(name, ids);
    }
    all
}

type Rows = BTreeMap<String, BTreeMap<String, String>>;

/// Connections loaded in a version other than the one OVSDB publishes for their tunnel
/// (`ipsec-version`): an outdated connection the monitor failed to replace.
fn version_problems(n: usize, conns: &[String], rows: &Rows) -> Vec<String> {
    conns
        .iter()
        .filter_map(|c| {
            let (t, v) = tunnel_of(c)?;
            let published = rows.get(t)?.get("ipsec-version")?;
            (published != v).then(|| {
                format!("node {n}: {c} loaded, but OVSDB publishes version {published} of {t}")
            })
        })
        .collect()
}

fn ovsdb_problems(n: usize, rows: &Rows, want: &Desired, churn: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let empty = BTreeMap::new();
    for name in want.valid_names() {
        let ids = rows.get(&name).unwrap_or(&empty);
        let state = ids.get("ipsec-state").map(String::as_str);
        if !matches!(state, Some("configured" | "negotiating" | "up" | "down")) {
            bad.push(format!("node {n}: {name} ipsec-state {state:?}"));
        }
        if let Some(e) = ids.get("ipsec-error")
            && !(churn && CHURN_ERRORS.iter().any(|c| e.starts_with(c)))
        {
            bad.push(format!("node {n}: {name} ipsec-error {e:?}"));
        }
    }
    for name in want.hostile_names() {
        let ids = rows.get(&name).unwrap_or(&empty);
        let state = ids.get("ipsec-state").map(String::as_str);
        if state != Some("invalid") || !ids.contains_key("ipsec-error") {
            bad.push(format!(
                "node {n}: hostile {name} ipsec-state {state:?} error {:?}",
                ids.get("ipsec-error")
            ));
        }
    }
    bad
}

/// Reads the files the monitor keeps, over and over, on a thread of its own: each must be
/// 0600 and parse whole every time it is seen (a reader never sees a half-written file).
pub struct FileWatch {
    stop: Arc<AtomicBool>,
    pub found: Arc<Mutex<Vec<String>>>,
    reads: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileWatch {
    /// `files`: JSON files (the saved tunnel versions).
    pub fn start(files: Vec<PathBuf>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(Mutex::new(0));
        let (s, f, r) = (stop.clone(), found.clone(), reads.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for p in &files {
                    let Ok(meta) = std::fs::metadata(p) else {
                        continue;
                    };
                    let mut problems = Vec::new();
                    if meta.permissions().mode() & 0o777 != 0o600 {
                        problems.push(format!(
                            "{} has mode {:o}",
                            p.display(),
                            meta.permissions().mode() & 0o777
                        ));
                    }
                    if let Ok(text) = std::fs::read(p)
                        && serde_json::from_slice::<serde_json::Value>(&text).is_err()
                    {
                        problems.push(format!(
                            "{} seen incomplete ({} bytes)",
                            p.display(),
                            text.len()
                        ));
                    }
                    *r.lock().expect("lock") += 1;
                    let mut all = f.lock().expect("lock");
                    for pr in problems {
                        if !all.contains(&pr) {
                            all.push(pr);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            found,
            reads,
            thread: Some(thread),
        }
    }

    pub fn reads(&self) -> u64 {
        *self.reads.lock().expect("lock")
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.found.lock().expect("lock"))
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
