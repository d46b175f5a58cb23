//! Two real plutos (Libreswan 4 or 5), each in its own network namespace with its own
//! ovsdb-server and our monitor, and the PKI and tunnel settings the real-pluto tests give
//! them (tests/libreswan_pluto.rs, tests/libreswan_certs.rs).

use std::path::Path;
use std::time::Duration;

use super::kernel;
use super::libreswan::{Pluto, self_signed};
use super::monitor::{Monitor, iface_key, wait_for};
use super::netns::NetnsPair;
use super::ovsdb_server::{OvsdbServer, tunnel_port_args};

pub const T: Duration = Duration::from_secs(30);

/// What pluto logs when its peer authenticated an IKE SA.
pub const AUTHENTICATED: &str = "established IKE SA; authenticated peer";

/// Each side's name (its certificate's CN) and the address of its peer.
pub const SIDES: [(&str, &str); 2] = [("left", "192.0.2.2"), ("right", "192.0.2.1")];

/// Two sides, each with pluto, ovsdb-server and our monitor. Fields drop in order: monitors,
/// then plutos, then the namespaces.
pub struct Pair {
    pub monitors: Vec<Monitor>,
    pub plutos: Vec<Pluto>,
    pub dbs: Vec<OvsdbServer>,
    pub net: NetnsPair,
}

impl Pair {
    pub fn start(prefix: &str, ipsec: &'static str) -> Self {
        let net = NetnsPair::new(prefix);
        let dbs = vec![OvsdbServer::start(), OvsdbServer::start()];
        let plutos: Vec<Pluto> = dbs
            .iter()
            .zip([&net.left, &net.right])
            .map(|(db, ns)| Pluto::start(db.dir(), ns, ipsec))
            .collect();
        let monitors = dbs
            .iter()
            .zip(&plutos)
            .map(|(db, p)| p.start_monitor(db))
            .collect();
        Self {
            monitors,
            plutos,
            dbs,
            net,
        }
    }

    /// Runs `ovs-vsctl` on each side with the arguments `args(side, peer address)`.
    pub fn vsctl(&self, args: impl Fn(&str, &str) -> Vec<String>) {
        for (db, (side, peer)) in self.dbs.iter().zip(SIDES) {
            let args = args(side, peer);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            db.vsctl(&refs);
        }
    }

    /// Waits until each pluto has `loaded` conns and an established IKE SA.
    pub fn wait_ike(&self, loaded: usize) {
        for p in &self.plutos {
            wait_for(&format!("{loaded} conns loaded and an IKE SA"), T, || {
                let st = p.status();
                st.contains(&format!("Total IPsec connections: loaded {loaded},"))
                    && st.contains("ESTABLISHED_IKE_SA")
            });
        }
    }

    /// Waits until each monitor reports `iface`'s outcome on this kernel: with ESP `up`,
    /// with the Child SAs in the kernel of each side; without, negotiating because no IPsec
    /// SA followed the IKE SA.
    pub fn wait_outcome(&self, iface: &str) {
        let esp = kernel::has_esp();
        let want = kernel::expect("up", "negotiating");
        for (db, m) in self.dbs.iter().zip(&self.monitors) {
            // Status follows passes; `refresh` runs one now instead of in up to 15 s.
            wait_for(&format!("{iface}: {want}, IKE SA up"), T, || {
                m.appctl_ok(&["refresh"]);
                iface_key(db, iface, "ipsec-state").as_deref() == Some(want)
                    && (esp
                        || iface_key(db, iface, "ipsec-error")
                            .is_some_and(|e| e.contains("IKE SA established but no IPsec SA")))
            });
        }
        if esp {
            for ns in [&self.net.left, &self.net.right] {
                NetnsPair::assert_esp_sas(ns, "proto udp");
            }
        }
    }

    /// A pair with tunnel `tun` authenticated by self-signed certificates (made in the
    /// returned directory, to be dropped after the pair) and its IKE SA established on both
    /// sides.
    pub fn self_signed_up(prefix: &str, ipsec: &'static str) -> (tempfile::TempDir, Self) {
        let pki = tempfile::tempdir().unwrap();
        make_self_signed(pki.path());
        let pair = Self::start(prefix, ipsec);
        pair.vsctl(|side, peer| self_signed_tunnel(pki.path(), side, peer));
        pair.wait_ike(2);
        pair.wait_pluto_log(AUTHENTICATED);
        (pki, pair)
    }

    /// `del-port tun` on each side, then waits until each pluto has no conn loaded; returns
    /// where each pluto's log ends, for [`Pair::wait_authenticated_since`].
    pub fn remove_tunnel(&self) -> Vec<usize> {
        self.vsctl(|_, _| ["del-port", "tun"].map(String::from).to_vec());
        for (p, ns) in self.plutos.iter().zip([&self.net.left, &self.net.right]) {
            wait_for("pluto to unload the tunnel", T, || {
                p.status().contains("Total IPsec connections: loaded 0,")
            });
            // With the conns, pluto removed their IPsec SAs (none exist without ESP).
            wait_for("pluto to remove the tunnel's SAs", T, || {
                NetnsPair::xfrm_sas(ns).is_empty()
            });
        }
        self.plutos.iter().map(|p| p.log().len()).collect()
    }

    /// Waits until each pluto has authenticated its peer after `marks` in its log; on a
    /// timeout, shows what pluto and the monitor logged since.
    pub fn wait_authenticated_since(&self, marks: &[usize], what: &str) {
        for ((p, m), &mark) in self.plutos.iter().zip(&self.monitors).zip(marks) {
            let authenticated = || {
                p.log()
                    .get(mark..)
                    .is_some_and(|l| l.contains(AUTHENTICATED))
            };
            let start = std::time::Instant::now();
            while !authenticated() && start.elapsed() < T {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                authenticated(),
                "no IKE SA {what}; pluto:\n{}\nmonitor:\n{}",
                p.log().get(mark..).unwrap_or_default(),
                m.log()
            );
        }
    }

    /// Waits until pluto has logged `line` on each side.
    pub fn wait_pluto_log(&self, line: &str) {
        for p in &self.plutos {
            wait_for(&format!("pluto to log {line:?}"), T, || {
                p.log().contains(line)
            });
        }
    }
}

/// `set Open_vSwitch . other_config:…` for this side's certificate, key and optional CA.
pub fn set_pki(dir: &Path, side: &str, cert: &str, key: &str, ca: Option<&str>) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    let mut v = vec![
        "set".to_owned(),
        "Open_vSwitch".to_owned(),
        ".".to_owned(),
        format!("other_config:certificate={}", p(&format!("{side}-{cert}"))),
        format!("other_config:private_key={}", p(&format!("{side}-{key}"))),
    ];
    v.extend(ca.map(|ca| format!("other_config:ca_cert={}", p(ca))));
    v
}

/// The other side's name.
pub fn other(side: &str) -> &'static str {
    if side == "left" { "right" } else { "left" }
}

/// Self-signed certificates for both sides (CN left and right) in `dir`.
pub fn make_self_signed(dir: &Path) {
    for (side, _) in SIDES {
        self_signed(dir, side);
    }
}

/// This side's self-signed certificate and key, and tunnel "tun" (geneve) authenticated by
/// the peer's certificate (`remote_cert`).
pub fn self_signed_tunnel(pki: &Path, side: &str, peer: &str) -> Vec<String> {
    let mut v = set_pki(pki, side, "cert.pem", "privkey.pem", None);
    v.push("--".into());
    let remote_cert = pki.join(format!("{}-cert.pem", other(side)));
    v.extend(tunnel_port_args(
        "tun",
        "geneve",
        &[
            format!("remote_ip={peer}"),
            format!("remote_cert={}", remote_cert.display()),
        ],
    ));
    v
}

/// This side's CA-signed certificate, key and the CA, and tunnel "tun" (vxlan) to the peer
/// named by its CN (`remote_name`).
pub fn ca_signed_tunnel(pki: &Path, side: &str, peer: &str) -> Vec<String> {
    let mut v = set_pki(pki, side, "cert.pem", "key.pem", Some("ca-cert.pem"));
    v.push("--".into());
    v.extend(tunnel_port_args(
        "tun",
        "vxlan",
        &[
            format!("remote_ip={peer}"),
            format!("remote_name={}", other(side)),
        ],
    ));
    v
}
