//! The `diagnose` reply: text for a person, JSON for scripts.
//!
//! Text: a healthy tunnel is one line when every tunnel is diagnosed; a tunnel with a
//! problem, or the one tunnel asked for, shows each layer checked and then each finding with
//! its one-line fix. JSON (`--json`) is the stable contract of `docs/troubleshooting.md`:
//!
//! ```text
//! [{"interface": str, "state": str,
//!   "findings": [{"code": str, "severity": "error"|"warning"|"info",
//!                 "message": str, "hint": str}]}]
//! ```

use serde_json::json;

use super::Diagnosis;

/// Renders `diagnoses`; `one` when a single tunnel was asked for (its layers always shown).
pub fn render(diagnoses: &[Diagnosis], json: bool, one: bool) -> String {
    if json {
        let v: Vec<_> = diagnoses
            .iter()
            .map(|d| {
                json!({
                    "interface": d.interface,
                    "state": d.state,
                    "findings": d.findings,
                })
            })
            .collect();
        let mut s = serde_json::Value::Array(v).to_string();
        s.push('\n');
        return s;
    }
    if diagnoses.is_empty() {
        return "no tunnels\n".to_owned();
    }
    let mut out = String::new();
    for d in diagnoses {
        if d.healthy() && !one {
            out.push_str(&format!(
                "{}: {}, no problem found ({} layers checked)\n",
                d.interface,
                d.state,
                d.layers.len()
            ));
            continue;
        }
        out.push_str(&format!("{}: {}\n", d.interface, d.state));
        let width = d.layers.iter().map(|l| l.name.len()).max().unwrap_or(0);
        for l in &d.layers {
            let mark = if l.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!("  {mark} {:<width$}  {}\n", l.name, l.text));
        }
        if d.findings.is_empty() {
            out.push_str("  no problem found\n");
        }
        for f in &d.findings {
            out.push_str(&format!(
                "  {} {}: {}\n      fix: {}\n",
                f.severity.as_str(),
                f.code.as_str(),
                f.message,
                f.hint
            ));
        }
    }
    out
}
