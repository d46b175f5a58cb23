//! What an IKE daemon holds for each tunnel, broken down per connection, for `diagnose`
//! ([`super::Backend::diagnose_view`]). Plain data: the backend fills it from a read-only
//! look at its daemon, diagnose turns it into findings.

use std::collections::BTreeMap;

use crate::model::{Desired, DesiredTunnel};

/// The state of an IKE SA (or of a Child SA) as the daemon lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaState {
    Established,
    /// Being set up (IKE_SA_INIT/IKE_AUTH sent or received, or rekeying).
    Negotiating,
    Absent,
}

impl SaState {
    /// A listed SA: established when `up`, else being negotiated.
    pub fn listed(up: bool) -> SaState {
        if up {
            SaState::Established
        } else {
            SaState::Negotiating
        }
    }

    /// The state of a connection that has these SAs: established if one is, negotiating if
    /// any other is listed, absent if none is.
    pub fn best(states: impl IntoIterator<Item = SaState>) -> SaState {
        states
            .into_iter()
            .fold(SaState::Absent, |acc, s| match (acc, s) {
                (SaState::Established, _) | (_, SaState::Established) => SaState::Established,
                _ => SaState::Negotiating,
            })
    }
}

/// One connection of a tunnel in the IKE daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnView {
    pub name: String,
    pub loaded: bool,
    pub ike: SaState,
    pub child: SaState,
    /// The daemon's last reason for a failure of this connection, if it gave one.
    pub reason: Option<String>,
}

/// What [`super::Backend::diagnose_view`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeView {
    /// The backend has no IKE daemon (static keys), or does not break its state down per
    /// connection: diagnose relies on the tunnel's live status.
    NotReported,
    /// The daemon could not be asked, with the reason.
    Unreachable(String),
    /// Each desired tunnel's connections, by tunnel name.
    Tunnels(BTreeMap<String, Vec<ConnView>>),
}

/// The view of every desired tunnel: `conn(tunnel, name)` describes its connection `name`.
pub fn per_tunnel(
    desired: &Desired,
    mut conn: impl FnMut(&DesiredTunnel, String) -> ConnView,
) -> BTreeMap<String, Vec<ConnView>> {
    desired
        .tunnels
        .iter()
        .map(|(name, t)| {
            let conns = t.conn_names().into_iter().map(|c| conn(t, c)).collect();
            (name.clone(), conns)
        })
        .collect()
}
