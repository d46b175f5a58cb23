//! What the static-key backend does while nothing changes, and what one change costs, with N
//! tunnels on the real kernel (fresh network namespace, real ovsdb-server, ip, nft). The
//! tunnels have no peer generation, so only policies and the nftables guard are installed:
//! SA adds refused by a kernel without ESP would bring their own retry passes.
//!
//! Counted from the monitor's debug log and ovsdb-server's transaction log, no timing: a
//! one-tunnel change plans and writes only that tunnel's objects and status, and an idle
//! periodic pass, even one that dumps the kernel, plans nothing and writes no tunnel status
//! (its only write, the monitor's heartbeat, touches the Open_vSwitch row alone).

mod common;

use std::time::Duration;

use common::kernel;
use common::monitor::{iface_key, wait_for};
use common::ovsdb_server::{OvsdbServer, tunnel_port_args};
use common::xfrm::{LOCAL4, Netns};
use ovs_monitor_ipsec::app::STATUS_UPDATED;

const N: usize = 40;
const IDLE: &str = "nothing new in XFRM since the last pass";

fn opts(i: usize) -> Vec<String> {
    vec![
        format!("remote_ip=192.0.2.{}", 10 + i),
        format!("local_ip={LOCAL4}"),
        "psk=idle-test".to_owned(),
    ]
}

fn policy_count(ns: &Netns) -> usize {
    ns.ip(&["xfrm", "policy"]).matches("dir ").count()
}

/// The tables each of the monitor's OVSDB transactions changed rows of, in order, one entry
/// per row: ovsdb-server's file is an append-only log of transactions, ovs-vsctl's carry a
/// `_comment` and nothing else writes to this database.
fn monitor_writes(db: &OvsdbServer) -> Vec<Vec<String>> {
    let file = std::fs::read_to_string(db.dir().join("conf.db")).expect("read conf.db");
    let records = file.lines().filter(|l| l.starts_with('{'));
    // The first record is the schema.
    records
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a conf.db record"))
        .filter(|txn| txn.get("_comment").is_none())
        .map(|txn| {
            let tables = txn.as_object().expect("a transaction object");
            tables
                .iter()
                .filter(|(table, _)| !table.starts_with('_'))
                .flat_map(|(table, rows)| {
                    let n = rows.as_object().map_or(0, |r| r.len());
                    std::iter::repeat_n(table.clone(), n)
                })
                .collect()
        })
        .collect()
}

/// The log from the first line containing `pat` (empty without one).
fn after_first<'a>(log: &'a str, pat: &str) -> &'a str {
    log.find(pat).map_or("", |i| &log[i..])
}

/// The log after the last line containing `pat`.
fn after_last<'a>(log: &'a str, pat: &str) -> &'a str {
    log.rfind(pat).map_or("", |i| &log[i..])
}

#[test]
fn one_change_costs_its_own_tunnel_and_idle_passes_plan_and_write_nothing() {
    let ns = Netns::new();
    let db = OvsdbServer::start();
    let mon = ns.monitor(&db, "monitor.log", &[]);
    // All N tunnels in one transaction.
    let mut args: Vec<String> = Vec::new();
    for i in 0..N {
        if i > 0 {
            args.push("--".into());
        }
        args.extend(tunnel_port_args(&format!("gnv{i}"), "geneve", &opts(i)));
    }
    db.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let long = Duration::from_secs(60);
    wait_for("every tunnel's policies and status", long, || {
        policy_count(&ns) == 2 * N
            && (0..N).all(|i| iface_key(&db, &format!("gnv{i}"), "ipsec-state").is_some())
    });

    // One more tunnel: its two policies and one guard element, read back by GET.
    db.add_tunnel("extra", "geneve", &opts(N));
    wait_for("the new tunnel's status", long, || {
        iface_key(&db, "extra", "ipsec-state").as_deref() == Some("down")
    });
    let log = mon.log();
    let change = &log[log
        .find("Tunnel extra appeared")
        .expect("the change is logged")..];
    assert!(
        change.contains("none: 3 actions planned, 3 applied, 0 tunnels failed"),
        "{change}"
    );
    assert!(
        change.contains("targeted XFRM observation: read back 0 SAs and 2 policies"),
        "{change}"
    );
    // The new tunnel's row, and the monitor's own row unless its second-resolution
    // `ipsec-monitor-last-reconcile` is still what the previous pass wrote.
    let rows = change
        .split(&format!("{STATUS_UPDATED} "))
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(matches!(rows, Some(1 | 2)), "{change}");
    assert_eq!(policy_count(&ns), 2 * (N + 1));

    // Idle: the first periodic pass after the change refreshes every tunnel; the ones after
    // it, including one whose full dump finds what the monitor kept, stop after observing.
    let since_change = || {
        let log = mon.log();
        let at = log.find("Tunnel extra appeared").unwrap_or(0);
        log[at..].to_owned()
    };
    wait_for("an idle full dump and an idle pass after it", long, || {
        let dumped = after_last(&since_change(), "policies of ours, as kept").to_owned();
        !dumped.is_empty() && dumped.contains(IDLE)
    });
    // The only writes of idle passes are the monitor's own heartbeat (its
    // ipsec-monitor-last-reconcile, a minute after the change): wait for one. The monitor's
    // transactions and its status lines pair up in order (a line is logged once its
    // transaction is committed: wait for a moment when both agree).
    let mut paired = None;
    wait_for(
        "an idle pass writing the heartbeat",
        Duration::from_secs(150),
        || {
            let (log, writes) = (mon.log(), monitor_writes(&db));
            let idle = after_first(after_first(&log, "Tunnel extra appeared"), IDLE);
            let agree = writes.len() == log.matches(STATUS_UPDATED).count();
            if agree && idle.contains(STATUS_UPDATED) {
                paired = Some((log, writes));
            }
            paired.is_some()
        },
    );
    let (log, writes) = paired.expect("set when the wait ends");
    let idle = after_first(after_first(&log, "Tunnel extra appeared"), IDLE);
    assert!(!idle.contains("actions planned"), "{idle}");
    // The idle passes' writes, the last ones the monitor made, each changed its Open_vSwitch
    // row and no Interface row.
    let written = idle.matches(STATUS_UPDATED).count();
    let idle_writes = &writes[writes.len() - written..];
    assert!(
        idle_writes.iter().all(|rows| rows == &["Open_vSwitch"]),
        "an idle pass wrote other rows: {idle_writes:?}\n{idle}"
    );
    assert_eq!(policy_count(&ns), 2 * (N + 1));
}

/// An SA add the kernel refused (one without ESP) is asked again by the retry pass 15 s
/// later, even though nothing else changed and the dump of that pass finds what the monitor
/// kept: the retry pass is no idle pass. SAs a kernel with ESP installed are not asked again:
/// the periodic passes after the first one are idle.
#[test]
fn a_refused_sa_is_asked_again_by_the_retry_pass_and_an_installed_one_is_not() {
    let ns = Netns::new();
    let db = OvsdbServer::start();
    let mon = ns.monitor(&db, "monitor.log", &[]);
    let mut o = opts(0);
    o.push("ipsec_peer_generation=0123456789abcdef0123456789abcdef".into());
    db.add_tunnel("gnv0", "geneve", &o);
    let long = Duration::from_secs(60);
    ns.wait_sa_outcome(&db, "gnv0", LOCAL4, "192.0.2.10", "proto udp dport 6081");
    if kernel::has_esp() {
        wait_for("an idle periodic pass", long, || mon.log().contains(IDLE));
        assert_eq!(mon.log_count("actions planned"), 1, "{}", mon.log());
    } else {
        // The first pass adds both SAs (refused) and the rest; the retry asks for the SAs only.
        wait_for("the retry pass", long, || {
            mon.log_count("none: 2 actions planned") >= 1
        });
    }
}
