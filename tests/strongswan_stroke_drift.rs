//! Issue 22 in strongSwan legacy mode, against the recording stub `ipsec` (a real
//! ovsdb-server, ovs-vsctl and ovs-appctl): an option edit that changes nothing effective
//! costs no call and keeps `ipsec-version` and the connection names; a connection charon
//! lost soon after our last reload is back within one periodic pass, not a minute later.

mod common;

use std::time::{Duration, Instant};

use common::monitor::{iface_key, wait_for, wait_up};
use common::ovsdb_server::OvsdbServer;
use common::strongswan_stroke::{StubRoot, start_monitor};

const T: Duration = Duration::from_secs(30);

fn psk_tunnel(db: &OvsdbServer, name: &str, kind: &str, remote: &str) {
    db.add_tunnel(name, kind, &[format!("remote_ip={remote}"), "psk=k".into()]);
}

#[test]
fn an_explicit_default_port_changes_no_version_no_name_and_runs_no_command() {
    let db = OvsdbServer::start();
    let stub = StubRoot::new(&db);
    psk_tunnel(&db, "g1", "geneve", "192.0.2.2");
    psk_tunnel(&db, "v1", "vxlan", "192.0.2.3");
    let mon = start_monitor(&db, &[]);
    wait_up(&db, &["g1", "v1"], T);
    let sas = stub.sas();
    stub.take_calls();
    db.spell_out_default_ports_and_add_x1();
    wait_up(&db, &["x1"], T);
    let calls = stub.take_calls();
    assert!(
        !calls.iter().any(|c| c.contains("down-nb")),
        "no SA brought down: {calls:?}"
    );
    for n in ["g1", "v1"] {
        assert_eq!(iface_key(&db, n, "ipsec-version").as_deref(), Some("1"));
    }
    assert!(
        !mon.log().contains("configuration changed"),
        "{}",
        mon.log()
    );
    let conf = stub.read("etc/ipsec.conf");
    for c in ["g1-in-1", "g1-out-1", "v1-in-1", "v1-out-1"] {
        assert!(conf.contains(&format!("conn {c}\n")), "{conf}");
    }
    let show = mon.appctl_ok(&["tunnels/show"]);
    assert!(
        show.contains("g1-in-1") && !show.contains("g1-in-2"),
        "{show}"
    );
    let kept: Vec<_> = stub
        .sas()
        .into_iter()
        .filter(|s| !s.starts_with("x1"))
        .collect();
    assert_eq!(kept, sas, "established SAs untouched");
}

#[test]
fn a_connection_charon_lost_right_after_our_reload_is_back_within_20_seconds() {
    let db = OvsdbServer::start();
    let stub = StubRoot::new(&db);
    psk_tunnel(&db, "a", "vxlan", "192.0.2.2");
    psk_tunnel(&db, "b", "gre", "192.0.2.3");
    let mon = start_monitor(&db, &[]);
    wait_up(&db, &["a", "b"], T);
    let sas = stub.sas();
    stub.take_calls();
    // Within the minute after the first pass's `update`: the old back-off waited it out.
    let lost = Instant::now();
    stub.lose("b-1");
    wait_for("b-1 reloaded", T, || {
        stub.conns().iter().any(|c| c == "b-1")
    });
    let took = lost.elapsed();
    println!("stroke: a lost connection was back after {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let calls: Vec<String> = stub
        .take_calls()
        .into_iter()
        .filter(|c| c != "ipsec statusall")
        .collect();
    assert_eq!(calls, ["ipsec reload"], "{}", mon.log());
    assert_eq!(stub.sas(), sas, "no SA touched");
    mon.wait_log("b-1 missing in charon (1 in all), need to reconcile");
}
