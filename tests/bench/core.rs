//! Core daemon benchmark: a real ovsdb-server loaded with N PSK tunnels, the real monitor
//! binary (dry-run backend, so only the monitor's own work is measured), and our OVSDB client
//! watching `ipsec-state` appear. Prints, per N: cold start to all statuses written, +1 tunnel
//! and one modification (from `ovs-vsctl` returning to the status being in OVSDB), peak RSS and
//! CPU time of the monitor.
//!
//! `cargo bench --bench core` runs N ∈ {1, 100, 1000, 10000}; `cargo test` runs N = 10 once.

#[path = "../common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "fixture.rs"]
mod fixture;

use common::monitor::BIN;
use common::ovsdb_server::OvsdbServer;
use fixture::{cpu_ms, load, status_kb, watch};
use ovs_monitor_ipsec::ovsdb::Client;

fn main() {
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
    let db = OvsdbServer::start();
    db.vsctl(&["add-br", "br0"]);
    let watcher = watch(&db);
    let (client, mut events) = Client::spawn(watcher);
    while !client.is_connected() {
        let _ = events.recv().await;
    }
    load(&client, n).await;
    let count = fixture::with_state;

    let start = Instant::now();
    let mut mon = spawn_monitor(&db);
    while count(&client) < n {
        let _ = tokio::time::timeout(Duration::from_secs(120), events.recv()).await;
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "cold start did not converge"
        );
    }
    let cold = start.elapsed();
    let cpu_ms = cpu_ms(mon.id());

    fixture::add_extra(&db);
    while count(&client) < n + 1 {
        let _ = events.recv().await;
    }
    let add = start.elapsed();

    let start = Instant::now();
    db.vsctl(&[
        "set",
        "interface",
        "extra",
        "options:remote_ip=10.255.255.2",
    ]);
    let version = |c: &Client| {
        c.with_replica(|r| {
            r.table("Interface").any(|(_, row)| {
                row.get("name").as_str() == Some("extra")
                    && row
                        .get("external_ids")
                        .as_string_map()
                        .get("ipsec-version")
                        .map(String::as_str)
                        == Some("2")
            })
        })
    };
    while !version(&client) {
        let _ = events.recv().await;
    }
    let modify = start.elapsed();
    let rss_kb = status_kb(mon.id(), "VmHWM");
    let _ = mon.kill();
    let _ = mon.wait();
    Result {
        cold,
        add,
        modify,
        rss_kb,
        cpu_ms,
    }
}

fn spawn_monitor(db: &OvsdbServer) -> Child {
    Command::new(BIN)
        .args([
            &db.unix_remote(),
            "--ike-daemon=none",
            "--dry-run",
            "--no-restart-ike-daemon",
            &format!("--unixctl={}", db.dir().join("m.ctl").display()),
            "-vconsole:off",
        ])
        .env("OVS_RUNDIR", db.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
