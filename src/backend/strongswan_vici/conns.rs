//! The swanctl connections a desired state needs, as `load-conn` bodies (pure).
//!
//! They carry the same meaning as the Python monitor's ipsec.conf (IKEv2, transport mode, OVS's
//! default proposals, trap policies), with its fixes: `local_ip` is used when set, the UDP
//! port is the tunnel's real `dst_port`, and the peer's identity is pinned (its IP with PSK,
//! its certificate name otherwise). No certificate or key travels in a connection: they are
//! loaded as credentials (see `creds`), so a renewed certificate never forces a connection
//! reload.

use std::collections::{BTreeMap, BTreeSet};

use super::custom;
use crate::backend::vici::Message;
use crate::model::{Auth, Desired, DesiredTunnel, SkbMark, TunnelType};

/// OVS's default IKE proposal (the Python monitor's `ike=`).
pub const IKE_PROPOSAL: &str = "aes256gcm16-sha256-modp2048";
/// OVS's default ESP proposal (the Python monitor's `esp=`).
pub const ESP_PROPOSAL: &str = "aes256gcm16-modp2048";
/// Prefix of the drop shunts loaded when `ipsec_skb_mark` is set.
pub const SHUNT_PREFIX: &str = "prevent_unencrypted_";

/// One connection to load: its name, the `load-conn` body, and whether we initiate it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredConn {
    pub name: String,
    /// The tunnel it belongs to; `None` for shunts.
    pub tunnel: Option<String>,
    /// True for the outbound side (`-out-`, and GRE's single conn): we start it, the peer
    /// starts the other, so the two ends never race on the same connection.
    pub initiate: bool,
    /// `{ <name> { ... } }`, ready for `load-conn`.
    pub body: Message,
}

/// Every connection of `desired`, and the tunnels that cannot be expressed (with the reason).
pub fn desired_conns(desired: &Desired) -> (Vec<DesiredConn>, BTreeMap<String, String>) {
    let mut conns = Vec::new();
    let mut errors = BTreeMap::new();
    for (name, t) in &desired.tunnels {
        match tunnel_conns(t) {
            Ok(c) => conns.extend(c),
            Err(e) => {
                errors.insert(name.clone(), e);
            }
        }
    }
    if let Some(mark) = desired.global.skb_mark {
        conns.extend(shunt_conns(desired, mark));
    }
    (conns, errors)
}

/// The connections of one tunnel (one for GRE, `-in-` and `-out-` for UDP tunnels).
pub fn tunnel_conns(t: &DesiredTunnel) -> Result<Vec<DesiredConn>, String> {
    let conf = &t.conf;
    let settings = custom::translate(&conf.custom)?;
    let names = t.conn_names();
    let udp = conf.udp_port();
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            // conn_names lists `-in-` first, then `-out-`.
            let (local_ts, remote_ts, initiate) = match (conf.kind, udp, i) {
                (TunnelType::Gre, _, _) | (_, None, _) => {
                    ("dynamic[gre]".to_owned(), "dynamic[gre]".to_owned(), true)
                }
                (_, Some(p), 0) => (
                    format!("dynamic[udp/{p}]"),
                    "dynamic[udp]".to_owned(),
                    false,
                ),
                (_, Some(p), _) => ("dynamic[udp]".to_owned(), format!("dynamic[udp/{p}]"), true),
            };
            let local_addr = conf
                .local_ip
                .map_or_else(|| "%any".to_owned(), |ip| ip.to_string());
            let (local, remote) = auth_rounds(&conf.auth, conf.remote_ip.to_string(), t);
            let child = Message::new()
                .kv("mode", "transport")
                .list("esp_proposals", [ESP_PROPOSAL])
                .list("local_ts", [local_ts])
                .list("remote_ts", [remote_ts])
                .kv("start_action", "trap");
            let mut conn = Message::new()
                .kv("version", "2")
                .list("local_addrs", [local_addr])
                .list("remote_addrs", [conf.remote_ip.to_string()])
                .list("proposals", [IKE_PROPOSAL])
                .kv("keyingtries", "0")
                .section("local", local)
                .section("remote", remote)
                .section("children", Message::new().section(&name, child));
            custom::apply(&mut conn, &name, &settings);
            DesiredConn {
                body: Message::new().section(&name, conn),
                name,
                tunnel: Some(conf.name.clone()),
                initiate,
            }
        })
        .collect())
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
        .map(|(suffix, proto)| {
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
            DesiredConn {
                body: Message::new().section(&name, conn),
                name,
                tunnel: None,
                initiate: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::strongswan_vici::test_support::{cert_tunnel, desired, psk_tunnel};

    fn conn(c: &DesiredConn) -> &Message {
        c.body.section_of(&c.name).unwrap()
    }

    fn child(c: &DesiredConn) -> &Message {
        conn(c)
            .section_of("children")
            .unwrap()
            .section_of(&c.name)
            .unwrap()
    }

    #[test]
    fn vxlan_psk_gives_in_and_out_with_the_real_port() {
        let mut t = psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1);
        std::sync::Arc::make_mut(&mut t.conf).dst_port = Some(4790);
        let c = tunnel_conns(&t).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].name.as_str(), c[0].initiate), ("vx1-in-1", false));
        assert_eq!((c[1].name.as_str(), c[1].initiate), ("vx1-out-1", true));
        assert_eq!(child(&c[0]).strs("local_ts"), ["dynamic[udp/4790]"]);
        assert_eq!(child(&c[0]).strs("remote_ts"), ["dynamic[udp]"]);
        assert_eq!(child(&c[1]).strs("remote_ts"), ["dynamic[udp/4790]"]);
        assert_eq!(child(&c[1]).str("start_action"), Some("trap"));
        assert_eq!(child(&c[1]).str("mode"), Some("transport"));
        let ike = conn(&c[0]);
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
    fn gre_ipv6_with_local_ip_is_one_initiated_conn() {
        let mut t = psk_tunnel("g", TunnelType::Gre, "2001:db8::2", 3);
        std::sync::Arc::make_mut(&mut t.conf).local_ip = Some("2001:db8::1".parse().unwrap());
        let c = tunnel_conns(&t).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "g-3");
        assert!(c[0].initiate);
        assert_eq!(conn(&c[0]).strs("local_addrs"), ["2001:db8::1"]);
        assert_eq!(child(&c[0]).strs("local_ts"), ["dynamic[gre]"]);
    }

    #[test]
    fn certificate_modes_pin_both_identities_and_carry_no_key_material() {
        for ca in [false, true] {
            let t = cert_tunnel("gnv", "192.0.2.2", "right", ca);
            let c = tunnel_conns(&t).unwrap();
            let ike = conn(&c[1]);
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
    fn custom_options_reach_the_conn_and_unmapped_ones_reject_the_tunnel() {
        let mut t = psk_tunnel("vx1", TunnelType::Vxlan, "192.0.2.2", 1);
        let conf = std::sync::Arc::make_mut(&mut t.conf);
        conf.custom.insert("ikelifetime".into(), "3h".into());
        let c = tunnel_conns(&t).unwrap();
        assert_eq!(conn(&c[0]).str("rekey_time"), Some("3h"));
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
        let udp = conn(shunts[3]).section_of("children").unwrap();
        let out = udp.section_of("prevent_unencrypted_udp_7000-out").unwrap();
        assert_eq!(out.str("mode"), Some("drop"));
        assert_eq!(out.str("mark_out"), Some("0/1"));
        assert_eq!(
            out.strs("remote_ts"),
            ["0.0.0.0/0[udp/7000]", "::/0[udp/7000]"]
        );
    }
}
