//! Harness for the static-key backend on the real kernel: a fresh network namespace per test
//! (unique name, removed on drop even after a panic) and the monitor started inside it with
//! `--ike-daemon=none`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::monitor::{Monitor, launch};
use super::ovsdb_server::OvsdbServer;

/// Our tunnel endpoints inside every namespace.
pub const LOCAL4: &str = "192.0.2.1";
pub const LOCAL6: &str = "2001:db8::1";

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace with `lo` up holding [`LOCAL4`] and [`LOCAL6`] (this kernel has no dummy
    /// devices).
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ovsx-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["addr", "add", &format!("{LOCAL4}/32"), "dev", "lo"]);
        ns.ip(&["addr", "add", &format!("{LOCAL6}/128"), "dev", "lo"]);
        ns
    }

    /// `ip -n <ns> args...`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip netns exec <ns> nft args...`: (success, stdout).
    pub fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .output()
            .expect("run nft (install nftables: tests/deps/xfrm.packages)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Starts `--ike-daemon=none` in the namespace, logging to `log_name` in the server dir.
    pub fn monitor(&self, db: &OvsdbServer, log_name: &str, extra: &[&str]) -> Monitor {
        let mut args = vec!["--ike-daemon=none"];
        args.extend_from_slice(extra);
        launch(db, &["ip", "netns", "exec", &self.name], log_name, &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` but the database itself (which holds the PSK by design),
/// concatenated: logs, generation file, status written by the monitor, for leak checks.
pub fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("conf.db"))
        {
            continue;
        }
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}
