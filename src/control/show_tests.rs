//! Golden output of `tunnels/show`, modelled on the Python monitor's captured samples.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::backend::{LiveState, LiveStatus};
use crate::model::{Pki, RawTunnel, Secret, SkbMark, TunnelConf, TunnelType};

const SECRET: &str = "v6secret-do-not-print";

fn psk_tunnel() -> Tunnel {
    let custom = BTreeMap::from([("ikelifetime".to_string(), "3h".to_string())]);
    let conf = TunnelConf {
        custom: custom.clone(),
        ..TunnelConf::new(
            "gnv1",
            TunnelType::Geneve,
            "2001:db8::2".parse().unwrap(),
            Auth::Psk(Secret::new(SECRET)),
        )
    };
    Tunnel {
        uuid: "u1".into(),
        name: "gnv1".into(),
        version: 1,
        validity: Validity::Valid(Arc::new(conf)),
        raw: Box::new(RawTunnel {
            kind: "geneve".into(),
            remote_ip: Some("2001:db8::2".into()),
            psk_set: true,
            custom,
            ..RawTunnel::default()
        }),
        ofport: None,
        cfm_fault: None,
    }
}

fn cert_tunnel() -> Tunnel {
    let pki = Arc::new(Pki {
        certificate: PathBuf::from("/tmp/tb/pki/left-cert.pem"),
        private_key: PathBuf::from("/tmp/tb/pki/left-privkey.pem"),
        ca_cert: Some(PathBuf::from("/tmp/tb/pki/right-cert.pem")),
        local_name: "left".into(),
    });
    let conf = TunnelConf {
        local_ip: Some("192.0.2.1".parse().unwrap()),
        dst_port: Some(6082),
        pki: Some(pki),
        ..TunnelConf::new(
            "gnv1",
            TunnelType::Geneve,
            "192.0.2.2".parse().unwrap(),
            Auth::CaSigned {
                remote_name: "right".into(),
            },
        )
    };
    Tunnel {
        uuid: "u2".into(),
        name: "gnv1".into(),
        version: 3,
        validity: Validity::Valid(Arc::new(conf)),
        raw: Box::default(),
        ofport: Some(7),
        cfm_fault: Some(false),
    }
}

fn invalid_tunnel() -> Tunnel {
    Tunnel {
        uuid: "u3".into(),
        name: "bad1".into(),
        version: 2,
        validity: Validity::Invalid(
            ": 'certificate', 'private_key', 'ca_cert', 'remote_cert', and 'remote_name' must be unset with PSK".into(),
        ),
        raw: Box::new(RawTunnel {
            kind: "vxlan".into(),
            remote_ip: Some("192.0.2.9".into()),
            remote_name: Some("peer".into()),
            psk_set: true,
            custom: BTreeMap::from([("it's".to_string(), "a\\b".to_string())]),
            ..RawTunnel::default()
        }),
        ofport: Some(-1),
        cfm_fault: Some(true),
    }
}

fn up(active: &[&str]) -> LiveStatus {
    let mut st = LiveStatus::new(LiveState::Up);
    active.iter().for_each(|a| st.push_active(a));
    st.add_details(
        "Kernel policies installed:",
        ["src 2001:db8::1/128 dst 2001:db8::2/128 proto udp"],
    );
    st.add_details(
        "Kernel security associations installed:",
        Vec::<String>::new(),
    );
    st
}

#[test]
fn psk_geneve_golden() {
    let t = psk_tunnel();
    let live = up(&["gnv1-in-1", "gnv1-out-1"]);
    let global = Global::default();
    let text = render_text(
        &global,
        &[ShowTunnel {
            tunnel: &t,
            live: Some(&live),
            inner_mtu: Some(1396),
        }],
    );
    assert_eq!(
        text,
        "\
Interface name: gnv1 v1 (CONFIGURED)
  Tunnel Type:    geneve
  Local IP:       %defaultroute
  Remote IP:      2001:db8::2
  Address Family: IPv6
  SKB mark:       None
  Local cert:     None
  Local name:     None
  Local key:      None
  Remote cert:    None
  Remote name:    None
  CA cert:        None
  PSK:            <redacted>
  Custom Options: {'ikelifetime': '3h'}
  Ofport:         Not assigned
  CFM state:      Disabled
  IPsec state:    up
  Inner MTU:      1396
Kernel policies installed:
  src 2001:db8::1/128 dst 2001:db8::2/128 proto udp
Kernel security associations installed:
IPsec connections that are active:
  gnv1-in-1
  gnv1-out-1

"
    );
}

#[test]
fn cert_tunnel_golden_with_error_and_skb_mark() {
    let t = cert_tunnel();
    let live = LiveStatus::failed(LiveState::Down, "peer authentication failed");
    let global = Global {
        pki: None,
        skb_mark: Some(SkbMark { value: 0, mask: 1 }),
        ca_bundle: None,
    };
    let text = render_text(
        &global,
        &[ShowTunnel {
            tunnel: &t,
            live: Some(&live),
            inner_mtu: None,
        }],
    );
    assert_eq!(
        text,
        "\
Interface name: gnv1 v3 (CONFIGURED)
  Tunnel Type:    geneve
  Local IP:       192.0.2.1
  Remote IP:      192.0.2.2
  Address Family: IPv4
  SKB mark:       0/1
  Local cert:     /tmp/tb/pki/left-cert.pem
  Local name:     left
  Local key:      /tmp/tb/pki/left-privkey.pem
  Remote cert:    None
  Remote name:    right
  CA cert:        /tmp/tb/pki/right-cert.pem
  PSK:            None
  Custom Options: {}
  Ofport:         7
  CFM state:      Up
  IPsec state:    down
  IPsec error:    peer authentication failed
IPsec connections that are active:

"
    );
}

#[test]
fn invalid_tunnel_golden() {
    let t = invalid_tunnel();
    let text = render_text(
        &Global::default(),
        &[ShowTunnel {
            tunnel: &t,
            live: None,
            inner_mtu: None,
        }],
    );
    let reason = "'certificate', 'private_key', 'ca_cert', 'remote_cert', and 'remote_name' must be unset with PSK";
    assert_eq!(
        text,
        format!(
            "\
Interface name: bad1 v2 (INVALID: {reason})
  Tunnel Type:    vxlan
  Local IP:       %defaultroute
  Remote IP:      192.0.2.9
  Address Family: IPv4
  SKB mark:       None
  Local cert:     None
  Local name:     None
  Local key:      None
  Remote cert:    None
  Remote name:    peer
  CA cert:        None
  PSK:            <redacted>
  Custom Options: {{\"it's\": 'a\\\\b'}}
  Ofport:         -1
  CFM state:      Down
  IPsec state:    invalid
  IPsec error:    {reason}
IPsec connections that are active:

"
        )
    );
}

#[test]
fn no_tunnels() {
    assert_eq!(
        render(false, &Global::default(), &[]),
        "No tunnels configured with IPsec\n"
    );
    let v: Value = serde_json::from_str(&render(true, &Global::default(), &[])).unwrap();
    assert_eq!(v, json!({"tunnels": [], "skb_mark": null}));
}

#[test]
fn psk_never_printed() {
    let (a, b, c) = (psk_tunnel(), cert_tunnel(), invalid_tunnel());
    let live = up(&[]);
    let list = [
        ShowTunnel {
            tunnel: &a,
            live: Some(&live),
            inner_mtu: None,
        },
        ShowTunnel {
            tunnel: &b,
            live: None,
            inner_mtu: None,
        },
        ShowTunnel {
            tunnel: &c,
            live: None,
            inner_mtu: None,
        },
    ];
    for json in [false, true] {
        let out = render(json, &Global::default(), &list);
        assert!(!out.contains(SECRET), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
    }
}

#[test]
fn json_shape() {
    let (a, c) = (psk_tunnel(), invalid_tunnel());
    let live = up(&["gnv1-in-1"]);
    let out = render_json(
        &Global {
            pki: None,
            skb_mark: Some(SkbMark { value: 2, mask: 3 }),
            ca_bundle: None,
        },
        &[
            ShowTunnel {
                tunnel: &a,
                live: Some(&live),
                inner_mtu: Some(1396),
            },
            ShowTunnel {
                tunnel: &c,
                live: None,
                inner_mtu: None,
            },
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["skb_mark"], "2/3");
    assert_eq!(
        v["tunnels"][0],
        json!({
            "name": "gnv1", "version": 1, "state": "up", "error": null, "type": "geneve",
            "local_ip": null, "remote_ip": "2001:db8::2", "dst_port": 6081,
            "address_family": "IPv6", "auth": "psk", "local_cert": null, "local_name": null,
            "local_key": null, "ca_cert": null, "remote_name": null, "remote_cert": null,
            "psk": "<redacted>", "custom_options": {"ikelifetime": "3h"}, "ofport": null,
            "cfm_state": "disabled", "inner_mtu": 1396, "active": ["gnv1-in-1"],
            "details": {
                "Kernel policies installed:": ["src 2001:db8::1/128 dst 2001:db8::2/128 proto udp"],
                "Kernel security associations installed:": []
            }
        })
    );
    let bad = &v["tunnels"][1];
    assert_eq!(bad["state"], "invalid");
    assert_eq!(bad["inner_mtu"], Value::Null);
    assert!(bad["error"].as_str().unwrap().starts_with("'certificate'"));
    assert_eq!(bad["auth"], Value::Null);
    assert_eq!(bad["cfm_state"], "down");
}

#[test]
fn python_repr_of_strings() {
    assert_eq!(py_str("plain"), "'plain'");
    assert_eq!(py_str("it's"), "\"it's\"");
    assert_eq!(py_str("both ' and \""), "'both \\' and \"'");
    assert_eq!(py_str("line\nbreak\u{1}"), "'line\\nbreak\\x01'");
}
