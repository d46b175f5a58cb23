//! The registry of known tunnels: versions, validity, and the events of each OVSDB change.
//!
//! [`Registry::update`] takes the whole current OVSDB contents (it is called after every
//! change, and after a reconnect with the same rows) and compares them with what it knew:
//! - The global PKI is applied only when valid; otherwise the previous one stays in force,
//!   as in Python. `ipsec_skb_mark` is checked on its own, so a bad mark neither blocks a
//!   good PKI nor is blocked by a bad one.
//! - A tunnel's version starts at 1 and grows by one whenever its [`Validity`] changes
//!   (an invalid reason included). The PKI is part of a certificate-mode tunnel's
//!   configuration and absent from a PSK tunnel's, and the skb mark is part of none, so a
//!   global change re-creates only the connections that depend on it (Python re-created all).
//! - Events are produced only by changes: unchanged input yields no events and keeps every
//!   version, which makes an OVSDB resync free. A warning about an invalid tunnel or global
//!   setting is therefore logged once, not on every unrelated change (Python bug §6.4).
//! - Invalid tunnels stay in the registry so `tunnels/show` and the OVSDB status can show
//!   why; only [`Registry::desired`] leaves them out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use tracing::Level;

use super::cert::CertSource;
use super::grammar::{self, shown_name};
use super::rows::{InterfaceRow, OpenVSwitchRow, Rows};
use super::types::{Desired, DesiredTunnel, Global, Tunnel, Validity};
use super::validate;
use super::versions::{self, SavedVersion, SavedVersions};

/// The Python monitor's warning for an invalid global PKI, typo included (tests grep it).
pub const GLOBAL_PKI_INVALID: &str = "The cert and key configuration is not valid. The valid configuations are 1): certificate, private_key and ca_cert are not set; or 2): certificate and private_key are all set.";

/// Something the shell logs after an OVSDB change. `Display` is the exact log text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    Appeared {
        name: String,
    },
    Changed {
        name: String,
        version: u64,
    },
    Disappeared {
        name: String,
    },
    /// `reason` starts with ": ".
    Invalid {
        name: String,
        reason: String,
    },
    /// The global PKI keys are not valid; the previous PKI stays in force.
    GlobalPkiInvalid {
        reason: String,
    },
    /// `ipsec_skb_mark` is not valid; the previous mark stays in force.
    SkbMarkInvalid {
        reason: String,
    },
}

impl ModelEvent {
    /// The tunnel the event is about; `None` for global settings.
    pub fn tunnel(&self) -> Option<&String> {
        match self {
            Self::Appeared { name }
            | Self::Changed { name, .. }
            | Self::Disappeared { name }
            | Self::Invalid { name, .. } => Some(name),
            Self::GlobalPkiInvalid { .. } | Self::SkbMarkInvalid { .. } => None,
        }
    }

    pub fn level(&self) -> Level {
        match self {
            Self::Appeared { .. } | Self::Changed { .. } | Self::Disappeared { .. } => Level::INFO,
            Self::Invalid { .. } | Self::GlobalPkiInvalid { .. } | Self::SkbMarkInvalid { .. } => {
                Level::WARN
            }
        }
    }
}

impl fmt::Display for ModelEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Appeared { name } => write!(f, "Tunnel {} appeared in OVSDB", shown_name(name)),
            Self::Changed { name, version } => write!(
                f,
                "Tunnel's '{}' configuration changed in OVSDB to {version}",
                shown_name(name)
            ),
            Self::Disappeared { name } => {
                write!(f, "Tunnel {} disappeared from OVSDB", shown_name(name))
            }
            Self::Invalid { name, reason } => {
                write!(
                    f,
                    "{} contains invalid configuration{reason}",
                    shown_name(name)
                )
            }
            Self::GlobalPkiInvalid { reason } => write!(f, "{GLOBAL_PKI_INVALID} ({reason})"),
            Self::SkbMarkInvalid { reason } => {
                write!(f, "{reason}; keeping the previous ipsec_skb_mark")
            }
        }
    }
}

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

    fn evaluate_all<'a>(
        &mut self,
        interfaces: impl IntoIterator<Item = &'a InterfaceRow>,
        certs: &mut dyn CertSource,
        events: &mut Vec<ModelEvent>,
    ) {
        // By name, so events come in a stable order whatever the replica's order.
        let rows: BTreeMap<&str, &InterfaceRow> = interfaces
            .into_iter()
            .filter(|row| validate::is_ipsec_tunnel(row))
            .map(|row| (row.name.as_str(), row))
            .collect();
        self.tunnels.retain(|name, _| {
            let keep = rows.contains_key(name.as_str());
            if !keep {
                events.push(ModelEvent::Disappeared { name: name.clone() });
            }
            keep
        });
        self.memo.retain(|name, _| rows.contains_key(name.as_str()));
        self.saved
            .retain(|name, _| rows.contains_key(name.as_str()));
        self.unmemoized
            .retain(|name| rows.contains_key(name.as_str()));
        for (name, row) in rows {
            self.evaluate(name, row, certs, events);
        }
        // Saved versions of tunnels that are gone must not apply to a later namesake.
        self.seed.clear();
        let tunnels: BTreeMap<String, DesiredTunnel> = self
            .tunnels
            .values()
            .filter_map(|t| Some((t.name.clone(), desired_tunnel(t)?)))
            .collect();
        if tunnels != self.desired.tunnels {
            self.desired.tunnels = tunnels;
            self.generation += 1;
        }
        self.sync_global();
    }

    /// The tunnels called `names`, and every certificate-mode one; in the order and with the
    /// events of [`Registry::evaluate_all`].
    fn evaluate_names(
        &mut self,
        names: &BTreeSet<String>,
        rows: &Rows,
        certs: &mut dyn CertSource,
        events: &mut Vec<ModelEvent>,
    ) {
        let todo: BTreeSet<String> = names.union(&self.unmemoized).cloned().collect();
        // A name's row is the last of its IPsec rows by UUID, as in `evaluate_all`.
        let winners: Vec<(&str, Option<&InterfaceRow>)> = todo
            .iter()
            .map(|name| {
                let row = rows
                    .named(name)
                    .filter(|r| validate::is_ipsec_tunnel(r))
                    .last();
                (name.as_str(), row)
            })
            .collect();
        for (name, _) in winners.iter().filter(|(_, row)| row.is_none()) {
            if self.tunnels.remove(*name).is_some() {
                events.push(ModelEvent::Disappeared {
                    name: (*name).to_owned(),
                });
            }
            self.memo.remove(*name);
            self.unmemoized.remove(*name);
            self.saved.remove(*name);
        }
        for (name, row) in winners {
            if let Some(row) = row {
                self.evaluate(name, row, certs, events);
            }
            let now = self.tunnels.get(name).and_then(desired_tunnel);
            if self.desired.tunnels.get(name) != now.as_ref() {
                self.generation += 1;
                match now {
                    Some(t) => self.desired.tunnels.insert(name.to_owned(), t),
                    None => self.desired.tunnels.remove(name),
                };
            }
        }
        self.sync_global();
    }

    /// One IPsec row: validated again unless its fingerprint shows it unchanged.
    fn evaluate(
        &mut self,
        name: &str,
        row: &InterfaceRow,
        certs: &mut dyn CertSource,
        events: &mut Vec<ModelEvent>,
    ) {
        let fingerprint = self.fingerprint(row);
        if fingerprint.is_some() && self.memo.get(name) == fingerprint.as_ref() {
            self.refresh(name, row);
            return;
        }
        let validity = validate::validate(row, self.global.pki.as_ref(), certs);
        self.update_tunnel(name, row, validity, events);
        match fingerprint {
            Some(f) => {
                self.memo.insert(name.to_owned(), f);
                self.unmemoized.remove(name);
            }
            None => {
                self.memo.remove(name);
                self.unmemoized.insert(name.to_owned());
            }
        }
    }

    fn sync_global(&mut self) {
        if self.desired.global != self.global {
            self.desired.global = self.global.clone();
            self.generation += 1;
        }
    }

    /// What a row's validity is a function of, hashed: the row's configuration and the PKI
    /// in force. `None` for a certificate-mode row, whose validity also depends on files that
    /// can change under the same row: those are validated on every update. Skipping the
    /// others makes one OVSDB change cost one validation, not one per tunnel.
    fn fingerprint(&self, row: &InterfaceRow) -> Option<u64> {
        let opts = &row.options;
        if opts.contains_key("remote_cert") || opts.contains_key("remote_name") {
            return None;
        }
        Some(
            self.hasher
                .hash_one((&row.name, &row.kind, opts, self.global.pki.as_deref())),
        )
    }

    /// An unchanged row: only the columns that are not configuration may have moved.
    fn refresh(&mut self, name: &str, row: &InterfaceRow) {
        if let Some(tunnel) = self.tunnels.get_mut(name) {
            tunnel.uuid.clone_from(&row.uuid);
            tunnel.ofport = row.ofport;
            tunnel.cfm_fault = row.cfm_fault;
        }
    }

    fn update_global(
        &mut self,
        other_config: &BTreeMap<String, String>,
        certs: &mut dyn CertSource,
        events: &mut Vec<ModelEvent>,
    ) {
        let pki_error = match validate::global_pki(other_config, certs) {
            Ok(pki) => {
                // Keep the same Arc when unchanged: tunnels compare by value anyway, but
                // sharing keeps `Desired` cheap to clone.
                if self.global.pki.as_deref() != pki.as_ref() {
                    self.global.pki = pki.map(Arc::new);
                }
                None
            }
            Err(reason) => Some(reason),
        };
        let mark = other_config
            .get("ipsec_skb_mark")
            .map(|m| grammar::skb_mark(m));
        let mark_error = match mark {
            Some(Err(e)) => Some(e.to_string()),
            Some(Ok(mark)) => {
                self.global.skb_mark = Some(mark);
                None
            }
            None => {
                self.global.skb_mark = None;
                None
            }
        };
        let pki_event = |reason| ModelEvent::GlobalPkiInvalid { reason };
        let mark_event = |reason| ModelEvent::SkbMarkInvalid { reason };
        events.extend(new_error(&mut self.pki_error, pki_error, pki_event));
        events.extend(new_error(&mut self.mark_error, mark_error, mark_event));

        self.global_error = match (&self.pki_error, &self.mark_error) {
            (Some(pki), Some(mark)) => Some(format!("{GLOBAL_PKI_INVALID} ({pki}); {mark}")),
            (Some(pki), None) => Some(format!("{GLOBAL_PKI_INVALID} ({pki})")),
            (None, Some(mark)) => Some(mark.clone()),
            (None, None) => None,
        };
    }

    fn update_tunnel(
        &mut self,
        name: &str,
        row: &InterfaceRow,
        validity: Validity,
        events: &mut Vec<ModelEvent>,
    ) {
        let changed = match self.tunnels.get_mut(name) {
            Some(tunnel) => {
                let changed = tunnel.validity != validity;
                if changed {
                    tunnel.version += 1;
                    tunnel.validity = validity;
                    events.push(ModelEvent::Changed {
                        name: name.to_owned(),
                        version: tunnel.version,
                    });
                }
                tunnel.uuid.clone_from(&row.uuid);
                tunnel.raw = validate::raw(row);
                tunnel.ofport = row.ofport;
                tunnel.cfm_fault = row.cfm_fault;
                changed
            }
            None => {
                events.push(ModelEvent::Appeared {
                    name: name.to_owned(),
                });
                // A tunnel the previous run knew keeps its version if nothing changed, and
                // gets the next one if it changed while the monitor was down.
                let version = match self.seed.remove(name) {
                    Some(s) if versions::matches(&s.digest, &validity) => s.version,
                    Some(s) => {
                        let version = s.version + 1;
                        events.push(ModelEvent::Changed {
                            name: name.to_owned(),
                            version,
                        });
                        version
                    }
                    None => 1,
                };
                self.tunnels.insert(
                    name.to_owned(),
                    Tunnel {
                        uuid: row.uuid.clone(),
                        name: name.to_owned(),
                        version,
                        validity,
                        raw: validate::raw(row),
                        ofport: row.ofport,
                        cfm_fault: row.cfm_fault,
                    },
                );
                true
            }
        };
        if changed && let Some(t) = self.tunnels.get(name) {
            let saved = SavedVersion {
                version: t.version,
                digest: versions::digest(&t.validity),
            };
            self.saved.insert(name.to_owned(), saved);
        }
        if let Some(Validity::Invalid(reason)) = self.tunnels.get(name).map(|t| &t.validity)
            && changed
        {
            events.push(ModelEvent::Invalid {
                name: name.to_owned(),
                reason: reason.clone(),
            });
        }
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

/// Stores `new` in `slot`; returns an event when it is an error different from the last
/// one, so a persisting problem is logged once.
fn new_error(
    slot: &mut Option<String>,
    new: Option<String>,
    event: impl FnOnce(String) -> ModelEvent,
) -> Option<ModelEvent> {
    let changed = new != *slot;
    *slot = new;
    slot.clone().filter(|_| changed).map(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cert::fake::FakeCerts;
    use crate::model::grammar::key_label;
    use crate::model::types::{Auth, SkbMark};
    use crate::model::validate::PSK_WITH_PKI;
    use proptest::prelude::*;

    fn row(name: &str, kind: &str, opts: &[(&str, &str)]) -> InterfaceRow {
        InterfaceRow::for_test(name, kind, opts)
    }

    fn ovs(other: &[(&str, &str)]) -> OpenVSwitchRow {
        OpenVSwitchRow {
            other_config: other
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    const PKI_A: &[(&str, &str)] = &[
        ("certificate", "/a/cert.pem"),
        ("private_key", "/a/key.pem"),
        ("ca_cert", "/a/ca.pem"),
    ];
    const PKI_B: &[(&str, &str)] = &[
        ("certificate", "/b/cert.pem"),
        ("private_key", "/b/key.pem"),
        ("ca_cert", "/a/ca.pem"),
    ];

    fn certs() -> FakeCerts {
        FakeCerts::with(&[
            ("/a/cert.pem", "host1"),
            ("/b/cert.pem", "host1-new"),
            ("/peer.pem", "host2"),
            ("/bad-cn.pem", "host\n2"),
        ])
    }

    fn psk_row(name: &str, psk: &str) -> InterfaceRow {
        row(name, "geneve", &[("remote_ip", "192.0.2.2"), ("psk", psk)])
    }

    fn ca_row(name: &str) -> InterfaceRow {
        row(
            name,
            "gre",
            &[("remote_ip", "192.0.2.3"), ("remote_name", "host2")],
        )
    }

    fn tunnel<'r>(reg: &'r Registry, name: &str) -> &'r Tunnel {
        reg.tunnels()
            .find(|t| t.name == name)
            .expect("tunnel known")
    }

    fn texts(events: &[ModelEvent]) -> Vec<String> {
        events.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn appear_change_unchanged() {
        let mut reg = Registry::new();
        let mut c = certs();
        let events = reg.update(Some(&ovs(&[])), [&psk_row("gnv1", "k1")], &mut c);
        assert_eq!(texts(&events), ["Tunnel gnv1 appeared in OVSDB"]);
        assert_eq!(events[0].level(), Level::INFO);
        assert_eq!(tunnel(&reg, "gnv1").version, 1);
        assert_eq!(
            reg.desired().tunnels["gnv1"].conn_names(),
            ["gnv1-in-1", "gnv1-out-1"]
        );

        let events = reg.update(Some(&ovs(&[])), [&psk_row("gnv1", "k2")], &mut c);
        assert_eq!(
            texts(&events),
            ["Tunnel's 'gnv1' configuration changed in OVSDB to 2"]
        );
        assert_eq!(reg.desired().tunnels["gnv1"].version, 2);

        // Same contents (a resync) and display-only changes: no events, same version.
        let mut shown = psk_row("gnv1", "k2");
        shown.ofport = Some(7);
        shown.cfm_fault = Some(false);
        assert!(
            reg.update(Some(&ovs(&[])), [&psk_row("gnv1", "k2")], &mut c)
                .is_empty()
        );
        assert!(reg.update(Some(&ovs(&[])), [&shown], &mut c).is_empty());
        let t = tunnel(&reg, "gnv1");
        assert_eq!(
            (t.version, t.ofport, t.cfm_fault),
            (2, Some(7), Some(false))
        );
    }

    #[test]
    fn saved_versions_survive_a_restart_and_count_changes_made_meanwhile() {
        let mut certs = certs();
        let mut first = Registry::new();
        first.update(None, &[psk_row("a", "k1"), psk_row("b", "k1")], &mut certs);
        first.update(None, &[psk_row("a", "k2"), psk_row("b", "k1")], &mut certs);
        assert_eq!(tunnel(&first, "a").version, 2);
        let saved = versions::parse(&versions::render(first.saved_versions())).unwrap();

        // Restart: "a" unchanged keeps 2; "b" changed while down goes 1 -> 2.
        let mut second = Registry::new();
        second.seed(saved);
        let ev = second.update(None, &[psk_row("a", "k2"), psk_row("b", "k9")], &mut certs);
        assert_eq!(tunnel(&second, "a").version, 2);
        assert_eq!(tunnel(&second, "b").version, 2);
        assert!(texts(&ev).contains(&"Tunnel's 'b' configuration changed in OVSDB to 2".into()));
        // Seeds apply to the first update only: a later namesake starts afresh.
        second.update(None, &[psk_row("a", "k2")], &mut certs);
        second.update(None, &[psk_row("a", "k2"), psk_row("b", "k9")], &mut certs);
        assert_eq!(tunnel(&second, "b").version, 1);
    }

    #[test]
    fn disappear_and_stop_being_ipsec() {
        let mut reg = Registry::new();
        let mut c = certs();
        let (a, b) = (psk_row("a", "k"), psk_row("b", "k"));
        reg.update(None, [&a, &b], &mut c);
        assert_eq!(
            texts(&reg.update(None, [&a], &mut c)),
            ["Tunnel b disappeared from OVSDB"]
        );
        // psk removed: a plain geneve tunnel, no longer ours.
        let plain = row("a", "geneve", &[("remote_ip", "192.0.2.2")]);
        assert_eq!(
            texts(&reg.update(None, [&plain], &mut c)),
            ["Tunnel a disappeared from OVSDB"]
        );
        assert_eq!(reg.tunnels().count(), 0);
        // Back again: a new tunnel, version 1.
        assert_eq!(
            texts(&reg.update(None, [&a], &mut c)),
            ["Tunnel a appeared in OVSDB"]
        );
        assert_eq!(tunnel(&reg, "a").version, 1);
    }

    #[test]
    fn invalid_is_logged_once_and_kept_for_display() {
        let mut reg = Registry::new();
        let mut c = certs();
        let bad = row("bad", "gre", &[("psk", "k")]);
        let events = reg.update(None, [&bad], &mut c);
        assert_eq!(
            texts(&events),
            [
                "Tunnel bad appeared in OVSDB",
                "bad contains invalid configuration: 'remote_ip' is not set"
            ]
        );
        assert_eq!(events[1].level(), Level::WARN);
        assert!(reg.desired().tunnels.is_empty());
        assert_eq!(tunnel(&reg, "bad").raw.kind, "gre");
        // An unrelated change does not repeat the warning.
        let good = psk_row("good", "k");
        assert_eq!(
            texts(&reg.update(None, [&bad, &good], &mut c)),
            ["Tunnel good appeared in OVSDB"]
        );
        // A new reason is a new configuration, logged once.
        let worse = row("bad", "gre", &[("psk", "k"), ("remote_ip", "flow")]);
        let events = reg.update(None, [&worse, &good], &mut c);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].to_string(),
            "Tunnel's 'bad' configuration changed in OVSDB to 2"
        );
        assert!(events[1].to_string().starts_with(
            "bad contains invalid configuration: 'remote_ip' value \"flow\" is not supported"
        ));
        assert!(reg.update(None, [&worse, &good], &mut c).is_empty());
        // Fixed: valid, new version, no warning.
        let fixed = psk_row("bad", "k");
        assert_eq!(
            texts(&reg.update(None, [&fixed, &good], &mut c)),
            ["Tunnel's 'bad' configuration changed in OVSDB to 3"]
        );
        assert_eq!(reg.desired().tunnels.len(), 2);
    }

    #[test]
    fn an_unchanged_psk_row_is_still_judged_again_when_the_pki_changes() {
        let mut reg = Registry::new();
        let mut c = certs();
        let psk = psk_row("psk", "k");
        reg.update(Some(&ovs(&[])), [&psk], &mut c);
        reg.update(Some(&ovs(PKI_A)), [&psk], &mut c);
        assert_eq!(
            tunnel(&reg, "psk").validity,
            Validity::Invalid(PSK_WITH_PKI.into())
        );
        reg.update(Some(&ovs(&[])), [&psk], &mut c);
        assert_eq!(reg.desired().tunnels["psk"].version, 3);
        // Recreated under the same name with the same options: a new UUID, nothing else.
        let mut again = psk_row("psk", "k");
        again.uuid = "another-uuid".into();
        assert!(reg.update(Some(&ovs(&[])), [&again], &mut c).is_empty());
        assert_eq!(tunnel(&reg, "psk").uuid, "another-uuid");
    }

    #[test]
    fn pki_change_bumps_only_certificate_tunnels() {
        let mut reg = Registry::new();
        let mut c = certs();
        let (cert, psk) = (ca_row("cert"), psk_row("psk", "k"));
        let events = reg.update(Some(&ovs(PKI_A)), [&cert, &psk], &mut c);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            tunnel(&reg, "psk").validity,
            Validity::Invalid(PSK_WITH_PKI.into())
        );
        let pki = reg.global().pki.clone().expect("PKI in force");
        assert_eq!(pki.local_name, "host1");
        assert_eq!(reg.desired().tunnels["cert"].conf.pki.as_ref(), Some(&pki));

        let events = reg.update(Some(&ovs(PKI_B)), [&cert, &psk], &mut c);
        assert_eq!(
            texts(&events),
            ["Tunnel's 'cert' configuration changed in OVSDB to 2"]
        );
        assert_eq!(tunnel(&reg, "psk").version, 1);
        assert_eq!(
            reg.global().pki.as_ref().map(|p| p.local_name.as_str()),
            Some("host1-new")
        );
    }

    #[test]
    fn skb_mark_is_separate_and_bumps_nothing() {
        let mut reg = Registry::new();
        let mut c = certs();
        let (cert, psk) = (ca_row("cert"), psk_row("psk", "k"));
        let with_mark = |mark: &'static str| {
            let mut o = PKI_A.to_vec();
            o.push(("ipsec_skb_mark", mark));
            ovs(&o)
        };
        reg.update(Some(&with_mark("0/1")), [&cert, &psk], &mut c);
        assert_eq!(reg.global().skb_mark, Some(SkbMark { value: 0, mask: 1 }));
        assert!(
            reg.update(Some(&with_mark("1/1")), [&cert, &psk], &mut c)
                .is_empty()
        );
        assert_eq!(
            reg.desired().global.skb_mark,
            Some(SkbMark { value: 1, mask: 1 })
        );
        assert_eq!(tunnel(&reg, "cert").version, 1);

        // An invalid mark keeps the previous one, warns once, and leaves the PKI alone.
        let events = reg.update(Some(&with_mark("1/1\nx")), [&cert, &psk], &mut c);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].level(), Level::WARN);
        assert_eq!(
            events[0].to_string(),
            "'ipsec_skb_mark' value \"1/1\\nx\" is not VALUE/MASK with decimal or 0x-hex 32-bit numbers; keeping the previous ipsec_skb_mark"
        );
        assert!(
            reg.update(Some(&with_mark("1/1\nx")), [&cert, &psk], &mut c)
                .is_empty()
        );
        assert_eq!(reg.global().skb_mark, Some(SkbMark { value: 1, mask: 1 }));
        assert!(reg.global().pki.is_some());
        assert!(
            reg.global_error()
                .is_some_and(|e| e.starts_with("'ipsec_skb_mark'"))
        );
        reg.update(Some(&ovs(PKI_A)), [&cert, &psk], &mut c);
        assert_eq!((reg.global().skb_mark, reg.global_error()), (None, None));
    }

    #[test]
    fn invalid_global_pki_keeps_the_previous_one() {
        let mut reg = Registry::new();
        let mut c = certs();
        let cert = ca_row("cert");
        reg.update(Some(&ovs(PKI_A)), [&cert], &mut c);
        let before = reg.desired().clone();
        let mut broken = PKI_A.to_vec();
        broken.retain(|(k, _)| *k != "private_key");
        broken.push(("ipsec_skb_mark", "2/3"));
        let events = reg.update(Some(&ovs(&broken)), [&cert], &mut c);
        assert_eq!(
            texts(&events),
            [
                "The cert and key configuration is not valid. The valid configuations are 1): certificate, private_key and ca_cert are not set; or 2): certificate and private_key are all set. ('private_key' is not set)"
            ]
        );
        assert_eq!(events[0].level(), Level::WARN);
        assert_eq!(reg.desired().tunnels, before.tunnels);
        assert_eq!(reg.global().pki, before.global.pki);
        // The mark is judged on its own: applied despite the broken PKI.
        assert_eq!(reg.global().skb_mark, Some(SkbMark { value: 2, mask: 3 }));
        assert!(
            reg.global_error()
                .is_some_and(|e| e.starts_with(GLOBAL_PKI_INVALID))
        );
        assert!(reg.update(Some(&ovs(&broken)), [&cert], &mut c).is_empty());
        // A global cert with a hostile CN is refused the same way, escaped.
        let hostile = [("certificate", "/bad-cn.pem"), ("private_key", "/k.pem")];
        let events = reg.update(Some(&ovs(&hostile)), [&cert], &mut c);
        assert!(texts(&events)[0].ends_with("('CN of certificate' value \"host\\n2\" is not a valid IKE identity: it must match [A-Za-z0-9][A-Za-z0-9._@:+-]{0,254})"), "{events:?}");
        // Removing every PKI key is valid: no PKI, and the certificate tunnel becomes invalid.
        let events = reg.update(Some(&ovs(&[])), [&cert], &mut c);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!((reg.global().pki.clone(), reg.global_error()), (None, None));
    }

    #[test]
    fn hostile_names_are_escaped_in_log_lines() {
        let mut reg = Registry::new();
        let r = psk_row("evil\nTunnel x appeared", "k");
        let events = reg.update(None, [&r], &mut certs());
        for line in texts(&events) {
            assert!(!line.contains('\n'), "{line}");
        }
        assert_eq!(
            events[0].to_string(),
            "Tunnel \"evil\\nTunnel x appeared\" appeared in OVSDB"
        );
    }

    /// A world in which a hostile value is placed.
    #[derive(Clone, Copy, Debug)]
    enum World {
        /// No PKI; the tunnel is a PSK vxlan tunnel.
        Psk,
        /// PKI with a CA; the tunnel is a CA-signed gre tunnel.
        Cert,
    }

    fn hostile_cases() -> Vec<(World, String, String)> {
        use World::*;
        let long = |c: &str, n: usize| c.repeat(n);
        let mut cases: Vec<(World, &str, String)> = vec![
            (Psk, "name", "a\nb".into()),
            (Psk, "name", "a\rb".into()),
            (Psk, "name", "a b".into()),
            (Psk, "name", "-lead".into()),
            (Psk, "name", "tun;x".into()),
            (Psk, "name", "tun$(id)".into()),
            (Psk, "name", "tun`id`".into()),
            (Psk, "name", "ｔun".into()),
            (Psk, "name", "tun#1".into()),
            (Psk, "name", "tun\"q".into()),
            (Psk, "name", "tun\0".into()),
            (Psk, "name", long("a", 64)),
            (Psk, "remote_ip", "192.0.2.1\n".into()),
            (Psk, "remote_ip", "192.0.2.1\r".into()),
            (Psk, "remote_ip", " 192.0.2.1".into()),
            (Psk, "remote_ip", "flow".into()),
            (Psk, "remote_ip", "192.0.2.1;reboot".into()),
            (Psk, "remote_ip", "$(id)".into()),
            (Psk, "remote_ip", "1９2.0.2.1".into()),
            (Psk, "remote_ip", "0.0.0.0".into()),
            (Psk, "remote_ip", "224.0.0.5".into()),
            (Psk, "remote_ip", "255.255.255.255".into()),
            (Psk, "remote_ip", "-1.2.3.4".into()),
            (Psk, "remote_ip", "%any".into()),
            (Psk, "remote_ip", long("1", 5000)),
            (Psk, "local_ip", "%defaultroute".into()),
            (Psk, "local_ip", "flow".into()),
            (Psk, "local_ip", "10.0.0.1\n".into()),
            (Psk, "local_ip", "fd01::1".into()),
            (Psk, "local_ip", "::".into()),
            (Psk, "dst_port", "4789\n".into()),
            (Psk, "dst_port", "-1".into()),
            (Psk, "dst_port", "0x12b5".into()),
            (Psk, "dst_port", "99999".into()),
            (Psk, "dst_port", "٤٧٨٩".into()),
            (Psk, "psk", "a\0b".into()),
            (Psk, "psk", long("x", 1025)),
            (Psk, "ipsec_also", "x".into()),
            (Psk, "ipsec_include", "/etc/passwd".into()),
            (Psk, "ipsec_leftid", "@x".into()),
            (Psk, "ipsec_rightsubnet", "0.0.0.0/0".into()),
            (Psk, "ipsec_type", "passthrough".into()),
            (Psk, "ipsec_authby", "never".into()),
            (Psk, "ipsec_auto", "ignore".into()),
            (Psk, "ipsec_conn", "x".into()),
            (Psk, "ipsec_mark", "1/1".into()),
            (Psk, "ipsec_Ike", "x".into()),
            (Psk, "ipsec_a\nb", "x".into()),
            (Psk, "ipsec_ike ", "x".into()),
            (Psk, "ipsec_", "x".into()),
            (Psk, "ipsec_x;y", "x".into()),
            (Psk, "ipsec_ｉke", "x".into()),
            (Psk, "ipsec_ike", "aes\ninclude /etc/x".into()),
            (Psk, "ipsec_ike", "aes\r".into()),
            (Psk, "ipsec_ike", "\"aes\"".into()),
            (Psk, "ipsec_ike", "aes #c".into()),
            (Psk, "ipsec_ike", "a;b".into()),
            (Psk, "ipsec_ike", "$(reboot)".into()),
            (Psk, "ipsec_ike", "`reboot`".into()),
            (Psk, "ipsec_ike", "%include".into()),
            (Psk, "ipsec_ike", "%any%any".into()),
            (Psk, "ipsec_ike", "a b".into()),
            (Psk, "ipsec_ike", "".into()),
            (Psk, "ipsec_ike", "a\\b".into()),
            (Psk, "ipsec_ike", "{x}".into()),
            (Psk, "ipsec_ike", "a\0".into()),
            (Psk, "ipsec_ike", long("x", 256)),
            (Psk, "ipsec_ike", "ａes".into()),
            (Psk, "ipsec_dpdaction", "%forever\n".into()),
            (Cert, "remote_name", "host 2".into()),
            (Cert, "remote_name", "host\n2".into()),
            (Cert, "remote_name", "-host".into()),
            (Cert, "remote_name", "\"host\"".into()),
            (Cert, "remote_name", "'host'".into()),
            (Cert, "remote_name", "host%any".into()),
            (Cert, "remote_name", "host#".into()),
            (Cert, "remote_name", "hоst2".into()),
            (Cert, "remote_name", "host;x".into()),
            (Cert, "remote_name", long("h", 256)),
            (Cert, "remote_cert", "/etc/../peer.pem".into()),
            (Cert, "remote_cert", "peer.pem".into()),
            (Cert, "remote_cert", "/peer.pem\n".into()),
            (Cert, "remote_cert", "/peer pem".into()),
            (Cert, "remote_cert", "/peer.pem;x".into()),
            (Cert, "remote_cert", "-/peer.pem".into()),
            (Cert, "remote_cert", "/pe`er`.pem".into()),
            (Cert, "remote_cert", "/$(x).pem".into()),
            (Cert, "remote_cert", "/bad-cn.pem".into()),
            (Cert, "remote_cert", "/missing.pem".into()),
        ];
        cases.push((Cert, "remote_cert", format!("/{}", long("a", 4100))));
        cases
            .into_iter()
            .map(|(w, k, v)| (w, k.to_owned(), v))
            .collect()
    }

    /// Every hostile value makes its tunnel invalid with a reason that names the key, shows
    /// no raw control character and no PSK, and leaves the other tunnels alone.
    #[test]
    fn hostile_values_are_rejected() {
        let cases = hostile_cases();
        assert!(cases.len() >= 50);
        for (world, key, value) in cases {
            let (global, good, mut bad) = match world {
                World::Psk => (
                    ovs(&[]),
                    psk_row("good", "k"),
                    row("bad", "vxlan", &[("remote_ip", "192.0.2.9"), ("psk", "k")]),
                ),
                World::Cert => (ovs(PKI_A), ca_row("good"), ca_row("bad")),
            };
            if key == "name" {
                bad.name = value.clone();
            } else {
                bad.options.insert(key.clone(), value.clone());
            }
            let mut reg = Registry::new();
            let mut c = certs();
            reg.update(Some(&global), [&good], &mut c);
            let events = reg.update(Some(&global), [&good, &bad], &mut c);

            let t = tunnel(&reg, &bad.name);
            let Validity::Invalid(reason) = &t.validity else {
                panic!("{key}={value:?} accepted: {t:?}");
            };
            let label = key_label(&key);
            let named = if label.starts_with('\'') {
                key.clone()
            } else {
                label
            };
            assert!(reason.contains(&named), "{key}={value:?}: {reason}");
            for line in texts(&events) {
                assert!(
                    !line.contains(['\n', '\r', '\0']) && line.len() < 1200,
                    "{key}={value:?}: {line:?}"
                );
                assert!(
                    key != "psk" || !line.contains(&value[..3]),
                    "PSK shown: {line}"
                );
            }
            let warned = events
                .iter()
                .filter(|e| matches!(e, ModelEvent::Invalid { .. }))
                .count();
            assert_eq!(warned, 1, "{key}={value:?}: {events:?}");
            // The good tunnel: untouched, still version 1, the only one desired.
            assert_eq!(tunnel(&reg, "good").version, 1);
            let desired = reg.desired();
            assert_eq!(desired.tunnels.keys().collect::<Vec<_>>(), ["good"]);
        }
    }

    #[test]
    fn odd_but_legitimate_psks_are_accepted() {
        for psk in [
            "with 'quotes\" inside",
            "new\nline\r\n",
            "  spaces  ",
            "ünïcødé ✓",
            "#;$(x)`%include",
        ] {
            let mut reg = Registry::new();
            reg.update(None, [&psk_row("t", psk)], &mut certs());
            let conf = reg.desired().tunnels["t"].conf.clone();
            assert!(matches!(&conf.auth, Auth::Psk(s) if s.expose() == psk));
        }
    }

    fn option_key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "remote_ip",
                "local_ip",
                "psk",
                "remote_cert",
                "remote_name",
                "dst_port",
                "ipsec_ike",
                "ipsec_also",
                "ipsec_encapsulation",
                "key",
            ])
            .prop_map(str::to_owned),
            "ipsec_[a-zA-Z0-9_ %-]{0,6}",
            ".{0,8}",
        ]
    }

    fn option_value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "192.0.2.1",
                "fd01::1",
                "10.0.0.1",
                "0.0.0.0",
                "flow",
                "4789",
                "/peer.pem",
                "/bad-cn.pem",
                "host2",
                "yes",
                "%any",
                "%include",
                "",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,12}",
            ".{0,12}",
        ]
    }

    /// Row variants for the incremental test: valid and invalid PSK rows, certificate rows,
    /// a non-IPsec row, and a deleted row (`None`).
    fn variant() -> impl Strategy<Value = Option<(&'static str, Vec<(&'static str, &'static str)>)>>
    {
        prop::sample::select(vec![
            None,
            Some(("geneve", vec![("remote_ip", "192.0.2.2"), ("psk", "k1")])),
            Some(("geneve", vec![("remote_ip", "192.0.2.2"), ("psk", "k2")])),
            Some(("gre", vec![("remote_ip", "192.0.2.9"), ("psk", "k1")])),
            Some(("gre", vec![("psk", "k1")])),
            Some((
                "vxlan",
                vec![("remote_ip", "10.0.0.1"), ("remote_cert", "/peer.pem")],
            )),
            Some((
                "gre",
                vec![("remote_ip", "192.0.2.3"), ("remote_name", "host2")],
            )),
            Some(("geneve", vec![("remote_ip", "192.0.2.2")])),
        ])
    }

    proptest! {
        /// Updating only the rows a change touched gives the same events and the same state as
        /// evaluating every row, whatever the sequence of inserts, renames (names collide on
        /// purpose), deletes and PKI changes.
        #[test]
        fn incremental_updates_match_full_ones(
            steps in prop::collection::vec(
                (0..4usize, prop::sample::select(vec!["a", "b", "c"]), variant(), 0..4usize),
                1..16,
            ),
        ) {
            use crate::model::rows::{self, Rows};
            use crate::ovsdb::Replica;
            use serde_json::json;
            let mut replica = Replica::new(Default::default());
            let (mut kept, mut inc, mut full) = (Rows::default(), Registry::new(), Registry::new());
            let mut c = certs();
            for (i, name, row, pki) in steps {
                let (before, was) = (inc.generation(), inc.desired().clone());
                let uuid = format!("u{i}");
                let mut update = json!({"Interface": {uuid.as_str(): {}}});
                if let Some((kind, opts)) = row {
                    update["Interface"][uuid.as_str()] = json!({"new": {
                        "name": name, "type": kind, "options": ["map", opts]}});
                }
                let globals: [&[(&str, &str)]; 4] =
                    [&[], PKI_A, PKI_B, &[("ipsec_skb_mark", "1/1")]];
                let other = globals[pki];
                update["Open_vSwitch"] = json!({"o": {"new": {"other_config": ["map", other]}}});
                replica.apply_update(&update).unwrap();
                let touched = kept.catch_up(&mut replica);
                let ovs = rows::open_vswitch(&replica);
                let a = inc.update_changed(
                    kept.open_vswitch(), &kept, touched.as_ref().map(|t| &t.names), &mut c);
                let b = full.update(ovs.as_ref(), &rows::interfaces(&replica), &mut c);
                prop_assert_eq!(a, b);
                prop_assert_eq!(inc.tunnels().collect::<Vec<_>>(), full.tunnels().collect::<Vec<_>>());
                prop_assert_eq!(inc.desired(), full.desired());
                prop_assert_eq!(inc.saved_versions(), full.saved_versions());
                let fresh: SavedVersions = full.tunnels().map(|t| (t.name.clone(), SavedVersion {
                    version: t.version, digest: versions::digest(&t.validity) })).collect();
                prop_assert_eq!(full.saved_versions(), &fresh);
                prop_assert_eq!(inc.generation() == before, inc.desired() == &was);
            }
        }

        /// Arbitrary rows never panic the model, and a valid tunnel never holds a field that
        /// breaks its grammar.
        #[test]
        fn arbitrary_rows_never_yield_ungrammatical_tunnels(
            name in prop_oneof!["[a-z]{1,4}", ".{0,6}"],
            kind in prop::sample::select(vec!["gre", "geneve", "vxlan", "stt", ""]),
            base in prop::sample::select(vec![
                vec![("remote_ip", "192.0.2.1"), ("psk", "k")],
                vec![("remote_ip", "fd01::1"), ("remote_name", "host2")],
                vec![("remote_ip", "10.0.0.1"), ("remote_cert", "/peer.pem")],
                vec![],
            ]),
            extra in prop::collection::btree_map(option_key(), option_value(), 0..6),
            with_pki in any::<bool>(),
        ) {
            // A valid base, disturbed by arbitrary options, reaches the deep checks often.
            let mut options: BTreeMap<String, String> =
                base.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            options.extend(extra);
            let r = InterfaceRow { name, kind: kind.to_owned(), options, ..Default::default() };
            let global = if with_pki { ovs(PKI_A) } else { ovs(&[]) };
            let mut reg = Registry::new();
            let events = reg.update(Some(&global), [&r], &mut certs());
            for line in texts(&events) {
                prop_assert!(!line.contains(['\n', '\r', '\0']), "{line:?}");
            }
            for (name, t) in &reg.desired().tunnels {
                let conf = &t.conf;
                prop_assert!(grammar::interface_name(name).is_ok());
                prop_assert!(grammar::ip_address("r", &conf.remote_ip.to_string()).is_ok());
                if let Some(l) = conf.local_ip {
                    prop_assert!(grammar::ip_address("l", &l.to_string()).is_ok());
                    prop_assert_eq!(l.is_ipv4(), conf.remote_ip.is_ipv4());
                }
                for (k, v) in &conf.custom {
                    let key = format!("ipsec_{k}");
                    prop_assert!(grammar::custom_option(&key, v).is_ok());
                }
                match &conf.auth {
                    Auth::Psk(s) => prop_assert!(grammar::psk(s.expose()).is_ok()),
                    Auth::SelfSigned { remote_cert, remote_name } => {
                        prop_assert!(grammar::path("c", &remote_cert.to_string_lossy()).is_ok());
                        prop_assert!(grammar::identity("n", remote_name).is_ok());
                    }
                    Auth::CaSigned { remote_name } => {
                        prop_assert!(grammar::identity("n", remote_name).is_ok());
                    }
                }
                prop_assert_eq!(conf.pki.is_some(), !matches!(conf.auth, Auth::Psk(_)));
            }
        }
    }
}
