//! Tunnel and monitor state written back to OVSDB.
//!
//! `external_ids` is shared: ovn-controller, CMSes and admins own most of its keys. We only
//! ever `mutate` our own keys (never `update` the column), and only when a value differs from
//! what the replica shows, so an unchanged pass writes nothing. This matters beyond tidiness:
//! ovn-controller tracks `Interface:external_ids` and wakes up on every write (vswitchd omits
//! the column, so it is not disturbed). All changes of one pass go in one transaction.
//!
//! Everything here is pure: [`plan`] turns the desired key values and the replica's current
//! rows into transaction operations, compact [`Mutation`]s serialised straight into the request.

pub mod keys;
mod mutation;
pub mod time;

use std::collections::BTreeMap;

use crate::backend::{LiveState, LiveStatus};
use crate::model::rows::{InterfaceRow, OpenVSwitchRow};
use crate::model::string_map::StringMap;
use crate::model::{Tunnel, Validity};

pub use mutation::Mutation;

/// Our keys on one row: `Some(value)` to set, `None` to make sure the key is absent.
pub type Keys = BTreeMap<&'static str, Option<String>>;

/// The tunnel's `ipsec-state` and `ipsec-error`, as [`tunnel_keys`] writes them: an apply
/// error, then an expired certificate, win over the observed state.
fn state_and_error(
    tunnel: &Tunnel,
    live: Option<&LiveStatus>,
    apply_error: Option<&str>,
    cert: Option<&CertAlert>,
) -> (&'static str, Option<String>) {
    match &tunnel.validity {
        Validity::Invalid(reason) => ("invalid", Some(reason.trim_start_matches(": ").to_owned())),
        Validity::Valid(_) => {
            let expired = match cert {
                Some(CertAlert::Expired(why)) => Some(why.as_str()),
                _ => None,
            };
            match (apply_error.or(expired), live) {
                (Some(e), _) => (LiveState::Error.as_str(), Some(e.to_owned())),
                (None, Some(l)) => (l.state.as_str(), l.error().map(str::to_owned)),
                (None, None) => (LiveState::Configured.as_str(), None),
            }
        }
    }
}

/// The tunnel's `ipsec-state`, as [`tunnel_keys`] writes it.
pub fn tunnel_state(
    tunnel: &Tunnel,
    live: Option<&LiveStatus>,
    apply_error: Option<&str>,
    cert: Option<&CertAlert>,
) -> &'static str {
    state_and_error(tunnel, live, apply_error, cert).0
}

/// Every `ipsec-state` value, in the order the metrics list them.
pub const STATES: [&str; 6] = [
    "configured",
    "negotiating",
    "up",
    "down",
    "error",
    "invalid",
];

/// A certificate of a tunnel that expires soon or has expired, in a sentence naming the
/// file, its subject and the date (see `diagnose::certs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertAlert {
    Expiring(String),
    Expired(String),
}

/// The keys describing one tunnel. `live` is what the backend observed, `apply_error` a
/// failure of the last apply for this tunnel (it wins over the observed state), `cert` a
/// certificate alert (an expired certificate wins over the observed state too).
pub fn tunnel_keys(
    tunnel: &Tunnel,
    live: Option<&LiveStatus>,
    apply_error: Option<&str>,
    cert: Option<&CertAlert>,
) -> Keys {
    let (state, error) = state_and_error(tunnel, live, apply_error, cert);
    let auth = tunnel.conf().map(|c| c.auth.kind().to_owned());
    let mut out = Keys::from([
        (keys::STATE, Some(state.to_owned())),
        (keys::ERROR, error),
        (keys::VERSION, Some(tunnel.version.to_string())),
        (keys::AUTH, auth),
        (
            keys::WARNING,
            match cert {
                Some(CertAlert::Expiring(w)) if tunnel.conf().is_some() => Some(w.clone()),
                _ => None,
            },
        ),
    ]);
    // Backend keys: only those the contract declares; absent ones are removed.
    let backend = live.filter(|_| tunnel.conf().is_some());
    for key in keys::BACKEND_INTERFACE {
        out.insert(key, backend.and_then(|l| l.key(key)).map(str::to_owned));
    }
    out
}

/// Keys that must be absent (a row that is no longer an IPsec tunnel, or `exit` cleanup).
pub fn cleared(names: &[&'static str]) -> Keys {
    names.iter().map(|k| (*k, None)).collect()
}

/// One `mutate` operation that brings `current` to `wanted` for our keys, or `None` when the
/// row already matches. A changed value is deleted then inserted, because a map `insert`
/// never overwrites an existing key (RFC 7047 §5.1).
pub fn row_mutation(
    table: &'static str,
    uuid: &str,
    current: &StringMap,
    wanted: &Keys,
) -> Option<Mutation> {
    let mut delete = Vec::new();
    let mut insert = Vec::new();
    for (&key, want) in wanted {
        let have = current.get(key);
        match (have, want) {
            (Some(h), Some(w)) if h == w => {}
            (Some(_), Some(w)) => {
                delete.push(key);
                insert.push((key, w.clone()));
            }
            (None, Some(w)) => insert.push((key, w.clone())),
            (Some(_), None) => delete.push(key),
            (None, None) => {}
        }
    }
    if delete.is_empty() && insert.is_empty() {
        return None;
    }
    Some(Mutation {
        table,
        uuid: uuid.to_owned(),
        delete,
        insert,
    })
}

/// Inputs of one status pass. `I` iterates over the Interface rows (any order).
pub struct StatusInput<'a, I> {
    pub interfaces: I,
    pub open_vswitch: Option<&'a OpenVSwitchRow>,
    /// Known tunnels by name (valid and invalid).
    pub tunnels: &'a BTreeMap<String, Tunnel>,
    pub live: &'a BTreeMap<String, LiveStatus>,
    pub apply_errors: &'a BTreeMap<String, String>,
    /// Certificate alerts by tunnel name.
    pub cert_alerts: &'a BTreeMap<String, CertAlert>,
    /// Our keys on the Open_vSwitch row.
    pub monitor: Keys,
}

/// The operations of one status transaction; empty when OVSDB already shows everything.
pub fn plan<'a, I>(input: &StatusInput<'a, I>) -> Vec<Mutation>
where
    I: Iterator<Item = &'a InterfaceRow> + Clone,
{
    let mut ops = Vec::new();
    for row in input.interfaces.clone() {
        let wanted = match input.tunnels.get(&row.name) {
            Some(t) if t.uuid == row.uuid => tunnel_keys(
                t,
                input.live.get(&t.name),
                input.apply_errors.get(&t.name).map(String::as_str),
                input.cert_alerts.get(&t.name),
            ),
            // Not (or no longer) an IPsec tunnel: remove whatever we wrote before.
            _ => cleared(keys::INTERFACE),
        };
        ops.extend(row_mutation(
            "Interface",
            &row.uuid,
            &row.external_ids,
            &wanted,
        ));
    }
    if let Some(ovs) = input.open_vswitch {
        ops.extend(row_mutation(
            "Open_vSwitch",
            &ovs.uuid,
            &ovs.external_ids,
            &input.monitor,
        ));
    }
    ops
}

/// Removes our keys from an Interface row that left the replica. Under `monitor_cond` a row
/// whose `type` changed to a non-tunnel type leaves the server-side filter and so vanishes
/// from our view while it still carries our keys. A deleted row makes this a no-op (the
/// `where` matches nothing), which is cheaper than telling the two cases apart.
pub fn forget(uuid: &str) -> Mutation {
    Mutation {
        table: "Interface",
        uuid: uuid.to_owned(),
        delete: keys::INTERFACE.to_vec(),
        insert: Vec::new(),
    }
}

/// The operations of `exit` with cleanup: remove every key we own, everywhere.
pub fn cleanup(
    interfaces: &[InterfaceRow],
    open_vswitch: Option<&OpenVSwitchRow>,
) -> Vec<Mutation> {
    let mut ops: Vec<Mutation> = interfaces
        .iter()
        .filter_map(|r| {
            row_mutation(
                "Interface",
                &r.uuid,
                &r.external_ids,
                &cleared(keys::INTERFACE),
            )
        })
        .collect();
    if let Some(ovs) = open_vswitch {
        ops.extend(row_mutation(
            "Open_vSwitch",
            &ovs.uuid,
            &ovs.external_ids,
            &cleared(keys::OPEN_VSWITCH),
        ));
    }
    ops
}

#[cfg(test)]
mod tests;
