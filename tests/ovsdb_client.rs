//! The OVSDB client against a real `ovsdb-server` (and, for the fallback to older monitor
//! methods and misbehaving servers only, a tiny scripted fake).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use common::ovsdb_server::{Listeners, OvsdbServer};
use ovs_monitor_ipsec::jsonrpc::Message;
use ovs_monitor_ipsec::jsonrpc::codec::Framer;
use ovs_monitor_ipsec::ovsdb::datum::Datum;
use ovs_monitor_ipsec::ovsdb::{
    Client, ClientConfig, DbEvent, MonitorMethod, OvsdbError, Remote, TableSpec, TlsFiles, any_of,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(20);

fn tables() -> Vec<TableSpec> {
    vec![
        TableSpec {
            table: "Interface".into(),
            // "no_such_column" must be skipped with a warning, not fail the monitor.
            columns: ["name", "type", "options", "no_such_column"]
                .map(String::from)
                .to_vec(),
            conditions: Some(any_of("type", &["gre", "geneve", "vxlan"])),
        },
        TableSpec {
            table: "Open_vSwitch".into(),
            columns: vec!["other_config".into()],
            conditions: None,
        },
    ]
}

fn config(remote: &str) -> ClientConfig {
    let mut c = ClientConfig::new(
        Remote::parse_list(remote).unwrap(),
        "Open_vSwitch",
        tables(),
    );
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(200);
    c
}

async fn next_event(events: &mut UnboundedReceiver<DbEvent>) -> DbEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("event channel closed")
}

/// Waits for `Connected` then `Changed`, returning the monitor method. Failed attempts
/// before it (a server still restarting) are skipped.
async fn connected(events: &mut UnboundedReceiver<DbEvent>) -> MonitorMethod {
    let method = loop {
        match next_event(events).await {
            DbEvent::Connected { method, .. } => break method,
            DbEvent::ConnectFailed { .. } => {}
            other => panic!("expected Connected, got {other:?}"),
        }
    };
    assert_eq!(next_event(events).await, DbEvent::Changed);
    method
}

/// Tunnel interfaces as the client sees them: uuid → (name, type, options).
type Tunnels = BTreeMap<String, (String, String, BTreeMap<String, String>)>;

fn replica_tunnels(client: &Client) -> Tunnels {
    client.with_replica(|r| {
        r.table("Interface")
            .map(|(uuid, row)| {
                let s = |c| row.get(c).as_str().unwrap_or_default().to_owned();
                (
                    uuid.to_owned(),
                    (s("name"), s("type"), row.get("options").as_string_map()),
                )
            })
            .collect()
    })
}

/// Tunnel interfaces as the database holds them, read with ovs-vsctl.
fn db_tunnels(server: &OvsdbServer) -> Tunnels {
    let out = server.vsctl(&[
        "--format=json",
        "--data=json",
        "--columns=_uuid,name,type,options",
        "list",
        "Interface",
    ]);
    let table: Value = serde_json::from_str(&out).unwrap();
    table["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| {
            let d = |i: usize| Datum::from_json(&row[i]).unwrap();
            let uuid = row[0][1].as_str().unwrap().to_owned();
            let kind = d(2).as_str().unwrap_or_default().to_owned();
            ["gre", "geneve", "vxlan"]
                .contains(&kind.as_str())
                .then(|| {
                    let name = d(1).as_str().unwrap().to_owned();
                    (uuid, (name, kind, d(3).as_string_map()))
                })
        })
        .collect()
}

fn names(t: &Tunnels) -> Vec<&str> {
    t.values().map(|(n, _, _)| n.as_str()).collect()
}

fn add_tunnels(server: &OvsdbServer) {
    server.vsctl(&[
        "add-br",
        "br0",
        "--",
        "add-port",
        "br0",
        "t1",
        "--",
        "set",
        "Interface",
        "t1",
        "type=gre",
        "options:remote_ip=192.0.2.1",
        "options:psk=swordfish",
        "--",
        "add-port",
        "br0",
        "p1",
    ]);
}

#[tokio::test]
async fn initial_sync_then_changes_are_reflected() {
    let server = OvsdbServer::start();
    add_tunnels(&server);
    let (client, mut events) = Client::spawn(config(&server.unix_remote()));
    assert_eq!(
        connected(&mut events).await,
        MonitorMethod::MonitorCondSince
    );
    assert!(client.is_connected());
    // br0 (internal) and p1 (system) do not match the condition and are not delivered.
    let got = replica_tunnels(&client);
    assert_eq!(names(&got), vec!["t1"]);
    assert_eq!(got, db_tunnels(&server));

    server.vsctl(&["set", "Interface", "t1", "options:remote_ip=192.0.2.9"]);
    server.vsctl(&[
        "add-port",
        "br0",
        "t2",
        "--",
        "set",
        "Interface",
        "t2",
        "type=vxlan",
    ]);
    server.vsctl(&[
        "set",
        "Open_vSwitch",
        ".",
        "other_config:ipsec_skb_mark=0/1",
    ]);
    eventually("modify, insert and other_config", WAIT, || {
        let t = replica_tunnels(&client);
        let mark = client.with_replica(|r| {
            r.table("Open_vSwitch")
                .map(|(_, row)| row.get("other_config").as_string_map())
                .next()
                .unwrap_or_default()
                .get("ipsec_skb_mark")
                .cloned()
        });
        t.len() == 2 && t == db_tunnels(&server) && mark.as_deref() == Some("0/1")
    })
    .await;

    // Leaving the condition (type change) and deletion both remove the row.
    server.vsctl(&["set", "Interface", "t2", "type=internal"]);
    server.vsctl(&["del-port", "br0", "t1"]);
    eventually("rows leaving the replica", WAIT, || {
        replica_tunnels(&client).is_empty()
    })
    .await;
    assert!(events.try_recv().is_ok_and(|e| e == DbEvent::Changed));
}

#[tokio::test]
async fn transact_mutates_and_reports_errors() {
    let server = OvsdbServer::start();
    let (client, mut events) = Client::spawn(config(&server.unix_remote()));
    connected(&mut events).await;
    let mutate = json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
        "mutations": [["external_ids", "insert", ["map", [["ipsec-test", "yes"]]]]]});
    let results = client.transact(vec![mutate]).await.unwrap();
    assert_eq!(results, vec![json!({"count": 1})]);
    assert_eq!(
        server
            .vsctl(&["get", "Open_vSwitch", ".", "external_ids:ipsec-test"])
            .trim(),
        "yes"
    );

    let bad = json!({"op": "update", "table": "Interface", "where": [],
        "row": {"no_such_column": 1}});
    let err = client.transact(vec![bad]).await.unwrap_err().to_string();
    assert!(err.contains("no_such_column"), "{err}");

    let nothing = json!({"op": "select", "table": "Nope", "where": []});
    assert!(client.transact(vec![nothing]).await.is_err());
}

#[tokio::test]
async fn transact_without_a_connection_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let remote = format!("unix:{}", dir.path().join("absent.sock").display());
    let (client, _events) = Client::spawn(config(&remote));
    let err = client
        .transact(vec![json!({"op": "comment", "comment": "x"})])
        .await;
    assert!(matches!(err, Err(OvsdbError::NotConnected)), "{err:?}");
    assert!(!client.is_connected());
}

#[tokio::test]
async fn reconnects_after_kill9_and_resyncs() {
    let mut server = OvsdbServer::start();
    add_tunnels(&server);
    let (client, mut events) = Client::spawn(config(&server.unix_remote()));
    connected(&mut events).await;
    let before = replica_tunnels(&client);
    assert_eq!(names(&before), vec!["t1"]);

    server.kill9();
    assert!(matches!(
        next_event(&mut events).await,
        DbEvent::Disconnected { .. }
    ));
    assert!(!client.is_connected());
    // Offline change: the server will have it when it comes back, and we must catch up.
    let txn = json!(["Open_vSwitch", {"op": "update", "table": "Interface",
        "where": [["name", "==", "t1"]], "row": {"type": "geneve"}}]);
    let db = server.dir().join("conf.db");
    let out = std::process::Command::new("ovsdb-tool")
        .args(["transact", db.to_str().unwrap(), &txn.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // While disconnected, the replica keeps its last content.
    assert_eq!(replica_tunnels(&client), before);

    server.restart();
    connected(&mut events).await;
    let after = replica_tunnels(&client);
    assert_eq!(after, db_tunnels(&server));
    assert_eq!(after.values().next().unwrap().1, "geneve");
    // And it keeps following changes on the new connection.
    server.vsctl(&[
        "add-port",
        "br0",
        "t3",
        "--",
        "set",
        "Interface",
        "t3",
        "type=gre",
    ]);
    eventually("t3 after reconnect", WAIT, || {
        replica_tunnels(&client) == db_tunnels(&server)
    })
    .await;
    let now = replica_tunnels(&client);
    let mut got = names(&now);
    got.sort_unstable();
    assert_eq!(got, vec!["t1", "t3"]);
}

#[tokio::test]
async fn tcp_and_ssl_remotes_work() {
    let server = OvsdbServer::start_with(Listeners {
        tcp: true,
        ssl: true,
    });
    add_tunnels(&server);
    let pki = server.client_pki();
    let tls = TlsFiles {
        private_key: pki.private_key.clone(),
        certificate: pki.certificate.clone(),
        ca_cert: pki.ca_cert.clone(),
    };

    let (tcp, mut tcp_events) = Client::spawn(config(&server.tcp_remote()));
    connected(&mut tcp_events).await;
    assert_eq!(names(&replica_tunnels(&tcp)), vec!["t1"]);

    let mut ssl_config = config(&server.ssl_remote());
    ssl_config.tls = Some(tls.clone());
    let (ssl, mut ssl_events) = Client::spawn(ssl_config);
    match next_event(&mut ssl_events).await {
        DbEvent::Connected { remote, .. } => assert_eq!(remote, server.ssl_remote()),
        other => panic!("expected Connected, got {other:?}"),
    }
    assert_eq!(names(&replica_tunnels(&ssl)), vec!["t1"]);

    // A server whose certificate does not chain to our CA is refused: here "our CA" is the
    // client's own leaf certificate.
    let mut wrong_ca = config(&server.ssl_remote());
    wrong_ca.tls = Some(TlsFiles {
        ca_cert: pki.certificate.clone(),
        ..tls
    });
    let (refused, mut refused_events) = Client::spawn(wrong_ca);
    match next_event(&mut refused_events).await {
        DbEvent::ConnectFailed { remote, reason } => {
            assert_eq!(remote, server.ssl_remote());
            assert!(
                reason.contains("invalid peer certificate: UnknownIssuer"),
                "{reason}"
            );
        }
        other => panic!("expected the TLS refusal, got {other:?}"),
    }
    assert!(!refused.is_connected());
}

/// What the fake server does.
#[derive(Clone)]
struct Script {
    /// Methods answered with the "unknown method" error.
    reject: &'static [&'static str],
    /// Messages sent right after the monitor reply.
    after_monitor: Vec<Value>,
}

/// Every message the fake received, per connection, in order.
type Seen = Arc<Mutex<Vec<Vec<Value>>>>;

const FAKE_SCHEMA: &str = r#"{"name": "Open_vSwitch", "version": "1.0.0", "tables": {
    "Interface": {"columns": {"name": {"type": "string"}, "type": {"type": "string"},
        "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}}},
    "Open_vSwitch": {"columns": {"other_config":
        {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}}}}}"#;

/// Starts the fake on a unix socket in `dir`; returns its remote and what it saw.
fn fake_server(dir: &std::path::Path, script: Script) -> (String, Seen) {
    let path = dir.join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            log.lock().unwrap().push(Vec::new());
            tokio::spawn(fake_connection(stream, script.clone(), log.clone()));
        }
    });
    (format!("unix:{}", path.display()), seen)
}

async fn fake_connection(mut stream: UnixStream, script: Script, seen: Seen) {
    let mut framer = Framer::new();
    let mut buf = vec![0; 4096];
    loop {
        while let Some(v) = framer.next_value().unwrap() {
            seen.lock().unwrap().last_mut().unwrap().push(v.clone());
            let Ok(Message::Request { method, params, id }) = Message::from_value(v) else {
                continue;
            };
            let mut out = vec![];
            if script.reject.contains(&method.as_str()) {
                out.push(
                    Message::Error {
                        error: json!("unknown method"),
                        id,
                    }
                    .to_value(),
                );
            } else {
                let initial =
                    json!({"Interface": {"u1": {"initial": {"name": "t1", "type": "gre"}}}});
                let result = match method.as_str() {
                    "get_schema" => serde_json::from_str(FAKE_SCHEMA).unwrap(),
                    // A server that keeps history: from "txn-5" on, only u2 was added.
                    "monitor_cond_since" if params.get(3) == Some(&json!("txn-5")) => json!([
                        true,
                        "txn-6",
                        {"Interface": {"u2": {"insert": {"name": "t2", "type": "gre"}}}}
                    ]),
                    "monitor_cond_since" => json!([false, "txn-1", initial]),
                    "monitor_cond" => initial,
                    "monitor" => {
                        json!({"Interface": {"u1": {"new": {"name": "t1", "type": "gre"}}}})
                    }
                    // Our echo probes, and anything else, go unanswered.
                    _ => continue,
                };
                out.push(
                    Message::Reply {
                        result,
                        id: id.clone(),
                    }
                    .to_value(),
                );
                if method.starts_with("monitor") {
                    assert_eq!(params[0], json!("Open_vSwitch"));
                    out.extend(script.after_monitor.iter().cloned());
                }
            }
            for m in out {
                if stream.write_all(m.to_string().as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => framer.push(&buf[..n]),
        }
    }
}

fn notify(method: &str, params: Value) -> Value {
    json!({"method": method, "params": params, "id": null})
}

#[tokio::test]
async fn falls_back_to_plain_monitor_and_answers_echo() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        reject: &["monitor_cond_since", "monitor_cond"],
        after_monitor: vec![
            notify("no_such_notification", json!(["x"])),
            json!({"method": "echo", "params": ["ping"], "id": "srv-echo"}),
            notify(
                "update",
                json!(["ovs-monitor-ipsec",
                {"Interface": {"u2": {"new": {"name": "t2", "type": "vxlan"}}}}]),
            ),
        ],
    };
    let (remote, seen) = fake_server(dir.path(), script);
    let (client, mut events) = Client::spawn(config(&remote));
    assert_eq!(connected(&mut events).await, MonitorMethod::Monitor);
    assert_eq!(next_event(&mut events).await, DbEvent::Changed);
    assert_eq!(names(&replica_tunnels(&client)), vec!["t1", "t2"]);

    let echo_answered = || {
        seen.lock().unwrap()[0]
            .iter()
            .any(|m| m["id"] == json!("srv-echo") && m["result"] == json!(["ping"]))
    };
    eventually("the reply to the server's echo", WAIT, echo_answered).await;
    let seen = seen.lock().unwrap()[0].clone();
    let methods: Vec<&str> = seen.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        [
            "get_schema",
            "monitor_cond_since",
            "monitor_cond",
            "monitor"
        ]
    );
    // Plain monitor cannot filter: no "where", and the unknown column was left out.
    assert_eq!(
        seen[3]["params"][2]["Interface"],
        json!({"columns": ["name", "type", "options"]})
    );
}

#[tokio::test]
async fn falls_back_to_monitor_cond_and_resyncs_after_a_malformed_update() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        reject: &["monitor_cond_since"],
        after_monitor: vec![notify(
            "update2",
            json!(["ovs-monitor-ipsec", {"Interface": {"u1": {"explode": {}}}}]),
        )],
    };
    let (remote, seen) = fake_server(dir.path(), script);
    let (client, mut events) = Client::spawn(config(&remote));
    assert_eq!(connected(&mut events).await, MonitorMethod::MonitorCond);
    match next_event(&mut events).await {
        DbEvent::Disconnected { reason } => assert!(reason.contains("malformed"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // The bad update was not applied; the reconnect resyncs the same content.
    assert_eq!(names(&replica_tunnels(&client)), vec!["t1"]);
    assert_eq!(connected(&mut events).await, MonitorMethod::MonitorCond);
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 2);
    let cond = seen[0]
        .iter()
        .find(|m| m["method"] == "monitor_cond")
        .unwrap();
    assert_eq!(
        cond["params"][2]["Interface"][0]["where"],
        json!([
            ["type", "==", "gre"],
            ["type", "==", "geneve"],
            ["type", "==", "vxlan"]
        ])
    );
}

#[tokio::test]
async fn silent_server_is_probed_then_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        reject: &[],
        after_monitor: vec![],
    };
    let (remote, seen) = fake_server(dir.path(), script);
    let mut c = config(&remote);
    c.inactivity_probe = Duration::from_millis(300);
    let (_client, mut events) = Client::spawn(c);
    assert_eq!(
        connected(&mut events).await,
        MonitorMethod::MonitorCondSince
    );
    match next_event(&mut events).await {
        DbEvent::Disconnected { reason } => assert!(reason.contains("no message"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first.last().unwrap()["method"], "echo");
}

#[tokio::test]
async fn monitor_cond_since_resumes_from_the_last_update3() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        reject: &[],
        after_monitor: vec![notify(
            "update3",
            json!(["ovs-monitor-ipsec", "txn-5", {"Interface": {"u1": {"modify": {"type": "vxlan"}}}}]),
        )],
    };
    let (remote, seen) = fake_server(dir.path(), script);
    let mut c = config(&remote);
    // The fake never answers our echo, so each connection ends after two probe intervals.
    c.inactivity_probe = Duration::from_millis(300);
    let (client, mut events) = Client::spawn(c);
    assert_eq!(
        connected(&mut events).await,
        MonitorMethod::MonitorCondSince
    );
    assert_eq!(next_event(&mut events).await, DbEvent::Changed);
    let kinds = |client: &Client| -> Vec<(String, String)> {
        replica_tunnels(client)
            .into_values()
            .map(|(n, t, _)| (n, t))
            .collect()
    };
    assert_eq!(kinds(&client), [("t1".into(), "vxlan".into())]);
    assert!(matches!(
        next_event(&mut events).await,
        DbEvent::Disconnected { .. }
    ));

    // Found in history: only the difference arrives and lands on top of what we kept.
    assert_eq!(
        connected(&mut events).await,
        MonitorMethod::MonitorCondSince
    );
    assert_eq!(
        kinds(&client),
        [("t1".into(), "vxlan".into()), ("t2".into(), "gre".into())]
    );
    let second = seen.lock().unwrap()[1].clone();
    let since = second
        .iter()
        .find(|m| m["method"] == "monitor_cond_since")
        .unwrap();
    assert_eq!(since["params"][3], json!("txn-5"));
}
