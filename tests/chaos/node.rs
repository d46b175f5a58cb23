//! One node of the soak: its ovsdb-server, its IKE daemon and our monitor, each of which the
//! soak kills and restarts. Processes come from tests/common (ovsdb-server, charon, the
//! monitor's launcher); this module only adds what a soak needs on top: the monitor under
//! `--monitor` or not, its worker's pid, and the daemon's view of our connections.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::monitor::{Monitor, launch};
use crate::common::ovsdb_server::{OvsdbServer, tunnel_port_upsert_args};
use crate::common::vici::Charon;

pub struct Node {
    pub idx: usize,
    pub ns: String,
    pub db: OvsdbServer,
    pub charon: Charon,
    pub mon: Monitor,
    /// Whether the running monitor is under `--monitor` (its supervisor restarts it).
    pub supervised: bool,
}

impl Node {
    pub fn start(idx: usize, ns: &str, dir: &Path, supervised: bool) -> Self {
        let charon = Charon::start(ns, dir);
        let db = OvsdbServer::start();
        let mon = start_monitor(&db, ns, &charon, supervised);
        Self {
            idx,
            ns: ns.to_owned(),
            db,
            charon,
            mon,
            supervised,
        }
    }

    pub fn pidfile(&self) -> PathBuf {
        self.db.dir().join("monitor.pid")
    }

    /// The pid of the monitor doing the work (the worker under `--monitor`).
    pub fn worker_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts the monitor again (after a kill without `--monitor`), supervised or not.
    pub fn relaunch(&mut self, supervised: bool) {
        // The old one is gone (killed): dropping it only reaps it.
        self.mon = start_monitor(&self.db, &self.ns, &self.charon, supervised);
        self.supervised = supervised;
    }

    /// Upserts interface `name` of type `kind` with exactly `options:<opts>`.
    pub fn set_iface(&self, name: &str, kind: &str, opts: &[String]) {
        let args = iface_args(name, kind, opts);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.db.vsctl(&refs);
    }

    pub fn del_iface(&self, name: &str) {
        self.db
            .vsctl(&["--if-exists", "del-port", "br-ipsec", name]);
    }

    /// Our connections charon holds (`X-N` names), or None when charon does not answer.
    pub fn loaded(&self) -> Option<Vec<String>> {
        let out = self.charon.swanctl(&["--list-conns"]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Some(
            text.lines()
                .filter(|l| !l.starts_with(char::is_whitespace))
                .filter_map(|l| l.split(':').next())
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// charon's IKE_SAs as `name uniqueid` pairs (`--list-sas --raw`).
    pub fn ike_sas(&self) -> Vec<String> {
        let sas = self.charon.swanctl_out(&["--list-sas", "--raw"]);
        sas.split("list-sa event {")
            .skip(1)
            .filter_map(|e| {
                let name = e.split_whitespace().next()?.trim_start_matches('{');
                let id = e.split("uniqueid=").nth(1)?.split(' ').next()?;
                Some(format!("{name} {id}"))
            })
            .collect()
    }

    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.mon.log)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// The monitor's log from byte `from` on.
    pub fn log_since(&self, from: usize) -> String {
        let log = std::fs::read(&self.mon.log).unwrap_or_default();
        String::from_utf8_lossy(log.get(from..).unwrap_or_default()).into_owned()
    }

    /// Waits until the log written since `from` holds `pat`; the time it took, or None.
    pub fn wait_log_since(&self, from: usize, pat: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log_since(from).contains(pat) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// ovs-vsctl arguments that upsert interface `name` with exactly `options:<opts>`: options
/// the previous version had and this one has not are cleared first.
pub fn iface_args(name: &str, kind: &str, opts: &[String]) -> Vec<String> {
    let mut args = tunnel_port_upsert_args(name, kind, opts);
    let at = args.iter().position(|a| a == "interface").unwrap_or(0) + 2;
    args.insert(at, "options={}".into());
    args
}

fn start_monitor(db: &OvsdbServer, ns: &str, charon: &Charon, supervised: bool) -> Monitor {
    let socket = format!("--vici-socket={}", charon.socket().display());
    let pidfile = format!("--pidfile={}", db.dir().join("monitor.pid").display());
    let mut args = vec![
        "--ike-daemon=strongswan",
        "--no-restart-ike-daemon",
        "--strongswan-mode=vici",
        &socket,
        &pidfile,
    ];
    if supervised {
        args.push("--monitor");
    }
    launch(db, &["ip", "netns", "exec", ns], "monitor.log", &args)
}
