//! The pidfile as other processes see it: the real `ovs-appctl` must find our daemon through
//! it, and a second daemon must be refused while the first lives.
//!
//! POSIX locks are per process and invisible to their owner, so the "daemon" is a child:
//! this test binary re-executed with `PIDFILE_HELPER_RUNDIR` set, which runs only
//! [`helper_daemon`]. The helper creates the pidfile with our `Pidfile` in that run directory,
//! serves a unixctl socket at the default path that echoes the method name, prints its pid,
//! and waits to be killed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ovs_monitor_ipsec::daemon::paths;
use ovs_monitor_ipsec::daemon::{Pidfile, PidfileError, read_pid};
use ovs_monitor_ipsec::jsonrpc::Message;

const HELPER_ENV: &str = "PIDFILE_HELPER_RUNDIR";
const APPCTL: &str = "/usr/bin/ovs-appctl";
/// Precedes the helper's pid on its stdout, which libtest shares (`test helper_daemon ... `).
const PID_MARKER: &str = "helper-pid=";

/// Not a test of its own: the body of the child process (a no-op in a normal test run).
#[test]
fn helper_daemon() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    // OVS_RUNDIR was set by the parent, so this is <tempdir>/ovs-monitor-ipsec.pid.
    let _pidfile = Pidfile::create(&paths::default_pidfile(), false).unwrap();
    let listener = UnixListener::bind(paths::default_unixctl(std::process::id())).unwrap();
    println!("{PID_MARKER}{}", std::process::id());
    std::io::stdout().flush().unwrap();
    for conn in listener.incoming() {
        let mut conn = conn.unwrap();
        let request = serde_json::Deserializer::from_reader(&conn)
            .into_iter::<serde_json::Value>()
            .next()
            .unwrap()
            .unwrap();
        let Ok(Message::Request { method, id, .. }) = Message::from_value(request) else {
            panic!("not a request");
        };
        let reply = Message::Reply {
            result: format!("helper answered {method}").into(),
            id,
        };
        conn.write_all(&reply.to_bytes()).unwrap();
    }
}

/// A helper daemon in its own run directory; killed on drop.
struct HelperDaemon {
    child: Child,
    pid: i32,
    rundir: tempfile::TempDir,
}

impl HelperDaemon {
    fn start() -> Self {
        let rundir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_daemon",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, "1")
            .env("OVS_RUNDIR", rundir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let pid = lines
            .find_map(|l| l.ok()?.split_once(PID_MARKER)?.1.trim().parse::<i32>().ok())
            .expect("helper daemon exited before creating its pidfile");
        HelperDaemon { child, pid, rundir }
    }

    fn pidfile(&self) -> PathBuf {
        self.rundir.path().join("ovs-monitor-ipsec.pid")
    }

    /// SIGKILL, as a crash would: no cleanup runs, the file stays behind unlocked.
    fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for HelperDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn appctl(rundir: &Path, args: &[&str]) -> std::process::Output {
    assert!(
        Path::new(APPCTL).exists(),
        "{APPCTL} is missing: install openvswitch-common (tests/run.sh does)"
    );
    Command::new(APPCTL)
        .args(["--timeout=10", "-t", "ovs-monitor-ipsec"])
        .args(args)
        .env("OVS_RUNDIR", rundir)
        .output()
        .unwrap()
}

#[test]
fn real_ovs_appctl_finds_the_daemon_through_our_pidfile() {
    let helper = HelperDaemon::start();
    assert_eq!(read_pid(&helper.pidfile()).unwrap(), helper.pid);

    let out = appctl(helper.rundir.path(), &["version"]);
    assert!(
        out.status.success(),
        "ovs-appctl rejected our pidfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "helper answered version"
    );
}

#[test]
fn real_ovs_appctl_calls_an_unlocked_pidfile_stale() {
    let mut helper = HelperDaemon::start();
    helper.crash();
    // The file and socket are left behind by the crash, but no process holds the lock.
    assert!(helper.pidfile().exists());
    let out = appctl(helper.rundir.path(), &["version"]);
    assert!(!out.status.success());
    assert!(matches!(
        read_pid(&helper.pidfile()),
        Err(PidfileError::Stale { .. })
    ));
}

#[test]
fn a_second_daemon_is_refused_while_the_first_lives_and_replaces_it_after_a_crash() {
    let mut helper = HelperDaemon::start();
    let path = helper.pidfile();

    let err = Pidfile::create(&path, false).unwrap_err();
    assert!(matches!(err, PidfileError::AlreadyRunning { pid, .. } if pid == helper.pid));
    assert_eq!(
        err.to_string(),
        format!("{}: already running as pid {}", path.display(), helper.pid)
    );

    helper.crash();
    let ours = Pidfile::create(&path, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(ours.path()).unwrap().trim(),
        std::process::id().to_string()
    );
}

#[test]
fn overwrite_takes_a_live_pidfile_over() {
    let helper = HelperDaemon::start();
    let path = helper.pidfile();
    let ours = Pidfile::create(&path, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(ours.path()).unwrap().trim(),
        std::process::id().to_string()
    );
    // The helper's lock is on the replaced file, so the name no longer points at it.
    drop(helper);
    drop(ours);
    assert!(!path.exists());
}
