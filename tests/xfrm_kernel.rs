//! The static-key backend on this machine's real kernel, in a fresh network namespace, with a
//! real ovsdb-server, ovs-vsctl, ovs-appctl, ip and nft. Policies and the nftables guard are
//! installed everywhere; on a kernel with ESP the SAs are too and the tunnel is up, on one
//! without (this project's build machine) the SA adds fail and the tunnel says so
//! (tests/common/kernel.rs probes which, once per run).

mod common;

use std::time::Duration;

use common::kernel;
use common::monitor::{Monitor, iface_key, wait_for};
use common::ovsdb_server::OvsdbServer;
use common::xfrm::{LOCAL4, Netns, all_text, geneve_6090};
use ovs_monitor_ipsec::backend::xfrm::READ_BACK_FAILED;
use ovs_monitor_ipsec::backend::xfrm::derive::{Context, derive};
use ovs_monitor_ipsec::backend::xfrm::plan::{GUARD_CHANGED, SET_POLICY};
use ovs_monitor_ipsec::backend::xfrm::types::{Flow, Proto};

const T: Duration = Duration::from_secs(20);
const REMOTE: &str = "192.0.2.2";
const PSK: &str = "swordfish-static";
const PEER_GEN: &str = "0123456789abcdef0123456789abcdef";

fn add_tunnel(db: &OvsdbServer) {
    let mut opts = geneve_6090(REMOTE, PSK);
    opts.push(format!("ipsec_peer_generation={PEER_GEN}"));
    db.add_tunnel("gnv0", "geneve", &opts);
}

const SEL: &str = "proto udp dport 6090";

/// Waits until a restarted monitor has finished its first pass (its full dump, then a
/// `refresh`) and checks what it asked of the kernel: with ESP nothing (it adopts every SA
/// and policy), without ESP the refused SAs again.
fn wait_first_pass(mon: &Monitor) {
    mon.wait_log("full XFRM observation");
    mon.appctl_ok(&["refresh"]);
    if kernel::has_esp() {
        assert_eq!(mon.log_count("actions planned"), 0, "{}", mon.log());
    } else {
        assert!(mon.log_count("add in SA") > 0, "{}", mon.log());
    }
}

/// `ip xfrm policy` lines of our tunnel's selectors, with the volatile parts left out.
fn our_policies(ns: &Netns) -> String {
    ns.ip(&["xfrm", "policy"])
        .split("src ")
        .filter(|p| p.contains("dport 6090"))
        .map(|p| format!("src {}", p.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex16(s: &str) -> [u8; 16] {
    let mut g = [0u8; 16];
    for (i, b) in g.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    g
}

/// The (key hex, SPI) pairs the monitor derived, the keys in the hex a careless log would show.
fn derived(local_gen: &str) -> Vec<(String, u32)> {
    let out = Flow {
        src: LOCAL4.parse().unwrap(),
        dst: REMOTE.parse().unwrap(),
        proto: Proto::Udp(6090),
    };
    let (local, peer) = (hex16(local_gen), hex16(PEER_GEN));
    [(out, &local, &peer), (out.reversed(), &peer, &local)]
        .iter()
        .map(|(flow, sender, receiver)| {
            let d = derive(
                PSK.as_bytes(),
                Context {
                    flow,
                    sender,
                    receiver,
                },
            );
            (d.key.0.iter().map(|b| format!("{b:02x}")).collect(), d.spi)
        })
        .collect()
}

#[test]
fn kernel_state_is_installed_adopted_kept_and_removed_and_keys_never_leak() {
    let ns = Netns::new();
    let db = OvsdbServer::start();
    // A foreign policy, placed by hand: it must survive everything below.
    ns.add_foreign_policy("198.51.100.1", "198.51.100.2", &["proto", "gre"]);
    let mut mon = ns.monitor(&db, "monitor1.log", &[]);
    add_tunnel(&db);

    // Up with both SAs, or the kernel's refusal of the SA, clearly.
    ns.wait_sa_outcome(&db, "gnv0", LOCAL4, REMOTE, SEL);
    // Policies with the configured port (not the geneve default), both directions.
    let pols = our_policies(&ns);
    assert!(
        pols.contains(&format!(
            "src {LOCAL4}/32 dst {REMOTE}/32 proto udp dport 6090"
        )),
        "{pols}"
    );
    assert!(
        pols.contains(&format!(
            "src {REMOTE}/32 dst {LOCAL4}/32 proto udp dport 6090"
        )),
        "{pols}"
    );
    assert!(
        pols.contains("dir in") && pols.contains("dir out"),
        "{pols}"
    );
    assert!(
        pols.contains("level required") || !pols.contains("level use"),
        "{pols}"
    );
    let (ok, table) = ns.nft(&["list", "table", "inet", "ovs_ipsec"]);
    assert!(
        ok && table.contains(&format!("{REMOTE} . {LOCAL4} . 6090")),
        "{table}"
    );
    let generation = iface_key(&db, "gnv0", "ipsec-generation").expect("generation published");
    assert_eq!(generation.len(), 32);
    let show = mon.appctl_ok(&["tunnels/show"]);
    assert!(
        show.contains("dport 6090") && show.contains("ovs_ipsec"),
        "{show}"
    );

    // Restart (SIGKILL): the new monitor adopts policies and guard without touching them.
    drop(mon);
    let before = our_policies(&ns);
    let sas_before = ns.sas();
    mon = ns.monitor(&db, "monitor2.log", &[]);
    wait_first_pass(&mon);
    assert_eq!(ns.sas(), sas_before, "SAs were churned by a restart");
    assert_eq!(
        our_policies(&ns),
        before,
        "policies were churned by a restart: {}",
        mon.log()
    );
    assert_eq!(mon.log_count(SET_POLICY), 0, "{}", mon.log());
    assert_eq!(mon.log_count(GUARD_CHANGED), 0, "{}", mon.log());
    assert_eq!(
        iface_key(&db, "gnv0", "ipsec-generation").as_deref(),
        Some(generation.as_str())
    );

    // exit --no-cleanup leaves everything.
    mon.appctl_ok(&["exit", "--no-cleanup"]);
    mon.wait_exit();
    assert_eq!(our_policies(&ns), before);
    assert_eq!(ns.sas(), sas_before);
    assert!(ns.nft(&["list", "table", "inet", "ovs_ipsec"]).0);

    // exit removes ours, and only ours.
    let mut mon = ns.monitor(&db, "monitor3.log", &[]);
    wait_first_pass(&mon);
    mon.appctl_ok(&["exit"]);
    mon.wait_exit();
    assert_eq!(our_policies(&ns), "", "our policies survived exit");
    ns.assert_no_sa(SEL);
    assert!(
        !ns.nft(&["list", "table", "inet", "ovs_ipsec"]).0,
        "nft table survived exit"
    );
    assert!(
        ns.ip(&["xfrm", "policy"]).contains("198.51.100.2"),
        "foreign policy removed"
    );

    // No secret anywhere we write: logs, generation file, tunnels/show, our OVSDB keys.
    let everything = format!(
        "{}{show}{}",
        all_text(db.dir()),
        db.vsctl(&["get", "Interface", "gnv0", "external_ids"])
    );
    assert!(!everything.contains(PSK), "PSK leaked");
    for (key, spi) in derived(&generation) {
        // The SPI in the log proves the test derives exactly what the monitor did.
        assert!(everything.contains(&format!("spi 0x{spi:08x}")), "{spi:x}");
        assert!(
            !everything.to_lowercase().contains(&key),
            "derived key leaked"
        );
    }
}

/// The guard records the ESP that arrives, by (sender, receiver, SPI): the monitor's only way
/// to see that a peer sends under a key this node does not hold (its reboot drew a new
/// generation). This kernel has no esp4, but the input hook sees the packet all the same.
#[test]
fn the_guard_records_which_spi_a_peer_sends_with() {
    let ns = Netns::new();
    let db = OvsdbServer::start();
    let _mon = ns.monitor(&db, "monitor.log", &[]);
    add_tunnel(&db);
    wait_for("the nftables guard", T, || {
        ns.nft(&["list", "set", "inet", "ovs_ipsec", "esp4"]).0
    });
    ns.ip(&["addr", "add", &format!("{REMOTE}/32"), "dev", "lo"]);
    ns.send_esp(REMOTE, LOCAL4, 0x1234);
    let (ok, set) = ns.nft(&["list", "set", "inet", "ovs_ipsec", "esp4"]);
    assert!(
        ok && set.contains(&format!("{REMOTE} . {LOCAL4} . 4660")),
        "{set}"
    );
}

/// A tunnel added to a running monitor is read back with a few GETs, not a dump of every
/// tunnel's state, and a foreign policy that a GET finds on its selector is foreign all the
/// same: the tunnel is in error and the policy is untouched.
#[test]
fn a_change_reads_back_only_its_tunnel_and_a_foreign_policy_found_by_get_stays_foreign() {
    let ns = Netns::new();
    let db = OvsdbServer::start();
    let mon = ns.monitor(&db, "monitor.log", &[]);
    add_tunnel(&db);
    ns.wait_sa_outcome(&db, "gnv0", LOCAL4, REMOTE, SEL);
    // Placed by hand after the monitor's start-up dump, on the selector of a tunnel to come.
    let foreign = "192.0.2.7";
    ns.add_foreign_policy(LOCAL4, foreign, &["proto", "udp", "dport", "6081"]);
    db.add_tunnel(
        "gnv1",
        "geneve",
        &[
            format!("remote_ip={foreign}"),
            format!("local_ip={LOCAL4}"),
            format!("psk={PSK}"),
            format!("ipsec_peer_generation={PEER_GEN}"),
        ],
    );
    wait_for("gnv1 in error", T, || {
        iface_key(&db, "gnv1", "ipsec-error").is_some_and(|e| e.contains("not created by"))
    });
    assert!(
        mon.log()
            .contains("targeted XFRM observation: read back 2 SAs and 2 policies"),
        "{}",
        mon.log()
    );
    assert_eq!(mon.log_count(READ_BACK_FAILED), 0, "{}", mon.log());
    let pols = ns.ip(&["xfrm", "policy"]);
    let theirs: Vec<&str> = pols.split("src ").filter(|p| p.contains(foreign)).collect();
    assert_eq!(theirs.len(), 1, "{pols}");
    assert!(
        theirs[0].contains("dir out") && !theirs[0].contains("priority 20310"),
        "{pols}"
    );
    // gnv0 is untouched by gnv1's trouble.
    assert!(our_policies(&ns).contains("dir in"));
}

/// Files named `name` under `dir`, at any depth.
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let p = e.path();
        if p.is_dir() {
            find_file(&p, name)
        } else {
            (e.file_name() == name).then_some(p)
        }
    })
}

/// A tunnel that drew its own generation (recorded in the generation file, as after it was
/// removed and added back) keys and publishes with it after a monitor restart, while the other
/// tunnel keeps the node's generation and its kernel state is not touched.
#[test]
fn a_tunnel_s_own_generation_is_reloaded_published_and_confined_to_it() {
    let ns = Netns::new();
    let db = OvsdbServer::start();
    let mon = ns.monitor(&db, "monitor1.log", &[]);
    add_tunnel(&db);
    db.add_tunnel(
        "gnv1",
        "geneve",
        &[
            "remote_ip=192.0.2.3".to_owned(),
            format!("local_ip={LOCAL4}"),
            format!("psk={PSK}"),
            format!("ipsec_peer_generation={PEER_GEN}"),
        ],
    );
    let published = |name| iface_key(&db, name, "ipsec-generation");
    wait_for("both tunnels publish a generation", T, || {
        published("gnv0").is_some() && published("gnv1").is_some()
    });
    let node = published("gnv1").unwrap_or_default();
    assert_eq!(published("gnv0").as_deref(), Some(node.as_str()));
    let gnv1_policies = |ns: &Netns| {
        ns.ip(&["xfrm", "policy"])
            .split("src ")
            .filter(|p| p.contains("192.0.2.3"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let gnv1_before = gnv1_policies(&ns);
    assert_eq!(gnv1_before.len(), 2, "{gnv1_before:?}");
    drop(mon);

    let file = find_file(db.dir(), "ovs-monitor-ipsec.generation").expect("generation file");
    let own = "00112233445566778899aabbccddeeff";
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("tunnel {LOCAL4} {REMOTE} udp/6090 {own}\n"));
    std::fs::write(&file, text).unwrap();

    let mon = ns.monitor(&db, "monitor2.log", &[]);
    wait_for("gnv0 to publish its own generation", T, || {
        published("gnv0").as_deref() == Some(own)
    });
    assert_eq!(published("gnv1").as_deref(), Some(node.as_str()));
    // gnv0's out-policy names the SPI of its new key; gnv1's policies are left as they were.
    let out_spi = derived(own)[0].1;
    mon.wait_log(&format!("gnv0: set out {LOCAL4} -> {REMOTE}"));
    assert!(
        mon.log().contains(&format!("spi 0x{out_spi:08x}")),
        "{}",
        mon.log()
    );
    assert_eq!(
        mon.log_count(&format!("gnv1{SET_POLICY}")),
        0,
        "{}",
        mon.log()
    );
    assert_eq!(gnv1_policies(&ns), gnv1_before);
    let node_file = std::fs::read_to_string(&file).unwrap();
    assert!(
        node_file.starts_with(&format!("generation {node}")),
        "{node_file}"
    );
    assert!(
        node_file.contains(own),
        "compacting keeps the record: {node_file}"
    );
    drop(mon);

    // Restarted again: both generations come back from the (compacted) file and the monitor
    // adopts every policy as it is; nothing is set again.
    let gnv0_policies = our_policies(&ns);
    let mon = ns.monitor(&db, "monitor3.log", &[]);
    wait_first_pass(&mon);
    assert_eq!(published("gnv0").as_deref(), Some(own));
    assert_eq!(published("gnv1").as_deref(), Some(node.as_str()));
    assert_eq!(mon.log_count(SET_POLICY), 0, "{}", mon.log());
    assert_eq!(our_policies(&ns), gnv0_policies);
    assert_eq!(gnv1_policies(&ns), gnv1_before);
}
