//! A real `ovsdb-server` with the Open_vSwitch schema in a private temp dir, for tests.
//!
//! Runs in the foreground as our child (killed on drop), listens on `punix:<dir>/db.sock`
//! and, on request, on `ptcp:0:127.0.0.1` and `pssl:0:127.0.0.2` with a CA and server/client
//! certificates made by `openssl` in the same dir. The kernel picks the TCP ports; we read
//! them back from the server's log ("...: listening on port N"). The two listeners use
//! different loopback addresses so that their log lines can be told apart.
//!
//! Missing binaries fail the test with a message saying what to install: a skipped test
//! would hide a broken environment.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const TCP_ADDR: &str = "127.0.0.1";
const SSL_ADDR: &str = "127.0.0.2";
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, Default)]
pub struct Listeners {
    pub tcp: bool,
    pub ssl: bool,
}

/// Client-side PEM files, signed by the same CA as the server's.
#[derive(Debug, Clone)]
pub struct ClientPki {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

pub struct OvsdbServer {
    dir: TempDir,
    listeners: Listeners,
    child: Option<Child>,
    tcp_port: Option<u16>,
    ssl_port: Option<u16>,
}

impl OvsdbServer {
    /// A server on the unix socket only, with `ovs-vsctl init` done.
    pub fn start() -> Self {
        Self::start_with(Listeners::default())
    }

    pub fn start_with(listeners: Listeners) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ovsdb-test-")
            .tempdir()
            .expect("create temp dir");
        let db = dir.path().join("conf.db");
        run(
            "ovsdb-tool",
            &["create", path_str(&db), SCHEMA],
            "install openvswitch-common (tests/run.sh does)",
        );
        if listeners.ssl {
            make_pki(dir.path());
        }
        let mut server = OvsdbServer {
            dir,
            listeners,
            child: None,
            tcp_port: None,
            ssl_port: None,
        };
        server.launch();
        server.vsctl(&["init"]);
        server
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("db.sock")
    }

    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// `tcp:127.0.0.1:PORT`; panics unless started with `tcp`.
    pub fn tcp_remote(&self) -> String {
        let port = self
            .tcp_port
            .expect("server started without a tcp listener");
        format!("tcp:{TCP_ADDR}:{port}")
    }

    /// `ssl:127.0.0.2:PORT`; panics unless started with `ssl`.
    pub fn ssl_remote(&self) -> String {
        let port = self
            .ssl_port
            .expect("server started without an ssl listener");
        format!("ssl:{SSL_ADDR}:{port}")
    }

    pub fn client_pki(&self) -> ClientPki {
        ClientPki {
            private_key: self.dir().join("client-key.pem"),
            certificate: self.dir().join("client-cert.pem"),
            ca_cert: self.dir().join("ca-cert.pem"),
        }
    }

    /// Runs `ovs-vsctl --db=<unix> --no-wait ARGS` and returns its stdout; panics with stderr
    /// on failure.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.unix_remote());
        let mut all = vec![db.as_str(), "--no-wait", "--timeout=20"];
        all.extend_from_slice(args);
        run(
            "ovs-vsctl",
            &all,
            "install openvswitch-switch (tests/run.sh does)",
        )
    }

    /// Adds tunnel port `name` of type `kind` to `br-ipsec` (created if missing) with
    /// `options:<opt>` for each `key=value` of `opts`.
    /// Issue 22's edit that changes nothing effective: `dst_port` set to each type's default
    /// on geneve `g1` and vxlan `v1`, in one transaction with a new GRE tunnel `x1` (to
    /// 192.0.2.4) whose arrival shows that the monitor has processed the edit.
    pub fn spell_out_default_ports_and_add_x1(&self) {
        let mut args: Vec<String> = [
            "set",
            "interface",
            "g1",
            "options:dst_port=6081",
            "--",
            "set",
            "interface",
            "v1",
            "options:dst_port=4789",
            "--",
        ]
        .map(String::from)
        .to_vec();
        args.extend(tunnel_port_args(
            "x1",
            "gre",
            &["remote_ip=192.0.2.4", "psk=k"],
        ));
        self.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    pub fn add_tunnel(&self, name: &str, kind: &str, opts: &[impl AsRef<str>]) {
        let args = tunnel_port_args(name, kind, opts);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl(&refs);
    }

    /// Kills the server with SIGKILL (no cleanup, the socket file stays) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same database and socket; tcp/ssl get new ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("ovsdb-server.log")
    }

    fn launch(&mut self) {
        let d = self.dir().to_owned();
        let log = self.log_path();
        // A fresh log per run, so the ports we parse are this run's.
        let _ = fs::remove_file(&log);
        let mut args = vec![
            path_str(&d.join("conf.db")).to_owned(),
            format!("--remote=punix:{}", self.socket().display()),
            format!("--unixctl={}", d.join("ovsdb-server.ctl").display()),
            format!("--log-file={}", log.display()),
        ];
        if self.listeners.tcp {
            args.push(format!("--remote=ptcp:0:{TCP_ADDR}"));
        }
        if self.listeners.ssl {
            args.push(format!("--remote=pssl:0:{SSL_ADDR}"));
            args.push(format!(
                "--private-key={}",
                d.join("server-key.pem").display()
            ));
            args.push(format!(
                "--certificate={}",
                d.join("server-cert.pem").display()
            ));
            args.push(format!("--ca-cert={}", d.join("ca-cert.pem").display()));
        }
        let child = Command::new("ovsdb-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run ovsdb-server ({e}): install openvswitch-switch (tests/run.sh does)"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ovsdb-server exited with {status}; log:\n{}", self.log());
            }
            let log = self.log();
            self.tcp_port = listening_port(&log, TCP_ADDR);
            self.ssl_port = listening_port(&log, SSL_ADDR);
            let ready = UnixStream::connect(self.socket()).is_ok()
                && (!self.listeners.tcp || self.tcp_port.is_some())
                && (!self.listeners.ssl || self.ssl_port.is_some());
            if ready {
                return;
            }
            assert!(
                start.elapsed() < super::scaled(START_TIMEOUT),
                "ovsdb-server not ready after {START_TIMEOUT:?}; log:\n{log}"
            );
            sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The port of a "0:ADDR: listening on port N" log line.
fn listening_port(log: &str, addr: &str) -> Option<u16> {
    let marker = format!("0:{addr}: listening on port ");
    log.lines()
        .find_map(|l| l.split_once(&marker))
        .and_then(|(_, port)| port.trim().parse().ok())
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Runs a tool to completion; panics with its stderr (or with `hint` if it is missing).
fn run(program: &str, args: &[&str], hint: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {hint}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA, and server and client certificates it signed, as PEM files in `dir`.
fn make_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install openssl"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-new", "-days", "2", "-subj", "/CN=test-ca"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-keyout", "ca-key.pem", "-out", "ca-cert.pem"]);
    openssl(&ca);
    fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write leaf.ext");
    for who in ["server", "client"] {
        let (key, req, cert) = (
            format!("{who}-key.pem"),
            format!("{who}-req.pem"),
            format!("{who}-cert.pem"),
        );
        let subj = format!("/CN={who}");
        let mut args = vec!["req", "-new", "-subj", &subj];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&["-keyout", &key, "-out", &req]);
        openssl(&args);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &req,
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            &cert,
        ]);
    }
}

/// The `ovs-vsctl` arguments of [`OvsdbServer::add_tunnel`], for callers that run them
/// elsewhere (in a network namespace, or joined with other commands by `--`).
pub fn tunnel_port_args(name: &str, kind: &str, opts: &[impl AsRef<str>]) -> Vec<String> {
    port_args(name, kind, opts, false)
}

/// As [`tunnel_port_args`], but an existing port is kept and only its interface is updated.
pub fn tunnel_port_upsert_args(name: &str, kind: &str, opts: &[impl AsRef<str>]) -> Vec<String> {
    port_args(name, kind, opts, true)
}

fn port_args(name: &str, kind: &str, opts: &[impl AsRef<str>], may_exist: bool) -> Vec<String> {
    let mut args: Vec<String> = ["--may-exist", "add-br", "br-ipsec", "--"]
        .map(String::from)
        .to_vec();
    if may_exist {
        args.push("--may-exist".into());
    }
    args.extend(["add-port", "br-ipsec", name, "--", "set", "interface", name].map(String::from));
    args.push(format!("type={kind}"));
    args.extend(opts.iter().map(|o| format!("options:{}", o.as_ref())));
    args
}
