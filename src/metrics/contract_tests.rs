//! The metric names are a contract: `docs/metrics.md`, [`FAMILIES`], the exposition and the
//! Grafana dashboard must agree.

use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::metrics::histogram::Histogram;

use super::exposition::{Format, render};
use super::families::{FAMILIES, Snapshot, TunnelRow};
use super::traffic::{CertExpiry, Counts, Role, Traffic};
use crate::backend::command::CmdResult;

const DOC: &str = include_str!("../../docs/metrics.md");
const DASHBOARD: &str = include_str!("../../docs/grafana/ovs-ipsec.json");

/// A snapshot in which every family has series.
fn full(per_tunnel: bool) -> Snapshot {
    let pass_duration = Histogram::new([0.01, 0.1, 1.0]);
    pass_duration.observe(0.05);
    Snapshot {
        backend: "strongswan",
        per_tunnel,
        tunnels: vec![TunnelRow {
            name: "gnv0".into(),
            kind: "geneve",
            remote_ip: "192.0.2.2".into(),
            up: true,
            changes: 2,
            rekeys: 1,
            traffic: Some(Traffic {
                inbound: Counts {
                    bytes: 100,
                    packets: 1,
                },
                outbound: Counts {
                    bytes: 200,
                    packets: 2,
                },
            }),
        }],
        state_counts: BTreeMap::from([("up", 1)]),
        xfrm_errors: vec![("XfrmInNoStates".into(), 3)],
        certs: vec![CertExpiry {
            role: Role::Local,
            subject: "host-a".into(),
            not_after: 1_900_000_000,
        }],
        ike_daemon: Some((true, 0)),
        ovsdb_connected: true,
        ovsdb_reconnects: 0,
        pass_duration,
        passes: [1, 2, 3, 4],
        commands: BTreeMap::from([(("ipsec".to_string(), CmdResult::Ok), 5)]),
        apply_errors: 0,
        vanished: vec![("gnv0".into(), "policy", 1)],
    }
}

/// Label names by family.
type Labels = BTreeMap<String, BTreeSet<String>>;

/// (name, type) of every `# TYPE` line, and the label names of each family's samples.
fn exposed(text: &str) -> (Vec<(String, String)>, Labels) {
    let types = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = l
            .split_once('{')
            .unwrap_or((l.split(' ').next().unwrap_or(""), ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(name);
        let set = labels.entry(family.to_owned()).or_default();
        for pair in rest.split("\",") {
            if let Some((k, _)) = pair.split_once("=\"") {
                set.insert(k.trim_start_matches(',').to_owned());
            }
        }
        set.remove("le");
    }
    (types, labels)
}

/// The rows of the table in `docs/metrics.md`: (name, type, labels).
fn documented() -> Vec<(String, String, BTreeSet<String>)> {
    DOC.lines()
        .filter(|l| l.starts_with("| `ovs_ipsec_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let labels = cells[3]
                .split(',')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .filter(|c| !c.is_empty())
                .collect();
            (
                cells[1].trim_matches('`').to_owned(),
                cells[2].to_owned(),
                labels,
            )
        })
        .collect()
}

#[test]
fn doc_table_families_and_exposition_agree() {
    let doc = documented();
    let spec: Vec<(String, String, BTreeSet<String>)> = FAMILIES
        .iter()
        .map(|f| {
            let labels = f.labels.iter().map(|l| l.to_string()).collect();
            (f.name.to_owned(), f.kind.to_owned(), labels)
        })
        .collect();
    assert_eq!(doc, spec);
    let (types, labels) = exposed(&render(full(true), Format::Prometheus));
    let doc_types: Vec<(String, String)> =
        doc.iter().map(|(n, t, _)| (n.clone(), t.clone())).collect();
    assert_eq!(types, doc_types);
    for (name, _, want) in &doc {
        assert_eq!(labels.get(name), Some(want), "{name}");
    }
}

#[test]
fn per_tunnel_false_drops_exactly_the_per_tunnel_families() {
    let (types, _) = exposed(&render(full(false), Format::Prometheus));
    let names: BTreeSet<&str> = types.iter().map(|(n, _)| n.as_str()).collect();
    for f in FAMILIES {
        assert_eq!(names.contains(f.name), !f.per_tunnel, "{}", f.name);
        assert!(DOC.contains(&format!("`{}`", f.name)), "{}", f.name);
    }
    assert!(DOC.contains("`--metrics-per-tunnel=false` drops"));
}

#[test]
fn openmetrics_has_the_same_samples_and_an_eof() {
    let om = render(full(true), Format::OpenMetrics);
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE ovs_ipsec_passes counter\n"));
    let samples = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        samples(&om),
        samples(&render(full(true), Format::Prometheus))
    );
}

#[test]
fn label_values_are_escaped() {
    let mut s = full(true);
    s.tunnels[0].name = "we\"ird\\name\n".into();
    let text = render(s, Format::Prometheus);
    assert!(
        text.contains("ovs_ipsec_rekeys_total{interface=\"we\\\"ird\\\\name\\n\"} 1\n"),
        "{text}"
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_exposed() {
    let (types, _) = exposed(&render(full(true), Format::Prometheus));
    let mut names: BTreeSet<String> = types.into_iter().map(|(n, _)| n).collect();
    for (n, t) in FAMILIES.iter().map(|f| (f.name, f.kind)) {
        if t == "histogram" {
            names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{n}{s}")));
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 6, "{exprs:?}");
    let mut queried = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("ovs_ipsec_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            queried.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    for q in &queried {
        assert!(
            names.contains(q),
            "the dashboard queries {q}, which is not exposed"
        );
    }
    for panel in [
        "Tunnels by state",
        "Tunnels down",
        "XFRM errors rate",
        "SA traffic",
        "Certificate days left",
        "Pass duration",
    ] {
        assert!(
            DASHBOARD.contains(&format!("\"title\": \"{panel}\"")),
            "{panel}"
        );
    }
}

/// Every `expr` and templating `query` string in the dashboard.
fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
