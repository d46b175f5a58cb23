//! Core daemon benchmark: a real ovsdb-server loaded with N PSK tunnels, the real monitor
//! binary (dry-run backend, so only the monitor's own work is measured), and our OVSDB client
//! watching `ipsec-state` appear. Prints, per N: cold start (process start to all statuses
//! written), +1 tunnel and one modification (each from `ovs-vsctl` returning to the status
//! being in OVSDB), peak RSS, and the monitor's CPU time (utime + stime) over the cold start.
//!
//! `cargo bench --bench core` runs N ∈ {1, 100, 1000, 10000}; `cargo test` runs N = 10 once.
//! Every wait has a deadline ([`LIMIT`], [`COLD_LIMIT`]): a regression fails the run, with
//! what it was waiting for, instead of hanging it.

#[path = "../common/mod.rs"]
mod common;
#[path = "fixture.rs"]
mod fixture;

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use common::monitor::{BIN, Monitor};
use common::ovsdb_server::OvsdbServer;
use fixture::{cpu_ms, load, stat_ticks, status_kb, until, watched_db, with_state};
use ovs_monitor_ipsec::ovsdb::{Client, DbEvent, Row};

/// How long one step (connecting, loading 1,000 rows, +1, modify) may take.
const LIMIT: Duration = Duration::from_secs(120);
/// How long the cold start may take (N = 10,000 on a loaded machine).
const COLD_LIMIT: Duration = Duration::from_secs(300);

fn main() {
    // What the CPU column read wrong before: a command name with spaces and `)`, no terminal.
    let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
    assert_eq!(stat_ticks(stat), 7 + 3, "utime + stime of {stat}");
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if bench { &[1, 100, 1000, 10000] } else { &[10] };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| N | cold start → all status written | +1 tunnel | modify 1 | peak RSS | CPU (cold) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let r = rt.block_on(run(n));
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MB | {:.0} ms |",
            ms(r.cold),
            ms(r.add),
            ms(r.modify),
            r.rss_kb as f64 / 1024.0,
            r.cpu_ms
        );
    }
}

struct Result {
    cold: Duration,
    add: Duration,
    modify: Duration,
    rss_kb: u64,
    cpu_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(n: usize) -> Result {
    let (db, client, mut events) = watched_db().await;
    let ev = &mut events;
    load(&client, n).await;
    let count = with_state;

    let start = Instant::now();
    let mon = spawn_monitor(&db);
    until("cold start", COLD_LIMIT, &client, ev, |c| count(c) >= n).await;
    let cold = start.elapsed();
    let cpu_ms = cpu_ms(mon.pid());

    let extra = |c: &Client, done: &dyn Fn(&Row) -> bool| {
        c.with_replica(|r| {
            r.table("Interface")
                .any(|(_, row)| row.get("name").as_str() == Some("extra") && done(row))
        })
    };
    let key = |row: &Row, column: &str, key: &str, value: &str| {
        row.get(column).as_string_map().get(key).map(String::as_str) == Some(value)
    };
    let add = timed_change(
        "+1 tunnel",
        &db,
        fixture::ADD_EXTRA,
        (&client, ev),
        |c| extra(c, &|_| true),
        |c| count(c) > n,
    )
    .await;
    let modify = timed_change(
        "modify 1",
        &db,
        &[
            "set",
            "interface",
            "extra",
            "options:remote_ip=10.255.255.2",
        ],
        (&client, ev),
        |c| extra(c, &|row| key(row, "options", "remote_ip", "10.255.255.2")),
        |c| extra(c, &|row| key(row, "external_ids", "ipsec-version", "2")),
    )
    .await;
    let rss_kb = status_kb(mon.pid(), "VmHWM");
    drop(mon);
    Result {
        cold,
        add,
        modify,
        rss_kb,
        cpu_ms,
    }
}

/// Runs `ovs-vsctl args` beside the watcher, which keeps reading updates meanwhile, and
/// returns the time from the watcher seeing the commit (`committed`) to its seeing the
/// monitor's status (`done`). Not from `ovs-vsctl` returning: the monitor has often written
/// the status before that process has exited.
async fn timed_change(
    what: &str,
    db: &OvsdbServer,
    args: &[&str],
    (client, events): (&Client, &mut UnboundedReceiver<DbEvent>),
    committed: impl Fn(&Client) -> bool,
    done: impl Fn(&Client) -> bool,
) -> Duration {
    let vsctl = tokio::process::Command::new("ovs-vsctl")
        .arg(format!("--db={}", db.unix_remote()))
        .args(["--no-wait", "--timeout=20"])
        .args(args)
        .output();
    let vsctl = tokio::spawn(vsctl);
    until(
        &format!("{what}: the commit"),
        LIMIT,
        client,
        events,
        committed,
    )
    .await;
    let start = Instant::now();
    until(what, LIMIT, client, events, done).await;
    let took = start.elapsed();
    let out = vsctl
        .await
        .expect("the ovs-vsctl task")
        .expect("run ovs-vsctl");
    assert!(out.status.success(), "{what}: ovs-vsctl {args:?}: {out:?}");
    took
}

/// The monitor without a log file (its logging is not what is measured); killed on drop, so
/// a failed wait leaves no process behind.
fn spawn_monitor(db: &OvsdbServer) -> Monitor {
    let dir = db.dir().to_path_buf();
    let ctl = dir.join("m.ctl");
    let mut cmd = Command::new(BIN);
    cmd.args([
        &db.unix_remote(),
        "--ike-daemon=none",
        "--dry-run",
        "--no-restart-ike-daemon",
        &format!("--unixctl={}", ctl.display()),
        "-vconsole:off",
    ]);
    let log = dir.join("monitor.log");
    Monitor::spawn(cmd, dir, ctl, log)
}
