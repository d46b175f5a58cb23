//! The metric families: a [`Snapshot`] of what a scrape shows, encoded with
//! `prometheus-client` as a [`Collector`].
//!
//! The snapshot owns its data (a `Collector` is `'static`), built by the event loop between
//! passes; encoding it never touches daemon state. Per-tunnel families are written straight
//! from the snapshot's rows instead of living in `prometheus-client` `Family` maps, which
//! would keep a hash map entry, an `Arc` and a copy of every label per series at all times.

use std::collections::BTreeMap;
use std::fmt::Write;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::Histogram;

use super::traffic::{CertExpiry, Traffic};
use crate::backend::command::CmdResult;

/// One metric family of the contract: name (as Prometheus 0.0.4 and PromQL know it), type,
/// labels, whether `--metrics-per-tunnel=false` drops it.
#[derive(Debug, Clone, Copy)]
pub struct FamilySpec {
    pub name: &'static str,
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub per_tunnel: bool,
    pub help: &'static str,
}

const fn fam(
    name: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    per_tunnel: bool,
    help: &'static str,
) -> FamilySpec {
    FamilySpec {
        name,
        kind,
        labels,
        per_tunnel,
        help,
    }
}

/// Every family, in exposition order: the contract `docs/metrics.md` lists.
pub const FAMILIES: &[FamilySpec] = &[
    fam(
        "ovs_ipsec_monitor_info",
        "gauge",
        &["version", "backend"],
        false,
        "Version of ovs-monitor-ipsec and the backend it drives.",
    ),
    fam(
        "ovs_ipsec_tunnels",
        "gauge",
        &["state"],
        false,
        "Tunnels by ipsec-state.",
    ),
    fam(
        "ovs_ipsec_tunnel_up",
        "gauge",
        &["interface", "type", "remote_ip"],
        true,
        "1 when the tunnel's ipsec-state is up, else 0.",
    ),
    fam(
        "ovs_ipsec_tunnel_state_changes_total",
        "counter",
        &["interface"],
        true,
        "Changes of the tunnel's ipsec-state.",
    ),
    fam(
        "ovs_ipsec_sa_bytes_total",
        "counter",
        &["interface", "direction"],
        true,
        "Bytes through the tunnel's kernel IPsec SAs.",
    ),
    fam(
        "ovs_ipsec_sa_packets_total",
        "counter",
        &["interface", "direction"],
        true,
        "Packets through the tunnel's kernel IPsec SAs.",
    ),
    fam(
        "ovs_ipsec_rekeys_total",
        "counter",
        &["interface"],
        true,
        "New outbound SAs that replaced or joined an older one.",
    ),
    fam(
        "ovs_ipsec_xfrm_vanished_total",
        "counter",
        &["interface", "object"],
        true,
        "XFRM objects of the tunnel that vanished behind the monitor's back.",
    ),
    fam(
        "ovs_ipsec_xfrm_errors_total",
        "counter",
        &["error"],
        false,
        "Counters of /proc/net/xfrm_stat.",
    ),
    fam(
        "ovs_ipsec_cert_expiry_timestamp_seconds",
        "gauge",
        &["role", "subject"],
        false,
        "notAfter of a certificate in use.",
    ),
    fam(
        "ovs_ipsec_ike_daemon_up",
        "gauge",
        &[],
        false,
        "1 when the IKE daemon answers, else 0.",
    ),
    fam(
        "ovs_ipsec_ike_daemon_restarts_total",
        "counter",
        &[],
        false,
        "IKE daemon restarts the monitor noticed.",
    ),
    fam(
        "ovs_ipsec_ovsdb_connected",
        "gauge",
        &[],
        false,
        "1 while connected to OVSDB, else 0.",
    ),
    fam(
        "ovs_ipsec_ovsdb_reconnects_total",
        "counter",
        &[],
        false,
        "OVSDB connections after the first.",
    ),
    fam(
        "ovs_ipsec_pass_duration_seconds",
        "histogram",
        &[],
        false,
        "Duration of reconcile passes.",
    ),
    fam(
        "ovs_ipsec_passes_total",
        "counter",
        &["trigger"],
        false,
        "Reconcile passes by what started them.",
    ),
    fam(
        "ovs_ipsec_external_commands_total",
        "counter",
        &["command", "result"],
        false,
        "External commands run, by program and result.",
    ),
    fam(
        "ovs_ipsec_apply_errors_total",
        "counter",
        &[],
        false,
        "Tunnels whose actions failed, summed over passes.",
    ),
];

/// One tunnel's per-tunnel series.
#[derive(Debug, Clone)]
pub struct TunnelRow {
    pub name: String,
    /// `gre`, `geneve`, `vxlan`; empty for an invalid tunnel.
    pub kind: &'static str,
    /// Empty for an invalid tunnel.
    pub remote_ip: String,
    pub up: bool,
    pub changes: u64,
    pub rekeys: u64,
    /// `None` until the kernel was read, or when no SA of the tunnel was ever seen.
    pub traffic: Option<Traffic>,
}

/// Everything one scrape shows; see the module documentation.
#[derive(Debug)]
pub struct Snapshot {
    pub backend: &'static str,
    pub per_tunnel: bool,
    pub tunnels: Vec<TunnelRow>,
    pub state_counts: BTreeMap<&'static str, u64>,
    pub xfrm_errors: Vec<(String, u64)>,
    pub certs: Vec<CertExpiry>,
    /// (up, restarts); `None` with `--ike-daemon=none`.
    pub ike_daemon: Option<(bool, u64)>,
    pub ovsdb_connected: bool,
    pub ovsdb_reconnects: u64,
    pub pass_duration: Histogram,
    pub passes: [u64; 4],
    pub commands: BTreeMap<(String, CmdResult), u64>,
    pub apply_errors: u64,
    /// (interface, object, count) of the XFRM objects that vanished behind our back, as the
    /// kernel's notifications showed them (`object`: `policy`, `sa`, `expire`).
    pub vanished: Vec<(String, &'static str, u64)>,
}

/// A label value, escaped as both text formats require (`\`, `"` and newline);
/// prometheus-client writes label values as given.
#[derive(Debug)]
struct Lv<'a>(&'a str);

impl EncodeLabelValue for Lv<'_> {
    fn encode(&self, enc: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => enc.write_str("\\\\")?,
                '"' => enc.write_str("\\\"")?,
                '\n' => enc.write_str("\\n")?,
                c => enc.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn gauge(m: &mut MetricEncoder, labels: &[(&str, Lv<'_>)], v: i64) -> std::fmt::Result {
    if labels.is_empty() {
        return m.encode_gauge(&v);
    }
    m.encode_family(&labels)?.encode_gauge(&v)
}

fn counter(m: &mut MetricEncoder, labels: &[(&str, Lv<'_>)], v: u64) -> std::fmt::Result {
    if labels.is_empty() {
        return m.encode_counter::<NoLabelSet, u64, u64>(&v, None);
    }
    m.encode_family(&labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

/// OpenMetrics names a counter family without `_total` and an info family without `_info`.
fn om_name(spec: &FamilySpec) -> &'static str {
    match spec.kind {
        "counter" => spec.name.strip_suffix("_total").unwrap_or(spec.name),
        "info" => spec.name.strip_suffix("_info").unwrap_or(spec.name),
        _ => spec.name,
    }
}

fn metric_type(kind: &str) -> MetricType {
    match kind {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        _ => MetricType::Unknown,
    }
}

impl Snapshot {
    fn family(&self, spec: &FamilySpec, mut enc: MetricEncoder) -> std::fmt::Result {
        if spec.name == "ovs_ipsec_pass_duration_seconds" {
            return self.pass_duration.encode(enc);
        }
        let m = &mut enc;
        let per_tunnel = || self.tunnels.iter();
        match spec.name {
            "ovs_ipsec_monitor_info" => gauge(
                m,
                &[
                    ("version", Lv(env!("CARGO_PKG_VERSION"))),
                    ("backend", Lv(self.backend)),
                ],
                1,
            ),
            "ovs_ipsec_tunnels" => {
                for state in crate::status::STATES {
                    let n = self.state_counts.get(state).copied().unwrap_or(0);
                    gauge(m, &[("state", Lv(state))], n as i64)?;
                }
                Ok(())
            }
            "ovs_ipsec_tunnel_up" => per_tunnel().try_for_each(|t| {
                let labels = [
                    ("interface", Lv(&t.name)),
                    ("type", Lv(t.kind)),
                    ("remote_ip", Lv(&t.remote_ip)),
                ];
                gauge(m, &labels, i64::from(t.up))
            }),
            "ovs_ipsec_tunnel_state_changes_total" => {
                per_tunnel().try_for_each(|t| counter(m, &[("interface", Lv(&t.name))], t.changes))
            }
            "ovs_ipsec_sa_bytes_total" | "ovs_ipsec_sa_packets_total" => {
                let bytes = spec.name == "ovs_ipsec_sa_bytes_total";
                per_tunnel().try_for_each(|t| {
                    let Some(tr) = &t.traffic else { return Ok(()) };
                    for (dir, c) in [("in", &tr.inbound), ("out", &tr.outbound)] {
                        let v = if bytes { c.bytes } else { c.packets };
                        counter(m, &[("interface", Lv(&t.name)), ("direction", Lv(dir))], v)?;
                    }
                    Ok(())
                })
            }
            "ovs_ipsec_rekeys_total" => {
                per_tunnel().try_for_each(|t| counter(m, &[("interface", Lv(&t.name))], t.rekeys))
            }
            "ovs_ipsec_xfrm_vanished_total" => self.vanished.iter().try_for_each(|(t, o, n)| {
                counter(m, &[("interface", Lv(t)), ("object", Lv(o))], *n)
            }),
            "ovs_ipsec_xfrm_errors_total" => self
                .xfrm_errors
                .iter()
                .try_for_each(|(k, v)| counter(m, &[("error", Lv(k))], *v)),
            "ovs_ipsec_cert_expiry_timestamp_seconds" => self.certs.iter().try_for_each(|c| {
                let labels = [("role", Lv(c.role.as_str())), ("subject", Lv(&c.subject))];
                gauge(m, &labels, c.not_after)
            }),
            "ovs_ipsec_ike_daemon_up" => match self.ike_daemon {
                Some((up, _)) => gauge(m, &[], i64::from(up)),
                None => Ok(()),
            },
            "ovs_ipsec_ike_daemon_restarts_total" => match self.ike_daemon {
                Some((_, n)) => counter(m, &[], n),
                None => Ok(()),
            },
            "ovs_ipsec_ovsdb_connected" => gauge(m, &[], i64::from(self.ovsdb_connected)),
            "ovs_ipsec_ovsdb_reconnects_total" => counter(m, &[], self.ovsdb_reconnects),
            "ovs_ipsec_passes_total" => super::Trigger::ALL
                .iter()
                .zip(self.passes)
                .try_for_each(|(t, n)| counter(m, &[("trigger", Lv(t.as_str()))], n)),
            "ovs_ipsec_external_commands_total" => {
                self.commands.iter().try_for_each(|((cmd, result), n)| {
                    let labels = [("command", Lv(cmd)), ("result", Lv(result.as_str()))];
                    counter(m, &labels, *n)
                })
            }
            "ovs_ipsec_apply_errors_total" => counter(m, &[], self.apply_errors),
            _ => Ok(()),
        }
    }

    /// Whether the family has any series in this snapshot (a family without series is left
    /// out, as Prometheus clients do).
    fn has_series(&self, spec: &FamilySpec) -> bool {
        if spec.per_tunnel && !self.per_tunnel {
            return false;
        }
        match spec.name {
            "ovs_ipsec_sa_bytes_total" | "ovs_ipsec_sa_packets_total" => {
                self.tunnels.iter().any(|t| t.traffic.is_some())
            }
            "ovs_ipsec_tunnel_up"
            | "ovs_ipsec_tunnel_state_changes_total"
            | "ovs_ipsec_rekeys_total" => !self.tunnels.is_empty(),
            "ovs_ipsec_xfrm_vanished_total" => !self.vanished.is_empty(),
            "ovs_ipsec_xfrm_errors_total" => !self.xfrm_errors.is_empty(),
            "ovs_ipsec_cert_expiry_timestamp_seconds" => !self.certs.is_empty(),
            "ovs_ipsec_ike_daemon_up" | "ovs_ipsec_ike_daemon_restarts_total" => {
                self.ike_daemon.is_some()
            }
            "ovs_ipsec_external_commands_total" => !self.commands.is_empty(),
            _ => true,
        }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for spec in FAMILIES.iter().filter(|s| self.has_series(s)) {
            let m = encoder.encode_descriptor(
                om_name(spec),
                spec.help,
                None,
                metric_type(spec.kind),
            )?;
            self.family(spec, m)?;
        }
        Ok(())
    }
}
