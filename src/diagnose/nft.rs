//! `nat-on-tunnel-port` and `firewall-blocks-ike`: does the host's nftables ruleset rewrite
//! the tunnel's traffic or drop its IKE exchange?
//!
//! Reads `nft -j list ruleset` (rules added through iptables-nft appear there too) and walks,
//! for each packet the tunnel sends or receives, every base chain whose hook sees it
//! (outbound: `output`, `postrouting`; inbound: `prerouting`, `input`), following `jump` and
//! `goto` into regular chains. The packets are: the tunnel's own traffic (UDP to its
//! `dst_port`, or GRE) to and from the peer, for NAT rules (`snat`, `dnat`, `masquerade`,
//! `redirect`) in `nat` chains; and IKE (UDP 500 and 4500, both ports) to and from the peer,
//! for `drop` and `reject` rules and for a base chain whose policy is `drop`. An `accept`
//! that surely matches ends the walk of that base chain, so an allow rule for IKE before a
//! catch-all drop clears it.
//!
//! Understood matches: `ip`/`ip6` `saddr`/`daddr` (addresses, prefixes, ranges, anonymous
//! sets and named sets whose elements the ruleset lists), `ip protocol`, `ip6 nexthdr`,
//! `meta l4proto`, `meta nfproto`, `udp`/`tcp`/`th` `sport`/`dport` (numbers, ranges, sets),
//! with `==`, `!=` and the orderings. Every other match (interfaces, conntrack state, marks,
//! `xt` matches of iptables extensions, ...) cannot be evaluated from the tunnel's
//! configuration: a rule that would hit only if such a match holds is reported as "may
//! match" at warning, naming what was not understood; a finding where every match is
//! understood is an error. Tables of the `bridge`, `netdev` and `arp` families do not see
//! the host's own traffic and are skipped, and so is our own guard table (`inet ovs_ipsec`,
//! the static backend's, see `backend::xfrm::nft`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use self::matching::{Field, L4, Packet, Tri, describe, tri};
use super::{Code, Finding, Severity};
use crate::backend::command::{Cmd, CommandError};
use crate::backend::xfrm::nft::TABLE as OWN_TABLE;
use crate::model::TunnelConf;

#[derive(Debug, Error)]
pub enum NftError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("nft -j list ruleset failed: {0}")]
    Failed(String),
    #[error("cannot parse the nft JSON ruleset: {0}")]
    Parse(String),
}

#[derive(Debug, Deserialize)]
struct Document {
    nftables: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct Chain {
    family: String,
    table: String,
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    hook: Option<String>,
    policy: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Rule {
    family: String,
    table: String,
    chain: String,
    handle: Option<u64>,
    comment: Option<String>,
    #[serde(default)]
    expr: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct Set {
    family: String,
    table: String,
    name: String,
    #[serde(default)]
    elem: Vec<Value>,
}

/// The ruleset, as `nft -j list ruleset` gives it.
#[derive(Debug, Default)]
pub struct Ruleset {
    chains: Vec<Chain>,
    rules: HashMap<(String, String, String), Vec<Rule>>,
    sets: HashMap<(String, String, String), Vec<Value>>,
}

impl Ruleset {
    pub fn parse(json: &str) -> Result<Self, NftError> {
        let doc: Document =
            serde_json::from_str(json).map_err(|e| NftError::Parse(e.to_string()))?;
        let mut rs = Ruleset::default();
        for obj in doc.nftables {
            let parse_err = |e: serde_json::Error| NftError::Parse(e.to_string());
            if let Some(c) = obj.get("chain") {
                rs.chains.push(Chain::deserialize(c).map_err(parse_err)?);
            } else if let Some(r) = obj.get("rule") {
                let r = Rule::deserialize(r).map_err(parse_err)?;
                rs.rules
                    .entry((r.family.clone(), r.table.clone(), r.chain.clone()))
                    .or_default()
                    .push(r);
            } else if let Some(s) = obj.get("set") {
                let s = Set::deserialize(s).map_err(parse_err)?;
                rs.sets.insert((s.family, s.table, s.name), s.elem);
            }
        }
        Ok(rs)
    }
}

/// Reads the ruleset with `nft -j list ruleset`.
pub async fn read(timeout: Duration) -> Result<Ruleset, NftError> {
    let out = Cmd::new("nft", "read the nftables ruleset", timeout)
        .args(["-j", "list", "ruleset"])
        .collect_stdout()
        .run()
        .await?;
    if out.code != 0 {
        return Err(NftError::Failed(out.stderr.trim().to_owned()));
    }
    Ruleset::parse(&out.stdout)
}

/// What a walk found: the rule (or chain policy) and whether it surely applies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    place: String,
    what: String,
    unknown: BTreeSet<String>,
}

/// The tunnel's addresses: `local` is `options:local_ip` or the route's source address.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub local: Option<IpAddr>,
    pub remote: IpAddr,
}

/// `nat-on-tunnel-port` and `firewall-blocks-ike` findings for `conf` in `ruleset`.
pub fn check(conf: &TunnelConf, ends: Endpoints, ruleset: &Ruleset) -> Vec<Finding> {
    let (l4, port) = match conf.udp_port() {
        Some(p) => (L4::Udp, Some(p)),
        None => (L4::Gre, None),
    };
    let tunnel = [
        packet(false, l4, ends, None, port),
        packet(true, l4, ends, None, port),
    ];
    let mut ike = Vec::new();
    for p in [500, 4500] {
        ike.push(packet(false, L4::Udp, ends, Some(p), Some(p)));
        ike.push(packet(true, L4::Udp, ends, Some(p), Some(p)));
    }
    let mut findings = Vec::new();
    let what = match port {
        Some(p) => format!("the tunnel's UDP port {p}"),
        None => "the tunnel's GRE packets".to_owned(),
    };
    for hit in hits(ruleset, &tunnel, Purpose::Nat) {
        findings.push(finding(
            Code::NatOnTunnelPort,
            &hit,
            format!("{} rewrites {what} to or from {}", hit.what, ends.remote),
            format!(
                "exempt the peer {} from this NAT rule (e.g. add 'ip daddr != {}' or an earlier 'accept' in that nat chain); see nft -a list ruleset",
                ends.remote, ends.remote
            ),
        ));
    }
    for hit in hits(ruleset, &ike, Purpose::Filter) {
        findings.push(finding(
            Code::FirewallBlocksIke,
            &hit,
            format!(
                "{} drops IKE (UDP 500/4500) to or from {}",
                hit.what, ends.remote
            ),
            format!(
                "accept UDP 500 and 4500 to and from {} before this rule; see nft -a list ruleset",
                ends.remote
            ),
        ));
    }
    findings
}

fn finding(code: Code, hit: &Hit, message: String, hint: String) -> Finding {
    if hit.unknown.is_empty() {
        return Finding::new(
            code,
            Severity::Error,
            format!("{message} ({})", hit.place),
            hint,
        );
    }
    let unknown: Vec<&str> = hit.unknown.iter().map(String::as_str).collect();
    Finding::new(
        code,
        Severity::Warning,
        format!(
            "{message} if its conditions hold ({}; may match: cannot evaluate {})",
            hit.place,
            unknown.join(", ")
        ),
        hint,
    )
}

fn packet(inbound: bool, l4: L4, e: Endpoints, sport: Option<u16>, dport: Option<u16>) -> Packet {
    let (saddr, daddr) = if inbound {
        (Some(e.remote), e.local)
    } else {
        (e.local, Some(e.remote))
    };
    Packet {
        inbound,
        l4,
        saddr,
        daddr,
        sport,
        dport,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Nat,
    Filter,
}

/// Every hit over `packets`, one per rule or chain policy, the surest kept.
fn hits(rs: &Ruleset, packets: &[Packet], purpose: Purpose) -> Vec<Hit> {
    let mut by_place: BTreeMap<String, Hit> = BTreeMap::new();
    for chain in &rs.chains {
        let Some(hook) = chain.hook.as_deref() else {
            continue;
        };
        if !matches!(chain.family.as_str(), "ip" | "ip6" | "inet")
            || (chain.family == "inet" && chain.table == OWN_TABLE)
        {
            continue;
        }
        let is_nat = chain.kind.as_deref() == Some("nat");
        if is_nat != (purpose == Purpose::Nat) {
            continue;
        }
        for p in packets {
            let sees = match hook {
                "input" | "prerouting" => p.inbound,
                "output" | "postrouting" => !p.inbound,
                _ => false,
            };
            let family_ok = match chain.family.as_str() {
                "ip" => !p.v6(),
                "ip6" => p.v6(),
                _ => true,
            };
            if !(sees && family_ok) {
                continue;
            }
            let mut walk = Walk {
                rs,
                p,
                purpose,
                found: Vec::new(),
            };
            let end = walk.chain(&chain.family, &chain.table, &chain.name, BTreeSet::new(), 0);
            if let (Some(unknown), Some("drop")) = (end, chain.policy.as_deref()) {
                walk.found.push(Hit {
                    place: format!("chain {} {} {}", chain.family, chain.table, chain.name),
                    what: format!(
                        "the policy drop of chain {} {} {}, with no rule accepting it,",
                        chain.family, chain.table, chain.name
                    ),
                    unknown,
                });
            }
            for h in walk.found {
                by_place
                    .entry(h.place.clone())
                    .and_modify(|old| {
                        if h.unknown.len() < old.unknown.len() {
                            *old = h.clone();
                        }
                    })
                    .or_insert(h);
            }
        }
    }
    by_place.into_values().collect()
}

/// The statements a walk acts on; others (`counter`, `log`, `limit`, `meta set`, ...) are
/// passed over.
const VERDICTS: &[&str] = &[
    "accept",
    "drop",
    "reject",
    "snat",
    "dnat",
    "masquerade",
    "redirect",
    "jump",
    "goto",
    "return",
];

struct Walk<'a> {
    rs: &'a Ruleset,
    p: &'a Packet,
    purpose: Purpose,
    found: Vec<Hit>,
}

impl Walk<'_> {
    /// Walks one chain with the path's unknown conditions; `Some(unknown)` when the packet
    /// can fall off its end, `None` when a rule surely ended the walk.
    fn chain(
        &mut self,
        family: &str,
        table: &str,
        name: &str,
        mut path: BTreeSet<String>,
        depth: u32,
    ) -> Option<BTreeSet<String>> {
        if depth > 16 {
            return Some(path);
        }
        let key = (family.to_owned(), table.to_owned(), name.to_owned());
        let Some(rules) = self.rs.rules.get(&key) else {
            return Some(path);
        };
        for rule in rules {
            // The path's conditions plus this rule's matches that cannot be evaluated.
            let mut unknown = path.clone();
            let mut verdict = None;
            let mut holds = true;
            for e in &rule.expr {
                if let Some(m) = e.get("match") {
                    match self.eval(family, table, m) {
                        Ok(b) => holds = b,
                        Err(what) => {
                            unknown.insert(what);
                        }
                    }
                } else if e.get("xt").is_some() {
                    unknown.insert("an iptables extension (xt)".to_owned());
                } else if let Some(k) = e.as_object().and_then(|o| o.keys().next())
                    && VERDICTS.contains(&k.as_str())
                {
                    verdict = Some((k.clone(), e[k].clone()));
                }
                if !holds {
                    break;
                }
            }
            if !holds {
                continue;
            }
            let sure = unknown.len() == path.len();
            let Some((verb, arg)) = verdict else { continue };
            let place = format!(
                "table {family} {table} chain {name} handle {}{}",
                rule.handle.unwrap_or_default(),
                rule.comment
                    .as_deref()
                    .map(|c| format!(" comment {c:?}"))
                    .unwrap_or_default()
            );
            match (verb.as_str(), self.purpose) {
                ("accept", _) => {
                    if sure {
                        return None;
                    }
                    path.insert(format!(
                        "whether the accept rule (handle {}) takes it first",
                        rule.handle.unwrap_or_default()
                    ));
                }
                ("drop" | "reject", Purpose::Filter)
                | ("snat" | "dnat" | "masquerade" | "redirect", Purpose::Nat) => {
                    self.found.push(Hit {
                        place,
                        what: format!("the {verb} rule"),
                        unknown,
                    });
                    if sure {
                        return None;
                    }
                }
                ("jump" | "goto", _) => {
                    let Some(target) = arg.get("target").and_then(Value::as_str) else {
                        continue;
                    };
                    let end = self.chain(family, table, target, unknown, depth + 1);
                    if sure && (end.is_none() || verb == "goto") {
                        return None;
                    }
                }
                ("return", _) if sure => return Some(path),
                _ => {}
            }
        }
        Some(path)
    }

    /// Whether one `match` object holds; `Err(what)` when it cannot be evaluated.
    fn eval(&self, family: &str, table: &str, m: &Value) -> Result<bool, String> {
        let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
        let left = &m["left"];
        let right = &m["right"];
        let p = self.p;
        let field = if let Some(pl) = left.get("payload") {
            let proto = pl.get("protocol").and_then(Value::as_str).unwrap_or("");
            let field = pl.get("field").and_then(Value::as_str).unwrap_or("");
            match (proto, field) {
                ("ip", _) if p.v6() => return Ok(false),
                ("ip6", _) if !p.v6() => return Ok(false),
                ("ip" | "ip6", "saddr") => Field::Addr(p.saddr),
                ("ip" | "ip6", "daddr") => Field::Addr(p.daddr),
                ("ip", "protocol") | ("ip6", "nexthdr") => Field::Proto(p.l4),
                ("udp" | "tcp" | "th", "sport" | "dport") => {
                    if proto == "tcp" || p.l4 != L4::Udp {
                        return Ok(false);
                    }
                    Field::Port(if field == "sport" { p.sport } else { p.dport })
                }
                ("udp" | "tcp", _) => {
                    return if (proto == "udp") == (p.l4 == L4::Udp) {
                        Err(format!("{proto} {field}"))
                    } else {
                        Ok(false)
                    };
                }
                _ => return Err(describe(left)),
            }
        } else if let Some(meta) = left.get("meta") {
            match meta.get("key").and_then(Value::as_str).unwrap_or("") {
                "l4proto" => Field::Proto(p.l4),
                "nfproto" => Field::Nfproto(p.v6()),
                _ => return Err(describe(left)),
            }
        } else {
            return Err(describe(left));
        };
        let values = self
            .values(family, table, right)
            .map_err(|e| format!("{} {e}", describe(left)))?;
        let contains = values
            .iter()
            .map(|v| field.test(v))
            .try_fold(Tri::No, |acc, t| {
                t.map(|t| match (acc, t) {
                    (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
                    (Tri::Maybe, _) | (_, Tri::Maybe) => Tri::Maybe,
                    _ => Tri::No,
                })
            })?;
        let truth = match op {
            "==" => contains,
            "!=" => match contains {
                Tri::Yes => Tri::No,
                Tri::No => Tri::Yes,
                Tri::Maybe => Tri::Maybe,
            },
            "<" | ">" | "<=" | ">=" => {
                let (Field::Port(Some(port)), [Value::Number(n)]) = (&field, values.as_slice())
                else {
                    return Err(format!("a comparison '{op}'"));
                };
                let n = n.as_u64().unwrap_or(0);
                let port = u64::from(*port);
                let holds = match op {
                    "<" => port < n,
                    ">" => port > n,
                    "<=" => port <= n,
                    _ => port >= n,
                };
                tri(holds)
            }
            _ => return Err(format!("operator '{op}'")),
        };
        match truth {
            Tri::Yes => Ok(true),
            Tri::No => Ok(false),
            Tri::Maybe => Err(describe(left)),
        }
    }

    /// The right-hand values of a match: a list of elements (anonymous or named set).
    fn values(&self, family: &str, table: &str, right: &Value) -> Result<Vec<Value>, String> {
        if let Some(set) = right.get("set") {
            return Ok(set.as_array().cloned().unwrap_or_default());
        }
        if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
            let key = (family.to_owned(), table.to_owned(), name.to_owned());
            return self
                .rs
                .sets
                .get(&key)
                .cloned()
                .ok_or_else(|| format!("@{name} (its elements are not listed)"));
        }
        Ok(vec![right.clone()])
    }
}

#[path = "nft_match.rs"]
mod matching;

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
