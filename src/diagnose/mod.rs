//! `diagnose`: answers "why is this tunnel not encrypting?" layer by layer (OVSDB row, IKE
//! daemon, connections, IKE and Child SAs, kernel policies and SAs, traffic, MTU, NAT and
//! firewall, foreign policies, certificates, routing), each failure named by a stable
//! [`Code`] with a one-line fix.
//!
//! Diagnose is read-only and fed from what the pipeline already holds (the model's validation,
//! each tunnel's live status and last apply error) plus read-only looks gathered once per
//! command by the shell (`app::diagnose`): the backend's [`Backend::diagnose_view`] of its IKE
//! daemon and a dump of the host's XFRM policies and SAs, taken twice about a second apart for
//! the counters. Everything here is pure: inputs in, [`Diagnosis`] out. It never prints a
//! secret: nothing it reads holds one (live errors are redacted at the source).
//!
//! [`Backend::diagnose_view`]: crate::backend::Backend::diagnose_view
//!
//! The host checks (`route`, `mtu`, `nft`, `certs`) are each a pure `check` over explicit
//! inputs plus a small gatherer that reads them; the shell gathers (the ruleset and the
//! datapath's ports once per command, the route and certificate files per tunnel) and
//! `host` turns their findings into the last four layers.

pub mod certs;
pub mod finding;
pub mod host;
pub mod ike;
pub mod kernel;
pub mod mtu;
pub mod nft;
pub mod report;
pub mod route;

use std::net::IpAddr;
use std::time::Duration;

pub use finding::{Code, Finding, Severity};

use crate::backend::ike_view::IkeView;
use crate::backend::{BackendKind, LiveStatus};
use crate::model::{Tunnel, Validity};

/// One layer checked, for the text report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub name: &'static str,
    /// False when this layer produced an error or warning finding.
    pub ok: bool,
    pub text: String,
}

/// The diagnosis of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub interface: String,
    /// `invalid`, or the live state (`up`, `down`, ... as in `tunnels/show`).
    pub state: String,
    pub layers: Vec<Layer>,
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// True when no finding is an error or a warning.
    pub fn healthy(&self) -> bool {
        self.findings.iter().all(|f| f.severity == Severity::Info)
    }
}

/// Layers and findings as they are produced.
#[derive(Debug, Default)]
pub struct Checks {
    pub layers: Vec<Layer>,
    pub findings: Vec<Finding>,
}

impl Checks {
    pub fn layer(&mut self, name: &'static str, ok: bool, text: impl Into<String>) {
        self.layers.push(Layer {
            name,
            ok,
            text: text.into(),
        });
    }

    pub fn find(&mut self, f: Finding) {
        self.findings.push(f);
    }
}

/// What diagnose knows of the host, gathered once for every tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    pub kind: BackendKind,
    pub ike: &'a IkeView,
    /// The XFRM dump (with the SAs of a second dump, if one was taken), or why it could not
    /// be read.
    pub xfrm: Result<&'a kernel::XfrmIndex<'a>, &'a str>,
    /// How long after the first dump the second was taken; `None`: no counter sample.
    pub sampled: Option<Duration>,
    /// The mark OVS puts on tunnel packets (`ipsec_skb_mark`), which policy marks match.
    pub packet_mark: u32,
    /// The nftables ruleset, or why it could not be read.
    pub nft: Result<&'a nft::Ruleset, &'a str>,
}

/// What the pipeline holds about one tunnel.
#[derive(Debug, Clone, Copy)]
pub struct TunnelInput<'a> {
    pub tunnel: &'a Tunnel,
    pub live: Option<&'a LiveStatus>,
    pub apply_error: Option<&'a str>,
    /// `options:local_ip`, or the kernel's source address toward `remote_ip`; `None` when
    /// there is no route.
    pub local: Option<IpAddr>,
    /// What the shell read for the host layers (route, MTU, certificates).
    pub reads: &'a host::HostReads,
}

/// Diagnoses one tunnel: every layer in order, each failure a finding.
pub fn diagnose(t: &TunnelInput<'_>, host: &Host<'_>) -> Diagnosis {
    let mut checks = Checks::default();
    let conf = match &t.tunnel.validity {
        Validity::Invalid(reason) => {
            let reason = reason.trim_start_matches(": ");
            checks.layer("OVSDB row", false, format!("invalid: {reason}"));
            checks.find(Finding::new(
                Code::InvalidConfig,
                Severity::Error,
                format!("the Interface row is not a valid IPsec tunnel: {reason}"),
                format!(
                    "fix the row's options (ovs-vsctl list Interface {}); the monitor ignores the tunnel until then",
                    t.tunnel.name
                ),
            ));
            return finish(t, "invalid", checks);
        }
        Validity::Valid(conf) => conf,
    };
    let local = t.local.map_or_else(|| "?".to_owned(), |ip| ip.to_string());
    checks.layer(
        "OVSDB row",
        true,
        format!(
            "valid: {} {local} -> {}, {}",
            conf.kind.as_str(),
            conf.remote_ip,
            conf.auth.kind()
        ),
    );
    let conns = conf.conn_names(t.tunnel.version);
    ike::check(
        host,
        &t.tunnel.name,
        &conns,
        t.live,
        t.apply_error,
        &mut checks,
    );
    match t.local {
        Some(local) => kernel::check(&kernel::Flows::of(conf, local), host, &mut checks),
        None => checks.layer(
            "kernel",
            false,
            format!("not checked: no local address toward {}", conf.remote_ip),
        ),
    }
    let ends = nft::Endpoints {
        local: t.local,
        remote: conf.remote_ip,
    };
    host::check(conf, ends, t.reads, host, &mut checks);
    let state = t.live.map_or("configured", |l| l.state.as_str()).to_owned();
    finish(t, &state, checks)
}

fn finish(t: &TunnelInput<'_>, state: &str, checks: Checks) -> Diagnosis {
    let mut findings = checks.findings;
    // Worst first; within a severity, the order of the layers.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Diagnosis {
        interface: t.tunnel.name.clone(),
        state: state.to_owned(),
        layers: checks.layers,
        findings,
    }
}

#[cfg(test)]
mod tests;
