//! The daemon end to end: the real binary against a real ovsdb-server, tunnels created with the
//! real ovs-vsctl, inspected with the real ovs-appctl.

mod common;

use std::process::Command;
use std::time::Duration;

use common::monitor::{BIN, CTL_BIN, Monitor, appctl_target, iface_key, ovs_key, wait_for};
use common::ovsdb_server::OvsdbServer;
use ovs_monitor_ipsec::app::STATUS_UPDATED;
use ovs_monitor_ipsec::backend::dry_run::WOULD_LOAD;
use ovs_monitor_ipsec::model::registry::CONFIGURATION_CHANGED;

const T: Duration = Duration::from_secs(20);

fn add_tunnel(db: &OvsdbServer, name: &str, kind: &str, opts: &[&str]) {
    let mut args: Vec<String> = vec![
        "--may-exist".into(),
        "add-br".into(),
        "br-ipsec".into(),
        "--".into(),
        "add-port".into(),
        "br-ipsec".into(),
        name.into(),
        "--".into(),
        "set".into(),
        "interface".into(),
        name.into(),
        format!("type={kind}"),
    ];
    args.extend(opts.iter().map(|o| format!("options:{o}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    db.vsctl(&args);
}

/// Returns once the monitor's main loop has handled everything queued before the call: it
/// serves control requests only after pending OVSDB events (its select is biased to them) and
/// never during a pass, so a `tunnels/show` round trip ends after their passes and status
/// writes.
fn settled(mon: &Monitor) {
    mon.appctl_ok(&["tunnels/show"]);
}

fn wait_state(db: &OvsdbServer, iface: &str, state: &str) {
    wait_for(&format!("{iface} ipsec-state={state}"), T, || {
        iface_key(db, iface, "ipsec-state").as_deref() == Some(state)
    });
}

#[test]
fn tunnels_created_changed_and_removed_with_ovs_vsctl_show_up_everywhere() {
    let db = OvsdbServer::start();
    let mon = Monitor::start(&db, &[]);
    add_tunnel(
        &db,
        "gnv0",
        "geneve",
        &["remote_ip=192.0.2.2", "psk=swordfish"],
    );
    wait_state(&db, "gnv0", "configured");
    assert_eq!(
        iface_key(&db, "gnv0", "ipsec-version").as_deref(),
        Some("1")
    );
    assert_eq!(iface_key(&db, "gnv0", "ipsec-auth").as_deref(), Some("psk"));
    mon.wait_log("Tunnel gnv0 appeared in OVSDB");

    let show = mon.appctl_ok(&["tunnels/show"]);
    assert!(
        show.contains("Interface name: gnv0 v1 (CONFIGURED)"),
        "{show}"
    );
    assert!(show.contains("  Remote IP:      192.0.2.2"), "{show}");
    assert!(show.contains("  PSK:            <redacted>"), "{show}");
    assert!(!show.contains("swordfish"), "PSK leaked: {show}");

    db.vsctl(&["set", "interface", "gnv0", "options:remote_ip=192.0.2.9"]);
    wait_for("version 2", T, || {
        iface_key(&db, "gnv0", "ipsec-version").as_deref() == Some("2")
    });
    mon.wait_log("Tunnel's 'gnv0' configuration changed in OVSDB to 2");
    assert!(
        mon.appctl_ok(&["tunnels/show"])
            .contains("Interface name: gnv0 v2 (CONFIGURED)")
    );

    db.vsctl(&["del-port", "gnv0"]);
    mon.wait_log("Tunnel gnv0 disappeared from OVSDB");
    wait_for("empty tunnels/show", T, || {
        mon.appctl_ok(&["tunnels/show"])
            .contains("No tunnels configured with IPsec")
    });
    assert!(!mon.log().contains("swordfish"), "PSK leaked into the log");
}

#[test]
fn invalid_tunnel_stays_visible_with_its_reason_and_affects_nothing_else() {
    let db = OvsdbServer::start();
    let mon = Monitor::start(&db, &[]);
    add_tunnel(
        &db,
        "good",
        "vxlan",
        &["remote_ip=192.0.2.2", "psk=swordfish"],
    );
    add_tunnel(&db, "bad", "gre", &["remote_ip=flow", "psk=x"]);
    add_tunnel(
        &db,
        "evil",
        "gre",
        &[
            "remote_ip=192.0.2.3",
            "psk=x",
            "ipsec_dpddelay=\"30s\\nleft=%any\"",
        ],
    );
    wait_state(&db, "bad", "invalid");
    wait_state(&db, "evil", "invalid");
    wait_state(&db, "good", "configured");
    let err = iface_key(&db, "bad", "ipsec-error").unwrap_or_default();
    assert!(err.contains("remote_ip"), "{err}");
    let err = iface_key(&db, "evil", "ipsec-error").unwrap_or_default();
    assert!(err.contains("ipsec_dpddelay"), "{err}");

    let show = mon.appctl_ok(&["tunnels/show"]);
    assert!(show.contains("Interface name: bad v1 (INVALID:"), "{show}");
    assert!(
        show.contains("Interface name: good v1 (CONFIGURED)"),
        "{show}"
    );
    // A raw newline from OVSDB must never reach the log as a line break.
    assert!(
        !mon.log().lines().any(|l| l.starts_with("left=%any")),
        "log injection"
    );
    // Logged once, not on every later change.
    db.vsctl(&["set", "interface", "good", "options:remote_ip=192.0.2.7"]);
    wait_for("good v2", T, || {
        iface_key(&db, "good", "ipsec-version").as_deref() == Some("2")
    });
    assert_eq!(mon.log_count("bad contains invalid configuration"), 1);
}

#[test]
fn status_writes_only_our_keys_and_exit_cleanup_removes_them() {
    let db = OvsdbServer::start();
    let mut mon = Monitor::start(&db, &[]);
    add_tunnel(&db, "t1", "gre", &["remote_ip=192.0.2.2", "psk=swordfish"]);
    db.vsctl(&["set", "interface", "t1", "external_ids:iface-id=vm1"]);
    db.vsctl(&["set", "Open_vSwitch", ".", "external_ids:system-id=host1"]);
    wait_state(&db, "t1", "configured");
    wait_for("monitor health keys", T, || {
        ovs_key(&db, "ipsec-monitor-backend").is_some()
    });
    assert_eq!(
        ovs_key(&db, "ipsec-monitor-version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(ovs_key(&db, "ipsec-monitor-last-reconcile").is_some_and(|t| t.ends_with('Z')));

    mon.appctl_ok(&["exit"]);
    assert!(mon.wait_exit().success());
    assert_eq!(iface_key(&db, "t1", "ipsec-state"), None);
    assert_eq!(ovs_key(&db, "ipsec-monitor-backend"), None);
    assert_eq!(iface_key(&db, "t1", "iface-id").as_deref(), Some("vm1"));
    assert_eq!(ovs_key(&db, "system-id").as_deref(), Some("host1"));
}

#[test]
fn exit_no_cleanup_and_sigterm_leave_state_in_place() {
    let db = OvsdbServer::start();
    add_tunnel(&db, "t1", "gre", &["remote_ip=192.0.2.2", "psk=swordfish"]);
    let mut mon = Monitor::start(&db, &[]);
    wait_state(&db, "t1", "configured");
    let bogus = mon.appctl(&["exit", "--bogus"]);
    assert_eq!(bogus.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bogus.stderr).contains("unrecognized parameter: --bogus"));
    mon.appctl_ok(&["exit", "--no-cleanup"]);
    assert!(mon.wait_exit().success());
    assert_eq!(
        iface_key(&db, "t1", "ipsec-state").as_deref(),
        Some("configured")
    );
    assert!(!mon.ctl.exists(), "control socket left behind");

    let mut mon = Monitor::start(&db, &[]);
    mon.wait_log("first pass applied");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mon.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(mon.wait_exit().success());
    assert_eq!(
        iface_key(&db, "t1", "ipsec-state").as_deref(),
        Some("configured")
    );
}

#[test]
fn ovsdb_restart_resyncs_without_spurious_actions() {
    let mut db = OvsdbServer::start();
    let mon = Monitor::start(&db, &[]);
    add_tunnel(&db, "gre0", "gre", &["remote_ip=192.0.2.2", "psk=a"]);
    add_tunnel(&db, "gnv0", "geneve", &["remote_ip=192.0.2.3", "psk=b"]);
    add_tunnel(
        &db,
        "vx0",
        "vxlan",
        &["remote_ip=192.0.2.4", "psk=c", "dst_port=4790"],
    );
    wait_state(&db, "vx0", "configured");
    wait_for("5 connections loaded", T, || mon.log_count(WOULD_LOAD) == 5);
    for t in ["gre0", "gnv0"] {
        wait_state(&db, t, "configured");
    }
    // The initial passes have logged their status writes before the baseline is taken.
    settled(&mon);
    let log_before = mon.log();

    db.kill9();
    db.restart();
    wait_for("reconnect and resync", T, || {
        mon.log_count("monitoring with") >= 2
    });
    // The resync's replica change has been handled (a pass and status write included, had it
    // caused any): check that it alone did nothing, no backend action and no status write.
    settled(&mon);
    let resync = mon.log()[log_before.len()..].to_owned();
    assert!(
        !resync.contains(WOULD_LOAD),
        "backend actions after resync:\n{resync}"
    );
    assert!(
        !resync.contains(STATUS_UPDATED),
        "status rewritten after resync:\n{resync}"
    );
    // A change after the resync proves the monitor is live again.
    add_tunnel(&db, "gre1", "gre", &["remote_ip=192.0.2.5", "psk=d"]);
    wait_state(&db, "gre1", "configured");

    let after = &mon.log()[log_before.len()..];
    let actions: Vec<&str> = after.lines().filter(|l| l.contains(WOULD_LOAD)).collect();
    assert_eq!(
        actions.len(),
        1,
        "only gre1 should be loaded after the resync: {actions:?}"
    );
    assert!(actions[0].contains("gre1-1"), "{actions:?}");
    assert!(
        !after.contains(CONFIGURATION_CHANGED),
        "spurious version bump:\n{after}"
    );
    for t in ["gre0", "gnv0", "vx0"] {
        assert!(
            !after.contains(&format!("Tunnel {t} appeared")),
            "{t} re-appeared:\n{after}"
        );
        assert_eq!(iface_key(&db, t, "ipsec-version").as_deref(), Some("1"));
    }
}

#[test]
fn missing_or_bad_ike_daemon_exits_1_with_a_clear_message() {
    for args in [
        &["unix:/nonexistent"][..],
        &["unix:/nonexistent", "--ike-daemon=racoon"][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("strongswan, libreswan or none"), "{err}");
    }
}

#[test]
fn detach_with_default_pidfile_is_found_by_ovs_appctl_and_our_client() {
    let db = OvsdbServer::start();
    add_tunnel(
        &db,
        "t1",
        "geneve",
        &["remote_ip=192.0.2.2", "psk=swordfish"],
    );
    let dir = db.dir();
    let st = Command::new(BIN)
        .args([
            &db.unix_remote(),
            "--ike-daemon=libreswan",
            "--dry-run",
            "--detach",
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
    // --detach returns once the first pass is applied and its status written.
    assert_eq!(
        iface_key(&db, "t1", "ipsec-state").as_deref(),
        Some("configured")
    );
    let v = appctl_target(dir, "ovs-monitor-ipsec", &["version"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("ovs-monitor-ipsec"));

    let ours = Command::new(CTL_BIN)
        .args(["tunnels/show", "--json"])
        .env("OVS_RUNDIR", dir)
        .output()
        .unwrap();
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
    assert_eq!(json["tunnels"][0]["name"], "t1");
    assert_eq!(json["tunnels"][0]["psk"], "<redacted>");

    let pidfile = dir.join("ovs-monitor-ipsec.pid");
    let out = appctl_target(dir, "ovs-monitor-ipsec", &["exit", "--no-cleanup"]);
    assert!(out.status.success());
    wait_for("pidfile removed", T, || !pidfile.exists());
    assert!(
        std::fs::read_to_string(dir.join("ovs-monitor-ipsec.log"))
            .unwrap()
            .contains("appeared")
    );
}

#[test]
fn ssl_and_tcp_remotes_work_end_to_end() {
    use common::ovsdb_server::Listeners;
    let db = OvsdbServer::start_with(Listeners {
        tcp: true,
        ssl: true,
    });
    add_tunnel(&db, "t1", "gre", &["remote_ip=192.0.2.2", "psk=swordfish"]);
    let pki = db.client_pki();
    let ssl_remote = db.ssl_remote();
    let ctl = db.dir().join("ssl.ctl");
    let mut child = Command::new(BIN)
        .args([
            ssl_remote.as_str(),
            "--ike-daemon=strongswan",
            "--dry-run",
            &format!("--private-key={}", pki.private_key.display()),
            &format!("--certificate={}", pki.certificate.display()),
            &format!("--ca-cert={}", pki.ca_cert.display()),
            &format!("--unixctl={}", ctl.display()),
        ])
        .env("OVS_RUNDIR", db.dir())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_state(&db, "t1", "configured");
    let _ = child.kill();
    let _ = child.wait();

    // tcp: a new tunnel shows up through a plain TCP session as well.
    let tcp_ctl = db.dir().join("tcp.ctl");
    let mut child = Command::new(BIN)
        .args([
            db.tcp_remote().as_str(),
            "--ike-daemon=strongswan",
            "--dry-run",
            &format!("--unixctl={}", tcp_ctl.display()),
        ])
        .env("OVS_RUNDIR", db.dir())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    add_tunnel(&db, "t2", "vxlan", &["remote_ip=192.0.2.3", "psk=x"]);
    wait_state(&db, "t2", "configured");
    let _ = child.kill();
    let _ = child.wait();

    // An ssl: remote without the key material is refused at start, with a reason.
    let out = Command::new(BIN)
        .args([ssl_remote.as_str(), "--ike-daemon=none", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--private-key"));
}

#[test]
fn versions_survive_a_monitor_restart_so_connection_names_do_not_change() {
    let db = OvsdbServer::start();
    add_tunnel(
        &db,
        "t1",
        "geneve",
        &["remote_ip=192.0.2.2", "psk=swordfish"],
    );
    let mut mon = Monitor::start(&db, &[]);
    db.vsctl(&["set", "interface", "t1", "options:remote_ip=192.0.2.9"]);
    wait_for("v2", T, || {
        iface_key(&db, "t1", "ipsec-version").as_deref() == Some("2")
    });
    mon.appctl_ok(&["exit", "--no-cleanup"]);
    assert!(mon.wait_exit().success());
    let saved = db.dir().join("ovs-monitor-ipsec.versions");
    let mode = std::fs::metadata(&saved).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert!(
        !std::fs::read_to_string(&saved)
            .unwrap()
            .contains("swordfish")
    );

    // Unchanged while down: the restarted monitor keeps version 2, so the connections it
    // plans are the ones that already exist (t1-in-2, t1-out-2).
    let before = std::fs::read_to_string(db.dir().join("monitor.log"))
        .unwrap()
        .len();
    let mut mon = Monitor::start(&db, &[]);
    wait_for("the first pass", T, || {
        mon.log()[before..].contains("first pass applied")
    });
    let show = mon.appctl_ok(&["tunnels/show"]);
    assert!(
        show.contains("Interface name: t1 v2 (CONFIGURED)"),
        "{show}"
    );
    let run = mon.log()[before..].to_owned();
    assert!(run.contains(&format!("{WOULD_LOAD} t1-in-2")), "{run}");
    assert!(
        !run.contains("t1-in-1") && !run.contains(CONFIGURATION_CHANGED),
        "{run}"
    );
    mon.appctl_ok(&["exit", "--no-cleanup"]);
    assert!(mon.wait_exit().success());

    // Changed while down: the next version.
    db.vsctl(&["set", "interface", "t1", "options:psk=other"]);
    let mut mon = Monitor::start(&db, &[]);
    mon.wait_log("Tunnel's 't1' configuration changed in OVSDB to 3");
    wait_for("v3", T, || {
        iface_key(&db, "t1", "ipsec-version").as_deref() == Some("3")
    });

    // `exit` cleans up: nothing is left to adopt.
    mon.appctl_ok(&["exit"]);
    assert!(mon.wait_exit().success());
    assert!(!saved.exists());
}

#[test]
fn a_row_that_stops_being_a_tunnel_type_loses_our_keys() {
    let db = OvsdbServer::start();
    let _mon = Monitor::start(&db, &[]);
    add_tunnel(
        &db,
        "t1",
        "vxlan",
        &["remote_ip=192.0.2.2", "psk=swordfish"],
    );
    db.vsctl(&["set", "interface", "t1", "external_ids:iface-id=vm1"]);
    wait_state(&db, "t1", "configured");
    // The row leaves the monitored types (the server-side filter drops it from our view).
    db.vsctl(&["set", "interface", "t1", "type=internal"]);
    wait_for("our keys removed", T, || {
        iface_key(&db, "t1", "ipsec-state").is_none()
    });
    assert_eq!(iface_key(&db, "t1", "ipsec-version"), None);
    assert_eq!(iface_key(&db, "t1", "iface-id").as_deref(), Some("vm1"));
}
