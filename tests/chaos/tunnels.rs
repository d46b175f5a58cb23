//! The soak's model of what OVSDB should hold: a fixed set of tunnel slots, each with its own
//! type, address family and port (so that no two tunnels share a selector), present or not,
//! with PSK or certificate authentication (one or the other on a node, switched by a step
//! that rewrites every tunnel in one transaction); plus hostile rows that must end `invalid`.
//!
//! Both nodes get mirrored rows (each pointing at the other's address), so that every valid
//! tunnel can negotiate.

use std::collections::BTreeMap;

/// Addresses of the two nodes: the pair's veth gets these (IPv4 from tests/common/netns.rs,
/// IPv6 added by the soak).
pub const V4: [&str; 2] = ["192.0.2.1", "192.0.2.2"];
pub const V6: [&str; 2] = ["2001:db8:c4a0::1", "2001:db8:c4a0::2"];
/// The certificate names (CN and SAN) of the two nodes.
pub const NAMES: [&str; 2] = ["left", "right"];

#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Psk(String),
    Cert,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tunnel {
    pub auth: Auth,
    /// `options:ipsec_dpddelay`, a pass-through option a change may set or clear.
    pub dpd: Option<u32>,
}

/// Slot `i`: its interface name, type, family and `dst_port`.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub i: usize,
}

impl Slot {
    pub fn name(self) -> String {
        format!("c{}", self.i)
    }

    pub fn kind(self) -> &'static str {
        match self.i {
            0 | 1 => "gre",
            i if i % 2 == 0 => "geneve",
            _ => "vxlan",
        }
    }

    pub fn v6(self) -> bool {
        self.i % 4 == 1 || self.i % 4 == 2
    }

    /// gre has no port; the others get one of their own from slot 2 on (each type's default
    /// port for slots 2 and 3).
    pub fn port(self) -> Option<u16> {
        match self.i {
            0 | 1 => None,
            2 => Some(6081),
            3 => Some(4789),
            i => Some(10_000 + i as u16),
        }
    }

    /// `options:` of this slot on node `me` (0 or 1) for `t`.
    pub fn options(self, me: usize, t: &Tunnel) -> Vec<String> {
        let peer = 1 - me;
        let ip = if self.v6() { V6[peer] } else { V4[peer] };
        let mut o = vec![format!("remote_ip={ip}")];
        if let Some(p) = self.port() {
            o.push(format!("dst_port={p}"));
        }
        match &t.auth {
            Auth::Psk(k) => o.push(format!("psk={k}")),
            Auth::Cert => o.push(format!("remote_name={}", NAMES[peer])),
        }
        if let Some(d) = t.dpd {
            o.push(format!("ipsec_dpddelay={d}s"));
        }
        o
    }
}

/// Hostile rows: (type, options) that validation must refuse, whatever the node.
pub const HOSTILE: &[(&str, &[&str])] = &[
    ("gre", &["remote_ip=flow", "psk=x"]),
    ("vxlan", &["remote_ip=192.0.2.9", "psk=x", "dst_port=99999"]),
    (
        "gre",
        &[
            "remote_ip=192.0.2.9",
            "psk=x",
            "ipsec_dpddelay=\"30s\\nleft=%any\"",
        ],
    ),
    ("geneve", &["remote_ip=\"$(id)\"", "psk=x"]),
    (
        "gre",
        &["remote_ip=192.0.2.9", "psk=x", "ipsec_include=/etc/passwd"],
    ),
    ("vxlan", &["remote_ip=\"192.0.2.1;reboot\"", "psk=x"]),
    ("geneve", &["remote_ip=224.0.0.5", "psk=x"]),
];

/// What OVSDB should hold on both nodes.
#[derive(Debug, Default, Clone)]
pub struct Desired {
    pub tunnels: BTreeMap<usize, Tunnel>,
    /// Hostile rows present: name `h<k>` → index into [`HOSTILE`].
    pub hostile: BTreeMap<usize, usize>,
    /// Certificates configured (`other_config`): tunnels authenticate with them; otherwise
    /// with PSKs (the two cannot be mixed on one node).
    pub pki: bool,
}

impl Desired {
    pub fn valid_names(&self) -> Vec<String> {
        self.tunnels.keys().map(|&i| Slot { i }.name()).collect()
    }

    pub fn hostile_names(&self) -> Vec<String> {
        self.hostile.keys().map(|k| format!("h{k}")).collect()
    }
}
