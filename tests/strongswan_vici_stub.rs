//! strongSwan VICI mode against a recording fake VICI socket: the exact message sequence of a
//! cold start, an added, a modified and a deleted tunnel, a monitor restart (nothing current is
//! unloaded), the end that does not initiate, and the batch figures for 1,000 tunnels. The
//! real binary, a real ovsdb-server and the real ovs-vsctl drive it.
//!
//! Every tunnel sets `local_ip` (192.0.2.1, lower than every remote) unless the test is about
//! the other end: which end initiates depends on the addresses, not on this host's routes.

mod common;

use std::time::{Duration, Instant};

use common::fake_charon::FakeCharon;
use common::monitor::{Monitor, wait_for};
use common::ovsdb_server::OvsdbServer;

const T: Duration = Duration::from_secs(30);

fn start_monitor(db: &OvsdbServer, fake: &FakeCharon) -> Monitor {
    let socket = format!("--vici-socket={}", fake.socket.display());
    Monitor::start_real(db, &["--strongswan-mode=vici", &socket])
}

/// The address our end uses: lower than every remote of these tests, so we initiate.
const LOCAL: &str = "options:local_ip=192.0.2.1";

/// Adds `n` vxlan PSK tunnels `t<i>` in one transaction.
fn add_tunnels(db: &OvsdbServer, range: std::ops::Range<usize>) {
    let mut args: Vec<String> = vec!["--may-exist".into(), "add-br".into(), "br-ipsec".into()];
    for i in range {
        args.extend([
            "--".into(),
            "add-port".into(),
            "br-ipsec".into(),
            format!("t{i}"),
            "--".into(),
            "set".into(),
            "interface".into(),
            format!("t{i}"),
            "type=vxlan".into(),
            format!("options:remote_ip=198.18.{}.{}", i / 250, i % 250 + 1),
            LOCAL.into(),
            "options:psk=swordfish".into(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    db.vsctl(&args);
}

/// The calls after index `from`, without the listings every pass makes.
fn changes(fake: &FakeCharon, from: usize) -> Vec<String> {
    fake.calls()
        .into_iter()
        .skip(from)
        .filter(|(c, _)| !c.starts_with("list-"))
        .map(|(c, s)| format!("{c} {s}"))
        .collect()
}

#[test]
fn cold_start_add_modify_delete_and_monitor_restart_send_minimal_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeCharon::start(tmp.path());
    let db = OvsdbServer::start();
    db.vsctl(&[
        "add-br",
        "br-ipsec",
        "--",
        "add-port",
        "br-ipsec",
        "g1",
        "--",
        "set",
        "interface",
        "g1",
        "type=gre",
        "options:remote_ip=192.0.2.3",
        LOCAL,
        "options:psk=gresecret",
    ]);
    let mut mon = start_monitor(&db, &fake);
    wait_for("g1-1 loaded", T, || fake.conns().contains("g1-1"));
    wait_for("g1-1 initiated", T, || fake.count("initiate") == 1);
    assert_eq!(
        changes(&fake, 0),
        [
            "version ",
            "load-shared ovs-psk-g1",
            "load-conn g1-1",
            "initiate g1-1"
        ]
    );

    // +1 tunnel: its PSK, ONE connection (one IKE_SA) and both of its children started.
    let n = fake.calls().len();
    add_tunnels(&db, 0..1);
    wait_for("t0 started", T, || changes(&fake, n).len() == 4);
    assert_eq!(
        changes(&fake, n),
        [
            "load-shared ovs-psk-t0",
            "load-conn t0-1",
            "initiate t0-in-1",
            "initiate t0-out-1"
        ]
    );
    assert_eq!(
        fake.children("t0-1"),
        ["t0-in-1", "t0-out-1"],
        "both directions in one connection"
    );

    // Modify: the new version is loaded before the old one goes.
    let n = fake.calls().len();
    db.vsctl(&["set", "interface", "g1", "options:remote_ip=192.0.2.4"]);
    wait_for("g1-1 replaced", T, || !fake.conns().contains("g1-1"));
    assert_eq!(
        changes(&fake, n),
        [
            "load-shared ovs-psk-g1",
            "load-conn g1-2",
            "initiate g1-2",
            "terminate g1-1",
            "unload-conn g1-1"
        ]
    );

    // Delete: exactly its connection and its PSK.
    let n = fake.calls().len();
    db.vsctl(&["del-port", "t0"]);
    wait_for("t0 unloaded", T, || !fake.conns().contains("t0-1"));
    wait_for("t0 PSK unloaded", T, || {
        changes(&fake, n).contains(&"unload-shared ovs-psk-t0".to_string())
    });
    assert_eq!(
        changes(&fake, n),
        [
            "terminate t0-1",
            "unload-conn t0-1",
            "unload-shared ovs-psk-t0"
        ]
    );

    // The end with the higher address loads its side and leaves the initiation to the peer.
    let n = fake.calls().len();
    db.vsctl(&[
        "add-port",
        "br-ipsec",
        "hi",
        "--",
        "set",
        "interface",
        "hi",
        "type=geneve",
        "options:remote_ip=192.0.2.1",
        "options:local_ip=192.0.2.200",
        "options:psk=swordfish",
    ]);
    wait_for("hi loaded", T, || fake.conns().contains("hi-1"));
    // Not even planned: a planned initiation skipped at apply would come back at every pass,
    // for every tunnel whose peer is absent.
    assert_eq!(
        mon.log_count("initiate connection hi-1"),
        0,
        "{}",
        mon.log()
    );
    assert_eq!(
        changes(&fake, n),
        ["load-shared ovs-psk-hi", "load-conn hi-1"]
    );

    // A restarted monitor reloads in place and unloads nothing current: t5 (version 1) and
    // g1 (version 2: the versions are saved across restarts) keep their connection names.
    add_tunnels(&db, 5..6);
    wait_for("t5 loaded", T, || fake.conns().contains("t5-1"));
    drop(mon);
    let n = fake.calls().len();
    mon = start_monitor(&db, &fake);
    wait_for("second first pass", T, || {
        mon.log_count("first pass applied") >= 2
    });
    let after = changes(&fake, n);
    assert!(
        !after.iter().any(|c| c.starts_with("unload-conn t5")),
        "{after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|c| c.starts_with("unload-conn") || c == "load-conn g1-1"),
        "{after:?}"
    );
    assert!(fake.conns().contains("g1-2"), "{:?}", fake.conns());
    assert!(fake.conns().contains("t5-1"), "{:?}", fake.conns());
}

#[test]
fn thousand_tunnels_cold_start_is_one_message_stream_and_plus_one_is_constant() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeCharon::start(tmp.path());
    let db = OvsdbServer::start();
    add_tunnels(&db, 0..1000);
    let start = Instant::now();
    let mon = start_monitor(&db, &fake);
    wait_for(
        "1000 connections loaded and started",
        Duration::from_secs(120),
        || fake.conns().len() == 1000 && fake.count("initiate") == 2000,
    );
    let cold = start.elapsed();
    let cold_msgs = changes(&fake, 0).len();
    // Let the cold start's status write (1,000 rows) finish before timing the +1.
    wait_for("cold status written", T, || {
        mon.log_count("status: updated") > 0
    });
    let n = fake.calls().len();
    let t = Instant::now();
    add_tunnels(&db, 1000..1001);
    wait_for("+1 started", T, || changes(&fake, n).len() == 4);
    let plus_one = t.elapsed();
    wait_for("+1 logged", T, || {
        mon.log_count("initiate connection t1000-1") > 0
    });
    let monitor_side = log_time(&mon, "Tunnel t1000 appeared")
        .zip(log_time(&mon, "initiate connection t1000-1"))
        .map(|(a, b)| Duration::from_secs_f64((b - a).max(0.0)));
    let plus_one_msgs = changes(&fake, n).len();
    let connections = fake.state.lock().unwrap().connections;
    let rss = std::fs::read_to_string(format!("/proc/{}/status", mon.pid()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    eprintln!(
        "VICI N=1000: cold start {cold:?} ({cold_msgs} messages, {connections} VICI connections); \
         +1 tunnel {plus_one:?} after ovs-vsctl returned, {monitor_side:?} from OVSDB update to \
         the last message ({plus_one_msgs} messages); VmHWM {rss}"
    );
    // 1000 PSKs, 1000 conns, 2000 initiates (one per child), plus the version probe.
    assert_eq!(cold_msgs, 4001);
    assert_eq!(plus_one_msgs, 4);
    // One command connection and one event connection: no per-tunnel processes or sockets.
    assert_eq!(connections, 2);
    assert!(cold < Duration::from_secs(60), "{cold:?}");
    if std::env::var_os("VICI_BENCH_LOG").is_some() {
        eprintln!("{}", mon.log());
    }
    drop(mon);
}

/// Seconds within the day of the first log line containing `pat`.
fn log_time(mon: &Monitor, pat: &str) -> Option<f64> {
    let log = mon.log();
    let line = log.lines().find(|l| l.contains(pat))?;
    // 2026-11-22T05:42:42.526Z|...
    let time = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Issue 22 in VICI mode: spelling out the default port (as OVN does) is no change: no
/// message about the tunnel, its `ipsec-version` stays 1.
#[test]
fn an_explicit_default_port_sends_nothing_and_keeps_the_version() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeCharon::start(tmp.path());
    let db = OvsdbServer::start();
    add_tunnels(&db, 0..1);
    let mon = start_monitor(&db, &fake);
    wait_for("t0 started", T, || fake.count("initiate") == 2);
    let n = fake.calls().len();
    // Then a new tunnel: updates arrive in order, so its load shows the edit was processed.
    db.vsctl(&["set", "interface", "t0", "options:dst_port=4789"]);
    add_tunnels(&db, 1..2);
    wait_for("t1 started", T, || fake.count("initiate") == 4);
    let sent = changes(&fake, n);
    assert!(!sent.iter().any(|c| c.contains("t0")), "{sent:?}");
    assert_eq!(
        common::monitor::iface_key(&db, "t0", "ipsec-version").as_deref(),
        Some("1")
    );
    assert!(
        !mon.log().contains("configuration changed"),
        "{}",
        mon.log()
    );
}
