//! Helpers shared by the integration test binaries.
//!
//! Each `tests/*.rs` binary compiles this module and uses a different part of it, so unused
//! items are expected here.
#![allow(dead_code)]

pub mod fake_charon;
pub mod kernel;
pub mod libreswan;
pub mod libreswan_pair;
pub mod monitor;
pub mod netns;
pub mod ovsdb_server;
pub mod pki;
pub mod strongswan_netns;
pub mod strongswan_stroke;
pub mod vici;
pub mod xfrm;
pub mod xfrm_events;

use std::time::{Duration, Instant};

/// Sends SIGKILL to `pid` and waits (`what` names it in a timeout) until it is gone or a
/// zombie its parent has not reaped yet (init here, which may take seconds): a crash, as the
/// daemon's watchers see it.
pub fn kill9_and_wait(pid: i32, what: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    monitor::wait_for(what, Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
}

/// `d` stretched by `OVS_TEST_TIME_SCALE` (a whole number, default 1): the QEMU guest's cargo
/// tier (tests/e2e/run.sh --cargo-tier) runs every process under TCG, several times slower
/// than a host, and sets it so that the tests' deadlines stay generous there.
pub fn scaled(d: Duration) -> Duration {
    static SCALE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    d * *SCALE.get_or_init(|| {
        std::env::var("OVS_TEST_TIME_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n >= 1)
            .unwrap_or(1)
    })
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout` ([`scaled`]).
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let timeout = scaled(timeout);
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
