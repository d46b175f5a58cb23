//! The monitor's own health keys on the `Open_vSwitch` row.

use std::time::{Duration, Instant, SystemTime};

use crate::backend::BackendKind;
use crate::status::{Keys, keys, time};

/// How often `ipsec-monitor-last-reconcile` is refreshed when nothing else changes: often
/// enough to show the monitor is alive, rarely enough not to wake every OVSDB client.
const HEARTBEAT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct MonitorKeys {
    backend: String,
    last_reconcile: Option<(Instant, String)>,
}

impl MonitorKeys {
    pub fn new(kind: BackendKind, dry_run: bool) -> Self {
        let backend = if dry_run {
            format!("{kind} (dry-run)")
        } else {
            kind.as_str().to_owned()
        };
        Self {
            backend,
            last_reconcile: None,
        }
    }

    /// Records a successful pass; `changed` passes always move the timestamp, others only
    /// once per [`HEARTBEAT`].
    pub fn reconciled(&mut self, changed: bool) {
        let due = self
            .last_reconcile
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= HEARTBEAT);
        if changed || due {
            self.last_reconcile = Some((Instant::now(), time::rfc3339(SystemTime::now())));
        }
    }

    pub fn keys(&self, error: Option<String>) -> Keys {
        Keys::from([
            (keys::MONITOR_BACKEND, Some(self.backend.clone())),
            (
                keys::MONITOR_VERSION,
                Some(env!("CARGO_PKG_VERSION").to_owned()),
            ),
            (
                keys::MONITOR_LAST_RECONCILE,
                self.last_reconcile.as_ref().map(|(_, s)| s.clone()),
            ),
            (keys::MONITOR_ERROR, error),
        ])
    }
}
