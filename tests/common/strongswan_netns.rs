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
                "#!/bin/sh\ncase \"$1\" in\n  start|restart) exec /usr/sbin/ipsec \"$1\" --conf {root}/etc/ipsec.conf ;;\n  \
                 *) exec /usr/sbin/ipsec \"$@\" ;;\nesac\n",
                root = root.display()
            ),
        )
        .unwrap();
        sh(&format!("chmod 755 {}", wrapper.display()));
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
        .args(["sh", "-c", &script]);
        let mon = Monitor::spawn(cmd, dir, ctl, log);
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
