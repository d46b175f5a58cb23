//! The host layers of a diagnosis, after the kernel's: route, MTU, firewall (NAT and IKE) and
//! certificate. Each runs the pure `check` of its module (`route`, `mtu`, `nft`, `certs`)
//! over what the shell read ([`HostReads`] per tunnel, the nftables ruleset once per
//! command in [`Host`]) and adds one layer line and its findings. A read that failed or ran
//! out of time shows as "not checked" with the reason, never as a finding.

use super::certs::{self, CertsInput};
use super::mtu::{self, MtuInput};
use super::nft::{self, Endpoints};
use super::route::{self, RouteAnswer};
use super::{Checks, Finding, Host, Severity};
use crate::model::TunnelConf;

/// What the shell read for one tunnel's host layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReads {
    /// The kernel's answer for `remote_ip`, or why it could not be read.
    pub route: Result<RouteAnswer, String>,
    /// The MTU arithmetic's input (path MTU from `route`, the datapath's ports), or why it
    /// could not be read.
    pub mtu: Result<MtuInput, String>,
    /// The certificate files of a certificate tunnel (`None` for a PSK tunnel), or why they
    /// could not be read.
    pub certs: Option<Result<CertsInput, String>>,
}

/// Adds the route, MTU, firewall and certificate layers of `conf`.
pub fn check(
    conf: &TunnelConf,
    ends: Endpoints,
    reads: &HostReads,
    host: &Host<'_>,
    out: &mut Checks,
) {
    let route_text = match &reads.route {
        Err(e) => format!("not checked: {e}"),
        Ok(RouteAnswer::NoRoute(reason)) => format!("no route to {}: {reason}", conf.remote_ip),
        Ok(RouteAnswer::Route(r)) => {
            let via = r.gateway.map_or_else(String::new, |g| format!(" via {g}"));
            let src = r.source.map_or_else(|| "?".to_owned(), |s| s.to_string());
            let mtu = r
                .path_mtu()
                .map_or_else(|| "?".to_owned(), |m| m.to_string());
            format!(
                "{} dev {}{via} src {src}, path MTU {mtu}",
                conf.remote_ip, r.dev
            )
        }
    };
    let found = reads.route.as_ref().map(|a| route::check(conf, a));
    add(out, "route", route_text, found);

    let mtu_text = match &reads.mtu {
        Err(e) => format!("not checked: {e}"),
        Ok(input) => match (input.path_mtu, input.inner_mtu()) {
            (None, _) => format!("not checked: no path MTU toward {}", conf.remote_ip),
            (Some(p), None) => format!("path MTU {p} leaves no room inside the tunnel"),
            (Some(p), Some(inner)) => format!(
                "carries {inner} inside (path MTU {p}); {} datapath port(s) compared",
                input.ports.len()
            ),
        },
    };
    let found = match &reads.mtu {
        Ok(input) if input.inner_mtu().is_some() => Ok(mtu::check(conf, input)),
        _ => Err(()),
    };
    add(out, "MTU", mtu_text, found);

    let (nft_text, found) = match host.nft {
        Err(e) => (format!("not checked: {e}"), Err(())),
        Ok(rules) => {
            let found = nft::check(conf, ends, rules);
            let text = if found.is_empty() {
                "nftables: no NAT on the tunnel's traffic, IKE not dropped".to_owned()
            } else {
                format!("nftables: {} rule(s) in the way", found.len())
            };
            (text, Ok(found))
        }
    };
    add(out, "firewall", nft_text, found);

    let (cert_text, found) = match &reads.certs {
        None => ("none (pre-shared key)".to_owned(), Ok(Vec::new())),
        Some(Err(e)) => (format!("not checked: {e}"), Err(())),
        Some(Ok(input)) => {
            let found = certs::check(conf, input);
            let until = input.local.as_ref().and_then(|c| c.info.as_ref().ok());
            let text = match until {
                Some(info) => format!("{} valid until {}", info.cn, certs::date(info.not_after)),
                None => "local certificate unreadable".to_owned(),
            };
            (text, Ok(found))
        }
    };
    add(out, "certificate", cert_text, found);
}

/// One layer line: failed when it was not checked or a finding is a warning or worse.
fn add<E>(out: &mut Checks, name: &'static str, text: String, found: Result<Vec<Finding>, E>) {
    let Ok(found) = found else {
        out.layer(name, false, text);
        return;
    };
    let ok = found.iter().all(|f| f.severity == Severity::Info);
    out.layer(name, ok, text);
    for f in found {
        out.find(f);
    }
}
