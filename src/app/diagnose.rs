//! The impure half of `diagnose`: gathers, once for every tunnel asked about, what the pure
//! checks in [`crate::diagnose`] need beyond what the pipeline already holds: the backend's
//! read-only view of its IKE daemon, the host's XFRM policies and SAs, a second SA dump
//! [`SAMPLE`] later for the counters, the nftables ruleset and the datapath's port MTUs;
//! and per tunnel its local address when `local_ip` is not set, the kernel's route to the
//! peer and its certificate files. Nothing here changes state.
//!
//! It runs in the main loop (a command is answered between passes), so every wait is
//! bounded: each command gets [`CMD_TIMEOUT`], and the per-tunnel reads together get
//! [`HOST_BUDGET`], after which the remaining tunnels' host layers say "not checked". The
//! host reads run while the counter sample waits, so a few tunnels cost no extra time.

use std::time::{Duration, Instant};

use super::pass::PassOutcome;
use crate::backend::xfrm::error::XfrmError;
use crate::backend::xfrm::host::{HostSa, HostXfrm};
use crate::backend::xfrm::netlink::Xfrm;
use crate::backend::{Backend, BackendKind, initiator};
use crate::diagnose::host::HostReads;
use crate::diagnose::kernel::XfrmIndex;
use crate::diagnose::{self, Diagnosis, Host, TunnelInput, certs, mtu, nft, report, route};
use crate::model::cert::FsCertSource;
use crate::model::registry::Registry;
use crate::model::rows::Rows;
use crate::model::{Auth, Tunnel};
use crate::status::time::unix_now;

/// How long the counters are watched for `no-inbound-traffic`.
pub const SAMPLE: Duration = Duration::from_secs(1);
/// The netlink timeout of the dumps.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);
/// The timeout of each command a host check runs (`nft`, `ip`).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the per-tunnel host reads (route, certificates) may take together.
pub const HOST_BUDGET: Duration = Duration::from_secs(10);

/// What the host checks read besides the pipeline's state.
pub struct Sources<'a> {
    /// The Interface rows, for the options the model does not keep (GRE flags).
    pub rows: &'a Rows,
    /// The certificate cache the model uses.
    pub certs: &'a mut FsCertSource,
    /// `--cert-expiry-warning-days`.
    pub warning_days: u32,
}

/// Answers `diagnose [interface] [--json]`.
pub async fn run<B: Backend>(
    backend: &mut B,
    registry: &Registry,
    outcome: &PassOutcome,
    sources: Sources<'_>,
    interface: Option<&str>,
    json: bool,
) -> Result<String, String> {
    let tunnels: Vec<_> = registry
        .tunnels()
        .filter(|t| interface.is_none_or(|i| t.name == i))
        .collect();
    if let Some(i) = interface
        && tunnels.is_empty()
    {
        return Err(format!("{i}: no such IPsec tunnel"));
    }
    let kind = backend.kind();
    let ike = if kind == BackendKind::None {
        crate::backend::ike_view::IkeView::NotReported
    } else {
        backend.diagnose_view(registry.desired()).await
    };
    let ((first, later), (ruleset, reads)) = tokio::join!(sample(), host_reads(&tunnels, sources));
    let (sampled, later) = later.map_or((None, Vec::new()), |(s, d)| (Some(d), s));
    let index = first.as_ref().map(|x| XfrmIndex::new(x, &later));
    let host = Host {
        kind,
        ike: &ike,
        xfrm: index.as_ref().map_err(|e| e.as_str()),
        sampled,
        packet_mark: registry.global().skb_mark.map_or(0, |m| m.value),
        nft: ruleset.as_ref().map_err(String::as_str),
    };
    let diagnoses: Vec<Diagnosis> = tunnels
        .iter()
        .zip(&reads)
        .map(|(t, reads)| {
            let local = t.conf().and_then(|c| {
                c.local_ip
                    .or_else(|| initiator::source_address(c.remote_ip))
            });
            let input = TunnelInput {
                tunnel: t,
                live: outcome.live.get(&t.name),
                apply_error: outcome.apply_errors.get(&t.name).map(String::as_str),
                local,
                reads,
            };
            diagnose::diagnose(&input, &host)
        })
        .collect();
    Ok(report::render(&diagnoses, json, interface.is_some()))
}

/// The nftables ruleset, and per tunnel in `tunnels` order its [`HostReads`].
async fn host_reads(
    tunnels: &[&Tunnel],
    sources: Sources<'_>,
) -> (Result<nft::Ruleset, String>, Vec<HostReads>) {
    let (ruleset, ports) = tokio::join!(nft::read(CMD_TIMEOUT), mtu::read_ports(CMD_TIMEOUT));
    let ruleset = ruleset.map_err(|e| e.to_string());
    let ports = ports.map_err(|e| format!("cannot list the datapath's ports: {e}"));
    let deadline = tokio::time::Instant::now() + HOST_BUDGET;
    let spent = format!(
        "the host reads of diagnose took over {} s",
        HOST_BUDGET.as_secs()
    );
    let now = unix_now();
    let no_options = std::collections::BTreeMap::new();
    let mut out = Vec::with_capacity(tunnels.len());
    for t in tunnels {
        let Some(conf) = t.conf() else {
            out.push(HostReads {
                route: Err("invalid row".to_owned()),
                mtu: Err("invalid row".to_owned()),
                certs: None,
            });
            continue;
        };
        let lookup = route::lookup(conf.remote_ip, conf.local_ip, CMD_TIMEOUT);
        let route = match tokio::time::timeout_at(deadline, lookup).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err(spent.clone()),
        };
        let path_mtu = match &route {
            Ok(route::RouteAnswer::Route(r)) => r.path_mtu(),
            _ => None,
        };
        let options = (sources.rows.named(&t.name))
            .find(|r| r.uuid == t.uuid)
            .map_or(&no_options, |r| &r.options);
        let mtu = (ports.as_ref())
            .map(|p| mtu::input_for(conf, options, path_mtu, p.clone()))
            .map_err(Clone::clone);
        let certs = match conf.auth {
            Auth::Psk(_) => None,
            _ => Some(Ok(certs::gather(
                conf,
                sources.certs,
                now,
                sources.warning_days,
            ))),
        };
        out.push(HostReads { route, mtu, certs });
    }
    (ruleset, out)
}

/// The host's XFRM state, and its SAs again [`SAMPLE`] later (when it has any).
async fn sample() -> (Result<HostXfrm, String>, Option<(Vec<HostSa>, Duration)>) {
    let err = |e: XfrmError| format!("cannot read XFRM: {e}");
    let mut x = match Xfrm::open(DUMP_TIMEOUT) {
        Ok(x) => x,
        Err(e) => return (Err(err(e)), None),
    };
    let first = x.dump_host().await.map_err(err);
    let start = Instant::now();
    let later = match &first {
        Ok(h) if !h.sas.is_empty() => {
            tokio::time::sleep(SAMPLE).await;
            x.dump_host_sas().await.ok().map(|s| (s, start.elapsed()))
        }
        _ => None,
    };
    (first, later)
}

#[cfg(test)]
mod tests {
    use super::{CMD_TIMEOUT, HOST_BUDGET};

    #[test]
    fn the_troubleshooting_guide_states_the_host_read_bounds() {
        let doc = include_str!("../../docs/troubleshooting.md").replace('\n', " ");
        let cmd = format!("{}-second timeout", CMD_TIMEOUT.as_secs());
        let all = format!("at most {} seconds", HOST_BUDGET.as_secs());
        assert!(doc.contains(&cmd) && doc.contains(&all), "{cmd} / {all}");
    }
}
