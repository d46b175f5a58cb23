//! The two text formats a scrape can get, from one `prometheus-client` encoding.
//!
//! `prometheus-client` writes OpenMetrics 1.0. The Prometheus text format 0.0.4 (what
//! `promtool check metrics`, older scrapers and `metrics/show` readers expect) differs for our
//! families only in three ways, which a writer between the encoder and the body undoes line by
//! line as the encoder writes (so the OpenMetrics text is never held whole): a counter family
//! is named with its `_total` suffix in `# HELP`/`# TYPE`, there is no `# EOF` line, and no
//! `# UNIT`. Samples, label escaping and histogram series are the same in both.

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
    let mut out = String::new();
    render_into(snapshot, format, &mut out);
    out
}

/// Encodes `snapshot` in `format`, appending to `out`. The 0.0.4 text is converted line by
/// line as the encoder writes, so the OpenMetrics text is never held whole.
pub fn render_into(snapshot: Snapshot, format: Format, out: &mut String) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    // Writing to a String cannot fail; the collector only fails when its writer does.
    let _ = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(out, &registry),
        Format::Prometheus => {
            let mut text = PrometheusText {
                out,
                line: String::new(),
            };
            prometheus_client::encoding::text::encode(&mut text, &registry).map(|()| text.finish())
        }
    };
}

/// A writer that turns OpenMetrics text of our families into Prometheus text 0.0.4 (see the
/// module documentation), holding at most one line of the input.
struct PrometheusText<'a> {
    out: &'a mut String,
    /// The input line being written.
    line: String,
}

impl PrometheusText<'_> {
    /// The end of the input: a last line without its newline is still a line.
    fn finish(&mut self) {
        if !self.line.is_empty() {
            self.end_line();
        }
    }

    /// The line is complete: writes it out, converted.
    fn end_line(&mut self) {
        let line = self.line.as_str();
        if line == "# EOF" || line.starts_with("# UNIT ") {
            self.line.clear();
            return;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let (name, tail) = line.strip_prefix(tag)?.split_once(' ')?;
            let full = FAMILIES
                .iter()
                .find(|f| f.kind == "counter" && f.name.strip_suffix("_total") == Some(name))?;
            Some((tag, full.name, tail))
        });
        match renamed {
            Some((tag, name, tail)) => {
                for part in [tag, name, " ", tail] {
                    self.out.push_str(part);
                }
            }
            None => self.out.push_str(line),
        }
        self.out.push('\n');
        self.line.clear();
    }
}

impl std::fmt::Write for PrometheusText<'_> {
    fn write_str(&mut self, mut s: &str) -> std::fmt::Result {
        while let Some((head, rest)) = s.split_once('\n') {
            self.line.push_str(head);
            self.end_line();
            s = rest;
        }
        self.line.push_str(s);
        Ok(())
    }
}

/// OpenMetrics text of our families → Prometheus text 0.0.4, as [`render_into`] writes it.
#[cfg(test)]
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::new();
    let mut text = PrometheusText {
        out: &mut out,
        line: String::new(),
    };
    // Piece by piece, as the encoder writes.
    for piece in openmetrics.split_inclusive([' ', '{', '\n']) {
        let _ = std::fmt::Write::write_str(&mut text, piece);
    }
    text.finish();
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
