//! `track_states` scoped to the changed tunnels keeps the same counts as a pass over all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Metrics, View};
use crate::backend::{BackendKind, LiveState, LiveStatus};
use crate::model::{Auth, Secret, Tunnel, TunnelConf, TunnelType, Validity};

fn tunnel(name: &str) -> Tunnel {
    let ip = "192.0.2.2".parse().unwrap();
    let conf = TunnelConf::new(name, TunnelType::Geneve, ip, Auth::Psk(Secret::new("x")));
    Tunnel {
        uuid: format!("u-{name}"),
        name: name.into(),
        version: 1,
        validity: Validity::Valid(Arc::new(conf)),
        raw: Box::default(),
        ofport: None,
        cfm_fault: None,
    }
}

fn track(m: &mut Metrics, tunnels: &[&str], up: &[&str], changed: Option<&[&str]>) {
    let tunnels: BTreeMap<String, Tunnel> =
        tunnels.iter().map(|n| (n.to_string(), tunnel(n))).collect();
    let live: BTreeMap<String, LiveStatus> = tunnels
        .keys()
        .map(|n| {
            let state = if up.contains(&n.as_str()) {
                LiveState::Up
            } else {
                LiveState::Down
            };
            (n.clone(), LiveStatus::new(state))
        })
        .collect();
    let (errors, alerts) = (BTreeMap::new(), BTreeMap::new());
    let view = View {
        tunnels: &tunnels,
        live: &live,
        apply_errors: &errors,
        cert_alerts: &alerts,
        backend_error: false,
    };
    let changed: Option<BTreeSet<String>> =
        changed.map(|c| c.iter().map(|n| n.to_string()).collect());
    m.track_states(&view, changed.as_ref());
}

fn tracked(m: &Metrics) -> Vec<(String, &'static str, u64)> {
    (m.tunnels.iter())
        .map(|(n, t)| (n.clone(), t.state, t.changes))
        .collect()
}

#[test]
fn scoped_tracking_counts_as_a_full_pass_does() {
    let mut full = Metrics::new(BackendKind::None, true);
    let mut scoped = Metrics::new(BackendKind::None, true);
    for m in [&mut full, &mut scoped] {
        track(m, &["a", "b", "c"], &[], None);
    }
    // b comes up, c is removed, d appears: the scoped call names exactly those.
    track(&mut full, &["a", "b", "d"], &["b"], None);
    track(
        &mut scoped,
        &["a", "b", "d"],
        &["b"],
        Some(&["b", "c", "d"]),
    );
    assert_eq!(tracked(&scoped), tracked(&full));
    assert_eq!(
        tracked(&scoped),
        [
            ("a".to_owned(), "down", 0),
            ("b".to_owned(), "up", 1),
            ("d".to_owned(), "down", 0)
        ]
    );
    // A tunnel left out of the scope keeps what was tracked for it.
    track(&mut scoped, &["a", "b", "d"], &["a", "b"], Some(&[]));
    assert_eq!(tracked(&scoped), tracked(&full));
}
