//! The live state of each tunnel from an observation (pure), for OVSDB and `tunnels/show`.
//!
//! - every conn has an ESP SA: `up`;
//! - a conn is not loaded in pluto: `down`, with the conns as the reason;
//! - all loaded, pluto shows a negotiation in progress, an IKE SA is established or a
//!   bring-up is pending: `negotiating`, with the reason: the states in progress, or an IKE
//!   SA up but no IPsec SA after it (e.g. a kernel without ESP);
//! - otherwise `down`: loaded, nothing negotiating.

use std::collections::BTreeMap;

use super::plan::Observed;
use super::status::PlutoStatus;
use crate::backend::ike_view::{ConnView, SaState, per_tunnel};
use crate::backend::{LiveState, LiveStatus, Scope};
use crate::model::{Desired, DesiredTunnel};

pub fn status(desired: &Desired, observed: &Observed) -> BTreeMap<String, LiveStatus> {
    status_in(desired, observed, &Scope::All)
}

/// [`status`] of the desired tunnels in `scope` only.
pub fn status_in(
    desired: &Desired,
    observed: &Observed,
    scope: &Scope,
) -> BTreeMap<String, LiveStatus> {
    let state = |(name, t): (&String, &DesiredTunnel)| (name.clone(), tunnel(t, observed));
    match scope {
        Scope::All => desired.tunnels.iter().map(state).collect(),
        Scope::Tunnels(names) => names
            .iter()
            .filter_map(|n| desired.tunnels.get_key_value(n))
            .map(state)
            .collect(),
    }
}

fn tunnel(t: &DesiredTunnel, observed: &Observed) -> LiveStatus {
    let st = &observed.pluto;
    let conns = t.conn_names();
    let missing = |set: &std::collections::BTreeSet<String>| -> Vec<String> {
        conns
            .iter()
            .filter(|c| !set.contains(*c))
            .cloned()
            .collect()
    };
    let not_loaded = missing(&st.loaded);
    let not_active = missing(&st.active);
    let ike_up: Vec<&String> = conns.iter().filter(|c| st.ike_up.contains(*c)).collect();
    let pending = conns.iter().any(|c| observed.pending.contains_key(c));
    let in_progress: Vec<String> = conns
        .iter()
        .filter_map(|c| st.negotiating.get(c).map(|s| format!("{c} ({s})")))
        .collect();

    let (state, error) = if not_active.is_empty() {
        (LiveState::Up, None)
    } else if !not_loaded.is_empty() {
        (
            LiveState::Down,
            Some(format!("not loaded in pluto: {}", not_loaded.join(", "))),
        )
    } else if !ike_up.is_empty() {
        // pluto 5 keeps retrying a Child SA the kernel refused (NEW_CHILD_I1): say both.
        let mut why = format!(
            "IKE SA established but no IPsec SA for {}",
            not_active.join(", ")
        );
        if !in_progress.is_empty() {
            why.push_str(&format!("; negotiating: {}", in_progress.join(", ")));
        }
        (LiveState::Negotiating, Some(why))
    } else if !in_progress.is_empty() {
        (
            LiveState::Negotiating,
            Some(format!("negotiating: {}", in_progress.join(", "))),
        )
    } else if pending && observed.gre_answers.contains(&t.conf.name) {
        (
            LiveState::Negotiating,
            Some("waiting for the peer to start it (the end with the lower address starts a GRE tunnel)".into()),
        )
    } else if pending {
        (LiveState::Negotiating, None)
    } else {
        (
            LiveState::Down,
            Some(format!("not established: {}", not_active.join(", "))),
        )
    };
    let mut live = LiveStatus::new(state);
    if let Some(error) = error {
        live.set_error(error);
    }
    for c in conns.iter().filter(|c| st.active.contains(*c)) {
        live.push_active(c);
    }
    live.add_details(
        "IPsec connections that are active",
        conns
            .iter()
            .flat_map(|c| st.active_lines.get(c).into_iter().flatten()),
    );
    live.add_details(
        "IPsec connections loaded",
        conns.iter().filter(|c| st.loaded.contains(*c)),
    );
    live.shrink_to_fit();
    live
}

/// Each desired tunnel's conns as pluto lists them, for `diagnose`. A conn with an ESP SA has
/// its Child SA; pluto shares one IKE SA per peer, which `ike_up` already accounts for.
pub fn views(desired: &Desired, st: &PlutoStatus) -> BTreeMap<String, Vec<ConnView>> {
    per_tunnel(desired, |_, c| {
        let negotiating = st.negotiating.contains_key(&c);
        let active = st.active.contains(&c);
        let ike = if st.ike_up.contains(&c) || active {
            SaState::Established
        } else if negotiating {
            SaState::Negotiating
        } else {
            SaState::Absent
        };
        let child = if active {
            SaState::Established
        } else if negotiating && ike == SaState::Established {
            SaState::Negotiating
        } else {
            SaState::Absent
        };
        ConnView {
            loaded: st.loaded.contains(&c),
            name: c,
            ike,
            child,
            reason: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::strongswan_stroke::testutil::{desired, psk_tunnel};

    #[test]
    fn views_follow_pluto_s_status() {
        let d = desired(vec![psk_tunnel("tun", "geneve", "192.0.2.2", "k", 1)]);
        let mut st = PlutoStatus::default();
        st.loaded.insert("tun-in-1".into());
        st.loaded.insert("tun-out-1".into());
        st.negotiating
            .insert("tun-out-1".into(), "STATE_V2_PARENT_I1".into());
        let v = &views(&d, &st)["tun"];
        let got: Vec<_> = v.iter().map(|c| (c.loaded, c.ike, c.child)).collect();
        assert_eq!(
            got,
            [
                (true, SaState::Absent, SaState::Absent),
                (true, SaState::Negotiating, SaState::Absent)
            ]
        );
        st.ike_up.insert("tun-in-1".into());
        st.ike_up.insert("tun-out-1".into());
        st.active.insert("tun-in-1".into());
        let v = &views(&d, &st)["tun"];
        assert_eq!(
            (v[0].ike, v[0].child),
            (SaState::Established, SaState::Established)
        );
        assert_eq!(
            (v[1].ike, v[1].child),
            (SaState::Established, SaState::Negotiating)
        );
        assert!(
            views(&d, &PlutoStatus::default())["tun"]
                .iter()
                .all(|c| !c.loaded)
        );
    }
}
