//! The swanctl connections a desired state needs, as `load-conn` bodies (pure).
//!
//! They carry the same meaning as the Python monitor's ipsec.conf (IKEv2, transport mode, OVS's
//! default proposals, trap policies), with its fixes: `local_ip` is used when set, the UDP
//! port is the tunnel's real `dst_port`, and the peer's identity is pinned (its IP with PSK,
//! its certificate name otherwise). No certificate or key travels in a connection: they are
//! loaded as credentials (see `creds`), so a renewed certificate never forces a connection
//! reload.
//!
//! One tunnel is ONE connection (`X-N`), so one IKE_SA, carrying its CHILD_SAs: `X-N` for gre;
//! `X-in-N` (our tunnel port ↔ any port) and `X-out-N` (any port ↔ the peer's tunnel port) for
//! geneve/vxlan. Two connections per tunnel (the Python monitor's shape) gave charon two peer
//! configs with the same addresses and identities: the responder picked either, and narrowed
//! the peer's `out` child into its own `in` config, pinning the source port that real
//! geneve/vxlan traffic randomises; and both ends initiating sent INITIAL_CONTACT both ways,
//! which makes each charon destroy the IKE_SA it had just started.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::creds::Sha;
use super::custom::{self, Level};
use super::observe::ObservedConn;
use super::plan::body_digest;
use crate::backend::templates::SectionCache;
use crate::backend::vici::{Encoded, Message, MessageError};
use crate::model::{Auth, Desired, DesiredTunnel, SkbMark, TunnelType};

/// OVS's default IKE proposal (the Python monitor's `ike=`).
pub const IKE_PROPOSAL: &str = "aes256gcm16-sha256-modp2048";
/// OVS's default ESP proposal (the Python monitor's `esp=`).
pub const ESP_PROPOSAL: &str = "aes256gcm16-modp2048";
/// Prefix of the drop shunts loaded when `ipsec_skb_mark` is set.
pub const SHUNT_PREFIX: &str = "prevent_unencrypted_";

/// One connection to load: its name, the `load-conn` body, and what to start once loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredConn {
    pub name: String,
    /// The tunnel it belongs to; `None` for shunts.
    pub tunnel: Option<String>,
    /// Tunnels only: the children to start, and the addresses that decide which end starts
    /// them (see [`super::initiator`]).
    pub start: Option<Start>,
    /// Its children's names, in the order of the body.
    pub children: Vec<String>,
    /// `{ <name> { ... } }`, encoded for `load-conn` (see [`Encoded`]).
    pub body: Encoded,
}

impl DesiredConn {
    /// The connection `name` with `conn` as its body; fails only for a name or value too long
    /// for VICI.
    fn new(
        name: String,
        tunnel: Option<String>,
        start: Option<Start>,
        conn: Message,
    ) -> Result<Self, MessageError> {
        let children = (conn.section_of("children"))
            .map(|c| c.sections().map(|(n, _)| n.to_owned()).collect())
            .unwrap_or_default();
        let body = Encoded::new(&Message::new().section(&name, conn))?;
        Ok(Self {
            name,
            tunnel,
            start,
            children,
            body,
        })
    }

    /// How `list-conns` shows this connection once loaded: its children and their modes.
    pub fn listed(&self) -> ObservedConn {
        let mode = if self.tunnel.is_some() {
            "TRANSPORT"
        } else {
            "DROP"
        };
        let children = (self.children.iter())
            .map(|n| (n.clone(), mode.to_owned()))
            .collect();
        ObservedConn { children }
    }
}

/// The children of a tunnel connection that one end initiates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub children: Vec<String>,
    /// `options:local_ip`; without it the kernel's source address for `remote` is used.
    pub local: Option<IpAddr>,
    pub remote: IpAddr,
}

/// The connection (and IKE_SA) name of a tunnel: `X-N`, whatever its type.
pub fn ike_conn_name(t: &DesiredTunnel) -> String {
    format!("{}-{}", t.conf.name, t.version)
}

/// Every connection of `desired`, and the tunnels that cannot be expressed (with the reason).
pub fn desired_conns(desired: &Desired) -> (Vec<DesiredConn>, BTreeMap<String, String>) {
    let (conns, errors) = ConnMemo::default().conns(desired);
    let conns = conns.iter().map(|c| c.conn.clone()).collect();
    (conns, errors)
}

/// A connection to load with the digest of its body (what `plan` compares with what charon
/// was sent).
#[derive(Debug, PartialEq)]
pub struct Digested {
    pub conn: DesiredConn,
    pub digest: Sha,
}

impl Digested {
    fn new(conn: DesiredConn) -> Arc<Self> {
        Arc::new(Self {
            digest: body_digest(&conn.body),
            conn,
        })
    }
}

/// Each tunnel's connection and digest, kept between passes and built again only for tunnels
/// that changed: building, encoding and hashing 1,000 `load-conn` bodies on every pass made
/// a one-tunnel change cost O(N) (see [`SectionCache`]).
#[derive(Debug, Default)]
pub struct ConnMemo {
    tunnels: SectionCache<DesiredTunnel, Result<Arc<Digested>, String>>,
}

impl ConnMemo {
    /// [`desired_conns`], with each connection's digest.
    pub fn conns(&self, desired: &Desired) -> (Vec<Arc<Digested>>, BTreeMap<String, String>) {
        let Ok(built) = self.tunnels.render_all(
            desired.tunnels.iter().map(|(n, t)| (n.as_str(), t.clone())),
            |t| Ok::<_, std::convert::Infallible>(tunnel_conn(t).map(Digested::new)),
        );
        let mut conns = Vec::with_capacity(desired.tunnels.len());
        let mut errors = BTreeMap::new();
        for (name, c) in desired.tunnels.keys().zip(built) {
            match c {
                Ok(c) => conns.push(c),
                Err(e) => {
                    errors.insert(name.clone(), e);
                }
            }
        }
        if let Some(mark) = desired.global.skb_mark {
            conns.extend(shunt_conns(desired, mark).into_iter().map(Digested::new));
        }
        (conns, errors)
    }

    /// The connection of one tunnel (as [`ConnMemo::conns`] gives it), or why it cannot be
    /// expressed; the other tunnels' entries are left alone.
    pub fn conn(&self, name: &str, t: &DesiredTunnel) -> Result<Arc<Digested>, String> {
        let Ok(built) = self.tunnels.render_one(name, t.clone(), |t| {
            Ok::<_, std::convert::Infallible>(tunnel_conn(t).map(Digested::new))
        });
        built
    }

    /// Forgets a tunnel that is no longer desired.
    pub fn forget(&self, name: &str) {
        self.tunnels.forget(name);
    }
}

/// The connection of one tunnel, or why its `ipsec_*` options cannot be expressed.
pub fn tunnel_conn(t: &DesiredTunnel) -> Result<DesiredConn, String> {
    let conf = &t.conf;
    let settings = custom::translate(&conf.custom)?;
    let name = ike_conn_name(t);
    let child_names = t.conn_names();
    let mut children = Message::new();
    for (i, child_name) in child_names.iter().enumerate() {
        // conn_names lists `-in-` first, then `-out-`. The out side never pins a source port.
        let (local_ts, remote_ts) = match (conf.kind, conf.udp_port(), i) {
            (TunnelType::Gre, _, _) | (_, None, _) => {
                ("dynamic[gre]".to_owned(), "dynamic[gre]".to_owned())
            }
            (_, Some(p), 0) => (format!("dynamic[udp/{p}]"), "dynamic[udp]".to_owned()),
            (_, Some(p), _) => ("dynamic[udp]".to_owned(), format!("dynamic[udp/{p}]")),
        };
        let mut child = Message::new()
            .kv("mode", "transport")
            .list("esp_proposals", [ESP_PROPOSAL])
            .list("local_ts", [local_ts])
            .list("remote_ts", [remote_ts])
            .kv("start_action", "trap");
        custom::apply(&mut child, Level::Child, &settings);
        children.push_section(child_name, child);
    }
    let local_addr = conf
        .local_ip
        .map_or_else(|| "%any".to_owned(), |ip| ip.to_string());
    let (local, remote) = auth_rounds(&conf.auth, conf.remote_ip.to_string(), t);
    let mut conn = Message::new()
        .kv("version", "2")
        .list("local_addrs", [local_addr])
        .list("remote_addrs", [conf.remote_ip.to_string()])
        .list("proposals", [IKE_PROPOSAL])
        .kv("keyingtries", "0")
        .section("local", local)
        .section("remote", remote)
        .section("children", children);
    custom::apply(&mut conn, Level::Conn, &settings);
    let start = Start {
        children: child_names,
        local: conf.local_ip,
        remote: conf.remote_ip,
    };
    DesiredConn::new(name, Some(conf.name.clone()), Some(start), conn)
        .map_err(|e| format!("cannot encode its VICI load-conn: {e}"))
}

fn auth_rounds(auth: &Auth, remote_ip: String, t: &DesiredTunnel) -> (Message, Message) {
    match auth {
        Auth::Psk(_) => (
            Message::new().kv("auth", "psk"),
            Message::new().kv("auth", "psk").kv("id", remote_ip),
        ),
        Auth::SelfSigned { remote_name, .. } | Auth::CaSigned { remote_name } => {
            let mut local = Message::new().kv("auth", "pubkey");
            if let Some(pki) = &t.conf.pki {
                local = local.kv("id", pki.local_name.as_str());
            }
            (
                local,
                Message::new()
                    .kv("auth", "pubkey")
                    .kv("id", remote_name.as_str()),
            )
        }
    }
}

/// Drop shunts for unencrypted tunnel traffic that carries the skb mark: GRE, and every UDP
/// port a tunnel uses (the OVS defaults 6081 and 4789 always), in both directions.
fn shunt_conns(desired: &Desired, mark: SkbMark) -> Vec<DesiredConn> {
    let mut ports: BTreeSet<u16> = [6081, 4789].into();
    ports.extend(desired.tunnels.values().filter_map(|t| t.conf.udp_port()));
    let protos = std::iter::once(("gre".to_owned(), "gre".to_owned())).chain(
        ports
            .iter()
            .map(|p| (format!("udp_{p}"), format!("udp/{p}"))),
    );
    protos
        .filter_map(|(suffix, proto)| {
            let name = format!("{SHUNT_PREFIX}{suffix}");
            let any = |p: &str| [format!("0.0.0.0/0[{p}]"), format!("::/0[{p}]")];
            let mark = mark.to_string();
            let child = |local: &str, remote: &str| {
                Message::new()
                    .kv("mode", "drop")
                    .list("local_ts", any(local))
                    .list("remote_ts", any(remote))
                    .kv("mark_in", mark.as_str())
                    .kv("mark_out", mark.as_str())
                    .kv("start_action", "trap")
            };
            // Traffic to a remote tunnel port, and traffic to our own.
            let children = if proto == "gre" {
                Message::new().section(&name, child("gre", "gre"))
            } else {
                Message::new()
                    .section(&format!("{name}-out"), child("udp", &proto))
                    .section(&format!("{name}-in"), child(&proto, "udp"))
            };
            let conn = Message::new().section("children", children);
            // Names and values of a few dozen bytes: encoding cannot fail.
            DesiredConn::new(name, None, None, conn).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::strongswan_vici::test_support::{cert_tunnel, desired, psk_tunnel};

    fn conn(c: &DesiredConn) -> Message {
        let body = c.body.decode().unwrap();
        body.section_of(&c.name).unwrap().clone()
    }

    fn child(c: &DesiredConn, name: &str) -> Message {
        let conn = conn(c);
        let children = conn.section_of("children").unwrap();
        children.section_of(name).unwrap().clone()
    }

    #[test]
    fn vxlan_is_one_conn_with_an_in_and_an_out_child_on_the_real_port() {
        let mut t = psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1);
        std::sync::Arc::make_mut(&mut t.conf).dst_port = Some(4790);
        let c = tunnel_conn(&t).unwrap();
        assert_eq!(c.name, "vx1-1");
        let start = c.start.as_ref().unwrap();
        assert_eq!(start.children, ["vx1-in-1", "vx1-out-1"]);
        assert_eq!(start.remote, "192.0.2.2".parse::<IpAddr>().unwrap());
        let ike = conn(&c);
        let names: Vec<_> = ike
            .section_of("children")
            .unwrap()
            .sections()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["vx1-in-1", "vx1-out-1"]);
        let listed = c.listed().children;
        assert_eq!(
            listed.iter().collect::<Vec<_>>(),
            [
                (&"vx1-in-1".to_owned(), &"TRANSPORT".to_owned()),
                (&"vx1-out-1".to_owned(), &"TRANSPORT".to_owned())
            ]
        );
        let (inb, out) = (child(&c, "vx1-in-1"), child(&c, "vx1-out-1"));
        assert_eq!(inb.strs("local_ts"), ["dynamic[udp/4790]"]);
        assert_eq!(inb.strs("remote_ts"), ["dynamic[udp]"]);
        // Outbound: any source port (geneve/vxlan randomise it), the peer's tunnel port.
        assert_eq!(out.strs("local_ts"), ["dynamic[udp]"]);
        assert_eq!(out.strs("remote_ts"), ["dynamic[udp/4790]"]);
        for ch in [inb, out] {
            assert_eq!(ch.str("start_action"), Some("trap"));
            assert_eq!(ch.str("mode"), Some("transport"));
        }
        let ike = conn(&c);
        assert_eq!(ike.strs("remote_addrs"), ["192.0.2.2"]);
        assert_eq!(ike.strs("local_addrs"), ["%any"]);
        assert_eq!(ike.strs("proposals"), [IKE_PROPOSAL]);
        assert_eq!(ike.section_of("local").unwrap().str("auth"), Some("psk"));
        assert_eq!(
            ike.section_of("remote").unwrap().str("id"),
            Some("192.0.2.2")
        );
    }

    #[test]
    fn gre_ipv6_with_local_ip_is_one_conn_with_one_child() {
        let mut t = psk_tunnel("g", TunnelType::Gre, "2001:db8::2", 3);
        std::sync::Arc::make_mut(&mut t.conf).local_ip = Some("2001:db8::1".parse().unwrap());
        let c = tunnel_conn(&t).unwrap();
        assert_eq!(c.name, "g-3");
        let start = c.start.as_ref().unwrap();
        assert_eq!(start.children, ["g-3"]);
        assert_eq!(start.local, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(conn(&c).strs("local_addrs"), ["2001:db8::1"]);
        assert_eq!(child(&c, "g-3").strs("local_ts"), ["dynamic[gre]"]);
    }

    #[test]
    fn certificate_modes_pin_both_identities_and_carry_no_key_material() {
        for ca in [false, true] {
            let t = cert_tunnel("gnv", "192.0.2.2", "right", ca);
            let c = tunnel_conn(&t).unwrap();
            let ike = conn(&c);
            let local = ike.section_of("local").unwrap();
            let remote = ike.section_of("remote").unwrap();
            assert_eq!(
                (local.str("auth"), local.str("id")),
                (Some("pubkey"), Some("left"))
            );
            assert_eq!(
                (remote.str("auth"), remote.str("id")),
                (Some("pubkey"), Some("right"))
            );
            assert!(local.get("certs").is_none() && remote.get("certs").is_none());
        }
    }

    #[test]
    fn custom_options_reach_the_conn_and_every_child_and_unmapped_ones_reject_the_tunnel() {
        let mut t = psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1);
        let conf = std::sync::Arc::make_mut(&mut t.conf);
        conf.custom.insert("ikelifetime".into(), "3h".into());
        conf.custom.insert("esp".into(), "aes128gcm16".into());
        let c = tunnel_conn(&t).unwrap();
        assert_eq!(conn(&c).str("rekey_time"), Some("3h"));
        for ch in ["vx1-in-1", "vx1-out-1"] {
            assert_eq!(child(&c, ch).strs("esp_proposals"), ["aes128gcm16"]);
        }
        std::sync::Arc::make_mut(&mut t.conf)
            .custom
            .insert("leftfirewall".into(), "yes".into());
        let (conns, errors) = desired_conns(&desired(vec![t], None));
        assert!(conns.is_empty());
        assert!(errors["vx1"].contains("ipsec_leftfirewall"), "{errors:?}");
    }

    #[test]
    fn skb_mark_adds_drop_shunts_for_gre_and_every_udp_port() {
        let mut t = psk_tunnel("gnv", TunnelType::Geneve, "192.0.2.2", 1);
        std::sync::Arc::make_mut(&mut t.conf).dst_port = Some(7000);
        let d = desired(vec![t], Some(SkbMark { value: 0, mask: 1 }));
        let (conns, _) = desired_conns(&d);
        let shunts: Vec<_> = conns.iter().filter(|c| c.tunnel.is_none()).collect();
        let names: Vec<_> = shunts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "prevent_unencrypted_gre",
                "prevent_unencrypted_udp_4789",
                "prevent_unencrypted_udp_6081",
                "prevent_unencrypted_udp_7000"
            ]
        );
        let shunt = conn(shunts[3]);
        let udp = shunt.section_of("children").unwrap();
        let out = udp.section_of("prevent_unencrypted_udp_7000-out").unwrap();
        assert_eq!(out.str("mode"), Some("drop"));
        assert_eq!(out.str("mark_out"), Some("0/1"));
        assert_eq!(
            out.strs("remote_ts"),
            ["0.0.0.0/0[udp/7000]", "::/0[udp/7000]"]
        );
    }
}
