//! Two network namespaces joined by a veth pair, each running our monitor (strongSwan legacy
//! mode, not dry-run) in a private mount namespace, so that each starts its own starter and
//! charon (`ipsec restart`) with its own `/run` (charon.ctl, pids).
//!
//! Our files live under `--root-prefix=<dir>/root`; charon finds them because the prefix's
//! `usr/sbin/ipsec` is a wrapper that passes `--conf` to starter, a drop-in sets the stroke
//! plugin's `secrets_file`, and `<root>/etc/strongswan.d` is bind-mounted on
//! `/etc/strongswan.d` (where the monitor writes `ovs.conf`). Everything is torn down on drop,
//! also after a panic: every process of the namespace is killed, then the namespace deleted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::monitor::{BIN, Monitor, wait_for};
use super::ovsdb_server::OvsdbServer;

fn sh(cmd: &str) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails with a clear message when a binary the test needs is missing.
pub fn require(bins: &[&str]) {
    for b in bins {
        assert!(
            Path::new(b).exists(),
            "{b} is missing: run tests/install-deps.sh as root (tests/deps/strongswan_stroke.packages)"
        );
    }
}

/// One side: its OVSDB, and our monitor inside the namespace.
pub struct Node {
    pub ns: String,
    pub db: OvsdbServer,
    pub mon: Monitor,
    pub root: PathBuf,
}

impl Node {
    /// Starts the monitor (which restarts charon itself) in namespace `ns`.
    pub fn start(ns: &str) -> Self {
        require(&[
            "/usr/sbin/ipsec",
            "/usr/lib/ipsec/charon",
            "/usr/bin/unshare",
        ]);
        let db = OvsdbServer::start();
        let dir = db.dir().to_path_buf();
        let root = prepare_root(&dir);
        let swd = root.join("etc/strongswan.d");
        let ctl = dir.join("monitor.ctl");
        let log = dir.join("monitor.log");
        let script = format!(
            "mount -t tmpfs tmpfs /run && mount --bind {swd} /etc/strongswan.d && \
             exec {BIN} unix:{sock} --ike-daemon=strongswan --root-prefix={root} \
             --unixctl={ctl} --log-file={log} -vfile:dbg",
            swd = swd.display(),
            sock = db.socket().display(),
            root = root.display(),
            ctl = ctl.display(),
            log = log.display(),
        );
        let mon = Monitor::spawn(in_namespaces(ns, &script), dir, ctl, log);
        wait_for("the monitor's first pass", Duration::from_secs(30), || {
            mon.log_count("first pass applied") > 0
        });
        Self {
            ns: ns.to_owned(),
            db,
            mon,
            root,
        }
    }

    /// Runs `ipsec ARGS` in this node's namespaces (network and mount).
    pub fn ipsec(&self, args: &str) -> String {
        let pid = self.mon.pid();
        let out = sh(&format!("nsenter -t {pid} -m -n /usr/sbin/ipsec {args}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pids of starter and charon, from the node's private `/run`.
    pub fn ike_pids(&self) -> Vec<i32> {
        ike_pids(&self.run_dir())
    }

    /// The node's private `/run`, seen from outside.
    fn run_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/run", self.mon.pid()))
    }

    /// Kills starter and charon with SIGKILL, as a crash of the service (what they leave in
    /// `/run` stays, as after a real crash).
    pub fn kill_ike(&self) {
        for pid in self.ike_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    /// Starts starter and charon again (`ipsec start` through the root's wrapper), after
    /// [`Node::kill_ike`]: their pid files go first, as a service manager's restart finds
    /// them (here the killed processes may stay unreaped zombies for a while, which `ipsec
    /// start` would take for a running starter).
    pub fn start_ike(&self) {
        let pid = self.mon.pid();
        for f in IKE_PID_FILES {
            let _ = std::fs::remove_file(self.run_dir().join(f));
        }
        sh(&format!(
            "nsenter -t {pid} -m -n {}/usr/sbin/ipsec start",
            self.root.display()
        ));
    }

    pub fn xfrm_policies(&self) -> String {
        String::from_utf8_lossy(&sh(&format!("ip -n {} xfrm policy", self.ns)).stdout).into_owned()
    }

    /// Sends one UDP datagram to `ip:port` from this namespace (triggers the trap policy).
    pub fn poke_udp(&self, ip: &str, port: u16) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "bash", "-c"])
            .arg(format!("echo x > /dev/udp/{ip}/{port}"))
            .status();
    }

    pub fn charon_log(&self) -> String {
        std::fs::read_to_string(self.mon.dir.join("charon.log")).unwrap_or_default()
    }
}

/// starter's and charon's pid files in their run directory.
const IKE_PID_FILES: [&str; 2] = ["starter.charon.pid", "charon.pid"];

/// The pids in starter's and charon's pid files under `run`.
fn ike_pids(run: &Path) -> Vec<i32> {
    IKE_PID_FILES
        .iter()
        .filter_map(|f| std::fs::read_to_string(run.join(f)).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// `sh -c script` in network namespace `ns` and a private mount namespace of its own.
fn in_namespaces(ns: &str, script: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "unshare",
        "-m",
        "--propagation",
        "private",
    ])
    .args(["sh", "-c", script]);
    cmd
}

/// Prepares `<dir>/root` for a charon driven through `ipsec` (stroke): a copy of
/// `/etc/strongswan.d` with a drop-in that points the stroke plugin at our secrets file and
/// logs to `<dir>/charon.log`, and a `usr/sbin/ipsec` wrapper that passes `--conf` to
/// starter. While the file `<root>/hang` exists every call through the wrapper hangs (a
/// wedged daemon, for the soak). Returns the root.
pub fn prepare_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let swd = root.join("etc/strongswan.d");
    sh(&format!(
        "mkdir -p {root}/usr/sbin {root}/etc && cp -a /etc/strongswan.d {swd}",
        root = root.display(),
        swd = swd.display()
    ));
    std::fs::write(
        swd.join("zz-test.conf"),
        format!(
            "charon {{\n  plugins {{\n    stroke {{\n      secrets_file = {root}/etc/ipsec.secrets\n    }}\n  }}\n  \
             filelog {{\n    test {{\n      path = {dir}/charon.log\n      flush_line = yes\n      default = 1\n    }}\n  }}\n}}\n",
            root = root.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let wrapper = root.join("usr/sbin/ipsec");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e {root}/hang ] && exec sleep 3600\ncase \"$1\" in\n  start|restart) exec /usr/sbin/ipsec \"$1\" --conf {root}/etc/ipsec.conf ;;\n  \
             *) exec /usr/sbin/ipsec \"$@\" ;;\nesac\n",
            root = root.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 {}", wrapper.display()));
    root
}

/// A CA and `left`/`right` certificates it signed (CN and SAN DNS = name), in `dir`.
pub fn make_pki(dir: &Path) {
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem \
         -subj /CN=ovs-test-ca -days 2 2>/dev/null && \
         for n in left right; do \
           openssl req -newkey rsa:2048 -nodes -keyout $n-key.pem -out $n.csr -subj /CN=$n 2>/dev/null && \
           printf 'subjectAltName=DNS:%s\\n' $n > $n.ext && \
           openssl x509 -req -in $n.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
             -out $n-cert.pem -days 2 -extfile $n.ext 2>/dev/null || exit 1; \
         done",
        d = dir.display()
    ));
}

/// starter and charon driven through `ipsec` (stroke), as a service manager runs them, in
/// network namespace `ns`, with a mount namespace of their own (a private `/run`, and the
/// root's `strongswan.d` on `/etc/strongswan.d`) held by a sleeping process, so that they can
/// be killed and started again, and the monitor run beside them, in the same namespaces.
pub struct Starter {
    pub root: PathBuf,
    pub dir: PathBuf,
    holder: std::process::Child,
}

impl Starter {
    /// Prepares the root in `dir` (see [`prepare_root`]) with an empty `ipsec.conf` and
    /// starts starter and charon.
    pub fn start(ns: &str, dir: &Path) -> Self {
        require(&[
            "/usr/sbin/ipsec",
            "/usr/lib/ipsec/charon",
            "/usr/bin/unshare",
        ]);
        let root = prepare_root(dir);
        std::fs::write(root.join("etc/ipsec.conf"), "config setup\n").unwrap();
        std::fs::write(root.join("etc/ipsec.secrets"), "").unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs /run && mount --bind {}/etc/strongswan.d /etc/strongswan.d && exec sleep infinity",
            root.display()
        );
        let holder = in_namespaces(ns, &script)
            .spawn()
            .expect("spawn the namespace holder");
        let s = Self {
            root,
            dir: dir.to_owned(),
            holder,
        };
        wait_for("the private /run", Duration::from_secs(10), || {
            s.wrapper_mounted()
        });
        s.launch();
        s
    }

    /// `nsenter` arguments that enter the namespaces of starter and charon.
    pub fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "-n"]
            .map(String::from)
            .to_vec()
    }

    /// The private `/run`, seen from outside.
    fn run_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/run", self.holder.id()))
    }

    fn wrapper_mounted(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/mounts", self.holder.id()))
            .is_ok_and(|m| m.contains(" /etc/strongswan.d "))
    }

    /// Runs `cmd` in the namespaces.
    fn run(&self, cmd: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{} {cmd}", self.enter().join(" ")))
            .output()
            .expect("run sh")
    }

    /// `ipsec start` through the root's wrapper; waits until charon answers.
    fn launch(&self) {
        let out = self.run(&format!("{}/usr/sbin/ipsec start", self.root.display()));
        assert!(
            out.status.success(),
            "ipsec start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("charon's stroke socket", Duration::from_secs(20), || {
            self.statusall().is_some()
        });
    }

    /// `ipsec statusall`, or None when charon does not answer.
    pub fn statusall(&self) -> Option<String> {
        let out = self.run("/usr/sbin/ipsec statusall");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pids of starter and charon.
    fn pids(&self) -> Vec<i32> {
        ike_pids(&self.run_dir())
    }

    /// Kills starter and charon with SIGKILL (a crash of the service) and removes what they
    /// leave in `/run`, as a service manager's restart finds it.
    pub fn kill9(&self) {
        for pid in self.pids() {
            super::kill9_and_wait(pid, "charon gone");
        }
        for f in IKE_PID_FILES.iter().chain(&["charon.ctl"]) {
            let _ = std::fs::remove_file(self.run_dir().join(f));
        }
    }

    /// Starts starter and charon again after [`Starter::kill9`].
    pub fn restart(&self) {
        self.launch();
    }

    /// Deletes connection `conn` from charon behind the monitor's back.
    pub fn delete_conn(&self, conn: &str) {
        let _ = self.run(&format!("/usr/sbin/ipsec stroke delete {conn}"));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Starter {
    fn drop(&mut self) {
        self.kill9();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
