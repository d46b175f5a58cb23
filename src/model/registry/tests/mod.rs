//! The registry's behaviour: events, versions, memo and the global settings; hostile and
//! random input in `hostile`.

mod hostile;
mod moved;

use super::*;
use crate::model::cert::fake::FakeCerts;
use crate::model::grammar::key_label;
use crate::model::types::Validity;
use crate::model::types::{Auth, SkbMark};
use crate::model::validate::PSK_WITH_PKI;
use crate::model::versions;
use proptest::prelude::*;
use tracing::Level;

fn row(name: &str, kind: &str, opts: &[(&str, &str)]) -> InterfaceRow {
    InterfaceRow::for_test(name, kind, opts)
}

fn ovs(other: &[(&str, &str)]) -> OpenVSwitchRow {
    OpenVSwitchRow {
        other_config: other
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

const PKI_A: &[(&str, &str)] = &[
    ("certificate", "/a/cert.pem"),
    ("private_key", "/a/key.pem"),
    ("ca_cert", "/a/ca.pem"),
];
const PKI_B: &[(&str, &str)] = &[
    ("certificate", "/b/cert.pem"),
    ("private_key", "/b/key.pem"),
    ("ca_cert", "/a/ca.pem"),
];

/// PKI_A's certificate (the same CN) and key at other paths.
const PKI_A_MOVED: &[(&str, &str)] = &[
    ("certificate", "/c/cert.pem"),
    ("private_key", "/c/key.pem"),
    ("ca_cert", "/c/ca.pem"),
];

fn certs() -> FakeCerts {
    FakeCerts::with(&[
        ("/a/cert.pem", "host1"),
        ("/c/cert.pem", "host1"),
        ("/b/cert.pem", "host1-new"),
        ("/peer.pem", "host2"),
        ("/peer-moved.pem", "host2"),
        ("/bad-cn.pem", "host\n2"),
    ])
}

fn psk_row(name: &str, psk: &str) -> InterfaceRow {
    row(name, "geneve", &[("remote_ip", "192.0.2.2"), ("psk", psk)])
}

fn ca_row(name: &str) -> InterfaceRow {
    row(
        name,
        "gre",
        &[("remote_ip", "192.0.2.3"), ("remote_name", "host2")],
    )
}

fn tunnel<'r>(reg: &'r Registry, name: &str) -> &'r Tunnel {
    reg.tunnels()
        .find(|t| t.name == name)
        .expect("tunnel known")
}

fn texts(events: &[ModelEvent]) -> Vec<String> {
    events.iter().map(ToString::to_string).collect()
}

#[test]
fn appear_change_unchanged() {
    let mut reg = Registry::new();
    let mut c = certs();
    let events = reg.update(Some(&ovs(&[])), [&psk_row("gnv1", "k1")], &mut c);
    assert_eq!(texts(&events), ["Tunnel gnv1 appeared in OVSDB"]);
    assert_eq!(events[0].level(), Level::INFO);
    assert_eq!(tunnel(&reg, "gnv1").version, 1);
    assert_eq!(
        reg.desired().tunnels["gnv1"].conn_names(),
        ["gnv1-in-1", "gnv1-out-1"]
    );

    let events = reg.update(Some(&ovs(&[])), [&psk_row("gnv1", "k2")], &mut c);
    assert_eq!(
        texts(&events),
        ["Tunnel's 'gnv1' configuration changed in OVSDB to 2"]
    );
    assert_eq!(reg.desired().tunnels["gnv1"].version, 2);

    // Same contents (a resync) and display-only changes: no events, same version.
    let mut shown = psk_row("gnv1", "k2");
    shown.ofport = Some(7);
    shown.cfm_fault = Some(false);
    assert!(
        reg.update(Some(&ovs(&[])), [&psk_row("gnv1", "k2")], &mut c)
            .is_empty()
    );
    assert!(reg.update(Some(&ovs(&[])), [&shown], &mut c).is_empty());
    let t = tunnel(&reg, "gnv1");
    assert_eq!(
        (t.version, t.ofport, t.cfm_fault),
        (2, Some(7), Some(false))
    );
}

#[test]
fn saved_versions_survive_a_restart_and_count_changes_made_meanwhile() {
    let mut certs = certs();
    let mut first = Registry::new();
    first.update(None, &[psk_row("a", "k1"), psk_row("b", "k1")], &mut certs);
    first.update(None, &[psk_row("a", "k2"), psk_row("b", "k1")], &mut certs);
    assert_eq!(tunnel(&first, "a").version, 2);
    let saved = versions::parse(&versions::render(first.saved_versions())).unwrap();

    // Restart: "a" unchanged keeps 2; "b" changed while down goes 1 -> 2.
    let mut second = Registry::new();
    second.seed(saved);
    let ev = second.update(None, &[psk_row("a", "k2"), psk_row("b", "k9")], &mut certs);
    assert_eq!(tunnel(&second, "a").version, 2);
    assert_eq!(tunnel(&second, "b").version, 2);
    assert!(texts(&ev).contains(&"Tunnel's 'b' configuration changed in OVSDB to 2".into()));
    // Seeds apply to the first update only: a later namesake starts afresh.
    second.update(None, &[psk_row("a", "k2")], &mut certs);
    second.update(None, &[psk_row("a", "k2"), psk_row("b", "k9")], &mut certs);
    assert_eq!(tunnel(&second, "b").version, 1);
}

#[test]
fn disappear_and_stop_being_ipsec() {
    let mut reg = Registry::new();
    let mut c = certs();
    let (a, b) = (psk_row("a", "k"), psk_row("b", "k"));
    reg.update(None, [&a, &b], &mut c);
    assert_eq!(
        texts(&reg.update(None, [&a], &mut c)),
        ["Tunnel b disappeared from OVSDB"]
    );
    // psk removed: a plain geneve tunnel, no longer ours.
    let plain = row("a", "geneve", &[("remote_ip", "192.0.2.2")]);
    assert_eq!(
        texts(&reg.update(None, [&plain], &mut c)),
        ["Tunnel a disappeared from OVSDB"]
    );
    assert_eq!(reg.tunnels().count(), 0);
    // Back again: a new tunnel, version 1.
    assert_eq!(
        texts(&reg.update(None, [&a], &mut c)),
        ["Tunnel a appeared in OVSDB"]
    );
    assert_eq!(tunnel(&reg, "a").version, 1);
}

#[test]
fn invalid_is_logged_once_and_kept_for_display() {
    let mut reg = Registry::new();
    let mut c = certs();
    let bad = row("bad", "gre", &[("psk", "k")]);
    let events = reg.update(None, [&bad], &mut c);
    assert_eq!(
        texts(&events),
        [
            "Tunnel bad appeared in OVSDB",
            "bad contains invalid configuration: 'remote_ip' is not set"
        ]
    );
    assert_eq!(events[1].level(), Level::WARN);
    assert!(reg.desired().tunnels.is_empty());
    assert_eq!(tunnel(&reg, "bad").raw.kind, "gre");
    // An unrelated change does not repeat the warning.
    let good = psk_row("good", "k");
    assert_eq!(
        texts(&reg.update(None, [&bad, &good], &mut c)),
        ["Tunnel good appeared in OVSDB"]
    );
    // A new reason is a new configuration, logged once.
    let worse = row("bad", "gre", &[("psk", "k"), ("remote_ip", "flow")]);
    let events = reg.update(None, [&worse, &good], &mut c);
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].to_string(),
        "Tunnel's 'bad' configuration changed in OVSDB to 2"
    );
    assert!(events[1].to_string().starts_with(
        "bad contains invalid configuration: 'remote_ip' value \"flow\" is not supported"
    ));
    assert!(reg.update(None, [&worse, &good], &mut c).is_empty());
    // Fixed: valid, new version, no warning.
    let fixed = psk_row("bad", "k");
    assert_eq!(
        texts(&reg.update(None, [&fixed, &good], &mut c)),
        ["Tunnel's 'bad' configuration changed in OVSDB to 3"]
    );
    assert_eq!(reg.desired().tunnels.len(), 2);
}

#[test]
fn an_unchanged_psk_row_is_still_judged_again_when_the_pki_changes() {
    let mut reg = Registry::new();
    let mut c = certs();
    let psk = psk_row("psk", "k");
    reg.update(Some(&ovs(&[])), [&psk], &mut c);
    reg.update(Some(&ovs(PKI_A)), [&psk], &mut c);
    assert_eq!(
        tunnel(&reg, "psk").validity,
        Validity::Invalid(PSK_WITH_PKI.into())
    );
    reg.update(Some(&ovs(&[])), [&psk], &mut c);
    assert_eq!(reg.desired().tunnels["psk"].version, 3);
    // Recreated under the same name with the same options: a new UUID, nothing else.
    let mut again = psk_row("psk", "k");
    again.uuid = "another-uuid".into();
    assert!(reg.update(Some(&ovs(&[])), [&again], &mut c).is_empty());
    assert_eq!(tunnel(&reg, "psk").uuid, "another-uuid");
}

#[test]
fn pki_change_bumps_only_certificate_tunnels() {
    let mut reg = Registry::new();
    let mut c = certs();
    let (cert, psk) = (ca_row("cert"), psk_row("psk", "k"));
    let events = reg.update(Some(&ovs(PKI_A)), [&cert, &psk], &mut c);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        tunnel(&reg, "psk").validity,
        Validity::Invalid(PSK_WITH_PKI.into())
    );
    let pki = reg.global().pki.clone().expect("PKI in force");
    assert_eq!(pki.local_name, "host1");
    assert_eq!(reg.desired().tunnels["cert"].conf.pki.as_ref(), Some(&pki));

    let events = reg.update(Some(&ovs(PKI_B)), [&cert, &psk], &mut c);
    assert_eq!(
        texts(&events),
        ["Tunnel's 'cert' configuration changed in OVSDB to 2"]
    );
    assert_eq!(tunnel(&reg, "psk").version, 1);
    assert_eq!(
        reg.global().pki.as_ref().map(|p| p.local_name.as_str()),
        Some("host1-new")
    );
}

#[test]
fn skb_mark_is_separate_and_bumps_nothing() {
    let mut reg = Registry::new();
    let mut c = certs();
    let (cert, psk) = (ca_row("cert"), psk_row("psk", "k"));
    let with_mark = |mark: &'static str| {
        let mut o = PKI_A.to_vec();
        o.push(("ipsec_skb_mark", mark));
        ovs(&o)
    };
    reg.update(Some(&with_mark("0/1")), [&cert, &psk], &mut c);
    assert_eq!(reg.global().skb_mark, Some(SkbMark { value: 0, mask: 1 }));
    assert!(
        reg.update(Some(&with_mark("1/1")), [&cert, &psk], &mut c)
            .is_empty()
    );
    assert_eq!(
        reg.desired().global.skb_mark,
        Some(SkbMark { value: 1, mask: 1 })
    );
    assert_eq!(tunnel(&reg, "cert").version, 1);

    // An invalid mark keeps the previous one, warns once, and leaves the PKI alone.
    let events = reg.update(Some(&with_mark("1/1\nx")), [&cert, &psk], &mut c);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level(), Level::WARN);
    assert_eq!(
        events[0].to_string(),
        "'ipsec_skb_mark' value \"1/1\\nx\" is not VALUE/MASK with decimal or 0x-hex 32-bit numbers; keeping the previous ipsec_skb_mark"
    );
    assert!(
        reg.update(Some(&with_mark("1/1\nx")), [&cert, &psk], &mut c)
            .is_empty()
    );
    assert_eq!(reg.global().skb_mark, Some(SkbMark { value: 1, mask: 1 }));
    assert!(reg.global().pki.is_some());
    assert!(
        reg.global_error()
            .is_some_and(|e| e.starts_with("'ipsec_skb_mark'"))
    );
    reg.update(Some(&ovs(PKI_A)), [&cert, &psk], &mut c);
    assert_eq!((reg.global().skb_mark, reg.global_error()), (None, None));
}

#[test]
fn invalid_global_pki_keeps_the_previous_one() {
    let mut reg = Registry::new();
    let mut c = certs();
    let cert = ca_row("cert");
    reg.update(Some(&ovs(PKI_A)), [&cert], &mut c);
    let before = reg.desired().clone();
    let mut broken = PKI_A.to_vec();
    broken.retain(|(k, _)| *k != "private_key");
    broken.push(("ipsec_skb_mark", "2/3"));
    let events = reg.update(Some(&ovs(&broken)), [&cert], &mut c);
    assert_eq!(
        texts(&events),
        [
            "The cert and key configuration is not valid. The valid configuations are 1): certificate, private_key and ca_cert are not set; or 2): certificate and private_key are all set. ('private_key' is not set)"
        ]
    );
    assert_eq!(events[0].level(), Level::WARN);
    assert_eq!(reg.desired().tunnels, before.tunnels);
    assert_eq!(reg.global().pki, before.global.pki);
    // The mark is judged on its own: applied despite the broken PKI.
    assert_eq!(reg.global().skb_mark, Some(SkbMark { value: 2, mask: 3 }));
    assert!(
        reg.global_error()
            .is_some_and(|e| e.starts_with(GLOBAL_PKI_INVALID))
    );
    assert!(reg.update(Some(&ovs(&broken)), [&cert], &mut c).is_empty());
    // A global cert with a hostile CN is refused the same way, escaped.
    let hostile = [("certificate", "/bad-cn.pem"), ("private_key", "/k.pem")];
    let events = reg.update(Some(&ovs(&hostile)), [&cert], &mut c);
    assert!(texts(&events)[0].ends_with("('CN of certificate' value \"host\\n2\" is not a valid IKE identity: it must match [A-Za-z0-9][A-Za-z0-9._@:+-]{0,254})"), "{events:?}");
    // Removing every PKI key is valid: no PKI, and the certificate tunnel becomes invalid.
    let events = reg.update(Some(&ovs(&[])), [&cert], &mut c);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!((reg.global().pki.clone(), reg.global_error()), (None, None));
}
