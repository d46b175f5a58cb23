//! One node of the soak: its ovsdb-server, its IKE daemon and our monitor, each of which the
//! soak kills and restarts. Processes come from tests/common (ovsdb-server, charon, the
//! monitor's launcher); this module only adds what a soak needs on top: the monitor under
//! `--monitor` or not, its worker's pid, and the daemon's view of our connections.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::libreswan::{Pluto, REAL_IPSEC};
use crate::common::monitor::{Monitor, launch_rooted};
use crate::common::ovsdb_server::{OvsdbServer, tunnel_port_upsert_args};
use crate::common::strongswan_netns::Starter;
use crate::common::vici::Charon;
use crate::soak::Mode;

/// The IKE daemon of a node.
pub enum Ike {
    /// charon driven over VICI.
    Charon(Charon),
    /// starter and charon driven through `ipsec` (stroke).
    Starter(Starter),
    Pluto(Pluto),
}

/// How long the monitor lets an `ipsec` command run (`--command-timeout`): short, so that a
/// hung command is a short step.
pub const COMMAND_TIMEOUT_SECS: u64 = 3;

/// Size of the filesystem of the config directory (stroke and Libreswan): what the IKE
/// daemon's own files take (a copy of `strongswan.d`, pluto's NSS database) and room for
/// ours. The `disk-full` step fills it.
const CONFIG_FS_KB: u64 = 2048;

/// The files the monitor writes in the config directory.
pub const CONFIG_FILES: [&str; 2] = ["ipsec.conf", "ipsec.secrets"];

pub struct Node {
    pub idx: usize,
    pub ns: String,
    pub mode: Mode,
    // Field order is drop order: the monitor before its IKE daemon and database.
    pub mon: Monitor,
    pub ike: Ike,
    pub db: OvsdbServer,
    /// Whether the running monitor is under `--monitor` (its supervisor restarts it).
    pub supervised: bool,
}

impl Node {
    pub fn start(mode: Mode, idx: usize, ns: &str, dir: &Path, supervised: bool) -> Self {
        let db = OvsdbServer::start();
        if mode != Mode::Vici {
            // The config directory on a small filesystem of its own, which the soak fills.
            let etc = db.dir().join("root/etc");
            std::fs::create_dir_all(&etc).expect("config dir");
            let out = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={CONFIG_FS_KB}k,mode=0755"),
                ])
                .args(["tmpfs".as_ref(), etc.as_os_str()])
                .output()
                .expect("mount");
            assert!(out.status.success(), "mount tmpfs on {}", etc.display());
        }
        let ike = match mode {
            Mode::Vici => Ike::Charon(Charon::start(ns, dir)),
            Mode::Stroke => Ike::Starter(Starter::start(ns, db.dir())),
            Mode::Libreswan => Ike::Pluto(Pluto::start(db.dir(), ns, REAL_IPSEC)),
        };
        let mon = start_monitor(&db, ns, &ike, supervised);
        Self {
            idx,
            ns: ns.to_owned(),
            mode,
            mon,
            ike,
            db,
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
        self.mon = start_monitor(&self.db, &self.ns, &self.ike, supervised);
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

    /// The connections the IKE daemon holds, or None when it does not answer.
    pub fn loaded(&self) -> Option<Vec<String>> {
        match &self.ike {
            Ike::Charon(c) => {
                let out = c.swanctl(&["--list-conns"]);
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
            Ike::Starter(s) => Some(stroke_conns(&s.statusall()?)),
            Ike::Pluto(p) => {
                p.pid()?;
                let mut names: Vec<String> = pluto_lines(&p.try_status()?)
                    .filter_map(|l| Some(l.split('"').nth(1)?.to_owned()))
                    .collect();
                names.sort();
                names.dedup();
                Some(names)
            }
        }
    }

    /// The established IKE SAs as `name id` (charon's unique id, pluto's state number).
    pub fn ike_sas(&self) -> Vec<String> {
        match &self.ike {
            Ike::Charon(c) => {
                let sas = c.swanctl_out(&["--list-sas", "--raw"]);
                sas.split("list-sa event {")
                    .skip(1)
                    .filter(|e| e.contains("state=ESTABLISHED"))
                    .filter_map(|e| {
                        let name = e.split_whitespace().next()?.trim_start_matches('{');
                        let id = e.split("uniqueid=").nth(1)?.split(' ').next()?;
                        Some(format!("{name} {id}"))
                    })
                    .collect()
            }
            Ike::Starter(s) => stroke_sas(&s.statusall().unwrap_or_default()),
            Ike::Pluto(p) => pluto_lines(&p.try_status().unwrap_or_default())
                .filter(|l| {
                    l.contains("ESTABLISHED_IKE_SA") || l.contains("STATE_V2_ESTABLISHED_IKE_SA")
                })
                .filter_map(|l| {
                    let id = l.split_whitespace().find(|w| w.starts_with('#'))?;
                    Some(format!("{} {id}", l.split('"').nth(1)?))
                })
                .collect(),
        }
    }

    /// A position in the record of what the monitor made the IKE daemon load, for
    /// [`Node::loads_since`]: charon's log (VICI, stroke), the monitor's log (Libreswan).
    pub fn loads_mark(&self) -> usize {
        match &self.ike {
            Ike::Charon(c) => c.log().len(),
            Ike::Starter(s) => s.log().len(),
            Ike::Pluto(_) => self.log_len(),
        }
    }

    /// Connections of `before` (what the daemon held at `mark`) the monitor created again,
    /// replaced or deleted since `mark`. VICI and stroke: charon's log lines for connections
    /// it added, replaced or deleted. Libreswan: the conns of the monitor's `ipsec addconn` and `--delete` calls,
    /// leaving out those it found defunct (the churn of a kernel without ESP, not a
    /// consequence of the fault).
    pub fn loads_since(&self, mark: usize, before: &[String]) -> u64 {
        match &self.ike {
            Ike::Charon(c) => c
                .log()
                .get(mark..)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.contains("added vici connection") || l.contains("replaced vici connection")
                })
                .count() as u64,
            Ike::Starter(s) => s
                .log()
                .get(mark..)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.contains("added configuration '") || l.contains("deleted connection '")
                })
                .count() as u64,
            Ike::Pluto(_) => {
                let log = self.log_since(mark);
                let defunct: Vec<&str> = log
                    .lines()
                    .filter_map(|l| {
                        l.split("Connection ")
                            .nth(1)?
                            .strip_suffix(" is defunct, removing")
                    })
                    .collect();
                pluto_actions(&log)
                    .filter(|c| before.iter().any(|b| b == c) && !defunct.contains(c))
                    .count() as u64
            }
        }
    }

    /// Kills the IKE daemon with SIGKILL.
    pub fn ike_kill(&mut self) {
        match &mut self.ike {
            Ike::Charon(c) => c.kill(),
            Ike::Starter(s) => s.kill9(),
            Ike::Pluto(p) => p.kill9(),
        }
    }

    /// Starts the IKE daemon again.
    pub fn ike_start(&mut self) {
        match &mut self.ike {
            Ike::Charon(c) => c.restart(),
            Ike::Starter(s) => s.restart(),
            Ike::Pluto(p) => p.restart(),
        }
    }

    /// Deletes connection `conn` from the IKE daemon behind the monitor's back.
    pub fn delete_behind_back(&self, conn: &str) {
        match &self.ike {
            Ike::Charon(c) => c.unload_conn(conn),
            Ike::Starter(s) => s.delete_conn(conn),
            Ike::Pluto(p) => p.delete_conn(conn),
        }
    }

    /// The file that makes every `ipsec` call of the monitor hang while it exists (the
    /// wrapper's flag; VICI has no `ipsec` command).
    pub fn hang_flag(&self) -> Option<PathBuf> {
        match &self.ike {
            Ike::Charon(_) => None,
            Ike::Starter(s) => Some(s.root.join("hang")),
            Ike::Pluto(p) => Some(p.root.join("hang")),
        }
    }

    /// The config directory on its own small filesystem (stroke and Libreswan; VICI
    /// writes no config file).
    pub fn config_dir(&self) -> Option<PathBuf> {
        (self.mode != Mode::Vici).then(|| self.db.dir().join("root/etc"))
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

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(etc) = self.config_dir() {
            // Lazily: the daemons still running (dropped next) keep it until they exit.
            let _ = std::process::Command::new("umount")
                .args(["-l".as_ref(), etc.as_os_str()])
                .status();
        }
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

/// The conns named by the monitor's `ipsec addconn` and `ipsec auto ... --delete` calls in
/// its log.
fn pluto_actions(log: &str) -> impl Iterator<Item = &str> {
    log.lines().flat_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let at = |w: &str| words.iter().position(|x| *x == w);
        let names: &[&str] = if words.iter().any(|w| w.ends_with("/ipsec")) {
            match (at("addconn"), at("--config"), at("--delete")) {
                (Some(_), Some(c), _) => words.get(c + 2..).unwrap_or_default(),
                (None, _, Some(d)) => words.get(d + 1..).unwrap_or_default(),
                _ => &[],
            }
        } else {
            &[]
        };
        names.to_vec()
    })
}

/// The section of `ipsec statusall` from the line starting with `from` to the next line
/// that starts without indentation.
fn section<'a>(statusall: &'a str, from: &str) -> impl Iterator<Item = &'a str> {
    statusall
        .lines()
        .skip_while(move |l| !l.starts_with(from))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
}

/// The connections of `ipsec statusall`: the `    NAME:   child:  ...` lines of its
/// `Connections:` section (charon merges connections with the same peer into one peer
/// configuration, listed under the name of the first; each connection is a child).
fn stroke_conns(statusall: &str) -> Vec<String> {
    let mut names: Vec<String> = section(statusall, "Connections:")
        .filter_map(|l| {
            let (name, rest) = l.trim_start().split_once(':')?;
            rest.trim_start()
                .starts_with("child:")
                .then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The established IKE SAs of `ipsec statusall` as `name id`.
fn stroke_sas(statusall: &str) -> Vec<String> {
    section(statusall, "Security Associations")
        .filter(|l| l.contains(": ESTABLISHED"))
        .filter_map(|l| {
            let (name, rest) = l.trim_start().split_once('[')?;
            Some(format!("{name} {}", rest.split_once(']')?.0))
        })
        .collect()
}

/// The lines of `ipsec status` that name a connection (`000 "X": ...` in v4).
fn pluto_lines(status: &str) -> impl Iterator<Item = &str> {
    status
        .lines()
        .map(|l| l.strip_prefix("000 ").unwrap_or(l))
        .filter(|l| l.starts_with('"') || l.starts_with('#'))
}

fn start_monitor(db: &OvsdbServer, ns: &str, ike: &Ike, supervised: bool) -> Monitor {
    let mut args: Vec<String> = vec![
        format!("--pidfile={}", db.dir().join("monitor.pid").display()),
        format!("--command-timeout={COMMAND_TIMEOUT_SECS}"),
        "--no-restart-ike-daemon".into(),
    ];
    let root = match ike {
        Ike::Charon(c) => {
            args.extend([
                "--ike-daemon=strongswan".into(),
                "--strongswan-mode=vici".into(),
                format!("--vici-socket={}", c.socket().display()),
            ]);
            db.dir().join("root")
        }
        Ike::Starter(s) => {
            args.push("--ike-daemon=strongswan".into());
            s.root.clone()
        }
        Ike::Pluto(p) => {
            args.push("--ike-daemon=libreswan".into());
            args.extend(Pluto::MONITOR_ARGS.iter().map(|a| a.to_string()));
            p.root.clone()
        }
    };
    if supervised {
        args.push("--monitor".into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // With stroke the monitor runs in starter's namespaces: its `ipsec` finds charon's /run.
    let wrapper = match ike {
        Ike::Starter(s) => s.enter(),
        _ => ["ip", "netns", "exec", ns].map(String::from).to_vec(),
    };
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    launch_rooted(db, &wrapper, "monitor.log", &root, &refs)
}
