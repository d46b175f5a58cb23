//! What the shell logs after an OVSDB change: [`ModelEvent`], whose `Display` is the exact
//! log line (OVS's tests grep the Python monitor's wording, typos included), kept apart from the
//! registry's state so the wording can be read and reviewed in one place.

use std::fmt;

use tracing::Level;

use crate::model::grammar::shown_name;

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
    /// Only the paths of the tunnel's credential files changed: it keeps `version` (and its
    /// connections), and the backend reloads the files by content.
    CredentialsMoved {
        name: String,
        version: u64,
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
            | Self::CredentialsMoved { name, .. }
            | Self::Disappeared { name }
            | Self::Invalid { name, .. } => Some(name),
            Self::GlobalPkiInvalid { .. } | Self::SkbMarkInvalid { .. } => None,
        }
    }

    pub fn level(&self) -> Level {
        match self {
            Self::Appeared { .. }
            | Self::Changed { .. }
            | Self::CredentialsMoved { .. }
            | Self::Disappeared { .. } => Level::INFO,
            Self::Invalid { .. } | Self::GlobalPkiInvalid { .. } | Self::SkbMarkInvalid { .. } => {
                Level::WARN
            }
        }
    }
}

/// What the log line of [`ModelEvent::Changed`] says after the tunnel's name (OVS's tests grep
/// it; ours look for its absence after a resync).
pub const CONFIGURATION_CHANGED: &str = "configuration changed in OVSDB to";

/// What the log line of [`ModelEvent::CredentialsMoved`] says after the tunnel's name.
pub const CREDENTIALS_MOVED: &str = "credential files moved, keeping version";

impl fmt::Display for ModelEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Appeared { name } => write!(f, "Tunnel {} appeared in OVSDB", shown_name(name)),
            Self::Changed { name, version } => write!(
                f,
                "Tunnel's '{}' {CONFIGURATION_CHANGED} {version}",
                shown_name(name)
            ),
            Self::Disappeared { name } => {
                write!(f, "Tunnel {} disappeared from OVSDB", shown_name(name))
            }
            Self::CredentialsMoved { name, version } => write!(
                f,
                "Tunnel's '{}' {CREDENTIALS_MOVED} {version}: reloading them by content",
                shown_name(name)
            ),
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

/// Stores `new` in `slot`; returns an event when it is an error different from the last
/// one, so a persisting problem is logged once.
pub(super) fn new_error(
    slot: &mut Option<String>,
    new: Option<String>,
    event: impl FnOnce(String) -> ModelEvent,
) -> Option<ModelEvent> {
    let changed = new != *slot;
    *slot = new;
    slot.clone().filter(|_| changed).map(event)
}
