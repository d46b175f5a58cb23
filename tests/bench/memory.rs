//! The guard of the per-tunnel cost: the real monitor binary, in each mode, against a real
//! ovsdb-server loaded with N PSK tunnels, and a stand-in for the daemon it drives (the
//! recording stub `ipsec` of stroke and Libreswan, the fake charon's VICI socket, and for
//! static keys the kernel's XFRM in a fresh network namespace). Per mode and N it prints:
//!
//! - peak RSS (`VmHWM`) once every tunnel's status is written (cold start);
//! - peak RSS after a burst of changes: the `remote_ip` of that many tunnels modified, one
//!   transaction each, sent back to back (as a script of `ovs-vsctl set` calls would), and
//!   waited for until every one's new `ipsec-version` is written;
//! - the monitor's CPU (utime + stime from `/proc/PID/stat`) over the cold start.
//!
//! The per-change CPU cost is `cargo bench --bench core`'s and `compare.sh`'s measure; this one
//! guards memory.
//!
//! `cargo bench --bench memory` runs N ∈ {1000, 10000} with a burst of 100 in every mode;
//! `cargo test` runs N = 10 with a burst of 3 so it cannot rot. `MEMORY_BENCH_MODES`
//! (`stroke,vici,libreswan,none`) and `MEMORY_BENCH_SIZES` (`1000,10000`) narrow the run;
//! `MEMORY_BENCH_WRAP` runs the monitor behind a command, e.g. `heaptrack -o /tmp/hp` for a
//! heap profile of the same run.

#[path = "../common/mod.rs"]
mod common;
#[path = "fixture.rs"]
mod fixture;

use std::time::Duration;

use serde_json::json;

use common::fake_charon::FakeCharon;
use common::monitor::{Monitor, launch_rooted};
use common::netns::NetnsPair;
use common::ovsdb_server::OvsdbServer;
use fixture::{cpu_ms, load_with, remote_ip, status_kb, until, watched_db, with_state};
use ovs_monitor_ipsec::ovsdb::Client;

/// How long the cold start may take (N = 10,000 on a loaded machine).
const COLD_LIMIT: Duration = Duration::from_secs(600);
/// How long loading or one change may take.
const LIMIT: Duration = Duration::from_secs(120);
/// Static-key mode: our end's address in the namespace, and the peers' generation.
const XFRM_LOCAL: &str = "192.0.2.1";
const PEER_GEN: &str = "0123456789abcdef0123456789abcdef";

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
        .unwrap();
    println!("| mode | N | peak RSS, cold | peak RSS after {burst} changes | CPU (cold) |");
    println!("|---|---:|---:|---:|---:|");
    for mode in &modes {
        assert!(MODES.contains(&mode.as_str()), "unknown mode {mode}");
        for &n in &sizes {
            let r = rt.block_on(run(mode, n, burst));
            println!(
                "| {mode} | {n} | {:.1} MB | {:.1} MB | {:.0} ms |",
                mb(r.cold_kb),
                mb(r.burst_kb),
                r.cold_ms
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
}

/// What a mode runs beside the monitor (fake charon, namespace); dropped after it.
type Daemon = Option<Box<dyn std::any::Any>>;

async fn run(mode: &str, n: usize, burst: usize) -> Figures {
    let (db, client, mut events) = watched_db().await;
    let ev = &mut events;
    let extra = mode_options(mode);
    load_with(&client, n, &extra).await;

    let (daemon, mon) = spawn_monitor(mode, &db);
    until("cold start", COLD_LIMIT, &client, ev, |c| {
        with_state(c) >= n
    })
    .await;
    let pid = mon.pid();
    let cold_ms = cpu_ms(pid);
    let cold_kb = status_kb(pid, "VmHWM");

    let burst = burst.min(n);
    for i in 0..burst {
        modify(&client, i, &extra).await;
    }
    let changed = |c: &Client| {
        c.with_replica(|r| {
            r.table("Interface")
                .filter(|(_, row)| {
                    row.get("external_ids").as_string_map().get("ipsec-version")
                        == Some(&"2".to_owned())
                })
                .count()
        }) >= burst
    };
    until("the burst", COLD_LIMIT, &client, ev, changed).await;
    let burst_kb = status_kb(pid, "VmHWM");
    stop(mon);
    drop(daemon);
    Figures {
        cold_kb,
        burst_kb,
        cold_ms,
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

/// The monitor in `mode` with its daemon's stand-in, logging at info level (a debug log of
/// 10,000 tunnels is not what is measured).
fn spawn_monitor(mode: &str, db: &OvsdbServer) -> (Daemon, Monitor) {
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
    wrapper.extend(wrap);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mon = launch_rooted(db, &wrapper, "monitor.log", &root, &args);
    (daemon, mon)
}

/// `ovs-appctl exit --no-cleanup`, so a heap profiler behind `MEMORY_BENCH_WRAP` sees a clean
/// exit (without removing N tunnels' state first, which is not what is measured).
fn stop(mut mon: Monitor) {
    let _ = mon.appctl(&["exit", "--no-cleanup"]);
    let _ = mon.wait_exit();
}
