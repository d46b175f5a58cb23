//! Real strongSwan charons for the VICI backend tests: two network namespaces joined by a
//! veth pair, each with its own charon in a private mount namespace (its own `/run`, its own
//! strongswan.conf) whose VICI socket lives in the test's temp dir, so the monitor — running
//! in the host namespaces — reaches it by path.
//!
//! Names are unique per process and test so that tests run in parallel; everything is torn
//! down on drop, also when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::monitor::{Monitor, launch, wait_for};
use super::netns::NetnsPair;
use super::ovsdb_server::{OvsdbServer, tunnel_port_upsert_args};
use super::pki::{issue_by, make_ca_at};

pub const CHARON: &str = "/usr/lib/ipsec/charon";
pub const SWANCTL: &str = "/usr/sbin/swanctl";

/// Fails (never skips) when the packages are missing.
pub fn require_strongswan() {
    for bin in [CHARON, SWANCTL, "/usr/sbin/ip", "/usr/bin/openssl"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: run tests/install-deps.sh (packages in tests/deps/strongswan-vici.packages)"
        );
    }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A charon in netns `ns`, with its config, log and VICI socket in `dir`.
pub struct Charon {
    pub ns: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Charon {
    pub fn start(ns: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("charon dir");
        let conf = format!(
            "charon {{
  load_modular = yes
  install_routes = no
  plugins {{
    include /etc/strongswan.d/charon/*.conf
    stroke {{
      load = no
    }}
    vici {{
      socket = unix://{dir}/charon.vici
    }}
    kernel-netlink {{
      set_proto_port_transport_sa = yes
    }}
  }}
  filelog {{
    test {{
      path = {dir}/charon.log
      default = 1
      flush_line = yes
    }}
  }}
}}
",
            dir = dir.display()
        );
        std::fs::write(dir.join("strongswan.conf"), conf).expect("strongswan.conf");
        let mut c = Self {
            ns: ns.to_owned(),
            dir: dir.to_owned(),
            child: None,
        };
        c.spawn();
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("charon.vici")
    }

    fn spawn(&mut self) {
        let script = format!(
            "mount -t tmpfs tmpfs /run && mount --bind {}/strongswan.conf /etc/strongswan.conf && exec {CHARON}",
            self.dir.display()
        );
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "unshare",
                "-m",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn charon");
        self.child = Some(child);
        wait_for("charon's VICI socket", Duration::from_secs(20), || {
            self.swanctl(&["--stats"]).status.success()
        });
    }

    /// Kills charon (a crash: SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `swanctl <args> --uri <our socket>`.
    pub fn swanctl(&self, args: &[&str]) -> Output {
        let uri = format!("unix://{}", self.socket().display());
        Command::new(SWANCTL)
            .args(args)
            .args(["--uri", &uri])
            .output()
            .expect("run swanctl")
    }

    /// Unloads connection `name` behind the monitor's back. swanctl 5.9 has no
    /// `--unload-conn`: the VICI command itself, through our client.
    pub fn unload_conn(&self, name: &str) {
        use ovs_monitor_ipsec::backend::vici::{Connection, Message, check};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let mut c = Connection::connect(&self.socket(), Duration::from_secs(5))
                .await
                .expect("connect to charon's VICI socket");
            let answer = c
                .request("unload-conn", Message::new().kv("name", name))
                .await
                .expect("unload-conn");
            check("unload-conn", &answer).expect("unload-conn accepted");
        });
    }

    pub fn swanctl_out(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.swanctl(args).stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA (`cacert.pem`, key `ca-key.pem`) and two host certificates (`left`, `right`, SAN DNS
/// = CN; `<host>-cert.pem`, key `<host>-privkey.pem`) made with openssl.
pub fn make_pki(dir: &Path) {
    let (ca, ca_key) = (dir.join("cacert.pem"), dir.join("ca-key.pem"));
    make_ca_at("ovs-test-ca", &ca, &ca_key);
    for host in ["left", "right"] {
        let key = dir.join(format!("{host}-privkey.pem"));
        issue_by(
            &ca,
            &ca_key,
            host,
            &key,
            &dir.join(format!("{host}-cert.pem")),
        );
    }
}

/// One node of a two-charon test: its charon, its ovsdb-server and our monitor. The monitor
/// runs in the node's network namespace, as it does beside charon on a real host: that is
/// where it looks up its own address to decide which end initiates.
pub struct Node {
    pub charon: Charon,
    pub db: OvsdbServer,
    pub mon: Monitor,
}

impl Node {
    pub fn start(ns: &str, dir: &Path) -> Self {
        let charon = Charon::start(ns, dir);
        let db = OvsdbServer::start();
        let mon = Self::monitor(&charon, &db);
        Self { charon, db, mon }
    }

    /// The node's monitor, in charon's network namespace.
    fn monitor(charon: &Charon, db: &OvsdbServer) -> Monitor {
        let socket = format!("--vici-socket={}", charon.socket().display());
        launch(
            db,
            &["ip", "netns", "exec", &charon.ns],
            "monitor.log",
            &[
                "--ike-daemon=strongswan",
                "--no-restart-ike-daemon",
                "--strongswan-mode=vici",
                &socket,
            ],
        )
    }

    /// Kills the monitor (SIGKILL: no clean-up) and starts a new one on the same charon and
    /// database; `meanwhile` runs while no monitor runs.
    pub fn restart_monitor(&mut self, meanwhile: impl FnOnce()) {
        let pid = i32::try_from(self.mon.pid()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        self.mon.wait_exit();
        meanwhile();
        self.mon = Self::monitor(&self.charon, &self.db);
    }

    /// Creates (or updates) interface `name` of type `kind` with `options:<opts>`.
    pub fn add_iface(&self, name: &str, kind: &str, opts: &[String]) {
        let args = tunnel_port_upsert_args(name, kind, opts);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.db.vsctl(&args);
    }

    /// Interface `tun`.
    pub fn add_tunnel(&self, kind: &str, opts: &[String]) {
        self.add_iface("tun", kind, opts);
    }

    /// Sets `other_config:<kv>` of the Open_vSwitch row.
    pub fn set_global(&self, kv: &[String]) {
        let mut args = vec!["set".to_owned(), "Open_vSwitch".into(), ".".into()];
        args.extend(kv.iter().map(|o| format!("other_config:{o}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.db.vsctl(&args);
    }

    pub fn sas(&self) -> String {
        self.charon.swanctl_out(&["--list-sas", "--raw"])
    }

    pub fn ike_established(&self) -> bool {
        self.sas().contains("state=ESTABLISHED")
    }

    /// The IKE_SAs charon lists (one `list-sa` event each).
    pub fn ike_sa_count(&self) -> usize {
        self.sas().matches("list-sa event").count()
    }

    /// charon's unique id of the IKE_SA of connection `conn`, if any.
    pub fn ike_sa_id(&self, conn: &str) -> Option<String> {
        let sas = self.sas();
        let at = sas.find(&format!("{{{conn} {{uniqueid="))?;
        let rest = &sas[at..];
        let id = rest.split("uniqueid=").nth(1)?.split(' ').next()?;
        Some(id.to_owned())
    }

    pub fn conns(&self) -> String {
        self.charon.swanctl_out(&["--list-conns", "--raw"])
    }
}

/// `ip xfrm policy` of `ns`, one entry per policy (its selector, `dir` and mark lines joined).
pub fn policies(ns: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in NetnsPair::xfrm_policies(ns).lines() {
        match out.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => last.push_str(line),
            _ => out.push(line.to_owned()),
        }
    }
    out
}

/// A self-signed certificate and key for each of `left` and `right` (CN and SAN DNS = name).
pub fn make_self_signed(dir: &Path) {
    for host in ["left", "right"] {
        let d = |f: &str| dir.join(f).display().to_string();
        let (key, cert) = (
            d(&format!("{host}-privkey.pem")),
            d(&format!("{host}-cert.pem")),
        );
        let subj = format!("/CN={host}");
        let san = format!("subjectAltName=DNS:{host}");
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &subj,
                "-addext",
                &san,
                "-keyout",
                &key,
                "-out",
                &cert,
            ],
        );
    }
}
