//! Our own RFC 7047 client: framing, `monitor_cond_since`/`monitor_cond`/`monitor`, `transact`,
//! `echo`, reconnect with a full resync; unix, tcp and ssl remotes.
//!
//! The lead-facing API is [`Client`] with [`ClientConfig`], [`TableSpec`] and [`DbEvent`];
//! [`Remote::parse_list`] reads the daemon's DATABASE argument.

pub mod client;
pub mod datum;
pub mod error;
pub mod monitor;
pub mod remote;
pub mod replica;
pub mod schema;
pub(crate) mod session;
pub mod transact;
pub mod transport;
pub mod updates;

pub use client::{Client, ClientConfig, DbEvent, TableSpec};
pub use error::OvsdbError;
pub use monitor::{MonitorMethod, any_of};
pub use remote::Remote;
pub use replica::{Changes, Replica, Row};
pub use transport::TlsFiles;
