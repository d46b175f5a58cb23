//! Two network namespaces joined by a veth pair, the topology every real-daemon test uses:
//! `left` has 192.0.2.1, `right` 192.0.2.2, each with a default route to the other (pluto's
//! `%defaultroute` needs one). Names are unique per process and call, so tests can run in
//! parallel; everything left running inside is killed and the namespaces removed on drop.

use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct NetnsPair {
    pub left: String,
    pub right: String,
}

impl NetnsPair {
    /// `prefix` keeps each harness's namespaces recognisable in `ip netns`.
    pub fn new(prefix: &str) -> Self {
        super::kernel::has_esp();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let base = format!(
            "{prefix}{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let pair = Self {
            left: format!("{base}l"),
            right: format!("{base}r"),
        };
        ip(&["netns", "add", &pair.left]);
        ip(&["netns", "add", &pair.right]);
        // Created inside the namespaces, so the device names need not be unique.
        ip(&[
            "-n",
            &pair.left,
            "link",
            "add",
            "v0",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            &pair.right,
        ]);
        for (ns, dev, me, peer) in [
            (&pair.left, "v0", "192.0.2.1/24", "192.0.2.2"),
            (&pair.right, "v1", "192.0.2.2/24", "192.0.2.1"),
        ] {
            ip(&["-n", ns, "addr", "add", me, "dev", dev]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "route", "add", "default", "via", peer]);
        }
        pair
    }

    /// `ip xfrm state` records in `ns`, one string each with whitespace collapsed.
    pub fn xfrm_sas(ns: &str) -> Vec<String> {
        super::xfrm::records(&String::from_utf8_lossy(
            &ip(&["-n", ns, "xfrm", "state"]).stdout,
        ))
    }

    /// Asserts that `ns` holds an ESP transport SA in each direction between the pair's
    /// addresses whose selector names `proto` (e.g. `proto udp`), as an IKE daemon installs
    /// them once both ends negotiated the Child SA on a kernel with ESP.
    pub fn assert_esp_sas(ns: &str, proto: &str) {
        let sas = Self::xfrm_sas(ns);
        for (a, b) in [("192.0.2.1", "192.0.2.2"), ("192.0.2.2", "192.0.2.1")] {
            assert!(
                sas.iter().any(|sa| {
                    sa.starts_with(&format!("src {a} dst {b} proto esp "))
                        && sa.contains("mode transport")
                        && sa.contains(&format!("sel src {a}/32 dst {b}/32 {proto}"))
                }),
                "{ns}: no ESP SA {a} -> {b} on {proto}: {sas:#?}"
            );
        }
    }

    /// `ip xfrm policy` in `ns`.
    pub fn xfrm_policies(ns: &str) -> String {
        String::from_utf8_lossy(&ip(&["-n", ns, "xfrm", "policy"]).stdout).into_owned()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.left, &self.right] {
            // starter, charon and pluto daemonize: kill whatever is left in the namespace.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "for p in $(ip netns pids {ns}); do kill -9 $p; done; sleep 0.1; ip netns del {ns}"
                ))
                .status();
        }
    }
}

/// Runs `f` on a thread that has entered the namespace `ns` (setns changes only the calling
/// thread; processes it spawns start in `ns`).
pub fn run_inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: a valid namespace fd; this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {ns}");
            f()
        })
        .join()
        .unwrap()
    })
}

pub fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
