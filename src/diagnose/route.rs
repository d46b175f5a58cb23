//! `peer-unreachable`: can this host send to the tunnel's peer at all, and from the address
//! the tunnel is configured with?
//!
//! Reads the kernel's answer for `remote_ip` through `ip -j route get` (the output device,
//! the source address the kernel picks, the route's MTU metric) and the output device's MTU
//! through `ip -j link show`; the MTU check (`diagnose::mtu`) uses the same answer for the
//! path MTU. It runs in the monitor's network namespace, which is the IKE daemon's. The
//! backends' own look-up (`backend::initiator`) only needs the source address, so it asks a
//! connected UDP socket instead; both see the same routing decision.
//!
//! No route is an error (the peer is unreachable), and so is an `options:local_ip` the kernel
//! cannot send from toward the peer (`ip route get REMOTE from LOCAL` fails: typically not an
//! address of this host). A source address that differs from a usable `local_ip` is a
//! warning: the IKE daemon binds `local_ip` and may still get through, but the route the
//! kernel prefers leaves from another address, and replies may take another path.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use super::{Code, Finding, Severity};
use crate::backend::command::{Cmd, CommandError};
use crate::model::TunnelConf;

/// The kernel's route toward a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Output device.
    pub dev: String,
    /// The source address the kernel picks (`prefsrc`).
    pub source: Option<IpAddr>,
    /// Next hop, when not directly connected.
    pub gateway: Option<IpAddr>,
    /// The route's `mtu` metric (or a cached path-MTU exception), when set.
    pub route_mtu: Option<u32>,
    /// The output device's MTU.
    pub dev_mtu: Option<u32>,
    /// Why the kernel cannot route to the peer from `options:local_ip` (looked up only when
    /// it differs from `source`).
    pub from_local_ip: Option<String>,
}

impl Route {
    /// The MTU of the first hop toward the peer: the route's MTU when set (never above the
    /// device's), otherwise the device's.
    pub fn path_mtu(&self) -> Option<u32> {
        match (self.route_mtu, self.dev_mtu) {
            (Some(r), Some(d)) => Some(r.min(d)),
            (r, d) => r.or(d),
        }
    }
}

/// What the routing table answers for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAnswer {
    Route(Route),
    /// The kernel refused (e.g. "Network is unreachable").
    NoRoute(String),
}

#[derive(Debug, Error)]
pub enum RouteError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot parse the output of '{cmdline}': {detail}")]
    Parse { cmdline: String, detail: String },
}

/// `peer-unreachable` findings for `conf` given the kernel's answer for its `remote_ip`.
pub fn check(conf: &TunnelConf, answer: &RouteAnswer) -> Vec<Finding> {
    let remote = conf.remote_ip;
    match answer {
        RouteAnswer::NoRoute(reason) => vec![Finding::new(
            Code::PeerUnreachable,
            Severity::Error,
            format!("no route to the peer {remote}: {reason}"),
            format!(
                "add a route to {remote} (ip route add {remote} via GATEWAY) or correct options:remote_ip"
            ),
        )],
        RouteAnswer::Route(route) => match (conf.local_ip, route.source) {
            (Some(local), _) if route.from_local_ip.is_some() => vec![Finding::new(
                Code::PeerUnreachable,
                Severity::Error,
                format!(
                    "no route to the peer {remote} from options:local_ip {local}: {}",
                    route.from_local_ip.as_deref().unwrap_or_default()
                ),
                format!(
                    "check that {local} is an address of this host, or correct options:local_ip"
                ),
            )],
            (Some(local), Some(source)) if local != source => vec![Finding::new(
                Code::PeerUnreachable,
                Severity::Warning,
                format!(
                    "the route to {remote} leaves through {} with source address {source}, not options:local_ip {local}",
                    route.dev
                ),
                format!(
                    "set options:local_ip to {source}, or route {remote} through the interface that holds {local} (ip route add {remote} ... src {local})"
                ),
            )],
            _ => Vec::new(),
        },
    }
}

/// `ip -j route get REMOTE [from LOCAL]`: its output, or why the kernel refused.
async fn route_get(
    remote: IpAddr,
    from: Option<IpAddr>,
    timeout: Duration,
) -> Result<Result<(String, Cmd), String>, RouteError> {
    let mut args = vec!["-j".to_owned(), "route".to_owned(), "get".to_owned()];
    args.push(remote.to_string());
    if let Some(from) = from {
        args.extend(["from".to_owned(), from.to_string()]);
    }
    let cmd = Cmd::new("ip", "look up the route to the peer", timeout).args(args);
    let out = cmd.run().await?;
    if out.code != 0 {
        let reason = out.stderr.trim();
        let reason = reason.strip_prefix("RTNETLINK answers: ").unwrap_or(reason);
        return Ok(Err(reason.to_owned()));
    }
    Ok(Ok((out.stdout, cmd)))
}

/// Asks the kernel (`ip -j route get`, again `from` a `local_ip` other than the route's
/// source, then `ip -j link show` for the device's MTU).
pub async fn lookup(
    remote: IpAddr,
    local_ip: Option<IpAddr>,
    timeout: Duration,
) -> Result<RouteAnswer, RouteError> {
    let (json, cmd) = match route_get(remote, None, timeout).await? {
        Ok(found) => found,
        Err(reason) => return Ok(RouteAnswer::NoRoute(reason)),
    };
    let mut route = parse_route_get(&json).map_err(|detail| RouteError::Parse {
        cmdline: cmd.cmdline(),
        detail,
    })?;
    if let Some(local) = local_ip.filter(|l| route.source != Some(*l)) {
        route.from_local_ip = route_get(remote, Some(local), timeout).await?.err();
    }
    let link = Cmd::new("ip", "read the output device's MTU", timeout).args([
        "-j".to_owned(),
        "link".to_owned(),
        "show".to_owned(),
        "dev".to_owned(),
        route.dev.clone(),
    ]);
    let out = link.run_checked().await?;
    route.dev_mtu = parse_links(&out.stdout)
        .map_err(|detail| RouteError::Parse {
            cmdline: link.cmdline(),
            detail,
        })?
        .first()
        .map(|l| l.mtu);
    Ok(RouteAnswer::Route(route))
}

#[derive(Deserialize)]
struct RouteJson {
    dev: String,
    prefsrc: Option<IpAddr>,
    gateway: Option<IpAddr>,
    mtu: Option<u32>,
    #[serde(default)]
    metrics: Vec<serde_json::Value>,
}

/// The first route of `ip -j route get` output (the device MTU is left unknown).
pub fn parse_route_get(json: &str) -> Result<Route, String> {
    let routes: Vec<RouteJson> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let r = routes
        .into_iter()
        .next()
        .ok_or_else(|| "no route in the answer".to_owned())?;
    let metric_mtu = r
        .metrics
        .iter()
        .find_map(|m| m.get("mtu").and_then(serde_json::Value::as_u64))
        .and_then(|m| u32::try_from(m).ok());
    Ok(Route {
        dev: r.dev,
        source: r.prefsrc,
        gateway: r.gateway,
        route_mtu: r.mtu.or(metric_mtu),
        dev_mtu: None,
        from_local_ip: None,
    })
}

/// One device of `ip -j link show` output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    pub ifname: String,
    pub mtu: u32,
    #[serde(default)]
    pub linkinfo: Option<LinkInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LinkInfo {
    pub info_kind: Option<String>,
}

/// The devices of `ip -j [-d] link show` output.
pub fn parse_links(json: &str) -> Result<Vec<Link>, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Auth, Secret, TunnelType};

    fn conf(local: Option<&str>) -> TunnelConf {
        let mut c = TunnelConf::new(
            "t",
            TunnelType::Geneve,
            "192.0.2.2".parse().unwrap(),
            Auth::Psk(Secret::new("x")),
        );
        c.local_ip = local.map(|l| l.parse().unwrap());
        c
    }

    fn route(source: &str) -> RouteAnswer {
        RouteAnswer::Route(Route {
            dev: "eth0".into(),
            source: Some(source.parse().unwrap()),
            gateway: None,
            route_mtu: None,
            dev_mtu: Some(1500),
            from_local_ip: None,
        })
    }

    #[test]
    fn parses_ip_route_get_with_and_without_mtu() {
        let r = parse_route_get(
            r#"[{"dst":"10.8.0.5","gateway":"10.9.0.2","dev":"v0","prefsrc":"10.9.0.1","flags":[],"uid":0,"cache":[],"metrics":[{"mtu":1400}]}]"#,
        )
        .unwrap();
        assert_eq!(r.dev, "v0");
        assert_eq!(r.source, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(r.gateway, Some("10.9.0.2".parse().unwrap()));
        assert_eq!(r.route_mtu, Some(1400));
        let r = parse_route_get(
            r#"[{"dst":"2001:db8::2","dev":"eth0","prefsrc":"2001:db8::1","flags":[],"uid":0,"cache":[]}]"#,
        )
        .unwrap();
        assert_eq!(r.route_mtu, None);
        assert!(parse_route_get("[]").is_err());
        assert!(parse_route_get("nonsense").is_err());
    }

    #[test]
    fn path_mtu_is_the_route_metric_capped_by_the_device() {
        let mut r = Route {
            dev: "v0".into(),
            source: None,
            gateway: None,
            route_mtu: Some(1400),
            dev_mtu: Some(1500),
            from_local_ip: None,
        };
        assert_eq!(r.path_mtu(), Some(1400));
        r.route_mtu = Some(9000);
        assert_eq!(r.path_mtu(), Some(1500));
        r.route_mtu = None;
        assert_eq!(r.path_mtu(), Some(1500));
    }

    #[test]
    fn no_route_is_an_error_and_a_foreign_source_a_warning() {
        let f = check(
            &conf(None),
            &RouteAnswer::NoRoute("Network is unreachable".into()),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].code, f[0].severity),
            (Code::PeerUnreachable, Severity::Error)
        );
        assert!(f[0].message.contains("Network is unreachable"), "{f:?}");

        assert!(check(&conf(None), &route("192.0.2.1")).is_empty());
        assert!(check(&conf(Some("192.0.2.1")), &route("192.0.2.1")).is_empty());
        let f = check(&conf(Some("192.0.2.7")), &route("192.0.2.1"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].message.contains("192.0.2.7") && f[0].message.contains("eth0"));
        let RouteAnswer::Route(mut r) = route("192.0.2.1") else {
            unreachable!()
        };
        r.from_local_ip = Some("Network is unreachable".into());
        let f = check(&conf(Some("192.0.2.7")), &RouteAnswer::Route(r));
        assert_eq!(
            (f[0].code, f[0].severity),
            (Code::PeerUnreachable, Severity::Error)
        );
        assert!(
            f[0].message.contains("from options:local_ip 192.0.2.7"),
            "{f:?}"
        );
    }
}
