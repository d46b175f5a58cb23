//! The two text formats a scrape can get, from one `prometheus-client` encoding.
//!
//! `prometheus-client` writes OpenMetrics 1.0. The Prometheus text format 0.0.4 (what
//! `promtool check metrics`, older scrapers and `metrics/show` readers expect) differs for our
//! families only in three ways, which [`to_prometheus_text`] undoes: a counter family is named
//! with its `_total` suffix in `# HELP`/`# TYPE`, there is no `# EOF` line, and no `# UNIT`.
//! Samples, label escaping and histogram series are the same in both.

use prometheus_client::registry::Registry;

use super::families::{FAMILIES, Snapshot};

/// Which text format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: the default, and `metrics/show`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`, when the scraper's `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The format an HTTP `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes `snapshot` in `format`.
pub fn render(snapshot: Snapshot, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    // Writing to a String cannot fail; the collector only fails when its writer does.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    match format {
        Format::OpenMetrics => out,
        Format::Prometheus => to_prometheus_text(&out),
    }
}

/// OpenMetrics text of our families → Prometheus text 0.0.4 (see the module documentation).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            let full = FAMILIES
                .iter()
                .find(|f| f.kind == "counter" && f.name.strip_suffix("_total") == Some(name))?;
            Some(format!("{tag}{} {tail}", full.name))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_eof_goes() {
        let om = "# HELP ovs_ipsec_passes Reconcile passes.\n\
                  # TYPE ovs_ipsec_passes counter\n\
                  ovs_ipsec_passes_total{trigger=\"timer\"} 3\n\
                  # HELP ovs_ipsec_tunnels Tunnels.\n\
                  # TYPE ovs_ipsec_tunnels gauge\n\
                  ovs_ipsec_tunnels{state=\"up\"} 1\n\
                  # EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP ovs_ipsec_passes_total Reconcile passes.\n\
             # TYPE ovs_ipsec_passes_total counter\n\
             ovs_ipsec_passes_total{trigger=\"timer\"} 3\n\
             # HELP ovs_ipsec_tunnels Tunnels.\n\
             # TYPE ovs_ipsec_tunnels gauge\n\
             ovs_ipsec_tunnels{state=\"up\"} 1\n"
        );
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
    }
}
