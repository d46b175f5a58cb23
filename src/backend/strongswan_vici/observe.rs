//! What charon holds, parsed from `list-conns` and `list-sas` events, plus what this monitor
//! loaded into the charon it is connected to (memory that is reset when charon changes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::creds::{CA_AUTHORITY, CredKey, Sha};
use crate::backend::vici::Message;

/// One loaded connection: its children and their modes (`TRANSPORT`, `DROP`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedConn {
    pub children: BTreeMap<String, String>,
}

/// A CHILD_SA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildSa {
    /// The child config name (our connection name).
    pub name: String,
    pub state: String,
    pub mode: String,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
}

/// An IKE_SA and its CHILD_SAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IkeSa {
    /// The connection (peer config) name.
    pub conn: String,
    pub state: String,
    pub local: String,
    pub remote: String,
    pub children: Vec<ChildSa>,
}

/// What this monitor loaded into the current charon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Connection name → digest of the `load-conn` body we sent.
    pub conns: BTreeMap<String, Sha>,
    /// Credential → digest of its content when loaded.
    pub creds: BTreeMap<CredKey, Sha>,
    /// `load-key` answers: key file → charon's key id, for `unload-key`.
    pub key_ids: BTreeMap<PathBuf, String>,
    /// CA bundle file → the ids of its members loaded as authorities.
    pub authorities: BTreeMap<PathBuf, BTreeSet<String>>,
    /// Whether charon's authorities were listed since we connected to it.
    pub authorities_listed: bool,
    /// Ids of our authorities (`ovs-ca-<id>`) charon held when we connected, left by an
    /// earlier run of the monitor, that no bundle has claimed yet: a bundle member among
    /// them is not loaded again, and the others are unloaded (see [`super::bundles`]).
    pub adoptable: BTreeSet<String>,
    /// Tunnel connection → [`Observed::clock`] of its last initiation (or decision to leave
    /// it to the peer).
    pub attempts: BTreeMap<String, Duration>,
}

/// The result of [`super::StrongSwanVici`]'s `observe`. The connections and our memory are
/// shared with the backend rather than copied on every observation (they hold every tunnel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub conns: Arc<BTreeMap<String, ObservedConn>>,
    pub sas: Vec<IkeSa>,
    pub loaded: Arc<Loaded>,
    /// Current digest of every credential file we loaded (`None`: unreadable now).
    pub files: BTreeMap<PathBuf, Option<Sha>>,
    /// Monotonic time of the observation, since the backend was created.
    pub clock: Duration,
    /// Connections without an IKE_SA that this end leaves to the peer, whose address is
    /// lower (`backend::initiator`): planning their initiation would only be skipped, at
    /// every periodic pass, for every such tunnel.
    pub answers: BTreeSet<String>,
}

/// Parses `list-conn` events.
pub fn parse_conns(events: &[Message]) -> BTreeMap<String, ObservedConn> {
    events
        .iter()
        .flat_map(Message::sections)
        .map(|(name, conn)| {
            let children = conn
                .section_of("children")
                .map(|c| {
                    c.sections()
                        .map(|(n, child)| {
                            (n.to_owned(), child.str("mode").unwrap_or("").to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name.to_owned(), ObservedConn { children })
        })
        .collect()
}

/// The ids of our authorities among `list-authority` events (one section per authority).
pub fn parse_authorities(events: &[Message]) -> BTreeSet<String> {
    let prefix = format!("{CA_AUTHORITY}-");
    events
        .iter()
        .flat_map(Message::sections)
        .filter_map(|(name, _)| name.strip_prefix(&prefix))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses `list-sa` events.
pub fn parse_sas(events: &[Message]) -> Vec<IkeSa> {
    events
        .iter()
        .flat_map(Message::sections)
        .map(|(name, sa)| IkeSa {
            conn: name.to_owned(),
            state: text(sa, "state"),
            local: format!("{}[{}]", text(sa, "local-host"), text(sa, "local-id")),
            remote: format!("{}[{}]", text(sa, "remote-host"), text(sa, "remote-id")),
            children: sa
                .section_of("child-sas")
                .map(|c| {
                    c.sections()
                        .map(|(_, child)| ChildSa {
                            name: text(child, "name"),
                            state: text(child, "state"),
                            mode: text(child, "mode"),
                            local_ts: owned(child.strs("local-ts")),
                            remote_ts: owned(child.strs("remote-ts")),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn text(m: &Message, key: &str) -> String {
    m.str(key).unwrap_or("").to_owned()
}

fn owned(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_conn_and_list_sa_events_parse() {
        let conn = Message::new().section(
            "vx1-in-1",
            Message::new().list("remote_addrs", ["192.0.2.2"]).section(
                "children",
                Message::new().section("vx1-in-1", Message::new().kv("mode", "TRANSPORT")),
            ),
        );
        let conns = parse_conns(&[conn]);
        assert_eq!(conns["vx1-in-1"].children["vx1-in-1"], "TRANSPORT");

        let sa = Message::new().section(
            "vx1-out-1",
            Message::new()
                .kv("state", "ESTABLISHED")
                .kv("local-host", "192.0.2.1")
                .kv("local-id", "192.0.2.1")
                .kv("remote-host", "192.0.2.2")
                .kv("remote-id", "192.0.2.2")
                .section(
                    "child-sas",
                    Message::new().section(
                        "vx1-in-1-7",
                        Message::new()
                            .kv("name", "vx1-in-1")
                            .kv("state", "INSTALLED")
                            .kv("mode", "TRANSPORT")
                            .list("local-ts", ["192.0.2.1/32[udp/4789]"])
                            .list("remote-ts", ["192.0.2.2/32[udp]"]),
                    ),
                ),
        );
        let sas = parse_sas(&[sa]);
        assert_eq!(sas[0].conn, "vx1-out-1");
        assert_eq!(sas[0].state, "ESTABLISHED");
        assert_eq!(sas[0].remote, "192.0.2.2[192.0.2.2]");
        assert_eq!(sas[0].children[0].name, "vx1-in-1");
        assert_eq!(sas[0].children[0].local_ts, ["192.0.2.1/32[udp/4789]"]);
    }

    #[test]
    fn only_our_authorities_are_adoptable() {
        let events = [
            Message::new().section("ovs-ca-0123abcd", Message::new().kv("cacert", "x")),
            Message::new().section("corp-root", Message::new().kv("cacert", "y")),
            Message::new().section("ovs-ca-", Message::new()),
        ];
        assert_eq!(
            parse_authorities(&events),
            BTreeSet::from(["0123abcd".to_owned()])
        );
    }
}
