//! Process behaviour of the real binary: `--monitor` restarts a crashed daemon, and systemd
//! hears READY=1 only after the first pass is applied.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::monitor::{BIN, Monitor, appctl_target, iface_key, wait_for};
use common::ovsdb_server::OvsdbServer;

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kills every monitor process started on a database, even when the test fails.
struct KillDetached(String);

impl Drop for KillDetached {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.0])
            .status();
    }
}

/// Waits for `cond`; on timeout fails with the daemon's log, which says why.
fn wait_or_dump(what: &str, log: &Path, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

#[test]
fn monitor_restarts_the_daemon_after_a_crash_but_not_after_sigterm() {
    use nix::sys::signal::Signal::{SIGABRT, SIGTERM};
    let db = OvsdbServer::start();
    add_gre(&db);
    let dir = db.dir();
    let pidfile = dir.join("ovs-monitor-ipsec.pid");
    let log = dir.join("ovs-monitor-ipsec.log");
    let guard = KillDetached(format!("ovs-monitor-ipsec {}", db.unix_remote()));
    let st = Command::new(BIN)
        .args([
            &db.unix_remote(),
            "--ike-daemon=none",
            "--dry-run",
            "--detach",
            "--monitor",
            "--no-chdir",
            "--pidfile",
            "--log-file",
            "--no-restart-ike-daemon",
        ])
        .env("OVS_RUNDIR", dir)
        .env("OVS_LOGDIR", dir)
        .status()
        .unwrap();
    assert!(st.success());
    let first = read_pid(&pidfile).expect("pidfile after --detach");

    // A crash (SIGABRT: what a panic becomes) is restarted; the new daemon takes the pidfile.
    signal(first, SIGABRT);
    wait_or_dump("a restarted daemon", &log, || {
        read_pid(&pidfile).is_some_and(|p| p != first)
            && appctl_target(dir, "ovs-monitor-ipsec", &["version"])
                .status
                .success()
    });
    let second = read_pid(&pidfile).unwrap();
    assert_eq!(
        iface_key(&db, "t1", "ipsec-state").as_deref(),
        Some("configured")
    );

    // SIGTERM is a deliberate stop: no restart, and the supervisor goes away too.
    signal(second, SIGTERM);
    wait_or_dump("pidfile removal", &log, || !pidfile.exists());
    wait_or_dump("the supervisor to exit", &log, || {
        let ps = Command::new("pgrep")
            .args(["-f", &guard.0])
            .output()
            .unwrap();
        ps.stdout.is_empty()
    });
    assert!(!pidfile.exists(), "daemon restarted after SIGTERM");
}

fn add_gre(db: &OvsdbServer) {
    db.vsctl(&[
        "add-br",
        "br0",
        "--",
        "add-port",
        "br0",
        "t1",
        "--",
        "set",
        "interface",
        "t1",
        "type=gre",
        "options:remote_ip=192.0.2.2",
        "options:psk=swordfish",
    ]);
}

#[test]
fn systemd_hears_ready_only_after_the_first_pass() {
    let db = OvsdbServer::start();
    db.vsctl(&[
        "add-br",
        "br0",
        "--",
        "add-port",
        "br0",
        "t1",
        "--",
        "set",
        "interface",
        "t1",
        "type=geneve",
        "options:remote_ip=192.0.2.2",
        "options:psk=swordfish",
    ]);
    let sock_path = db.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let ctl = db.dir().join("m.ctl");
    let mut child = Command::new(BIN)
        .args([
            &db.unix_remote(),
            "--ike-daemon=strongswan",
            "--dry-run",
            "--no-restart-ike-daemon",
            &format!("--unixctl={}", ctl.display()),
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("OVS_RUNDIR", db.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a READY=1 datagram");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    // By the time systemd hears READY, the first pass has written the tunnel's status.
    assert_eq!(
        iface_key(&db, "t1", "ipsec-state").as_deref(),
        Some("configured")
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn second_instance_on_the_same_pidfile_refuses_to_start() {
    let db = OvsdbServer::start();
    let pid = db.dir().join("mon.pid");
    let _first = Monitor::start(&db, &[&format!("--pidfile={}", pid.display())]);
    wait_for("pidfile", Duration::from_secs(20), || pid.exists());
    let out = Command::new(BIN)
        .args([
            &db.unix_remote(),
            "--ike-daemon=strongswan",
            "--dry-run",
            &format!("--pidfile={}", pid.display()),
            &format!("--unixctl={}", db.dir().join("second.ctl").display()),
        ])
        .env("OVS_RUNDIR", db.dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
