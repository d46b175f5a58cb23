//! Issue 22 in Libreswan mode: an option edit that changes nothing effective (a default
//! port spelled out) costs no call and keeps `ipsec-version` (recording stub), and a conn
//! deleted from a real pluto behind the monitor's back is loaded again within 20 s while
//! the other tunnel's conns stay as they are.

mod common;

use std::time::{Duration, Instant};

use common::libreswan::{self, Pluto, REAL_IPSEC, StubRoot};
use common::monitor::{iface_key, wait_for, wait_up};
use common::netns::NetnsPair;
use common::ovsdb_server::OvsdbServer;

const T: Duration = Duration::from_secs(30);

fn psk_tunnel(db: &OvsdbServer, name: &str, kind: &str, remote: &str) {
    db.add_tunnel(name, kind, &[format!("remote_ip={remote}"), "psk=k".into()]);
}

#[test]
fn an_explicit_default_port_changes_no_version_and_runs_no_command() {
    let db = OvsdbServer::start();
    psk_tunnel(&db, "g1", "geneve", "192.0.2.2");
    psk_tunnel(&db, "v1", "vxlan", "192.0.2.3");
    let stub = StubRoot::new(db.dir(), 4);
    let mon = libreswan::start_monitor(&db, &stub.root, None, &[]);
    wait_up(&db, &["g1", "v1"], T);
    let calls = stub.calls().len();
    db.spell_out_default_ports_and_add_x1();
    wait_up(&db, &["x1"], T);
    let new: Vec<String> = stub.calls().into_iter().skip(calls).collect();
    assert!(
        !new.iter().any(|c| c.contains("g1-") || c.contains("v1-")),
        "no call about g1 or v1: {new:?}"
    );
    for n in ["g1", "v1"] {
        assert_eq!(iface_key(&db, n, "ipsec-version").as_deref(), Some("1"));
    }
    let loaded = stub.loaded();
    for c in ["g1-in-1", "g1-out-1", "v1-in-1", "v1-out-1"] {
        assert!(loaded.contains(&c.to_owned()), "{loaded:?}");
    }
    assert!(!mon.log().contains("configuration changed"));
}

#[test]
fn a_conn_deleted_from_pluto_is_loaded_again_within_20_s() {
    let net = NetnsPair::new("lsr");
    let db = OvsdbServer::start();
    let pluto = Pluto::start(db.dir(), &net.left, REAL_IPSEC);
    let mon = libreswan::start_monitor(&db, &pluto.root, Some(&pluto.netns), Pluto::MONITOR_ARGS);
    psk_tunnel(&db, "a", "vxlan", "192.0.2.2");
    psk_tunnel(&db, "b", "gre", "192.0.2.2");
    wait_for("three conns loaded", T, || {
        pluto
            .status()
            .contains("Total IPsec connections: loaded 3,")
    });
    let calls = pluto.calls().len();
    pluto.delete_conn("b-1");
    let lost = Instant::now();
    assert!(
        pluto
            .status()
            .contains("Total IPsec connections: loaded 2,")
    );
    wait_for("b-1 loaded again", 2 * T, || {
        pluto
            .status()
            .contains("Total IPsec connections: loaded 3,")
    });
    let took = lost.elapsed();
    println!("Libreswan with pluto: b-1 restored after {took:?}");
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}:\n{}",
        mon.log()
    );
    let status = pluto.status();
    assert!(status.contains("\"b-1\""), "{status}");
    // Only b's conn was loaded again: a's were neither deleted nor added.
    let since: Vec<String> = pluto.calls().into_iter().skip(calls).collect();
    assert!(since.iter().any(|c| c.contains("b-1")), "{since:?}");
    assert!(
        !since
            .iter()
            .any(|c| c.contains("a-in-1") || c.contains("a-out-1")),
        "{since:?}"
    );
}
