use super::*;
use crate::model::{Auth, Secret, TunnelType};

fn conf(kind: TunnelType) -> TunnelConf {
    TunnelConf::new(
        "tun0",
        kind,
        "192.0.2.2".parse().unwrap(),
        Auth::Psk(Secret::new("x")),
    )
}

const ENDS: Endpoints = Endpoints {
    local: Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1))),
    remote: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)),
};

/// A ruleset of one table with `chains` (name, hook/type/policy JSON) and `rules` (chain,
/// handle, expressions), in `nft -j list ruleset` shape.
fn ruleset(
    family: &str,
    table: &str,
    chains: &[(&str, &str)],
    rules: &[(&str, u64, &str)],
) -> Ruleset {
    let mut objs = vec![format!(
        r#"{{"table": {{"family": "{family}", "name": "{table}", "handle": 1}}}}"#
    )];
    for (name, base) in chains {
        let base = if base.is_empty() {
            String::new()
        } else {
            format!(", {base}")
        };
        objs.push(format!(
            r#"{{"chain": {{"family": "{family}", "table": "{table}", "name": "{name}", "handle": 1{base}}}}}"#
        ));
    }
    for (chain, handle, expr) in rules {
        objs.push(format!(
            r#"{{"rule": {{"family": "{family}", "table": "{table}", "chain": "{chain}", "handle": {handle}, "expr": [{expr}]}}}}"#
        ));
    }
    Ruleset::parse(&format!(r#"{{"nftables": [{}]}}"#, objs.join(","))).unwrap()
}

const INPUT_DROP: &str = r#""type": "filter", "hook": "input", "prio": 0, "policy": "drop""#;
const INPUT: &str = r#""type": "filter", "hook": "input", "prio": 0, "policy": "accept""#;
const POST_NAT: &str = r#""type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept""#;
const SADDR_PEER: &str = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.0.2.2"}}"#;
const DPORT_IKE: &str = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"set": [500, 4500]}}}"#;
const CT_EST: &str = r#"{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}"#;
const IIF_LO: &str =
    r#"{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}"#;

fn codes(f: &[Finding]) -> Vec<(Code, Severity)> {
    f.iter().map(|f| (f.code, f.severity)).collect()
}

/// A ruleset whose only rule, handle 7, is `expr` in an `input` chain (policy accept).
fn input_rule(expr: &str) -> Ruleset {
    ruleset("inet", "filter", &[("input", INPUT)], &[("input", 7, expr)])
}

#[test]
fn a_drop_on_ike_from_the_peer_is_an_error() {
    let rs = input_rule(&format!(r#"{SADDR_PEER}, {DPORT_IKE}, {{"drop": null}}"#));
    let f = check(&conf(TunnelType::Geneve), ENDS, &rs);
    assert_eq!(codes(&f), [(Code::FirewallBlocksIke, Severity::Error)]);
    assert!(f[0].message.contains("handle 7"), "{}", f[0].message);
    // Another peer's drop does not concern us.
    let other = SADDR_PEER.replace("192.0.2.2", "192.0.2.99");
    let rs = input_rule(&format!(r#"{other}, {DPORT_IKE}, {{"drop": null}}"#));
    assert!(check(&conf(TunnelType::Geneve), ENDS, &rs).is_empty());
}

#[test]
fn an_accept_for_ike_before_a_policy_drop_clears_it_and_unknown_matches_are_warnings() {
    let accept_ike = format!(r#"{DPORT_IKE}, {{"accept": null}}"#);
    let ct = format!(r#"{CT_EST}, {{"accept": null}}"#);
    let lo = format!(r#"{IIF_LO}, {{"accept": null}}"#);
    let rs = ruleset(
        "inet",
        "filter",
        &[("input", INPUT_DROP)],
        &[
            ("input", 4, &ct),
            ("input", 5, &lo),
            ("input", 6, &accept_ike),
        ],
    );
    assert!(check(&conf(TunnelType::Vxlan), ENDS, &rs).is_empty());
    // Without the IKE accept, the policy drop may take IKE: ct state and iifname cannot be
    // evaluated, so it is a warning naming them.
    let rs = ruleset(
        "inet",
        "filter",
        &[("input", INPUT_DROP)],
        &[("input", 4, &ct), ("input", 5, &lo)],
    );
    let f = check(&conf(TunnelType::Vxlan), ENDS, &rs);
    assert_eq!(codes(&f), [(Code::FirewallBlocksIke, Severity::Warning)]);
    assert!(
        f[0].message.contains("policy drop") && f[0].message.contains("may match"),
        "{}",
        f[0].message
    );
    assert!(
        f[0].message.contains("handle 4") && f[0].message.contains("handle 5"),
        "{}",
        f[0].message
    );
    // A bare policy drop is an error.
    let rs = ruleset("inet", "filter", &[("input", INPUT_DROP)], &[]);
    assert_eq!(
        codes(&check(&conf(TunnelType::Vxlan), ENDS, &rs)),
        [(Code::FirewallBlocksIke, Severity::Error)]
    );
}

#[test]
fn nat_on_the_tunnel_port_or_gre_and_not_on_other_traffic() {
    let masq_peer = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "192.0.2.0", "len": 24}}}}, {"masquerade": null}"#;
    let rs = ruleset(
        "ip",
        "nat",
        &[("post", POST_NAT)],
        &[("post", 2, masq_peer)],
    );
    for kind in [TunnelType::Geneve, TunnelType::Gre] {
        let f = check(&conf(kind), ENDS, &rs);
        assert_eq!(
            codes(&f),
            [(Code::NatOnTunnelPort, Severity::Error)],
            "{kind}"
        );
        assert!(f[0].message.contains("masquerade"), "{}", f[0].message);
    }
    // Only GRE is NATed: UDP tunnels are untouched.
    let gre = r#"{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "gre"}}, {"snat": {"addr": "1.2.3.4"}}"#;
    let rs = ruleset("ip", "nat", &[("post", POST_NAT)], &[("post", 3, gre)]);
    assert!(check(&conf(TunnelType::Vxlan), ENDS, &rs).is_empty());
    assert_eq!(
        codes(&check(&conf(TunnelType::Gre), ENDS, &rs)),
        [(Code::NatOnTunnelPort, Severity::Error)]
    );
    // A port range covering 6081 but not 4789; the exempted peer is not NATed.
    let range = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"range": [6000, 7000]}}}, {"masquerade": null}"#;
    let rs = ruleset("ip", "nat", &[("post", POST_NAT)], &[("post", 4, range)]);
    assert_eq!(check(&conf(TunnelType::Geneve), ENDS, &rs).len(), 1);
    assert!(check(&conf(TunnelType::Vxlan), ENDS, &rs).is_empty());
    let exempt = r#"{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.2"}}, {"masquerade": null}"#;
    let rs = ruleset("ip", "nat", &[("post", POST_NAT)], &[("post", 5, exempt)]);
    // Outbound is exempt; inbound (daddr = us) would match but a postrouting chain never
    // sees inbound packets.
    assert!(check(&conf(TunnelType::Geneve), ENDS, &rs).is_empty());
}

#[test]
fn jumps_are_followed_and_named_sets_resolved() {
    let mut rs = ruleset(
        "inet",
        "filter",
        &[("input", INPUT), ("sub", "")],
        &[
            (
                "input",
                9,
                r#"{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 500}}, {"jump": {"target": "sub"}}"#,
            ),
            (
                "sub",
                11,
                r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@peers"}}, {"counter": null}, {"reject": {"type": "icmp", "expr": "port-unreachable"}}"#,
            ),
        ],
    );
    // Without the set's elements, @peers cannot be evaluated.
    let f = check(&conf(TunnelType::Vxlan), ENDS, &rs);
    assert_eq!(codes(&f), [(Code::FirewallBlocksIke, Severity::Warning)]);
    assert!(f[0].message.contains("ip saddr @peers"), "{}", f[0].message);
    rs.sets.insert(
        ("inet".into(), "filter".into(), "peers".into()),
        vec!["192.0.2.2".into()],
    );
    let f = check(&conf(TunnelType::Vxlan), ENDS, &rs);
    assert_eq!(codes(&f), [(Code::FirewallBlocksIke, Severity::Error)]);
    assert!(
        f[0].message.contains("chain sub handle 11"),
        "{}",
        f[0].message
    );
}

#[test]
fn our_guard_table_bridge_tables_and_ipv6_only_tables_are_not_reported() {
    let drop_all = r#"{"drop": null}"#;
    for (family, table) in [("inet", OWN_TABLE), ("bridge", "filter"), ("ip6", "filter")] {
        let rs = ruleset(
            family,
            table,
            &[("input", INPUT)],
            &[("input", 1, drop_all)],
        );
        assert!(
            check(&conf(TunnelType::Geneve), ENDS, &rs).is_empty(),
            "{family} {table}"
        );
    }
    // The same rule in an ip table is found.
    let rs = ruleset(
        "ip",
        "filter",
        &[("input", INPUT)],
        &[("input", 1, drop_all)],
    );
    assert_eq!(check(&conf(TunnelType::Geneve), ENDS, &rs).len(), 1);
}

#[test]
fn iptables_extensions_and_unknown_local_addresses_are_may_match() {
    let xt = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 4500}}, {"xt": {"type": "match", "name": "multiport"}}, {"drop": null}"#;
    let rs = ruleset("ip", "filter", &[("input", INPUT)], &[("input", 1, xt)]);
    let f = check(&conf(TunnelType::Geneve), ENDS, &rs);
    assert_eq!(codes(&f), [(Code::FirewallBlocksIke, Severity::Warning)]);
    assert!(f[0].message.contains("xt"), "{}", f[0].message);
    let to_me = r#"{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.1"}}, {"drop": null}"#;
    let rs = ruleset("ip", "filter", &[("input", INPUT)], &[("input", 1, to_me)]);
    assert_eq!(
        codes(&check(&conf(TunnelType::Geneve), ENDS, &rs)),
        [(Code::FirewallBlocksIke, Severity::Error)]
    );
    let unknown_local = Endpoints {
        local: None,
        ..ENDS
    };
    assert_eq!(
        codes(&check(&conf(TunnelType::Geneve), unknown_local, &rs)),
        [(Code::FirewallBlocksIke, Severity::Warning)]
    );
}

#[test]
fn malformed_json_is_a_parse_error() {
    assert!(matches!(Ruleset::parse("{"), Err(NftError::Parse(_))));
    assert!(Ruleset::parse(r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}]}"#).is_ok());
}
