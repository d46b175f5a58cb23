//! Passes against a stub `ipsec` whose `statusall` lists what our file defines: a pass over a
//! few tunnels plans only for those; connection names follow the published version even when
//! the text does not change; a connection charon lost comes back without waiting out the
//! reload back-off.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::plan::Action;
use super::testutil::{desired, psk_tunnel, rendered, templates};
use super::{Paths, StrongSwanStroke};
use crate::backend::files::{CONFIG_MODE, SECRET_MODE, write_if_changed};
use crate::backend::{Backend, Scope};
use crate::model::Desired;

/// A root whose `ipsec` logs its calls and lists the connections of `etc/ipsec.conf`, except
/// those named in `etc/lost` (connections charon lost).
fn root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in ["etc", "usr/sbin"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let stub = dir.path().join("usr/sbin/ipsec");
    let r = dir.path().display();
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"$*\" >> {r}/calls\ntouch {r}/etc/lost\n\
             [ \"$1\" = statusall ] || exit 0\necho Connections:\n\
             grep -o '^conn [^%][^ ]*' {r}/etc/ipsec.conf | cut -d' ' -f2 | grep -vxF -f {r}/etc/lost \
             | while read c; do printf '%12s:  %%any...192.0.2.2  IKEv2\\n%12s:   child:  dynamic === dynamic TRANSPORT\\n' $c $c; done\n\
             echo 'Security Associations (0 up, 0 connecting):'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Writes the files a monitor that wanted `d` left behind.
fn disk(root: &std::path::Path, d: &Desired) {
    let r = rendered(d);
    let p = Paths::new(root);
    write_if_changed(&p.conf, r.conf.as_bytes(), CONFIG_MODE).unwrap();
    write_if_changed(&p.secrets, r.secrets.as_bytes(), SECRET_MODE).unwrap();
}

fn scope(names: &[&str]) -> Scope {
    Scope::Tunnels(names.iter().map(|n| n.to_string()).collect())
}

#[tokio::test(flavor = "current_thread")]
async fn a_scoped_pass_plans_its_tunnels_and_leaves_other_drift_to_the_full_pass() {
    let dir = root();
    let mut be =
        StrongSwanStroke::with(Paths::new(dir.path()), templates(), Duration::from_secs(10));
    let now = desired(vec![
        psk_tunnel("a", "vxlan", "192.0.2.2", "k", 1),
        psk_tunnel("b", "gre", "192.0.2.3", "k", 3),
    ]);
    disk(dir.path(), &now);
    let all = be.observe_in(&now, &Scope::All).await.unwrap();
    assert_eq!(be.plan_in(&now, &all, &Scope::All), vec![]);

    // a changes: a pass over a alone.
    let changed = desired(vec![
        psk_tunnel("a", "vxlan", "192.0.2.9", "k", 2),
        psk_tunnel("b", "gre", "192.0.2.3", "k", 3),
    ]);
    let obs = be.observe_in(&changed, &scope(&["a"])).await.unwrap();
    let loaded: BTreeSet<&str> = obs.status.loaded();
    assert_eq!(
        loaded,
        BTreeSet::from(["a-in-1", "a-out-1"]),
        "a's part only"
    );
    let actions = be.plan_in(&changed, &obs, &scope(&["a"]));
    assert_eq!(
        actions,
        vec![Action::WriteFiles, Action::RereadSecrets, Action::Update]
    );
    be.apply(&changed, actions).await.unwrap();
    let conf = std::fs::read_to_string(dir.path().join("etc/ipsec.conf")).unwrap();
    assert!(conf.contains("conn b-3\n"), "{conf}");
    assert!(
        conf.contains("conn a-in-2\n") && !conf.contains("conn a-in-1"),
        "{conf}"
    );
    let status = be.status_in(&changed, &obs, &scope(&["a"]));
    assert_eq!(status.keys().collect::<Vec<_>>(), ["a"]);

    // charon loses b-3: a pass over a does not see it, the full pass reloads.
    be.last_reload = None;
    std::fs::write(dir.path().join("etc/lost"), "b-3\n").unwrap();
    let obs = be.observe_in(&changed, &scope(&["a"])).await.unwrap();
    assert_eq!(be.plan_in(&changed, &obs, &scope(&["a"])), vec![]);
    let obs = be.observe_in(&changed, &Scope::All).await.unwrap();
    assert_eq!(
        be.plan_in(&changed, &obs, &Scope::All),
        vec![Action::Reconcile(vec!["b-3".into()])]
    );
}

/// Issue 22, first case: a version bump whose text is the same (nothing stroke renders
/// changed) still renames the connections, so that names carry the published version.
#[tokio::test(flavor = "current_thread")]
async fn names_follow_the_version_even_when_the_text_does_not_change() {
    let dir = root();
    let mut be =
        StrongSwanStroke::with(Paths::new(dir.path()), templates(), Duration::from_secs(10));
    let v1 = desired(vec![psk_tunnel("g1", "geneve", "192.0.2.2", "k", 1)]);
    disk(dir.path(), &v1);
    let obs = be.observe_in(&v1, &Scope::All).await.unwrap();
    assert_eq!(be.plan_in(&v1, &obs, &Scope::All), vec![]);
    let v2 = desired(vec![psk_tunnel("g1", "geneve", "192.0.2.2", "k", 2)]);
    let obs = be.observe_in(&v2, &Scope::All).await.unwrap();
    let actions = be.plan_in(&v2, &obs, &Scope::All);
    assert_eq!(actions, vec![Action::WriteFiles, Action::Update]);
    be.apply(&v2, actions).await.unwrap();
    let conf = std::fs::read_to_string(dir.path().join("etc/ipsec.conf")).unwrap();
    assert!(
        conf.contains("conn g1-in-2\n") && !conf.contains("g1-in-1"),
        "{conf}"
    );
    let obs = be.observe_in(&v2, &Scope::All).await.unwrap();
    assert_eq!(
        obs.status.loaded(),
        BTreeSet::from(["g1-in-2", "g1-out-2"]),
        "charon holds the new names only"
    );
}

/// Issue 22, second case: right after our own reload (inside the minute of back-off), a
/// connection charon held and then lost is reloaded at once, and only once: if it stays
/// missing, it waits for the back-off like a connection charon refuses.
#[tokio::test(flavor = "current_thread")]
async fn a_lost_connection_is_reloaded_inside_the_back_off_once() {
    let dir = root();
    let mut be =
        StrongSwanStroke::with(Paths::new(dir.path()), templates(), Duration::from_secs(10));
    let d = desired(vec![
        psk_tunnel("a", "vxlan", "192.0.2.2", "k", 1),
        psk_tunnel("b", "gre", "192.0.2.3", "k", 1),
    ]);
    let obs = be.observe_in(&d, &Scope::All).await.unwrap();
    let actions = be.plan_in(&d, &obs, &Scope::All);
    be.apply(&d, actions).await.unwrap();
    let obs = be.observe_in(&d, &Scope::All).await.unwrap();
    assert_eq!(be.plan_in(&d, &obs, &Scope::All), vec![]);
    assert!(obs.backoff, "our update was just now");

    // Right after our update, which charon has carried out: charon loses b-1.
    std::fs::write(dir.path().join("etc/lost"), "b-1\n").unwrap();
    let obs = be.observe_in(&d, &Scope::All).await.unwrap();
    assert_eq!(obs.lost, BTreeSet::from(["b-1".to_string()]));
    let actions = be.plan_in(&d, &obs, &Scope::All);
    assert_eq!(actions, vec![Action::Reconcile(vec!["b-1".into()])]);
    be.apply(&d, actions).await.unwrap();
    // charon refuses it this time (the stub still hides it): no second reload in the minute.
    be.last_reload = Some(std::time::Instant::now() - Duration::from_secs(10));
    let obs = be.observe_in(&d, &Scope::All).await.unwrap();
    assert!(obs.lost.is_empty());
    assert_eq!(be.plan_in(&d, &obs, &Scope::All), vec![]);
    // It comes back: lost again later, it is reloaded at once again.
    std::fs::write(dir.path().join("etc/lost"), "").unwrap();
    let obs = be.observe_in(&d, &Scope::All).await.unwrap();
    assert_eq!(be.plan_in(&d, &obs, &Scope::All), vec![]);
    std::fs::write(dir.path().join("etc/lost"), "b-1\n").unwrap();
    let obs = be.observe_in(&d, &Scope::All).await.unwrap();
    assert_eq!(
        be.plan_in(&d, &obs, &Scope::All),
        vec![Action::Reconcile(vec!["b-1".into()])]
    );
}
