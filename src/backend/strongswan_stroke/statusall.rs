//! Parser for `ipsec statusall` (stroke), pure.
//!
//! The Python monitor split each status line at the first `:` and took the interface name with
//! a greedy regex, so `vx1-in-1{1}` parsed as interface `vx1-in`: every vxlan/geneve SA looked
//! outdated and was torn down on each refresh (ovs-issues#355). We never guess a name from a
//! pattern here: every entry keeps its exact connection name and its `{n}` (CHILD_SA) or `[n]`
//! (IKE_SA) unique id, and callers compare names with the names they rendered.
//!
//! The output is grouped in sections that start at column 0 (`Connections:`,
//! `Shunted Connections:`, `Routed Connections:`, `Security Associations (...)`); each entry
//! line is `<name>[<id>]: <text>` or `<name>{<id>}: <text>`, the first line of an entry carries
//! its state and the following ones with the same token add details. charon merges connections
//! with the same IKE parameters into one peer configuration, listed as one header line followed
//! by `child:` lines, and an IKE_SA is named after that peer configuration, not after each child.

use std::collections::{BTreeMap, BTreeSet};

/// One CHILD_SA (`name{id}`) under an IKE_SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    pub name: String,
    pub id: u32,
    /// The state line after the `name{id}:` token, trimmed.
    pub line: String,
}

/// One IKE_SA (`name[id]`) and the CHILD_SAs listed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSa {
    pub name: String,
    pub id: u32,
    pub line: String,
    pub children: Vec<ChildSa>,
}

impl IkeSa {
    /// `ESTABLISHED`, `CONNECTING`, `REKEYING`, ...: the first word of the line.
    pub fn state(&self) -> &str {
        first_word(&self.line)
    }

    pub fn token(&self) -> String {
        format!("{}[{}]", self.name, self.id)
    }
}

impl ChildSa {
    /// `INSTALLED`, `INSTALLING`, `REKEYING`, ...: the first word of the line.
    pub fn state(&self) -> &str {
        first_word(&self.line)
    }

    pub fn token(&self) -> String {
        format!("{}{{{}}}", self.name, self.id)
    }
}

/// What charon reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Peer configuration name → names of its child configurations (the connections loaded).
    pub peers: BTreeMap<String, Vec<String>>,
    /// Connections with trap policies installed (`auto=route`) or drop shunts.
    pub routed: BTreeSet<String>,
    pub sas: Vec<IkeSa>,
}

impl Status {
    /// Every loaded connection (child configuration) name.
    pub fn loaded(&self) -> BTreeSet<&str> {
        self.peers.values().flatten().map(String::as_str).collect()
    }

    /// The peer configuration a connection was merged into.
    pub fn peer_of(&self, conn: &str) -> Option<&str> {
        self.peers
            .iter()
            .find(|(_, children)| children.iter().any(|c| c == conn))
            .map(|(p, _)| p.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Connections,
    Shunted,
    Routed,
    Sas,
}

/// A parsed entry token: `name`, and `{id}` / `[id]` when present.
enum Token<'a> {
    Plain(&'a str),
    Child(&'a str, u32),
    Ike(&'a str, u32),
}

/// Splits `  name{1}:  TEXT` into its token and text. Connection names never contain `:`,
/// `{` or `[` (the interface-name grammar forbids them), so the first `:` ends the token.
fn entry(line: &str) -> Option<(Token<'_>, &str)> {
    let (token, text) = line.trim_start().split_once(':')?;
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    let text = text.trim();
    let id = |open: char, close: char| -> Option<(&str, u32)> {
        let inner = token.strip_suffix(close)?;
        let (name, id) = inner.rsplit_once(open)?;
        Some((name, id.parse().ok()?))
    };
    if let Some((name, id)) = id('{', '}') {
        Some((Token::Child(name, id), text))
    } else if let Some((name, id)) = id('[', ']') {
        Some((Token::Ike(name, id), text))
    } else {
        Some((Token::Plain(token), text))
    }
}

fn first_word(text: &str) -> &str {
    text.split([',', ' ']).next().unwrap_or_default()
}

/// Parses `ipsec statusall` (or `ipsec status`) output.
pub fn parse(out: &str) -> Status {
    parse_in(out, |_| true)
}

/// Each entry line of `out` with the section it is in.
fn entries(out: &str) -> impl Iterator<Item = (Section, Token<'_>, &str)> {
    let mut section = Section::Other;
    out.lines().filter_map(move |line| {
        if !line.starts_with(' ') && !line.is_empty() {
            let new = if line.starts_with("Connections:") {
                Some(Section::Connections)
            } else if line.starts_with("Shunted Connections:") {
                Some(Section::Shunted)
            } else if line.starts_with("Routed Connections:") {
                Some(Section::Routed)
            } else if line.starts_with("Security Associations") {
                Some(Section::Sas)
            } else {
                None
            };
            if let Some(s) = new {
                section = s;
                return None;
            }
            // Long connection names are not indented: only a known header changes section.
        }
        let (token, text) = entry(line)?;
        Some((section, token, text))
    })
}

/// The peer configuration entries of the `Connections:` section: each header line's name,
/// and each `child:` line's name with the peer configuration it belongs to (the last header;
/// none before the first). A header repeating the last one (its `local:`, `remote:` lines)
/// adds nothing.
fn peer_entries<'a>(out: &'a str) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
    let mut last: Option<&str> = None;
    entries(out).filter_map(move |(section, token, text)| match (section, token) {
        (Section::Connections, Token::Plain(name)) if text.starts_with("child:") => {
            last.map(|peer| (peer, Some(name)))
        }
        (Section::Connections, Token::Plain(name)) if last != Some(name) => {
            last = Some(name);
            Some((name, None))
        }
        _ => None,
    })
}

/// An IKE_SA as it is read, borrowing from the output.
struct RawIke<'a> {
    name: &'a str,
    id: u32,
    text: &'a str,
    children: Vec<(&'a str, u32, &'a str)>,
}

impl RawIke<'_> {
    fn owned(&self) -> IkeSa {
        IkeSa {
            name: self.name.to_owned(),
            id: self.id,
            line: self.text.to_owned(),
            children: (self.children.iter())
                .map(|&(name, id, text)| ChildSa {
                    name: name.to_owned(),
                    id,
                    line: text.to_owned(),
                })
                .collect(),
        }
    }
}

/// [`parse`], keeping only what concerns the connections `keep` accepts: a peer configuration
/// is kept with all its children when one of them (or the peer itself) is accepted, an IKE_SA
/// with all its CHILD_SAs when it, one of them or its kept peer configuration is (an IKE_SA is
/// named after the peer configuration, not after each connection merged into it), so that
/// whatever is decided about a kept entry (e.g. "every CHILD_SA of this IKE_SA is outdated")
/// sees the whole group.
///
/// The output is scanned twice, as borrowed slices: once to decide which peer configurations
/// are kept (a name listed in more than one place is one peer configuration: decided on all
/// of it), then to copy only what is kept, an IKE_SA as soon as its last line is read. A pass
/// over a few tunnels so holds charon's output and what it keeps, not a copy of every entry;
/// at 10,000 tunnels the borrowed index of every entry cost more than the output itself.
pub fn parse_in(out: &str, keep: impl Fn(&str) -> bool) -> Status {
    let mut kept_peers: BTreeSet<&str> = BTreeSet::new();
    for (peer, kid) in peer_entries(out) {
        if keep(kid.unwrap_or(peer)) {
            kept_peers.insert(peer);
        }
    }
    let mut st = Status::default();
    for (peer, kid) in peer_entries(out).filter(|(p, _)| kept_peers.contains(p)) {
        let kids = match st.peers.get_mut(peer) {
            Some(kids) => kids,
            None => st.peers.entry(peer.to_owned()).or_default(),
        };
        kids.extend(kid.map(str::to_owned));
    }
    // The IKE_SA being read; kept or dropped when the next one starts.
    let mut ike: Option<RawIke<'_>> = None;
    let wanted = |ike: &RawIke<'_>| {
        keep(ike.name)
            || kept_peers.contains(ike.name)
            || ike.children.iter().any(|(n, _, _)| keep(n))
    };
    for (section, token, text) in entries(out) {
        match (section, token) {
            (Section::Shunted, Token::Plain(name)) | (Section::Routed, Token::Child(name, _))
                if keep(name) && !st.routed.contains(name) =>
            {
                st.routed.insert(name.to_owned());
            }
            (Section::Sas, Token::Ike(name, id)) => {
                let known = ike.as_ref().is_some_and(|s| s.name == name && s.id == id);
                if !known {
                    let done = ike.replace(RawIke {
                        name,
                        id,
                        text,
                        children: Vec::new(),
                    });
                    st.sas.extend(done.filter(|d| wanted(d)).map(|d| d.owned()));
                }
            }
            (Section::Sas, Token::Child(name, id)) => {
                if let Some(ike) = ike.as_mut() {
                    let known = ike.children.iter().any(|(n, i, _)| *n == name && *i == id);
                    if !known {
                        ike.children.push((name, id, text));
                    }
                }
            }
            _ => {}
        }
    }
    st.sas.extend(ike.filter(|d| wanted(d)).map(|d| d.owned()));
    st
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Real charon 5.9.8 output (two network namespaces, PSK; the CHILD_SAs come from the
    /// QEMU run where ESP works) with a shunt and an IKE_SA shared by two tunnels.
    pub const SAMPLE: &str = "\
Status of IKE charon daemon (strongSwan 5.9.8, Linux 6.18.44, x86_64):
  uptime: 4 seconds, since Nov 22 05:22:28 2026
Listening IP addresses:
  192.0.2.1
Connections:
    tun-in-1:  %any...192.0.2.2  IKEv2
    tun-in-1:   local:  uses pre-shared key authentication
    tun-in-1:   remote: [192.0.2.2] uses pre-shared key authentication
    tun-in-1:   child:  dynamic[udp/4789] === dynamic[udp] TRANSPORT
   tun-out-1:   child:  dynamic[udp] === dynamic[udp/4789] TRANSPORT
      gre9-1:   child:  dynamic[gre] === dynamic[gre] TRANSPORT
prevent_unencrypted_gre:  %any...%any  IKEv2
prevent_unencrypted_gre:   local:  uses public key authentication
prevent_unencrypted_gre:   child:  dynamic[gre] === dynamic DROP
Shunted Connections:
prevent_unencrypted_gre:  dynamic[gre] === dynamic DROP
Routed Connections:
      gre9-1{3}:  ROUTED, TRANSPORT, reqid 3
      gre9-1{3}:   192.0.2.1/32[gre] === 192.0.2.2/32[gre]
   tun-out-1{2}:  ROUTED, TRANSPORT, reqid 2
    tun-in-1{1}:  ROUTED, TRANSPORT, reqid 1
Security Associations (1 up, 0 connecting):
    tun-in-1[1]: ESTABLISHED 8 seconds ago, 192.0.2.1[192.0.2.1]...192.0.2.2[192.0.2.2]
    tun-in-1[1]: IKEv2 SPIs: dfbc520cf6f59dfb_i* e232b9f1d8c52f2f_r, pre-shared key reauthentication in 2 hours
   tun-out-1{3}:  INSTALLED, TRANSPORT, reqid 2, ESP SPIs: ce04275e_i c41b58b3_o
   tun-out-1{3}:   192.0.2.1/32[udp] === 192.0.2.2/32[udp/4789]
    tun-in-1{4}:  INSTALLED, TRANSPORT, reqid 1, ESP SPIs: c0dc3410_i cb107296_o
    old-in-1[2]: CONNECTING, 192.0.2.1[%any]...192.0.2.3[%any]
";

    /// Found by the `stroke_statusall` fuzz target: a peer configuration listed in two places
    /// was kept by a filtered parse with only the children of the place that matched, so a
    /// scoped pass saw other connections loaded than a full one.
    #[test]
    fn a_peer_listed_twice_is_kept_whole() {
        let out = "Connections:\n\
                   \x20   peer-a:  %any...192.0.2.2  IKEv2\n\
                   \x20   peer-a:   child:  dynamic[gre] === dynamic[gre] TRANSPORT\n\
                   \x20   gre9-1:   child:  dynamic[gre] === dynamic[gre] TRANSPORT\n\
                   \x20   peer-b:  %any...192.0.2.3  IKEv2\n\
                   \x20   peer-a:  %any...192.0.2.2  IKEv2\n\
                   \x20 tun-in-4:   child:  dynamic[udp/4789] === dynamic[udp] TRANSPORT\n";
        let all = parse(out);
        assert_eq!(all.peers["peer-a"], ["peer-a", "gre9-1", "tun-in-4"]);
        for kept in ["gre9-1", "tun-in-4", "peer-a"] {
            let some = parse_in(out, |n| n == kept);
            assert_eq!(some.peers.get("peer-a"), all.peers.get("peer-a"), "{kept}");
            assert!(!some.peers.contains_key("peer-b"));
        }
    }

    #[test]
    fn in_out_names_are_kept_exactly() {
        let st = parse(SAMPLE);
        assert_eq!(
            st.peers["tun-in-1"],
            vec!["tun-in-1", "tun-out-1", "gre9-1"]
        );
        assert_eq!(st.peer_of("gre9-1"), Some("tun-in-1"));
        assert!(st.loaded().contains("prevent_unencrypted_gre"));
        assert_eq!(
            st.routed.iter().map(String::as_str).collect::<Vec<_>>(),
            ["gre9-1", "prevent_unencrypted_gre", "tun-in-1", "tun-out-1"]
        );
        assert_eq!(st.sas.len(), 2);
        let ike = &st.sas[0];
        assert_eq!(
            (ike.token().as_str(), ike.state()),
            ("tun-in-1[1]", "ESTABLISHED")
        );
        let kids: Vec<_> = ike
            .children
            .iter()
            .map(|c| (c.token(), c.state()))
            .collect();
        assert_eq!(
            kids,
            [
                ("tun-out-1{3}".to_string(), "INSTALLED"),
                ("tun-in-1{4}".to_string(), "INSTALLED")
            ]
        );
        assert_eq!(st.sas[1].state(), "CONNECTING");
        assert!(st.sas[1].children.is_empty());
    }

    #[test]
    fn a_filtered_parse_keeps_whole_groups_of_the_accepted_connections() {
        // gre9-1 was merged into tun-in-1's peer configuration; its CHILD_SA is not up.
        let st = parse_in(SAMPLE, |c| c == "gre9-1");
        assert_eq!(
            st.peers,
            parse(SAMPLE)
                .peers
                .into_iter()
                .filter(|(p, _)| p == "tun-in-1")
                .collect()
        );
        assert_eq!(st.routed.iter().collect::<Vec<_>>(), ["gre9-1"]);
        // The IKE_SA of its peer configuration is what says it is being negotiated.
        assert_eq!(st.sas, parse(SAMPLE).sas[..1]);
        // tun-out-1's CHILD_SA brings its whole IKE_SA, with tun-in-1's CHILD_SA.
        let st = parse_in(SAMPLE, |c| c == "tun-out-1");
        assert_eq!(st.sas, parse(SAMPLE).sas[..1]);
        let st = parse_in(SAMPLE, |c| c == "old-in-1");
        assert_eq!(st.sas, parse(SAMPLE).sas[1..]);
        assert!(st.peers.is_empty() && st.routed.is_empty());
        assert_eq!(parse_in(SAMPLE, |_| true), parse(SAMPLE));
    }

    #[test]
    fn charon_not_answering_gives_nothing() {
        assert_eq!(parse(""), Status::default());
        let st = parse("Security Associations (0 up, 0 connecting):\n  none\n");
        assert!(st.sas.is_empty());
    }
}
