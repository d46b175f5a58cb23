//! Runs the real `ovs-monitor-ipsec` binary against a test ovsdb-server and drives it with the
//! real `ovs-appctl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::ovsdb_server::OvsdbServer;
use super::scaled;

pub const BIN: &str = env!("CARGO_BIN_EXE_ovs-monitor-ipsec");
pub const CTL_BIN: &str = env!("CARGO_BIN_EXE_ovs-monitor-ipsec-ctl");

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout` ([`scaled`]).
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let timeout = scaled(timeout);
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running monitor (not detached), killed on drop.
pub struct Monitor {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub ctl: PathBuf,
    pub log: PathBuf,
}

impl Monitor {
    /// Starts the monitor for a daemon-core test: `--dry-run`, so whatever the backend, no IKE
    /// daemon and no kernel state is touched. See [`Monitor::start_real`].
    pub fn start(db: &OvsdbServer, extra: &[&str]) -> Self {
        let mut args = vec!["--dry-run"];
        args.extend_from_slice(extra);
        Self::start_real(db, &args)
    }

    /// Starts the monitor on `db`'s unix socket with `--ike-daemon=strongswan
    /// --no-restart-ike-daemon` (later arguments in `extra` win), plus `extra`.
    pub fn start_real(db: &OvsdbServer, extra: &[&str]) -> Self {
        let mut args = vec!["--ike-daemon=strongswan", "--no-restart-ike-daemon"];
        args.extend_from_slice(extra);
        launch(db, &[], "monitor.log", &args)
    }

    /// `ovs-appctl -t <ctl> args...`
    pub fn appctl(&self, args: &[&str]) -> Output {
        appctl_target(&self.dir, self.ctl.to_str().expect("utf-8 path"), args)
    }

    /// Successful `ovs-appctl` output, or a panic with its stderr.
    pub fn appctl_ok(&self, args: &[&str]) -> String {
        let out = self.appctl(args);
        assert!(
            out.status.success(),
            "ovs-appctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The codes of `iface`'s findings, from `diagnose IFACE --json` through ovs-appctl.
    pub fn diagnose_codes(&self, iface: &str) -> Vec<String> {
        let out = self.appctl_ok(&["diagnose", iface, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("diagnose --json is JSON");
        assert_eq!(v[0]["interface"], iface, "{v}");
        v[0]["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| f["code"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until `diagnose IFACE` reports, for a tunnel whose IKE SA is established, what
    /// this kernel allows: with ESP the Child SA and an ESP SA each way are installed (no
    /// `child-sa-missing`, no `sa-missing`); without, `child-sa-missing` and `sa-missing` in
    /// each direction. Either way the IKE SA is not missing. Returns the codes.
    pub fn wait_negotiated_findings(&self, iface: &str, timeout: Duration) -> Vec<String> {
        let count = |c: &[String], code: &str| c.iter().filter(|x| *x == code).count();
        let want = |c: &[String]| {
            let (child, sa) = (count(c, "child-sa-missing"), count(c, "sa-missing"));
            count(c, "ike-sa-missing") == 0
                && super::kernel::expect(child == 0 && sa == 0, child > 0 && sa == 2)
        };
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let codes = self.diagnose_codes(iface);
            if want(&codes) {
                return codes;
            }
            assert!(
                Instant::now() < deadline,
                "{iface}: diagnose's Child SA findings on this kernel (ESP: {}): {codes:?}\n{}",
                super::kernel::has_esp(),
                self.appctl_ok(&["diagnose", iface])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log that contain `pat`.
    pub fn log_count(&self, pat: &str) -> usize {
        self.log().lines().filter(|l| l.contains(pat)).count()
    }

    /// Waits for the warning that `key` is readable by group or others (written 0644), and
    /// checks that no line of the key's content is in the log.
    pub fn assert_exposed_key_warned_not_logged(&self, key: &std::path::Path) {
        self.wait_log(&format!(
            "private key {} is readable by group or others (mode 0644)",
            key.display()
        ));
        let key_text = std::fs::read_to_string(key).expect("read the key");
        let log = self.log();
        assert!(key_text.lines().skip(1).all(|l| !log.contains(l)));
    }

    pub fn wait_log(&self, pat: &str) {
        self.wait_log_for(pat, Duration::from_secs(20));
    }

    pub fn wait_log_for(&self, pat: &str, timeout: Duration) {
        wait_for(&format!("log line {pat:?}"), timeout, || {
            self.log().contains(pat)
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the process to exit (after `exit` or a signal).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                start.elapsed() < scaled(Duration::from_secs(20)),
                "monitor did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `wrapper... ovs-monitor-ipsec <db> --unixctl=<dir>/monitor.ctl --log-file=<dir>/<log_name>
/// -vfile:dbg --root-prefix=<dir>/root args...` with OVS_RUNDIR and OVS_LOGDIR set to the
/// server's directory, and waits for its control socket. `wrapper` is e.g.
/// `["ip", "netns", "exec", NAME]`, or empty.
pub fn launch(db: &OvsdbServer, wrapper: &[&str], log_name: &str, args: &[&str]) -> Monitor {
    launch_rooted(db, wrapper, log_name, &db.dir().join("root"), args)
}

/// [`launch`] with `--root-prefix=root`.
pub fn launch_rooted(
    db: &OvsdbServer,
    wrapper: &[&str],
    log_name: &str,
    root: &Path,
    args: &[&str],
) -> Monitor {
    let dir = db.dir().to_path_buf();
    let ctl = dir.join("monitor.ctl");
    let log = dir.join(log_name);
    // A socket left by a killed monitor would satisfy the wait below at once.
    let _ = std::fs::remove_file(&ctl);
    let mut cmd = Command::new(wrapper.first().copied().unwrap_or(BIN));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg(BIN);
    }
    cmd.arg(db.unix_remote())
        .arg(format!("--unixctl={}", ctl.display()))
        .arg(format!("--log-file={}", log.display()))
        .arg("-vfile:dbg")
        .arg(format!("--root-prefix={}", root.display()))
        .args(args);
    let m = Monitor::spawn(cmd, dir, ctl, log);
    wait_for("the control socket", Duration::from_secs(20), || {
        m.ctl.exists()
    });
    m
}

impl Monitor {
    /// Spawns `cmd` (the monitor, directly or behind a wrapper) with no stdio and OVS_RUNDIR
    /// and OVS_LOGDIR set to `dir`; `ctl` and `log` are the paths its arguments name.
    pub fn spawn(mut cmd: Command, dir: PathBuf, ctl: PathBuf, log: PathBuf) -> Self {
        let child = cmd
            .env("OVS_RUNDIR", &dir)
            .env("OVS_LOGDIR", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovs-monitor-ipsec");
        Self {
            child: Some(child),
            dir,
            ctl,
            log,
        }
    }
}

/// `ovs-appctl -t target args...` with OVS_RUNDIR=`rundir`.
pub fn appctl_target(rundir: &Path, target: &str, args: &[&str]) -> Output {
    Command::new("ovs-appctl")
        .env("OVS_RUNDIR", rundir)
        .arg("-t")
        .arg(target)
        .args(args)
        .output()
        .expect("run ovs-appctl (install openvswitch-common)")
}

/// `external_ids:key` of interface `iface`, or None.
/// Waits until each of `names` has `ipsec-state=up`.
pub fn wait_up(db: &OvsdbServer, names: &[&str], timeout: Duration) {
    for n in names {
        wait_for(&format!("{n} up"), timeout, || {
            iface_key(db, n, "ipsec-state").as_deref() == Some("up")
        });
    }
}

pub fn iface_key(db: &OvsdbServer, iface: &str, key: &str) -> Option<String> {
    let v = db.vsctl(&[
        "--if-exists",
        "get",
        "Interface",
        iface,
        &format!("external_ids:{key}"),
    ]);
    let v = v.trim().trim_matches('"');
    if v.is_empty() {
        None
    } else {
        Some(v.to_owned())
    }
}

/// `external_ids:key` of the Open_vSwitch row, or None.
pub fn ovs_key(db: &OvsdbServer, key: &str) -> Option<String> {
    let v = db.vsctl(&[
        "--if-exists",
        "get",
        "Open_vSwitch",
        ".",
        &format!("external_ids:{key}"),
    ]);
    let v = v.trim().trim_matches('"');
    if v.is_empty() {
        None
    } else {
        Some(v.to_owned())
    }
}
