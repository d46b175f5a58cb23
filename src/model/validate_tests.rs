//! Tests of `validate`: each rule's reason string, the Python monitor's order, and the
//! effective configuration (kept apart from the rules, which they outnumber).

use super::*;
use crate::model::cert::fake::FakeCerts;
use crate::model::types::Secret;

type Opts<'a> = &'a [(&'a str, &'a str)];

fn row(name: &str, kind: &str, opts: &[(&str, &str)]) -> InterfaceRow {
    InterfaceRow::for_test(name, kind, opts)
}

fn pki(ca: bool) -> Arc<Pki> {
    Arc::new(Pki {
        certificate: "/etc/ovs/cert.pem".into(),
        private_key: "/etc/ovs/key.pem".into(),
        ca_cert: ca.then(|| "/etc/ovs/ca.pem".into()),
        local_name: "host1".to_owned(),
    })
}

fn certs() -> FakeCerts {
    FakeCerts::with(&[
        ("/peer.pem", "host2"),
        ("/bad-cn.pem", "host 2"),
        ("/etc/ovs/cert.pem", "host1"),
    ])
}

fn reason_of(r: &InterfaceRow, pki: Option<&Arc<Pki>>) -> String {
    match validate(r, pki, &mut certs()) {
        Validity::Invalid(reason) => reason,
        Validity::Valid(conf) => panic!("{} unexpectedly valid: {conf:?}", r.name),
    }
}

fn conf_of(r: &InterfaceRow, pki: Option<&Arc<Pki>>) -> Arc<TunnelConf> {
    match validate(r, pki, &mut certs()) {
        Validity::Valid(conf) => conf,
        Validity::Invalid(reason) => panic!("{} invalid: {reason}", r.name),
    }
}

#[test]
fn which_rows_are_ipsec_tunnels() {
    assert!(is_ipsec_tunnel(&row("t", "gre", &[("psk", "")])));
    assert!(is_ipsec_tunnel(&row(
        "t",
        "geneve",
        &[("remote_name", "x")]
    )));
    assert!(is_ipsec_tunnel(&row(
        "t",
        "vxlan",
        &[("remote_cert", "/x")]
    )));
    assert!(!is_ipsec_tunnel(&row("t", "stt", &[("psk", "x")])));
    assert!(!is_ipsec_tunnel(&row("t", "erspan", &[("psk", "x")])));
    assert!(!is_ipsec_tunnel(&row(
        "t",
        "gre",
        &[("remote_ip", "192.0.2.1")]
    )));
}

/// Every Python reason, in Python's order of precedence.
#[test]
fn python_reasons_in_order() {
    let ca = pki(true);
    let no_ca = pki(false);
    let cases: &[(Opts, Option<&Arc<Pki>>, &str)] = &[
        (&[("psk", "x")], None, REMOTE_IP_NOT_SET),
        (&[("psk", "x"), ("remote_ip", "")], None, REMOTE_IP_NOT_SET),
        // remote_ip comes before any other problem, even a PSK conflict.
        (
            &[("psk", "x"), ("remote_name", "h")],
            Some(&ca),
            REMOTE_IP_NOT_SET,
        ),
        (
            &[("remote_ip", "192.0.2.2"), ("psk", "x")],
            Some(&no_ca),
            PSK_WITH_PKI,
        ),
        (
            &[
                ("remote_ip", "192.0.2.2"),
                ("psk", "x"),
                ("remote_name", "h"),
            ],
            None,
            PSK_WITH_PKI,
        ),
        (
            &[
                ("remote_ip", "192.0.2.2"),
                ("psk", "x"),
                ("remote_cert", "/peer.pem"),
            ],
            None,
            PSK_WITH_PKI,
        ),
        (
            &[("remote_ip", "192.0.2.2"), ("remote_name", "h")],
            None,
            NO_CERTIFICATE,
        ),
        (
            &[("remote_ip", "192.0.2.2"), ("remote_cert", "/peer.pem")],
            None,
            NO_CERTIFICATE,
        ),
        (
            &[("remote_ip", "192.0.2.2"), ("remote_name", "h")],
            Some(&no_ca),
            NO_PEER_AUTH,
        ),
        (
            &[("remote_ip", "192.0.2.2"), ("psk", "")],
            None,
            NO_AUTH_METHOD,
        ),
        (
            &[("remote_ip", "192.0.2.2"), ("remote_name", "")],
            Some(&ca),
            NO_AUTH_METHOD,
        ),
    ];
    for (opts, pki, want) in cases {
        assert_eq!(reason_of(&row("t", "gre", opts), *pki), *want, "{opts:?}");
    }
}

/// Our checks come after Python's and name the key.
#[test]
fn extra_reasons() {
    let ca = pki(true);
    let psk = |extra: &[(&'static str, &'static str)]| {
        let mut o = vec![("remote_ip", "192.0.2.2"), ("psk", "secret")];
        o.extend_from_slice(extra);
        o
    };
    let cases = [
        (
            "bad name",
            "gre",
            psk(&[]),
            ": 'name' value \"bad name\" is not a valid interface name",
        ),
        (
            "t",
            "gre",
            vec![("remote_ip", "flow"), ("psk", "s")],
            ": 'remote_ip' value \"flow\" is not supported",
        ),
        (
            "t",
            "gre",
            psk(&[("local_ip", "flow")]),
            ": 'local_ip' value \"flow\" is not supported",
        ),
        (
            "t",
            "gre",
            psk(&[("local_ip", "fd01::1")]),
            ": 'local_ip' is IPv6 but 'remote_ip' is IPv4: both must be of the same address family",
        ),
        (
            "t",
            "vxlan",
            psk(&[("dst_port", "0")]),
            ": 'dst_port' value \"0\" is not a port number",
        ),
        (
            "t",
            "gre",
            psk(&[("ipsec_auto", "start")]),
            ": 'ipsec_auto' is reserved",
        ),
        (
            "t",
            "gre",
            vec![("remote_ip", "192.0.2.2"), ("psk", "a\0b")],
            ": 'psk' contains a NUL byte",
        ),
    ];
    for (name, kind, opts, want) in cases {
        let got = reason_of(&row(name, kind, &opts), None);
        assert!(got.starts_with(want), "{opts:?}: {got}");
    }
    let cert_cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("remote_cert", "/missing.pem")],
            ": invalid 'remote_cert': cannot read '/missing.pem': No such file or directory (os error 2)",
        ),
        (
            &[("remote_cert", "peer.pem")],
            ": 'remote_cert' value \"peer.pem\" is not an absolute path",
        ),
        (
            &[("remote_cert", "/bad-cn.pem")],
            ": 'CN of remote_cert' value \"host 2\" is not a valid IKE identity",
        ),
        (
            &[("remote_name", "-h")],
            ": 'remote_name' value \"-h\" is not a valid IKE identity",
        ),
        (
            &[("remote_cert", "/peer.pem"), ("remote_name", "a\"b")],
            ": 'remote_name' value \"a\\\"b\"",
        ),
    ];
    for (extra, want) in cert_cases {
        let mut opts = vec![("remote_ip", "192.0.2.2")];
        opts.extend_from_slice(extra);
        let got = reason_of(&row("t", "gre", &opts), Some(&ca));
        assert!(got.starts_with(want), "{extra:?}: {got}");
    }
}

#[test]
fn valid_modes() {
    let psk = conf_of(
        &row(
            "vx",
            "vxlan",
            &[
                ("remote_ip", "fd01::2"),
                ("local_ip", "fd01::1"),
                ("psk", "a b\n'\"ü"),
                ("dst_port", "4790"),
                ("ipsec_encapsulation", "yes"),
            ],
        ),
        None,
    );
    assert_eq!(psk.auth, Auth::Psk(Secret::new("a b\n'\"ü")));
    assert_eq!(
        (psk.family, psk.udp_port(), psk.pki.clone()),
        (Family::V6, Some(4790), None)
    );
    assert_eq!(
        psk.custom.get("encapsulation").map(String::as_str),
        Some("yes")
    );
    // dst_port is ignored for GRE, whatever it holds.
    let gre = conf_of(
        &row(
            "g",
            "gre",
            &[
                ("remote_ip", "192.0.2.2"),
                ("psk", "k"),
                ("dst_port", "junk"),
            ],
        ),
        None,
    );
    assert_eq!((gre.dst_port, gre.udp_port()), (None, None));

    let ca = pki(true);
    let self_signed = conf_of(
        &row(
            "t",
            "geneve",
            &[
                ("remote_ip", "192.0.2.2"),
                ("remote_cert", "/peer.pem"),
                ("remote_name", "ignored"),
            ],
        ),
        Some(&ca),
    );
    assert_eq!(
        self_signed.auth,
        Auth::SelfSigned {
            remote_cert: "/peer.pem".into(),
            remote_name: "host2".to_owned()
        }
    );
    assert_eq!(self_signed.pki.as_ref(), Some(&ca));
    // remote_cert needs no ca_cert.
    let no_ca = pki(false);
    assert!(
        conf_of(
            &row(
                "t",
                "gre",
                &[("remote_ip", "192.0.2.2"), ("remote_cert", "/peer.pem")]
            ),
            Some(&no_ca)
        )
        .pki
        .is_some()
    );
    let ca_signed = conf_of(
        &row(
            "t",
            "gre",
            &[("remote_ip", "192.0.2.2"), ("remote_name", "host2")],
        ),
        Some(&ca),
    );
    assert_eq!(
        ca_signed.auth,
        Auth::CaSigned {
            remote_name: "host2".to_owned()
        }
    );
}

/// Issue 22: OVN spells out `dst_port=6081`; that must be the tunnel without it.
#[test]
fn an_explicit_default_port_is_the_same_configuration_as_none() {
    let base = [("remote_ip", "192.0.2.2"), ("psk", "k")];
    for (kind, default, other) in [("geneve", "6081", 4789), ("vxlan", "04789", 6081)] {
        let plain = conf_of(&row("t", kind, &base), None);
        let mut opts = base.to_vec();
        opts.push(("dst_port", default));
        assert_eq!(conf_of(&row("t", kind, &opts), None), plain, "{kind}");
        let other_port = other.to_string();
        opts.pop();
        opts.push(("dst_port", &other_port));
        let moved = conf_of(&row("t", kind, &opts), None);
        assert_eq!(moved.udp_port(), Some(other));
        assert_ne!(moved, plain, "{kind}: another port is another tunnel");
    }
}

#[test]
fn raw_never_keeps_the_psk() {
    let r = raw(&row(
        "t",
        "gre",
        &[("psk", "topsecret"), ("remote_ip", "x"), ("ipsec_a", "b")],
    ));
    assert!(r.psk_set);
    assert_eq!(r.custom.get("ipsec_a").map(String::as_str), Some("b"));
    assert!(!format!("{r:?}").contains("topsecret"));
    let conf = conf_of(
        &row(
            "t",
            "gre",
            &[("psk", "topsecret"), ("remote_ip", "192.0.2.1")],
        ),
        None,
    );
    assert!(!format!("{conf:?}").contains("topsecret"));
}

#[test]
fn global_pki_rules() {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let mut c = certs();
    assert_eq!(global_pki(&map(&[]), &mut c), Ok(None));
    assert_eq!(global_pki(&map(&[("certificate", "")]), &mut c), Ok(None));
    let full = global_pki(
        &map(&[
            ("certificate", "/etc/ovs/cert.pem"),
            ("private_key", "/etc/ovs/key.pem"),
            ("ca_cert", "/etc/ovs/ca.pem"),
        ]),
        &mut c,
    );
    assert_eq!(full, Ok(Some((*pki(true)).clone())));
    let errs = [
        (
            vec![("ca_cert", "/ca.pem")],
            "'ca_cert' is set without 'certificate' and 'private_key'",
        ),
        (
            vec![("certificate", "/etc/ovs/cert.pem")],
            "'private_key' is not set",
        ),
        (vec![("private_key", "/k.pem")], "'certificate' is not set"),
        (
            vec![("certificate", "/nope.pem"), ("private_key", "/k.pem")],
            "invalid 'certificate': cannot read '/nope.pem'",
        ),
        (
            vec![("certificate", "/bad-cn.pem"), ("private_key", "/k.pem")],
            "'CN of certificate' value \"host 2\"",
        ),
        (
            vec![
                ("certificate", "/etc/ovs/cert.pem"),
                ("private_key", "k.pem"),
            ],
            "'private_key' value \"k.pem\" is not an absolute path",
        ),
        (
            vec![
                ("certificate", "/etc/ovs/cert.pem"),
                ("private_key", "/k.pem"),
                ("ca_cert", "/a\nb"),
            ],
            "'ca_cert' value \"/a\\nb\"",
        ),
    ];
    for (kv, want) in errs {
        let got = global_pki(&map(&kv), &mut c).unwrap_err();
        assert!(got.starts_with(want), "{kv:?}: {got}");
    }
}

#[test]
fn static_keying_options_are_parsed_and_kept_out_of_custom_options() {
    let gen_hex = "00112233445566778899aabbccddeeff";
    let opts = [
        ("psk", "now"),
        ("remote_ip", "192.0.2.1"),
        ("ipsec_psk_next", "later-secret"),
        ("ipsec_peer_generation", gen_hex),
    ];
    let r = row("t", "geneve", &opts);
    let conf = conf_of(&r, None);
    assert_eq!(
        conf.static_keying.psk_next.as_ref().map(Secret::expose),
        Some("later-secret")
    );
    assert_eq!(
        conf.static_keying.peer_generation.map(|g| g[15]),
        Some(0xff)
    );
    assert!(conf.custom.is_empty(), "{:?}", conf.custom);
    let shown = raw(&r);
    assert!(shown.custom.is_empty());
    assert!(!format!("{shown:?}{conf:?}").contains("later-secret"));
}

#[test]
fn static_keying_options_are_checked() {
    let base = [("psk", "now"), ("remote_ip", "192.0.2.1")];
    let with = |key: &str, value: &str| {
        let mut o = base.to_vec();
        o.push((key, value));
        reason_of(&row("t", "gre", &o), None)
    };
    assert!(with("ipsec_peer_generation", "ABC").contains("32 lowercase hex"));
    assert!(with("ipsec_peer_generation", &"g".repeat(32)).contains("32 lowercase hex"));
    let err = with("ipsec_psk_next", &"x".repeat(PSK_MAX_TEST + 1));
    assert!(
        err.contains("ipsec_psk_next") && !err.contains("xxxx"),
        "{err}"
    );
    let cert = row(
        "t",
        "gre",
        &[
            ("remote_ip", "192.0.2.1"),
            ("remote_name", "host2"),
            ("ipsec_psk_next", "s"),
        ],
    );
    assert!(reason_of(&cert, Some(&pki(true))).contains("only be used with 'psk'"));
}

const PSK_MAX_TEST: usize = crate::model::grammar::PSK_MAX;
