//! Harness for the static-key backend on the real kernel: a fresh network namespace per test
//! (unique name, removed on drop even after a panic) and the monitor started inside it with
//! `--ike-daemon=none`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::Duration;

use super::kernel;
use super::monitor::{Monitor, iface_key, launch, wait_for};
use super::ovsdb_server::OvsdbServer;

/// Our tunnel endpoints inside every namespace.
pub const LOCAL4: &str = "192.0.2.1";
pub const LOCAL6: &str = "2001:db8::1";

pub struct Netns {
    pub name: String,
}

/// Options of a static-key geneve tunnel from [`LOCAL4`] to `remote` on port 6090.
pub fn geneve_6090(remote: &str, psk: &str) -> Vec<String> {
    vec![
        format!("remote_ip={remote}"),
        format!("local_ip={LOCAL4}"),
        "dst_port=6090".to_owned(),
        format!("psk={psk}"),
    ]
}

impl Netns {
    /// A namespace with `lo` up holding [`LOCAL4`] and [`LOCAL6`] (this kernel has no dummy
    /// devices).
    pub fn new() -> Self {
        super::kernel::has_esp();
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ovsx-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["addr", "add", &format!("{LOCAL4}/32"), "dev", "lo"]);
        ns.ip(&["addr", "add", &format!("{LOCAL6}/128"), "dev", "lo"]);
        ns
    }

    /// `ip -n <ns> args...`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Adds by hand a foreign policy (no tags of ours) from `src` to `dst`, out, selecting
    /// `selector` (e.g. `["proto", "gre"]`).
    pub fn add_foreign_policy(&self, src: &str, dst: &str, selector: &[&str]) {
        let mut args = vec!["xfrm", "policy", "add", "src", src, "dst", dst];
        args.extend_from_slice(selector);
        args.extend(["dir", "out", "tmpl", "proto", "esp", "mode", "transport"]);
        self.ip(&args);
    }

    /// `ip xfrm state` records, one string each with whitespace collapsed.
    pub fn sas(&self) -> Vec<String> {
        records(&self.ip(&["xfrm", "state"]))
    }

    /// Waits for the outcome of tunnel `iface` (from `local` to `remote`, selector protocol
    /// `proto` as `ip xfrm` prints it, e.g. `proto udp dport 6090`) on this kernel: with ESP it
    /// is `up`, with an ESP transport SA in each direction on the tunnel's selector; without,
    /// it is in error with the kernel's refusal of the SA.
    pub fn wait_sa_outcome(
        &self,
        db: &OvsdbServer,
        iface: &str,
        local: &str,
        remote: &str,
        proto: &str,
    ) {
        let state = || iface_key(db, iface, "ipsec-state");
        if !kernel::has_esp() {
            wait_for(&format!("{iface}: ipsec-state=error (no ESP)"), T, || {
                state().as_deref() == Some("error")
            });
            let err = iface_key(db, iface, "ipsec-error").unwrap_or_default();
            assert!(
                err.contains("cannot add in SA") && err.contains("os error"),
                "{iface}: {err}"
            );
            return;
        }
        wait_for(&format!("{iface}: ipsec-state=up"), T, || {
            state().as_deref() == Some("up")
        });
        let sas = self.sas();
        for (src, dst) in [(local, remote), (remote, local)] {
            let host = |a: &str| format!("{a}/{}", if a.contains(':') { 128 } else { 32 });
            let sel = format!("sel src {} dst {} {proto}", host(src), host(dst));
            assert!(
                sas.iter().any(|sa| {
                    sa.starts_with(&format!("src {src} dst {dst} proto esp "))
                        && sa.contains("mode transport")
                        && sa.contains(&sel)
                }),
                "{iface}: no SA {src} -> {dst} with {sel}: {sas:#?}"
            );
        }
    }

    /// No SA whose `ip xfrm state` record contains `what` (e.g. a selector) is left.
    pub fn assert_no_sa(&self, what: &str) {
        let sas = self.sas();
        assert!(
            !sas.iter().any(|sa| sa.contains(what)),
            "SAs with {what:?} survived: {sas:#?}"
        );
    }

    /// `ip netns exec <ns> nft args...`: (success, stdout).
    pub fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .output()
            .expect("run nft (install nftables: tests/deps/xfrm.packages)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs `f` on a thread that has entered the namespace.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        super::netns::run_inside(&self.name, f)
    }

    /// Sends one ESP packet (SPI `spi`, sequence number 1, no valid payload) from `src` to
    /// `dst` inside the namespace, through a raw socket: what a peer sending under a key we
    /// do not hold looks like on the wire.
    pub fn send_esp(&self, src: &str, dst: &str, spi: u32) {
        let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
            (src.parse().unwrap(), dst.parse().unwrap());
        self.run_inside(|| {
            let addr = |ip: std::net::Ipv4Addr| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                sin_zero: [0; 8],
            };
            let mut packet = spi.to_be_bytes().to_vec();
            packet.extend_from_slice(&1u32.to_be_bytes());
            packet.extend_from_slice(&[0; 24]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: plain socket calls on a descriptor we own, with valid buffers.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ESP);
                assert!(fd >= 0, "raw ESP socket");
                let from = addr(src);
                assert_eq!(
                    libc::bind(fd, (&raw const from).cast(), len),
                    0,
                    "bind {src}"
                );
                let to = addr(dst);
                let sent = libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const to).cast(),
                    len,
                );
                libc::close(fd);
                assert_eq!(sent, packet.len() as isize, "send ESP to {dst}");
            }
        })
    }

    /// Starts `--ike-daemon=none` in the namespace, logging to `log_name` in the server dir.
    pub fn monitor(&self, db: &OvsdbServer, log_name: &str, extra: &[&str]) -> Monitor {
        let mut args = vec!["--ike-daemon=none"];
        args.extend_from_slice(extra);
        launch(db, &["ip", "netns", "exec", &self.name], log_name, &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// How long a tunnel may take to reach its outcome.
const T: Duration = Duration::from_secs(20);

/// The records of `ip xfrm state` or `ip xfrm policy` output (a record starts at column 0 with
/// `src `, its other lines are indented), each with whitespace collapsed.
pub fn records(text: &str) -> Vec<String> {
    let mut records: Vec<String> = Vec::new();
    for line in text.lines() {
        match records.last_mut() {
            Some(r) if !line.starts_with("src ") => {
                r.push(' ');
                r.push_str(line);
            }
            _ => records.push(line.to_owned()),
        }
    }
    records
        .iter()
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` but the database itself (which holds the PSK by design),
/// concatenated: logs, generation file, status written by the monitor, for leak checks.
pub fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("conf.db"))
        {
            continue;
        }
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}
