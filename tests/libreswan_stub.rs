//! Libreswan call sequences: our monitor, a real ovsdb-server and ovs-vsctl, and a recording
//! stub `ipsec` that answers `ipsec status` in the real v4 or v5 format.

mod common;

use std::time::Duration;

use common::libreswan::{self, StubRoot};
use common::monitor::{iface_key, wait_for};
use common::ovsdb_server::OvsdbServer;

const T: Duration = Duration::from_secs(20);

fn add_tunnel(db: &OvsdbServer, name: &str, kind: &str, opts: &[&str]) {
    db.add_tunnel(name, kind, opts);
}

fn wait_state(db: &OvsdbServer, iface: &str, state: &str) {
    wait_for(&format!("{iface} ipsec-state={state}"), T, || {
        iface_key(db, iface, "ipsec-state").as_deref() == Some(state)
    });
}

/// Calls after the first `n`, without the periodic `ipsec status`.
fn new_calls(stub: &StubRoot, n: usize) -> Vec<String> {
    stub.calls()
        .into_iter()
        .skip(n)
        .filter(|c| !c.starts_with("ipsec status"))
        .collect()
}

#[test]
fn v4_cold_start_add_modify_delete() {
    let db = OvsdbServer::start();
    add_tunnel(
        &db,
        "vx1",
        "vxlan",
        &["remote_ip=192.0.2.2", "psk=swordfish"],
    );
    let stub = StubRoot::new(db.dir(), 4);
    let mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    wait_state(&db, "vx1", "up");
    mon.wait_log_for("Connections for all(1) configured tunnels are Up.", T);

    let r = stub.root.display().to_string();
    let ctl = format!("{r}/run/pluto/pluto.ctl");
    let conf = format!("{r}/etc/ipsec.conf");
    assert_eq!(
        new_calls(&stub, 0),
        [
            "ipsec --version".to_owned(),
            format!("ipsec auto --ctlsocket {ctl} --config {conf} --rereadsecrets"),
            format!("ipsec addconn --ctlsocket {ctl} --config {conf} vx1-in-1 vx1-out-1"),
            format!("ipsec whack --ctlsocket {ctl} --asynchronous --name vx1-out-1 --initiate"),
        ]
    );
    let secrets = std::fs::read_to_string(format!("{r}/etc/ipsec.secrets")).unwrap();
    assert!(
        secrets.contains("%any 192.0.2.2 : PSK 0x73776f7264666973"),
        "{secrets}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(format!("{r}/etc/ipsec.secrets"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let show = mon.appctl_ok(&["tunnels/show"]);
    assert!(show.contains("esp.248d1071@192.0.2.2"), "{show}");

    // +1 tunnel: O(1) commands.
    let n = stub.calls().len();
    add_tunnel(
        &db,
        "gre1",
        "gre",
        &["remote_ip=192.0.2.3", "local_ip=192.0.2.1", "psk=gresecret"],
    );
    wait_state(&db, "gre1", "up");
    assert_eq!(
        new_calls(&stub, n),
        [
            format!("ipsec auto --ctlsocket {ctl} --config {conf} --rereadsecrets"),
            format!("ipsec addconn --ctlsocket {ctl} --config {conf} gre1-1"),
            format!("ipsec whack --ctlsocket {ctl} --asynchronous --name gre1-1 --initiate"),
        ]
    );

    // Modify: the old version goes, the new one comes; gre1 is not touched.
    let n = stub.calls().len();
    db.vsctl(&["set", "interface", "vx1", "options:remote_ip=192.0.2.4"]);
    wait_for("vx1 version 2 loaded", T, || {
        stub.loaded().contains(&"vx1-out-2".to_owned())
    });
    wait_state(&db, "vx1", "up");
    let calls = new_calls(&stub, n);
    assert!(
        calls.contains(&format!(
            "ipsec auto --ctlsocket {ctl} --config {conf} --delete vx1-in-1"
        )),
        "{calls:#?}"
    );
    assert!(calls.contains(&format!(
        "ipsec auto --ctlsocket {ctl} --config {conf} --delete vx1-out-1"
    )));
    assert!(calls.contains(&format!(
        "ipsec addconn --ctlsocket {ctl} --config {conf} vx1-in-2 vx1-out-2"
    )));
    assert!(!calls.iter().any(|c| c.contains("gre1")), "{calls:#?}");
    mon.wait_log_for("vx1-in-1 is outdated, removing", T);

    // Delete.
    db.vsctl(&["del-port", "gre1"]);
    wait_for("gre1-1 deleted", T, || {
        !stub.loaded().contains(&"gre1-1".to_owned())
    });
    assert_eq!(
        stub.loaded(),
        ["vx1-in-2", "vx1-out-2"],
        "{:#?}",
        stub.calls()
    );
}

#[test]
fn v5_forms_and_status_format() {
    let db = OvsdbServer::start();
    add_tunnel(
        &db,
        "gnv1",
        "geneve",
        &["remote_ip=2001:db8::2", "psk=v6secret"],
    );
    let stub = StubRoot::new(db.dir(), 5);
    let _mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    wait_state(&db, "gnv1", "up");
    let calls = new_calls(&stub, 0);
    assert!(calls[1].starts_with("ipsec --ctlsocket "), "{calls:#?}");
    assert!(calls[1].ends_with("--rereadsecrets"));
    assert!(!calls.iter().any(|c| c.contains(" auto ")));
    let conf = std::fs::read_to_string(stub.root.join("etc/ipsec.conf")).unwrap();
    assert!(!conf.contains("keyingtries") && conf.contains("hostaddrfamily=ipv6"));
}

#[test]
fn manual_deletion_is_reconciled() {
    let db = OvsdbServer::start();
    add_tunnel(
        &db,
        "vx1",
        "vxlan",
        &["remote_ip=192.0.2.2", "psk=swordfish"],
    );
    let stub = StubRoot::new(db.dir(), 4);
    let mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    wait_state(&db, "vx1", "up");
    stub.delete_by_hand("vx1-out-1");
    mon.appctl_ok(&["refresh"]);
    mon.wait_log_for("need to reconcile", T);
    wait_state(&db, "vx1", "up");
    assert!(stub.loaded().contains(&"vx1-out-1".to_owned()));
    assert!(mon.log().contains("Starting ipsec connection vx1-out-1"));
}

#[test]
fn child_sa_failure_is_negotiating_then_defunct() {
    let db = OvsdbServer::start();
    let stub = StubRoot::new(db.dir(), 4);
    stub.no_child_sa();
    add_tunnel(
        &db,
        "gre1",
        "gre",
        &["remote_ip=192.0.2.3", "local_ip=192.0.2.1", "psk=gresecret"],
    );
    let mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    wait_state(&db, "gre1", "negotiating");
    let err = iface_key(&db, "gre1", "ipsec-error").unwrap_or_default();
    assert!(err.contains("IKE SA established but no IPsec SA"), "{err}");
    // After the 15 s grace the conn is defunct: deleted, then loaded again.
    std::thread::sleep(Duration::from_secs(16));
    mon.appctl_ok(&["refresh"]);
    mon.wait_log_for("defunct", T);
    assert!(stub.calls().iter().any(|c| c.ends_with("--delete gre1-1")));
    mon.appctl_ok(&["refresh"]);
    wait_for("gre1-1 loaded again", T, || {
        stub.loaded().contains(&"gre1-1".to_owned())
    });
}

/// Several tunnels at once: one `addconn`, one `whack` that initiates every outbound conn
/// through their shared start alias, and at exit one `whack` that deletes them all.
#[test]
fn batch_cold_start_and_exit_take_one_call_each() {
    let db = OvsdbServer::start();
    for (name, ip) in [
        ("vx1", "192.0.2.2"),
        ("vx2", "192.0.2.3"),
        ("vx3", "192.0.2.4"),
    ] {
        add_tunnel(
            &db,
            name,
            "vxlan",
            &[&format!("remote_ip={ip}"), "psk=swordfish"],
        );
    }
    add_tunnel(
        &db,
        "gre1",
        "gre",
        &["remote_ip=192.0.2.5", "local_ip=192.0.2.1", "psk=gresecret"],
    );
    let stub = StubRoot::new(db.dir(), 4);
    let mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    for t in ["vx1", "vx2", "vx3", "gre1"] {
        wait_state(&db, t, "up");
    }
    mon.wait_log_for("Connections for all(4) configured tunnels are Up.", T);

    let r = stub.root.display().to_string();
    let ctl = format!("{r}/run/pluto/pluto.ctl");
    let conf = format!("{r}/etc/ipsec.conf");
    let calls = new_calls(&stub, 0);
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert_eq!(
        calls[2],
        format!(
            "ipsec addconn --ctlsocket {ctl} --config {conf} vx1-in-1 vx2-in-1 vx3-in-1 gre1-1 vx1-out-1 vx2-out-1 vx3-out-1"
        )
    );
    let prefix =
        format!("ipsec whack --ctlsocket {ctl} --asynchronous --name ovs-monitor-ipsec:start:");
    let alias = calls[3]
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" --initiate"))
        .unwrap_or_else(|| panic!("not one initiate by alias: {calls:#?}"));
    // pluto got the alias from the file with the outbound conns, not with the inbound ones.
    let aliases = stub.aliases();
    for c in ["gre1-1", "vx1-out-1", "vx2-out-1", "vx3-out-1"] {
        assert!(
            aliases.contains(&format!(
                "{c} ovs-monitor-ipsec:all ovs-monitor-ipsec:start:{alias} {c}"
            )),
            "{aliases:#?}"
        );
    }
    assert!(aliases.contains(&"vx1-in-1 ovs-monitor-ipsec:all vx1-in-1".to_owned()));
    for t in ["vx1", "vx2", "vx3", "gre1"] {
        assert!(
            mon.log()
                .contains(&format!("Starting ipsec connection {t}"))
        );
    }

    // Exit with cleanup: every conn goes with one delete by our alias.
    let n = stub.calls().len();
    mon.appctl_ok(&["exit"]);
    let deletes: Vec<String> = new_calls(&stub, n)
        .into_iter()
        .filter(|c| c.contains("--delete"))
        .collect();
    assert_eq!(
        deletes,
        [format!(
            "ipsec auto --ctlsocket {ctl} --config {conf} --delete ovs-monitor-ipsec:all"
        )]
    );
    assert!(stub.loaded().is_empty(), "{:#?}", stub.loaded());
}

/// A conn pluto refuses inside a batch is retried by name, which reports it against its
/// tunnel; the rest of the batch comes up.
#[test]
fn a_refused_conn_of_a_batch_is_retried_alone_and_reported() {
    let db = OvsdbServer::start();
    for (name, ip) in [("vx1", "192.0.2.2"), ("vx2", "192.0.2.3")] {
        add_tunnel(
            &db,
            name,
            "vxlan",
            &[&format!("remote_ip={ip}"), "psk=swordfish"],
        );
    }
    let stub = StubRoot::new(db.dir(), 5);
    stub.refuse(&["vx2-out-1"]);
    let mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    wait_state(&db, "vx1", "up");
    wait_for("vx2 reported", T, || {
        iface_key(&db, "vx2", "ipsec-error").is_some_and(|e| e.contains("vx2-out-1"))
    });
    let calls = new_calls(&stub, 0);
    let initiates: Vec<&String> = calls.iter().filter(|c| c.contains("--initiate")).collect();
    assert!(
        initiates[0].contains("--name ovs-monitor-ipsec:start:"),
        "{calls:#?}"
    );
    assert!(
        initiates[1].contains("--name vx2-out-1 --initiate"),
        "{calls:#?}"
    );
    assert!(
        mon.log()
            .contains("Failed to initiate connection through Interface vx2.")
    );
    // The half-loaded conn was deleted, as the Python monitor does.
    assert!(
        calls.iter().any(|c| c.ends_with("--delete vx2-out-1")),
        "{calls:#?}"
    );
}

/// GRE is one conn on both ends: only the end with the lower address starts it (both starting
/// it leaves pluto 4.10 with two half Child SAs, see `backend::initiator`). The other end
/// loads it and brings it up itself only when the peer started nothing within the grace.
#[test]
fn a_gre_tunnel_to_a_lower_address_is_only_loaded_until_the_grace_ends() {
    let db = OvsdbServer::start();
    let stub = StubRoot::new(db.dir(), 4);
    let mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    mon.wait_log_for("first pass applied", T);
    add_tunnel(
        &db,
        "gre1",
        "gre",
        &["remote_ip=192.0.2.3", "local_ip=192.0.2.9", "psk=gresecret"],
    );
    mon.wait_log_for("Adding ipsec connection gre1-1", T);
    wait_for("gre1-1 loaded", T, || {
        stub.loaded().contains(&"gre1-1".to_owned())
    });
    assert!(
        !stub.calls().iter().any(|c| c.contains("--initiate")),
        "{:#?}",
        stub.calls()
    );
    wait_state(&db, "gre1", "negotiating");
    let why = iface_key(&db, "gre1", "ipsec-error").unwrap_or_default();
    assert!(why.contains("waiting for the peer to start it"), "{why}");
    // Nobody started it: after the grace (15 s) this end does.
    std::thread::sleep(Duration::from_secs(16));
    mon.appctl_ok(&["refresh"]);
    mon.wait_log_for("Bringing up ipsec connection gre1-1", T);
    wait_state(&db, "gre1", "up");
}
