//! Credential files at new paths: the same tunnel, the same version (see
//! `versions::same_version`); another identity or another kind of credential is a new one.

use super::*;

const PKI_NO_CA: &[(&str, &str)] = &[
    ("certificate", "/c/cert.pem"),
    ("private_key", "/c/key.pem"),
];

fn moved_certs() -> FakeCerts {
    let mut c = certs();
    for (path, cn) in [("/peer-renewed.pem", "host2"), ("/other-peer.pem", "host3")] {
        c.cns.insert(path.into(), cn.into());
    }
    c
}

fn self_signed_row(name: &str, remote_cert: &str) -> InterfaceRow {
    row(
        name,
        "geneve",
        &[("remote_ip", "192.0.2.4"), ("remote_cert", remote_cert)],
    )
}

/// A new `certificate`, `private_key` and `ca_cert` path with the same identity: no new
/// version, one event saying so, and the new paths in `Desired` for the backends to load.
#[test]
fn new_pki_paths_with_the_same_identity_keep_every_version() {
    let mut reg = Registry::new();
    let mut c = moved_certs();
    let (ca, ss, psk) = (
        ca_row("ca"),
        self_signed_row("ss", "/peer.pem"),
        psk_row("psk", "k"),
    );
    reg.update(Some(&ovs(PKI_A)), [&ca, &ss, &psk], &mut c);
    let (generation, saved) = (reg.generation(), reg.saved_versions().clone());

    let events = reg.update(Some(&ovs(PKI_A_MOVED)), [&ca, &ss, &psk], &mut c);
    assert_eq!(
        texts(&events),
        [
            "Tunnel's 'ca' credential files moved, keeping version 1: reloading them by content",
            "Tunnel's 'ss' credential files moved, keeping version 1: reloading them by content",
        ]
    );
    assert!(events.iter().all(|e| e.level() == Level::INFO));
    for name in ["ca", "ss", "psk"] {
        assert_eq!(tunnel(&reg, name).version, 1, "{name}");
    }
    let pki = reg.desired().tunnels["ca"].conf.pki.clone().expect("PKI");
    assert_eq!(pki.certificate, std::path::Path::new("/c/cert.pem"));
    assert_eq!(
        pki.ca_cert.as_deref(),
        Some(std::path::Path::new("/c/ca.pem"))
    );
    assert!(reg.generation() > generation);
    // The saved digests do not follow paths: a restart keeps the versions too.
    assert_eq!(reg.saved_versions(), &saved);

    // The same update again changes nothing.
    let g = reg.generation();
    assert!(
        reg.update(Some(&ovs(PKI_A_MOVED)), [&ca, &ss, &psk], &mut c)
            .is_empty()
    );
    assert_eq!(reg.generation(), g);
}

/// A self-signed peer's certificate at a new path keeps the version while its CN stays; a
/// certificate of another CN, or a CA dropped, is a new configuration.
#[test]
fn remote_cert_at_a_new_path_keeps_the_version_another_identity_does_not() {
    let mut reg = Registry::new();
    let mut c = moved_certs();
    reg.update(
        Some(&ovs(PKI_A)),
        [&self_signed_row("ss", "/peer.pem")],
        &mut c,
    );
    let events = reg.update(None, [&self_signed_row("ss", "/peer-renewed.pem")], &mut c);
    assert!(matches!(
        events.as_slice(),
        [ModelEvent::CredentialsMoved { version: 1, .. }]
    ));
    let conf = &reg.desired().tunnels["ss"].conf;
    assert!(matches!(
        &conf.auth,
        Auth::SelfSigned { remote_cert, .. } if remote_cert.as_os_str() == "/peer-renewed.pem"
    ));

    let events = reg.update(None, [&self_signed_row("ss", "/other-peer.pem")], &mut c);
    assert_eq!(
        texts(&events),
        ["Tunnel's 'ss' configuration changed in OVSDB to 2"]
    );
    let events = reg.update(
        Some(&ovs(PKI_NO_CA)),
        [&self_signed_row("ss", "/other-peer.pem")],
        &mut c,
    );
    assert_eq!(
        texts(&events),
        ["Tunnel's 'ss' configuration changed in OVSDB to 3"]
    );
}

/// Paths changed while the monitor was down: the restarted monitor keeps the version.
#[test]
fn paths_changed_while_the_monitor_was_down_keep_the_version() {
    let mut c = moved_certs();
    let mut first = Registry::new();
    first.update(Some(&ovs(PKI_A)), [&ca_row("ca")], &mut c);
    first.update(Some(&ovs(PKI_B)), [&ca_row("ca")], &mut c);
    assert_eq!(tunnel(&first, "ca").version, 2);
    let saved = versions::parse(&versions::render(first.saved_versions())).unwrap();

    let mut second = Registry::new();
    second.seed(saved);
    let mut pki_b_moved = PKI_B.to_vec();
    pki_b_moved[1] = ("private_key", "/b/key-2027.pem");
    let events = second.update(Some(&ovs(&pki_b_moved)), [&ca_row("ca")], &mut c);
    assert_eq!(texts(&events), ["Tunnel ca appeared in OVSDB"]);
    assert_eq!(tunnel(&second, "ca").version, 2);
}

/// Through `update_changed` (a one-row change) the rule is the same.
#[test]
fn a_one_row_change_of_remote_cert_keeps_the_version() {
    use crate::model::rows::Rows;
    use crate::ovsdb::Replica;
    use serde_json::json;
    let mut replica = Replica::new(Default::default());
    let (mut rows, mut reg, mut c) = (Rows::default(), Registry::new(), moved_certs());
    let mut events = Vec::new();
    for cert in ["/peer.pem", "/peer-renewed.pem"] {
        let opts = [["remote_ip", "192.0.2.4"], ["remote_cert", cert]];
        let update = json!({
            "Interface": {"u1": {"new": {"name": "ss", "type": "geneve", "options": ["map", opts]}}},
            "Open_vSwitch": {"o": {"new": {"other_config": ["map", PKI_A]}}},
        });
        replica.apply_update(&update).unwrap();
        let touched = rows.catch_up(&mut replica);
        let names = touched.as_ref().map(|t| &t.names);
        events = reg.update_changed(rows.open_vswitch(), &rows, names, &mut c);
    }
    assert!(matches!(
        events.as_slice(),
        [ModelEvent::CredentialsMoved { version: 1, .. }]
    ));
    assert_eq!(reg.desired().tunnels["ss"].version, 1);
}
