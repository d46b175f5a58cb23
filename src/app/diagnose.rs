//! The impure half of `diagnose`: gathers, once for every tunnel asked about, what the pure
//! checks in [`crate::diagnose`] need beyond what the pipeline already holds: the backend's
//! read-only view of its IKE daemon, the host's XFRM policies and SAs, a second SA dump
//! [`SAMPLE`] later for the counters, and each tunnel's local address when `local_ip` is not
//! set. Nothing here changes state. The sample is the only wait; it runs in the main loop
//! (a command is answered between passes) and is taken once whatever the number of tunnels.

use std::time::{Duration, Instant};

use super::pass::PassOutcome;
use crate::backend::xfrm::error::XfrmError;
use crate::backend::xfrm::host::{HostSa, HostXfrm};
use crate::backend::xfrm::netlink::Xfrm;
use crate::backend::{Backend, BackendKind, initiator};
use crate::diagnose::kernel::XfrmIndex;
use crate::diagnose::{self, Diagnosis, Host, TunnelInput, report};
use crate::model::registry::Registry;

/// How long the counters are watched for `no-inbound-traffic`.
pub const SAMPLE: Duration = Duration::from_secs(1);
/// The netlink timeout of the dumps.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers `diagnose [interface] [--json]`.
pub async fn run<B: Backend>(
    backend: &mut B,
    registry: &Registry,
    outcome: &PassOutcome,
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
    let (first, later) = sample().await;
    let (sampled, later) = later.map_or((None, Vec::new()), |(s, d)| (Some(d), s));
    let index = first.as_ref().map(|x| XfrmIndex::new(x, &later));
    let host = Host {
        kind,
        ike: &ike,
        xfrm: index.as_ref().map_err(|e| e.as_str()),
        sampled,
        packet_mark: registry.global().skb_mark.map_or(0, |m| m.value),
    };
    let diagnoses: Vec<Diagnosis> = tunnels
        .iter()
        .map(|t| {
            let local = t.conf().and_then(|c| {
                c.local_ip
                    .or_else(|| initiator::source_address(c.remote_ip))
            });
            let input = TunnelInput {
                tunnel: t,
                live: outcome.live.get(&t.name),
                apply_error: outcome.apply_errors.get(&t.name).map(String::as_str),
                local,
            };
            diagnose::diagnose(&input, &host)
        })
        .collect();
    Ok(report::render(&diagnoses, json, interface.is_some()))
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
