//! Our monitor against real pluto (Libreswan 4.10 unpacked in /opt/lsw), one per network
//! namespace, each with its own ovsdb-server. This kernel has XFRM but no ESP: the IKE SA
//! must establish, the Child SA fails, and the monitor must say so (negotiating, with the
//! reason) without crashing.

mod common;

use std::time::Duration;

use common::libreswan::{LswMonitor, Pluto};
use common::monitor::{iface_key, wait_for};
use common::netns::NetnsPair;
use common::ovsdb_server::OvsdbServer;

#[test]
fn psk_vxlan_between_two_plutos_establishes_ike() {
    let net = NetnsPair::new("lsw");
    let dbs = [OvsdbServer::start(), OvsdbServer::start()];
    let sides = [(&net.left, "192.0.2.2"), (&net.right, "192.0.2.1")];
    let plutos: Vec<Pluto> = dbs
        .iter()
        .zip(sides)
        .map(|(db, (ns, _))| Pluto::start(db.dir(), ns))
        .collect();
    let monitors: Vec<LswMonitor> = dbs
        .iter()
        .zip(&plutos)
        .map(|(db, p)| LswMonitor::start(db, &p.root, Some(&p.netns), Pluto::MONITOR_ARGS))
        .collect();
    for (db, (_, remote)) in dbs.iter().zip(sides) {
        db.vsctl(&[
            "add-br",
            "br-ipsec",
            "--",
            "add-port",
            "br-ipsec",
            "tun",
            "--",
            "set",
            "interface",
            "tun",
            "type=vxlan",
            &format!("options:remote_ip={remote}"),
            "options:psk=swordfish",
        ]);
    }
    for p in &plutos {
        wait_for(
            "2 conns loaded and an IKE SA",
            Duration::from_secs(30),
            || {
                let st = p.status();
                st.contains("Total IPsec connections: loaded 2,")
                    && st.contains("ESTABLISHED_IKE_SA")
            },
        );
    }
    for (db, m) in dbs.iter().zip(&monitors) {
        // Status follows passes; `refresh` runs one now instead of in up to 15 s.
        wait_for(
            "negotiating: IKE SA up, no IPsec SA",
            Duration::from_secs(20),
            || {
                m.appctl(&["refresh"]);
                iface_key(db, "tun", "ipsec-state").as_deref() == Some("negotiating")
                    && iface_key(db, "tun", "ipsec-error")
                        .is_some_and(|e| e.contains("IKE SA established but no IPsec SA"))
            },
        );
        let show = m.appctl(&["tunnels/show"]);
        assert!(show.contains("tun-out-1"), "{show}");
        assert!(m.log().contains("Starting ipsec connection tun-out-1"));
    }
    // The PSK reached pluto hex-encoded and was accepted: the IKE SA authenticated with it.
    let secrets = std::fs::read_to_string(plutos[0].root.join("etc/ipsec.secrets")).unwrap();
    assert!(secrets.contains("PSK 0x"), "{secrets}");
    // pluto writes its log lazily.
    let log = dbs[0].dir().join("pluto.log");
    wait_for(
        "pluto to log the PSK authentication",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("established IKE SA; authenticated peer using authby=secret")
        },
    );
}
