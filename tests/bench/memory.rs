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
#[path = "pacer.rs"]
mod pacer;

use std::time::{Duration, Instant};

use serde_json::json;

use common::fake_charon::FakeCharon;
use common::monitor::{Monitor, launch_rooted};
use common::netns::NetnsPair;
use common::ovsdb_server::OvsdbServer;
use fixture::{load_with, remote_ip, status_kb, until, watched_db, with_state};
use ovs_monitor_ipsec::ovsdb::Client;
use pacer::{Calls, Cpu, Pacer, Step};

/// How long the cold start may take (N = 10,000 on a loaded machine).
const COLD_LIMIT: Duration = Duration::from_secs(600);
/// How long loading or one change may take.
const LIMIT: Duration = Duration::from_secs(120);
/// Static-key mode: our end's address in the namespace, and the peers' generation.
const XFRM_LOCAL: &str = "192.0.2.1";
const PEER_GEN: &str = "0123456789abcdef0123456789abcdef";
/// The monitor's periodic pass (`RECONCILE_INTERVAL_SECS`).
const PERIOD: Duration = Duration::from_secs(ovs_monitor_ipsec::app::RECONCILE_INTERVAL_SECS);
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
