//! The packets `diagnose::nft` evaluates rules against, and the evaluation of one match's
//! right-hand side (values, prefixes, ranges) in three-valued logic.

use std::net::IpAddr;

use serde_json::Value;

/// Three-valued truth of a match against a packet we only partly know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tri {
    Yes,
    No,
    Maybe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L4 {
    Udp,
    Gre,
}

/// A packet of the tunnel; `None` fields are unknown.
#[derive(Debug, Clone, Copy)]
pub(super) struct Packet {
    pub(super) inbound: bool,
    pub(super) l4: L4,
    pub(super) saddr: Option<IpAddr>,
    pub(super) daddr: Option<IpAddr>,
    pub(super) sport: Option<u16>,
    pub(super) dport: Option<u16>,
}

impl Packet {
    pub(super) fn v6(&self) -> bool {
        self.saddr.or(self.daddr).is_some_and(|a| a.is_ipv6())
    }
}

/// What a match reads from the packet.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field {
    Addr(Option<IpAddr>),
    Port(Option<u16>),
    Proto(L4),
    Nfproto(bool),
}

impl Field {
    /// Whether one set element (value, prefix or range) holds for this field.
    pub(super) fn test(&self, v: &Value) -> Result<Tri, String> {
        let v = v.get("elem").and_then(|e| e.get("val")).unwrap_or(v);
        match self {
            Field::Addr(None) | Field::Port(None) => Ok(Tri::Maybe),
            Field::Addr(Some(a)) => {
                if let Some(s) = v.as_str() {
                    let ip: IpAddr = s.parse().map_err(|_| format!("the address '{s}'"))?;
                    Ok(tri(ip == *a))
                } else if let Some(pfx) = v.get("prefix") {
                    let ip: IpAddr = pfx["addr"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or("a prefix")?;
                    let len = pfx["len"].as_u64().ok_or("a prefix")? as u32;
                    Ok(tri(in_prefix(*a, ip, len)))
                } else if let Some([lo, hi]) =
                    v.get("range").and_then(Value::as_array).map(Vec::as_slice)
                {
                    let lo: IpAddr = lo.as_str().and_then(|s| s.parse().ok()).ok_or("a range")?;
                    let hi: IpAddr = hi.as_str().and_then(|s| s.parse().ok()).ok_or("a range")?;
                    Ok(tri(lo.is_ipv6() == a.is_ipv6() && lo <= *a && *a <= hi))
                } else {
                    Err("an address element".to_owned())
                }
            }
            Field::Port(Some(port)) => {
                if let Some(n) = v.as_u64() {
                    Ok(tri(n == u64::from(*port)))
                } else if let Some([lo, hi]) =
                    v.get("range").and_then(Value::as_array).map(Vec::as_slice)
                {
                    let (lo, hi) = (lo.as_u64().ok_or("a range")?, hi.as_u64().ok_or("a range")?);
                    Ok(tri((lo..=hi).contains(&u64::from(*port))))
                } else {
                    Err("a port element".to_owned())
                }
            }
            Field::Proto(l4) => {
                let is = match (v.as_str(), v.as_u64()) {
                    (Some("udp"), _) | (_, Some(17)) => L4::Udp == *l4,
                    (Some("gre"), _) | (_, Some(47)) => L4::Gre == *l4,
                    (Some(_), _) | (_, Some(_)) => false,
                    _ => return Err("a protocol element".to_owned()),
                };
                Ok(tri(is))
            }
            Field::Nfproto(v6) => match v.as_str() {
                Some("ipv4") => Ok(tri(!v6)),
                Some("ipv6") => Ok(tri(*v6)),
                _ => Err("meta nfproto".to_owned()),
            },
        }
    }
}

/// A match's left side as nft writes it (`ip saddr`, `meta iifname`, `ct state`).
pub(super) fn describe(left: &Value) -> String {
    let Some((kind, body)) = left.as_object().and_then(|o| o.iter().next()) else {
        return "an expression".to_owned();
    };
    let part = |k: &str| body.get(k).and_then(Value::as_str);
    match (part("protocol"), part("field"), part("key")) {
        (Some(p), Some(f), _) => format!("{p} {f}"),
        (_, _, Some(k)) => format!("{kind} {k}"),
        _ => kind.clone(),
    }
}

pub(super) fn tri(b: bool) -> Tri {
    if b { Tri::Yes } else { Tri::No }
}

fn in_prefix(a: IpAddr, net: IpAddr, len: u32) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}
