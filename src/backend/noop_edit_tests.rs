//! Issue 22, over the model and every IKE backend's naming: an OVSDB edit that leaves a
//! tunnel's effective configuration unchanged (a default port spelled out, an address
//! spelled another way, an option no backend reads) keeps its published version, and no
//! backend renames a connection; whatever the version, every connection name carries it.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::libreswan::render as lsw;
use super::libreswan::version::Version;
use super::strongswan_stroke::render as stroke;
use super::strongswan_vici::conns as vici;
use super::templates::Templates;
use crate::model::Desired;
use crate::model::cert::fake::FakeCerts;
use crate::model::registry::Registry;
use crate::model::rows::InterfaceRow;

type Opts = Vec<(String, String)>;

/// The connection names each backend would give `desired`'s tunnels: stroke, Libreswan and
/// VICI (connections and their children), each sorted.
fn names(desired: &Desired) -> [BTreeSet<String>; 3] {
    let stroke_names = stroke::render(
        std::path::Path::new("/"),
        &Templates::load(None, stroke::DEFAULTS).unwrap(),
        &stroke::Sections::default(),
        desired,
    )
    .unwrap()
    .conns;
    let layout = lsw::Layout::new(true, false, &Version::unknown());
    let conf = lsw::render(
        &Templates::load(None, lsw::DEFAULTS).unwrap(),
        &lsw::Sections::default(),
        &layout,
        desired,
        &Default::default(),
    )
    .unwrap()
    .conf;
    let lsw_names = lsw::parse_own_file(&conf).0.into_iter().collect();
    let vici_names = vici::desired_conns(desired)
        .0
        .iter()
        .flat_map(|c| std::iter::once(c.name.clone()).chain(c.listed().children.into_keys()))
        .collect();
    [stroke_names, lsw_names, vici_names]
}

/// Every name ends in `-<version>`.
fn carries(names: &BTreeSet<String>, version: u64) -> bool {
    let suffix = format!("-{version}");
    !names.is_empty() && names.iter().all(|n| n.ends_with(&suffix))
}

/// A valid PSK tunnel row: type, remote address (v4 or v6), maybe a local address of the
/// same family, maybe a non-default port.
fn base() -> impl Strategy<Value = (String, Opts)> {
    (
        prop_oneof![Just("gre"), Just("geneve"), Just("vxlan")],
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1000u16..1100),
    )
        .prop_map(|(kind, v6, local, port)| {
            let (remote, local_ip) = match v6 {
                true => ("fd01::2", "fd01::1"),
                false => ("192.0.2.2", "192.0.2.1"),
            };
            let mut o: Opts = vec![
                ("remote_ip".into(), remote.into()),
                ("psk".into(), "swordfish".into()),
            ];
            if local {
                o.push(("local_ip".into(), local_ip.into()));
            }
            if let Some(p) = port {
                o.push(("dst_port".into(), p.to_string()));
            }
            (kind.to_owned(), o)
        })
}

/// An edit that changes the row but not the effective configuration.
#[derive(Debug, Clone)]
enum Edit {
    /// `dst_port` set to the type's default, with `zeros` leading zeros (GRE: any value).
    DefaultPort { zeros: usize },
    /// An IPv6 address in its fully expanded spelling.
    ExpandAddresses,
    /// An option no backend reads (OVS's own tunnel options).
    Unrelated(&'static str, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..2).prop_map(|zeros| Edit::DefaultPort { zeros }),
        Just(Edit::ExpandAddresses),
        prop_oneof![
            Just(("key", "flow")),
            Just(("csum", "true")),
            Just(("tos", "inherit")),
            Just(("df_default", "false")),
        ]
        .prop_map(|(k, v)| Edit::Unrelated(k, v)),
    ]
}

/// `opts` edited, or `None` when the edit does not apply without changing the tunnel (a
/// default port on a tunnel that already has another port).
fn apply(kind: &str, opts: &Opts, e: &Edit) -> Option<Opts> {
    let mut o = opts.clone();
    match e {
        Edit::DefaultPort { zeros } => {
            let default = match kind {
                "geneve" => "6081",
                "vxlan" => "4789",
                _ => "12345",
            };
            if kind != "gre" && o.iter().any(|(k, _)| k == "dst_port") {
                return None;
            }
            o.retain(|(k, _)| k != "dst_port");
            o.push((
                "dst_port".into(),
                format!("{}{default}", "0".repeat(*zeros)),
            ));
        }
        Edit::ExpandAddresses => {
            for (k, v) in o.iter_mut() {
                // IPv4 has one spelling (leading zeros are refused, as octal lookalikes).
                if let (true, Ok(std::net::IpAddr::V6(a))) = (k.ends_with("_ip"), v.parse()) {
                    *v = a.segments().map(|s| format!("{s:04x}")).join(":");
                }
            }
        }
        Edit::Unrelated(k, v) => o.push(((*k).into(), (*v).into())),
    }
    Some(o)
}

fn row(kind: &str, opts: &Opts) -> InterfaceRow {
    let refs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    InterfaceRow::for_test("t1", kind, &refs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_op_edits_keep_the_version_and_every_backends_names(
        (kind, opts) in base(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut certs = FakeCerts::with(&[]);
        let mut reg = Registry::new();
        reg.update(None, [&row(&kind, &opts)], &mut certs);
        let before = reg.desired().clone();
        let v1 = before.tunnels["t1"].version;
        let names1 = names(&before);
        let mut now = opts.clone();
        for e in &edits {
            let Some(next) = apply(&kind, &now, e) else { continue };
            now = next;
            let events = reg.update(None, [&row(&kind, &now)], &mut certs);
            prop_assert!(events.is_empty(), "{e:?} on {now:?}: {events:?}");
            let d = reg.desired();
            prop_assert_eq!(d.tunnels["t1"].version, v1);
            prop_assert_eq!(&names(d), &names1, "{:?}", e);
        }
        for n in &names1 {
            prop_assert!(carries(n, v1), "{n:?} at version {v1}");
        }
        // A real change: the version moves, and every backend's names follow it.
        let mut moved = now.clone();
        moved.retain(|(k, _)| k != "psk");
        moved.push(("psk".into(), "another".into()));
        reg.update(None, [&row(&kind, &moved)], &mut certs);
        let d = reg.desired();
        let v2 = d.tunnels["t1"].version;
        prop_assert_eq!(v2, v1 + 1);
        for n in &names(d) {
            prop_assert!(carries(n, v2), "{n:?} at version {v2}");
        }
    }
}
