//! OVS "vlog" logging on top of `tracing`.
//!
//! Operators and OVS's own tests expect the Python monitor's logging model: per-module levels
//! for three destinations (`console` = stderr, `syslog`, `file`), changed at start-up with
//! `-vSPEC` and at run time with `ovs-appctl vlog/set`, and lines such as
//! `2026-11-22T04:46:14.123Z|00042|ovsdb|INFO|connected`.
//!
//! - [`spec`]: modules (the crate's top-level modules, taken from the tracing target), levels,
//!   destinations and the spec parser shared by `-v` and `vlog/set`;
//! - [`handle`]: [`LogHandle`], the level table in atomics plus the log file, shared by the
//!   layer and the control socket;
//! - [`layer`]: the `tracing_subscriber` layer that formats and writes lines, and the filter
//!   that feeds journald for the `syslog` destination;
//! - [`format`]: the line layout, UTC timestamps and escaping of control characters, so that
//!   no string from OVSDB can inject a line;
//! - [`file`]: the append-only log file with reopen for logrotate.
//!
//! `tracing-subscriber`'s `reload` layer is not used: a level change is a store into an
//! atomic, and callsites are never cached as disabled (see [`layer`]).

pub mod file;
pub mod format;
pub mod handle;
pub mod layer;
pub mod spec;

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use tracing_subscriber::layer::{Layer, SubscriberExt};

pub use handle::LogHandle;

/// What the command line says about logging.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// `--log-file`, already resolved to a path; `None` disables the file destination.
    pub log_file: Option<PathBuf>,
    /// `-v` specs, applied in order on top of the defaults (console info, syslog off, file info).
    pub specs: Vec<String>,
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("invalid log specification: {0}")]
    Spec(String),
    #[error("cannot open log file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Builds the logging state from `cfg` and installs it as the process-wide subscriber. The
/// `syslog` destination goes to journald when its socket exists, and nowhere otherwise.
pub fn init(cfg: LogConfig) -> Result<LogHandle, LogError> {
    let handle = LogHandle::new(cfg)?;
    let journald = tracing_journald::layer().ok().map(|j| {
        handle.set_syslog_attached();
        j.with_filter(layer::SyslogFilter::new(handle.clone()))
    });
    let subscriber = tracing_subscriber::registry()
        .with(handle.layer())
        .with(journald);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadyInstalled)?;
    Ok(handle)
}
