//! Model → render: arbitrary Interface rows (names, types, `options` maps, `ipsec_*` custom
//! options) and `Open_vSwitch:other_config` go through the real validation and registry, and
//! every desired state renders through the strongSwan stroke and Libreswan templates and the
//! VICI `load-conn` builder.
//!
//! The oracle: rendering never fails or panics, and no rendered file holds a line the template
//! did not produce. Each file is rendered twice, once with the real templates and once with
//! templates whose every `{{ value }}` is wrapped in markers; with the markers removed the two
//! must be identical, and no marked value may hold a line break or other control character
//! (an injected line), nor a `"` where the template opened a quote.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use ovs_monitor_ipsec::backend::libreswan::render as lsw;
use ovs_monitor_ipsec::backend::libreswan::version::Version;
use ovs_monitor_ipsec::backend::strongswan_stroke::render as stroke;
use ovs_monitor_ipsec::backend::strongswan_vici::conns;
use ovs_monitor_ipsec::backend::templates::Templates;
use ovs_monitor_ipsec::model::bundle::{BundleError, CaBundle};
use ovs_monitor_ipsec::model::cert::{CertInfo, CertSource};
use ovs_monitor_ipsec::model::registry::Registry;
use ovs_monitor_ipsec::model::rows::{InterfaceRow, OpenVSwitchRow};

/// Where stroke writes a bundle's CA files (as the backend's default layout does).
const STROKE_CA_DIR: &str = "/etc/ipsec.d/ovs-cacerts";

const OPEN: char = '\u{1}';
const CLOSE: char = '\u{2}';

/// A value: arbitrary text, or one of the shapes the grammars accept, so that the fuzzer
/// reaches valid tunnels (and so the templates) without guessing an address byte by byte.
#[derive(Debug, Arbitrary)]
enum Text {
    Raw(String),
    Ip4([u8; 4]),
    Ip6([u16; 8]),
    Number(u32),
    Path(String),
    Word(u8),
    Join(Box<Text>, Box<Text>),
}

const WORDS: &[&str] = &[
    "gre",
    "geneve",
    "vxlan",
    "192.0.2.1",
    "192.0.2.2",
    "fd00::1",
    "swordfish",
    "host-1",
    "/etc/ipsec.d/certs/a.pem",
    "aes256gcm16",
    "yes",
    "no",
    "%any",
    "0x10/0xff",
    "4789",
    "ikev2",
    "transport",
    "\n",
    "\"",
    "#",
    " ",
    "=",
    "\r",
    "\0",
    ":",
    "@",
    "{",
    "}",
    "%",
];

impl Text {
    fn text(&self) -> String {
        match self {
            Text::Raw(s) => s.clone(),
            Text::Ip4(a) => std::net::Ipv4Addr::from(*a).to_string(),
            Text::Ip6(a) => std::net::Ipv6Addr::from(*a).to_string(),
            Text::Number(n) => n.to_string(),
            Text::Path(s) => format!("/etc/ipsec.d/{s}"),
            Text::Word(i) => WORDS[usize::from(*i) % WORDS.len()].to_owned(),
            Text::Join(a, b) => a.text() + &b.text(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Key {
    RemoteIp,
    LocalIp,
    Psk,
    RemoteCert,
    RemoteName,
    DstPort,
    PskNext,
    PeerGeneration,
    /// `ipsec_<key>`: a custom option.
    Custom(Text),
    Other(Text),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::RemoteIp => "remote_ip".into(),
            Key::LocalIp => "local_ip".into(),
            Key::Psk => "psk".into(),
            Key::RemoteCert => "remote_cert".into(),
            Key::RemoteName => "remote_name".into(),
            Key::DstPort => "dst_port".into(),
            Key::PskNext => "ipsec_psk_next".into(),
            Key::PeerGeneration => "ipsec_peer_generation".into(),
            Key::Custom(t) => format!("ipsec_{}", t.text()),
            Key::Other(t) => t.text(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Tunnel {
    name: Text,
    kind: Text,
    options: Vec<(Key, Text)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    tunnels: Vec<Tunnel>,
    other_config: Vec<(Text, Text)>,
    certificate: Option<Text>,
    private_key: Option<Text>,
    ca_cert: Option<Text>,
    skb_mark: Option<Text>,
    own_root: bool,
    default_crypto: bool,
    libreswan_major: u8,
}

/// Certificates whose CN is their file's name: arbitrary paths give arbitrary CNs.
struct NamedCerts;

impl CertSource for NamedCerts {
    fn cert_info(&mut self, path: &Path) -> Result<CertInfo, String> {
        let cn = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| "no such certificate".to_owned())?;
        Ok(CertInfo {
            subject: format!("CN={cn}"),
            cn,
            sha256: [0; 32],
            not_before: 0,
            not_after: i64::MAX,
            sans: Vec::new(),
            der: Arc::from(&[][..]),
        })
    }

    /// No key is readable: the model then leaves the key to the IKE daemon.
    fn key_public(&mut self, _: &Path) -> Result<Vec<u8>, String> {
        Err("no keys while fuzzing".to_owned())
    }

    /// Every CA bundle parses (with no member): the CA-signed tunnels stay valid.
    fn ca_bundle(&mut self, path: &Path) -> Result<Arc<CaBundle>, BundleError> {
        Ok(Arc::new(CaBundle {
            path: path.to_owned(),
            sha256: [0; 32],
            members: Vec::new(),
        }))
    }
}

/// `defaults` with every `{{ value }}` wrapped in markers, except those that insert text
/// already rendered through another template (whole sections and secret lines).
fn marked(defaults: &[(&str, &str)], nested: &[(&str, &str)]) -> Templates {
    let texts: Vec<(String, String)> = defaults
        .iter()
        .map(|(name, text)| {
            let mut out = String::new();
            let mut rest = *text;
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}").expect("closed expression") + start + 2;
                let expr = &rest[start..end];
                out.push_str(&rest[..start]);
                if nested.contains(&(*name, expr)) {
                    out.push_str(expr);
                } else {
                    out.push(OPEN);
                    out.push_str(expr);
                    out.push(CLOSE);
                }
                rest = &rest[end..];
            }
            out.push_str(rest);
            ((*name).to_owned(), out)
        })
        .collect();
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    Templates::load(None, &refs).expect("marked templates load")
}

struct Sets {
    stroke: Templates,
    stroke_marked: Templates,
    lsw: Templates,
    lsw_marked: Templates,
}

fn sets() -> &'static Sets {
    static SETS: OnceLock<Sets> = OnceLock::new();
    SETS.get_or_init(|| Sets {
        stroke: Templates::load(None, stroke::DEFAULTS).expect("templates"),
        stroke_marked: marked(
            stroke::DEFAULTS,
            &[
                (stroke::CONF_TEMPLATE, "{{ s }}"),
                (stroke::SECRETS_TEMPLATE, "{{ l }}"),
            ],
        ),
        lsw: Templates::load(None, lsw::DEFAULTS).expect("templates"),
        lsw_marked: marked(
            lsw::DEFAULTS,
            &[
                (lsw::CONF_TEMPLATE, "{{ s }}"),
                (lsw::SECRETS_TEMPLATE, "{{ l }}"),
            ],
        ),
    })
}

/// The oracle on one file: `plain` is what the real templates gave, `marked` the same with
/// every value wrapped in markers.
fn check(what: &str, plain: &str, marked: &str) {
    let stripped: String = marked
        .chars()
        .filter(|c| *c != OPEN && *c != CLOSE)
        .collect();
    assert_eq!(stripped, plain, "{what}: markers changed the text");
    let mut rest = marked;
    while let Some(start) = rest.find(OPEN) {
        let before = rest[..start].chars().last();
        let after = &rest[start + OPEN.len_utf8()..];
        let end = after.find(CLOSE).expect("closed marker");
        let value = &after[..end];
        assert!(
            !value.contains(|c: char| c.is_control()),
            "{what}: value {value:?} breaks its line"
        );
        if before == Some('"') {
            assert!(
                !value.contains('"'),
                "{what}: value {value:?} closes its quote"
            );
        }
        rest = &after[end + CLOSE.len_utf8()..];
    }
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    if input.tunnels.len() > 8 {
        return;
    }
    let rows: Vec<InterfaceRow> = input
        .tunnels
        .iter()
        .enumerate()
        .map(|(i, t)| InterfaceRow {
            uuid: format!("uuid-{i}"),
            name: t.name.text(),
            kind: t.kind.text(),
            options: t
                .options
                .iter()
                .map(|(k, v)| (k.text(), v.text()))
                .collect(),
            ..Default::default()
        })
        .collect();
    let mut other_config: BTreeMap<String, String> = input
        .other_config
        .iter()
        .map(|(k, v)| (k.text(), v.text()))
        .collect();
    for (key, value) in [
        ("certificate", &input.certificate),
        ("private_key", &input.private_key),
        ("ca_cert", &input.ca_cert),
        ("ipsec_skb_mark", &input.skb_mark),
    ] {
        if let Some(v) = value {
            other_config.insert(key.to_owned(), v.text());
        }
    }
    let ovs = OpenVSwitchRow {
        uuid: "ovs".into(),
        other_config,
        ..Default::default()
    };
    let mut registry = Registry::new();
    for event in registry.update(Some(&ovs), &rows, &mut NamedCerts) {
        let _ = event.to_string();
    }
    let desired = registry.desired();
    let sets = sets();

    let sections = stroke::Sections::default();
    let plain = stroke::render(Path::new(STROKE_CA_DIR), &sets.stroke, &sections, desired)
        .expect("stroke renders");
    let marked = stroke::render(
        Path::new(STROKE_CA_DIR),
        &sets.stroke_marked,
        &stroke::Sections::default(),
        desired,
    )
    .expect("marked stroke renders");
    check("stroke ipsec.conf", &plain.conf, &marked.conf);
    check("stroke ipsec.secrets", &plain.secrets, &marked.secrets);
    let names: BTreeSet<String> = plain.conns.clone();
    for name in &names {
        assert!(
            plain.conf.contains(&format!("conn {name}\n")),
            "stroke: {name:?} has no section"
        );
    }

    let version = Version::parse(&format!("Libreswan v{}.0\n", input.libreswan_major % 4 + 3))
        .unwrap_or_else(Version::unknown);
    let layout = lsw::Layout::new(input.own_root, input.default_crypto, &version);
    let starts = BTreeMap::new();
    let plain = lsw::render(
        &sets.lsw,
        &lsw::Sections::default(),
        &layout,
        desired,
        &starts,
    )
    .expect("libreswan renders");
    let marked = lsw::render(
        &sets.lsw_marked,
        &lsw::Sections::default(),
        &layout,
        desired,
        &starts,
    )
    .expect("marked libreswan renders");
    check("libreswan ipsec.conf", &plain.conf, &marked.conf);
    check("libreswan ipsec.secrets", &plain.secrets, &marked.secrets);

    for t in desired.tunnels.values() {
        if let Ok(conn) = conns::tunnel_conn(t) {
            conn.body.decode().expect("an encoded load-conn decodes");
        }
    }
});
