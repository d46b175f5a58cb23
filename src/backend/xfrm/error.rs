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

impl XfrmError {
    /// What to check when the kernel refuses an SA for lack of a module.
    pub fn hint(&self) -> &'static str {
        match self {
            XfrmError::Kernel { errno }
                if *errno == libc::ENOSYS || *errno == libc::EPROTONOSUPPORT =>
            {
                "; the kernel lacks ESP or AES-GCM support (esp4/esp6, gcm modules)"
            }
            _ => "",
        }
    }
}
