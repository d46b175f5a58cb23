//! The kernel objects the static-key backend manages, as plain comparable values: what the
//! planner diffs and what the netlink layer reads and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Our ownership tag: the reqid of every SA and policy template we create ("OVS\0").
pub const REQID: u32 = 0x4f56_5300;
/// The priority of every policy we create (a second tag; a policy mark cannot be one, it
/// would change which packets match).
pub const PRIORITY: u32 = 0x4f56;

/// The tunnel protocol a policy selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// geneve/vxlan: UDP to this destination port.
    Udp(u16),
    Gre,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Udp(p) => write!(f, "udp dport {p}"),
            Proto::Gre => f.write_str("gre"),
        }
    }
}

/// One direction of tunnel traffic: a policy selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
}

impl Flow {
    pub fn reversed(&self) -> Flow {
        Flow {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} {}", self.src, self.dst, self.proto)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    In,
    Out,
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::In => "in",
            Dir::Out => "out",
        })
    }
}

/// An SA as the kernel identifies it (with its source, which we always set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SaId {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
}

impl fmt::Display for SaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} spi 0x{:08x}", self.src, self.dst, self.spi)
    }
}

/// A policy as the kernel identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId {
    pub dir: Dir,
    pub flow: Flow,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.dir, self.flow)
    }
}

/// Counters of one SA, from the dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaStats {
    pub bytes: u64,
    pub packets: u64,
    /// 64-bit outbound sequence number (ESN).
    pub oseq: u64,
    pub replay_drops: u32,
    pub integrity_failed: u32,
}

/// One element of the nftables guard: cleartext `proto` from `remote` to `local` is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guard {
    pub remote: IpAddr,
    pub local: IpAddr,
    pub proto: Proto,
}

/// What one observation of the kernel found. Never holds key bytes.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Our policies, with the SPI of their template (0 = any).
    pub policies: BTreeMap<PolicyId, u32>,
    /// Policies of other programs on a selector we might want.
    pub foreign_policies: BTreeSet<PolicyId>,
    pub sas: BTreeMap<SaId, SaStats>,
    /// (dst, SPI) pairs held by SAs of other programs.
    pub foreign_sas: BTreeSet<(IpAddr, u32)>,
    /// `None` when our nftables table does not exist.
    pub guards: Option<BTreeSet<Guard>>,
    /// ESP received in the last seconds, as (sender, receiver, SPI), from the guard's sets.
    pub esp_seen: BTreeSet<SaId>,
    /// Why nftables could not be read, if it could not.
    pub nft_error: Option<String>,
    /// Non-zero `/proc/net/xfrm_stat` counters.
    pub xfrm_stat: Vec<(String, u64)>,
    /// Our generations (the node's and the tunnels' own) and the SAs created under them.
    pub generations: Generations,
    pub used: BTreeSet<SaId>,
    /// Inbound SAs no longer wanted, with the end of their grace period.
    pub retiring: BTreeMap<SaId, Instant>,
    /// SAs the kernel refused to add, with its error code; not asked again in this pass.
    /// Shared with the backend, which keeps it between passes (not copied: 20,000 entries at
    /// 10k tunnels without esp4).
    pub refused: Arc<BTreeMap<SaId, Refusal>>,
    pub now: Option<Instant>,
    /// Nothing in this observation over every tunnel is new since the last one (no change,
    /// write, dump or expired grace period in between): planning and status would repeat it.
    pub repeated: bool,
}

/// The kernel refused to add an SA. Retrying at once would only repeat the refusal (a missing
/// esp4 module refuses every SA), so the add waits for the backend's next retry pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub errno: i32,
}

/// This node's key generations: the node's, drawn at boot, and the tunnels that had to draw
/// their own (an SA of theirs was re-created: a tunnel removed and added back, an SA deleted by
/// hand), by the out-flow that identifies the tunnel in key derivation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generations {
    pub node: [u8; 16],
    pub tunnels: BTreeMap<Flow, [u8; 16]>,
}

impl Generations {
    /// The generation the tunnel with this out-flow keys with (and publishes).
    pub fn of(&self, out_flow: &Flow) -> &[u8; 16] {
        self.tunnels.get(out_flow).unwrap_or(&self.node)
    }
}

/// Hex of a generation, as published in OVSDB.
pub fn generation_hex(g: &[u8; 16]) -> String {
    g.iter().map(|b| format!("{b:02x}")).collect()
}
