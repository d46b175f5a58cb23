//! The IKE layers of a tunnel: daemon reachable (`ike-daemon-down`), connections loaded
//! (`conn-not-loaded`), IKE SA (`ike-sa-missing`, with the daemon's last reason) and Child SA
//! (`child-sa-missing`). Pure: from the backend's [`IkeView`] when it breaks its state down
//! per connection, else from the tunnel's live status.

use super::{Checks, Code, Finding, Host, Severity};
use crate::backend::ike_view::{ConnView, IkeView, SaState};
use crate::backend::{BackendKind, LiveState, LiveStatus};

const REFRESH: &str = "ovs-appctl -t ovs-monitor-ipsec refresh";

/// The kind of failure a daemon's message names, for a person scanning the report.
pub fn classify(reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    if r.contains("authentication_failed") || r.contains("authentication failed") {
        Some("authentication failed")
    } else if r.contains("no_proposal_chosen") || r.contains("no proposal chosen") {
        Some("no proposal chosen")
    } else if r.contains("retransmit") || r.contains("not answering") || r.contains("timed out") {
        Some("peer not answering")
    } else {
        None
    }
}

/// "authentication failed (…)" or the reason as the daemon gave it.
fn with_class(reason: &str) -> String {
    match classify(reason) {
        Some(class) => format!("{class} ({reason})"),
        None => reason.to_owned(),
    }
}

/// The fix for an IKE SA that failed for `reason`.
fn ike_hint(reason: Option<&str>) -> &'static str {
    match reason.and_then(classify) {
        Some("authentication failed") => {
            "make both ends agree: the same psk, or certificates the peer trusts with the right remote_name"
        }
        Some("no proposal chosen") => {
            "make the ipsec_ike/ipsec_esp proposals (options:ipsec_*) of both ends overlap"
        }
        Some(_) => {
            "check that the peer's monitor runs and that UDP 500/4500 reach it (firewall, NAT, route)"
        }
        None => {
            "send traffic through the tunnel; if no IKE SA comes up, read the IKE daemon's log for this connection"
        }
    }
}

/// Adds the IKE layers of tunnel `name` (connections `conns`).
pub fn check(
    host: &Host<'_>,
    name: &str,
    conns: &[String],
    live: Option<&LiveStatus>,
    apply_error: Option<&str>,
    out: &mut Checks,
) {
    let daemon = match host.kind {
        BackendKind::None => {
            out.layer("IKE daemon", true, "none (static keys)");
            return;
        }
        BackendKind::StrongSwan => "strongSwan",
        BackendKind::Libreswan => "Libreswan",
    };
    let reason = apply_error.or_else(|| live.and_then(|l| l.error()));
    match host.ike {
        IkeView::Unreachable(e) => {
            out.layer("IKE daemon", false, format!("{daemon} unreachable: {e}"));
            out.find(Finding::new(
                Code::IkeDaemonDown,
                Severity::Error,
                format!("{daemon} cannot be reached: {e}"),
                "start the IKE daemon (or restart ovs-monitor-ipsec, which starts it) and look at its log for why it stopped",
            ));
        }
        IkeView::Tunnels(map) => {
            out.layer("IKE daemon", true, format!("{daemon} answers"));
            let none = Vec::new();
            let views = map.get(name).unwrap_or(&none);
            let view = |c: &String| views.iter().find(|v| v.name == *c);
            per_conn(daemon, conns, view, reason, out);
        }
        IkeView::NotReported => {
            out.layer("IKE daemon", true, format!("{daemon} (from the last pass)"));
            from_live(conns, live, reason, out);
        }
    }
}

fn per_conn<'a>(
    daemon: &str,
    conns: &[String],
    view: impl Fn(&String) -> Option<&'a ConnView>,
    reason: Option<&str>,
    out: &mut Checks,
) {
    let missing: Vec<&str> = conns
        .iter()
        .filter(|c| !view(c).is_some_and(|v| v.loaded))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let list = missing.join(", ");
        out.layer("connections", false, format!("not loaded: {list}"));
        out.find(Finding::new(
            Code::ConnNotLoaded,
            Severity::Error,
            format!(
                "{daemon} does not have connection(s) {list}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            format!(
                "run `{REFRESH}` to load them again; if they stay missing, the monitor's log says why {daemon} refused them"
            ),
        ));
        if missing.len() == conns.len() {
            return;
        }
    } else {
        out.layer("connections", true, format!("loaded: {}", conns.join(", ")));
    }
    let loaded: Vec<&ConnView> = conns
        .iter()
        .filter_map(&view)
        .filter(|v| v.loaded)
        .collect();
    let reason_of = |v: &ConnView| v.reason.clone().or(reason.map(str::to_owned));
    let ike_bad: Vec<&&ConnView> = loaded
        .iter()
        .filter(|v| v.ike != SaState::Established)
        .collect();
    if ike_bad.is_empty() {
        out.layer("IKE SA", true, "established");
    } else {
        for v in &ike_bad {
            let why = reason_of(v);
            let (severity, what) = match (v.ike, &why) {
                (_, Some(r)) => (Severity::Error, format!("no IKE SA: {}", with_class(r))),
                (SaState::Negotiating, None) => {
                    (Severity::Warning, "the IKE SA is being negotiated".to_owned())
                }
                _ => (
                    Severity::Warning,
                    "no IKE SA (none negotiated yet, or the last attempt failed; the daemon gave no reason)"
                        .to_owned(),
                ),
            };
            out.layer("IKE SA", false, format!("{}: {what}", v.name));
            out.find(Finding::new(
                Code::IkeSaMissing,
                severity,
                format!("{}: {what}", v.name),
                ike_hint(why.as_deref()),
            ));
        }
    }
    let child_bad: Vec<&&ConnView> = loaded
        .iter()
        .filter(|v| v.ike == SaState::Established && v.child != SaState::Established)
        .collect();
    if ike_bad.len() == loaded.len() {
        out.layer("Child SA", false, "not checked: no IKE SA");
    } else if child_bad.is_empty() {
        out.layer("Child SA", true, "installed");
    }
    for v in child_bad {
        let (severity, what) = if v.child == SaState::Negotiating {
            (Severity::Warning, "Child SA being negotiated")
        } else {
            (Severity::Error, "IKE SA established but no Child SA")
        };
        out.layer("Child SA", false, format!("{}: {what}", v.name));
        out.find(Finding::new(
            Code::ChildSaMissing,
            severity,
            format!(
                "{}: {what}{}",
                v.name,
                reason_of(v).map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            "check that the ESP proposals (options:ipsec_esp) of both ends overlap and that the kernel has ESP (modprobe esp4 esp6); the IKE daemon's log says why the Child SA failed",
        ));
    }
}

/// Without a per-connection view: what the live status of the last pass says.
fn from_live(conns: &[String], live: Option<&LiveStatus>, reason: Option<&str>, out: &mut Checks) {
    let state = live.map_or(LiveState::Configured, |l| l.state);
    let list = conns.join(", ");
    match state {
        LiveState::Up => {
            out.layer("connections", true, format!("loaded: {list}"));
            out.layer("IKE SA", true, "established");
            out.layer("Child SA", true, "installed");
        }
        LiveState::Error => {
            let r = reason.unwrap_or("the backend refused the tunnel");
            out.layer("connections", false, format!("not loaded: {r}"));
            out.find(Finding::new(
                Code::ConnNotLoaded,
                Severity::Error,
                format!("connection(s) {list} not loaded: {r}"),
                format!("fix what the reason names, then run `{REFRESH}`"),
            ));
        }
        LiveState::Negotiating => {
            out.layer("connections", true, format!("loaded: {list}"));
            out.layer("IKE SA", false, "being negotiated");
            out.find(Finding::new(
                Code::IkeSaMissing,
                Severity::Warning,
                "the IKE or Child SA is being negotiated",
                ike_hint(reason),
            ));
        }
        LiveState::Down | LiveState::Configured => {
            let what = match reason {
                Some(r) => format!("no IKE SA: {}", with_class(r)),
                None => "no IKE SA".to_owned(),
            };
            out.layer("IKE SA", false, what.clone());
            out.find(Finding::new(
                Code::IkeSaMissing,
                if reason.is_some() {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                what,
                ike_hint(reason),
            ));
        }
    }
}
