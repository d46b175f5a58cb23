//! How the registry compares one OVSDB change with what it knew: which rows to look at (all,
//! or only the named ones), whether a row must be validated again (its fingerprint), and how a
//! tunnel's version, saved digest and events follow from its new validity. Apart from
//! `mod.rs` so the state and its public API read on their own.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use super::events::{GLOBAL_PKI_INVALID, ModelEvent, new_error};
use super::{Registry, desired_tunnel};
use crate::model::cert::CertSource;
use crate::model::grammar;
use crate::model::rows::{InterfaceRow, Rows};
use crate::model::types::{DesiredTunnel, Tunnel, Validity};
use crate::model::validate;
use crate::model::versions::{self, SavedVersion};

impl Registry {
    pub(super) fn evaluate_all<'a>(
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
    pub(super) fn evaluate_names(
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

    pub(super) fn update_global(
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
        match self.global.pki.as_ref().and_then(|p| p.ca_cert.as_ref()) {
            None => self.global.ca_bundle = None,
            Some(ca) => {
                if let Ok(bundle) = certs.ca_bundle(ca)
                    && self.global.ca_bundle.as_ref() != Some(&bundle)
                {
                    self.global.ca_bundle = Some(bundle);
                }
            }
        }
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
                    // New paths of the same credentials' kind keep the version: the
                    // backends reload the files by content (see `versions::same_version`).
                    if versions::same_version(&tunnel.validity, &validity) {
                        events.push(ModelEvent::CredentialsMoved {
                            name: name.to_owned(),
                            version: tunnel.version,
                        });
                    } else {
                        tunnel.version += 1;
                        events.push(ModelEvent::Changed {
                            name: name.to_owned(),
                            version: tunnel.version,
                        });
                    }
                    tunnel.validity = validity;
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
}
