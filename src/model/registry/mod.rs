//! The registry of known tunnels: versions, validity, and the events of each OVSDB change.
//!
//! [`Registry::update`] takes the whole current OVSDB contents (it is called after every
//! change, and after a reconnect with the same rows) and compares them with what it knew:
//! - The global PKI is applied only when valid; otherwise the previous one stays in force,
//!   as in Python. `ipsec_skb_mark` is checked on its own, so a bad mark neither blocks a
//!   good PKI nor is blocked by a bad one.
//! - A tunnel's version starts at 1 and grows by one whenever its [`Validity`] changes
//!   (an invalid reason included), except when only the paths of its credential files do
//!   ([`super::versions::same_version`]): the new paths reach the backends under the same
//!   version, and each reloads the files by content, as for a renewal in place. The PKI is part of a certificate-mode tunnel's
//!   configuration and absent from a PSK tunnel's, and the skb mark is part of none, so a
//!   global change re-creates only the connections that depend on it (Python re-created all).
//! - Events are produced only by changes: unchanged input yields no events and keeps every
//!   version, which makes an OVSDB resync free. A warning about an invalid tunnel or global
//!   setting is therefore logged once, not on every unrelated change (Python bug §6.4).
//! - Invalid tunnels stay in the registry so `tunnels/show` and the OVSDB status can show
//!   why; only [`Registry::desired`] leaves them out.
//!
//! The registry is split along what it does: this file holds the state and the public API,
//! [`events`] the log events and their exact wording, and `evaluate` the comparison of each
//! OVSDB change with what was known (validation, memo, versions).

mod evaluate;
mod events;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::RandomState;
use std::sync::Arc;

use super::cert::CertSource;
use super::rows::{InterfaceRow, OpenVSwitchRow, Rows};
use super::types::{Desired, DesiredTunnel, Global, Tunnel};
use super::versions::SavedVersions;

pub use events::{CONFIGURATION_CHANGED, CREDENTIALS_MOVED, GLOBAL_PKI_INVALID, ModelEvent};

/// Known tunnels by name, plus the global settings in force.
#[derive(Debug, Default)]
pub struct Registry {
    tunnels: BTreeMap<String, Tunnel>,
    global: Global,
    global_error: Option<String>,
    pki_error: Option<String>,
    mark_error: Option<String>,
    /// Versions saved by the previous run, consumed by the first update.
    seed: SavedVersions,
    /// Fingerprints of the rows last validated, by tunnel name (see [`Registry::fingerprint`]).
    memo: HashMap<String, u64>,
    /// Tunnels whose rows have no fingerprint: validated on every update.
    unmemoized: BTreeSet<String>,
    /// What [`Registry::desired`] returns, kept in step with `tunnels` and `global`.
    desired: Desired,
    /// Grows whenever `desired` changes.
    generation: u64,
    /// Each tunnel's version and digest, kept as tunnels change: a digest costs a SHA-256,
    /// and the file is saved after every change.
    saved: SavedVersions,
    /// Random keys, so that no OVSDB content can be crafted to collide with another.
    hasher: RandomState,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Versions saved by a previous run of the monitor (see [`super::versions`]); they apply
    /// to the tunnels of the next [`Registry::update`] only.
    pub fn seed(&mut self, saved: SavedVersions) {
        self.seed = saved;
    }

    /// What to save so that a restarted monitor keeps the versions.
    pub fn saved_versions(&self) -> &SavedVersions {
        &self.saved
    }

    /// Re-evaluates every row against the current OVSDB contents. `ovs` is `None` before
    /// the `Open_vSwitch` row is known; the global settings are then left as they are.
    pub fn update<'a>(
        &mut self,
        ovs: Option<&OpenVSwitchRow>,
        interfaces: impl IntoIterator<Item = &'a InterfaceRow>,
        certs: &mut dyn CertSource,
    ) -> Vec<ModelEvent> {
        let mut events = Vec::new();
        if let Some(ovs) = ovs {
            self.update_global(&ovs.other_config, certs, &mut events);
        }
        self.evaluate_all(interfaces, certs, &mut events);
        events
    }

    /// [`Registry::update`] after a change that touched only the rows whose names (before or
    /// after) are in `names` (`None`: any row may have changed), reading rows from `rows`.
    /// Tunnels of other names keep their state without a look at their rows, so a one-row
    /// change costs one validation and no pass over the other rows; certificate-mode tunnels
    /// are validated again every time (see [`Registry::fingerprint`]), and a new PKI or the
    /// first update (saved versions) evaluates everything. Same events, same state as
    /// [`Registry::update`] with every row.
    pub fn update_changed(
        &mut self,
        ovs: Option<&OpenVSwitchRow>,
        rows: &Rows,
        names: Option<&BTreeSet<String>>,
        certs: &mut dyn CertSource,
    ) -> Vec<ModelEvent> {
        let mut events = Vec::new();
        let pki = self.global.pki.clone();
        if let Some(ovs) = ovs {
            self.update_global(&ovs.other_config, certs, &mut events);
        }
        match names {
            Some(names) if self.seed.is_empty() && self.global.pki == pki => {
                self.evaluate_names(names, rows, certs, &mut events);
            }
            _ => self.evaluate_all(rows.interfaces(), certs, &mut events),
        }
        events
    }

    pub fn tunnels(&self) -> impl Iterator<Item = &Tunnel> {
        self.tunnels.values()
    }

    /// Every known tunnel, by name.
    pub fn tunnel_map(&self) -> &BTreeMap<String, Tunnel> {
        &self.tunnels
    }

    pub fn global(&self) -> &Global {
        &self.global
    }

    /// The current problem with the global settings (PKI and/or skb mark), for OVSDB status.
    pub fn global_error(&self) -> Option<&str> {
        self.global_error.as_deref()
    }

    /// The valid tunnels with their versions, and the global settings in force. Kept up to
    /// date by every update, so reading it costs nothing.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Changes whenever [`Registry::desired`] does: a cheap "has anything changed?".
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

fn desired_tunnel(t: &Tunnel) -> Option<DesiredTunnel> {
    t.conf().map(|conf| DesiredTunnel {
        version: t.version,
        conf: Arc::clone(conf),
    })
}

#[cfg(test)]
mod tests;
