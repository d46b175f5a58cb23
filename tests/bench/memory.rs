//! The guard of the per-tunnel cost: the real monitor binary, in each mode, against a real
//! ovsdb-server loaded with N PSK tunnels, and a stand-in for the daemon it drives (the
//! recording stub `ipsec` of stroke and Libreswan, the fake charon's VICI socket, and for
//! static keys the kernel's XFRM in a fresh network namespace). Per mode and N it prints one
//! row of a markdown table:
//!
//! - peak RSS (`VmHWM`) once every tunnel's status is written (cold start);
//! - peak RSS after a burst of changes: the `remote_ip` of that many tunnels modified, one
//!   transaction each, sent back to back (as a script of `ovs-vsctl set` calls would), and
//!   waited for until every one's new `ipsec-version` is written;
//! - the monitor's CPU over the cold start;
//! - the monitor's CPU for one change each, sent alone on a quiet monitor (before the burst):
//!   **+1** tunnel (waited for until its `ipsec-state` is written), **modify 1** (the
//!   `remote_ip` of one tunnel, until its new `ipsec-version` is written), **−1** (its row
//!   deleted, until the row is gone); each step reads the CPU once the monitor is quiet, sends
//!   the one transaction, waits for its effect, waits until the monitor is quiet again and
//!   reports the difference;
//! - **periodic pass**: the CPU over a window that holds exactly one periodic pass (every 15 s)
//!   and no change, from just after one pass to just after the next; 15 s of idling (the pid
//!   file watch of stroke and Libreswan, 5 reads a second) are in it. Two such windows in a
//!   row, `first / second`: passes need not cost the same. (Static keys dump the whole kernel
//!   state at most every 15 s or 20 times the last dump's duration, in whichever pass comes
//!   first once it is due, a change's or the timer's; the other passes read back only what
//!   changed. At 10,000 tunnels the dump is due less often than every pass, so any figure of
//!   the row may hold it or not: +1 read 635 ms with it and 77 ms without.)
//!
//! With each CPU figure, the calls the monitor made to its daemon in that window: the stub
//! `ipsec` runs logged (stroke, Libreswan), the VICI messages the fake charon got (none for
//! static keys: netlink). CPU is read with nanosecond resolution from the monitor's process
//! CPU clock (`clock_getcpuclockid`: the run time of all its threads, including those that
//! have exited, which a sum of `/proc/PID/task/*/schedstat` would lose). "Quiet" is: no child
//! process, no daemon call and no more CPU than idling takes (learnt first) for 500 ms. A change step starts right
//! after a periodic pass, when the next one is not due before the step could end; the
//! monitor's `ovs_ipsec_passes_total{trigger="timer"}` (`metrics/show`, read outside the
//! windows) tells whether one fell inside all the same, and such a figure is marked `†`.
//!
//! `cargo bench --bench memory` runs N ∈ {1000, 10000} with a burst of 100 in every mode;
//! `cargo test` runs N = 10 with a burst of 3 so it cannot rot, and, not to wait for the
//! timer, measures `ovs-appctl refresh` (the same full pass) in place of the periodic one.
//! `MEMORY_BENCH_MODES` (`stroke,vici,libreswan,none`) and `MEMORY_BENCH_SIZES` (`1000,10000`)
//! narrow the run; `MEMORY_BENCH_WRAP` runs the monitor behind a command, e.g.
//! `heaptrack -o /tmp/hp` for a heap profile of the same run (the per-change columns are then
//! left out: the pid measured would be the wrapper's).

#[path = "../common/mod.rs"]
mod common;
#[path = "fixture.rs"]
mod fixture;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use common::fake_charon::{FakeCharon, State as CharonState};
use common::monitor::{Monitor, launch_rooted};
use common::netns::NetnsPair;
use common::ovsdb_server::OvsdbServer;
use fixture::{load_with, remote_ip, status_kb, until, watched_db, with_state};
use ovs_monitor_ipsec::ovsdb::Client;

/// How long the cold start may take (N = 10,000 on a loaded machine).
const COLD_LIMIT: Duration = Duration::from_secs(600);
/// How long loading or one change may take.
const LIMIT: Duration = Duration::from_secs(120);
/// Static-key mode: our end's address in the namespace, and the peers' generation.
const XFRM_LOCAL: &str = "192.0.2.1";
const PEER_GEN: &str = "0123456789abcdef0123456789abcdef";
/// The monitor's periodic pass (`RECONCILE_INTERVAL_SECS`).
const PERIOD: Duration = Duration::from_secs(ovs_monitor_ipsec::app::RECONCILE_INTERVAL_SECS);
/// How often the monitor's CPU, children and daemon calls are looked at.
const POLL: Duration = Duration::from_millis(20);
/// Quiet: no child, no daemon call and no more CPU than idling takes (twice the least of
/// `IDLE_WINDOWS` such windows, at least `QUIET_NS`) for this long. An idle monitor is not
/// still: the pid file watch of stroke and Libreswan wakes it 5 times a second.
const QUIET: Duration = Duration::from_millis(500);
const QUIET_NS: u64 = 500_000;
const IDLE_WINDOWS: usize = 6;
/// The added tunnel.
const EXTRA: &str = "extra";

const MODES: [&str; 4] = ["stroke", "vici", "libreswan", "none"];

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let list = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    let modes: Vec<String> = match list("MEMORY_BENCH_MODES") {
        Some(v) => v.split(',').map(str::to_owned).collect(),
        None => MODES.map(String::from).to_vec(),
    };
    let sizes: Vec<usize> = match list("MEMORY_BENCH_SIZES") {
        Some(v) => v.split(',').map(|n| n.parse().expect("a size")).collect(),
        None if bench => vec![1000, 10000],
        None => vec![10],
    };
    let burst = if bench { 100 } else { 3 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let periodic = if bench {
        "periodic pass"
    } else {
        "`refresh` (for a periodic pass)"
    };
    println!(
        "| mode | N | RSS cold | RSS after {burst} changes | CPU cold | +1 | modify 1 | −1 | {periodic} |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mode in &modes {
        assert!(MODES.contains(&mode.as_str()), "unknown mode {mode}");
        for &n in &sizes {
            let started = Instant::now();
            let r = rt.block_on(run(mode, n, burst, bench));
            let steps = match &r.steps {
                Some(s) => [&s.add, &s.modify, &s.remove, &s.periodic].map(|w| cell(w)),
                None => ["—".to_owned(), "—".into(), "—".into(), "—".into()],
            };
            println!(
                "| {mode} | {n} | {:.1} MB | {:.1} MB | {:.0} ms | {} |",
                mb(r.cold_kb),
                mb(r.burst_kb),
                r.cold_ms,
                steps.join(" | ")
            );
            eprintln!(
                "memory bench: {mode} at N = {n} took {:.0?}",
                started.elapsed()
            );
        }
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

struct Figures {
    cold_kb: u64,
    burst_kb: u64,
    cold_ms: f64,
    /// None behind `MEMORY_BENCH_WRAP`.
    steps: Option<Steps>,
}

struct Steps {
    add: Vec<Step>,
    modify: Vec<Step>,
    remove: Vec<Step>,
    /// Two periodic passes in a row (the smoke: one `refresh`).
    periodic: Vec<Step>,
}

/// The monitor's CPU over one measured window.
struct Step {
    ms: f64,
    /// Daemon calls in the window (None for static keys).
    calls: Option<usize>,
    /// Periodic passes that fell inside (the figure is then marked).
    timer_passes: u64,
}

/// A table cell: the windows' CPU and calls, `a / b` for two; `†` if a periodic pass fell
/// inside one.
fn cell(windows: &[Step]) -> String {
    let ms: Vec<String> = windows.iter().map(|w| format!("{:.1}", w.ms)).collect();
    let mut cell = format!("{} ms", ms.join(" / "));
    let calls: Option<Vec<usize>> = windows.iter().map(|w| w.calls).collect();
    if let Some(mut calls) = calls {
        calls.dedup();
        let plural = if calls == [1] { "call" } else { "calls" };
        let calls: Vec<String> = calls.iter().map(usize::to_string).collect();
        cell += &format!(", {} {plural}", calls.join(" / "));
    }
    if windows.iter().any(|w| w.timer_passes > 0) {
        cell += " †";
    }
    cell
}

/// What a mode runs beside the monitor (fake charon, namespace); dropped after it.
type Daemon = Option<Box<dyn std::any::Any>>;

async fn run(mode: &str, n: usize, burst: usize, bench: bool) -> Figures {
    let (db, client, mut events) = watched_db().await;
    let ev = &mut events;
    let extra = mode_options(mode);
    load_with(&client, n, &extra).await;

    let (daemon, mon, wrapped) = spawn_monitor(mode, &db);
    until("cold start", COLD_LIMIT, &client, ev, |c| {
        with_state(c) >= n
    })
    .await;
    let pid = mon.pid();
    let cpu = Cpu::of(pid);
    let cold_ms = cpu.ms();
    let cold_kb = status_kb(pid, "VmHWM");

    let steps = match wrapped {
        true => None,
        false => {
            let calls = Calls::of(mode, &db, &daemon);
            let mut pacer = Pacer::new(&mon, cpu, calls, bench).await;
            Some(steps(&mut pacer, &client, ev, n, &extra).await)
        }
    };

    let burst = burst.min(n);
    for i in 0..burst {
        modify(&client, i, &extra).await;
    }
    let changed = |c: &Client| (0..burst).all(|i| version(c, &format!("t{i}")) == Some(2));
    until("the burst", COLD_LIMIT, &client, ev, changed).await;
    let burst_kb = status_kb(pid, "VmHWM");
    stop(mon);
    drop(daemon);
    Figures {
        cold_kb,
        burst_kb,
        cold_ms,
        steps,
    }
}

/// +1, modify 1, −1 and two periodic passes (or, for the smoke, one `refresh`).
async fn steps(
    pacer: &mut Pacer<'_>,
    client: &Client,
    ev: &mut tokio::sync::mpsc::UnboundedReceiver<ovs_monitor_ipsec::ovsdb::DbEvent>,
    n: usize,
    extra: &[(&str, &str)],
) -> Steps {
    let periodic = match pacer.wait_timer {
        true => {
            // The first pass only aligns: the windows start after it.
            pacer.await_pass().await;
            vec![pacer.await_pass().await, pacer.await_pass().await]
        }
        false => {
            let mon = pacer.mon;
            let refresh = async {
                mon.appctl_ok(&["refresh"]);
            };
            vec![pacer.step(refresh).await]
        }
    };
    let add = pacer
        .step(async {
            add(client, extra).await;
            let has_state =
                |c: &Client| row_ids(c, EXTRA).is_some_and(|ids| ids.contains_key("ipsec-state"));
            until("+1", LIMIT, client, ev, has_state).await;
        })
        .await;
    let last = format!("t{}", n - 1);
    let modify_one = pacer
        .step(async {
            modify(client, n - 1, extra).await;
            until("modify 1", LIMIT, client, ev, |c| {
                version(c, &last) == Some(2)
            })
            .await;
        })
        .await;
    let port = port_uuid(client, EXTRA).await;
    let remove = pacer
        .step(async {
            remove(client, &port).await;
            until("−1", LIMIT, client, ev, |c| row_ids(c, EXTRA).is_none()).await;
        })
        .await;
    Steps {
        add: vec![add],
        modify: vec![modify_one],
        remove: vec![remove],
        periodic,
    }
}

/// The `external_ids` of interface `name` in the watcher's replica, if the row is there.
fn row_ids(c: &Client, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
    c.with_replica(|r| {
        r.table("Interface")
            .find(|(_, row)| row.get("name").as_str() == Some(name))
            .map(|(_, row)| row.get("external_ids").as_string_map())
    })
}

/// The `ipsec-version` of interface `name`.
fn version(c: &Client, name: &str) -> Option<u64> {
    row_ids(c, name)?.get("ipsec-version")?.parse().ok()
}

/// The monitor's CPU time, read with nanosecond resolution from its process CPU clock: all
/// its threads, including those that have exited (a blocking-pool thread ends after 10 s
/// idle; a sum over `/proc/PID/task/*/schedstat` would lose its time).
struct Cpu {
    clock: libc::clockid_t,
    pid: u32,
}

impl Cpu {
    fn of(pid: u32) -> Self {
        let mut clock: libc::clockid_t = 0;
        let pid_t = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: `clock` is a valid out-pointer for the call's duration.
        let rc = unsafe { libc::clock_getcpuclockid(pid_t, &mut clock) };
        assert_eq!(rc, 0, "clock_getcpuclockid({pid}) failed: errno {rc}");
        Self { clock, pid }
    }

    fn ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer for the call's duration.
        let rc = unsafe { libc::clock_gettime(self.clock, &mut ts) };
        assert_eq!(
            rc, 0,
            "the monitor's CPU clock is unreadable (has it exited?)"
        );
        let sec = u64::try_from(ts.tv_sec).expect("CPU seconds are positive");
        let nsec = u64::try_from(ts.tv_nsec).expect("CPU nanoseconds are positive");
        sec * 1_000_000_000 + nsec
    }

    fn ms(&self) -> f64 {
        self.ns() as f64 / 1e6
    }

    /// Whether any thread of the monitor has a child process (an `ipsec` run).
    fn has_children(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
        })
    }
}

/// The monitor's calls to its daemon, as the daemon's stand-in recorded them.
enum Calls {
    /// The stub `ipsec`'s log, a call a line.
    Log(PathBuf),
    /// The fake charon's record of VICI messages.
    Vici(Arc<Mutex<CharonState>>),
    /// Static keys: netlink, not counted.
    None,
}

impl Calls {
    fn of(mode: &str, db: &OvsdbServer, daemon: &Daemon) -> Self {
        let root = db.dir().join("root");
        match mode {
            "stroke" => Calls::Log(root.join("ipsec-calls.log")),
            "libreswan" => Calls::Log(root.join("usr/sbin/state/calls.log")),
            "vici" => {
                let fake = daemon
                    .as_ref()
                    .and_then(|d| d.downcast_ref::<FakeCharon>())
                    .expect("VICI mode runs the fake charon");
                Calls::Vici(fake.state.clone())
            }
            _ => Calls::None,
        }
    }

    /// Something that moves with each call (cheap enough to poll).
    fn mark(&self) -> u64 {
        match self {
            Calls::Log(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
            Calls::Vici(s) => s.lock().expect("the fake charon's state").calls.len() as u64,
            Calls::None => 0,
        }
    }

    fn count(&self) -> Option<usize> {
        match self {
            Calls::Log(p) => Some(std::fs::read_to_string(p).map_or(0, |t| t.lines().count())),
            Calls::Vici(s) => Some(s.lock().expect("the fake charon's state").calls.len()),
            Calls::None => None,
        }
    }
}

/// Runs the measured windows: each on a quiet monitor and, with `wait_timer`, clear of the
/// periodic pass.
struct Pacer<'a> {
    mon: &'a Monitor,
    cpu: Cpu,
    calls: Calls,
    /// `ovs_ipsec_passes_total{trigger="timer"}` at the last look.
    timer: u64,
    /// When the next periodic pass is due, if known.
    due: Option<Instant>,
    /// The CPU an idle monitor takes in `QUIET` (see [`Pacer::learn_idle`]).
    idle_ns: u64,
    /// The wall time of the last step.
    last_step: Duration,
    /// Measure the periodic pass and keep the steps clear of it (the bench), or not (the
    /// smoke, which does not wait for the timer).
    wait_timer: bool,
}

impl<'a> Pacer<'a> {
    async fn new(mon: &'a Monitor, cpu: Cpu, calls: Calls, wait_timer: bool) -> Self {
        let mut p = Self {
            mon,
            cpu,
            calls,
            timer: 0,
            due: None,
            idle_ns: 0,
            last_step: Duration::ZERO,
            wait_timer,
        };
        p.learn_idle().await;
        p.timer_passes().await;
        p
    }

    /// Learns what the monitor's idling costs: the least CPU of `IDLE_WINDOWS` windows of
    /// `QUIET` in a row without a child or a daemon call.
    async fn learn_idle(&mut self) {
        let deadline = Instant::now() + LIMIT;
        let mut least = Vec::new();
        while least.len() < IDLE_WINDOWS {
            assert!(
                Instant::now() < deadline,
                "the monitor is not idle after {LIMIT:?}"
            );
            let (c0, k0) = (self.cpu.ns(), self.calls.mark());
            let end = Instant::now() + QUIET;
            let mut still = true;
            while Instant::now() < end {
                tokio::time::sleep(POLL).await;
                still &= !self.cpu.has_children() && self.calls.mark() == k0;
            }
            match still {
                true => least.push(self.cpu.ns() - c0),
                false => least.clear(),
            }
        }
        let least = least.into_iter().min().unwrap_or(0);
        self.idle_ns = QUIET_NS.max(2 * least);
    }

    /// Waits until the monitor is quiet; returns its CPU then.
    async fn quiet(&self) -> u64 {
        let deadline = Instant::now() + LIMIT;
        let mut since = (Instant::now(), self.cpu.ns(), self.calls.mark());
        loop {
            tokio::time::sleep(POLL).await;
            let (cpu, mark) = (self.cpu.ns(), self.calls.mark());
            if self.cpu.has_children() || mark != since.2 || cpu - since.1 > self.idle_ns {
                since = (Instant::now(), cpu, mark);
            } else if since.0.elapsed() >= QUIET {
                return cpu;
            }
            assert!(
                Instant::now() < deadline,
                "the monitor is not quiet after {LIMIT:?}"
            );
        }
    }

    /// Waits (up to `limit`) until the monitor is busy (a child, a daemon call, or more CPU
    /// in one `POLL` than idling takes in `QUIET`); returns when it was seen so.
    async fn busy(&self, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        let (mut cpu, mark) = (self.cpu.ns(), self.calls.mark());
        while Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            let now = self.cpu.ns();
            if self.cpu.has_children() || self.calls.mark() != mark || now - cpu > self.idle_ns {
                return Some(Instant::now());
            }
            cpu = now;
        }
        None
    }

    /// Reads the timer's pass count (outside any window: `metrics/show` costs CPU), waits
    /// until that is over, and returns how many passes it counted since the last look.
    async fn timer_passes(&mut self) -> u64 {
        let out = self.mon.appctl_ok(&["metrics/show"]);
        let n = out
            .lines()
            .find_map(|l| l.strip_prefix("ovs_ipsec_passes_total{trigger=\"timer\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("metrics/show counts the timer's passes") as u64;
        self.quiet().await;
        let new = n - self.timer;
        self.timer = n;
        new
    }

    /// Waits for the next periodic pass and returns its window: from the monitor quiet before
    /// it to the monitor quiet after it, with no other pass inside (else the next one).
    async fn await_pass(&mut self) -> Step {
        loop {
            // Quiet: the last look at the timer waited for it.
            let (c0, k0) = (self.cpu.ns(), self.calls.count());
            let seen = self
                .busy(PERIOD + LIMIT)
                .await
                .expect("no periodic pass in 15 s");
            let (c1, k1) = (self.quiet().await, self.calls.count());
            match self.timer_passes().await {
                1 => {
                    self.due = Some(seen + PERIOD);
                    return Step {
                        ms: (c1 - c0) as f64 / 1e6,
                        calls: k1.zip(k0).map(|(b, a)| b - a),
                        timer_passes: 0,
                    };
                }
                n => eprintln!("memory bench: {n} periodic passes in one window, waiting again"),
            }
        }
    }

    /// One change: `change` sends it and waits for its effect; the window is from the
    /// monitor quiet before to the monitor quiet after. With `wait_timer`, it starts after a
    /// periodic pass unless the next one is due well after the step would end.
    async fn step(&mut self, change: impl Future<Output = ()>) -> Step {
        if self.wait_timer {
            let budget = Duration::from_secs(3).max(self.last_step * 3);
            if self.due.is_none_or(|due| Instant::now() + budget > due) {
                self.await_pass().await;
            }
        }
        let started = Instant::now();
        // Quiet: the last look at the timer waited for it.
        let (c0, k0) = (self.cpu.ns(), self.calls.count());
        change.await;
        // A removal is not written back: if the monitor has not moved yet, give it time to
        // start on it.
        if self.cpu.ns() - c0 <= self.idle_ns {
            let _ = self.busy(Duration::from_secs(2)).await;
        }
        let (c1, k1) = (self.quiet().await, self.calls.count());
        self.last_step = started.elapsed();
        let timer_passes = self.timer_passes().await;
        if timer_passes > 0 {
            self.due = None;
        }
        Step {
            ms: (c1 - c0) as f64 / 1e6,
            calls: k1.zip(k0).map(|(b, a)| b - a),
            timer_passes,
        }
    }
}

/// The options every tunnel of `mode` carries besides `remote_ip` and `psk`.
fn mode_options(mode: &str) -> Vec<(&'static str, &'static str)> {
    match mode {
        "none" => vec![
            ("local_ip", XFRM_LOCAL),
            ("ipsec_peer_generation", PEER_GEN),
        ],
        _ => Vec::new(),
    }
}

/// Moves tunnel `t<i>` to another remote address (one transaction, like one `ovs-vsctl set`).
async fn modify(client: &Client, i: usize, extra: &[(&str, &str)]) {
    let ip = remote_ip(i).replacen("10.", "172.", 1);
    let mut options = vec![json!(["remote_ip", ip]), json!(["psk", "swordfish"])];
    options.extend(extra.iter().map(|(k, v)| json!([k, v])));
    let op = json!({"op": "update", "table": "Interface",
        "where": [["name", "==", format!("t{i}")]],
        "row": {"options": ["map", options]}});
    tokio::time::timeout(LIMIT, client.transact(vec![op]))
        .await
        .expect("a change timed out")
        .expect("change a tunnel");
}

/// Adds tunnel [`EXTRA`] (one transaction, like one `ovs-vsctl add-port`).
async fn add(client: &Client, extra: &[(&str, &str)]) {
    let mut options = vec![
        json!(["remote_ip", "10.255.255.1"]),
        json!(["psk", "swordfish"]),
    ];
    options.extend(extra.iter().map(|(k, v)| json!([k, v])));
    let ops = vec![
        json!({"op": "insert", "table": "Interface", "uuid-name": "i",
            "row": {"name": EXTRA, "type": "vxlan", "options": ["map", options]}}),
        json!({"op": "insert", "table": "Port", "uuid-name": "p",
            "row": {"name": EXTRA, "interfaces": ["named-uuid", "i"]}}),
        json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
            "mutations": [["ports", "insert", ["set", [["named-uuid", "p"]]]]]}),
    ];
    tokio::time::timeout(LIMIT, client.transact(ops))
        .await
        .expect("adding a tunnel timed out")
        .expect("add a tunnel");
}

/// The uuid of port `name` (read before a removal, outside its window).
async fn port_uuid(client: &Client, name: &str) -> String {
    let op = json!({"op": "select", "table": "Port", "where": [["name", "==", name]],
        "columns": ["_uuid"]});
    let reply = tokio::time::timeout(LIMIT, client.transact(vec![op]))
        .await
        .expect("a select timed out")
        .expect("select a port");
    reply[0]["rows"][0]["_uuid"][1]
        .as_str()
        .unwrap_or_else(|| panic!("no port {name}: {reply:?}"))
        .to_owned()
}

/// Deletes port `uuid` from br0 (one transaction, like one `ovs-vsctl del-port`; the port
/// and its interface, no longer referenced, are garbage-collected).
async fn remove(client: &Client, uuid: &str) {
    let op = json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
        "mutations": [["ports", "delete", ["set", [["uuid", uuid]]]]]});
    tokio::time::timeout(LIMIT, client.transact(vec![op]))
        .await
        .expect("removing a tunnel timed out")
        .expect("remove a tunnel");
}

/// The monitor in `mode` with its daemon's stand-in, logging at info level (a debug log of
/// 10,000 tunnels is not what is measured).
/// Also whether it runs behind `MEMORY_BENCH_WRAP` (its pid is then the wrapper's).
fn spawn_monitor(mode: &str, db: &OvsdbServer) -> (Daemon, Monitor, bool) {
    let root = db.dir().join("root");
    let wrap: Vec<String> = std::env::var("MEMORY_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut wrapper: Vec<String> = Vec::new();
    let mut args: Vec<String> = ["--no-restart-ike-daemon", "-vfile:info"]
        .map(String::from)
        .to_vec();
    let daemon: Daemon = match mode {
        "stroke" => {
            common::strongswan_stroke::StubRoot::new(db);
            args.push("--ike-daemon=strongswan".into());
            None
        }
        "vici" => {
            let fake = FakeCharon::start(db.dir());
            args.push("--ike-daemon=strongswan".into());
            args.push("--strongswan-mode=vici".into());
            args.push(format!("--vici-socket={}", fake.socket.display()));
            Some(Box::new(fake))
        }
        "libreswan" => {
            common::libreswan::StubRoot::new(db.dir(), 4);
            args.push("--ike-daemon=libreswan".into());
            None
        }
        _ => {
            let pair = NetnsPair::new("mem");
            wrapper.extend(["ip", "netns", "exec", &pair.left].map(String::from));
            args.push("--ike-daemon=none".into());
            Some(Box::new(pair))
        }
    };
    let wrapped = !wrap.is_empty();
    wrapper.extend(wrap);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mon = launch_rooted(db, &wrapper, "monitor.log", &root, &args);
    (daemon, mon, wrapped)
}

/// `ovs-appctl exit --no-cleanup`, so a heap profiler behind `MEMORY_BENCH_WRAP` sees a clean
/// exit (without removing N tunnels' state first, which is not what is measured).
fn stop(mut mon: Monitor) {
    let _ = mon.appctl(&["exit", "--no-cleanup"]);
    let _ = mon.wait_exit();
}
