//! Our own RFC 7047 client: framing, `monitor_cond_since`/`monitor_cond`/`monitor`, `transact`,
//! `echo`, reconnect with a full resync; unix, tcp and ssl remotes.

pub mod datum;
pub mod replica;
