//! `tunnels/show`: pure formatting of the model's tunnels and the backend's live status.
//!
//! Text keeps the Python monitor's layout (reference §4) so that scripts and eyes used to it
//! keep working, with three deliberate differences: the PSK prints as `<redacted>`, invalid
//! tunnels are shown (with `INVALID: <reason>` in the header) instead of silently vanishing,
//! and every block gains `IPsec state:` (and `IPsec error:` when there is one) and, when the
//! route toward the peer is known, `Inner MTU:`: the largest inner MTU that fits the path
//! after ESP and tunnel overhead (see `diagnose::mtu`).
//!
//! `tunnels/show --json` prints one object, stable for scripts:
//!
//! ```text
//! {"tunnels": [{
//!    "name": str, "version": int,
//!    "state": "configured"|"negotiating"|"up"|"down"|"error"|"invalid",
//!    "error": str|null,               // why invalid, or the backend's error
//!    "type": "gre"|"geneve"|"vxlan"|str|null,
//!    "local_ip": str|null,            // null: the address of the default route
//!    "remote_ip": str|null, "dst_port": int|null,   // dst_port: UDP port, null for GRE
//!    "address_family": "IPv4"|"IPv6"|null,
//!    "auth": "psk"|"self-signed"|"ca-signed"|null,
//!    "local_cert": str|null, "local_name": str|null, "local_key": str|null,
//!    "ca_cert": str|null, "remote_name": str|null, "remote_cert": str|null,
//!    "psk": "<redacted>"|null, "custom_options": {str: str},
//!    "ofport": int|null, "cfm_state": "up"|"down"|"disabled",
//!    "inner_mtu": int|null,          // null: invalid tunnel or no route to the peer
//!    "active": [str], "details": {heading: [str]}
//!  }],
//!  "skb_mark": "value/mask"|null}
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::backend::{Details, Lines, LiveStatus};
use crate::model::{Auth, Family, Global, Tunnel, Validity};

/// One tunnel to show and what the backend knows about it.
#[derive(Debug, Clone, Copy)]
pub struct ShowTunnel<'a> {
    pub tunnel: &'a Tunnel,
    pub live: Option<&'a LiveStatus>,
    /// The largest inner MTU that fits the path to the peer; `None` when unknown.
    pub inner_mtu: Option<u32>,
}

/// The reply to `tunnels/show` (`json` for `--json`).
pub fn render(json: bool, global: &Global, tunnels: &[ShowTunnel<'_>]) -> String {
    if json {
        render_json(global, tunnels)
    } else {
        render_text(global, tunnels)
    }
}

/// Everything shown about one tunnel, computed once for both formats.
struct View<'a> {
    name: &'a str,
    version: u64,
    /// `Err(reason)` for an invalid tunnel, reason without the leading ": ".
    validity: Result<(), &'a str>,
    state: &'static str,
    error: Option<&'a str>,
    kind: Option<String>,
    /// `None`: the default route's address.
    local_ip: Option<String>,
    remote_ip: Option<String>,
    dst_port: Option<u16>,
    family: Option<Family>,
    auth: Option<&'static str>,
    local_cert: Option<String>,
    local_name: Option<&'a str>,
    local_key: Option<String>,
    ca_cert: Option<String>,
    remote_cert: Option<String>,
    remote_name: Option<&'a str>,
    psk: bool,
    custom: &'a BTreeMap<String, String>,
    ofport: Option<i64>,
    cfm: Option<bool>,
    active: Option<&'a Lines>,
    details: Option<&'a Details>,
    inner_mtu: Option<u32>,
}

impl<'a> View<'a> {
    fn new(t: &'a ShowTunnel<'a>) -> Self {
        let tun = t.tunnel;
        let raw = &tun.raw;
        let live = t.live;
        let base = View {
            name: &tun.name,
            version: tun.version,
            validity: Ok(()),
            state: live.map_or("configured", |l| l.state.as_str()),
            error: live.and_then(|l| l.error()),
            kind: Some(raw.kind.clone()).filter(|k| !k.is_empty()),
            local_ip: raw.local_ip.clone(),
            remote_ip: raw.remote_ip.clone(),
            dst_port: raw.dst_port.as_deref().and_then(|p| p.parse().ok()),
            family: raw_family(raw.local_ip.as_deref(), raw.remote_ip.as_deref()),
            auth: None,
            local_cert: None,
            local_name: None,
            local_key: None,
            ca_cert: None,
            remote_cert: raw.remote_cert.clone(),
            remote_name: raw.remote_name.as_deref(),
            psk: raw.psk_set,
            custom: &raw.custom,
            ofport: tun.ofport,
            cfm: tun.cfm_fault,
            active: live.map(LiveStatus::active),
            details: live.map(LiveStatus::details),
            inner_mtu: t.inner_mtu,
        };
        let c = match &tun.validity {
            Validity::Invalid(reason) => {
                let reason = reason.strip_prefix(": ").unwrap_or(reason);
                return View {
                    validity: Err(reason),
                    state: "invalid",
                    error: Some(reason),
                    ..base
                };
            }
            Validity::Valid(c) => c,
        };
        let pki = c.pki.as_deref();
        let path = |p: &std::path::Path| p.display().to_string();
        View {
            kind: Some(c.kind.to_string()),
            local_ip: c.local_ip.map(|ip| ip.to_string()),
            remote_ip: Some(c.remote_ip.to_string()),
            dst_port: c.udp_port(),
            family: Some(c.family),
            auth: Some(c.auth.kind()),
            local_cert: pki.map(|p| path(&p.certificate)),
            local_name: pki.map(|p| p.local_name.as_str()),
            local_key: pki.map(|p| path(&p.private_key)),
            ca_cert: pki.and_then(|p| p.ca_cert.as_deref()).map(path),
            remote_cert: match &c.auth {
                Auth::SelfSigned { remote_cert, .. } => Some(path(remote_cert)),
                _ => None,
            },
            remote_name: c.auth.remote_name(),
            psk: matches!(c.auth, Auth::Psk(_)),
            custom: &c.custom,
            ..base
        }
    }

    fn cfm_state(&self) -> &'static str {
        match self.cfm {
            None => "Disabled",
            Some(false) => "Up",
            Some(true) => "Down",
        }
    }
}

/// The family an invalid tunnel would have: the remote's, unless an explicit local address
/// disagrees (then none, as the Python monitor reports it).
fn raw_family(local: Option<&str>, remote: Option<&str>) -> Option<Family> {
    let remote = Family::of(&remote?.parse::<IpAddr>().ok()?);
    match local.and_then(|l| l.parse::<IpAddr>().ok()) {
        Some(l) if Family::of(&l) != remote => None,
        _ => Some(remote),
    }
}

const NONE: &str = "None";

fn text_block(out: &mut String, global: &Global, v: &View<'_>) {
    let header = match v.validity {
        Ok(()) => "CONFIGURED".to_string(),
        Err(reason) => format!("INVALID: {reason}"),
    };
    out.push_str(&format!(
        "Interface name: {} v{} ({header})\n",
        v.name, v.version
    ));
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| NONE.to_string());
    let rows: [(&str, String); 16] = [
        ("Tunnel Type:", opt(&v.kind)),
        (
            "Local IP:",
            v.local_ip.clone().unwrap_or_else(|| "%defaultroute".into()),
        ),
        ("Remote IP:", opt(&v.remote_ip)),
        (
            "Address Family:",
            v.family.map_or(NONE.into(), |f| f.to_string()),
        ),
        (
            "SKB mark:",
            global.skb_mark.map_or(NONE.into(), |m| m.to_string()),
        ),
        ("Local cert:", opt(&v.local_cert)),
        ("Local name:", v.local_name.unwrap_or(NONE).to_string()),
        ("Local key:", opt(&v.local_key)),
        ("Remote cert:", opt(&v.remote_cert)),
        ("Remote name:", v.remote_name.unwrap_or(NONE).to_string()),
        ("CA cert:", opt(&v.ca_cert)),
        ("PSK:", if v.psk { "<redacted>" } else { NONE }.to_string()),
        ("Custom Options:", py_dict(v.custom)),
        (
            "Ofport:",
            v.ofport.map_or("Not assigned".into(), |p| p.to_string()),
        ),
        ("CFM state:", v.cfm_state().to_string()),
        ("IPsec state:", v.state.to_string()),
    ];
    for (label, value) in rows {
        out.push_str(&format!("  {label:<16}{value}\n"));
    }
    if let Some(e) = v.error {
        out.push_str(&format!("  {:<16}{e}\n", "IPsec error:"));
    }
    if let Some(mtu) = v.inner_mtu {
        out.push_str(&format!("  {:<16}{mtu}\n", "Inner MTU:"));
    }
    let mut section = |heading: &str, lines: &mut dyn Iterator<Item = &str>| {
        out.push_str(heading);
        out.push('\n');
        for l in lines {
            out.push_str(&format!("  {l}\n"));
        }
    };
    for (heading, mut lines) in v.details.iter().flat_map(|d| d.iter()) {
        section(heading, &mut lines);
    }
    section(
        "IPsec connections that are active:",
        &mut v.active.iter().flat_map(|a| a.iter()),
    );
    out.push('\n');
}

/// The text layout of reference §4.
pub fn render_text(global: &Global, tunnels: &[ShowTunnel<'_>]) -> String {
    if tunnels.is_empty() {
        return "No tunnels configured with IPsec\n".to_string();
    }
    let mut out = String::new();
    for t in tunnels {
        text_block(&mut out, global, &View::new(t));
    }
    out
}

/// The JSON layout documented in the module doc.
pub fn render_json(global: &Global, tunnels: &[ShowTunnel<'_>]) -> String {
    let list: Vec<Value> = tunnels
        .iter()
        .map(|t| {
            let v = View::new(t);
            let details: serde_json::Map<String, Value> = (v.details.iter())
                .flat_map(|d| d.iter())
                .map(|(h, lines)| (h.to_owned(), lines.map(Value::from).collect()))
                .collect();
            let active: Value = v
                .active
                .iter()
                .flat_map(|a| a.iter())
                .map(Value::from)
                .collect();
            json!({
                "name": v.name,
                "version": v.version,
                "state": v.state,
                "error": v.error,
                "type": v.kind,
                "local_ip": v.local_ip,
                "remote_ip": v.remote_ip,
                "dst_port": v.dst_port,
                "address_family": v.family.map(|f| f.to_string()),
                "auth": v.auth,
                "local_cert": v.local_cert,
                "local_name": v.local_name,
                "local_key": v.local_key,
                "ca_cert": v.ca_cert,
                "remote_name": v.remote_name,
                "remote_cert": v.remote_cert,
                "psk": v.psk.then_some("<redacted>"),
                "custom_options": v.custom,
                "ofport": v.ofport,
                "cfm_state": v.cfm_state().to_ascii_lowercase(),
                "inner_mtu": v.inner_mtu,
                "active": active,
                "details": details,
            })
        })
        .collect();
    let doc = json!({
        "tunnels": list,
        "skb_mark": global.skb_mark.map(|m| m.to_string()),
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// A Python `repr()` of a `dict` of strings, as the Python monitor printed custom options.
fn py_dict(map: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}: {}", py_str(k), py_str(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// A Python `repr()` of a `str`: single quotes unless the text holds only `'`.
fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
#[path = "show_tests.rs"]
mod tests;
