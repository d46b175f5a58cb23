//! Prometheus metrics: what the monitor already knows, exported so that nobody needs a sidecar.
//!
//! The event loop owns a [`Metrics`]: plain counters it bumps as things happen (passes, OVSDB
//! reconnects, IKE daemon restarts, state changes) and the last kernel observation
//! ([`traffic`]: SA counters matched to tunnels, `/proc/net/xfrm_stat`, certificate expiry),
//! which the shell refreshes on the periodic timer, never per scrape. A scrape or
//! `metrics/show` asks the event loop for a [`families::Snapshot`], built between passes from
//! that state and the registry's tunnels, which the [`renderer`]'s thread encodes with
//! `prometheus-client`, one body at a time shared by every request of its format that is
//! waiting ([`exposition`] also gives the Prometheus 0.0.4 text): the loop pays for the
//! snapshot only, not for the O(series) encoding. The HTTP endpoint ([`http`]) only
//! moves finished bytes, so a slow client never holds anything the event loop needs.
//!
//! The metric names are a contract, listed in `docs/metrics.md` ([`families::FAMILIES`]).

#[cfg(test)]
mod contract_tests;
pub mod exposition;
pub mod families;
pub mod http;
pub mod renderer;
#[cfg(test)]
mod track_tests;
pub mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use crate::backend::{BackendKind, LiveStatus};
use crate::model::{Tunnel, TunnelType};
pub use exposition::Format;
use families::{Snapshot, TunnelRow};
use traffic::KernelView;

/// What started a pass (the `trigger` label of `ovs_ipsec_passes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An OVSDB change.
    Ovsdb,
    /// The periodic timer.
    Timer,
    /// A backend event (VICI, netlink).
    Event,
    /// `refresh`.
    Control,
}

impl Trigger {
    pub const ALL: [Trigger; 4] = [Self::Ovsdb, Self::Timer, Self::Event, Self::Control];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ovsdb => "ovsdb",
            Self::Timer => "timer",
            Self::Event => "event",
            Self::Control => "control",
        }
    }
}

/// Pass duration buckets, seconds: 1 ms to ~33 s.
fn pass_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16)
}

/// Per-tunnel state kept between passes, for the state-change counter.
#[derive(Debug)]
struct TunnelTrack {
    state: &'static str,
    changes: u64,
    rekeys: u64,
}

/// The counters and observations the event loop feeds; see the module documentation.
#[derive(Debug)]
pub struct Metrics {
    backend: BackendKind,
    per_tunnel: bool,
    passes: [u64; 4],
    pass_duration: Histogram,
    apply_errors: u64,
    ovsdb_connected: bool,
    ovsdb_connects: u64,
    ike_restarts: u64,
    tunnels: BTreeMap<String, TunnelTrack>,
    kernel: KernelView,
}

/// What the event loop lends a snapshot: its tunnels and their live state.
pub struct View<'a> {
    pub tunnels: &'a BTreeMap<String, Tunnel>,
    pub live: &'a BTreeMap<String, LiveStatus>,
    pub apply_errors: &'a BTreeMap<String, String>,
    /// Certificate alerts (an expired certificate makes the tunnel `error`).
    pub cert_alerts: &'a BTreeMap<String, crate::status::CertAlert>,
    /// The backend could not be observed or applied at all (IKE daemon down).
    pub backend_error: bool,
}

impl Metrics {
    pub fn new(backend: BackendKind, per_tunnel: bool) -> Self {
        Self {
            backend,
            per_tunnel,
            passes: [0; 4],
            pass_duration: Histogram::new(pass_buckets()),
            apply_errors: 0,
            ovsdb_connected: false,
            ovsdb_connects: 0,
            ike_restarts: 0,
            tunnels: BTreeMap::new(),
            kernel: KernelView::default(),
        }
    }

    /// A pass ran; `apply_errors` tunnels failed in it.
    pub fn pass(&mut self, trigger: Trigger, took: Duration, apply_errors: usize) {
        if let Some(n) = Trigger::ALL
            .iter()
            .position(|t| *t == trigger)
            .and_then(|i| self.passes.get_mut(i))
        {
            *n += 1;
        }
        self.pass_duration.observe(took.as_secs_f64());
        self.apply_errors += apply_errors as u64;
    }

    pub fn ovsdb_connected(&mut self, up: bool) {
        if up && !self.ovsdb_connected {
            self.ovsdb_connects += 1;
        }
        self.ovsdb_connected = up;
    }

    pub fn ike_daemon_restarted(&mut self) {
        self.ike_restarts += 1;
    }

    /// A rekey of `interface`'s SAs was seen (a new outbound SA beside or after an old one).
    pub fn rekey(&mut self, interface: &str) {
        if let Some(t) = self.tunnels.get_mut(interface) {
            t.rekeys += 1;
        }
    }

    /// Notes each tunnel's current state (what `ipsec-state` says), counting changes, and
    /// forgets removed tunnels so that their series disappear. `changed` names the only
    /// tunnels whose configuration, live state, apply error or certificate alert may differ
    /// since the last call (`None`: any): a one-tunnel change then costs O(1) lookups, not a
    /// pass over every tunnel.
    pub fn track_states(&mut self, view: &View<'_>, changed: Option<&BTreeSet<String>>) {
        let Some(changed) = changed else {
            self.tunnels
                .retain(|name, _| view.tunnels.contains_key(name));
            for (name, t) in view.tunnels {
                self.track(view, name, t);
            }
            return;
        };
        for name in changed {
            match view.tunnels.get(name) {
                Some(t) => self.track(view, name, t),
                None => {
                    self.tunnels.remove(name);
                }
            }
        }
    }

    fn track(&mut self, view: &View<'_>, name: &String, t: &Tunnel) {
        let state = crate::status::tunnel_state(
            t,
            view.live.get(name),
            view.apply_errors.get(name).map(String::as_str),
            view.cert_alerts.get(name),
        );
        match self.tunnels.get_mut(name) {
            Some(track) if track.state != state => {
                track.state = state;
                track.changes += 1;
            }
            Some(_) => {}
            None => {
                self.tunnels.insert(
                    name.clone(),
                    TunnelTrack {
                        state,
                        changes: 0,
                        rekeys: 0,
                    },
                );
            }
        }
    }

    /// The kernel observation, refreshed by the shell (see [`traffic`]).
    pub fn kernel_mut(&mut self) -> &mut KernelView {
        &mut self.kernel
    }

    pub fn kernel(&self) -> &KernelView {
        &self.kernel
    }

    /// Everything a scrape shows, as of now.
    pub fn snapshot(&self, view: &View<'_>) -> Snapshot {
        let mut state_counts = BTreeMap::new();
        let mut rows = Vec::new();
        for (name, t) in view.tunnels {
            let state = crate::status::tunnel_state(
                t,
                view.live.get(name),
                view.apply_errors.get(name).map(String::as_str),
                view.cert_alerts.get(name),
            );
            *state_counts.entry(state).or_insert(0u64) += 1;
            if !self.per_tunnel {
                continue;
            }
            let track = self.tunnels.get(name);
            let conf = t.conf();
            rows.push(TunnelRow {
                name: name.clone(),
                kind: conf
                    .map(|c| c.kind)
                    .or_else(|| TunnelType::parse(&t.raw.kind))
                    .map_or("", TunnelType::as_str),
                remote_ip: conf.map(|c| c.remote_ip.to_string()).unwrap_or_default(),
                up: state == "up",
                changes: track.map_or(0, |t| t.changes),
                rekeys: track.map_or(0, |t| t.rekeys),
                traffic: self.kernel.traffic_of(name),
            });
        }
        Snapshot {
            backend: self.backend.as_str(),
            per_tunnel: self.per_tunnel,
            tunnels: rows,
            state_counts,
            xfrm_errors: self.kernel.xfrm_stat.clone(),
            certs: self.kernel.certs.clone(),
            ike_daemon: (self.backend != BackendKind::None)
                .then_some((!view.backend_error, self.ike_restarts)),
            ovsdb_connected: self.ovsdb_connected,
            ovsdb_reconnects: self.ovsdb_connects.saturating_sub(1),
            pass_duration: self.pass_duration.clone(),
            passes: self.passes,
            commands: crate::backend::command::runs(),
            apply_errors: self.apply_errors,
            vanished: Vec::new(),
        }
    }
}
