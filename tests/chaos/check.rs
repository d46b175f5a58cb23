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
use std::time::Duration;

use ovs_monitor_ipsec::backend::secrets::psk_hex;
use ovs_monitor_ipsec::model::Secret;

use crate::node::Node;
use crate::tunnels::Desired;

/// Growth of the worker's open descriptors over its baseline that is a leak.
const FD_SLACK: usize = 16;
/// Growth of the worker's RSS over its baseline that is a leak (KiB).
const RSS_SLACK_KB: u64 = 24 * 1024;

#[derive(Default)]
pub struct Checker {
    /// Every secret the soak ever used, in every form it could be written in.
    secrets: BTreeSet<String>,
    /// Per node: how far its log was already searched for secrets.
    log_seen: BTreeMap<usize, usize>,
    /// Per worker pid: (fds, RSS KiB) when it first converged.
    baseline: BTreeMap<i32, (usize, u64)>,
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
        match node.loaded() {
            None => bad.push(format!("node {n}: charon does not answer")),
            Some(conns) => bad.extend(conn_problems(n, &conns, want)),
        }
        bad.extend(ovsdb_problems(node, want));
        if bad.is_empty() {
            bad.extend(self.resources(node));
        }
        bad
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

/// The tunnel a connection name `X-N` belongs to, if it has that shape.
fn base(conn: &str) -> Option<&str> {
    let (b, v) = conn.rsplit_once('-')?;
    v.chars().all(|c| c.is_ascii_digit()).then_some(b)
}

fn conn_problems(n: usize, conns: &[String], want: &Desired) -> Vec<String> {
    let mut per: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conns {
        per.entry(base(c).unwrap_or(c)).or_default().push(c);
    }
    let valid: BTreeSet<String> = want.valid_names().into_iter().collect();
    let mut bad = Vec::new();
    for (b, names) in &per {
        if !valid.contains(*b) {
            bad.push(format!(
                "node {n}: charon holds {names:?}, not a valid tunnel"
            ));
        } else if names.len() > 1 {
            bad.push(format!("node {n}: charon holds several versions {names:?}"));
        }
    }
    for v in &valid {
        if !per.contains_key(v.as_str()) {
            bad.push(format!("node {n}: {v} is not loaded in charon"));
        }
    }
    bad
}

/// `external_ids` of every Interface, by name.
fn interfaces(node: &Node) -> BTreeMap<String, BTreeMap<String, String>> {
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

fn ovsdb_problems(node: &Node, want: &Desired) -> Vec<String> {
    let rows = interfaces(node);
    let n = node.idx;
    let mut bad = Vec::new();
    let empty = BTreeMap::new();
    for name in want.valid_names() {
        let ids = rows.get(&name).unwrap_or(&empty);
        let state = ids.get("ipsec-state").map(String::as_str);
        if !matches!(state, Some("configured" | "negotiating" | "up" | "down")) {
            bad.push(format!("node {n}: {name} ipsec-state {state:?}"));
        }
        if let Some(e) = ids.get("ipsec-error") {
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
