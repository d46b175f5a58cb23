use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::model::{Auth, Secret, TunnelConf, TunnelType};

fn psk_tunnel(name: &str, uuid: &str, version: u64) -> Tunnel {
    let conf = TunnelConf::new(
        name,
        TunnelType::Geneve,
        "192.0.2.2".parse::<IpAddr>().unwrap(),
        Auth::Psk(Secret::new("swordfish")),
    );
    Tunnel {
        uuid: uuid.into(),
        name: name.into(),
        version,
        validity: Validity::Valid(Arc::new(conf)),
        raw: Box::default(),
        ofport: None,
        cfm_fault: None,
    }
}

fn row(name: &str, uuid: &str, ext: &[(&str, &str)]) -> InterfaceRow {
    InterfaceRow {
        uuid: uuid.into(),
        name: name.into(),
        kind: "geneve".into(),
        external_ids: ext
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// The operations as the JSON the server receives.
fn wire(ops: Vec<Mutation>) -> Vec<Value> {
    ops.iter()
        .map(|op| serde_json::to_value(op).unwrap())
        .collect()
}

fn input<'a>(
    interfaces: &'a [InterfaceRow],
    tunnels: &'a BTreeMap<String, Tunnel>,
    live: &'a BTreeMap<String, LiveStatus>,
    errors: &'a BTreeMap<String, String>,
) -> StatusInput<'a, std::slice::Iter<'a, InterfaceRow>> {
    StatusInput {
        interfaces: interfaces.iter(),
        open_vswitch: None,
        tunnels,
        live,
        apply_errors: errors,
        cert_alerts: &NO_ALERTS,
        monitor: Keys::new(),
    }
}

static NO_ALERTS: BTreeMap<String, CertAlert> = BTreeMap::new();

#[test]
fn new_tunnel_gets_its_keys_inserted_and_foreign_keys_untouched() {
    let rows = [row("t1", "u1", &[("iface-id", "vm1")])];
    let tunnels = BTreeMap::from([("t1".to_string(), psk_tunnel("t1", "u1", 1))]);
    let (live, errors) = (BTreeMap::new(), BTreeMap::new());
    let ops = wire(plan(&input(&rows, &tunnels, &live, &errors)));
    assert_eq!(
        ops,
        vec![json!({"op": "mutate", "table": "Interface",
            "where": [["_uuid", "==", ["uuid", "u1"]]],
            "mutations": [["external_ids", "insert", ["map", [
                ["ipsec-auth", "psk"], ["ipsec-state", "configured"], ["ipsec-version", "1"]]]]]})]
    );
}

#[test]
fn unchanged_status_writes_nothing() {
    let rows = [row(
        "t1",
        "u1",
        &[
            ("ipsec-auth", "psk"),
            ("ipsec-state", "up"),
            ("ipsec-version", "3"),
            ("other", "x"),
        ],
    )];
    let tunnels = BTreeMap::from([("t1".to_string(), psk_tunnel("t1", "u1", 3))]);
    let live = BTreeMap::from([("t1".to_string(), LiveStatus::new(LiveState::Up))]);
    let errors = BTreeMap::new();
    assert!(plan(&input(&rows, &tunnels, &live, &errors)).is_empty());
}

#[test]
fn changed_value_is_deleted_then_inserted() {
    let rows = [row(
        "t1",
        "u1",
        &[
            ("ipsec-auth", "psk"),
            ("ipsec-state", "up"),
            ("ipsec-version", "3"),
        ],
    )];
    let tunnels = BTreeMap::from([("t1".to_string(), psk_tunnel("t1", "u1", 3))]);
    let live = BTreeMap::new();
    let errors = BTreeMap::from([(
        "t1".to_string(),
        "charon refused the connection".to_string(),
    )]);
    let ops = wire(plan(&input(&rows, &tunnels, &live, &errors)));
    assert_eq!(
        ops[0]["mutations"],
        json!([
            ["external_ids", "delete", ["set", ["ipsec-state"]]],
            [
                "external_ids",
                "insert",
                [
                    "map",
                    [
                        ["ipsec-error", "charon refused the connection"],
                        ["ipsec-state", "error"]
                    ]
                ]
            ]
        ])
    );
}

#[test]
fn invalid_tunnel_reports_reason_without_leading_colon() {
    let mut t = psk_tunnel("t1", "u1", 2);
    t.validity = Validity::Invalid(": 'remote_ip' is not set".into());
    let keys = tunnel_keys(&t, None, None, None);
    assert_eq!(keys[keys::STATE].as_deref(), Some("invalid"));
    assert_eq!(keys[keys::ERROR].as_deref(), Some("'remote_ip' is not set"));
    assert_eq!(keys[keys::AUTH], None);
}

#[test]
fn row_that_stopped_being_a_tunnel_loses_only_our_keys() {
    let rows = [row(
        "t1",
        "u1",
        &[
            ("ipsec-state", "up"),
            ("ipsec-version", "1"),
            ("iface-id", "vm"),
        ],
    )];
    let tunnels = BTreeMap::new();
    let (live, errors) = (BTreeMap::new(), BTreeMap::new());
    let ops = wire(plan(&input(&rows, &tunnels, &live, &errors)));
    assert_eq!(
        ops[0]["mutations"],
        json!([[
            "external_ids",
            "delete",
            ["set", ["ipsec-state", "ipsec-version"]]
        ]])
    );
}

#[test]
fn recreated_row_with_same_name_is_matched_by_uuid() {
    // The registry still knows the old row's UUID: the new row must not get its keys yet.
    let rows = [row("t1", "u2", &[])];
    let tunnels = BTreeMap::from([("t1".to_string(), psk_tunnel("t1", "u1", 1))]);
    let (live, errors) = (BTreeMap::new(), BTreeMap::new());
    assert!(plan(&input(&rows, &tunnels, &live, &errors)).is_empty());
}

#[test]
fn psk_never_reaches_status() {
    let rows = [row("t1", "u1", &[])];
    let tunnels = BTreeMap::from([("t1".to_string(), psk_tunnel("t1", "u1", 1))]);
    let (live, errors) = (BTreeMap::new(), BTreeMap::new());
    let ops = wire(plan(&input(&rows, &tunnels, &live, &errors)));
    assert!(!serde_json::to_string(&ops).unwrap().contains("swordfish"));
}

#[test]
fn cleanup_removes_every_key_we_own_and_nothing_else() {
    let rows = [
        row("t1", "u1", &[("ipsec-state", "up"), ("iface-id", "vm")]),
        row("t2", "u2", &[]),
    ];
    let ovs = OpenVSwitchRow {
        uuid: "o".into(),
        other_config: BTreeMap::new(),
        external_ids: StringMap::from([
            (
                "ipsec-monitor-backend".to_string(),
                "strongswan".to_string(),
            ),
            ("system-id".to_string(), "host1".to_string()),
        ]),
    };
    let ops = wire(cleanup(&rows, Some(&ovs)));
    assert_eq!(ops.len(), 2);
    assert_eq!(
        ops[0]["mutations"],
        json!([["external_ids", "delete", ["set", ["ipsec-state"]]]])
    );
    assert_eq!(
        ops[1]["mutations"],
        json!([["external_ids", "delete", ["set", ["ipsec-monitor-backend"]]]])
    );
}

#[test]
fn keys_in_code_are_exactly_the_contracts_written_keys() {
    let contract = crate::schema::Contract::get().unwrap();
    let mut code: Vec<&str> = keys::INTERFACE.to_vec();
    code.sort_unstable();
    assert_eq!(contract.keys_written("Interface.external_ids"), code);
    let mut code: Vec<&str> = keys::OPEN_VSWITCH.to_vec();
    code.sort_unstable();
    assert_eq!(contract.keys_written("Open_vSwitch.external_ids"), code);
}

#[test]
fn backend_keys_are_written_only_when_declared_and_removed_when_gone() {
    let rows = [row("t1", "u1", &[("ipsec-rotation", "pending")])];
    let tunnels = BTreeMap::from([("t1".to_string(), psk_tunnel("t1", "u1", 1))]);
    let mut st = LiveStatus::new(LiveState::Up);
    st.set_key(keys::GENERATION, "00ff");
    st.set_key("ipsec-undeclared", "x");
    let live = BTreeMap::from([("t1".to_string(), st)]);
    let errors = BTreeMap::new();
    let ops = wire(plan(&input(&rows, &tunnels, &live, &errors)));
    let text = serde_json::to_string(&ops).unwrap();
    assert!(text.contains(r#"["ipsec-generation","00ff"]"#), "{text}");
    assert!(text.contains(r#"["set",["ipsec-rotation"]]"#) || text.contains(r#""ipsec-rotation""#));
    assert!(!text.contains("ipsec-undeclared"), "{text}");
    assert!(keys::INTERFACE.contains(&keys::ROTATION));
}

#[test]
fn forget_deletes_exactly_our_keys_by_uuid() {
    let op = serde_json::to_value(forget("u9")).unwrap();
    assert_eq!(op["where"], json!([["_uuid", "==", ["uuid", "u9"]]]));
    let keys_deleted = &op["mutations"][0];
    assert_eq!(keys_deleted[1], "delete");
    let mut listed: Vec<&str> = keys_deleted[2][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut ours = keys::INTERFACE.to_vec();
    ours.sort_unstable();
    assert_eq!(listed, ours);
}

#[test]
fn an_expiring_certificate_warns_and_an_expired_one_is_an_error() {
    let t = psk_tunnel("t1", "u1", 1);
    let up = LiveStatus::new(LiveState::Up);
    let soon = CertAlert::Expiring(
        "the local certificate /pki/me.pem (CN=me) expires on 2026-12-10T00:00:00Z, in 3 days"
            .into(),
    );
    let keys = tunnel_keys(&t, Some(&up), None, Some(&soon));
    assert_eq!(keys[keys::STATE].as_deref(), Some("up"));
    assert!(
        keys[keys::WARNING]
            .as_deref()
            .is_some_and(|w| w.contains("CN=me"))
    );
    // Renewed: the key is removed.
    assert_eq!(tunnel_keys(&t, Some(&up), None, None)[keys::WARNING], None);
    let gone = CertAlert::Expired(
        "the local certificate /pki/me.pem (CN=me) expired on 2026-12-06T00:00:00Z".into(),
    );
    let keys = tunnel_keys(&t, Some(&up), None, Some(&gone));
    assert_eq!(keys[keys::STATE].as_deref(), Some("error"));
    assert!(
        keys[keys::ERROR]
            .as_deref()
            .is_some_and(|e| e.contains("expired on"))
    );
    assert_eq!(keys[keys::WARNING], None);
}
