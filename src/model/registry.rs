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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use tracing::Level;

use super::cert::CertSource;
use super::grammar::{self, shown};
use super::rows::{InterfaceRow, OpenVSwitchRow};
use super::types::{Desired, DesiredTunnel, Global, Tunnel, Validity};
use super::validate;

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
            Self::Appeared { name } => write!(f, "Tunnel {} appeared in OVSDB", shown(name)),
            Self::Changed { name, version } => write!(
                f,
                "Tunnel's '{}' configuration changed in OVSDB to {version}",
                shown(name)
            ),
            Self::Disappeared { name } => {
                write!(f, "Tunnel {} disappeared from OVSDB", shown(name))
            }
            Self::Invalid { name, reason } => {
                write!(f, "{} contains invalid configuration{reason}", shown(name))
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
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
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
        for (name, row) in rows {
            let validity = validate::validate(row, self.global.pki.as_ref(), certs);
            self.update_tunnel(name, row, validity, &mut events);
        }
        events
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
        if pki_error.is_some() && pki_error != self.pki_error {
            events.push(ModelEvent::GlobalPkiInvalid {
                reason: pki_error.clone().unwrap_or_default(),
            });
        }
        self.pki_error = pki_error;

        let mark_error = match other_config
            .get("ipsec_skb_mark")
            .map(|m| grammar::skb_mark(m))
        {
            None => {
                self.global.skb_mark = None;
                None
            }
            Some(Ok(mark)) => {
                self.global.skb_mark = Some(mark);
                None
            }
            Some(Err(e)) => Some(e.to_string()),
        };
        if mark_error.is_some() && mark_error != self.mark_error {
            events.push(ModelEvent::SkbMarkInvalid {
                reason: mark_error.clone().unwrap_or_default(),
            });
        }
        self.mark_error = mark_error;

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
                self.tunnels.insert(
                    name.to_owned(),
                    Tunnel {
                        uuid: row.uuid.clone(),
                        name: name.to_owned(),
                        version: 1,
                        validity,
                        raw: validate::raw(row),
                        ofport: row.ofport,
                        cfm_fault: row.cfm_fault,
                    },
                );
                true
            }
        };
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

    pub fn global(&self) -> &Global {
        &self.global
    }

    /// The current problem with the global settings (PKI and/or skb mark), for OVSDB status.
    pub fn global_error(&self) -> Option<&str> {
        self.global_error.as_deref()
    }

    /// The valid tunnels with their versions, and the global settings in force.
    pub fn desired(&self) -> Desired {
        Desired {
            global: self.global.clone(),
            tunnels: self
                .tunnels
                .values()
                .filter_map(|t| {
                    t.conf().map(|conf| {
                        (
                            t.name.clone(),
                            DesiredTunnel {
                                version: t.version,
                                conf: Arc::clone(conf),
                            },
                        )
                    })
                })
                .collect(),
        }
    }
}
