//! `--detach`, `--no-chdir` and `--monitor`: the forks, done before anything else runs.
//!
//! `fork` only copies the calling thread, so it is sound only while the process has one
//! thread: [`daemonize`] checks that and must run before the tokio runtime (or any other
//! thread) starts.
//!
//! Start-up is synchronous for whoever started us, as with every OVS daemon: with `--detach`
//! the foreground process waits on a pipe and exits 0 only once the daemon calls
//! [`Daemon::ready`] (pidfile and control socket in place, first pass done), so `ovs-ctl` can
//! rely on both right after it returns. If the daemon dies first, the foreground process
//! exits with the daemon's exit code (1 if it had none). `--monitor` puts a supervisor
//! ([`super::monitor`]) between the two; it relays the first "ready" only.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use thiserror::Error;

use super::monitor;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot daemonize: the process already runs {0} threads (fork must come first)")]
    Threaded(usize),
    #[error("cannot daemonize: {op}: {source}")]
    Sys { op: &'static str, source: Errno },
    #[error("cannot daemonize: {op}: {source}")]
    Io { op: &'static str, source: io::Error },
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> DaemonError {
    move |source| DaemonError::Sys { op, source }
}

/// The daemon flags, straight from the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonOptions {
    pub detach: bool,
    pub monitor: bool,
    pub no_chdir: bool,
}

/// The worker process; tell it [`Daemon::ready`] once start-up is complete.
#[derive(Debug)]
pub struct Daemon {
    /// Write end of the pipe someone waits on (the foreground process or the supervisor).
    waiter: Option<OwnedFd>,
    detached: bool,
    no_chdir: bool,
}

impl Daemon {
    /// The same settings for a process forked from this one, which reports to `waiter`; our
    /// own pipe is closed here, so only the supervisor can answer whoever waits on it.
    pub(super) fn into_worker(self, waiter: OwnedFd) -> Daemon {
        Daemon {
            waiter: Some(waiter),
            ..self
        }
    }

    /// True when running in the background (`--detach`): the console is gone after `ready`.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Start-up is complete: releases whoever waits for it and, when detached, lets go of
    /// the terminal and (unless `--no-chdir`) the working directory. Later calls do nothing.
    pub fn ready(&mut self) -> Result<(), DaemonError> {
        let Some(waiter) = self.waiter.take() else {
            return Ok(());
        };
        match retry_eintr(|| nix::unistd::write(&waiter, &[1])) {
            // The waiter is gone (killed): nothing left to tell, and not our failure.
            Ok(_) | Err(Errno::EPIPE) => {}
            Err(e) => return Err(sys("notify the waiting process")(e)),
        }
        drop(waiter);
        if self.detached {
            enter_background(self.no_chdir)?;
        }
        Ok(())
    }
}

/// Forks as `opts` asks. Returns in the worker only: the foreground process of `--detach`
/// and the `--monitor` supervisor exit from inside. Without either flag, returns at once.
pub fn daemonize(opts: DaemonOptions) -> Result<Daemon, DaemonError> {
    let mut worker = Daemon {
        waiter: None,
        detached: opts.detach,
        no_chdir: opts.no_chdir,
    };
    if !opts.detach && !opts.monitor {
        return Ok(worker);
    }
    ensure_single_threaded()?;

    if opts.detach {
        match fork_and_wait()? {
            Forked::Parent { child, started } => {
                let code = if started {
                    0
                } else {
                    let ending = wait_ending(child)?;
                    tracing::error!("daemon child died before signaling start-up ({ending})");
                    ending.code_before_ready()
                };
                std::process::exit(code);
            }
            Forked::Child(waiter) => {
                // A new session: no controlling terminal, immune to the shell's hangup.
                nix::unistd::setsid().map_err(sys("setsid"))?;
                worker.waiter = Some(waiter);
            }
        }
    }
    if opts.monitor {
        return monitor::supervise(worker);
    }
    Ok(worker)
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Code(i32),
    Signal(Signal),
}

impl Ending {
    /// The foreground process's exit code when the daemon died before `ready`: its own
    /// failure code, or 1 (an exit 0 before start-up completed is still a failed start).
    pub(super) fn code_before_ready(self) -> i32 {
        match self {
            Ending::Code(c) if c != 0 => c,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Code(c) => write!(f, "exit status {c}"),
            Ending::Signal(s) => write!(f, "killed by signal {}", s.as_str()),
        }
    }
}

/// Waits until `child` has exited or been killed.
pub(super) fn wait_ending(child: Pid) -> Result<Ending, DaemonError> {
    loop {
        match retry_eintr(|| waitpid(child, None)).map_err(sys("waitpid"))? {
            WaitStatus::Exited(_, code) => return Ok(Ending::Code(code)),
            WaitStatus::Signaled(_, signal, _) => return Ok(Ending::Signal(signal)),
            _ => {}
        }
    }
}

pub(super) enum Forked {
    /// In the parent: the child's pid, and whether it called `ready` (false: it died).
    Parent { child: Pid, started: bool },
    /// In the child: the pipe to tell the parent `ready` through.
    Child(OwnedFd),
}

/// Forks a child and, in the parent, blocks until the child is ready or dead.
pub(super) fn fork_and_wait() -> Result<Forked, DaemonError> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: the callers run single threaded (checked by `daemonize`, and the supervisor
    // never starts a thread), so the child gets a consistent copy of the whole process.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(read_end);
            Ok(Forked::Child(write_end))
        }
        ForkResult::Parent { child } => {
            // Our copy must go, or we would never see end-of-file when the child dies.
            drop(write_end);
            let mut byte = [0u8; 1];
            let n = retry_eintr(|| nix::unistd::read(read_end.as_fd(), &mut byte))
                .map_err(sys("wait for the child's start-up"))?;
            Ok(Forked::Parent {
                child,
                started: n == 1,
            })
        }
    }
}

/// Leaves the working directory (unless `no_chdir`) and points stdin, stdout and stderr at
/// `/dev/null`, so that nothing ties the daemon to the terminal or mount it started from.
fn enter_background(no_chdir: bool) -> Result<(), DaemonError> {
    if !no_chdir {
        nix::unistd::chdir(Path::new("/")).map_err(sys("chdir /"))?;
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| DaemonError::Io {
            op: "open /dev/null",
            source,
        })?;
    nix::unistd::dup2_stdin(&null).map_err(sys("redirect stdin"))?;
    nix::unistd::dup2_stdout(&null).map_err(sys("redirect stdout"))?;
    nix::unistd::dup2_stderr(&null).map_err(sys("redirect stderr"))?;
    Ok(())
}

fn ensure_single_threaded() -> Result<(), DaemonError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|source| DaemonError::Io {
            op: "count threads in /proc/self/task",
            source,
        })?
        .count();
    if threads == 1 {
        Ok(())
    } else {
        Err(DaemonError::Threaded(threads))
    }
}

fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_detach_or_monitor_nothing_forks_and_ready_is_a_no_op() {
        // The test harness is multithreaded: reaching a fork would fail with `Threaded`.
        let mut d = daemonize(DaemonOptions::default()).unwrap();
        assert!(!d.is_detached());
        d.ready().unwrap();
        d.ready().unwrap();
    }

    #[test]
    fn forking_from_a_threaded_process_is_refused() {
        let opts = DaemonOptions {
            detach: true,
            ..DaemonOptions::default()
        };
        assert!(matches!(daemonize(opts), Err(DaemonError::Threaded(n)) if n > 1));
    }

    #[test]
    fn a_failed_start_reports_the_daemons_own_code() {
        assert_eq!(Ending::Code(3).code_before_ready(), 3);
        assert_eq!(Ending::Code(0).code_before_ready(), 1);
        assert_eq!(Ending::Signal(Signal::SIGSEGV).code_before_ready(), 1);
        assert_eq!(
            Ending::Signal(Signal::SIGSEGV).to_string(),
            "killed by signal SIGSEGV"
        );
    }
}
