//! The certificate part of the plan: nicknames wanted, kept, removed, imported; CA bundles
//! member by member.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::certs::{ca_nick, wanted_certs};
use super::nss::{CertSource, OLD_CA_NICK};
use super::plan::{self, Action, Memory, Observed};
use super::plan_tests::observed;
use super::tests::cert_desired;
use crate::model::Desired;
use crate::model::bundle::BundleCa;

/// A bundle member (its DER is not parsed by the plan).
fn ca(name: &str) -> BundleCa {
    let der = name.as_bytes().to_vec();
    BundleCa {
        sha256: Sha256::digest(&der).into(),
        der,
        subject: format!("CN={name}"),
    }
}

/// Memory and observation of a database holding exactly `nicks`, imported by us, with
/// `cas` as the bundle read.
fn certs_in_sync(nicks: &BTreeMap<String, CertSource>, cas: &[BundleCa]) -> (Memory, Observed) {
    let mut m = Memory::default();
    for (n, s) in nicks {
        m.synced.insert(n.clone(), (s.clone(), None));
    }
    let mut o = observed(&[], &[]);
    o.nss = Some(nicks.keys().cloned().collect());
    o.cert_hashes = nicks.keys().map(|n| (n.clone(), None)).collect();
    o.ca_bundle = Some(Ok(cas.to_vec()));
    (m, o)
}

fn certs(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter(|a| {
            matches!(
                a,
                Action::ImportCert { .. }
                    | Action::RemoveCert { .. }
                    | Action::KeepCert { .. }
                    | Action::BadBundle { .. }
            )
        })
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_bundle_member_gets_its_own_nickname_and_only_changes_are_planned() {
    let d = cert_desired(true);
    let (ca1, ca2, ca3) = (ca("ca1"), ca("ca2"), ca("ca3"));
    let nicks = wanted_certs(&d, &[ca2.clone(), ca1.clone()]);
    assert!(ca_nick(&ca1).starts_with("ovs-ca-") && ca_nick(&ca1).len() == 7 + 16);
    for c in [&ca1, &ca2] {
        assert_eq!(nicks[&ca_nick(c)], CertSource::Ca(c.der.clone()));
    }
    let (m, mut o) = certs_in_sync(&nicks, &[ca2.clone(), ca1.clone()]);
    assert_eq!(certs(&plan::plan(&d, &o, &m, None)), Vec::<String>::new());
    // CA1 out, CA3 in: CA2 is not touched.
    o.ca_bundle = Some(Ok(vec![ca2.clone(), ca3.clone()]));
    assert_eq!(
        certs(&plan::plan(&d, &o, &m, None)),
        [
            format!(
                "Removing certificate {} from the NSS database",
                ca_nick(&ca1)
            ),
            format!(
                "Importing certificate {} into the NSS database",
                ca_nick(&ca3)
            ),
        ]
    );
}

#[test]
fn after_a_restart_listed_members_stay_and_stale_ones_of_ours_go() {
    let d = cert_desired(true);
    let (ca1, ca2) = (ca("ca1"), ca("ca2"));
    // A new monitor: nothing in memory; NSS holds CA2 (still listed), CA1 (dropped while it
    // was down), the single CA of an earlier version, and an admin's own CA.
    let mut o = observed(&[], &[]);
    o.ca_bundle = Some(Ok(vec![ca2.clone()]));
    o.nss = Some(
        [ca_nick(&ca1), ca_nick(&ca2), OLD_CA_NICK.to_owned()]
            .into_iter()
            .collect(),
    );
    let a = certs(&plan::plan(&d, &o, &Memory::default(), None));
    assert_eq!(
        a,
        [
            format!(
                "Removing certificate {} from the NSS database",
                ca_nick(&ca1)
            ),
            format!("Removing certificate {OLD_CA_NICK} from the NSS database"),
            "Importing certificate ovs_certkey_left into the NSS database".to_owned(),
        ]
    );
}

#[test]
fn an_unusable_bundle_is_reported_and_changes_no_member() {
    let d = cert_desired(true);
    let ca1 = ca("ca1");
    let nicks = wanted_certs(&d, std::slice::from_ref(&ca1));
    let (m, mut o) = certs_in_sync(&nicks, std::slice::from_ref(&ca1));
    o.ca_bundle = Some(Err(
        "CA bundle '/etc/keys/cacert.pem': member 2 is not a valid X.509 certificate".into(),
    ));
    assert_eq!(
        certs(&plan::plan(&d, &o, &m, None)),
        [
            "CA bundle '/etc/keys/cacert.pem': member 2 is not a valid X.509 certificate; the CAs in the NSS database stay as they are"
        ]
    );
}

#[test]
fn shared_peer_certificate_stays_until_its_last_tunnel_goes() {
    let mut d = cert_desired(false);
    let mut second = d.tunnels["gnv1"].clone();
    Arc::make_mut(&mut second.conf).name = "gnv2".into();
    d.tunnels.insert("gnv2".into(), second);
    let nicks = wanted_certs(&d, &[]);
    assert!(nicks.contains_key("ovs_cert_right"));
    let (mut m, o) = certs_in_sync(&nicks, &[]);
    d.tunnels.remove("gnv1");
    let a = plan::plan(&d, &o, &m, None);
    assert!(
        !a.iter().any(|a| matches!(a, Action::RemoveCert { .. })),
        "{a:?}"
    );
    d.tunnels.remove("gnv2");
    let a = plan::plan(&d, &o, &m, None);
    // Kept, not removed: pluto may hold a copy (see nss::is_peer).
    let keep = Action::KeepCert {
        nick: "ovs_cert_right".into(),
    };
    assert!(a.contains(&keep), "{a:?}");
    assert!(
        !a.iter().any(|a| matches!(a, Action::RemoveCert { .. })),
        "{a:?}"
    );
    // Once kept, later passes leave it alone; wanted again, it is imported (checked).
    m.synced.remove("ovs_cert_right");
    m.kept.insert("ovs_cert_right".into());
    assert!(!plan::plan(&d, &o, &m, None).contains(&keep));
    let d = cert_desired(false);
    assert!(
        plan::plan(&d, &o, &m, None)
            .iter()
            .any(|a| matches!(a, Action::ImportCert { nick, .. } if nick == "ovs_cert_right"))
    );
}

#[test]
fn no_peer_certificate_is_kept_while_a_ca_is_trusted() {
    // Self-signed gnv1 beside a CA-signed tunnel: the CA is trusted.
    let ca_only = cert_desired(true);
    let mut d = cert_desired(false);
    d.global = ca_only.global.clone();
    let ca1 = ca("ca1");
    let nicks = wanted_certs(&d, std::slice::from_ref(&ca1));
    assert!(nicks.contains_key(&ca_nick(&ca1)) && nicks.contains_key("ovs_cert_right"));
    let (mut m, o) = certs_in_sync(&nicks, std::slice::from_ref(&ca1));
    // gnv1 goes: its certificate would be a trust anchor for CA-signed peers.
    let a = plan::plan(&ca_only, &o, &m, None);
    let remove = Action::RemoveCert {
        nick: "ovs_cert_right".into(),
    };
    assert!(a.contains(&remove), "{a:?}");
    assert!(
        !a.iter().any(|a| matches!(a, Action::KeepCert { .. })),
        "{a:?}"
    );
    // One kept in self-signed mode goes as soon as a CA is configured.
    m.synced.remove("ovs_cert_right");
    m.kept.insert("ovs_cert_right".into());
    assert!(plan::plan(&ca_only, &o, &m, None).contains(&remove));
}

#[test]
fn unused_ca_and_local_certificates_are_removed() {
    let d = cert_desired(true);
    let ca1 = ca("ca1");
    let nicks = wanted_certs(&d, std::slice::from_ref(&ca1));
    let (m, mut o) = certs_in_sync(&nicks, std::slice::from_ref(&ca1));
    o.ca_bundle = None;
    let a = plan::plan(&Desired::default(), &o, &m, None);
    for nick in nicks.keys() {
        assert!(
            a.contains(&Action::RemoveCert { nick: nick.clone() }),
            "{nick}: {a:?}"
        );
    }
}

#[test]
fn a_renewed_file_is_imported_again_and_a_touched_one_is_not() {
    let d = cert_desired(false);
    let nicks = wanted_certs(&d, &[]);
    let mut m = Memory::default();
    for (n, s) in &nicks {
        m.synced.insert(n.clone(), (s.clone(), Some([7; 32])));
    }
    let mut o = observed(&[], &[]);
    // Touched (mtime only): the content hash is the same, nothing to do.
    o.cert_hashes = nicks.keys().map(|n| (n.clone(), Some([7; 32]))).collect();
    assert_eq!(certs(&plan::plan(&d, &o, &m, None)), Vec::<String>::new());
    // Our certificate renewed in place.
    o.cert_hashes
        .insert("ovs_certkey_left".into(), Some([8; 32]));
    assert_eq!(
        certs(&plan::plan(&d, &o, &m, None)),
        ["Importing certificate ovs_certkey_left into the NSS database"]
    );
    // Renewed at a new path: the new file is compared and imported when it differs.
    let mut d = cert_desired(false);
    let mut pki = (**d.global.pki.as_ref().unwrap()).clone();
    pki.certificate = "/etc/keys/left-cert-2.pem".into();
    d.global.pki = Some(Arc::new(pki));
    o.cert_hashes
        .insert("ovs_certkey_left".into(), Some([7; 32]));
    assert_eq!(
        certs(&plan::plan(&d, &o, &m, None)),
        ["Importing certificate ovs_certkey_left into the NSS database"]
    );
}
