use super::*;
use crate::diagnose::route::LinkInfo;
use crate::model::{Auth, Secret};

const GCM: Esp = Esp::AES_GCM_16;
const CBC_SHA1: Esp = Esp {
    iv: 16,
    block: 16,
    icv: 12,
};
const CBC_SHA256: Esp = Esp {
    iv: 16,
    block: 16,
    icv: 16,
};
const DES3_SHA1: Esp = Esp {
    iv: 8,
    block: 8,
    icv: 12,
};

const NONE: GreFlags = GreFlags {
    key: false,
    csum: false,
    seq: false,
};
const KEY: GreFlags = GreFlags {
    key: true,
    csum: false,
    seq: false,
};
const KEY_CSUM: GreFlags = GreFlags {
    key: true,
    csum: true,
    seq: false,
};
const ALL: GreFlags = GreFlags {
    key: true,
    csum: true,
    seq: true,
};

fn input(kind: TunnelType, family: Family, natt: bool, esp: Esp, path: u32) -> MtuInput {
    MtuInput {
        kind,
        family,
        esp,
        esp_assumed: false,
        natt,
        gre: GreFlags::default(),
        geneve_options: 0,
        path_mtu: Some(path),
        ports: Vec::new(),
    }
}

/// tunnel type, GRE flags, Geneve options, family, NAT-T, ESP, path MTU, inner MTU.
type Row = (TunnelType, GreFlags, u32, Family, bool, Esp, u32, u32);

/// Hand computation: avail = P - IP(20|40) - NAT-T(0|8) - ESP hdr 8 - IV - ICV;
/// payload = floor(avail / block) * block - 2; inner = payload - tunnel header - 14.
///
/// | tunnel            | IP | NAT-T | ESP          | P    | avail | aligned | payload | hdr | inner |
/// |-------------------|----|-------|--------------|------|-------|---------|---------|-----|-------|
/// | vxlan             | v4 | -     | GCM-16       | 1500 | 1448  | 1448    | 1446    | 16  | 1416  |
/// | geneve            | v4 | -     | GCM-16       | 1500 | 1448  | 1448    | 1446    | 16  | 1416  |
/// | geneve +8 opts    | v4 | -     | GCM-16       | 1500 | 1448  | 1448    | 1446    | 24  | 1408  |
/// | gre               | v4 | -     | GCM-16       | 1500 | 1448  | 1448    | 1446    | 4   | 1428  |
/// | gre key           | v4 | -     | GCM-16       | 1500 | 1448  | 1448    | 1446    | 8   | 1424  |
/// | gre key csum      | v4 | -     | GCM-16       | 1500 | 1448  | 1448    | 1446    | 12  | 1420  |
/// | gre key csum seq  | v4 | -     | GCM-16       | 1500 | 1448  | 1448    | 1446    | 16  | 1416  |
/// | vxlan             | v4 | 8     | GCM-16       | 1500 | 1440  | 1440    | 1438    | 16  | 1408  |
/// | geneve            | v4 | 8     | GCM-16       | 1500 | 1440  | 1440    | 1438    | 16  | 1408  |
/// | gre               | v4 | 8     | GCM-16       | 1500 | 1440  | 1440    | 1438    | 4   | 1420  |
/// | gre key           | v4 | 8     | GCM-16       | 1500 | 1440  | 1440    | 1438    | 8   | 1416  |
/// | vxlan             | v6 | -     | GCM-16       | 1500 | 1428  | 1428    | 1426    | 16  | 1396  |
/// | geneve            | v6 | -     | GCM-16       | 1500 | 1428  | 1428    | 1426    | 16  | 1396  |
/// | gre               | v6 | -     | GCM-16       | 1500 | 1428  | 1428    | 1426    | 4   | 1408  |
/// | gre key           | v6 | -     | GCM-16       | 1500 | 1428  | 1428    | 1426    | 8   | 1404  |
/// | vxlan             | v6 | 8     | GCM-16       | 1500 | 1420  | 1420    | 1418    | 16  | 1388  |
/// | geneve            | v6 | 8     | GCM-16       | 1500 | 1420  | 1420    | 1418    | 16  | 1388  |
/// | gre               | v6 | 8     | GCM-16       | 1500 | 1420  | 1420    | 1418    | 4   | 1400  |
/// | vxlan             | v4 | -     | GCM-16       | 1499 | 1447  | 1444    | 1442    | 16  | 1412  |
/// | vxlan             | v4 | -     | GCM-16       | 9000 | 8948  | 8948    | 8946    | 16  | 8916  |
/// | vxlan             | v4 | -     | AES-CBC sha1 | 1500 | 1444  | 1440    | 1438    | 16  | 1408  |
/// | gre               | v4 | -     | AES-CBC sha1 | 1500 | 1444  | 1440    | 1438    | 4   | 1420  |
/// | vxlan             | v6 | -     | CBC sha256   | 1500 | 1420  | 1408    | 1406    | 16  | 1376  |
/// | gre               | v6 | 8     | CBC sha256   | 1500 | 1412  | 1408    | 1406    | 4   | 1388  |
/// | vxlan             | v4 | -     | 3DES sha1    | 1500 | 1452  | 1448    | 1446    | 16  | 1416  |
///
/// (GCM-16: IV 8, ICV 16, block 4; AES-CBC: IV 16, block 16, ICV 12 for sha1_96 and 16 for
/// sha256_128; 3DES: IV 8, block 8.)
#[test]
fn inner_mtu_matches_the_hand_computed_table() {
    use Family::{V4, V6};
    use TunnelType::{Geneve, Gre, Vxlan};
    #[rustfmt::skip]
    let table: &[Row] = &[
        (Vxlan,  NONE,     0, V4, false, GCM, 1500, 1416),
        (Geneve, NONE,     0, V4, false, GCM, 1500, 1416),
        (Geneve, NONE,     8, V4, false, GCM, 1500, 1408),
        (Gre,    NONE,     0, V4, false, GCM, 1500, 1428),
        (Gre,    KEY,      0, V4, false, GCM, 1500, 1424),
        (Gre,    KEY_CSUM, 0, V4, false, GCM, 1500, 1420),
        (Gre,    ALL,      0, V4, false, GCM, 1500, 1416),
        (Vxlan,  NONE,     0, V4, true,  GCM, 1500, 1408),
        (Geneve, NONE,     0, V4, true,  GCM, 1500, 1408),
        (Gre,    NONE,     0, V4, true,  GCM, 1500, 1420),
        (Gre,    KEY,      0, V4, true,  GCM, 1500, 1416),
        (Vxlan,  NONE,     0, V6, false, GCM, 1500, 1396),
        (Geneve, NONE,     0, V6, false, GCM, 1500, 1396),
        (Gre,    NONE,     0, V6, false, GCM, 1500, 1408),
        (Gre,    KEY,      0, V6, false, GCM, 1500, 1404),
        (Vxlan,  NONE,     0, V6, true,  GCM, 1500, 1388),
        (Geneve, NONE,     0, V6, true,  GCM, 1500, 1388),
        (Gre,    NONE,     0, V6, true,  GCM, 1500, 1400),
        (Vxlan,  NONE,     0, V4, false, GCM, 1499, 1412),
        (Vxlan,  NONE,     0, V4, false, GCM, 9000, 8916),
        (Vxlan,  NONE,     0, V4, false, CBC_SHA1, 1500, 1408),
        (Gre,    NONE,     0, V4, false, CBC_SHA1, 1500, 1420),
        (Vxlan,  NONE,     0, V6, false, CBC_SHA256, 1500, 1376),
        (Gre,    NONE,     0, V6, true,  CBC_SHA256, 1500, 1388),
        (Vxlan,  NONE,     0, V4, false, DES3_SHA1, 1500, 1416),
    ];
    for &(kind, gre, opts, family, natt, esp, path, want) in table {
        let mut i = input(kind, family, natt, esp, path);
        i.gre = gre;
        i.geneve_options = opts;
        assert_eq!(
            i.inner_mtu(),
            Some(want),
            "{kind} {gre:?} opts {opts} {family} natt {natt} {esp:?} path {path}"
        );
    }
}

#[test]
fn nothing_fits_or_no_path_gives_no_figure() {
    let mut i = input(TunnelType::Vxlan, Family::V6, true, GCM, 100);
    assert_eq!(i.inner_mtu(), None);
    i.path_mtu = None;
    assert_eq!(i.inner_mtu(), None);
}

#[test]
fn proposals_in_both_daemons_syntax() {
    for (p, want) in [
        ("aes256gcm16-modp2048", Some(GCM)),
        ("aes128gcm16", Some(GCM)),
        ("aes128gcm128", Some(GCM)),
        ("aes_gcm256", Some(GCM)),
        ("aes_gcm", Some(GCM)),
        ("aes_gcm_c-null", Some(GCM)),
        ("aes_gcm_16_256", Some(GCM)),
        ("chacha20poly1305", Some(GCM)),
        ("chacha20_poly1305-null", Some(GCM)),
        ("aes256gcm12", Some(Esp { icv: 12, ..GCM })),
        ("aes_gcm_b", Some(Esp { icv: 12, ..GCM })),
        ("aes128gcm8", Some(Esp { icv: 8, ..GCM })),
        ("aes_gcm_a", Some(Esp { icv: 8, ..GCM })),
        ("aes128-sha1", Some(CBC_SHA1)),
        ("aes256-sha256-modp2048, aes128-sha1", Some(CBC_SHA256)),
        ("AES-SHA2_256", Some(CBC_SHA256)),
        ("aes-sha2", Some(CBC_SHA256)),
        (
            "aes256-sha2_512",
            Some(Esp {
                icv: 32,
                ..CBC_SHA1
            }),
        ),
        (
            "aes128-sha384",
            Some(Esp {
                icv: 24,
                ..CBC_SHA1
            }),
        ),
        ("3des-sha1", Some(DES3_SHA1)),
        ("aes128ctr-sha256", Some(Esp { icv: 16, ..GCM })),
        ("aes128", None),
        ("serpent-sha1", None),
        ("aes128gcm17", None),
        ("", None),
    ] {
        assert_eq!(Esp::from_proposal(p), want, "{p}");
    }
}

fn conf(kind: TunnelType, custom: &[(&str, &str)]) -> TunnelConf {
    let mut c = TunnelConf::new(
        "tun",
        kind,
        "192.0.2.2".parse().unwrap(),
        Auth::Psk(Secret::new("x")),
    );
    for (k, v) in custom {
        c.custom.insert((*k).into(), (*v).into());
    }
    c
}

#[test]
fn configuration_gives_the_transform_and_forced_natt() {
    let vx = TunnelType::Vxlan;
    assert_eq!(configured(&conf(vx, &[])), (GCM, false, false));
    assert_eq!(
        configured(&conf(
            vx,
            &[("esp", "aes128-sha1"), ("encapsulation", "yes")]
        )),
        (CBC_SHA1, false, true)
    );
    assert_eq!(
        configured(&conf(vx, &[("esp", "what"), ("forceencaps", "yes")])),
        (Esp::WORST, true, true)
    );
    assert_eq!(
        configured(&conf(vx, &[("encapsulation", "no")])),
        (GCM, false, false)
    );
    let opts: StringMap = [("key", "flow"), ("csum", "true"), ("seq", "false")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    assert_eq!(GreFlags::from_options(&opts), KEY_CSUM);
    assert_eq!(GreFlags::from_options(&StringMap::default()), NONE);
}

#[test]
fn a_port_larger_than_the_inner_mtu_is_an_error_naming_it() {
    let mut i = input(TunnelType::Geneve, Family::V4, false, GCM, 1500);
    i.ports = vec![
        ("vm1".into(), 1500),
        ("vm2".into(), 1416),
        ("br-int".into(), 1400),
    ];
    let f = check(&conf(TunnelType::Geneve, &[]), &i);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].code, f[0].severity),
        (Code::MtuExceedsPath, Severity::Error)
    );
    assert!(f[0].message.contains("vm1 has MTU 1500") && f[0].message.contains("1416"));
    assert!(f[0].hint.contains("mtu_request=1416"), "{}", f[0].hint);
    i.esp_assumed = true;
    assert!(
        check(&conf(TunnelType::Geneve, &[]), &i)[0]
            .message
            .contains("not understood")
    );
    i.path_mtu = None;
    assert!(check(&conf(TunnelType::Geneve, &[]), &i).is_empty());
}

#[test]
fn datapath_tunnel_devices_are_not_ports_behind_the_tunnel() {
    let link = |name: &str, kind: Option<&str>, mtu| Link {
        ifname: name.into(),
        mtu,
        linkinfo: Some(LinkInfo {
            info_kind: kind.map(Into::into),
        }),
    };
    let links = [
        link("genev_sys_6081", Some("geneve"), 65000),
        link("vxlan_sys_4789", Some("vxlan"), 65000),
        link("gre_sys", Some("gretap"), 65000),
        link("br-int", Some("openvswitch"), 1500),
        link("tap0", Some("tun"), 9000),
        link("veth0", None, 1400),
    ];
    assert_eq!(
        datapath_ports(&links),
        [
            ("br-int".to_owned(), 1500),
            ("tap0".to_owned(), 9000),
            ("veth0".to_owned(), 1400)
        ]
    );
}
