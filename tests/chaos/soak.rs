//! The soak loop: set up two nodes, then until the time is up pick a step from the seeded
//! generator, do it, and wait until every invariant holds again on both nodes (or the step's
//! deadline passes: a violation). Faults that have a recovery target also measure it.

use std::path::Path;
use std::time::{Duration, Instant};

use ovs_monitor_ipsec::backend::strongswan_vici::plan::{LOAD_CONNECTION, UNLOAD_CONNECTION};

use crate::check::{Checker, FileWatch};
use crate::common::netns::{NetnsPair, ip};
use crate::common::vici::{make_pki, require_strongswan};
use crate::node::{Node, iface_args};
use crate::report::Report;
use crate::tunnels::{Auth, Desired, HOSTILE, NAMES, Slot, Tunnel, V6};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Vici,
}

impl Mode {
    pub const ALL: [Mode; 1] = [Mode::Vici];
    pub const NAMES: [&str; 1] = ["vici"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "vici" => Some(Mode::Vici),
            _ => None,
        }
    }
}

/// How long the invariants may take to hold again after a step. Generous: the machine is
/// shared and loaded. A connection unloaded behind the monitor's back is only noticed when a
/// periodic pass lists charon's connections (docs/strongswan-vici.md: one or two passes).
fn deadline(kind: &str) -> Duration {
    match kind {
        "behind-back" => Duration::from_secs(90),
        _ => Duration::from_secs(60),
    }
}

/// A seeded generator (SplitMix64): the same seed replays the same steps.
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Step kinds and their weights.
const STEPS: &[(&str, usize)] = &[
    ("add", 6),
    ("change", 5),
    ("delete", 3),
    ("hostile", 2),
    ("switch-auth", 1),
    ("ovsdb-kill", 2),
    ("ike-kill", 2),
    ("monitor-kill", 2),
    ("sighup", 1),
    ("refresh", 1),
    ("behind-back", 1),
];

/// The steps that measure recovery (a `--recovery` run does only these).
const FAULTS: &[&str] = &["ovsdb-kill", "ike-kill", "monitor-kill"];

pub struct Soak {
    pub nodes: Vec<Node>,
    pub want: Desired,
    pub rng: Rng,
    pub check: Checker,
    pub report: Report,
    slots: usize,
    pki: std::path::PathBuf,
    psk_seq: u64,
    watch: FileWatch,
    // Dropped last: the namespaces hold every process the nodes started.
    _net: NetnsPair,
    _tmp: tempfile::TempDir,
}

impl Soak {
    pub fn new(seed: u64, slots: usize) -> Self {
        require_strongswan();
        let net = NetnsPair::new("ch");
        for (ns, dev, me) in [(&net.left, "v0", V6[0]), (&net.right, "v1", V6[1])] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{me}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let pki = tmp.path().join("pki");
        std::fs::create_dir_all(&pki).expect("pki dir");
        make_pki(&pki);
        let mut check = Checker::default();
        let nodes: Vec<Node> = [&net.left, &net.right]
            .iter()
            .enumerate()
            // One monitor under --monitor, one without; monitor-kill steps switch them.
            .map(|(i, ns)| Node::start(i, ns, &tmp.path().join(NAMES[i]), i == 0))
            .collect();
        for name in NAMES {
            let key = pki.join(format!("{name}-privkey.pem"));
            check.add_private_key(&std::fs::read_to_string(&key).expect("key"));
        }
        let watch = FileWatch::start(
            nodes
                .iter()
                .map(|n| n.db.dir().join("ovs-monitor-ipsec.versions"))
                .collect(),
        );
        Self {
            nodes,
            want: Desired::default(),
            rng: Rng(seed),
            check,
            report: Report {
                mode: "vici".into(),
                seed,
                ..Default::default()
            },
            slots,
            pki,
            psk_seq: 0,
            watch,
            _net: net,
            _tmp: tmp,
        }
    }

    fn new_tunnel(&mut self) -> Tunnel {
        let auth = if self.want.pki {
            Auth::Cert
        } else {
            self.psk_seq += 1;
            let k = format!("chaos{:016x}k{}", self.rng.next(), self.psk_seq);
            self.check.add_psk(&k);
            Auth::Psk(k)
        };
        let dpd = self.rng.chance(20).then(|| 10 + self.rng.below(50) as u32);
        Tunnel { auth, dpd }
    }

    /// Writes slot `i` as `want` says on both nodes.
    pub fn write_slot(&self, i: usize) {
        let s = Slot { i };
        for node in &self.nodes {
            match self.want.tunnels.get(&i) {
                Some(t) => node.set_iface(&s.name(), s.kind(), &s.options(node.idx, t)),
                None => node.del_iface(&s.name()),
            }
        }
    }

    /// Adds tunnels in every free slot below `n`, or (`n` = 0) switches between PSKs and
    /// certificates: every tunnel gets the other kind of authentication, in one transaction
    /// per node with the `other_config` change.
    pub fn rewrite_all(&mut self, n: usize) {
        if n == 0 {
            self.want.pki = !self.want.pki;
        }
        let slots: Vec<usize> = (0..n.max(self.slots))
            .filter(|i| (n == 0) == self.want.tunnels.contains_key(i) && (n == 0 || *i < n))
            .collect();
        for i in slots {
            let t = self.new_tunnel();
            self.want.tunnels.insert(i, t);
        }
        for node in &self.nodes {
            let me = NAMES[node.idx];
            let p = |f: &str| self.pki.join(f).display().to_string();
            let mut args: Vec<String> = vec!["set".into(), "Open_vSwitch".into(), ".".into()];
            if self.want.pki {
                args.extend([
                    format!("other_config:certificate={}", p(&format!("{me}-cert.pem"))),
                    format!(
                        "other_config:private_key={}",
                        p(&format!("{me}-privkey.pem"))
                    ),
                    format!("other_config:ca_cert={}", p("cacert.pem")),
                ]);
            } else {
                args = [
                    "remove",
                    "Open_vSwitch",
                    ".",
                    "other_config",
                    "certificate",
                    "private_key",
                    "ca_cert",
                ]
                .map(String::from)
                .to_vec();
            }
            for (&i, t) in &self.want.tunnels {
                let s = Slot { i };
                args.push("--".into());
                args.extend(iface_args(&s.name(), s.kind(), &s.options(node.idx, t)));
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            node.db.vsctl(&refs);
        }
    }

    /// Waits until every invariant holds on both nodes; the time it took, or a violation.
    pub fn converge(&mut self, kind: &str) -> Duration {
        let start = Instant::now();
        let limit = deadline(kind);
        loop {
            let mut bad = Vec::new();
            for n in 0..self.nodes.len() {
                let perm = self.check.permanent(&self.nodes[n]);
                self.report.violations.extend(perm);
                bad.extend(self.check.converged(&self.nodes[n], &self.want));
            }
            self.report
                .violations
                .extend(self.watch.take().into_iter().map(|f| format!("file: {f}")));
            if bad.is_empty() {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                self.report
                    .violations
                    .push(format!("after {kind}: not converged in {limit:?}: {bad:?}"));
                self.dump_logs();
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of each monitor's log, for the report of a violation.
    fn dump_logs(&mut self) {
        for node in &self.nodes {
            let log = node.log_since(0);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n    ");
            self.report
                .notes
                .push(format!("node {} monitor log (end):\n    {tail}", node.idx));
        }
    }

    fn pick(&mut self, faults_only: bool) -> &'static str {
        let steps: Vec<(&'static str, usize)> = STEPS
            .iter()
            .copied()
            .filter(|(k, _)| !faults_only || FAULTS.contains(k))
            .collect();
        let total: usize = steps.iter().map(|s| s.1).sum();
        let mut r = self.rng.below(total);
        for (k, w) in steps {
            if r < w {
                return k;
            }
            r -= w;
        }
        "refresh"
    }

    /// Does one step of kind `kind`; returns the kind actually done.
    fn step(&mut self, kind: &'static str) -> &'static str {
        let free: Vec<usize> = (0..self.slots)
            .filter(|i| !self.want.tunnels.contains_key(i))
            .collect();
        let used: Vec<usize> = self.want.tunnels.keys().copied().collect();
        match kind {
            "add" if !free.is_empty() => {
                let i = free[self.rng.below(free.len())];
                let t = self.new_tunnel();
                self.want.tunnels.insert(i, t);
                self.write_slot(i);
                "add"
            }
            "change" | "add" if !used.is_empty() => {
                let i = used[self.rng.below(used.len())];
                let t = self.new_tunnel();
                self.want.tunnels.insert(i, t);
                self.write_slot(i);
                "change"
            }
            "delete" if !used.is_empty() => {
                let i = used[self.rng.below(used.len())];
                self.want.tunnels.remove(&i);
                self.write_slot(i);
                "delete"
            }
            "hostile" => {
                let k = self.rng.below(HOSTILE.len());
                let name = format!("h{k}");
                if self.want.hostile.remove(&k).is_some() {
                    self.nodes.iter().for_each(|n| n.del_iface(&name));
                } else {
                    let (kind, opts) = HOSTILE[k];
                    let opts: Vec<String> = opts.iter().map(|o| o.to_string()).collect();
                    self.nodes
                        .iter()
                        .for_each(|n| n.set_iface(&name, kind, &opts));
                    self.want.hostile.insert(k, k);
                }
                "hostile"
            }
            "switch-auth" => {
                self.rewrite_all(0);
                "switch-auth"
            }
            "ovsdb-kill" => {
                self.ovsdb_kill();
                "ovsdb-kill"
            }
            "ike-kill" => {
                self.ike_kill();
                "ike-kill"
            }
            "monitor-kill" => {
                self.monitor_kill();
                "monitor-kill"
            }
            "sighup" => {
                let n = self.rng.below(self.nodes.len());
                if let Some(pid) = self.nodes[n].worker_pid() {
                    signal(pid, nix::sys::signal::Signal::SIGHUP);
                }
                "sighup"
            }
            "refresh" => {
                let n = self.rng.below(self.nodes.len());
                let _ = self.nodes[n].mon.appctl(&["refresh"]);
                "refresh"
            }
            "behind-back" => {
                let n = self.rng.below(self.nodes.len());
                let conns = self.nodes[n].loaded().unwrap_or_default();
                if conns.is_empty() {
                    return self.step("add");
                }
                let c = &conns[self.rng.below(conns.len())];
                self.nodes[n].charon.unload_conn(c);
                "behind-back"
            }
            _ => self.step("add"),
        }
    }

    /// ovsdb-server killed with SIGKILL and started again on the same database: the monitor
    /// reconnects and resyncs without a single action for tunnels that did not change.
    fn ovsdb_kill(&mut self) {
        let n = self.rng.below(self.nodes.len());
        let from = self.nodes[n].log_len();
        self.nodes[n].db.restart();
        let back = Instant::now();
        let node = &self.nodes[n];
        match node.wait_log_since(from, ": connected", deadline("ovsdb-kill")) {
            Some(_) => self
                .report
                .figure("ovsdb-server restart -> reconnected", back.elapsed()),
            None => self.report.violations.push(format!(
                "node {n}: no reconnection to the restarted ovsdb-server"
            )),
        }
        self.converge("ovsdb-kill");
        let redone = connection_actions(&self.nodes[n].log_since(from));
        self.report.count(
            "connections (un)loaded after an ovsdb-server restart",
            redone,
        );
        if redone > 0 {
            self.report.violations.push(format!(
                "node {n}: {redone} connections loaded or unloaded after an ovsdb-server restart, none changed"
            ));
        }
    }

    /// charon killed with SIGKILL: the monitor notices (the event connection closes), and
    /// once charon is started again it loads every tunnel again.
    fn ike_kill(&mut self) {
        let n = self.rng.below(self.nodes.len());
        let from = self.nodes[n].log_len();
        let killed = Instant::now();
        self.nodes[n].charon.kill();
        match self.nodes[n].wait_log_since(from, "lost the VICI connection", deadline("ike-kill")) {
            Some(_) => self
                .report
                .figure("IKE daemon killed -> detected", killed.elapsed()),
            None => self
                .report
                .violations
                .push(format!("node {n}: charon's death not noticed")),
        }
        // Down for a while, as under a service manager's restart delay.
        std::thread::sleep(Duration::from_millis(200 + self.rng.below(1500) as u64));
        self.nodes[n].charon.restart();
        let back = Instant::now();
        let want = self.want.tunnels.len();
        let restored = loop {
            if self.nodes[n].loaded().map(|c| c.len()) == Some(want) {
                break Some(back.elapsed());
            }
            if back.elapsed() > deadline("ike-kill") {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match restored {
            Some(t) => {
                self.report
                    .figure("IKE daemon back -> every connection loaded", t);
                self.report.most_tunnels_restored = self.report.most_tunnels_restored.max(want);
            }
            None => self.report.violations.push(format!(
                "node {n}: {want} connections not all loaded into the restarted charon"
            )),
        }
    }

    /// The monitor killed: without `--monitor` by SIGKILL, and the soak starts it again (with
    /// or without `--monitor`); under `--monitor` by SIGKILL too (a deliberate stop for the
    /// supervisor, as for Open vSwitch's daemons: it exits and the soak starts the monitor
    /// again) or by SIGABRT (a crash, what a panic becomes: the supervisor starts a new worker). The restarted
    /// monitor adopts what charon holds: the same connection names, the same IKE_SAs, nothing
    /// loaded anew.
    fn monitor_kill(&mut self) {
        use nix::sys::signal::Signal::{SIGABRT, SIGKILL};
        let n = self.rng.below(self.nodes.len());
        let supervised_next = self.rng.chance(50);
        let crash = self.nodes[n].supervised && self.rng.chance(50);
        let before_conns = sorted(self.nodes[n].loaded().unwrap_or_default());
        let before_sas = sorted(self.nodes[n].ike_sas());
        let charon_from = self.nodes[n].charon.log().len();
        let from = self.nodes[n].log_len();
        let Some(pid) = self.nodes[n].worker_pid() else {
            self.report.violations.push(format!("node {n}: no pidfile"));
            return;
        };
        let killed = Instant::now();
        signal(pid, if crash { SIGABRT } else { SIGKILL });
        let node = &mut self.nodes[n];
        let label = if crash {
            let ok = wait(deadline("monitor-kill"), || {
                node.worker_pid().is_some_and(|p| p != pid)
            });
            if !ok {
                self.report.violations.push(format!(
                    "node {n}: --monitor did not restart the crashed worker"
                ));
                return;
            }
            "SIGABRT, restarted by --monitor"
        } else {
            let supervisor = node.mon.child.as_mut().map(|c| c.id());
            // The spawned process (the worker, or its supervisor) must end and be reaped
            // before /proc shows the worker gone.
            let gone = wait(Duration::from_secs(20), || {
                let reaped = node
                    .mon
                    .child
                    .as_mut()
                    .is_none_or(|c| c.try_wait().ok().flatten().is_some());
                reaped && !Path::new(&format!("/proc/{pid}")).exists()
            });
            if !gone {
                self.report.violations.push(format!(
                    "node {n}: after SIGKILL of worker {pid}, it or its supervisor {supervisor:?} is still there"
                ));
                return;
            }
            node.relaunch(supervised_next);
            "SIGKILL, restarted"
        };
        let adopted = node.wait_log_since(from, "first pass applied", deadline("monitor-kill"));
        if adopted.is_some() {
            self.report
                .figure(&format!("monitor {label} -> first pass"), killed.elapsed());
        }
        self.converge("monitor-kill");
        let node = &self.nodes[n];
        let after_conns = sorted(node.loaded().unwrap_or_default());
        let after_sas = sorted(node.ike_sas());
        let charon_log = node.charon.log();
        let reloaded = charon_log
            .get(charon_from..)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("added vici connection") || l.contains("replaced vici connection")
            })
            .count() as u64;
        self.report
            .count("connections re-created after a monitor restart", reloaded);
        let kept = before_sas.iter().filter(|s| after_sas.contains(s)).count();
        self.report
            .count("IKE_SAs before a monitor restart", before_sas.len() as u64);
        self.report
            .count("IKE_SAs kept across a monitor restart", kept as u64);
        if reloaded > 0 || before_conns != after_conns || kept < before_sas.len() {
            self.report.violations.push(format!(
                "node {n}: the restarted monitor did not adopt charon's state: {reloaded} connections \
                 re-created, connections {before_conns:?} -> {after_conns:?}, IKE_SAs {before_sas:?} -> {after_sas:?}"
            ));
        }
    }

    pub fn finish(mut self, started: Instant) -> Report {
        self.report.elapsed = started.elapsed();
        self.report.max_fds = self.check.max_fds;
        self.report.max_rss_kb = self.check.max_rss_kb;
        self.report.file_reads = self.watch.reads();
        std::mem::take(&mut self.report)
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Connections the monitor loaded or unloaded according to `log` (its debug lines, one per
/// action).
fn connection_actions(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(LOAD_CONNECTION) || l.contains(UNLOAD_CONNECTION))
        .count() as u64
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// One soak of `mode` for `duration` on `slots` tunnel slots. With `recovery`, every slot
/// gets its tunnel first and only the faults with a recovery figure run (a run that measures
/// those figures at scale).
pub fn run(mode: Mode, seed: u64, duration: Duration, slots: usize, recovery: bool) -> Report {
    let started = Instant::now();
    let mut soak = Soak::new(seed, slots);
    soak.report.mode = Mode::NAMES[mode as usize].into();
    if recovery {
        soak.rewrite_all(slots);
    }
    let took = soak.converge("start");
    soak.report.step("start", took);
    while started.elapsed() < duration && soak.report.violations.is_empty() {
        let kind = soak.pick(recovery);
        let done = soak.step(kind);
        let took = soak.converge(done);
        soak.report.step(done, took);
    }
    soak.finish(started)
}
