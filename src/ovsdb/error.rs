//! The one error type of the OVSDB client.
//!
//! Connection-level failures (I/O, TLS, protocol violations) end a session and trigger a
//! reconnect; the same type is returned to `transact` callers, so every variant carries enough
//! text to be logged as is. No variant ever holds key material: TLS file errors name the path.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::replica::UpdateError;
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
    #[error("malformed {what} from the server: {detail}")]
    Protocol { what: &'static str, detail: String },
    /// Only the shape of the fault is kept: the offending value may be a pre-shared key.
    #[error("malformed update: {0}")]
    Update(String),
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

impl From<UpdateError> for OvsdbError {
    fn from(e: UpdateError) -> Self {
        OvsdbError::Update(match e {
            UpdateError::Row { table, uuid, .. } => format!("row {uuid} of table {table}"),
            UpdateError::NotObject => "table-updates is not an object".into(),
            UpdateError::Datum(_) => "bad value".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::datum::DatumError;

    #[test]
    fn update_errors_never_carry_values() {
        let e = OvsdbError::from(UpdateError::Row {
            table: "Interface".into(),
            uuid: "u1".into(),
            detail: "not an OVSDB atom: [\"psk\",\"s3cret\",1]".into(),
        });
        let text = e.to_string();
        assert!(text.contains("Interface") && text.contains("u1"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let e = OvsdbError::from(UpdateError::Datum(DatumError::Atom("s3cret".into())));
        assert!(!e.to_string().contains("s3cret"));
    }
}
