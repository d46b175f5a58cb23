//! The static-key backend on the real kernel for the other address family and tunnel type:
//! IPv6 underlays and GRE tunnels get host-to-host policies with the right protocol (udp and
//! the tunnel's port for geneve, gre with no port), guard elements in the matching nftables
//! set, and removing one tunnel removes exactly its kernel state.

mod common;

use std::time::Duration;

use common::monitor::wait_for;
use common::ovsdb_server::OvsdbServer;
use common::xfrm::{LOCAL4, LOCAL6, Netns, records};

const T: Duration = Duration::from_secs(20);
const REMOTE6: &str = "2001:db8::2";
const REMOTE4: &str = "192.0.2.3";
const PEER_GEN: &str = "fedcba9876543210fedcba9876543210";

fn add_tunnel(db: &OvsdbServer, name: &str, kind: &str, local: &str, remote: &str) {
    db.add_tunnel(
        name,
        kind,
        &[
            format!("remote_ip={remote}"),
            format!("local_ip={local}"),
            format!("psk=psk-{name}"),
            format!("ipsec_peer_generation={PEER_GEN}"),
        ],
    );
}

/// `ip xfrm policy` records with our tag's reqid.
fn our_policies(ns: &Netns) -> Vec<String> {
    let reqid = format!("reqid {}", 0x4f56_5300_u32);
    records(&ns.ip(&["xfrm", "policy"]))
        .into_iter()
        .filter(|r| r.contains(&reqid))
        .collect()
}

fn has_policy(pols: &[String], src: &str, dst: &str, proto: &str, dir: &str) -> bool {
    let head = format!("src {src} dst {dst} {proto} dir {dir} ");
    pols.iter().any(|p| p.starts_with(&head))
}

#[test]
fn ipv6_and_gre_tunnels_get_their_policies_and_guards_and_lose_only_their_own() {
    let ns = Netns::new();
    let db = OvsdbServer::start();
    let _mon = ns.monitor(&db, "monitor.log", &[]);
    add_tunnel(&db, "gre6", "gre", LOCAL6, REMOTE6);
    add_tunnel(&db, "gnv6", "geneve", LOCAL6, REMOTE6);
    add_tunnel(&db, "gre4", "gre", LOCAL4, REMOTE4);
    for (t, local, remote, proto) in [
        ("gre6", LOCAL6, REMOTE6, "proto gre"),
        ("gnv6", LOCAL6, REMOTE6, "proto udp dport 6081"),
        ("gre4", LOCAL4, REMOTE4, "proto gre"),
    ] {
        ns.wait_sa_outcome(&db, t, local, remote, proto);
    }
    wait_for("six policies", T, || our_policies(&ns).len() == 6);

    let pols = our_policies(&ns);
    let (l6, r6) = (format!("{LOCAL6}/128"), format!("{REMOTE6}/128"));
    let (l4, r4) = (format!("{LOCAL4}/32"), format!("{REMOTE4}/32"));
    let expected = [
        (&l6, &r6, "proto gre", "out"),
        (&r6, &l6, "proto gre", "in"),
        (&l6, &r6, "proto udp dport 6081", "out"),
        (&r6, &l6, "proto udp dport 6081", "in"),
        (&l4, &r4, "proto gre", "out"),
        (&r4, &l4, "proto gre", "in"),
    ];
    for (src, dst, proto, dir) in expected {
        assert!(
            has_policy(&pols, src, dst, proto, dir),
            "no {dir} policy {src} -> {dst} {proto}: {pols:#?}"
        );
    }
    // ESP transport templates, required: cleartext that matches an in-policy is dropped.
    for p in &pols {
        assert!(
            p.contains("proto esp") && p.contains("mode transport") && !p.contains("level use"),
            "{p}"
        );
    }

    let guard = || ns.nft(&["list", "table", "inet", "ovs_ipsec"]).1;
    let set_has = |table: &str, set: &str, elem: &str| {
        // The element must sit in the set of its family and protocol.
        table
            .split("set ")
            .any(|s| s.starts_with(&format!("{set} {{")) && s.contains(elem))
    };
    let table = guard();
    assert!(
        set_has(&table, "gre6", &format!("{REMOTE6} . {LOCAL6}")),
        "{table}"
    );
    assert!(
        set_has(&table, "udp6", &format!("{REMOTE6} . {LOCAL6} . 6081")),
        "{table}"
    );
    assert!(
        set_has(&table, "gre4", &format!("{REMOTE4} . {LOCAL4}")),
        "{table}"
    );

    // Removing the IPv6 GRE tunnel removes its two policies and its guard element only.
    db.vsctl(&["del-port", "br-ipsec", "gre6"]);
    wait_for("gre6's policies removed", T, || {
        our_policies(&ns).len() == 4
    });
    let pols = our_policies(&ns);
    assert!(
        !has_policy(&pols, &l6, &r6, "proto gre", "out"),
        "{pols:#?}"
    );
    assert!(has_policy(&pols, &l6, &r6, "proto udp dport 6081", "out"));
    assert!(has_policy(&pols, &r4, &l4, "proto gre", "in"));
    wait_for("gre6's guard element removed", T, || {
        !set_has(&guard(), "gre6", &format!("{REMOTE6} . {LOCAL6}"))
    });
    let table = guard();
    assert!(
        set_has(&table, "udp6", &format!("{REMOTE6} . {LOCAL6} . 6081"))
            && set_has(&table, "gre4", &format!("{REMOTE4} . {LOCAL4}")),
        "{table}"
    );
}
