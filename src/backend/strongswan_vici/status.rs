//! Live state of each tunnel from `list-conns` and `list-sas` (pure).
//!
//! A tunnel is `up` when each of its children (`X-N` for gre, both `X-in-N` and `X-out-N` for
//! geneve/vxlan: traffic needs both directions) has an INSTALLED CHILD_SA, `negotiating` while
//! its IKE_SA or a CHILD_SA is being set up, `down` otherwise (an ESTABLISHED IKE_SA whose
//! children could not be installed is down, and the details say so), and `error` when its
//! `ipsec_*` options cannot be expressed in swanctl or its connection is not loaded.

use std::collections::{BTreeMap, HashMap};

use super::conns::{ConnMemo, ike_conn_name};
use super::observe::{IkeSa, Observed, ObservedConn};
use crate::backend::ike_view::{ConnView, SaState, per_tunnel};
use crate::backend::{LiveState, LiveStatus, Scope};
use crate::model::{Desired, DesiredTunnel};

const NEGOTIATING_IKE: &[&str] = &["CREATED", "CONNECTING", "PASSIVE", "REKEYING"];
const NEGOTIATING_CHILD: &[&str] = &["CREATED", "INSTALLING", "REKEYING", "UPDATING"];

pub fn status(desired: &Desired, observed: &Observed) -> BTreeMap<String, LiveStatus> {
    status_with(&ConnMemo::default(), desired, observed)
}

/// [`status`], with the connections of unchanged tunnels taken from `memo`.
pub fn status_with(
    memo: &ConnMemo,
    desired: &Desired,
    observed: &Observed,
) -> BTreeMap<String, LiveStatus> {
    let (_, rejected) = memo.conns(desired);
    let mut by_conn: HashMap<&str, Vec<&IkeSa>> = HashMap::new();
    for sa in &observed.sas {
        by_conn.entry(sa.conn.as_str()).or_default().push(sa);
    }
    desired
        .tunnels
        .iter()
        .map(|(name, t)| {
            let st = match rejected.get(name) {
                Some(reason) => rejected_status(reason),
                None => {
                    let conn = ike_conn_name(t);
                    let ike = by_conn.get(conn.as_str()).map_or(&[][..], Vec::as_slice);
                    tunnel_status(t, conn, ike, observed)
                }
            };
            (name.clone(), st)
        })
        .collect()
}

/// [`status_with`] for the desired tunnels in `scope` only.
pub fn status_in(
    memo: &ConnMemo,
    desired: &Desired,
    observed: &Observed,
    scope: &Scope,
) -> BTreeMap<String, LiveStatus> {
    let Scope::Tunnels(names) = scope else {
        return status_with(memo, desired, observed);
    };
    names
        .iter()
        .filter_map(|name| desired.tunnels.get_key_value(name))
        .map(|(name, t)| {
            let st = match memo.conn(name, t) {
                Err(reason) => rejected_status(&reason),
                Ok(_) => {
                    let conn = ike_conn_name(t);
                    let ike: Vec<&IkeSa> =
                        observed.sas.iter().filter(|sa| sa.conn == conn).collect();
                    tunnel_status(t, conn, &ike, observed)
                }
            };
            (name.clone(), st)
        })
        .collect()
}

fn rejected_status(reason: &str) -> LiveStatus {
    LiveStatus::failed(LiveState::Error, reason)
}

/// One tunnel's state, from its connection `conn` and that connection's IKE_SAs.
fn tunnel_status(
    t: &DesiredTunnel,
    conn: String,
    ike: &[&IkeSa],
    observed: &Observed,
) -> LiveStatus {
    let conns = t.conn_names();
    let children: Vec<_> = ike
        .iter()
        .flat_map(|sa| &sa.children)
        .filter(|c| conns.contains(&c.name))
        .collect();
    let installed = |c: &str| {
        children
            .iter()
            .any(|ch| ch.name == c && ch.state == "INSTALLED")
    };
    let loaded = observed.conns.get(&conn);
    let negotiating = ike
        .iter()
        .any(|sa| NEGOTIATING_IKE.contains(&sa.state.as_str()))
        || children
            .iter()
            .any(|c| NEGOTIATING_CHILD.contains(&c.state.as_str()));
    let mut st = if loaded.is_none() {
        LiveStatus::failed(
            LiveState::Error,
            format!("connection {conn} is not loaded in charon"),
        )
    } else if conns.iter().all(|c| installed(c)) {
        LiveStatus::new(LiveState::Up)
    } else if negotiating {
        LiveStatus::new(LiveState::Negotiating)
    } else {
        LiveStatus::new(LiveState::Down)
    };
    for c in conns.iter().filter(|c| installed(c)) {
        st.push_active(c);
    }
    let details = st.details_mut();
    details.section("Connections loaded in charon");
    if let Some(c) = loaded {
        let children: Vec<&str> = c.children.keys().map(String::as_str).collect();
        details.push_fmt(format_args!("{conn}: children {}", children.join(", ")));
    }
    details.section("IKE SAs");
    for sa in ike {
        details.push_fmt(format_args!(
            "{}: {} {}...{}",
            sa.conn, sa.state, sa.local, sa.remote
        ));
    }
    details.section("Child SAs");
    for c in &children {
        details.push_fmt(format_args!(
            "{}: {} {} {} === {}",
            c.name,
            c.state,
            c.mode,
            c.local_ts.join(","),
            c.remote_ts.join(",")
        ));
    }
    st.shrink_to_fit();
    st
}

/// Each desired tunnel's connections (its children) as charon lists them, for `diagnose`.
pub fn views(
    desired: &Desired,
    conns: &BTreeMap<String, ObservedConn>,
    sas: &[IkeSa],
) -> BTreeMap<String, Vec<ConnView>> {
    per_tunnel(desired, |t, child| {
        let conn = ike_conn_name(t);
        let ike: Vec<&IkeSa> = sas.iter().filter(|sa| sa.conn == conn).collect();
        ConnView {
            loaded: conns
                .get(&conn)
                .is_some_and(|c| c.children.contains_key(&child)),
            ike: SaState::best(
                ike.iter()
                    .map(|sa| SaState::listed(sa.state == "ESTABLISHED")),
            ),
            child: SaState::best(
                ike.iter()
                    .flat_map(|sa| &sa.children)
                    .filter(|c| c.name == child)
                    .map(|c| SaState::listed(c.state == "INSTALLED")),
            ),
            name: child,
            reason: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::strongswan_vici::observe::{ChildSa, ObservedConn};
    use crate::backend::strongswan_vici::test_support::{desired, psk_tunnel};
    use crate::model::TunnelType;
    use std::sync::Arc;

    fn loaded(conn: &str, children: &[&str]) -> Observed {
        let mut o = Observed::default();
        Arc::make_mut(&mut o.conns).insert(
            conn.to_string(),
            ObservedConn {
                children: children
                    .iter()
                    .map(|c| (c.to_string(), "TRANSPORT".to_string()))
                    .collect(),
            },
        );
        o
    }

    fn child(name: &str, state: &str) -> ChildSa {
        ChildSa {
            name: name.into(),
            state: state.into(),
            mode: "TRANSPORT".into(),
            ..Default::default()
        }
    }

    #[test]
    fn states_follow_the_sas() {
        let d = desired(
            vec![psk_tunnel("vx", TunnelType::Vxlan, "192.0.2.2", 1)],
            None,
        );
        let mut o = loaded("vx-1", &["vx-in-1", "vx-out-1"]);
        assert_eq!(status(&d, &o)["vx"].state, LiveState::Down);

        o.sas.push(IkeSa {
            conn: "vx-1".into(),
            state: "CONNECTING".into(),
            ..Default::default()
        });
        assert_eq!(status(&d, &o)["vx"].state, LiveState::Negotiating);

        // One direction installed is not enough: geneve/vxlan traffic needs both.
        o.sas[0].state = "ESTABLISHED".into();
        o.sas[0].children = vec![
            child("vx-out-1", "INSTALLED"),
            child("vx-in-1", "INSTALLING"),
        ];
        assert_eq!(status(&d, &o)["vx"].state, LiveState::Negotiating);
        o.sas[0].children[1].state = "INSTALLED".into();
        let st = &status(&d, &o)["vx"];
        assert_eq!(st.state, LiveState::Up);
        assert_eq!(
            st.active().iter().collect::<Vec<_>>(),
            ["vx-in-1", "vx-out-1"]
        );
        let details: Vec<Vec<&str>> = st.details().iter().map(|(_, l)| l.collect()).collect();
        assert_eq!(details[0], ["vx-1: children vx-in-1, vx-out-1"]);
        assert_eq!(details[1], ["vx-1: ESTABLISHED ..."]);
        assert_eq!(details[2].len(), 2);
        let v = &views(&d, &o.conns, &o.sas)["vx"];
        assert_eq!(
            v.iter()
                .map(|c| (c.name.as_str(), c.loaded, c.ike, c.child))
                .collect::<Vec<_>>(),
            [
                ("vx-in-1", true, SaState::Established, SaState::Established),
                ("vx-out-1", true, SaState::Established, SaState::Established)
            ]
        );

        // A CHILD_SA of that name under someone else's IKE_SA is not ours.
        let mut other = o.clone();
        other.sas[0].conn = "admin".into();
        assert_eq!(status(&d, &other)["vx"].state, LiveState::Down);

        // IKE up but the CHILD_SAs could not be installed: down, and the details say why.
        o.sas[0].children.clear();
        assert_eq!(status(&d, &o)["vx"].state, LiveState::Down);
        let v = &views(&d, &o.conns, &o.sas)["vx"];
        assert_eq!(
            (v[0].ike, v[0].child),
            (SaState::Established, SaState::Absent)
        );
        let v = &views(&d, &Default::default(), &[])["vx"];
        assert!(v.iter().all(|c| !c.loaded && c.ike == SaState::Absent));
    }

    #[test]
    fn unloaded_connection_is_an_error() {
        let d = desired(vec![psk_tunnel("g", TunnelType::Gre, "192.0.2.2", 2)], None);
        let st = &status(&d, &Observed::default())["g"];
        assert_eq!(st.state, LiveState::Error);
        assert_eq!(st.error(), Some("connection g-2 is not loaded in charon"));
    }
}
