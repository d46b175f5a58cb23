//! Metrics benchmark: what a scrape costs the monitor, and what the metrics add to its memory.
//!
//! Per N, a real ovsdb-server with N tunnels and the real monitor (dry-run, so only the
//! monitor's own work counts) with and without `--metrics=unix:...`:
//! - CPU per scrape: the monitor's CPU time over 20 `curl` scrapes, divided by 20;
//! - scrape wall time and body size;
//! - +1 tunnel latency (ovs-vsctl to `ipsec-state` in OVSDB) while a client scrapes ten times
//!   a second: a scrape must delay no pass;
//! - RSS after convergence without `--metrics`, and with it before the scrapes, after the
//!   sequential scrapes and after bursts of concurrent scrapes of both formats (one render at a time: a burst must
//!   not cost a body per request).
//!
//! The host has no SAs (no esp4 here), so the process runs export no SA traffic; the
//! in-process part renders a snapshot whose N tunnels all carry traffic (7 series per tunnel)
//! to give the encoding cost at full size.
//!
//! `cargo bench --bench metrics` runs N ∈ {1000, 10000}; `cargo test` runs N = 10 once;
//! `METRICS_BENCH_SIZES=1000,10000` picks the sizes.

#[path = "../common/mod.rs"]
mod common;
#[path = "fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::monitor::BIN;
use common::ovsdb_server::OvsdbServer;
use fixture::{cpu_ms, load, status_kb, watch, with_state};
use ovs_monitor_ipsec::metrics::exposition::{Format, render};
use ovs_monitor_ipsec::metrics::families::{Snapshot, TunnelRow};
use ovs_monitor_ipsec::metrics::traffic::{Counts, Traffic};
use ovs_monitor_ipsec::ovsdb::Client;
use prometheus_client::metrics::histogram::Histogram;

const SCRAPES: u32 = 20;
/// Between two scrapes of the scraper that runs while a tunnel is added: 10 scrapes a second,
/// 150 times Prometheus' default rate (back-to-back `curl` processes would measure the
/// machine's CPU contention, not the monitor).
const SCRAPE_GAP: Duration = Duration::from_millis(100);

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    // METRICS_BENCH_SIZES=1000,10000 overrides the sizes (e.g. for a debug build).
    let sizes: Vec<usize> = match std::env::var("METRICS_BENCH_SIZES") {
        Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) if bench => vec![1000, 10000],
        Err(_) => vec![10],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| N | CPU per scrape | scrape wall | body | +1 tunnel, idle | +1 tunnel, scraped | RSS without --metrics | RSS with, before scrapes | after scrapes | after bursts | render, all tunnels with SA traffic |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let base = rt.block_on(run(n, false));
        let with = rt.block_on(run(n, true));
        let (render_ms, render_kb) = render_full(n);
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {} kB | {:.0} ms | {:.0} ms | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB | {render_ms:.1} ms ({render_kb} kB) |",
            with.cpu_per_scrape_ms,
            with.scrape_wall_ms,
            with.body_kb,
            base.add_ms,
            with.add_ms,
            base.rss_kb as f64 / 1024.0,
            with.rss_before_kb as f64 / 1024.0,
            with.rss_kb as f64 / 1024.0,
            with.rss_burst_kb as f64 / 1024.0,
        );
    }
}

#[derive(Default)]
struct Run {
    cpu_per_scrape_ms: f64,
    scrape_wall_ms: f64,
    body_kb: usize,
    add_ms: f64,
    rss_kb: u64,
    rss_before_kb: u64,
    rss_burst_kb: u64,
}

/// Bursts of concurrent scrapes, and scrapes per burst (half of them OpenMetrics).
const BURSTS: usize = 5;
const BURST: usize = 8;

fn scrape(sock: &Path) -> String {
    scrape_as(sock, None)
}

fn scrape_as(sock: &Path, accept: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    if let Some(a) = accept {
        cmd.args(["-H", a]);
    }
    let out = cmd
        .args(["-sS", "--max-time", "30", "--unix-socket"])
        .arg(sock)
        .arg("http://localhost/metrics")
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn run(n: usize, metrics: bool) -> Run {
    let db = OvsdbServer::start();
    db.vsctl(&["add-br", "br0"]);
    let (client, mut events) = Client::spawn(watch(&db));
    while !client.is_connected() {
        let _ = events.recv().await;
    }
    load(&client, n).await;
    let sock = db.dir().join("metrics.sock");
    let mut mon = spawn_monitor(&db, metrics.then_some(sock.as_path()));
    let start = Instant::now();
    while with_state(&client) < n {
        let _ = tokio::time::timeout(Duration::from_secs(120), events.recv()).await;
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "cold start did not converge"
        );
    }
    let mut r = Run::default();
    if metrics {
        r.rss_before_kb = status_kb(mon.id(), "VmRSS");
        // The first scrape also reads the kernel once; the others are what a Prometheus sees.
        scrape(&sock);
        let cpu0 = cpu_ms(mon.id());
        let t0 = Instant::now();
        let mut body = String::new();
        for _ in 0..SCRAPES {
            body = scrape(&sock);
        }
        r.scrape_wall_ms = t0.elapsed().as_secs_f64() * 1000.0 / f64::from(SCRAPES);
        r.cpu_per_scrape_ms = (cpu_ms(mon.id()) - cpu0) / f64::from(SCRAPES);
        r.body_kb = body.len() / 1024;
        assert!(body.contains("ovs_ipsec_tunnels{state=\"configured\"}"));
        r.rss_kb = status_kb(mon.id(), "VmRSS");
        let om = "Accept: application/openmetrics-text;version=1.0.0";
        for _ in 0..BURSTS {
            std::thread::scope(|s| {
                for i in 0..BURST {
                    let sock = &sock;
                    s.spawn(move || scrape_as(sock, (i % 2 == 1).then_some(om)));
                }
            });
        }
        r.rss_burst_kb = status_kb(mon.id(), "VmRSS");
    } else {
        r.rss_kb = status_kb(mon.id(), "VmRSS");
    }

    // +1 tunnel, with a scraper hammering the endpoint meanwhile (bounded: stops at the end).
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = metrics.then(|| {
        let (stop, sock) = (Arc::clone(&stop), sock.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(120) {
                scrape(&sock);
                std::thread::sleep(SCRAPE_GAP);
            }
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    fixture::add_extra(&db);
    while with_state(&client) < n + 1 {
        let _ = tokio::time::timeout(Duration::from_secs(60), events.recv()).await;
    }
    r.add_ms = t.elapsed().as_secs_f64() * 1000.0;
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = scraper {
        let _ = s.join();
    }
    let _ = mon.kill();
    let _ = mon.wait();
    r
}

fn spawn_monitor(db: &OvsdbServer, metrics: Option<&Path>) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args([
        &db.unix_remote(),
        "--ike-daemon=none",
        "--dry-run",
        &format!("--unixctl={}", db.dir().join("m.ctl").display()),
        "-vconsole:off",
    ]);
    if let Some(sock) = metrics {
        cmd.arg(format!("--metrics=unix:{}", sock.display()));
    }
    cmd.env("OVS_RUNDIR", db.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Snapshot and render of N tunnels that all have SA traffic: (ms per render, body kB).
fn render_full(n: usize) -> (f64, usize) {
    let snapshot = || Snapshot {
        backend: "strongswan",
        per_tunnel: true,
        tunnels: (0..n)
            .map(|i| TunnelRow {
                name: format!("ovn-{i:06x}-0"),
                kind: "geneve",
                remote_ip: format!("10.{}.{}.{}", i / 62500 % 250, i / 250 % 250, i % 250 + 1),
                up: true,
                changes: 3,
                rekeys: 12,
                traffic: Some(Traffic {
                    inbound: Counts {
                        bytes: 123_456_789,
                        packets: 98_765,
                    },
                    outbound: Counts {
                        bytes: 987_654_321,
                        packets: 56_789,
                    },
                }),
            })
            .collect(),
        state_counts: BTreeMap::from([("up", n as u64)]),
        xfrm_errors: Vec::new(),
        certs: Vec::new(),
        ike_daemon: Some((true, 0)),
        ovsdb_connected: true,
        ovsdb_reconnects: 0,
        pass_duration: Histogram::new([0.01, 0.1, 1.0]),
        passes: [0; 4],
        commands: BTreeMap::new(),
        apply_errors: 0,
        vanished: Vec::new(),
    };
    let reps = 5;
    let mut size = 0;
    let t = Instant::now();
    for _ in 0..reps {
        size = std::hint::black_box(render(snapshot(), Format::Prometheus)).len();
    }
    (
        t.elapsed().as_secs_f64() * 1000.0 / f64::from(reps),
        size / 1024,
    )
}
