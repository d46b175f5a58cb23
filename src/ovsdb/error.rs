//! The one error type of the OVSDB client.
//!
//! Connection-level failures (I/O, TLS, protocol violations) end a session and trigger a
//! reconnect; the same type is returned to `transact` callers, so every variant carries enough
//! text to be logged as is. No variant ever holds key material: TLS file errors name the path.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::jsonrpc::MessageError;
use crate::jsonrpc::codec::FrameError;

#[derive(Debug, Error)]
pub enum OvsdbError {
    #[error("invalid OVSDB remote {remote:?}: {reason}")]
    BadRemote {
        remote: String,
        reason: &'static str,
    },
    #[error("not connected to the database")]
    NotConnected,
    #[error("connection closed by peer")]
    Eof,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Message(#[from] MessageError),
    #[error("cannot read {path}: {reason}")]
    TlsFile { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("no message from the server for {0:?}")]
    Inactivity(Duration),
    #[error("timed out connecting after {0:?}")]
    ConnectTimeout(Duration),
    #[error("server replied with an error to {method}: {error}")]
    Rpc { method: String, error: String },
    /// `detail` names a shape or a position, never a value: rows carry pre-shared keys.
    #[error("malformed {what} from the server: {detail}")]
    Protocol { what: &'static str, detail: String },
    #[error("transaction failed: {0}")]
    Transaction(String),
    /// Serialising our own request failed (no value from the server is involved).
    #[error("cannot encode the request: {0}")]
    Encode(#[from] serde_json::Error),
}

impl OvsdbError {
    pub(crate) fn protocol(what: &'static str, detail: impl ToString) -> Self {
        OvsdbError::Protocol {
            what,
            detail: detail.to_string(),
        }
    }
}
