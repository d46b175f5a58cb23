//! Errors of the static-key backend. Netlink errors keep only the kernel's error code: the
//! kernel echoes the whole request (key bytes included) in its error replies.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum XfrmError {
    /// The kernel refused a request; `errno` is positive.
    #[error("{}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
