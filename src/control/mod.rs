//! The control socket: what `ovs-appctl -t ovs-monitor-ipsec ...` talks to, and our own
//! client for hosts without `ovs-appctl`.
//!
//! - [`server`]: the unixctl server (JSON-RPC 1.0, OVS's dialect), built-in commands, and
//!   forwarding of [`AppCommand`]s to the daemon's main loop;
//! - [`commands`]: the command table, argument checking and OVS's error texts;
//! - [`show`]: pure formatting of `tunnels/show` (text and `--json`);
//! - [`client`]: target resolution (`-t`) and one request/reply exchange, used by
//!   `ovs-monitor-ipsec-ctl`.
//!
//! The daemon wires it as:
//! ```text
//! let (server, mut requests) = control::bind(&path, log_handle)?;
//! tokio::spawn(server.run());
//! // in the main loop's select!: Some(req) = requests.recv() => answer req.command on req.reply
//! // (and, before exiting, await req.written: the reply has left)
//! ```

pub mod client;
pub mod commands;
pub mod server;
pub mod show;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub use commands::{AppCommand, ControlRequest};
pub use server::{ControlServer, bind};

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {}: {what} failed: {source}", path.display())]
    Socket {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("control socket {} is in use by a running process", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket; not replacing it", .0.display())]
    NotSocket(PathBuf),
}
