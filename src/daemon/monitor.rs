//! `--monitor`: a supervisor process that restarts the worker when it crashes.
//!
//! Only failures that a fresh start may cure cause a restart: the worker's deliberate
//! [`RESTART_EXIT_CODE`] (its "unexpected error" exit) and death by a crash signal. A normal
//! exit, or death by SIGTERM, SIGINT or SIGKILL, is someone's decision to stop, so the
//! supervisor ends the same way and `ovs-ctl`/systemd see the worker's own status. Restarts
//! are spaced at least [`MIN_RESTART_INTERVAL`] apart so a worker that fails at once does not
//! spin. A worker that never completed its first start-up is not restarted either: a bad
//! configuration should fail `ovs-ctl start`, not loop.
//!
//! The worker, not the supervisor, owns the pidfile and control socket: `ovs-appctl` talks to
//! the process that does the work, and `ovs-ctl stop` signals it.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::detach::{Daemon, DaemonError, Ending, Forked, fork_and_wait, wait_ending};

/// The exit code that asks the supervisor for a restart.
pub const RESTART_EXIT_CODE: i32 = 5;

/// Restarts happen at most this often.
pub const MIN_RESTART_INTERVAL: Duration = Duration::from_secs(10);

/// What the supervisor does once a worker has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Restart,
    Exit(i32),
    Die(Signal),
}

fn next_step(ending: Ending) -> Next {
    match ending {
        Ending::Code(RESTART_EXIT_CODE) => Next::Restart,
        Ending::Code(code) => Next::Exit(code),
        Ending::Signal(
            Signal::SIGSEGV | Signal::SIGABRT | Signal::SIGBUS | Signal::SIGFPE | Signal::SIGILL,
        ) => Next::Restart,
        Ending::Signal(signal) => Next::Die(signal),
    }
}

/// Runs the supervisor loop; returns only in a worker. `upstream` is whoever waits for the
/// first start-up (the `--detach` foreground process, or nobody).
pub(super) fn supervise(mut upstream: Daemon) -> Result<Daemon, DaemonError> {
    let mut ever_ready = false;
    let mut last_start: Option<Instant> = None;
    loop {
        if let Some(started_at) = last_start {
            std::thread::sleep(MIN_RESTART_INTERVAL.saturating_sub(started_at.elapsed()));
        }
        last_start = Some(Instant::now());

        let (child, started) = match fork_and_wait()? {
            Forked::Child(waiter) => return Ok(upstream.into_worker(waiter)),
            Forked::Parent { child, started } => (child, started),
        };
        if started && !ever_ready {
            ever_ready = true;
            tracing::info!("monitoring pid {child}");
            upstream.ready()?;
        }

        let ending = wait_ending(child)?;
        if !ever_ready {
            tracing::error!("daemon child died before signaling start-up ({ending})");
            std::process::exit(ending.code_before_ready());
        }
        match next_step(ending) {
            Next::Restart => tracing::warn!("pid {child} died, {ending}, restarting"),
            Next::Exit(code) => {
                tracing::info!("pid {child} died, {ending}, exiting");
                std::process::exit(code);
            }
            Next::Die(signal) => {
                tracing::info!("pid {child} died, {ending}, exiting");
                // End as the worker did; if the signal is ignored here, the shell's encoding.
                let _ = nix::sys::signal::raise(signal);
                std::process::exit(128 + signal as i32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashes_and_the_restart_code_restart_the_worker() {
        for ending in [
            Ending::Code(RESTART_EXIT_CODE),
            Ending::Signal(Signal::SIGSEGV),
            Ending::Signal(Signal::SIGABRT),
            Ending::Signal(Signal::SIGBUS),
            Ending::Signal(Signal::SIGFPE),
            Ending::Signal(Signal::SIGILL),
        ] {
            assert_eq!(next_step(ending), Next::Restart, "{ending}");
        }
    }

    #[test]
    fn deliberate_stops_end_the_supervisor_the_same_way() {
        assert_eq!(next_step(Ending::Code(0)), Next::Exit(0));
        assert_eq!(next_step(Ending::Code(1)), Next::Exit(1));
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGKILL] {
            assert_eq!(next_step(Ending::Signal(signal)), Next::Die(signal));
        }
    }
}
