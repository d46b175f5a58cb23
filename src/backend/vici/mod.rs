//! Our own client for strongSwan's VICI protocol (the charon control socket that `swanctl`
//! uses). The format is small — length-prefixed packets carrying a tree of sections, lists
//! and key/values — so it is implemented here rather than pulled in (see
//! `docs/architecture.md`, "VICI client"): [`message`] is the tree and its encoding,
//! [`packet`] the framing, [`client`] one connection with pipelined batches, streamed
//! listings and event subscriptions.

pub mod client;
pub mod message;
pub mod packet;

use std::path::PathBuf;

use thiserror::Error;

pub use client::{Body, Connection, check};
pub use message::{Element, Encoded, Message, MessageError, Value};

#[derive(Debug, Error)]
pub enum ViciError {
    #[error("cannot connect to {0}: {1}")]
    Connect(PathBuf, #[source] std::io::Error),
    #[error("VICI socket error: {0}")]
    Io(#[source] std::io::Error),
    #[error("charon closed the VICI connection")]
    Closed,
    #[error("timed out trying to {0}")]
    Timeout(String),
    #[error("VICI protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("charon does not know the VICI command {0}")]
    UnknownCommand(String),
    #[error("charon does not know the VICI event {0}")]
    UnknownEvent(String),
    #[error("VICI {cmd} failed: {errmsg}")]
    Failed { cmd: String, errmsg: String },
}
