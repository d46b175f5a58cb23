//! Desired-state fixtures shared by this backend's unit tests.

use std::sync::Arc;

use crate::backend::templates::Templates;
use crate::model::{Auth, Desired, DesiredTunnel, Secret, TunnelConf, TunnelType};

pub fn templates() -> Templates {
    Templates::load(None, super::render::DEFAULTS).unwrap()
}

/// A PSK tunnel `name` of `kind` to `remote`, at `version`.
pub fn psk_tunnel(name: &str, kind: &str, remote: &str, psk: &str, version: u64) -> DesiredTunnel {
    let remote_ip = remote.parse().unwrap();
    DesiredTunnel {
        version,
        conf: Arc::new(TunnelConf::new(
            name,
            TunnelType::parse(kind).unwrap(),
            remote_ip,
            Auth::Psk(Secret::new(psk)),
        )),
    }
}

pub fn desired(tunnels: Vec<DesiredTunnel>) -> Desired {
    Desired {
        global: Default::default(),
        tunnels: tunnels
            .into_iter()
            .map(|t| (t.conf.name.clone(), t))
            .collect(),
    }
}

/// `t` with its configuration changed by `f`.
pub fn with(mut t: DesiredTunnel, f: impl FnOnce(&mut TunnelConf)) -> DesiredTunnel {
    f(Arc::make_mut(&mut t.conf));
    t
}

/// The CA directory the unit tests render with.
pub fn ca_dir() -> &'static std::path::Path {
    std::path::Path::new("/etc/ipsec.d/ovs-cacerts")
}

/// The files for `d`, rendered from scratch with the default templates.
pub fn rendered(d: &Desired) -> super::render::Rendered {
    super::render::render(
        ca_dir(),
        &templates(),
        &super::render::Sections::default(),
        d,
    )
    .unwrap()
}
