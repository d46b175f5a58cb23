//! Desired states for the unit tests of this backend.

use std::sync::Arc;

use crate::model::{
    Auth, Desired, DesiredTunnel, Global, Pki, Secret, SkbMark, TunnelConf, TunnelType,
};

pub fn psk_tunnel(name: &str, kind: TunnelType, remote: &str, version: u64) -> DesiredTunnel {
    let remote_ip = remote.parse().unwrap();
    DesiredTunnel {
        version,
        conf: Arc::new(TunnelConf::new(
            name,
            kind,
            remote_ip,
            Auth::Psk(Secret::new("swordfish")),
        )),
    }
}

/// A geneve tunnel authenticated by certificates: CA-signed or self-signed.
pub fn cert_tunnel(name: &str, remote: &str, remote_name: &str, ca: bool) -> DesiredTunnel {
    let mut t = psk_tunnel(name, TunnelType::Geneve, remote, 1);
    let conf = Arc::make_mut(&mut t.conf);
    conf.pki = Some(Arc::new(Pki {
        certificate: "/pki/left-cert.pem".into(),
        private_key: "/pki/left-privkey.pem".into(),
        ca_cert: ca.then(|| "/pki/cacert.pem".into()),
        local_name: "left".into(),
    }));
    conf.auth = if ca {
        Auth::CaSigned {
            remote_name: remote_name.into(),
        }
    } else {
        Auth::SelfSigned {
            remote_cert: format!("/pki/{remote_name}-cert.pem").into(),
            remote_name: remote_name.into(),
        }
    };
    t
}

pub fn desired(tunnels: Vec<DesiredTunnel>, skb_mark: Option<SkbMark>) -> Desired {
    Desired {
        global: Global {
            pki: tunnels.iter().find_map(|t| t.conf.pki.clone()),
            skb_mark,
            ca_bundle: None,
        },
        tunnels: tunnels
            .into_iter()
            .map(|t| (t.conf.name.clone(), t))
            .collect(),
    }
}
