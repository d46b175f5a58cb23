//! The control socket driven by the REAL `ovs-appctl` and by our `ovs-monitor-ipsec-ctl`,
//! against an in-process server with a fake main loop.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ovs_monitor_ipsec::backend::{LiveState, LiveStatus};
use ovs_monitor_ipsec::control::show::{self, ShowTunnel};
use ovs_monitor_ipsec::control::{self, AppCommand, ControlError, ControlRequest};
use ovs_monitor_ipsec::logging::{LogConfig, LogHandle};
use ovs_monitor_ipsec::model::{Global, RawTunnel, Tunnel, Validity};
use tokio::sync::{mpsc, oneshot};

const APPCTL: &str = "/usr/bin/ovs-appctl";
const CTL: &str = env!("CARGO_BIN_EXE_ovs-monitor-ipsec-ctl");

/// A tunnel for the fake main loop to show (invalid, so no PSK or PKI is needed).
fn tunnel() -> Tunnel {
    Tunnel {
        uuid: "u".into(),
        name: "gnv1".into(),
        version: 4,
        validity: Validity::Invalid(": 'remote_ip' is not set".into()),
        raw: Box::new(RawTunnel {
            kind: "geneve".into(),
            psk_set: true,
            ..RawTunnel::default()
        }),
        ofport: Some(3),
        cfm_fault: None,
    }
}

fn show_text(json: bool) -> String {
    let t = tunnel();
    let live = LiveStatus::new(LiveState::Configured);
    show::render(
        json,
        &Global::default(),
        &[ShowTunnel {
            tunnel: &t,
            live: Some(&live),
            inner_mtu: None,
        }],
    )
}

/// Answers AppCommands like the daemon would, recording what it was asked.
async fn fake_main_loop(mut rx: mpsc::Receiver<ControlRequest>, seen: Arc<Mutex<Vec<AppCommand>>>) {
    while let Some(req) = rx.recv().await {
        seen.lock().unwrap().push(req.command.clone());
        let reply = match req.command {
            AppCommand::TunnelsShow { json } => Ok(show_text(json)),
            AppCommand::Refresh | AppCommand::Exit { .. } | AppCommand::Diagnose { .. } => {
                Ok(String::new())
            }
            AppCommand::MetricsShow { .. } => Ok("ovs_ipsec_ovsdb_connected 1\n".into()),
        };
        let _ = req.reply.send(reply);
    }
}

/// A control server on its own runtime thread; stops and joins on drop.
struct Daemon {
    dir: tempfile::TempDir,
    sock: PathBuf,
    seen: Arc<Mutex<Vec<AppCommand>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Daemon {
    fn start() -> Self {
        Self::start_with(|dir| dir.join("mon.ctl"), true)
    }

    fn start_with(sock: impl FnOnce(&Path) -> PathBuf, main_loop: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock(dir.path());
        let log = LogHandle::new(LogConfig {
            log_file: None,
            specs: vec!["console:off".into()],
        })
        .unwrap();
        let (server, rx) = control::bind(&sock, log).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let seen2 = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fake = async {
                    if main_loop {
                        fake_main_loop(rx, seen2).await;
                    } else {
                        drop(rx);
                    }
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    r = server.run() => panic!("server stopped: {r:?}"),
                    _ = fake => {}
                    _ = stopped => {}
                }
            });
        });
        Daemon {
            dir,
            sock,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn appctl(&self, args: &[&str]) -> Output {
        assert!(
            Path::new(APPCTL).exists(),
            "{APPCTL} is required for this test (install openvswitch-common)"
        );
        Command::new(APPCTL)
            .args(["-T", "10", "-t"])
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(CTL)
            .args(["-T", "10", "-t"])
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Daemon {
    /// Stops the server (dropping it) and waits for its thread.
    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn appctl_builtins() {
    let d = Daemon::start();
    let list = stdout(&d.appctl(&["list-commands"]));
    assert!(list.starts_with("The available commands are:\n"), "{list}");
    for c in [
        "diagnose",
        "exit",
        "tunnels/show",
        "refresh",
        "vlog/set",
        "vlog/list",
        "version",
    ] {
        assert!(
            list.lines().any(|l| l.split_whitespace().next() == Some(c)),
            "{c} missing: {list}"
        );
    }
    assert_eq!(stdout(&d.appctl(&["help"])), list);
    assert_eq!(
        stdout(&d.appctl(&["version"])),
        format!(
            "ovs-monitor-ipsec (Rust) {} for Open vSwitch 3.1+\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn appctl_tunnels_show_passes_through() {
    let d = Daemon::start();
    let text = stdout(&d.appctl(&["tunnels/show"]));
    assert_eq!(text, show_text(false));
    assert!(text.lines().count() > 10 && text.contains("  PSK:            <redacted>\n"));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&d.appctl(&["tunnels/show", "--json"]))).unwrap();
    assert_eq!(json["tunnels"][0]["name"], "gnv1");
    assert_eq!(
        *d.seen.lock().unwrap(),
        [
            AppCommand::TunnelsShow { json: false },
            AppCommand::TunnelsShow { json: true }
        ]
    );
}

#[test]
fn appctl_errors() {
    let d = Daemon::start();
    let e = error(&d.appctl(&["exit", "--bogus"]));
    assert!(e.contains("unrecognized parameter: --bogus"), "{e}");
    let e = error(&d.appctl(&["version", "extra"]));
    assert!(
        e.contains("\"version\" command takes at most 0 arguments"),
        "{e}"
    );
    let e = error(&d.appctl(&["no/such"]));
    assert!(
        e.contains("\"no/such\" is not a valid command (use \"list-commands\" to see a list of valid commands)"),
        "{e}"
    );
    let e = error(&d.appctl(&["vlog/set", "ovsdb:loud"]));
    assert!(e.contains("\"loud\""), "{e}");
    // Nothing reached the main loop: a rejected exit does not exit.
    assert!(d.seen.lock().unwrap().is_empty());
    stdout(&d.appctl(&["exit", "--no-cleanup"]));
    assert_eq!(
        *d.seen.lock().unwrap(),
        [AppCommand::Exit { cleanup: false }]
    );
}

#[test]
fn appctl_vlog_set_then_list() {
    let d = Daemon::start();
    assert_eq!(
        stdout(&d.appctl(&["vlog/set", "ovsdb:syslog:warn", "model:dbg"])),
        ""
    );
    let list = stdout(&d.appctl(&["vlog/list"]));
    let row = |m: &str| -> Vec<String> {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(m))
            .unwrap_or_else(|| panic!("{m} not in {list}"))
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect()
    };
    assert_eq!(row("ovsdb"), ["off", "warn", "info"]);
    assert_eq!(row("model"), ["dbg", "dbg", "dbg"]);
    // No log file configured: reopen says so.
    let e = error(&d.appctl(&["vlog/reopen"]));
    assert!(e.contains("not configured"), "{e}");
}

#[test]
fn main_loop_gone_is_an_error_not_a_hang() {
    let d = Daemon::start_with(|dir| dir.join("gone.ctl"), false);
    let e = error(&d.appctl(&["tunnels/show"]));
    assert!(e.contains("main loop"), "{e}");
    // Built-ins still work.
    stdout(&d.appctl(&["version"]));
}

#[test]
fn ctl_through_socket_path() {
    let d = Daemon::start();
    assert_eq!(stdout(&d.ctl(&["tunnels/show"])), show_text(false));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&d.ctl(&["tunnels/show", "--json"]))).unwrap();
    assert_eq!(json["tunnels"][0]["psk"], "<redacted>");
    assert_eq!(json["tunnels"][0]["state"], "invalid");
    let e = error(&d.ctl(&["exit", "--bogus"]));
    assert!(e.contains("unrecognized parameter: --bogus"), "{e}");
    stdout(&d.ctl(&["refresh"]));
    assert_eq!(d.seen.lock().unwrap().last(), Some(&AppCommand::Refresh));
}

#[test]
fn ctl_resolves_target_through_pidfile() {
    let pid = std::process::id();
    let d = Daemon::start_with(|dir| dir.join(format!("ovs-monitor-ipsec.{pid}.ctl")), true);
    std::fs::write(
        d.dir.path().join("ovs-monitor-ipsec.pid"),
        format!("{pid}\n"),
    )
    .unwrap();
    let o = Command::new(CTL)
        .env("OVS_RUNDIR", d.dir.path())
        .args(["-T", "10", "version"])
        .output()
        .unwrap();
    assert!(stdout(&o).starts_with("ovs-monitor-ipsec (Rust) "));
    // A named target without a pidfile is a connection problem: exit 1.
    let o = Command::new(CTL)
        .env("OVS_RUNDIR", d.dir.path())
        .args(["-t", "other-daemon", "version"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("other-daemon.pid"));
}

#[test]
fn ctl_unreachable_socket_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(CTL)
        .arg("-t")
        .arg(dir.path().join("none.ctl"))
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"));
}

#[test]
fn several_requests_per_connection_and_garbage_is_isolated() {
    let d = Daemon::start();
    let mut bad = UnixStream::connect(&d.sock).unwrap();
    bad.write_all(b"hello\n").unwrap();
    let mut good = UnixStream::connect(&d.sock).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    good.write_all(
        br#"{"method":"version","params":[],"id":1}{"method":"nope","params":[],"id":"x"}"#,
    )
    .unwrap();
    let mut framer = ovs_monitor_ipsec::jsonrpc::codec::Framer::new();
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    while replies.len() < 2 {
        let n = good.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        framer.push(&buf[..n]);
        while let Some(v) = framer.next_value().unwrap() {
            replies.push(v);
        }
    }
    assert_eq!(replies[0]["id"], 1);
    assert_eq!(replies[0]["error"], serde_json::Value::Null);
    assert!(
        replies[0]["result"]
            .as_str()
            .unwrap()
            .starts_with("ovs-monitor-ipsec (Rust)")
    );
    assert_eq!(replies[1]["id"], "x");
    assert_eq!(replies[1]["result"], serde_json::Value::Null);
    assert!(
        replies[1]["error"]
            .as_str()
            .unwrap()
            .contains("not a valid command")
    );
    // The garbage connection was closed by the server.
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(bad.read(&mut buf).unwrap(), 0);
}

#[test]
fn socket_file_permissions_and_lifecycle() {
    let d = Daemon::start();
    let mode = std::fs::metadata(&d.sock).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "group/other may not drive the daemon: {mode:o}"
    );
    let log = LogHandle::new(LogConfig::default()).unwrap();
    // A live server's socket is not stolen.
    assert!(matches!(
        control::bind(&d.sock, log.clone()),
        Err(ControlError::InUse(_))
    ));
    // A regular file is not deleted.
    let file = d.dir.path().join("file.ctl");
    std::fs::write(&file, "data").unwrap();
    assert!(matches!(
        control::bind(&file, log.clone()),
        Err(ControlError::NotSocket(_))
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
    // A stale socket (nobody listening) is replaced.
    let stale = d.dir.path().join("stale.ctl");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let (server, _rx) = control::bind(&stale, log).unwrap();
    assert_eq!(server.path(), stale);
    drop(server);
    assert!(!stale.exists(), "socket removed when the server is dropped");

    let mut d = d;
    d.stop();
    assert!(!d.sock.exists(), "socket removed on shutdown");
    // No temporary socket names are left behind either.
    let left: Vec<_> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["file.ctl"]);
}
