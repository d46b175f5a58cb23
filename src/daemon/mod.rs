//! Process plumbing shared by every OVS daemon: run-time paths, the locked pidfile,
//! `--detach`/`--monitor`, systemd notification and signals.
//!
//! Order matters and is the caller's to respect: [`daemonize`] forks, so it runs first, while
//! the process is single threaded (before the tokio runtime exists); the worker it returns
//! then creates its [`Pidfile`] and control socket, does its first pass, and calls
//! [`Daemon::ready`] (and [`notify::ready`]), which releases the waiting `--detach` parent.

pub mod detach;
pub mod monitor;
pub mod notify;
pub mod paths;
pub mod pidfile;
pub mod signals;

pub use detach::{Daemon, DaemonError, DaemonOptions, daemonize};
pub use monitor::RESTART_EXIT_CODE;
pub use pidfile::{Pidfile, PidfileError, read_pid};
pub use signals::{SignalEvent, Signals};
