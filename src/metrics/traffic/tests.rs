use std::sync::Arc;

use super::*;
use crate::model::{Auth, DesiredTunnel, Secret, TunnelConf};

fn desired(tunnels: &[(&str, TunnelType, &str)]) -> Desired {
    let mut d = Desired::default();
    for (name, kind, remote) in tunnels {
        let mut conf = TunnelConf::new(
            *name,
            *kind,
            remote.parse().unwrap(),
            Auth::Psk(Secret::new("x")),
        );
        conf.local_ip = Some("192.0.2.1".parse().unwrap());
        d.tunnels.insert(
            name.to_string(),
            DesiredTunnel {
                version: 1,
                conf: Arc::new(conf),
            },
        );
    }
    d
}

fn sa(src: &str, dst: &str, spi: u32, proto: u8, dport: u16, bytes: u64) -> HostSa {
    HostSa {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        spi,
        proto: 50,
        reqid: 0,
        sel_proto: proto,
        sel_sport: 0,
        sel_dport: dport,
        bytes,
        packets: bytes / 100,
    }
}

#[test]
fn sas_match_by_address_and_selector_and_count_both_directions() {
    let d = desired(&[
        ("gre0", TunnelType::Gre, "192.0.2.2"),
        ("gnv0", TunnelType::Geneve, "192.0.2.2"),
        ("vx0", TunnelType::Vxlan, "192.0.2.3"),
    ]);
    let mut v = KernelView::default();
    let sas = [
        sa("192.0.2.1", "192.0.2.2", 1, IPPROTO_GRE, 0, 1000),
        sa("192.0.2.2", "192.0.2.1", 2, IPPROTO_GRE, 0, 2000),
        sa("192.0.2.1", "192.0.2.2", 3, IPPROTO_UDP, 6081, 300),
        // Same address pair, selector "any": cannot be told apart, left out.
        sa("192.0.2.1", "192.0.2.2", 4, 0, 0, 99_900),
        // One tunnel to this peer: its SAs need no selector.
        sa("192.0.2.3", "192.0.2.1", 5, 0, 0, 500),
        // Nobody's.
        sa("198.51.100.1", "192.0.2.1", 6, 0, 0, 700),
    ];
    assert!(v.update_sas(&d, &sas).is_empty());
    let gre = v.traffic_of("gre0").unwrap();
    assert_eq!((gre.outbound.bytes, gre.inbound.bytes), (1000, 2000));
    assert_eq!(v.traffic_of("gnv0").unwrap().outbound.bytes, 300);
    let vx = v.traffic_of("vx0").unwrap();
    assert_eq!((vx.inbound.bytes, vx.inbound.packets), (500, 5));
}

#[test]
fn totals_survive_a_rekey_and_removed_tunnels_are_forgotten() {
    let d = desired(&[("gre0", TunnelType::Gre, "192.0.2.2")]);
    let mut v = KernelView::default();
    v.update_sas(&d, &[sa("192.0.2.1", "192.0.2.2", 1, IPPROTO_GRE, 0, 1000)]);
    v.update_sas(&d, &[sa("192.0.2.1", "192.0.2.2", 1, IPPROTO_GRE, 0, 1500)]);
    assert_eq!(v.traffic_of("gre0").unwrap().outbound.bytes, 1500);
    // Rekeyed: the old SA is gone, the new one starts from zero.
    let rekeyed = v.update_sas(&d, &[sa("192.0.2.1", "192.0.2.2", 9, IPPROTO_GRE, 0, 200)]);
    assert_eq!(rekeyed, vec!["gre0".to_string()]);
    assert_eq!(v.traffic_of("gre0").unwrap().outbound.bytes, 1700);
    v.update_sas(&desired(&[]), &[]);
    assert_eq!(v.traffic_of("gre0"), None);
}
