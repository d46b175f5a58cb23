//! The reconcile plan's unit tests (`plan.rs`): what is loaded, unloaded, initiated and
//! terminated for each desired and observed state.

use super::*;
use crate::backend::strongswan_vici::conns::desired_conns;
use crate::backend::strongswan_vici::observe::IkeSa;
use crate::backend::strongswan_vici::test_support::{cert_tunnel, desired, pki_files, psk_tunnel};
use crate::model::TunnelType;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What charon and our memory look like after `actions` were applied successfully
/// (an initiate leaves a CONNECTING IKE_SA).
fn converge(d: &Desired, mut o: Observed, actions: &[Action]) -> Observed {
    let (conns, _) = desired_conns(d);
    let creds = desired_creds(d);
    for a in actions {
        match a {
            Action::LoadCred(k) => {
                let digest = match &creds[k] {
                    CredSource::Psk { digest, .. } => *digest,
                    CredSource::File => o.files[k.path().unwrap()].unwrap(),
                };
                Arc::make_mut(&mut o.loaded).creds.insert(k.clone(), digest);
            }
            Action::LoadConn(c) => {
                Arc::make_mut(&mut o.conns).insert(c.name.clone(), c.listed());
                Arc::make_mut(&mut o.loaded)
                    .conns
                    .insert(c.name.clone(), body_digest(&c.body));
            }
            Action::Initiate { conn, .. } => {
                Arc::make_mut(&mut o.loaded)
                    .attempts
                    .insert(conn.clone(), o.clock);
                o.sas.push(IkeSa {
                    conn: conn.clone(),
                    state: "CONNECTING".into(),
                    ..Default::default()
                })
            }
            Action::UnloadConn(n) => {
                Arc::make_mut(&mut o.conns).remove(n);
                Arc::make_mut(&mut o.loaded).conns.remove(n);
            }
            Action::UnloadCred(k) => {
                Arc::make_mut(&mut o.loaded).creds.remove(k);
            }
            Action::UnloadStaleAuthorities(_) => {
                Arc::make_mut(&mut o.loaded).adoptable.clear();
            }
        }
    }
    assert!(conns.iter().all(|c| o.conns.contains_key(&c.name)));
    o
}

fn names(actions: &[Action]) -> Vec<String> {
    actions.iter().map(ToString::to_string).collect()
}

const INIT: &str = "unless the peer's address is lower";

#[test]
fn cold_start_loads_creds_then_one_conn_and_starts_it() {
    let d = desired(
        vec![psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1)],
        None,
    );
    let a = plan(&d, &Observed::default());
    assert_eq!(
        names(&a),
        [
            "load pre-shared key of tunnel vx1".to_owned(),
            "load connection vx1-1".to_owned(),
            format!("initiate connection vx1-1 {INIT}"),
        ]
    );
    match &a[2] {
        Action::Initiate { start, .. } => {
            assert_eq!(start.children, ["vx1-in-1", "vx1-out-1"])
        }
        other => panic!("{other}"),
    }
    let o = converge(&d, Observed::default(), &a);
    assert!(plan(&d, &o).is_empty(), "{:?}", names(&plan(&d, &o)));
}

#[test]
fn adding_one_tunnel_at_scale_is_constant_work() {
    let tunnels: Vec<_> = (0..1000)
        .map(|i| psk_tunnel(&format!("t{i}"), TunnelType::Geneve, "192.0.2.2", 1))
        .collect();
    let mut d = desired(tunnels, None);
    let o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
    let t = psk_tunnel("new", TunnelType::Geneve, "192.0.2.9", 1);
    d.tunnels.insert("new".into(), t);
    assert_eq!(plan(&d, &o).len(), 3);
}

#[test]
fn a_tunnel_without_ike_sa_is_initiated_again_only_after_the_retry_delay() {
    let d = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.3", 1)], None);
    let mut o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
    // The peer refused (it had not loaded its side): charon dropped the IKE_SA.
    o.sas.clear();
    o.clock = RETRY_INITIATE / 2;
    assert!(plan(&d, &o).is_empty());
    o.clock = RETRY_INITIATE;
    assert_eq!(
        names(&plan(&d, &o)),
        [format!("initiate connection g-1 {INIT}")]
    );
    // This end leaves it to the peer (lower address): nothing planned, pass after pass.
    o.answers.insert("g-1".into());
    assert!(plan(&d, &o).is_empty());
    o.answers.clear();
    // An IKE_SA in any state (the peer may have started it) means nothing to do.
    o.sas.push(IkeSa {
        conn: "g-1".into(),
        state: "ESTABLISHED".into(),
        ..Default::default()
    });
    assert!(plan(&d, &o).is_empty());
}

#[test]
fn modify_loads_new_version_then_unloads_old_and_delete_unloads() {
    let d1 = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.3", 1)], None);
    let o = converge(&d1, Observed::default(), &plan(&d1, &Observed::default()));
    let d2 = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.4", 2)], None);
    let a = plan(&d2, &o);
    assert_eq!(
        names(&a),
        [
            "load pre-shared key of tunnel g".to_owned(),
            "load connection g-2".to_owned(),
            format!("initiate connection g-2 {INIT}"),
            "unload connection g-1".to_owned(),
        ]
    );
    let o = converge(&d2, o, &a);
    let a = plan(&Desired::default(), &o);
    assert_eq!(
        names(&a),
        ["unload connection g-2", "unload pre-shared key of tunnel g"]
    );
}

#[test]
fn monitor_restart_reloads_in_place_and_unloads_nothing_current() {
    let d = desired(
        vec![psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1)],
        None,
    );
    let mut o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
    o.sas[0].state = "ESTABLISHED".into();
    // A new monitor process: charon kept everything, our memory is empty.
    o.loaded = Default::default();
    let a = plan(&d, &o);
    assert!(
        a.iter()
            .all(|a| matches!(a, Action::LoadCred(_) | Action::LoadConn(_))),
        "{:?}",
        names(&a)
    );
}

#[test]
fn foreign_connections_are_never_unloaded_and_ours_of_any_release_are() {
    let mut o = Observed::default();
    let conn = |children: &[(&str, &str)]| ObservedConn {
        children: children
            .iter()
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    Arc::make_mut(&mut o.conns).insert("site-to-site".into(), conn(&[("net", "TUNNEL")]));
    Arc::make_mut(&mut o.conns).insert("office-1".into(), conn(&[("office-1", "TUNNEL")]));
    Arc::make_mut(&mut o.conns).insert(
        "lab-2".into(),
        conn(&[("lab-2", "TRANSPORT"), ("x", "TRANSPORT")]),
    );
    Arc::make_mut(&mut o.conns).insert("empty-3".into(), conn(&[]));
    // Earlier releases: one connection per direction.
    Arc::make_mut(&mut o.conns).insert("old-in-4".into(), conn(&[("old-in-4", "TRANSPORT")]));
    // This release.
    Arc::make_mut(&mut o.conns).insert(
        "vx-5".into(),
        conn(&[("vx-in-5", "TRANSPORT"), ("vx-out-5", "TRANSPORT")]),
    );
    Arc::make_mut(&mut o.conns).insert("g-6".into(), conn(&[("g-6", "TRANSPORT")]));
    let a = plan(&Desired::default(), &o);
    assert_eq!(
        names(&a),
        [
            "unload connection g-6",
            "unload connection old-in-4",
            "unload connection vx-5"
        ]
    );
}

#[test]
fn renewed_certificate_content_reloads_only_that_credential() {
    let d = desired(vec![cert_tunnel("t", "192.0.2.2", "right", true)], None);
    let mut o = Observed::default();
    pki_files(&mut o);
    let o = converge(&d, o.clone(), &plan(&d, &o));
    assert!(plan(&d, &o).is_empty());
    let mut renewed = o.clone();
    renewed.files.insert(
        "/pki/cacert.pem".into(),
        Some(crate::backend::files::sha256(b"new CA")),
    );
    assert_eq!(
        names(&plan(&d, &renewed)),
        ["load CA certificate /pki/cacert.pem"]
    );
    // A file that became unreadable keeps what charon has.
    let mut gone = o;
    gone.files.insert("/pki/cacert.pem".into(), None);
    assert!(plan(&d, &gone).is_empty());
}

/// The certificate and key renewed at new paths under the same version: the old key is
/// unloaded before the new one is loaded (the same key gets the same id in charon), the
/// connection is not touched, and the old certificate is only forgotten.
#[test]
fn credentials_at_new_paths_reload_by_content_and_keep_the_connection() {
    let d = desired(vec![cert_tunnel("t", "192.0.2.2", "right", true)], None);
    let mut o = Observed::default();
    pki_files(&mut o);
    let o = converge(&d, o.clone(), &plan(&d, &o));
    let mut moved = d.clone();
    let t = moved.tunnels.get_mut("t").unwrap();
    let conf = Arc::make_mut(&mut t.conf);
    let pki = Arc::make_mut(conf.pki.as_mut().unwrap());
    pki.certificate = "/pki/2027/left-cert.pem".into();
    pki.private_key = "/pki/2027/left-privkey.pem".into();
    moved.global.pki = conf.pki.clone();
    let mut o2 = o.clone();
    for p in ["/pki/2027/left-cert.pem", "/pki/2027/left-privkey.pem"] {
        o2.files
            .insert(p.into(), Some(crate::backend::files::sha256(p.as_bytes())));
    }
    assert_eq!(
        names(&plan(&moved, &o2)),
        [
            "unload private key /pki/left-privkey.pem",
            "load private key /pki/2027/left-privkey.pem",
            "load certificate /pki/2027/left-cert.pem",
            "unload certificate /pki/left-cert.pem",
        ]
    );
}

/// Authorities an earlier run left are unloaded last, after the bundles that may claim
/// them were loaded; with none left, nothing is planned for them.
#[test]
fn authorities_left_by_an_earlier_run_are_unloaded_after_the_bundles_load() {
    let d = desired(vec![cert_tunnel("t", "192.0.2.2", "right", true)], None);
    let mut o = Observed::default();
    pki_files(&mut o);
    Arc::make_mut(&mut o.loaded).adoptable = ["0011223344556677".to_owned()].into();
    let a = plan(&d, &o);
    let ca = a
        .iter()
        .position(|a| a.to_string() == "load CA certificate /pki/cacert.pem");
    assert!(ca.is_some_and(|i| i + 1 < a.len()), "{a:?}");
    assert_eq!(
        a.last(),
        Some(&Action::UnloadStaleAuthorities(vec![
            "0011223344556677".to_owned()
        ]))
    );
    let o = converge(&d, o.clone(), &a);
    assert!(
        !plan(&d, &o)
            .iter()
            .any(|a| matches!(a, Action::UnloadStaleAuthorities(_)))
    );
}

#[test]
fn psk_change_reloads_the_secret() {
    let d = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.3", 1)], None);
    let mut o = converge(&d, Observed::default(), &plan(&d, &Observed::default()));
    Arc::make_mut(&mut o.loaded).creds.insert(
        CredKey::Shared("g".into()),
        crate::backend::files::sha256(b"old secret"),
    );
    assert_eq!(names(&plan(&d, &o)), ["load pre-shared key of tunnel g"]);
}
