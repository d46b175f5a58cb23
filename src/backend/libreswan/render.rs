//! Rendering of the two files the monitor owns, `--ipsec-conf` and `--ipsec-secrets`, from
//! the desired state. The layout lives in `templates/libreswan/` (admins may override it);
//! this module only decides the values. Each tunnel's conn sections (`conn.conf`) and secrets
//! line (`secret.conf`) are rendered on their own and kept in a [`Sections`] cache until that
//! tunnel, the layout or its conns' start aliases change, so one changed tunnel costs one
//! render instead of N.
//!
//! Layout rules (reference §3.2): when we own the root config (no distinct
//! `--root-ipsec-conf`), the file has `config setup` and a `conn %default` carrying the base
//! and crypto lines; otherwise each conn repeats crypto and base lines, because an included
//! file must not redefine `%default` for the admin's own conns. `--use-default-crypto` leaves
//! `ike=`, `esp=` and `ikev2=` out. The PSK is written as `0x` hex so that no character of it
//! can end its field.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::version::Version;
use crate::backend::secrets::psk_hex;
use crate::backend::templates::{SectionCache, TemplateError, Templates, assemble};
use crate::model::{Auth, Desired, DesiredTunnel, Family, TunnelType};

pub const CONF_TEMPLATE: &str = "ipsec.conf";
/// One `conn` section, rendered on its own so it can be cached.
pub const CONN_TEMPLATE: &str = "conn.conf";
pub const SECRETS_TEMPLATE: &str = "ipsec.secrets";
/// One tunnel's line of `ipsec.secrets`, rendered on its own so it can be cached.
pub const SECRET_TEMPLATE: &str = "secret.conf";

/// The compiled-in templates.
pub const DEFAULTS: &[(&str, &str)] = &[
    (
        CONF_TEMPLATE,
        include_str!("../../../templates/libreswan/ipsec.conf"),
    ),
    (
        CONN_TEMPLATE,
        include_str!("../../../templates/libreswan/conn.conf"),
    ),
    (
        SECRETS_TEMPLATE,
        include_str!("../../../templates/libreswan/ipsec.secrets"),
    ),
    (
        SECRET_TEMPLATE,
        include_str!("../../../templates/libreswan/secret.conf"),
    ),
];

/// Shunt connections that drop unencrypted tunnel traffic when `ipsec_skb_mark` is set.
pub const SHUNTS: &[(&str, &str)] = &[
    ("gre", "gre"),
    ("geneve", "udp/6081"),
    ("vxlan", "udp/4789"),
];

/// Prefix of the shunt connection names.
pub const SHUNT_PREFIX: &str = "prevent_unencrypted_";

/// The alias of every conn this monitor writes (see the module doc).
pub const ALIAS_ALL: &str = "ovs-monitor-ipsec:all";

/// Prefix of the per-batch start alias.
pub const START_PREFIX: &str = "ovs-monitor-ipsec:start:";

/// The `connalias` value of conn `name`, with its batch's start alias if it has one.
fn connalias(name: &str, start: Option<&str>) -> String {
    match start {
        Some(token) => format!("{ALIAS_ALL} {token} {name}"),
        None => format!("{ALIAS_ALL} {name}"),
    }
}

/// The conns named in a file we wrote, with the start alias of those that have one: a
/// restarted monitor keeps them, so an unchanged desired state renders the same file.
pub fn parse_own_file(text: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let (mut conns, mut starts) = (Vec::new(), BTreeMap::new());
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("conn ") {
            let name = name.trim();
            current = (name != "%default" && !name.starts_with(SHUNT_PREFIX)).then_some(name);
            conns.extend(current.map(str::to_owned));
        } else if let (Some(conn), Some(alias)) = (current, line.trim().strip_prefix("connalias="))
            && let Some(token) = alias
                .trim_matches('"')
                .split_whitespace()
                .find(|w| w.starts_with(START_PREFIX))
        {
            starts.insert(conn.to_owned(), token.to_owned());
        }
    }
    (conns, starts)
}

/// Layout options from the command line and the daemon's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// We own the root config: write `config setup` and `conn %default`.
    pub own_root: bool,
    /// `--use-default-crypto`.
    pub default_crypto: bool,
    pub keyingtries: bool,
}

impl Layout {
    pub fn new(own_root: bool, default_crypto: bool, version: &Version) -> Self {
        Self {
            own_root,
            default_crypto,
            keyingtries: version.wants_keyingtries(),
        }
    }

    fn base(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.keyingtries {
            v.push("keyingtries=%forever");
        }
        v.extend(["type=transport", "auto=route"]);
        v
    }

    fn crypto(&self) -> Vec<&'static str> {
        if self.default_crypto {
            Vec::new()
        } else {
            vec!["ike=aes_gcm256-sha2_256", "esp=aes_gcm256", "ikev2=insist"]
        }
    }
}

#[derive(Serialize)]
struct ConfCtx<'a> {
    own_root: bool,
    base: Vec<&'static str>,
    crypto: Vec<&'static str>,
    shunts: Vec<ShuntCtx>,
    mark: String,
    /// The tunnels' conn sections, already rendered through [`CONN_TEMPLATE`].
    sections: Vec<&'a str>,
}

/// What [`CONN_TEMPLATE`] gets: one conn and the layout lines a conn may repeat.
#[derive(Serialize)]
struct ConnFileCtx<'a> {
    own_root: bool,
    base: Vec<&'static str>,
    crypto: Vec<&'static str>,
    c: ConnCtx<'a>,
}

/// What a tunnel's text is rendered from: the tunnel, the layout and the start alias of each
/// of its conns.
#[derive(PartialEq)]
pub struct SectionInput {
    tunnel: DesiredTunnel,
    layout: Layout,
    starts: Vec<Option<String>>,
}

/// A tunnel's rendered text, kept between passes. Not `Debug`: `secret` holds its PSK.
pub struct TunnelText {
    conf: String,
    secret: Option<String>,
}

/// The tunnels' rendered text, kept between passes (see [`SectionCache`]).
pub type Sections = SectionCache<SectionInput, Arc<TunnelText>>;

/// Both files' text. Not `Debug`: `secrets` holds PSKs.
pub struct Rendered {
    pub conf: String,
    pub secrets: String,
}

#[derive(Serialize)]
struct ShuntCtx {
    name: &'static str,
    proto: &'static str,
    alias: String,
}

#[derive(Serialize)]
struct ConnCtx<'a> {
    name: String,
    alias: String,
    ipv6: bool,
    left: String,
    right: String,
    auth: &'static str,
    local_name: &'a str,
    remote_name: &'a str,
    leftprotoport: String,
    rightprotoport: String,
    custom: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct SecretsCtx<'a> {
    /// Lines already rendered through [`SECRET_TEMPLATE`].
    lines: Vec<&'a str>,
}

#[derive(Serialize)]
struct PskCtx {
    remote: String,
    hex: String,
}

/// The connections of one tunnel: (name, left protoport, right protoport). The inbound conn
/// selects traffic to our tunnel port, the outbound one traffic to the peer's.
pub fn conn_selectors(t: &DesiredTunnel) -> Vec<(String, String, String)> {
    let names = t.conn_names();
    match (t.conf.kind, t.conf.udp_port()) {
        (TunnelType::Gre, _) | (_, None) => names
            .into_iter()
            .map(|n| (n, "gre".to_owned(), "gre".to_owned()))
            .collect(),
        (_, Some(port)) => names
            .into_iter()
            .zip([
                (format!("udp/{port}"), "udp".to_owned()),
                ("udp".to_owned(), format!("udp/{port}")),
            ])
            .map(|(n, (l, r))| (n, l, r))
            .collect(),
    }
}

fn conn_ctxs<'a>(t: &'a DesiredTunnel, starts: &BTreeMap<String, String>) -> Vec<ConnCtx<'a>> {
    let c = &t.conf;
    let local_name = c.pki.as_ref().map(|p| p.local_name.as_str()).unwrap_or("");
    conn_selectors(t)
        .into_iter()
        .map(|(name, l, r)| ConnCtx {
            alias: connalias(&name, starts.get(&name).map(String::as_str)),
            name,
            ipv6: c.family == Family::V6,
            left: c
                .local_ip
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "%defaultroute".into()),
            right: c.remote_ip.to_string(),
            auth: c.auth.kind(),
            local_name,
            remote_name: c.auth.remote_name().unwrap_or(""),
            leftprotoport: l,
            rightprotoport: r,
            custom: c
                .custom
                .iter()
                .map(|(k, v)| KeyValue { key: k, value: v })
                .collect(),
        })
        .collect()
}

/// One tunnel's conn sections and secrets line.
fn tunnel_text(templates: &Templates, i: &SectionInput) -> Result<Arc<TunnelText>, TemplateError> {
    let t = &i.tunnel;
    let starts: BTreeMap<String, String> = t
        .conn_names()
        .into_iter()
        .zip(&i.starts)
        .filter_map(|(c, s)| Some((c, s.clone()?)))
        .collect();
    let conf = conn_ctxs(t, &starts)
        .into_iter()
        .map(|c| {
            let ctx = ConnFileCtx {
                own_root: i.layout.own_root,
                base: i.layout.base(),
                crypto: i.layout.crypto(),
                c,
            };
            templates.render(CONN_TEMPLATE, &ctx)
        })
        .collect::<Result<String, _>>()?;
    let secret = match &t.conf.auth {
        Auth::Psk(psk) => {
            let ctx = PskCtx {
                remote: t.conf.remote_ip.to_string(),
                hex: psk_hex(psk),
            };
            Some(templates.render(SECRET_TEMPLATE, &ctx)?)
        }
        _ => None,
    };
    Ok(Arc::new(TunnelText { conf, secret }))
}

/// The text of `--ipsec-conf` and `--ipsec-secrets` for `desired`, reusing unchanged tunnels'
/// text from `sections`; `starts` maps conns to their start alias.
pub fn render(
    templates: &Templates,
    sections: &Sections,
    layout: &Layout,
    desired: &Desired,
    starts: &BTreeMap<String, String>,
) -> Result<Rendered, TemplateError> {
    let texts = sections.render_all(
        desired.tunnels.iter().map(|(name, t)| {
            let input = SectionInput {
                starts: t
                    .conn_names()
                    .iter()
                    .map(|c| starts.get(c).cloned())
                    .collect(),
                tunnel: t.clone(),
                layout: layout.clone(),
            };
            (name.as_str(), input)
        }),
        |i| tunnel_text(templates, i),
    )?;
    let mark = desired.global.skb_mark;
    let conf_ctx = |sections| ConfCtx {
        own_root: layout.own_root,
        base: layout.base(),
        crypto: layout.crypto(),
        shunts: if mark.is_some() {
            SHUNTS
                .iter()
                .map(|(name, proto)| ShuntCtx {
                    name,
                    proto,
                    alias: connalias(&format!("{SHUNT_PREFIX}{name}"), None),
                })
                .collect()
        } else {
            Vec::new()
        },
        mark: mark.map(|m| m.to_string()).unwrap_or_default(),
        sections,
    };
    let sections: Vec<&str> = texts.iter().map(|t| t.conf.as_str()).collect();
    let lines: Vec<&str> = texts.iter().filter_map(|t| t.secret.as_deref()).collect();
    Ok(Rendered {
        conf: assemble(&sections, |sections| {
            templates.render(CONF_TEMPLATE, &conf_ctx(sections))
        })?,
        secrets: assemble(&lines, |lines| {
            templates.render(SECRETS_TEMPLATE, &SecretsCtx { lines })
        })?,
    })
}
