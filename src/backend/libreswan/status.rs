//! Parsing of `ipsec status` (pluto's `whack --status`), v3 to v5.
//!
//! The lines that matter, with or without v4's `000 ` prefix:
//! - a connection is *loaded* when it has a description line, `"NAME": <address>…===…` or
//!   `…...…` (addresses may be IPv6, hence hex digits);
//! - a connection is *active* when an ESP SA exists for it: the state's SPI line
//!   `#N: "NAME"… esp.SPI@PEER …` (or `esp:` in older formats). An IKE SA alone, or a
//!   Child SA that the kernel refused (no ESP support), is not active;
//! - an IKE SA is established when a state line says `ESTABLISHED_IKE_SA` (v4 prints
//!   `STATE_V2_ESTABLISHED_IKE_SA`, v5 `ESTABLISHED_IKE_SA`) or IKEv1's `MAIN_R3`/`MAIN_I4`.
//!   pluto negotiates one IKE SA per peer and lists it under the conn that created it, so
//!   every conn to the same peer (the address after `...` in its description line) counts.
//! - a connection is *negotiating* when a state of it is not established: `#N: "NAME":500
//!   STATE …` with a state such as v4's `STATE_V2_PARENT_I1`/`_I2`/`_R1` or
//!   `STATE_V2_IKE_AUTH_CHILD_I0`, v5's `IKE_SA_INIT_I`/`IKE_AUTH_I`/`IKE_SA_INIT_R`/
//!   `NEW_CHILD_I1` (half-open IKE SAs, retransmitting or waiting for the peer, and Child
//!   SAs being negotiated). Established states say `ESTABLISHED` (IKEv2) or are IKEv1's
//!   final main/aggressive/quick mode states.
//!
//! Connection names never contain `"` (the model's interface-name grammar), so the quoted
//! name can be cut out without a regex.
//!
//! A pass over a few tunnels parses only their conns and those to the same peers (whose IKE
//! SA they share): the other lines are scanned as borrowed slices and dropped uncopied.

use std::collections::{BTreeMap, BTreeSet};

/// What `ipsec status` says about every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlutoStatus {
    pub loaded: BTreeSet<String>,
    pub active: BTreeSet<String>,
    /// Connections with an established IKE SA.
    pub ike_up: BTreeSet<String>,
    /// Connections with a negotiation in progress, with the state's name (the first seen).
    pub negotiating: BTreeMap<String, String>,
    /// Raw lines of the active connections, for `tunnels/show` (prefix stripped).
    pub active_lines: BTreeMap<String, Vec<String>>,
}

impl PlutoStatus {
    pub fn parse(text: &str) -> Self {
        Self::parse_in(text, |_| true)
    }

    /// [`PlutoStatus::parse`] of the conns `keep` accepts and of every conn to the same peer
    /// as one of them.
    pub fn parse_in(text: &str, keep: impl Fn(&str) -> bool) -> Self {
        let mut descriptions = Vec::new();
        let mut states = Vec::new();
        for raw in text.lines() {
            let line = raw.strip_prefix("000 ").unwrap_or(raw).trim_end();
            if let Some((name, after)) = loaded_conn(line) {
                descriptions.push((name, peer(after)));
            } else if let Some((name, rest)) = state_conn(line) {
                states.push((name, rest, line));
            }
        }
        let kept_peers: BTreeSet<&str> = descriptions
            .iter()
            .filter(|(name, _)| keep(name))
            .filter_map(|(_, p)| *p)
            .collect();
        let kept: BTreeSet<&str> = descriptions
            .iter()
            .filter(|(name, p)| keep(name) || p.is_some_and(|p| kept_peers.contains(p)))
            .map(|(name, _)| *name)
            .collect();
        let mut st = Self::default();
        let mut peers: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, p) in descriptions {
            if kept.contains(name) {
                st.loaded.insert(name.to_owned());
                peers.extend(p.map(|p| (name, p)));
            }
        }
        for (name, rest, line) in states {
            if !kept.contains(name) && !keep(name) {
                continue;
            }
            if has_esp_spi(rest) {
                st.active.insert(name.to_owned());
            }
            if let Some(state) = state_name(rest).filter(|s| !is_established(s)) {
                st.negotiating
                    .entry(name.to_owned())
                    .or_insert_with(|| state.to_owned());
            }
            if rest.contains("ESTABLISHED_IKE_SA")
                || rest.contains("MAIN_R3")
                || rest.contains("MAIN_I4")
            {
                st.ike_up.insert(name.to_owned());
            }
            if rest.contains("ESTABLISHED_CHILD_SA") || has_esp_spi(rest) {
                st.active_lines
                    .entry(name.to_owned())
                    .or_default()
                    .push(line.trim_start().to_owned());
            }
        }
        // Lines of a conn whose ESP SA did not show are not "active" lines.
        st.active_lines.retain(|c, _| st.active.contains(c));
        let up_peers: BTreeSet<&str> = st
            .ike_up
            .iter()
            .filter_map(|c| peers.get(c.as_str()).copied())
            .collect();
        for (conn, p) in peers {
            if up_peers.contains(p) {
                st.ike_up.insert(conn.to_owned());
            }
        }
        st
    }
}

/// `"NAME": <hex digit>…(=== or ...)…` → (NAME, the text after `": `).
fn loaded_conn(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('"')?;
    let (name, after) = rest.split_once("\": ")?;
    let first = after.chars().next()?;
    (first.is_ascii_hexdigit() && (after.contains("===") || after.contains("...")))
        .then_some((name, after))
}

/// The peer's address in a description: `…===LOCAL[id]...PEER[id]===…` (v4 and v5).
fn peer(description: &str) -> Option<&str> {
    let hosts = description.split("===").find(|s| s.contains("..."))?;
    let (_, remote) = hosts.split_once("...")?;
    remote
        .split(['[', '<', '{', ';', ' ', ','])
        .next()
        .filter(|p| !p.is_empty())
}

/// `#N: "NAME"<rest>` → (NAME, rest).
fn state_conn(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (serial, rest) = rest.split_once(": \"")?;
    if serial.is_empty() || !serial.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    rest.split_once('"')
}

/// The state in the rest of a state line: `:PORT STATE (…` → `STATE`. SPI lines have none.
fn state_name(rest: &str) -> Option<&str> {
    let (port, after) = rest.strip_prefix(':')?.split_once(' ')?;
    let state = after.split_whitespace().next()?;
    let well_formed = !port.is_empty()
        && port.chars().all(|c| c.is_ascii_digit())
        && state
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    well_formed.then_some(state)
}

/// IKEv2 states say so; IKEv1's established ones are the last of their exchange.
fn is_established(state: &str) -> bool {
    const V1_DONE: &[&str] = &[
        "MAIN_R3", "MAIN_I4", "AGGR_R2", "AGGR_I2", "QUICK_R2", "QUICK_I2",
    ];
    state.contains("ESTABLISHED") || V1_DONE.iter().any(|d| state.ends_with(d))
}

/// `esp.<hex>@` or `esp:<hex>@` somewhere in `s`.
fn has_esp_spi(s: &str) -> bool {
    s.match_indices("esp").any(|(i, _)| {
        let tail = &s[i + 3..];
        let mut chars = tail.chars();
        matches!(chars.next(), Some('.') | Some(':')) && {
            let hex: String = chars.clone().take_while(char::is_ascii_hexdigit).collect();
            !hex.is_empty() && tail[1 + hex.len()..].starts_with('@')
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_IKE_ONLY: &str =
        include_str!("../../../tests/golden/libreswan/status-v4-ike-only.txt");
    const V4_UP: &str = include_str!("../../../tests/golden/libreswan/status-v4-up.txt");
    const V5_UP: &str = include_str!("../../../tests/golden/libreswan/status-v5-up.txt");
    /// Real pluto 4.10 and 5.2 in two namespaces, the responder dropping IKE_AUTH requests:
    /// the initiator retransmits IKE_AUTH, the responder waits for it.
    const HALF_OPEN: [(&str, &str, &str); 4] = [
        (
            include_str!("../../../tests/golden/libreswan/status-v4-half-open-initiator.txt"),
            "STATE_V2_PARENT_I2",
            "v4 initiator",
        ),
        (
            include_str!("../../../tests/golden/libreswan/status-v4-half-open-responder.txt"),
            "STATE_V2_PARENT_R1",
            "v4 responder",
        ),
        (
            include_str!("../../../tests/golden/libreswan/status-v5-half-open-initiator.txt"),
            "IKE_AUTH_I",
            "v5 initiator",
        ),
        (
            include_str!("../../../tests/golden/libreswan/status-v5-half-open-responder.txt"),
            "IKE_SA_INIT_R",
            "v5 responder",
        ),
    ];

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn v4_ike_sa_without_child_is_loaded_not_active() {
        let st = PlutoStatus::parse(V4_IKE_ONLY);
        assert_eq!(st.loaded, set(&["tun-in-1", "tun-out-1"]));
        assert!(st.active.is_empty());
        assert_eq!(st.ike_up, set(&["tun-in-1", "tun-out-1"]));
    }

    #[test]
    fn v4_and_v5_esp_lines_make_conns_active() {
        for text in [V4_UP, V5_UP] {
            let st = PlutoStatus::parse(text);
            assert_eq!(st.loaded, set(&["gnv-in-1", "gnv-out-1", "v6-1"]), "{text}");
            assert_eq!(st.active, set(&["gnv-in-1", "gnv-out-1"]), "{text}");
            assert!(
                st.active_lines["gnv-in-1"]
                    .iter()
                    .any(|l| l.contains("esp."))
            );
        }
    }

    #[test]
    fn conns_to_a_peer_share_its_ike_sa() {
        // pluto 4.10 in a netns here: two tunnels to one peer, one IKE SA.
        let text = "000 \"gnv-in-1\": 192.0.2.1/32:UDP/6081===192.0.2.1...192.0.2.2===192.0.2.2/32:UDP/0-65535; unrouted; eroute owner: #0\n\
                    000 \"gnv-out-1\": 192.0.2.1/32:UDP/0-65535===192.0.2.1...192.0.2.2===192.0.2.2/32:UDP/6081; unrouted; eroute owner: #0\n\
                    000 \"tun-out-1\": 192.0.2.1/32:UDP/0-65535===192.0.2.1...192.0.2.2===192.0.2.2/32:UDP/4789; unrouted; eroute owner: #0\n\
                    000 \"other-1\": 192.0.2.1/32:GRE===192.0.2.1...192.0.2.9===192.0.2.9/32:GRE; unrouted; eroute owner: #0\n\
                    000 #2: \"tun-out-1\":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 28526s; newest; idle;\n";
        let st = PlutoStatus::parse(text);
        assert_eq!(st.ike_up, set(&["gnv-in-1", "gnv-out-1", "tun-out-1"]));
        // v5 prints protocols without the colon.
        let v5 = "\"a-1\": 192.0.2.1/32/UDP===192.0.2.1[@left]...2001:db8::2[@right]===2001:db8::2/128/UDP/4789; unrouted;";
        assert_eq!(
            loaded_conn(v5).and_then(|(_, d)| peer(d)),
            Some("2001:db8::2")
        );
    }

    #[test]
    fn half_open_ike_sas_are_negotiating_not_up() {
        for (text, state, what) in HALF_OPEN {
            let st = PlutoStatus::parse(text);
            assert_eq!(st.loaded, set(&["tun-out-1"]), "{what}");
            assert!(st.active.is_empty() && st.ike_up.is_empty(), "{what}");
            assert_eq!(
                st.negotiating.get("tun-out-1").map(String::as_str),
                Some(state),
                "{what}"
            );
        }
        // The first IKE_SA_INIT, unanswered (no pluto on the peer yet).
        for line in [
            "000 #1: \"a-1\":500 STATE_V2_PARENT_I1 (sent IKE_SA_INIT request); RETRANSMIT in 0s; idle;",
            "#1: \"a-1\":500 IKE_SA_INIT_I (sent IKE_SA_INIT request); RETRANSMIT in 0s; idle;",
        ] {
            assert!(
                PlutoStatus::parse(line).negotiating.contains_key("a-1"),
                "{line}"
            );
        }
    }

    #[test]
    fn established_sas_are_not_negotiating() {
        for text in [V4_IKE_ONLY, V4_UP, V5_UP] {
            let st = PlutoStatus::parse(text);
            // Only v6-1's unanswered IKE_SA_INIT in the "up" samples.
            assert!(
                st.negotiating.keys().all(|c| c == "v6-1"),
                "{:?}",
                st.negotiating
            );
        }
    }

    #[test]
    fn a_filtered_parse_keeps_the_conns_to_the_same_peer() {
        let text = "000 \"gnv-in-1\": 192.0.2.1/32:UDP/6081===192.0.2.1...192.0.2.2===192.0.2.2/32:UDP/0-65535; unrouted; eroute owner: #0\n\
                    000 \"tun-out-1\": 192.0.2.1/32:UDP/0-65535===192.0.2.1...192.0.2.2===192.0.2.2/32:UDP/4789; unrouted; eroute owner: #0\n\
                    000 \"other-1\": 192.0.2.1/32:GRE===192.0.2.1...192.0.2.9===192.0.2.9/32:GRE; unrouted; eroute owner: #0\n\
                    000 #2: \"tun-out-1\":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 28526s; newest; idle;\n";
        // gnv-in-1 shares the IKE SA that pluto lists under tun-out-1.
        let st = PlutoStatus::parse_in(text, |c| c == "gnv-in-1");
        assert_eq!(st.loaded, set(&["gnv-in-1", "tun-out-1"]));
        assert_eq!(st.ike_up, set(&["gnv-in-1", "tun-out-1"]));
        let st = PlutoStatus::parse_in(text, |c| c == "other-1");
        assert_eq!(st.loaded, set(&["other-1"]));
        assert!(st.ike_up.is_empty());
        for text in [V4_IKE_ONLY, V4_UP, V5_UP] {
            assert_eq!(
                PlutoStatus::parse_in(text, |_| true),
                PlutoStatus::parse(text)
            );
        }
    }

    #[test]
    fn garbage_is_ignored() {
        let st = PlutoStatus::parse("\"x\": nothing\n#a: \"y\" esp.1@2\n000 #1: \"z\" espx.1@\n");
        assert_eq!(st, PlutoStatus::default());
    }
}
