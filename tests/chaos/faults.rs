//! The faults with a recovery figure or an outcome of their own: each injects the fault,
//! measures what the monitor did about it, and records violations; the caller then waits for
//! every invariant to hold again (`Soak::converge`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::check::conn_problems;
use crate::node::{COMMAND_TIMEOUT_SECS, CONFIG_FILES};
use crate::soak::{Mode, Soak, deadline};

impl Soak {
    /// The config directory's filesystem full while a tunnel changes: the monitor reports
    /// the error, keeps the previous complete files (no partial file, no leftover temporary
    /// one) and keeps answering; once space returns it converges (checked by the caller).
    pub fn disk_full(&mut self) {
        let n = self.rng.below(self.nodes.len());
        let Some(etc) = self.nodes[n].config_dir() else {
            return;
        };
        let before: Vec<Option<Vec<u8>>> = CONFIG_FILES
            .iter()
            .map(|f| std::fs::read(etc.join(f)).ok())
            .collect();
        let from = self.nodes[n].log_len();
        let filler = etc.join("filler");
        fill(&filler);
        // A tunnel added or deleted: the config files must change.
        let full = self.want.tunnels.len() >= self.slots;
        self.step(if full { "delete" } else { "add" });
        let seen =
            self.nodes[n].wait_log_since(from, "No space left on device", deadline("disk-full"));
        let after: Vec<Option<Vec<u8>>> = CONFIG_FILES
            .iter()
            .map(|f| std::fs::read(etc.join(f)).ok())
            .collect();
        let leftovers: Vec<String> = std::fs::read_dir(&etc)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.contains(".tmp"))
            .collect();
        let answers = self.nodes[n].mon.appctl(&["version"]).status.success();
        let _ = std::fs::remove_file(&filler);
        match seen {
            Some(t) => self
                .report
                .figure("config filesystem full -> error logged", t),
            None => self.report.violations.push(format!(
                "node {n}: no write error logged while the config filesystem was full"
            )),
        }
        for (i, f) in CONFIG_FILES.iter().enumerate() {
            if before[i] != after[i] {
                self.report.violations.push(format!(
                    "node {n}: {f} changed while the config filesystem was full"
                ));
            }
        }
        if !leftovers.is_empty() {
            self.report.violations.push(format!(
                "node {n}: temporary files left on the full filesystem: {leftovers:?}"
            ));
        }
        if !answers {
            self.report.violations.push(format!(
                "node {n}: the monitor does not answer while its filesystem is full"
            ));
        }
    }

    /// ovsdb-server killed with SIGKILL and started again on the same database: the monitor
    /// reconnects and resyncs without a single action for tunnels that did not change.
    pub fn ovsdb_kill(&mut self) {
        let n = self.rng.below(self.nodes.len());
        let from = self.nodes[n].log_len();
        let loads = self.nodes[n].loads_mark();
        let before = self.nodes[n].loaded().unwrap_or_default();
        self.nodes[n].db.restart();
        let back = Instant::now();
        let node = &self.nodes[n];
        match node.wait_log_since(from, ": connected", deadline("ovsdb-kill")) {
            Some(_) => self
                .report
                .figure("ovsdb-server restart -> reconnected", back.elapsed()),
            None => self.report.violations.push(format!(
                "node {n}: no reconnection to the restarted ovsdb-server"
            )),
        }
        self.converge("ovsdb-kill");
        let redone = self.nodes[n].loads_since(loads, &before);
        self.report.count(
            "connections (un)loaded after an ovsdb-server restart",
            redone,
        );
        if redone > 0 {
            self.report.violations.push(format!(
                "node {n}: {redone} connections loaded or unloaded after an ovsdb-server restart, none changed"
            ));
        }
    }

    /// The IKE daemon killed with SIGKILL: the monitor notices (VICI: its event connection
    /// closes; stroke and Libreswan: the watch of the daemon's pid file logs its exit, and the
    /// pass it starts gives the tunnels an error), and once the daemon is started again
    /// every tunnel is loaded again.
    pub fn ike_kill(&mut self) {
        let n = self.rng.below(self.nodes.len());
        let from = self.nodes[n].log_len();
        let killed = Instant::now();
        self.nodes[n].ike_kill();
        let node = &self.nodes[n];
        let limit = deadline("ike-kill");
        // VICI: the event connection closes. The others have no channel to their daemon
        // that stays open: the watch of its pid file logs "DAEMON (pid N) has exited".
        let sign = match node.mode {
            Mode::Vici => "lost the VICI connection",
            Mode::Stroke | Mode::Libreswan => ovs_monitor_ipsec::backend::pidwatch::EXITED,
        };
        match node.wait_log_since(from, sign, limit) {
            Some(_) => self
                .report
                .figure("IKE daemon killed -> detected", killed.elapsed()),
            None => self
                .report
                .violations
                .push(format!("node {n}: the IKE daemon's death not noticed")),
        }
        // Down for a while, as under a service manager's restart delay.
        std::thread::sleep(Duration::from_millis(200 + self.rng.below(1500) as u64));
        self.nodes[n].ike_start();
        let back = Instant::now();
        let node = &self.nodes[n];
        let want = &self.want;
        let restored = wait(limit, || {
            node.loaded()
                .is_some_and(|c| conn_problems(n, &c, want, node.mode != Mode::Vici).is_empty())
        });
        let count = want.tunnels.len();
        if restored {
            self.report
                .figure("IKE daemon back -> every connection loaded", back.elapsed());
            self.report.most_tunnels_restored = self.report.most_tunnels_restored.max(count);
        } else {
            self.report.violations.push(format!(
                "node {n}: {count} tunnels not all loaded into the restarted IKE daemon"
            ));
        }
    }

    /// Every `ipsec` command hangs (a wedged pluto) while a tunnel changes: the monitor kills
    /// the command after `--command-timeout`, keeps answering, and converges once commands
    /// work again.
    pub fn hang(&mut self) {
        let n = self.rng.below(self.nodes.len());
        let Some(flag) = self.nodes[n].hang_flag() else {
            return;
        };
        let from = self.nodes[n].log_len();
        std::fs::write(&flag, "").expect("hang flag");
        self.step("change");
        let limit = Duration::from_secs(COMMAND_TIMEOUT_SECS) + deadline("hang");
        let seen = self.nodes[n].wait_log_since(from, "Timed out after", limit);
        if !self.nodes[n].mon.appctl(&["version"]).status.success() {
            self.report.violations.push(format!(
                "node {n}: the monitor does not answer while a command hangs"
            ));
        }
        let _ = std::fs::remove_file(&flag);
        match seen {
            Some(t) => self.report.figure("ipsec command hung -> timed out", t),
            None => self
                .report
                .violations
                .push(format!("node {n}: no command timed out while ipsec hung")),
        }
    }

    /// The monitor killed: without `--monitor` by SIGKILL, and the soak starts it again (with
    /// or without `--monitor`); under `--monitor` by SIGKILL too (a deliberate stop for the
    /// supervisor, as for Open vSwitch's daemons: it exits and the soak starts the monitor
    /// again) or by SIGABRT (a crash, what a panic becomes: the supervisor starts a new worker). The restarted
    /// monitor adopts what charon holds: the same connection names, the same IKE_SAs, nothing
    /// loaded anew.
    pub fn monitor_kill(&mut self) {
        use nix::sys::signal::Signal::{SIGABRT, SIGKILL};
        let n = self.rng.below(self.nodes.len());
        let supervised_next = self.rng.chance(50);
        let crash = self.nodes[n].supervised && self.rng.chance(50);
        let before_conns = sorted(self.nodes[n].loaded().unwrap_or_default());
        let before_sas = sorted(self.nodes[n].ike_sas());
        let loads = self.nodes[n].loads_mark();
        let from = self.nodes[n].log_len();
        let Some(pid) = self.nodes[n].worker_pid() else {
            self.report.violations.push(format!("node {n}: no pidfile"));
            return;
        };
        let killed = Instant::now();
        signal(pid, if crash { SIGABRT } else { SIGKILL });
        let node = &mut self.nodes[n];
        let label = if crash {
            let ok = wait(deadline("monitor-kill"), || {
                node.worker_pid().is_some_and(|p| p != pid)
            });
            if !ok {
                self.report.violations.push(format!(
                    "node {n}: --monitor did not restart the crashed worker"
                ));
                return;
            }
            "SIGABRT, restarted by --monitor"
        } else {
            let supervisor = node.mon.child.as_mut().map(|c| c.id());
            // The spawned process (the worker, or its supervisor) must end and be reaped
            // before /proc shows the worker gone.
            let gone = wait(Duration::from_secs(20), || {
                let reaped = node
                    .mon
                    .child
                    .as_mut()
                    .is_none_or(|c| c.try_wait().ok().flatten().is_some());
                reaped && !Path::new(&format!("/proc/{pid}")).exists()
            });
            if !gone {
                self.report.violations.push(format!(
                    "node {n}: after SIGKILL of worker {pid}, it or its supervisor {supervisor:?} is still there"
                ));
                return;
            }
            node.relaunch(supervised_next);
            "SIGKILL, restarted"
        };
        let adopted = node.wait_log_since(from, "first pass applied", deadline("monitor-kill"));
        if adopted.is_some() {
            self.report
                .figure(&format!("monitor {label} -> first pass"), killed.elapsed());
        }
        self.converge("monitor-kill");
        let node = &self.nodes[n];
        let after_conns = sorted(node.loaded().unwrap_or_default());
        let after_sas = sorted(node.ike_sas());
        let reloaded = node.loads_since(loads, &before_conns);
        self.report
            .count("connections re-created after a monitor restart", reloaded);
        let kept = before_sas.iter().filter(|s| after_sas.contains(s)).count();
        self.report
            .count("IKE_SAs before a monitor restart", before_sas.len() as u64);
        self.report
            .count("IKE_SAs kept across a monitor restart", kept as u64);
        // Where connections churn (Libreswan without ESP) the conns and IKE SAs change on
        // their own; there only the count of conns created again is the criterion.
        let churn = self.check.churns(node);
        if reloaded > 0 || !churn && (before_conns != after_conns || kept < before_sas.len()) {
            self.report.violations.push(format!(
                "node {n}: the restarted monitor did not adopt the IKE daemon's state: {reloaded} connections \
                 re-created, connections {before_conns:?} -> {after_conns:?}, IKE_SAs {before_sas:?} -> {after_sas:?}"
            ));
            let log = node.log_since(from);
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("|DBG|status") && !l.contains("appeared in OVSDB"))
                .collect();
            let tail = lines[..lines.len().min(60)].join("\n    ");
            self.report.notes.push(format!(
                "node {n} monitor log from the kill on:\n    {tail}"
            ));
            // The model's history before the kill: what each tunnel went through.
            let log = node.log_since(0);
            let history: Vec<&str> = log
                .get(..from)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("|INFO|") || l.contains("|WARN|"))
                .collect();
            let history = history[history.len().saturating_sub(80)..].join("\n    ");
            self.report.notes.push(format!(
                "node {n} monitor log before the kill (INFO, WARN):\n    {history}"
            ));
        }
    }
}

/// Fills the filesystem of `path` with that file (in pages, then what is left).
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    for chunk in [64 * 1024, 4096, 512, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}
