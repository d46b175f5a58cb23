//! What the metrics read from the kernel and the certificate files: SA traffic matched to
//! tunnels, `/proc/net/xfrm_stat`, and certificate expiry.
//!
//! Every backend's SAs live in the kernel (charon and pluto install theirs there too), so one
//! XFRM SA dump serves all of them. An SA belongs to a tunnel when its addresses are the
//! tunnel's (outbound: local → remote; inbound: remote → local; an unset `local_ip` matches any
//! local address). When several tunnels share the address pair, the SA's selector decides: GRE
//! for the gre tunnel, the UDP port for geneve/vxlan; an SA whose selector names neither is
//! left out rather than guessed.
//!
//! The SA dump is O(SAs), so the shell refreshes it on the periodic timer (and for each
//! `metrics/show`), never per scrape: scrapes are served from this view. The kernel's counters restart with each new SA (a rekey), so the view keeps the
//! last value of each SA and adds only the growth: `ovs_ipsec_sa_*_total` never go down while
//! the tunnel exists. A new outbound SA beside or after an older one of the same tunnel is a
//! rekey (the IKE daemons' rekeys and the static-key rotation alike).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::backend::xfrm::host::HostSa;
use crate::model::{Desired, TunnelType};

const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_ESP: u8 = 50;

/// Bytes and packets in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes: u64,
    pub packets: u64,
}

/// One tunnel's SA traffic since the monitor first saw its SAs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub inbound: Counts,
    pub outbound: Counts,
}

/// Which certificate an expiry is for (the `role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Local,
    Ca,
    Peer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Ca => "ca",
            Self::Peer => "peer",
        }
    }
}

/// notAfter of one certificate in use, by its subject's CN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertExpiry {
    pub role: Role,
    pub subject: String,
    pub not_after: i64,
}

/// The last SA seen under (destination, SPI): whose it is and its counters then.
#[derive(Debug, Clone)]
struct SeenSa {
    tunnel: String,
    outbound: bool,
    counts: Counts,
}

/// The kernel and certificate observation behind the metrics; see the module documentation.
#[derive(Debug, Default)]
pub struct KernelView {
    pub xfrm_stat: Vec<(String, u64)>,
    pub certs: Vec<CertExpiry>,
    totals: BTreeMap<String, Traffic>,
    seen: HashMap<(IpAddr, u32), SeenSa>,
    /// When the SAs were last read.
    pub read_at: Option<std::time::Instant>,
}

/// A tunnel as the matcher sees it.
struct Candidate<'a> {
    name: &'a str,
    local: Option<IpAddr>,
    kind: TunnelType,
    udp_port: Option<u16>,
}

impl Candidate<'_> {
    fn selects(&self, sa: &HostSa) -> bool {
        match sa.sel_proto {
            IPPROTO_GRE => self.kind == TunnelType::Gre,
            IPPROTO_UDP => self
                .udp_port
                .is_some_and(|p| p == sa.sel_dport || p == sa.sel_sport),
            _ => false,
        }
    }
}

/// The one tunnel among `cands` that `sa` belongs to, if it can be told.
fn pick<'a>(cands: &[&Candidate<'a>], sa: &HostSa) -> Option<&'a str> {
    match cands {
        [only] => Some(only.name),
        _ => {
            let mut hits = cands.iter().filter(|c| c.selects(sa));
            match (hits.next(), hits.next()) {
                (Some(c), None) => Some(c.name),
                _ => None,
            }
        }
    }
}

impl KernelView {
    /// Takes in a dump of every SA (ESP ones count); returns the tunnels that rekeyed since
    /// the last one.
    pub fn update_sas(&mut self, desired: &Desired, sas: &[HostSa]) -> Vec<String> {
        let mut by_remote: HashMap<IpAddr, Vec<Candidate<'_>>> = HashMap::new();
        for (name, t) in &desired.tunnels {
            by_remote
                .entry(t.conf.remote_ip)
                .or_default()
                .push(Candidate {
                    name,
                    local: t.conf.local_ip,
                    kind: t.conf.kind,
                    udp_port: t.conf.udp_port(),
                });
        }
        let matching = |remote: &IpAddr, local: &IpAddr| -> Vec<&Candidate<'_>> {
            by_remote.get(remote).map_or_else(Vec::new, |v| {
                v.iter()
                    .filter(|c| c.local.is_none_or(|l| l == *local))
                    .collect()
            })
        };
        let mut seen = HashMap::with_capacity(sas.len());
        let mut had_out: BTreeMap<&str, bool> = BTreeMap::new();
        for s in self.seen.values().filter(|s| s.outbound) {
            had_out.insert(s.tunnel.as_str(), true);
        }
        let mut rekeyed = Vec::new();
        self.totals
            .retain(|name, _| desired.tunnels.contains_key(name));
        for sa in sas.iter().filter(|s| s.proto == IPPROTO_ESP) {
            let (tunnel, outbound) = match pick(&matching(&sa.dst, &sa.src), sa) {
                Some(t) => (t, true),
                None => match pick(&matching(&sa.src, &sa.dst), sa) {
                    Some(t) => (t, false),
                    None => continue,
                },
            };
            let key = (sa.dst, sa.spi);
            let now = Counts {
                bytes: sa.bytes,
                packets: sa.packets,
            };
            let grown = match self.seen.get(&key) {
                Some(prev)
                    if prev.tunnel == tunnel
                        && prev.outbound == outbound
                        && now.bytes >= prev.counts.bytes
                        && now.packets >= prev.counts.packets =>
                {
                    Counts {
                        bytes: now.bytes - prev.counts.bytes,
                        packets: now.packets - prev.counts.packets,
                    }
                }
                Some(_) => now,
                None => {
                    if outbound && had_out.get(tunnel).copied().unwrap_or(false) {
                        rekeyed.push(tunnel.to_owned());
                    }
                    now
                }
            };
            let total = self.totals.entry(tunnel.to_owned()).or_default();
            let dir = if outbound {
                &mut total.outbound
            } else {
                &mut total.inbound
            };
            dir.bytes += grown.bytes;
            dir.packets += grown.packets;
            seen.insert(
                key,
                SeenSa {
                    tunnel: tunnel.to_owned(),
                    outbound,
                    counts: now,
                },
            );
        }
        self.seen = seen;
        rekeyed
    }

    /// The tunnel's SA traffic; `None` when none of its SAs was ever seen.
    pub fn traffic_of(&self, tunnel: &str) -> Option<Traffic> {
        self.totals.get(tunnel).copied()
    }
}

#[cfg(test)]
mod tests;
