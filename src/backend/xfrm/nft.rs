//! The nftables fail-closed guard: table `inet ovs_ipsec`, owned entirely by us.
//!
//! A separate table with its own base chain at priority `raw` drops cleartext tunnel packets
//! from configured peers (`meta ipsec missing`). An accept elsewhere ends only that chain;
//! our drop is final. Peers are set elements, so the rule count stays constant and one tunnel
//! change is one element add or delete. Scripts go to `nft -f -` on stdin.
//!
//! The same chain records which ESP SPIs arrive from which peer (sets `esp4`/`esp6`, elements
//! expire 10 s after the last packet): the only local sign that a peer sends with a key we do not
//! hold, typically after its reboot drew a new generation that the CMS has not relayed yet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use serde_json::Value;

use super::types::{Guard, Proto, SaId};

pub const TABLE: &str = "ovs_ipsec";

/// The whole table; `table` only creates what is missing, so it is safe to repeat. The 10 s
/// timeout of `esp4`/`esp6` is shorter than the default rekey grace, so the SPI of a rotated-out
/// key is forgotten before its inbound SA is removed.
const SKELETON: &str = "table inet ovs_ipsec {
  set udp4 { type ipv4_addr . ipv4_addr . inet_service; }
  set udp6 { type ipv6_addr . ipv6_addr . inet_service; }
  set gre4 { type ipv4_addr . ipv4_addr; }
  set gre6 { type ipv6_addr . ipv6_addr; }
  set esp4 { typeof ip saddr . ip daddr . esp spi; size 65536; flags dynamic,timeout; timeout 10s; }
  set esp6 { typeof ip6 saddr . ip6 daddr . esp spi; size 65536; flags dynamic,timeout; timeout 10s; }
  chain input {
    type filter hook input priority raw; policy accept;
    meta ipsec missing ip saddr . ip daddr . udp dport @udp4 drop
    meta ipsec missing ip6 saddr . ip6 daddr . udp dport @udp6 drop
    meta ipsec missing meta l4proto gre ip saddr . ip daddr @gre4 drop
    meta ipsec missing meta l4proto gre ip6 saddr . ip6 daddr @gre6 drop
    update @esp4 { ip saddr . ip daddr . esp spi }
    update @esp6 { ip6 saddr . ip6 daddr . esp spi }
  }
}
";

fn set_of(g: &Guard) -> &'static str {
    match (g.remote, g.proto) {
        (IpAddr::V4(_), Proto::Udp(_)) => "udp4",
        (IpAddr::V6(_), Proto::Udp(_)) => "udp6",
        (IpAddr::V4(_), Proto::Gre) => "gre4",
        (IpAddr::V6(_), Proto::Gre) => "gre6",
    }
}

fn element(g: &Guard) -> String {
    match g.proto {
        Proto::Udp(port) => format!("{} . {} . {port}", g.remote, g.local),
        Proto::Gre => format!("{} . {}", g.remote, g.local),
    }
}

/// The `nft -f -` script for one guard action: one `delete element` and one `add element`
/// command per set (nft applies the whole script as one transaction).
pub fn script(create: bool, add: &[Guard], del: &[Guard]) -> String {
    let mut s = String::new();
    if create {
        s.push_str(SKELETON);
    }
    for (verb, list) in [("delete", del), ("add", add)] {
        let mut by_set: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for g in list {
            by_set.entry(set_of(g)).or_default().push(element(g));
        }
        for (set, elements) in by_set {
            let _ = writeln!(
                s,
                "{verb} element inet {TABLE} {set} {{ {} }}",
                elements.join(", ")
            );
        }
    }
    s
}

/// What `nft -j list table inet ovs_ipsec` shows: the guards, and the ESP recently received
/// as (source, destination, SPI). Elements we cannot read (added by hand in some other shape)
/// are skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub guards: BTreeSet<Guard>,
    pub esp_seen: BTreeSet<SaId>,
}

pub fn parse(json: &str) -> Result<Listing, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("unreadable nft output: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("unreadable nft output: no nftables array")?;
    let mut out = Listing::default();
    for set in items.iter().filter_map(|i| i.get("set")) {
        let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
        let elems = set.get("elem").and_then(Value::as_array);
        for e in elems.into_iter().flatten() {
            // Elements with a timeout are wrapped: {"elem": {"val": {"concat": ...}, ...}}.
            let val = e.get("elem").and_then(|w| w.get("val")).unwrap_or(e);
            let parts = val.get("concat").and_then(Value::as_array);
            let ip = |i: usize| -> Option<IpAddr> { parts?.get(i)?.as_str()?.parse().ok() };
            let int = |i: usize| parts.and_then(|p| p.get(i)).and_then(Value::as_u64);
            let (Some(remote), Some(local)) = (ip(0), ip(1)) else {
                continue;
            };
            let proto = match name {
                "udp4" | "udp6" => int(2).and_then(|p| u16::try_from(p).ok()).map(Proto::Udp),
                "gre4" | "gre6" => Some(Proto::Gre),
                "esp4" | "esp6" => {
                    if let Some(spi) = int(2).and_then(|s| u32::try_from(s).ok()) {
                        out.esp_seen.insert(SaId {
                            src: remote,
                            dst: local,
                            spi,
                        });
                    }
                    None
                }
                _ => None,
            };
            if let Some(proto) = proto {
                out.guards.insert(Guard {
                    remote,
                    local,
                    proto,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(remote: &str, local: &str, proto: Proto) -> Guard {
        Guard {
            remote: remote.parse().unwrap(),
            local: local.parse().unwrap(),
            proto,
        }
    }

    #[test]
    fn scripts_name_the_right_set_and_element() {
        let s = script(
            false,
            &[
                g("2001:db8::2", "2001:db8::1", Proto::Udp(6081)),
                g("192.0.2.3", "192.0.2.1", Proto::Udp(4789)),
                g("2001:db8::3", "2001:db8::1", Proto::Udp(4789)),
            ],
            &[g("192.0.2.2", "192.0.2.1", Proto::Gre)],
        );
        assert_eq!(
            s,
            "delete element inet ovs_ipsec gre4 { 192.0.2.2 . 192.0.2.1 }\n\
             add element inet ovs_ipsec udp4 { 192.0.2.3 . 192.0.2.1 . 4789 }\n\
             add element inet ovs_ipsec udp6 { 2001:db8::2 . 2001:db8::1 . 6081, \
             2001:db8::3 . 2001:db8::1 . 4789 }\n"
        );
        assert!(script(true, &[], &[]).contains("priority raw"));
    }

    #[test]
    fn parses_nft_json_elements() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "ovs_ipsec"}},
          {"set": {"name": "udp4", "elem": [{"concat": ["192.0.2.2", "192.0.2.1", 6081]}]}},
          {"set": {"name": "gre6", "elem": [{"concat": ["2001:db8::2", "2001:db8::1"]}]}},
          {"set": {"name": "gre4"}}, {"set": {"name": "other", "elem": [{"concat": ["1.1.1.1", "1.1.1.2"]}]}},
          {"set": {"name": "esp4", "elem": [{"elem": {"val": {"concat": ["192.0.2.2", "192.0.2.1", 4660]}, "timeout": 10, "expires": 4}}]}}]}"#;
        let got = parse(json).unwrap();
        assert_eq!(
            got.guards,
            BTreeSet::from([
                g("192.0.2.2", "192.0.2.1", Proto::Udp(6081)),
                g("2001:db8::2", "2001:db8::1", Proto::Gre)
            ])
        );
        assert_eq!(
            got.esp_seen,
            BTreeSet::from([SaId {
                src: "192.0.2.2".parse().unwrap(),
                dst: "192.0.2.1".parse().unwrap(),
                spi: 0x1234
            }])
        );
        assert!(parse("not json").is_err());
    }
}
