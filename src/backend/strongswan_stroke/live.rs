//! Parsed `ipsec statusall` → each tunnel's live state (pure).
//!
//! A tunnel is `up` when every one of its connections has an `INSTALLED` CHILD_SA,
//! `negotiating` when an IKE_SA of its peer configuration is being set up or is established
//! while a CHILD_SA is still missing, `down` when its connections are loaded (trap policies in
//! place) but nothing is negotiated, and `down` with a reason when charon does not have them.

use std::collections::{BTreeMap, BTreeSet};

use super::statusall::{IkeSa, Status};
use crate::backend::ike_view::{ConnView, SaState, per_tunnel};
use crate::backend::{LiveState, LiveStatus, Scope};
use crate::model::{Desired, DesiredTunnel};

const IKE_HEADING: &str = "IKE SAs:";
const CONN_HEADING: &str = "Connections loaded in charon:";

/// Lookups over one parsed status, built once per call of [`status`] so that the state of
/// N tunnels costs O(N log N), not O(N²). Sorted vectors rather than maps: at 10,000 tunnels
/// the index is alive at the peak of a full pass, and a map of vectors cost an allocation per
/// connection there.
struct Index<'a> {
    /// Loaded connection names, sorted, each once.
    loaded: Vec<&'a str>,
    /// (connection, peer configuration it was merged into), sorted by connection; of a
    /// connection listed under two peer configurations the last one counts.
    peer_of: Vec<(&'a str, &'a str)>,
    /// IKE_SAs by the connection names they can carry (their own name, and their children's),
    /// sorted by name; within a name each IKE_SA once, in charon's order.
    sas_of: Vec<(&'a str, &'a IkeSa)>,
    routed: &'a BTreeSet<String>,
}

/// The entries of `v` (sorted by name) named `key`.
fn named<'v, 'a, T>(v: &'v [(&'a str, T)], key: &str) -> &'v [(&'a str, T)] {
    let start = v.partition_point(|(k, _)| *k < key);
    let end = v.partition_point(|(k, _)| *k <= key);
    v.get(start..end).unwrap_or_default()
}

impl<'a> Index<'a> {
    fn new(st: &'a Status) -> Self {
        let mut sas_of: Vec<(&str, &IkeSa)> = (st.sas.iter())
            .flat_map(|ike| {
                std::iter::once(ike.name.as_str())
                    .chain(ike.children.iter().map(|c| c.name.as_str()))
                    .map(move |n| (n, ike))
            })
            .collect();
        // Stable: an IKE_SA's entries under one name are next to each other.
        sas_of.sort_by_key(|(a, _)| *a);
        sas_of.dedup_by(|(a, x), (b, y)| a == b && std::ptr::eq(*x, *y));
        let mut peer_of: Vec<(&str, &str)> = (st.peers.iter())
            .flat_map(|(p, kids)| kids.iter().map(move |k| (k.as_str(), p.as_str())))
            .collect();
        peer_of.sort_by_key(|(a, _)| *a);
        let mut loaded: Vec<&str> = st.peers.values().flatten().map(String::as_str).collect();
        loaded.sort_unstable();
        loaded.dedup();
        Self {
            loaded,
            peer_of,
            sas_of,
            routed: &st.routed,
        }
    }

    fn loaded(&self, conn: &str) -> bool {
        self.loaded.binary_search(&conn).is_ok()
    }

    fn routed(&self, conn: &str) -> bool {
        self.routed.contains(conn)
    }

    /// IKE_SAs that can carry `conn`: those named after the peer configuration it was merged
    /// into, or that list a CHILD_SA of it. Each once; borrowed from the index, so a tunnel's
    /// status allocates nothing to look them up.
    fn ike_sas_for<'s>(&'s self, conn: &'s str) -> impl Iterator<Item = &'a IkeSa> + Clone + 's {
        let peer = named(&self.peer_of, conn).last().map_or(conn, |(_, p)| *p);
        let own = named(&self.sas_of, conn);
        let of_peer = named(&self.sas_of, peer);
        own.iter().map(|(_, s)| *s).chain(
            of_peer
                .iter()
                .map(|(_, s)| *s)
                .filter(move |s| s.name == peer && !own.iter().any(|(_, x)| std::ptr::eq(*x, *s))),
        )
    }
}

fn tunnel_status(t: &DesiredTunnel, ix: &Index<'_>) -> LiveStatus {
    let conns = t.conn_names();
    let mut installed = 0;
    let mut negotiating = false;
    let mut ls = LiveStatus::new(LiveState::Down);
    // The IKE_SAs are listed in a section of their own after the connections', each once.
    let mut ikes: Vec<&IkeSa> = Vec::new();
    ls.details_mut().section(CONN_HEADING);
    for conn in conns.iter().filter(|c| ix.loaded(c)) {
        let routed = if ix.routed(conn) {
            "routed"
        } else {
            "not routed"
        };
        ls.details_mut()
            .push_fmt(format_args!("{conn}: loaded, {routed}"));
        let sas = ix.ike_sas_for(conn);
        let mut up = false;
        for c in sas.clone().flat_map(|ike| &ike.children) {
            if c.name == *conn && c.state() == "INSTALLED" {
                up = true;
                ls.active_mut()
                    .push_fmt(format_args!("{}{{{}}}: {}", c.name, c.id, c.line));
            }
        }
        let mut any_sa = false;
        for ike in sas {
            any_sa = true;
            let same = |s: &&IkeSa| (&s.name, s.id, &s.line) == (&ike.name, ike.id, &ike.line);
            if !ikes.iter().any(same) {
                ikes.push(ike);
            }
        }
        if up {
            installed += 1;
        } else {
            // An IKE_SA exists (being set up, or up while this CHILD_SA is not yet).
            negotiating |= any_sa;
        }
    }
    ls.details_mut().section(IKE_HEADING);
    for ike in ikes {
        ls.details_mut()
            .push_fmt(format_args!("{}[{}]: {}", ike.name, ike.id, ike.line));
    }
    let missing: Vec<&str> = conns
        .iter()
        .map(String::as_str)
        .filter(|c| !ix.loaded(c))
        .collect();
    ls.state = if !missing.is_empty() {
        LiveState::Down
    } else if installed == conns.len() {
        LiveState::Up
    } else if negotiating {
        LiveState::Negotiating
    } else {
        LiveState::Down
    };
    if !missing.is_empty() {
        ls.set_error(format!("not loaded in charon: {}", missing.join(", ")));
    }
    ls.shrink_to_fit();
    ls
}

/// The live state of every desired tunnel; `rejected` ones are errors with their reason.
pub fn status(
    desired: &Desired,
    st: &Status,
    rejected: &BTreeMap<String, String>,
) -> BTreeMap<String, LiveStatus> {
    status_in(desired, st, rejected, &Scope::All)
}

/// [`status`] of the desired tunnels in `scope` only.
pub fn status_in(
    desired: &Desired,
    st: &Status,
    rejected: &BTreeMap<String, String>,
    scope: &Scope,
) -> BTreeMap<String, LiveStatus> {
    let ix = Index::new(st);
    let tunnels: Box<dyn Iterator<Item = (&String, &DesiredTunnel)>> = match scope {
        Scope::All => Box::new(desired.tunnels.iter()),
        Scope::Tunnels(names) => Box::new(
            names
                .iter()
                .filter_map(|n| desired.tunnels.get_key_value(n)),
        ),
    };
    tunnels
        .map(|(name, t)| {
            let ls = match rejected.get(name) {
                Some(reason) => LiveStatus::failed(LiveState::Error, reason.as_str()),
                None => tunnel_status(t, &ix),
            };
            (name.clone(), ls)
        })
        .collect()
}

/// Each desired tunnel's connections as charon lists them, for `diagnose`.
pub fn views(desired: &Desired, st: &Status) -> BTreeMap<String, Vec<ConnView>> {
    let ix = Index::new(st);
    let state = |s: &str| SaState::listed(matches!(s, "ESTABLISHED" | "INSTALLED"));
    per_tunnel(desired, |_, conn| {
        let sas: Vec<&IkeSa> = ix.ike_sas_for(&conn).collect();
        ConnView {
            loaded: ix.loaded(&conn),
            ike: SaState::best(sas.iter().map(|s| state(s.state()))),
            child: SaState::best(
                sas.iter()
                    .flat_map(|s| &s.children)
                    .filter(|c| c.name == conn)
                    .map(|c| state(c.state())),
            ),
            name: conn,
            reason: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::statusall::{parse, tests::SAMPLE};
    use super::super::testutil::{desired, psk_tunnel};
    use super::*;

    #[test]
    fn states_from_real_statusall() {
        let d = desired(vec![
            psk_tunnel("tun", "vxlan", "192.0.2.2", "k", 1),
            psk_tunnel("gre9", "gre", "192.0.2.2", "k", 1),
            psk_tunnel("old", "geneve", "192.0.2.3", "k", 1),
            psk_tunnel("gone", "gre", "192.0.2.4", "k", 1),
        ]);
        let mut rejected = BTreeMap::new();
        rejected.insert("gone".to_string(), "bad".to_string());
        let sample = SAMPLE.replace(
            "      gre9-1:   child",
            "      gre9-1:   child:  x\n      old-in-1:   child:  y\n      old-out-1:   child",
        );
        let st = status(&d, &parse(&sample), &rejected);
        let tun = &st["tun"];
        assert_eq!(tun.state, LiveState::Up);
        assert_eq!(
            tun.active().iter().collect::<Vec<_>>(),
            [
                "tun-in-1{4}: INSTALLED, TRANSPORT, reqid 1, ESP SPIs: c0dc3410_i cb107296_o",
                "tun-out-1{3}: INSTALLED, TRANSPORT, reqid 2, ESP SPIs: ce04275e_i c41b58b3_o"
            ]
        );
        // gre9's CHILD_SA is not there but the shared IKE_SA is up: being negotiated.
        assert_eq!(st["gre9"].state, LiveState::Negotiating);
        assert_eq!(st["old"].state, LiveState::Negotiating);
        assert_eq!(st["gone"].state, LiveState::Error);
        let v = views(&d, &parse(&sample));
        let tun_in = &v["tun"][0];
        assert_eq!(
            (
                tun_in.name.as_str(),
                tun_in.loaded,
                tun_in.ike,
                tun_in.child
            ),
            ("tun-in-1", true, SaState::Established, SaState::Established)
        );
        assert_eq!(
            (v["gre9"][0].ike, v["gre9"][0].child),
            (SaState::Established, SaState::Absent)
        );
        assert!(views(&d, &parse("")).values().flatten().all(|c| !c.loaded));
        let none = status(&d, &parse(""), &BTreeMap::new());
        assert_eq!(none["tun"].state, LiveState::Down);
        assert_eq!(
            none["tun"].error(),
            Some("not loaded in charon: tun-in-1, tun-out-1")
        );
    }
}
