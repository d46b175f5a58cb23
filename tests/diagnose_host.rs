//! The host checks of `diagnose` on real set-ups: their gatherers run inside network
//! namespaces with veth pairs and real MTUs and routes (`peer-unreachable`,
//! `mtu-exceeds-path`) and real nftables rules (`nat-on-tunnel-port`, `firewall-blocks-ike`).

mod common;

use std::time::Duration;

use common::monitor::{launch, wait_for};
use common::netns::{NetnsPair, ip, run_inside};
use common::ovsdb_server::OvsdbServer;
use common::xfrm::Netns;
use ovs_monitor_ipsec::backend::initiator;
use ovs_monitor_ipsec::diagnose::mtu::{self, MtuInput};
use ovs_monitor_ipsec::diagnose::nft;
use ovs_monitor_ipsec::diagnose::route::{self, RouteAnswer};
use ovs_monitor_ipsec::diagnose::{Code, Severity};
use ovs_monitor_ipsec::model::{Auth, Family, Secret, TunnelConf, TunnelType};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the future on a runtime of a thread inside `ns`.
fn in_ns<T: Send>(ns: &str, fut: impl std::future::Future<Output = T> + Send) -> T {
    run_inside(ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    })
}

fn conf(kind: TunnelType, remote: &str, local: Option<&str>) -> TunnelConf {
    let mut c = TunnelConf::new(
        "tun0",
        kind,
        remote.parse().unwrap(),
        Auth::Psk(Secret::new("not-shown")),
    );
    c.local_ip = local.map(|l| l.parse().unwrap());
    c
}

fn lookup(ns: &str, c: &TunnelConf) -> RouteAnswer {
    in_ns(ns, route::lookup(c.remote_ip, c.local_ip, TIMEOUT)).unwrap()
}

/// The route findings of `c` as diagnose gathers them inside `ns`.
fn route_findings(ns: &str, c: &TunnelConf) -> Vec<(Code, Severity)> {
    route::check(c, &lookup(ns, c))
        .iter()
        .map(|f| (f.code, f.severity))
        .collect()
}

#[test]
fn peer_unreachable_without_a_route_or_from_a_foreign_local_ip() {
    // A namespace with only loopback: no route to anything else.
    let lonely = Netns::new();
    let c = conf(TunnelType::Geneve, "198.51.100.7", None);
    let answer = lookup(&lonely.name, &c);
    assert!(
        matches!(&answer, RouteAnswer::NoRoute(r) if r.contains("unreachable")),
        "{answer:?}"
    );
    let error = [(Code::PeerUnreachable, Severity::Error)];
    assert_eq!(route_findings(&lonely.name, &c), error);

    // Reachable over the veth; the kernel picks 192.0.2.1 as source.
    let pair = NetnsPair::new("dgr");
    let ns = pair.left.as_str();
    let c = conf(TunnelType::Vxlan, "192.0.2.2", Some("192.0.2.1"));
    let answer = lookup(ns, &c);
    let RouteAnswer::Route(r) = &answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        (r.dev.as_str(), r.source),
        ("v0", Some("192.0.2.1".parse().unwrap()))
    );
    assert_eq!(route_findings(ns, &c), []);
    // local_ip is not an address of this host: nothing can leave from it.
    let c = conf(TunnelType::Vxlan, "192.0.2.2", Some("192.0.2.77"));
    assert_eq!(route_findings(ns, &c), error);
    // local_ip is ours but the route to the peer prefers another source: a warning.
    ip(&["-n", ns, "addr", "add", "10.7.0.1/32", "dev", "lo"]);
    let c = conf(TunnelType::Vxlan, "192.0.2.2", Some("10.7.0.1"));
    assert_eq!(
        route_findings(ns, &c),
        [(Code::PeerUnreachable, Severity::Warning)]
    );
    // An `unreachable` route is no route either.
    ip(&["-n", ns, "route", "add", "unreachable", "203.0.113.0/24"]);
    let c = conf(TunnelType::Vxlan, "203.0.113.5", None);
    assert!(matches!(lookup(ns, &c), RouteAnswer::NoRoute(_)));
    assert_eq!(route_findings(ns, &c), error);
}

/// The MTU input as `diagnose` builds it: configuration, route and datapath ports.
fn gather(ns: &str, c: &TunnelConf) -> MtuInput {
    let (answer, ports) = in_ns(ns, async {
        (
            route::lookup(c.remote_ip, c.local_ip, TIMEOUT)
                .await
                .unwrap(),
            mtu::read_ports(TIMEOUT).await.unwrap(),
        )
    });
    let path = match answer {
        RouteAnswer::Route(r) => r.path_mtu(),
        RouteAnswer::NoRoute(_) => None,
    };
    // The socket probe `tunnels/show` uses sees the same path MTU as `ip route get`.
    let probe = run_inside(ns, || initiator::probe(c.remote_ip));
    assert_eq!(probe.and_then(|p| p.mtu), path);
    mtu::input_for(c, &Default::default(), path, ports)
}

/// The uplink `v0` of `ns` at MTU 1400, and a datapath stand-in (a bridge named like the
/// kernel datapath, so no ovs-vswitchd is needed) with one port `vm1` at 1500.
fn narrow_uplink_and_datapath(ns: &str) {
    ip(&["-n", ns, "link", "set", "v0", "mtu", "1400"]);
    ip(&["-n", ns, "link", "add", "ovs-system", "type", "bridge"]);
    ip(&[
        "-n", ns, "link", "add", "vm1", "type", "veth", "peer", "name", "vm1p",
    ]);
    ip(&["-n", ns, "link", "set", "vm1", "master", "ovs-system"]);
}

#[test]
fn mtu_exceeds_path_from_real_device_and_route_mtus() {
    let pair = NetnsPair::new("dgm");
    let ns = pair.left.as_str();
    // The uplink is 1400; a datapath stand-in with one port at 1500 and one of the
    // datapath's own tunnel devices at 65000.
    narrow_uplink_and_datapath(ns);
    ip(&[
        "-n",
        ns,
        "link",
        "add",
        "vxlan_sys_4789",
        "mtu",
        "65000",
        "type",
        "vxlan",
        "dstport",
        "4789",
        "external",
    ]);
    ip(&[
        "-n",
        ns,
        "link",
        "set",
        "vxlan_sys_4789",
        "master",
        "ovs-system",
    ]);

    let c = conf(TunnelType::Geneve, "192.0.2.2", Some("192.0.2.1"));
    let input = gather(ns, &c);
    assert_eq!(input.path_mtu, Some(1400));
    assert_eq!(input.family, Family::V4);
    assert_eq!(input.ports, [("vm1".to_owned(), 1500)]);
    // 1400 - 20 - 8 - 8 - 16 = 1348 (aligned to 4), - 2 = 1346, - 16 - 14 = 1316.
    assert_eq!(input.inner_mtu(), Some(1316));
    let f = mtu::check(&c, &input);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].code, f[0].severity),
        (Code::MtuExceedsPath, Severity::Error)
    );
    assert!(
        f[0].message.contains("vm1 has MTU 1500"),
        "{}",
        f[0].message
    );

    // The advice applied, the finding is gone.
    ip(&["-n", ns, "link", "set", "vm1", "mtu", "1316"]);
    assert!(mtu::check(&c, &gather(ns, &c)).is_empty());

    // A route MTU below the device's wins; forced NAT-T costs 8 more.
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.2",
        "mtu",
        "1300",
    ]);
    let mut c = conf(TunnelType::Vxlan, "198.51.100.9", None);
    c.custom.insert("encapsulation".into(), "yes".into());
    let input = gather(ns, &c);
    assert_eq!(input.path_mtu, Some(1300));
    // 1300 - 20 - 8 - 8 - 8 - 16 = 1240, - 2 = 1238, - 16 - 14 = 1208.
    assert_eq!(input.inner_mtu(), Some(1208));
    let f = mtu::check(&c, &input);
    assert!(f[0].message.contains("1208"), "{f:?}");
}

#[test]
fn no_datapath_means_no_ports() {
    let lonely = Netns::new();
    assert!(
        in_ns(&lonely.name, mtu::read_ports(TIMEOUT))
            .unwrap()
            .is_empty()
    );
}

/// `nft -f -` inside `ns`.
fn nft_load(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft (tests/deps/xfrm.packages)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f: {script}");
}

fn nft_findings(ns: &str, c: &TunnelConf) -> Vec<(Code, Severity, String)> {
    let rs = in_ns(ns, nft::read(TIMEOUT)).unwrap();
    let ends = nft::Endpoints {
        local: c.local_ip,
        remote: c.remote_ip,
    };
    nft::check(c, ends, &rs)
        .into_iter()
        .map(|f| (f.code, f.severity, f.message))
        .collect()
}

#[test]
fn real_nft_rules_nat_the_tunnel_and_block_ike() {
    let ns = Netns::new();
    let c = conf(TunnelType::Geneve, "192.0.2.2", Some("192.0.2.1"));
    // Our own guard table (static backend) and a healthy host firewall: nothing to report.
    nft_load(
        &ns.name,
        "table inet ovs_ipsec {
           chain input { type filter hook input priority raw; policy accept;
             meta l4proto udp drop
           }
         }
         table inet filter {
           chain input { type filter hook input priority 0; policy drop;
             ct state established,related accept
             udp dport { 500, 4500 } accept
           }
         }",
    );
    assert_eq!(nft_findings(&ns.name, &c), []);

    // A masquerade rule for the peer's subnet catches the Geneve traffic; a drop of IKE from
    // the peer placed before the accept blocks IKE.
    nft_load(
        &ns.name,
        "table ip nat {
           chain post { type nat hook postrouting priority 100;
             ip daddr 192.0.2.0/24 masquerade
           }
         }
         insert rule inet filter input ip saddr 192.0.2.2 udp dport 4500 drop",
    );
    let f = nft_findings(&ns.name, &c);
    let got: Vec<(Code, Severity)> = f.iter().map(|(c, s, _)| (*c, *s)).collect();
    assert_eq!(
        got,
        [
            (Code::NatOnTunnelPort, Severity::Error),
            (Code::FirewallBlocksIke, Severity::Error)
        ],
        "{f:?}"
    );
    assert!(f[0].2.contains("table ip nat chain post"), "{}", f[0].2);

    // Behind an interface match the drop may or may not apply: a warning saying so.
    nft_load(
        &ns.name,
        "flush table ip nat
         flush chain inet filter input
         chain inet filter input { type filter hook input priority 0; policy accept; }
         add rule inet filter input iifname \"eth9\" udp dport 500 reject",
    );
    let f = nft_findings(&ns.name, &c);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].0, f[0].1),
        (Code::FirewallBlocksIke, Severity::Warning)
    );
    assert!(f[0].2.contains("meta iifname"), "{}", f[0].2);
}

#[test]
fn tunnels_show_reports_the_inner_mtu_of_the_path() {
    let pair = NetnsPair::new("dgs");
    ip(&["-n", &pair.left, "link", "set", "v0", "mtu", "1400"]);
    let db = OvsdbServer::start();
    db.add_tunnel("gnv0", "geneve", &["remote_ip=192.0.2.2", "psk=swordfish"]);
    db.add_tunnel(
        "gre0",
        "gre",
        &["remote_ip=192.0.2.2", "psk=swordfish", "key=7"],
    );
    let mon = launch(
        &db,
        &["ip", "netns", "exec", &pair.left],
        "monitor.log",
        &["--ike-daemon=strongswan", "--dry-run"],
    );
    wait_for("both tunnels shown", Duration::from_secs(60), || {
        mon.appctl_ok(&["tunnels/show"])
            .matches("Inner MTU:")
            .count()
            == 2
    });
    let text = mon.appctl_ok(&["tunnels/show"]);
    // 1400 - 20 - 8 - 8 - 16 - 2 = 1346; Geneve: - 16 - 14 = 1316; GRE with key: - 8 - 14 = 1324.
    assert!(text.contains("  Inner MTU:      1316\n"), "{text}");
    assert!(text.contains("  Inner MTU:      1324\n"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&mon.appctl_ok(&["tunnels/show", "--json"])).unwrap();
    let mtus: Vec<&serde_json::Value> = json["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["inner_mtu"])
        .collect();
    assert_eq!(mtus, [&serde_json::json!(1316), &serde_json::json!(1324)]);
}

#[test]
fn diagnose_through_appctl_shows_route_mtu_nat_and_firewall_findings() {
    // The static backend in the left namespace: an uplink of MTU 1400, a datapath stand-in
    // with a 1500 port, a NAT rule on the peer's subnet and a drop of IKE, no route to
    // 198.51.100.0/24.
    let pair = NetnsPair::new("dgd");
    let ns = pair.left.as_str();
    narrow_uplink_and_datapath(ns);
    ip(&["-n", ns, "route", "add", "unreachable", "198.51.100.0/24"]);
    nft_load(
        ns,
        "table ip nat {
           chain post { type nat hook postrouting priority 100;
             ip daddr 192.0.2.0/24 masquerade
           }
         }
         table inet filter {
           chain input { type filter hook input priority 0; policy accept;
             udp dport 500 drop
           }
         }",
    );
    let db = OvsdbServer::start();
    let opts = |remote: &str| {
        [
            format!("remote_ip={remote}"),
            "psk=swordfish-host".to_owned(),
        ]
    };
    db.add_tunnel("gnv0", "geneve", &opts("192.0.2.2"));
    db.add_tunnel("gnv1", "geneve", &opts("198.51.100.7"));
    let mon = launch(
        &db,
        &["ip", "netns", "exec", ns],
        "monitor.log",
        &["--ike-daemon=none"],
    );
    wait_for("both tunnels in diagnose", TIMEOUT, || {
        mon.appctl(&["diagnose", "gnv1"]).status.success()
    });

    let near = mon.diagnose_codes("gnv0");
    for code in [
        "mtu-exceeds-path",
        "nat-on-tunnel-port",
        "firewall-blocks-ike",
    ] {
        assert!(near.iter().any(|c| c == code), "{code} not in {near:?}");
    }
    assert!(!near.iter().any(|c| c == "peer-unreachable"), "{near:?}");
    let far = mon.diagnose_codes("gnv1");
    assert!(far.iter().any(|c| c == "peer-unreachable"), "{far:?}");
    assert!(!far.iter().any(|c| c == "nat-on-tunnel-port"), "{far:?}");

    let text = mon.appctl_ok(&["diagnose", "gnv0"]);
    let line = |name: &str| {
        (text.lines())
            .find(|l| l.get(7..).is_some_and(|l| l.starts_with(name)))
            .unwrap_or_else(|| panic!("no {name} layer in {text}"))
            .to_owned()
    };
    assert!(line("route").starts_with("  ok   route"), "{text}");
    assert!(
        line("route").contains("dev v0 src 192.0.2.1, path MTU 1400"),
        "{text}"
    );
    assert!(line("MTU").starts_with("  FAIL MTU"), "{text}");
    assert!(
        line("MTU").contains("carries 1316 inside (path MTU 1400)"),
        "{text}"
    );
    assert!(line("firewall").starts_with("  FAIL firewall"), "{text}");
    assert!(
        text.contains("error mtu-exceeds-path: vm1 has MTU 1500")
            && text.contains("table ip nat chain post"),
        "{text}"
    );
    assert!(!text.contains("swordfish"), "{text}");
    let text = mon.appctl_ok(&["diagnose", "gnv1"]);
    assert!(
        text.contains("FAIL route")
            && text.contains("no route to 198.51.100.7")
            && text.contains("FAIL MTU")
            && text.contains("not checked: no path MTU toward 198.51.100.7")
            && text.contains("error peer-unreachable: no route to the peer 198.51.100.7"),
        "{text}"
    );
}
