//! Policies deleted by hand with `ip xfrm policy delete`, timed until the monitor's log
//! reports them: the detection time of the XFRM notifications, for every backend.

use std::process::Command;
use std::time::{Duration, Instant};

use super::monitor::{Monitor, wait_for};

/// The `ip xfrm policy delete` arguments (selector and direction) of each policy in `ns`
/// whose selector line contains `filter`.
pub fn policy_ids(ns: &str, filter: &str) -> Vec<Vec<String>> {
    let out = Command::new("ip")
        .args(["-n", ns, "xfrm", "policy"])
        .output()
        .expect("run ip (install iproute2)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ids: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if line.starts_with("src ") {
            ids.push(if line.contains(filter) {
                words
            } else {
                Vec::new()
            });
        } else if let (Some(id), [first, dir, ..]) = (ids.last_mut(), words.as_slice())
            && first == "dir"
            && !id.is_empty()
        {
            id.extend(["dir".to_owned(), dir.clone()]);
        }
    }
    ids.retain(|id| !id.is_empty());
    ids
}

/// Whether the policy `id` (from [`policy_ids`]) is in `ns`.
pub fn has_policy(ns: &str, id: &[String]) -> bool {
    Command::new("ip")
        .args(["-n", ns, "xfrm", "policy", "get"])
        .args(id)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Deletes policy `id` by hand and waits until `mon`'s log has one more line containing
/// `noticed`; returns how long that took.
pub fn timed_delete(ns: &str, mon: &Monitor, id: &[String], noticed: &str) -> Duration {
    let seen = mon.log_count(noticed);
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args(["-n", ns, "xfrm", "policy", "delete"])
        .args(id)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip xfrm policy delete {id:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        &format!("log line {noticed:?}"),
        Duration::from_secs(10),
        || mon.log_count(noticed) > seen,
    );
    t0.elapsed()
}

/// Median and maximum of `times`, for the report of a test.
pub fn median_max(times: &[Duration]) -> (Duration, Duration) {
    let mut v = times.to_vec();
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}
