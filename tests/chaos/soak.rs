//! The soak loop: set up two nodes, then until the time is up pick a step from the seeded
//! generator, do it, and wait until every invariant holds again on both nodes (or the step's
//! deadline passes: a violation). Faults that have a recovery target also measure it.

use std::time::{Duration, Instant};

use crate::check::{Checker, FileWatch};
use crate::common::monitor::iface_key;
use crate::common::netns::{NetnsPair, ip};
use crate::common::vici::{make_pki, require_strongswan};
use crate::faults::signal;
use crate::node::{Node, iface_args};
use crate::report::Report;
use crate::tunnels::{Auth, Desired, HOSTILE, NAMES, Slot, Tunnel, V6};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Real charons, driven over VICI.
    Vici,
    /// Real charons under starter, driven through the legacy `ipsec` interface (stroke).
    Stroke,
    /// Real plutos (Libreswan 4), driven with `ipsec` commands and config files.
    Libreswan,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Vici, Mode::Stroke, Mode::Libreswan];
    pub const NAMES: [&str; 3] = ["vici", "stroke", "libreswan"];

    pub fn parse(s: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }
}

/// How long the invariants may take to hold again after a step. Generous: the machine is
/// shared and loaded. A connection unloaded behind the monitor's back is only noticed when a
/// periodic pass lists charon's connections (docs/strongswan-vici.md: one or two passes).
pub fn deadline(kind: &str) -> Duration {
    match kind {
        "behind-back" | "hang" | "disk-full" => Duration::from_secs(90),
        _ => Duration::from_secs(60),
    }
}

/// What a step takes at most when nothing is wrong (see [`run`]).
const LONGEST_STEP: Duration = Duration::from_secs(20);

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

    pub fn chance(&mut self, percent: usize) -> bool {
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
    ("hang", 1),
    ("disk-full", 1),
];

/// The steps that measure recovery (a `--recovery` run does only these).
const FAULTS: &[&str] = &["ovsdb-kill", "ike-kill", "monitor-kill"];

pub struct Soak {
    pub nodes: Vec<Node>,
    pub want: Desired,
    pub rng: Rng,
    pub check: Checker,
    pub report: Report,
    pub slots: usize,
    pki: std::path::PathBuf,
    psk_seq: u64,
    /// stroke: the PSK of every tunnel of a family (IPv4, IPv6), because charon's secrets
    /// are per pair of endpoints, and the monitor refuses two tunnels to one peer address
    /// with different PSKs. A change there draws a new one for the whole family.
    family_psk: Option<[String; 2]>,
    watch: FileWatch,
    // Dropped last: the namespaces hold every process the nodes started.
    _net: NetnsPair,
    _tmp: tempfile::TempDir,
}

impl Soak {
    pub fn new(mode: Mode, seed: u64, slots: usize) -> Self {
        require_strongswan();
        let net = NetnsPair::new("ch");
        // IPv6 beside the pair's IPv4, with a default route to the peer as for IPv4 (pluto's
        // `%defaultroute` needs one per family).
        for (ns, dev, me, peer) in [
            (&net.left, "v0", V6[0], V6[1]),
            (&net.right, "v1", V6[1], V6[0]),
        ] {
            let addr = format!("{me}/64");
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev, "nodad"]);
            ip(&[
                "-n", ns, "-6", "route", "add", "default", "via", peer, "dev", dev,
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
            .map(|(i, ns)| Node::start(mode, i, ns, &tmp.path().join(NAMES[i]), i == 0))
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
                mode: Mode::NAMES[mode as usize].into(),
                seed,
                ..Default::default()
            },
            slots,
            pki,
            psk_seq: 0,
            family_psk: None,
            watch,
            _net: net,
            _tmp: tmp,
        }
    }

    fn new_psk(&mut self) -> String {
        self.psk_seq += 1;
        let k = format!("chaos{:016x}k{}", self.rng.next(), self.psk_seq);
        self.check.add_psk(&k);
        k
    }

    /// A new version of the tunnel in slot `i`: a new PSK (or, where PSKs are per family,
    /// that family's), a new pass-through option.
    fn new_tunnel(&mut self, i: usize) -> Tunnel {
        let auth = match (&self.family_psk, self.want.pki) {
            (_, true) => Auth::Cert,
            (Some(f), _) => Auth::Psk(f[Slot { i }.v6() as usize].clone()),
            (None, _) => Auth::Psk(self.new_psk()),
        };
        let dpd = self.rng.chance(20).then(|| 10 + self.rng.below(50) as u32);
        Tunnel { auth, dpd }
    }

    /// A new PSK for every tunnel of a family (where PSKs are per family): each of them
    /// changes.
    fn new_family_psk(&mut self, v6: bool) {
        let k = self.new_psk();
        if let Some(f) = &mut self.family_psk {
            f[v6 as usize] = k.clone();
        }
        let slots: Vec<usize> = (self.want.tunnels.keys().copied())
            .filter(|&i| Slot { i }.v6() == v6)
            .collect();
        for i in slots {
            if let Some(t) = self.want.tunnels.get_mut(&i) {
                t.auth = Auth::Psk(k.clone());
            }
            self.write_slot(i);
        }
    }

    /// Writes slot `i` as `want` says on both nodes.
    pub fn write_slot(&mut self, i: usize) {
        let s = Slot { i };
        for node in &self.nodes {
            match self.want.tunnels.get(&i) {
                Some(t) => {
                    let old = iface_key(&node.db, &s.name(), "ipsec-version");
                    self.check.expect_new_version(node.idx, &s.name(), old);
                    node.set_iface(&s.name(), s.kind(), &s.options(node.idx, t))
                }
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
        for &i in &slots {
            let t = self.new_tunnel(i);
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
                if slots.contains(&i) {
                    let old = iface_key(&node.db, &s.name(), "ipsec-version");
                    self.check.expect_new_version(node.idx, &s.name(), old);
                }
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
                self.check.settled();
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
    pub fn dump_logs(&mut self) {
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
    pub fn step(&mut self, kind: &'static str) -> &'static str {
        let free: Vec<usize> = (0..self.slots)
            .filter(|i| !self.want.tunnels.contains_key(i))
            .collect();
        let used: Vec<usize> = self.want.tunnels.keys().copied().collect();
        match kind {
            "add" if !free.is_empty() => {
                let i = free[self.rng.below(free.len())];
                let t = self.new_tunnel(i);
                self.want.tunnels.insert(i, t);
                self.write_slot(i);
                "add"
            }
            "change" | "add" if !used.is_empty() => {
                let i = used[self.rng.below(used.len())];
                if self.family_psk.is_some() && !self.want.pki && self.rng.chance(50) {
                    self.new_family_psk(Slot { i }.v6());
                } else {
                    let mut t = self.new_tunnel(i);
                    // With certificates (or a family's PSK) only the option can differ: a
                    // change always changes something.
                    if self.want.tunnels.get(&i) == Some(&t) {
                        t.dpd = match t.dpd {
                            Some(_) => None,
                            None => Some(10 + self.rng.below(50) as u32),
                        };
                    }
                    self.want.tunnels.insert(i, t);
                    self.write_slot(i);
                }
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
                self.nodes[n].delete_behind_back(c);
                "behind-back"
            }
            "hang" if self.nodes[0].hang_flag().is_some() => {
                self.hang();
                "hang"
            }
            "disk-full" if self.nodes[0].config_dir().is_some() => {
                self.disk_full();
                "disk-full"
            }
            _ => self.step("add"),
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

/// One soak of `mode` for `duration` on `slots` tunnel slots. With `recovery`, every slot
/// gets its tunnel first and only the faults with a recovery figure run (a run that measures
/// those figures at scale).
pub fn run(mode: Mode, seed: u64, duration: Duration, slots: usize, recovery: bool) -> Report {
    let started = Instant::now();
    let mut soak = Soak::new(mode, seed, slots);
    if mode == Mode::Stroke {
        soak.family_psk = Some([soak.new_psk(), soak.new_psk()]);
    }
    if recovery {
        soak.rewrite_all(slots);
    }
    let took = soak.converge("start");
    soak.report.step("start", took);
    // No new step once the longest regular one (a hang or a full filesystem waits for a
    // periodic pass) would end past the duration: the run's wall time stays within it.
    while started.elapsed() + LONGEST_STEP < duration && soak.report.violations.is_empty() {
        let kind = soak.pick(recovery);
        let done = soak.step(kind);
        let took = soak.converge(done);
        soak.report.step(done, took);
    }
    soak.finish(started)
}
