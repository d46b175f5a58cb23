//! MTU: the largest inner MTU a tunnel carries without fragmenting, and `mtu-exceeds-path`
//! when an interface behind the tunnel is set larger.
//!
//! Every tunnel is ESP in transport mode (all backends), so a full-size inner frame leaves as
//!
//! ```text
//! outer IP | [UDP 4500] | ESP SPI+seq | IV | tunnel header | inner Ethernet | inner packet | pad | padlen+next | ICV
//!  20 / 40      8 NAT-T       8          8 GCM     UDP 8 + VXLAN 8           14         inner MTU   to the     2        16 GCM-128
//!                                        16 CBC    UDP 8 + Geneve 8 + opts                        cipher's            12 sha1_96
//!                                                  GRE 4 (+4 key, +4 csum, +4 seq)                alignment            16 sha256_128
//! ```
//!
//! The ESP payload plus the 2-byte trailer is padded to the cipher's block (at least 4 bytes,
//! RFC 4303; GCM, CTR and ChaCha20-Poly1305 need only that, CBC pads to its 16-byte block), so
//! the largest L4 payload that fits a path MTU `P` is, as the kernel computes it
//! (`esp4_get_mtu`/`esp6_get_mtu`):
//! `floor((P - IP - 8 - IV - NAT-T - ICV) / block) * block - 2`, and the inner MTU is that
//! minus the tunnel header and the inner Ethernet header (a VLAN-tagged inner frame needs 4
//! bytes more).
//!
//! What it reads: the cipher from the tunnel's `options:ipsec_esp` (strongSwan or Libreswan
//! proposal syntax), else the backends' configured AES-GCM with a 16-byte ICV (the static
//! backend's `rfc4106(gcm(aes))` with 128-bit ICV, strongSwan's `aes256gcm16`, Libreswan's
//! `aes_gcm256`); NAT-T when `options:ipsec_encapsulation` or `ipsec_forceencaps` forces it
//! (the caller may add detected encapsulation); GRE's key, checksum and sequence flags from
//! the Interface options; Geneve options (set per packet by flows, so not in the
//! configuration: the caller says how many bytes to reserve; OVS alone adds none); the path
//! MTU from `diagnose::route` (route MTU, else the egress device's). `mtu-exceeds-path`
//! compares the inner MTU with the kernel MTU of the datapath's ports (the devices whose
//! master is `ovs-system`: internal ports and attached VM/container interfaces, which is what
//! OVSDB's `Interface:mtu` reports for them), read with `ip -j -d link show master
//! ovs-system`; the datapath's own tunnel devices (`genev_sys_*`, `vxlan_sys_*`, `gre_sys`) are
//! not behind the tunnel and are skipped.

use std::time::Duration;

use super::route::{Link, parse_links};
use super::{Code, Finding, Severity};
use crate::backend::command::{Cmd, CommandError};
use crate::model::string_map::StringMap;
use crate::model::{Family, TunnelConf, TunnelType};

/// Bytes of the inner Ethernet header (no VLAN tag).
pub const INNER_ETHERNET: u32 = 14;
/// NAT-T's UDP header (RFC 3948).
pub const NATT_UDP: u32 = 8;
/// ESP's SPI and sequence number.
pub const ESP_HEADER: u32 = 8;
/// ESP's pad length and next header bytes.
pub const ESP_TRAILER: u32 = 2;

/// The size parameters of an ESP transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Esp {
    pub iv: u32,
    /// Alignment of payload plus trailer: the cipher's block, at least 4.
    pub block: u32,
    pub icv: u32,
}

impl Esp {
    /// AES-GCM with a 16-byte ICV (RFC 4106): what every backend configures by default.
    pub const AES_GCM_16: Esp = Esp {
        iv: 8,
        block: 4,
        icv: 16,
    };
    /// The largest overhead of the transforms we know (CBC with SHA-512), assumed for a
    /// proposal we cannot read.
    pub const WORST: Esp = Esp {
        iv: 16,
        block: 16,
        icv: 32,
    };

    /// The first transform of an ESP proposal in strongSwan (`aes128gcm16`, `aes256-sha256`,
    /// `chacha20poly1305`) or Libreswan (`aes_gcm256`, `aes-sha2_256`, `aes_gcm_c`) syntax;
    /// `None` when a part is not understood.
    pub fn from_proposal(proposal: &str) -> Option<Esp> {
        let first = proposal.split(',').next()?.trim().to_ascii_lowercase();
        let mut parts = first.split(['-', '+', ';']).filter(|p| !p.is_empty());
        let cipher = parts.next()?;
        let (iv, block, icv) = if let Some(at) = cipher.find("gcm").or_else(|| cipher.find("ccm")) {
            (8, 4, Some(aead_icv(&cipher[at + 3..])?))
        } else if cipher.starts_with("chacha20") {
            (8, 4, Some(16))
        } else if cipher.contains("ctr") {
            (8, 4, None)
        } else if cipher.starts_with("aes") || cipher.starts_with("camellia") {
            (16, 16, None)
        } else if cipher.starts_with("3des") {
            (8, 8, None)
        } else if cipher == "null" {
            (0, 4, None)
        } else {
            return None;
        };
        let icv = match icv {
            Some(icv) => icv,
            None => integrity_icv(parts.next()?)?,
        };
        Some(Esp { iv, block, icv })
    }
}

/// ICV bytes of an AES-GCM/CCM transform from what follows `gcm`: strongSwan's ICV size in
/// bytes or bits (`16`, `12`, `8`, `128`, `96`, `64`), Libreswan's `_a`/`_b`/`_c` or `_8`/
/// `_12`/`_16`, or only a key size or nothing (Libreswan's default, 16).
fn aead_icv(tail: &str) -> Option<u32> {
    match tail.split('_').find(|t| !t.is_empty()).unwrap_or("") {
        "" | "c" | "16" | "128" | "192" | "256" => Some(16),
        "b" | "12" | "96" => Some(12),
        "a" | "8" | "64" => Some(8),
        _ => None,
    }
}

/// ICV bytes of an integrity algorithm (the truncations of RFC 4868 and RFC 2404).
fn integrity_icv(name: &str) -> Option<u32> {
    Some(match name {
        "sha1" | "sha1_96" | "sha" | "md5" | "md5_96" | "aesxcbc" | "aes_xcbc" => 12,
        "sha256" | "sha2_256" | "sha256_128" | "sha2" | "aescmac" | "aes_cmac" => 16,
        "sha384" | "sha2_384" | "sha384_192" => 24,
        "sha512" | "sha2_512" | "sha512_256" => 32,
        _ => return None,
    })
}

/// GRE header options that add 4 bytes each (OVS `options:key`/`out_key`, `csum`, `seq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GreFlags {
    pub key: bool,
    pub csum: bool,
    pub seq: bool,
}

impl GreFlags {
    /// From an Interface's options: a transmitted key (`key` or `out_key`, any value,
    /// including `flow`), `csum=true`, `seq=true`.
    pub fn from_options(options: &StringMap) -> Self {
        let on = |k: &str| options.get(k).is_some_and(|v| v == "true");
        Self {
            key: options.contains_key("key") || options.contains_key("out_key"),
            csum: on("csum"),
            seq: on("seq"),
        }
    }
}

/// Everything the MTU arithmetic needs about one tunnel, and the MTUs it is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuInput {
    pub kind: TunnelType,
    pub family: Family,
    pub esp: Esp,
    /// True when the ESP transform is [`Esp::WORST`] because the configured proposal was
    /// not understood.
    pub esp_assumed: bool,
    pub natt: bool,
    pub gre: GreFlags,
    pub geneve_options: u32,
    /// MTU toward the peer (`None`: no route, nothing to compute).
    pub path_mtu: Option<u32>,
    /// Kernel MTUs of the interfaces behind the tunnel, by name.
    pub ports: Vec<(String, u32)>,
}

impl MtuInput {
    /// Bytes of the tunnel header (including its UDP header) in front of the inner frame.
    pub fn tunnel_header(&self) -> u32 {
        match self.kind {
            TunnelType::Vxlan => 8 + 8,
            TunnelType::Geneve => 8 + 8 + self.geneve_options,
            TunnelType::Gre => {
                4 + 4
                    * (u32::from(self.gre.key) + u32::from(self.gre.csum) + u32::from(self.gre.seq))
            }
        }
    }

    /// The largest inner (L3) MTU whose frames fit the path MTU after encapsulation, exact
    /// with ESP padding; `None` when there is no path MTU or nothing fits.
    pub fn inner_mtu(&self) -> Option<u32> {
        let outer_ip = match self.family {
            Family::V4 => 20,
            Family::V6 => 40,
        };
        let natt = if self.natt { NATT_UDP } else { 0 };
        let avail = self
            .path_mtu?
            .checked_sub(outer_ip + natt + ESP_HEADER + self.esp.iv + self.esp.icv)?;
        let block = self.esp.block.max(4);
        let payload = (avail / block * block).checked_sub(ESP_TRAILER)?;
        payload.checked_sub(self.tunnel_header() + INNER_ETHERNET)
    }
}

/// `mtu-exceeds-path` for each port whose MTU is larger than the tunnel's inner MTU.
pub fn check(conf: &TunnelConf, input: &MtuInput) -> Vec<Finding> {
    let Some(inner) = input.inner_mtu() else {
        return Vec::new();
    };
    let assumed = if input.esp_assumed {
        " (options:ipsec_esp not understood: the largest ESP overhead assumed)"
    } else {
        ""
    };
    input
        .ports
        .iter()
        .filter(|(_, mtu)| *mtu > inner)
        .map(|(port, mtu)| {
            Finding::new(
                Code::MtuExceedsPath,
                Severity::Error,
                format!(
                    "{port} has MTU {mtu}, but {} carries at most {inner} inside IPsec toward {} (path MTU {}){assumed}; larger frames are dropped",
                    conf.name,
                    conf.remote_ip,
                    input.path_mtu.unwrap_or_default()
                ),
                format!(
                    "set the MTU of {port} to {inner} or less (ovs-vsctl set Interface {port} mtu_request={inner}), or raise the path MTU toward {}",
                    conf.remote_ip
                ),
            )
        })
        .collect()
}

/// The MTU input of `conf`, whose Interface row has `options`, toward a path of `path_mtu`,
/// compared with `ports`; Geneve options are not counted (see the module docs).
pub fn input_for(
    conf: &TunnelConf,
    options: &StringMap,
    path_mtu: Option<u32>,
    ports: Vec<(String, u32)>,
) -> MtuInput {
    let (esp, esp_assumed, natt) = configured(conf);
    MtuInput {
        kind: conf.kind,
        family: conf.family,
        esp,
        esp_assumed,
        natt,
        gre: GreFlags::from_options(options),
        geneve_options: 0,
        path_mtu,
        ports,
    }
}

/// The tunnel's ESP transform and forced NAT-T from its configuration (see the module docs).
pub fn configured(conf: &TunnelConf) -> (Esp, bool, bool) {
    let (esp, assumed) = match conf.custom.get("esp") {
        None => (Esp::AES_GCM_16, false),
        Some(p) => Esp::from_proposal(p).map_or((Esp::WORST, true), |e| (e, false)),
    };
    let yes = |k: &str| conf.custom.get(k).is_some_and(|v| v == "yes");
    (esp, assumed, yes("encapsulation") || yes("forceencaps"))
}

/// Tunnel device kinds the datapath creates for itself; they are not behind a tunnel.
const TUNNEL_KINDS: &[&str] = &[
    "vxlan",
    "geneve",
    "gretap",
    "ip6gretap",
    "gre",
    "ip6gre",
    "erspan",
    "ip6erspan",
];

/// The ports of `ip -j -d link show master ovs-system` output that count for the check.
pub fn datapath_ports(links: &[Link]) -> Vec<(String, u32)> {
    links
        .iter()
        .filter(|l| {
            l.linkinfo
                .as_ref()
                .and_then(|i| i.info_kind.as_deref())
                .is_none_or(|k| !TUNNEL_KINDS.contains(&k))
        })
        .map(|l| (l.ifname.clone(), l.mtu))
        .collect()
}

/// Reads the kernel MTUs of the datapath's ports (none when there is no datapath).
pub async fn read_ports(timeout: Duration) -> Result<Vec<(String, u32)>, CommandError> {
    let out = Cmd::new("ip", "list the datapath's ports", timeout)
        .args(["-j", "-d", "link", "show", "master", "ovs-system"])
        .run()
        .await?;
    if out.code != 0 {
        // No `ovs-system` device: no kernel datapath, no ports to compare.
        return Ok(Vec::new());
    }
    Ok(parse_links(&out.stdout)
        .map(|links| datapath_ports(&links))
        .unwrap_or_default())
}

#[cfg(test)]
#[path = "mtu_tests.rs"]
mod tests;
