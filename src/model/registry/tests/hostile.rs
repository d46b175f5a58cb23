//! Hostile values and arbitrary rows: rejected with a reason, never turned into a tunnel, and
//! incremental updates equal to full ones.

use super::*;
use crate::model::grammar;
use crate::model::types::Validity;
use crate::model::versions::{self, SavedVersion, SavedVersions};

#[test]
fn hostile_names_are_escaped_in_log_lines() {
    let mut reg = Registry::new();
    let r = psk_row("evil\nTunnel x appeared", "k");
    let events = reg.update(None, [&r], &mut certs());
    for line in texts(&events) {
        assert!(!line.contains('\n'), "{line}");
    }
    assert_eq!(
        events[0].to_string(),
        "Tunnel \"evil\\nTunnel x appeared\" appeared in OVSDB"
    );
}

/// A world in which a hostile value is placed.
#[derive(Clone, Copy, Debug)]
enum World {
    /// No PKI; the tunnel is a PSK vxlan tunnel.
    Psk,
    /// PKI with a CA; the tunnel is a CA-signed gre tunnel.
    Cert,
}

fn hostile_cases() -> Vec<(World, String, String)> {
    use World::*;
    let long = |c: &str, n: usize| c.repeat(n);
    let mut cases: Vec<(World, &str, String)> = vec![
        (Psk, "name", "a\nb".into()),
        (Psk, "name", "a\rb".into()),
        (Psk, "name", "a b".into()),
        (Psk, "name", "-lead".into()),
        (Psk, "name", "tun;x".into()),
        (Psk, "name", "tun$(id)".into()),
        (Psk, "name", "tun`id`".into()),
        (Psk, "name", "ｔun".into()),
        (Psk, "name", "tun#1".into()),
        (Psk, "name", "tun\"q".into()),
        (Psk, "name", "tun\0".into()),
        (Psk, "name", long("a", 64)),
        (Psk, "remote_ip", "192.0.2.1\n".into()),
        (Psk, "remote_ip", "192.0.2.1\r".into()),
        (Psk, "remote_ip", " 192.0.2.1".into()),
        (Psk, "remote_ip", "flow".into()),
        (Psk, "remote_ip", "192.0.2.1;reboot".into()),
        (Psk, "remote_ip", "$(id)".into()),
        (Psk, "remote_ip", "1９2.0.2.1".into()),
        (Psk, "remote_ip", "0.0.0.0".into()),
        (Psk, "remote_ip", "224.0.0.5".into()),
        (Psk, "remote_ip", "255.255.255.255".into()),
        (Psk, "remote_ip", "-1.2.3.4".into()),
        (Psk, "remote_ip", "%any".into()),
        (Psk, "remote_ip", long("1", 5000)),
        (Psk, "local_ip", "%defaultroute".into()),
        (Psk, "local_ip", "flow".into()),
        (Psk, "local_ip", "10.0.0.1\n".into()),
        (Psk, "local_ip", "fd01::1".into()),
        (Psk, "local_ip", "::".into()),
        (Psk, "dst_port", "4789\n".into()),
        (Psk, "dst_port", "-1".into()),
        (Psk, "dst_port", "0x12b5".into()),
        (Psk, "dst_port", "99999".into()),
        (Psk, "dst_port", "٤٧٨٩".into()),
        (Psk, "psk", "a\0b".into()),
        (Psk, "psk", long("x", 1025)),
        (Psk, "ipsec_also", "x".into()),
        (Psk, "ipsec_include", "/etc/passwd".into()),
        (Psk, "ipsec_leftid", "@x".into()),
        (Psk, "ipsec_rightsubnet", "0.0.0.0/0".into()),
        (Psk, "ipsec_type", "passthrough".into()),
        (Psk, "ipsec_authby", "never".into()),
        (Psk, "ipsec_auto", "ignore".into()),
        (Psk, "ipsec_conn", "x".into()),
        (Psk, "ipsec_mark", "1/1".into()),
        (Psk, "ipsec_Ike", "x".into()),
        (Psk, "ipsec_a\nb", "x".into()),
        (Psk, "ipsec_ike ", "x".into()),
        (Psk, "ipsec_", "x".into()),
        (Psk, "ipsec_x;y", "x".into()),
        (Psk, "ipsec_ｉke", "x".into()),
        (Psk, "ipsec_ike", "aes\ninclude /etc/x".into()),
        (Psk, "ipsec_ike", "aes\r".into()),
        (Psk, "ipsec_ike", "\"aes\"".into()),
        (Psk, "ipsec_ike", "aes #c".into()),
        (Psk, "ipsec_ike", "a;b".into()),
        (Psk, "ipsec_ike", "$(reboot)".into()),
        (Psk, "ipsec_ike", "`reboot`".into()),
        (Psk, "ipsec_ike", "%include".into()),
        (Psk, "ipsec_ike", "%any%any".into()),
        (Psk, "ipsec_ike", "a b".into()),
        (Psk, "ipsec_ike", "".into()),
        (Psk, "ipsec_ike", "a\\b".into()),
        (Psk, "ipsec_ike", "{x}".into()),
        (Psk, "ipsec_ike", "a\0".into()),
        (Psk, "ipsec_ike", long("x", 256)),
        (Psk, "ipsec_ike", "ａes".into()),
        (Psk, "ipsec_dpdaction", "%forever\n".into()),
        (Cert, "remote_name", "host 2".into()),
        (Cert, "remote_name", "host\n2".into()),
        (Cert, "remote_name", "-host".into()),
        (Cert, "remote_name", "\"host\"".into()),
        (Cert, "remote_name", "'host'".into()),
        (Cert, "remote_name", "host%any".into()),
        (Cert, "remote_name", "host#".into()),
        (Cert, "remote_name", "hоst2".into()),
        (Cert, "remote_name", "host;x".into()),
        (Cert, "remote_name", long("h", 256)),
        (Cert, "remote_cert", "/etc/../peer.pem".into()),
        (Cert, "remote_cert", "peer.pem".into()),
        (Cert, "remote_cert", "/peer.pem\n".into()),
        (Cert, "remote_cert", "/peer pem".into()),
        (Cert, "remote_cert", "/peer.pem;x".into()),
        (Cert, "remote_cert", "-/peer.pem".into()),
        (Cert, "remote_cert", "/pe`er`.pem".into()),
        (Cert, "remote_cert", "/$(x).pem".into()),
        (Cert, "remote_cert", "/bad-cn.pem".into()),
        (Cert, "remote_cert", "/missing.pem".into()),
    ];
    cases.push((Cert, "remote_cert", format!("/{}", long("a", 4100))));
    cases
        .into_iter()
        .map(|(w, k, v)| (w, k.to_owned(), v))
        .collect()
}

/// Every hostile value makes its tunnel invalid with a reason that names the key, shows
/// no raw control character and no PSK, and leaves the other tunnels alone.
#[test]
fn hostile_values_are_rejected() {
    let cases = hostile_cases();
    assert!(cases.len() >= 50);
    for (world, key, value) in cases {
        let (global, good, mut bad) = match world {
            World::Psk => (
                ovs(&[]),
                psk_row("good", "k"),
                row("bad", "vxlan", &[("remote_ip", "192.0.2.9"), ("psk", "k")]),
            ),
            World::Cert => (ovs(PKI_A), ca_row("good"), ca_row("bad")),
        };
        if key == "name" {
            bad.name = value.clone();
        } else {
            let pairs = bad.options.iter().map(|(k, v)| (k.clone(), v.clone()));
            bad.options = pairs.chain([(key.clone(), value.clone())]).collect();
        }
        let mut reg = Registry::new();
        let mut c = certs();
        reg.update(Some(&global), [&good], &mut c);
        let events = reg.update(Some(&global), [&good, &bad], &mut c);

        let t = tunnel(&reg, &bad.name);
        let Validity::Invalid(reason) = &t.validity else {
            panic!("{key}={value:?} accepted: {t:?}");
        };
        let label = key_label(&key);
        let named = if label.starts_with('\'') {
            key.clone()
        } else {
            label
        };
        assert!(reason.contains(&named), "{key}={value:?}: {reason}");
        for line in texts(&events) {
            assert!(
                !line.contains(['\n', '\r', '\0']) && line.len() < 1200,
                "{key}={value:?}: {line:?}"
            );
            assert!(
                key != "psk" || !line.contains(&value[..3]),
                "PSK shown: {line}"
            );
        }
        let warned = events
            .iter()
            .filter(|e| matches!(e, ModelEvent::Invalid { .. }))
            .count();
        assert_eq!(warned, 1, "{key}={value:?}: {events:?}");
        // The good tunnel: untouched, still version 1, the only one desired.
        assert_eq!(tunnel(&reg, "good").version, 1);
        let desired = reg.desired();
        assert_eq!(desired.tunnels.keys().collect::<Vec<_>>(), ["good"]);
    }
}

#[test]
fn odd_but_legitimate_psks_are_accepted() {
    for psk in [
        "with 'quotes\" inside",
        "new\nline\r\n",
        "  spaces  ",
        "ünïcødé ✓",
        "#;$(x)`%include",
    ] {
        let mut reg = Registry::new();
        reg.update(None, [&psk_row("t", psk)], &mut certs());
        let conf = reg.desired().tunnels["t"].conf.clone();
        assert!(matches!(&conf.auth, Auth::Psk(s) if s.expose() == psk));
    }
}

fn option_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "remote_ip",
            "local_ip",
            "psk",
            "remote_cert",
            "remote_name",
            "dst_port",
            "ipsec_ike",
            "ipsec_also",
            "ipsec_encapsulation",
            "key",
        ])
        .prop_map(str::to_owned),
        "ipsec_[a-zA-Z0-9_ %-]{0,6}",
        ".{0,8}",
    ]
}

fn option_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "192.0.2.1",
            "fd01::1",
            "10.0.0.1",
            "0.0.0.0",
            "flow",
            "4789",
            "/peer.pem",
            "/bad-cn.pem",
            "host2",
            "yes",
            "%any",
            "%include",
            "",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
        ".{0,12}",
    ]
}

/// Row variants for the incremental test: valid and invalid PSK rows, certificate rows,
/// a non-IPsec row, and a deleted row (`None`).
fn variant() -> impl Strategy<Value = Option<(&'static str, Vec<(&'static str, &'static str)>)>> {
    prop::sample::select(vec![
        None,
        Some(("geneve", vec![("remote_ip", "192.0.2.2"), ("psk", "k1")])),
        Some(("geneve", vec![("remote_ip", "192.0.2.2"), ("psk", "k2")])),
        Some(("gre", vec![("remote_ip", "192.0.2.9"), ("psk", "k1")])),
        Some(("gre", vec![("psk", "k1")])),
        Some((
            "vxlan",
            vec![("remote_ip", "10.0.0.1"), ("remote_cert", "/peer.pem")],
        )),
        // The same peer certificate at another path: the same version.
        Some((
            "vxlan",
            vec![
                ("remote_ip", "10.0.0.1"),
                ("remote_cert", "/peer-moved.pem"),
            ],
        )),
        Some((
            "gre",
            vec![("remote_ip", "192.0.2.3"), ("remote_name", "host2")],
        )),
        Some(("geneve", vec![("remote_ip", "192.0.2.2")])),
    ])
}

proptest! {
    /// Updating only the rows a change touched gives the same events and the same state as
    /// evaluating every row, whatever the sequence of inserts, renames (names collide on
    /// purpose), deletes and PKI changes.
    #[test]
    fn incremental_updates_match_full_ones(
        steps in prop::collection::vec(
            (0..4usize, prop::sample::select(vec!["a", "b", "c"]), variant(), 0..5usize),
            1..16,
        ),
    ) {
        use crate::model::rows::{self, Rows};
        use crate::ovsdb::Replica;
        use serde_json::json;
        let mut replica = Replica::new(Default::default());
        let (mut kept, mut inc, mut full) = (Rows::default(), Registry::new(), Registry::new());
        let mut c = certs();
        for (i, name, row, pki) in steps {
            let (before, was) = (inc.generation(), inc.desired().clone());
            let uuid = format!("u{i}");
            let mut update = json!({"Interface": {uuid.as_str(): {}}});
            if let Some((kind, opts)) = row {
                update["Interface"][uuid.as_str()] = json!({"new": {
                    "name": name, "type": kind, "options": ["map", opts]}});
            }
            // PKI_A_MOVED: PKI_A's identity at other paths (the same versions).
            let globals: [&[(&str, &str)]; 5] =
                [&[], PKI_A, PKI_B, &[("ipsec_skb_mark", "1/1")], PKI_A_MOVED];
            let other = globals[pki];
            update["Open_vSwitch"] = json!({"o": {"new": {"other_config": ["map", other]}}});
            replica.apply_update(&update).unwrap();
            let touched = kept.catch_up(&mut replica);
            let ovs = rows::open_vswitch(&replica);
            let a = inc.update_changed(
                kept.open_vswitch(), &kept, touched.as_ref().map(|t| &t.names), &mut c);
            let b = full.update(ovs.as_ref(), &rows::interfaces(&replica), &mut c);
            prop_assert_eq!(a, b);
            prop_assert_eq!(inc.tunnels().collect::<Vec<_>>(), full.tunnels().collect::<Vec<_>>());
            prop_assert_eq!(inc.desired(), full.desired());
            prop_assert_eq!(inc.saved_versions(), full.saved_versions());
            let fresh: SavedVersions = full.tunnels().map(|t| (t.name.clone(), SavedVersion {
                version: t.version, digest: versions::digest(&t.validity) })).collect();
            prop_assert_eq!(full.saved_versions(), &fresh);
            prop_assert_eq!(inc.generation() == before, inc.desired() == &was);
        }
    }

    /// Arbitrary rows never panic the model, and a valid tunnel never holds a field that
    /// breaks its grammar.
    #[test]
    fn arbitrary_rows_never_yield_ungrammatical_tunnels(
        name in prop_oneof!["[a-z]{1,4}", ".{0,6}"],
        kind in prop::sample::select(vec!["gre", "geneve", "vxlan", "stt", ""]),
        base in prop::sample::select(vec![
            vec![("remote_ip", "192.0.2.1"), ("psk", "k")],
            vec![("remote_ip", "fd01::1"), ("remote_name", "host2")],
            vec![("remote_ip", "10.0.0.1"), ("remote_cert", "/peer.pem")],
            vec![],
        ]),
        extra in prop::collection::btree_map(option_key(), option_value(), 0..6),
        with_pki in any::<bool>(),
    ) {
        // A valid base, disturbed by arbitrary options, reaches the deep checks often.
        let mut options: BTreeMap<String, String> =
            base.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        options.extend(extra);
        let r = InterfaceRow { name, kind: kind.to_owned(), options: options.into(), ..Default::default() };
        let global = if with_pki { ovs(PKI_A) } else { ovs(&[]) };
        let mut reg = Registry::new();
        let events = reg.update(Some(&global), [&r], &mut certs());
        for line in texts(&events) {
            prop_assert!(!line.contains(['\n', '\r', '\0']), "{line:?}");
        }
        for (name, t) in &reg.desired().tunnels {
            let conf = &t.conf;
            prop_assert!(grammar::interface_name(name).is_ok());
            prop_assert!(grammar::ip_address("r", &conf.remote_ip.to_string()).is_ok());
            if let Some(l) = conf.local_ip {
                prop_assert!(grammar::ip_address("l", &l.to_string()).is_ok());
                prop_assert_eq!(l.is_ipv4(), conf.remote_ip.is_ipv4());
            }
            for (k, v) in &conf.custom {
                let key = format!("ipsec_{k}");
                prop_assert!(grammar::custom_option(&key, v).is_ok());
            }
            match &conf.auth {
                Auth::Psk(s) => prop_assert!(grammar::psk(s.expose()).is_ok()),
                Auth::SelfSigned { remote_cert, remote_name } => {
                    prop_assert!(grammar::path("c", &remote_cert.to_string_lossy()).is_ok());
                    prop_assert!(grammar::identity("n", remote_name).is_ok());
                }
                Auth::CaSigned { remote_name } => {
                    prop_assert!(grammar::identity("n", remote_name).is_ok());
                }
            }
            prop_assert_eq!(conf.pki.is_some(), !matches!(conf.auth, Auth::Psk(_)));
        }
    }
}
