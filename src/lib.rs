//! ovs-monitor-ipsec: keeps the kernel's IPsec state in line with the IPsec options of Open
//! vSwitch tunnels.
//!
//! A functional core with an imperative shell (see `docs/architecture.md`):
//! - [`ovsdb`]: our RFC 7047 client and the local replica of the rows we monitor;
//! - [`model`]: pure, rows → validated desired tunnels and global PKI, with reasons;
//! - [`plan`]: pure set differences that backends turn into minimal action lists;
//! - [`backend`]: the one trait every IKE daemon (or the static-key XFRM backend) implements;
//! - [`status`]: the per-tunnel state written back to OVSDB, only our keys, only on change;
//! - [`metrics`]: Prometheus metrics from what the pipeline already holds, `--metrics`;
//! - [`diagnose`]: read-only, per-layer findings for `ovs-appctl ... diagnose`;
//! - [`control`]: the unixctl server (`ovs-appctl -t ovs-monitor-ipsec ...`) and our client.

pub mod app;
pub mod backend;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod diagnose;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod jsonrpc;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod ovsdb;
pub mod plan;
pub mod schema;
pub mod status;
