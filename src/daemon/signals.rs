//! The signals the daemon acts on, as one awaitable stream for its main `select!`.
//!
//! SIGTERM and SIGINT ask for a shutdown that leaves IPsec state in place, as the Python
//! monitor does (`ovs-appctl exit` is the command that also removes it); SIGHUP asks to
//! reopen the log file after rotation. Handlers are installed by [`Signals::new`], so from
//! then on these signals no longer kill the process by default.

use nix::sys::signal::Signal;
use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Error)]
#[error("cannot install a handler for {signal}: {source}")]
pub struct SignalError {
    signal: &'static str,
    source: std::io::Error,
}

/// What a received signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: exit 0, IPsec state untouched.
    Shutdown(Signal),
    /// SIGHUP: reopen the log file.
    ReopenLogs,
}

/// Installed handlers for SIGTERM, SIGINT and SIGHUP.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

fn install(
    kind: SignalKind,
    name: &'static str,
) -> Result<tokio::signal::unix::Signal, SignalError> {
    signal(kind).map_err(|source| SignalError {
        signal: name,
        source,
    })
}

impl Signals {
    /// Installs the handlers; must be called inside the tokio runtime.
    pub fn new() -> Result<Self, SignalError> {
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal; `None` once the runtime no longer delivers any (it is shutting down).
    pub async fn recv(&mut self) -> Option<SignalEvent> {
        tokio::select! {
            Some(()) = self.term.recv() => Some(SignalEvent::Shutdown(Signal::SIGTERM)),
            Some(()) = self.int.recv() => Some(SignalEvent::Shutdown(Signal::SIGINT)),
            Some(()) = self.hup.recv() => Some(SignalEvent::ReopenLogs),
            else => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn hangup_reopens_logs_and_interrupt_shuts_down() {
        let mut signals = Signals::new().unwrap();
        // Handlers are in place, so these no longer kill the test process.
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();
        assert_eq!(signals.recv().await, Some(SignalEvent::ReopenLogs));
        nix::sys::signal::raise(Signal::SIGINT).unwrap();
        assert_eq!(
            signals.recv().await,
            Some(SignalEvent::Shutdown(Signal::SIGINT))
        );
    }
}
