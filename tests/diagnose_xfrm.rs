//! `diagnose` through the real `ovs-appctl` on the static-key backend, in a fresh network
//! namespace of the kernel under test (with ESP its SAs install, without it they cannot): every
//! finding below comes from real kernel state, placed by the monitor or by hand with `ip xfrm`,
//! and a real OVSDB row.

mod common;

use std::time::Duration;

use common::kernel;
use common::monitor::{CTL_BIN, Monitor, wait_for};
use common::ovsdb_server::OvsdbServer;
use common::xfrm::{LOCAL4, Netns, geneve_6090};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);
const REMOTE: &str = "192.0.2.2";

/// A geneve tunnel on port 6090 to [`REMOTE`], its policies installed and its SAs as this
/// kernel allows (installed and `up`, or refused and `error`). The peer is routed (over `lo`,
/// the namespace's only device) so the route layer passes.
fn started(ns: &Netns) -> (OvsdbServer, Monitor) {
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "lo", "src", LOCAL4]);
    let db = OvsdbServer::start();
    let mon = ns.monitor(&db, "monitor.log", &[]);
    let mut opts = geneve_6090(REMOTE, "swordfish-diag");
    opts.push("ipsec_peer_generation=0123456789abcdef0123456789abcdef".to_owned());
    db.add_tunnel("gnv0", "geneve", &opts);
    wait_for("our two policies", T, || {
        ns.ip(&["xfrm", "policy"]).matches("dport 6090").count() >= 2
    });
    ns.wait_sa_outcome(&db, "gnv0", LOCAL4, REMOTE, "proto udp dport 6090");
    (db, mon)
}

/// `diagnose args --json`, parsed.
fn diagnose(mon: &Monitor, args: &[&str]) -> Value {
    let mut all = vec!["diagnose"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&mon.appctl_ok(&all)).expect("diagnose --json is JSON")
}

/// The codes of `iface`'s findings, with their severity.
fn codes(v: &Value, iface: &str) -> Vec<(String, String)> {
    let t = v
        .as_array()
        .and_then(|a| a.iter().find(|t| t["interface"] == iface))
        .unwrap_or_else(|| panic!("{iface} not in {v}"));
    t["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap_or_default().to_owned(),
                f["severity"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn has(v: &[(String, String)], code: &str) -> bool {
    v.iter().any(|(c, _)| c == code)
}

/// The SA findings of the healthy tunnel on this kernel: none with ESP; without, an
/// `sa-missing` error in each direction.
fn sa_findings() -> Vec<(String, String)> {
    let missing = || ("sa-missing".to_owned(), "error".to_owned());
    kernel::expect(vec![], vec![missing(), missing()])
}

/// `diagnose gnv0`'s text for the tunnel's SAs on this kernel: with ESP it is `up` and both
/// SA layers are ok; without, it is in error with the outbound SA missing.
fn assert_sa_layers(text: &str) {
    let layer_ok = |name: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("ok   {name} ")) && l.contains("spi 0x"))
    };
    let ok = if kernel::has_esp() {
        text.starts_with("gnv0: up\n")
            && layer_ok("SA out")
            && layer_ok("SA in")
            && text.contains("no problem found")
    } else {
        text.starts_with("gnv0: error\n")
            && text.contains("FAIL SA out")
            && text.contains("error sa-missing: no outbound ESP SA")
            && text.contains("      fix: ")
    };
    assert!(ok, "ESP: {}\n{text}", kernel::has_esp());
}

fn xfrm_policy(ns: &Netns, args: &str) {
    let all: Vec<&str> = args.split_whitespace().collect();
    ns.ip(&all);
}

#[test]
fn kernel_layers_a_foreign_policy_and_an_invalid_row() {
    let ns = Netns::new();
    let (db, mon) = started(&ns);

    // Our policies are there; the SAs are what this kernel allows, nothing else is found.
    let v = diagnose(&mon, &["gnv0"]);
    assert_eq!(codes(&v, "gnv0"), sa_findings(), "{v}");
    let text = mon.appctl_ok(&["diagnose", "gnv0"]);
    assert!(
        text.contains("ok   policy out")
            && text.contains(&format!(
                "src {LOCAL4}/32 dst {REMOTE}/32 proto udp dport 6090 dir out priority 20310"
            )),
        "{text}"
    );
    assert_sa_layers(&text);
    assert!(!text.contains("swordfish"), "{text}");

    // A host VPN's policy on our traffic with a larger priority value loses: no finding.
    xfrm_policy(
        &ns,
        &format!(
            "xfrm policy add src {LOCAL4}/32 dst 192.0.2.0/24 proto udp dir out priority 30000 \
             tmpl src {LOCAL4} dst 192.0.2.9 proto esp reqid 77 mode tunnel"
        ),
    );
    let c = codes(&diagnose(&mon, &["gnv0"]), "gnv0");
    assert!(!has(&c, "foreign-policy-shadows"), "{c:?}");

    // One with a smaller value wins over ours (20310): named, with its priority and reqid.
    // It lets traffic out without an SA (level use): cleartext is not guarded either.
    xfrm_policy(
        &ns,
        &format!(
            "xfrm policy add src {LOCAL4}/32 dst 192.0.2.0/28 proto udp dir out priority 100 \
             tmpl proto esp reqid 78 mode transport level use"
        ),
    );
    let v = diagnose(&mon, &[]);
    let c = codes(&v, "gnv0");
    assert!(
        has(&c, "foreign-policy-shadows") && has(&c, "cleartext-not-guarded"),
        "{v}"
    );
    let text = mon.appctl_ok(&["diagnose"]);
    assert!(
        text.contains(&format!(
            "src {LOCAL4}/32 dst 192.0.2.0/28 proto udp dir out priority 100 tmpl proto esp reqid 78 mode transport level use"
        )) && text.contains("before ours (priority 20310)"),
        "{text}"
    );
    assert!(!text.contains("reqid 77"), "{text}");

    // A bad row: invalid-config, with the validation's reason; the good tunnel is unaffected.
    db.add_tunnel(
        "bad0",
        "vxlan",
        &["remote_ip=not-an-ip".to_owned(), "psk=x".to_owned()],
    );
    wait_for("bad0 known", T, || {
        mon.appctl_ok(&["tunnels/show"]).contains("bad0")
    });
    let v = diagnose(&mon, &[]);
    assert_eq!(
        codes(&v, "bad0"),
        [("invalid-config".to_owned(), "error".to_owned())],
        "{v}"
    );
    assert_eq!(v[0]["interface"], "bad0");
    assert_eq!(v[0]["state"], "invalid");
    let f = &v[0]["findings"][0];
    assert!(
        f["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not-an-ip")
            && !f["hint"].as_str().unwrap_or_default().is_empty(),
        "{f}"
    );

    // Unknown interface: an error reply; the same answers through ovs-monitor-ipsec-ctl.
    let out = mon.appctl(&["diagnose", "nope0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope0: no such IPsec tunnel"),
        "{out:?}"
    );
    let ctl = std::process::Command::new(CTL_BIN)
        .args([
            "-t",
            mon.ctl.to_str().unwrap_or_default(),
            "diagnose",
            "bad0",
        ])
        .output()
        .expect("run ovs-monitor-ipsec-ctl");
    let text = String::from_utf8_lossy(&ctl.stdout);
    assert!(
        ctl.status.success() && text.contains("error invalid-config:"),
        "{ctl:?}"
    );
}
