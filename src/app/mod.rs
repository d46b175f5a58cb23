//! The imperative shell: process set-up and the main loop that feeds OVSDB changes through
//! the pure model, the backend's plan and the status diff.
//!
//! One current-thread tokio runtime runs everything: the OVSDB connection task, the control
//! server, and [`event_loop::EventLoop`]. The main loop owns all daemon state, so no locks
//! guard it; the OVSDB replica is the only shared structure.

mod backend_config;
mod cert_alerts;
mod diagnose;
mod event_loop;
mod metrics_feed;
mod monitor_keys;
mod pass;
mod setup;
mod status_scope;
mod xfrm_watch;

pub use event_loop::STATUS_UPDATED;
pub use setup::main_entry;

/// Seconds between periodic reconcile passes (`RECONCILIATION_INTERVAL` in the Python monitor).
pub const RECONCILE_INTERVAL_SECS: u64 = 15;
