//! Helpers shared by the integration test binaries.
//!
//! Each `tests/*.rs` binary compiles this module and uses a different part of it, so unused
//! items are expected here.
#![allow(dead_code)]

pub mod fake_charon;
pub mod libreswan;
pub mod monitor;
pub mod netns;
pub mod ovsdb_server;
pub mod strongswan_netns;
pub mod strongswan_stroke;
pub mod vici;
pub mod xfrm;
pub mod xfrm_events;

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
