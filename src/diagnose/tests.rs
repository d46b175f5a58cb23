//! The pure checks on hand-built observations: the kernel's policy priority rules, ownership,
//! the IKE layers and the report's shapes. The same findings from real set-ups are in
//! `tests/diagnose_*.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::backend::ike_view::{ConnView, SaState};
use crate::backend::xfrm::host::{
    HostPolicy, HostSa, HostSelector, HostTemplate, HostXfrm, PolicyDir, Prefix,
};
use crate::backend::xfrm::types::{PRIORITY, REQID};
use crate::backend::{LiveState, LiveStatus};
use crate::model::{Auth, Secret, TunnelConf, TunnelType};

const L: &str = "192.0.2.1";
const R: &str = "192.0.2.2";

fn tunnel(valid: bool) -> Tunnel {
    let mut conf = TunnelConf::new(
        "gnv0",
        TunnelType::Geneve,
        R.parse().unwrap(),
        Auth::Psk(Secret::new("hunter2-secret")),
    );
    conf.local_ip = Some(L.parse().unwrap());
    Tunnel {
        uuid: String::new(),
        name: "gnv0".into(),
        version: 1,
        validity: if valid {
            Validity::Valid(Arc::new(conf))
        } else {
            Validity::Invalid(": remote_ip is not an IP address".into())
        },
        raw: Box::default(),
        ofport: None,
        cfm_fault: None,
    }
}

fn host_prefix(ip: &str) -> Prefix {
    Prefix {
        addr: Some(ip.parse().unwrap()),
        len: 32,
    }
}

/// A policy on the geneve flow in `dir`, ESP transport required, reqid `reqid`.
fn policy(dir: PolicyDir, priority: u32, index: u32, reqid: u32) -> HostPolicy {
    let (s, d) = if dir == PolicyDir::Out {
        (L, R)
    } else {
        (R, L)
    };
    HostPolicy {
        dir,
        selector: HostSelector {
            src: host_prefix(s),
            dst: host_prefix(d),
            proto: 17,
            sport: 0,
            sport_mask: 0,
            dport: 6081,
            dport_mask: u16::MAX,
            ifindex: 0,
        },
        priority,
        index,
        block: false,
        mark: (0, 0),
        if_id: 0,
        templates: vec![HostTemplate {
            proto: 50,
            reqid,
            tunnel_mode: false,
            required: true,
        }],
    }
}

fn ours() -> Vec<HostPolicy> {
    vec![
        policy(PolicyDir::Out, PRIORITY, 8, REQID),
        policy(PolicyDir::In, PRIORITY, 16, REQID),
    ]
}

fn sa(src: &str, dst: &str, spi: u32, packets: u64) -> HostSa {
    HostSa {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        spi,
        proto: 50,
        reqid: REQID,
        sel_proto: 0,
        sel_sport: 0,
        sel_dport: 0,
        packets,
        bytes: packets * 100,
    }
}

/// Host reads of a routed peer with no datapath port and no certificate.
fn quiet_reads(t: &Tunnel) -> host::HostReads {
    let route = route::Route {
        dev: "eth0".into(),
        source: Some(L.parse().unwrap()),
        gateway: None,
        route_mtu: None,
        dev_mtu: Some(1500),
        from_local_ip: None,
    };
    let conf = t.conf().unwrap();
    host::HostReads {
        route: Ok(route::RouteAnswer::Route(route)),
        mtu: Ok(mtu::input_for(
            conf,
            &Default::default(),
            Some(1500),
            Vec::new(),
        )),
        certs: None,
    }
}

fn run(kind: BackendKind, ike: &IkeView, xfrm: &HostXfrm, later: Option<&[HostSa]>) -> Diagnosis {
    let t = tunnel(true);
    let live = LiveStatus::new(LiveState::Up);
    let index = kernel::XfrmIndex::new(xfrm, later.unwrap_or_default());
    let rules = nft::Ruleset::default();
    let host = Host {
        kind,
        ike,
        xfrm: Ok(&index),
        sampled: later.map(|_| Duration::from_secs(1)),
        packet_mark: 0,
        nft: Ok(&rules),
    };
    diagnose(
        &TunnelInput {
            tunnel: &t,
            live: Some(&live),
            apply_error: None,
            local: Some(L.parse().unwrap()),
            reads: &quiet_reads(&t),
        },
        &host,
    )
}

#[test]
fn host_layers_follow_the_kernel_and_a_failed_read_is_not_a_finding() {
    let t = tunnel(true);
    let x = HostXfrm {
        policies: ours(),
        sas: vec![sa(L, R, 1, 0), sa(R, L, 2, 0)],
    };
    let index = kernel::XfrmIndex::new(&x, &[]);
    let host = Host {
        kind: BackendKind::None,
        ike: &IkeView::NotReported,
        xfrm: Ok(&index),
        sampled: None,
        packet_mark: 0,
        nft: Err("cannot run nft"),
    };
    let mut reads = quiet_reads(&t);
    reads.route = Ok(route::RouteAnswer::NoRoute("Network is unreachable".into()));
    reads.mtu = Err("cannot list the datapath's ports".into());
    let d = diagnose(
        &TunnelInput {
            tunnel: &t,
            live: None,
            apply_error: None,
            local: Some(L.parse().unwrap()),
            reads: &reads,
        },
        &host,
    );
    assert_eq!(codes(&d), ["peer-unreachable"]);
    let last: Vec<_> = (d.layers.iter().rev().take(4).rev())
        .map(|l| (l.name, l.ok, l.text.as_str()))
        .collect();
    assert_eq!(
        last,
        [
            (
                "route",
                false,
                "no route to 192.0.2.2: Network is unreachable"
            ),
            (
                "MTU",
                false,
                "not checked: cannot list the datapath's ports"
            ),
            ("firewall", false, "not checked: cannot run nft"),
            ("certificate", true, "none (pre-shared key)"),
        ]
    );
}

fn codes(d: &Diagnosis) -> Vec<&'static str> {
    d.findings.iter().map(|f| f.code.as_str()).collect()
}

fn static_run(policies: Vec<HostPolicy>) -> Diagnosis {
    let x = HostXfrm {
        policies,
        sas: vec![sa(L, R, 1, 0), sa(R, L, 2, 0)],
    };
    run(BackendKind::None, &IkeView::NotReported, &x, None)
}

#[test]
fn a_converged_static_tunnel_has_no_finding() {
    let d = static_run(ours());
    assert!(d.findings.is_empty(), "{d:?}");
    assert!(d.layers.iter().all(|l| l.ok), "{d:?}");
}

#[test]
fn the_lowest_priority_value_wins_and_ties_go_to_the_older_policy() {
    // Lower value: wins, named.
    let mut p = ours();
    p.push(policy(PolicyDir::Out, 100, 1000, 7));
    let d = static_run(p);
    assert_eq!(codes(&d), ["foreign-policy-shadows"]);
    assert!(
        d.findings[0].message.contains("priority 100") && d.findings[0].message.contains("reqid 7")
    );
    // Same priority: the older (smaller index) wins; a newer one does not.
    let mut p = ours();
    p.push(policy(PolicyDir::Out, PRIORITY, 1000, 7));
    assert!(static_run(p).findings.is_empty());
    let mut p = ours();
    p.push(policy(PolicyDir::In, PRIORITY, 1, 7));
    assert_eq!(codes(&static_run(p)), ["foreign-policy-shadows"]);
    // Larger value: ours wins.
    let mut p = ours();
    p.push(policy(PolicyDir::Out, PRIORITY + 1, 1, 7));
    assert!(static_run(p).findings.is_empty());
}

#[test]
fn a_policy_that_cannot_match_the_tunnel_traffic_is_ignored() {
    let variants: [fn(&mut HostPolicy); 6] = [
        |p| p.mark = (1, 0xff),
        |p| p.if_id = 3,
        |p| p.selector.dport = 4789,
        |p| p.selector.proto = 47,
        |p| p.selector.dst = host_prefix("192.0.2.3"),
        |p| p.dir = PolicyDir::Fwd,
    ];
    for f in variants {
        let mut foreign = policy(PolicyDir::Out, 1, 1, 7);
        f(&mut foreign);
        let mut p = ours();
        p.push(foreign.clone());
        assert!(static_run(p).findings.is_empty(), "{foreign:?}");
    }
    // Wider selectors do match: a /24, any protocol, any port, a source-port subset.
    for f in [
        |p: &mut HostPolicy| p.selector.dst.len = 24,
        |p: &mut HostPolicy| p.selector.proto = 0,
        |p: &mut HostPolicy| p.selector.dport_mask = 0,
        |p: &mut HostPolicy| {
            p.selector.sport = 5000;
            p.selector.sport_mask = u16::MAX
        },
    ] {
        let mut foreign = policy(PolicyDir::Out, 1, 1, 7);
        f(&mut foreign);
        let mut p = ours();
        p.push(foreign);
        assert_eq!(codes(&static_run(p)), ["foreign-policy-shadows"]);
    }
}

#[test]
fn missing_policy_and_cleartext_exits() {
    let d = static_run(vec![policy(PolicyDir::Out, PRIORITY, 8, REQID)]);
    assert_eq!(codes(&d), ["policy-missing"]);
    assert!(d.findings[0].message.contains("no in policy"));
    // A bypass (allow, no template) winning over ours: foreign, and cleartext leaves.
    let mut bypass = policy(PolicyDir::Out, 1, 1, 0);
    bypass.templates.clear();
    let mut p = ours();
    p.push(bypass);
    assert_eq!(
        codes(&static_run(p)),
        ["foreign-policy-shadows", "cleartext-not-guarded"]
    );
    // A block policy winning: no cleartext, but the traffic is taken from us.
    let mut block = policy(PolicyDir::Out, 1, 1, 0);
    block.block = true;
    block.templates.clear();
    let mut p = ours();
    p.push(block);
    assert_eq!(codes(&static_run(p)), ["foreign-policy-shadows"]);
}

#[test]
fn under_an_ike_daemon_ours_is_the_esp_policy_on_the_exact_host_pair() {
    let ike = IkeView::Tunnels(BTreeMap::new());
    let x = HostXfrm {
        policies: vec![
            policy(PolicyDir::Out, 366_000, 8, 1),
            policy(PolicyDir::In, 366_000, 16, 2),
        ],
        sas: vec![sa(L, R, 1, 0), sa(R, L, 2, 0)],
    };
    let d = run(BackendKind::StrongSwan, &IkeView::NotReported, &x, None);
    assert!(d.findings.is_empty(), "{d:?}");
    // The daemon does not list the connections: not loaded.
    let d = run(BackendKind::StrongSwan, &ike, &x, None);
    assert_eq!(codes(&d), ["conn-not-loaded"]);
}

#[test]
fn missing_sas_and_one_way_traffic() {
    let x = HostXfrm {
        policies: ours(),
        sas: vec![sa(L, R, 1, 10)],
    };
    let d = run(BackendKind::None, &IkeView::NotReported, &x, None);
    assert_eq!(codes(&d), ["sa-missing"]);
    assert!(d.findings[0].message.contains("no inbound ESP SA"));
    let x = HostXfrm {
        policies: ours(),
        sas: vec![sa(L, R, 1, 10), sa(R, L, 2, 5)],
    };
    let later = [sa(L, R, 1, 25), sa(R, L, 2, 5)];
    let d = run(BackendKind::None, &IkeView::NotReported, &x, Some(&later));
    assert_eq!(codes(&d), ["no-inbound-traffic"]);
    assert!(d.findings[0].message.contains("15 packets"), "{d:?}");
    let later = [sa(L, R, 1, 25), sa(R, L, 2, 6)];
    let d = run(BackendKind::None, &IkeView::NotReported, &x, Some(&later));
    assert!(d.findings.is_empty());
    assert!(
        d.layers
            .iter()
            .any(|l| l.text == "+15 packets out, +1 in over 1.0 s")
    );
}

fn conn(name: &str, loaded: bool, ike: SaState, child: SaState, reason: Option<&str>) -> ConnView {
    ConnView {
        name: name.into(),
        loaded,
        ike,
        child,
        reason: reason.map(str::to_owned),
    }
}

fn ike_run(conns: Vec<ConnView>) -> Diagnosis {
    let ike = IkeView::Tunnels(BTreeMap::from([("gnv0".to_owned(), conns)]));
    let x = HostXfrm {
        policies: vec![
            policy(PolicyDir::Out, 1000, 8, 1),
            policy(PolicyDir::In, 1000, 16, 2),
        ],
        sas: vec![sa(L, R, 1, 0), sa(R, L, 2, 0)],
    };
    run(BackendKind::StrongSwan, &ike, &x, None)
}

#[test]
fn ike_layers_name_the_connection_and_the_daemons_reason() {
    use SaState::*;
    let d = ike_run(vec![
        conn("gnv0-in-1", true, Established, Established, None),
        conn("gnv0-out-1", false, Absent, Absent, None),
    ]);
    assert_eq!(codes(&d), ["conn-not-loaded"]);
    assert!(d.findings[0].message.contains("gnv0-out-1"));
    let d = ike_run(vec![
        conn("gnv0-in-1", true, Established, Absent, None),
        conn(
            "gnv0-out-1",
            true,
            Absent,
            Absent,
            Some("received AUTHENTICATION_FAILED notify error"),
        ),
    ]);
    assert_eq!(codes(&d), ["ike-sa-missing", "child-sa-missing"]);
    assert_eq!(d.findings[0].severity, Severity::Error);
    assert!(
        d.findings[0]
            .message
            .contains("authentication failed (received AUTHENTICATION_FAILED"),
        "{d:?}"
    );
    assert!(d.findings[0].hint.contains("psk"));
    let d = ike_run(vec![
        conn("gnv0-in-1", true, Negotiating, Absent, None),
        conn("gnv0-out-1", true, Established, Established, None),
    ]);
    assert_eq!(codes(&d), ["ike-sa-missing"]);
    assert_eq!(d.findings[0].severity, Severity::Warning);
    let ike = IkeView::Unreachable("charon does not answer".into());
    let d = run(BackendKind::StrongSwan, &ike, &HostXfrm::default(), None);
    assert_eq!(d.findings[0].code, Code::IkeDaemonDown);
    assert!(d.findings[0].message.contains("charon does not answer"));
}

#[test]
fn classify_names_the_three_classic_failures() {
    assert_eq!(
        ike::classify("IKE_SA_INIT: NO_PROPOSAL_CHOSEN"),
        Some("no proposal chosen")
    );
    assert_eq!(
        ike::classify("giving up after 5 retransmits"),
        Some("peer not answering")
    );
    assert_eq!(ike::classify("cannot load"), None);
}

#[test]
fn reports_in_text_and_json_never_show_the_psk() {
    let t = tunnel(false);
    let host = Host {
        kind: BackendKind::None,
        ike: &IkeView::NotReported,
        xfrm: Err("no XFRM"),
        sampled: None,
        packet_mark: 0,
        nft: Err("no nft"),
    };
    let bad = diagnose(
        &TunnelInput {
            tunnel: &t,
            live: None,
            apply_error: None,
            local: None,
            reads: &quiet_reads(&tunnel(true)),
        },
        &host,
    );
    assert_eq!(bad.state, "invalid");
    assert_eq!(codes(&bad), ["invalid-config"]);
    let good = static_run(ours());
    let all = [good.clone(), bad.clone()];
    let text = report::render(&all, false, false);
    assert!(
        text.starts_with("gnv0: up, no problem found (10 layers checked)\ngnv0: invalid\n  FAIL OVSDB row  invalid: remote_ip is not an IP address\n  error invalid-config: "),
        "{text}"
    );
    let one = report::render(std::slice::from_ref(&good), false, true);
    assert!(
        one.contains("  ok   policy out") && one.ends_with("  no problem found\n"),
        "{one}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&report::render(&all, true, false)).unwrap_or_default();
    assert_eq!(json[0]["findings"], serde_json::json!([]));
    let f = &json[1]["findings"][0];
    assert_eq!(
        (&f["code"], &f["severity"], json[1]["state"].as_str()),
        (&"invalid-config".into(), &"error".into(), Some("invalid"))
    );
    let keys: Vec<&String> = f
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["code", "hint", "message", "severity"]);
    for out in [text, one, json.to_string()] {
        assert!(!out.contains("hunter2"), "{out}");
    }
}

#[test]
fn the_documentation_lists_every_code_in_order_and_nothing_else() {
    let doc = include_str!("../../docs/troubleshooting.md");
    let documented: Vec<&str> = doc.lines().filter_map(|l| l.strip_prefix("### ")).collect();
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(documented, codes);
    for entry in doc.split("\n### ").skip(1) {
        assert!(
            entry.contains("Cause:") && entry.contains("Fix:"),
            "an entry without its cause or fix: {entry}"
        );
    }
    let man = include_str!("../../docs/ovs-monitor-ipsec.8").replace("\\-", "-");
    for c in codes {
        assert!(man.contains(c), "{c} missing from ovs-monitor-ipsec(8)");
    }
}
