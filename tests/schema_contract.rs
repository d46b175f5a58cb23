//! The contract in `vswitch-schema/contract.json` holds against the real Open vSwitch: its
//! columns exist with the types we assume in the installed `vswitch.ovsschema`, a real
//! `ovsdb-server` answers our monitor request with exactly the tunnel rows, and the
//! human documentation covers every key.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ovs_monitor_ipsec::jsonrpc::Message;
use ovs_monitor_ipsec::schema::{Contract, SchemaError};
use serde_json::{Value, json};

const INSTALLED_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn need(path: &str) -> &Path {
    let p = Path::new(path);
    assert!(
        p.exists(),
        "{path} is missing: install openvswitch-switch and openvswitch-common (tests/run.sh does)"
    );
    p
}

fn installed_schema() -> Value {
    let text = std::fs::read_to_string(need(INSTALLED_SCHEMA)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_contract_parses_with_both_tables_and_our_status_keys() {
    let c = Contract::get().unwrap();
    assert_eq!(c.database, "Open_vSwitch");
    assert!(c.tables.contains_key("Interface") && c.tables.contains_key("Open_vSwitch"));
    assert!(c.keys_read("Interface.options").contains(&"psk"));
    assert!(
        c.keys_written("Interface.external_ids")
            .contains(&"ipsec-state")
    );
    assert!(
        c.keys_written("Open_vSwitch.external_ids")
            .contains(&"ipsec-monitor-last-reconcile")
    );
    // Every key we write is in the "ipsec-" namespace: we never claim someone else's key.
    for section in ["Interface.external_ids", "Open_vSwitch.external_ids"] {
        for key in c.keys_written(section) {
            assert!(key.starts_with("ipsec-"), "{section}:{key}");
        }
    }
}

#[test]
fn every_column_we_read_exists_in_the_installed_schema_with_our_type() {
    Contract::get()
        .unwrap()
        .check_schema(&installed_schema())
        .unwrap();
}

#[test]
fn the_schema_check_rejects_a_column_of_another_type_or_a_missing_one() {
    let c = Contract::get().unwrap();
    let mut changed = installed_schema();
    changed["tables"]["Interface"]["columns"]["ofport"]["type"] = json!("integer");
    assert!(
        matches!(c.check_schema(&changed), Err(SchemaError::Incompatible(m)) if m.contains("Interface.ofport"))
    );

    let mut missing = installed_schema();
    missing["tables"]["Open_vSwitch"]["columns"]
        .as_object_mut()
        .unwrap()
        .remove("other_config");
    assert!(
        matches!(c.check_schema(&missing), Err(SchemaError::Incompatible(m)) if m.contains("Open_vSwitch.other_config"))
    );
}

#[test]
fn the_documentation_mentions_every_column_and_key() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ovsdb-contract.md"),
    )
    .unwrap();
    let c = Contract::get().unwrap();
    let mut missing: Vec<String> = c
        .all_keys()
        .filter(|(_, key, _)| !doc.contains(&format!("`{key}`")))
        .map(|(section, key, _)| format!("{section}:{key}"))
        .collect();
    for (table, read) in &c.tables {
        for column in read.columns.keys() {
            if !doc.contains(&format!("`{column}`")) {
                missing.push(format!("{table}.{column}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ovsdb-contract.md does not mention {missing:?}"
    );
}

/// A scratch ovsdb-server on a fresh database in a temporary directory; killed on drop.
struct OvsdbServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl OvsdbServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("conf.db");
        let status = Command::new(need("/usr/bin/ovsdb-tool"))
            .arg("create")
            .arg(&db)
            .arg(INSTALLED_SCHEMA)
            .status()
            .unwrap();
        assert!(status.success(), "ovsdb-tool create failed");
        let child = Command::new(need("/usr/sbin/ovsdb-server"))
            .arg(format!(
                "--remote=punix:{}",
                dir.path().join("db.sock").display()
            ))
            .arg(format!(
                "--unixctl={}",
                dir.path().join("ovsdb.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.path().join("ovsdb.log").display()
            ))
            .args(["--no-chdir", "-vconsole:off"])
            .arg(&db)
            .env("OVS_RUNDIR", dir.path())
            .spawn()
            .unwrap();
        let server = OvsdbServer { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "ovsdb-server did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    fn vsctl(&self, args: &[&str]) {
        let out = Command::new(need("/usr/bin/ovs-vsctl"))
            .arg(format!("--db=unix:{}", self.socket().display()))
            .args(["--no-wait", "--timeout=10"])
            .args(args)
            .env("OVS_RUNDIR", self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ovs-vsctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_ovsdb_server_sends_exactly_the_tunnel_rows_for_our_monitor_request() {
    let server = OvsdbServer::start();
    #[rustfmt::skip]
    server.vsctl(&[
        "add-br", "br0",
        "--", "add-port", "br0", "gre0", "--", "set", "interface", "gre0", "type=gre",
        "options:remote_ip=192.0.2.1", "options:psk=swordfish",
        "--", "add-port", "br0", "gnv0", "--", "set", "interface", "gnv0", "type=geneve",
        "options:remote_ip=192.0.2.2",
        "--", "add-port", "br0", "vx0", "--", "set", "interface", "vx0", "type=vxlan",
        "options:remote_ip=192.0.2.3",
        "--", "add-port", "br0", "int0", "--", "set", "interface", "int0", "type=internal",
        "--", "add-port", "br0", "erspan0", "--", "set", "interface", "erspan0", "type=erspan",
        "options:remote_ip=192.0.2.4",
    ]);

    let c = Contract::get().unwrap();
    let mut conn = UnixStream::connect(server.socket()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = Message::request(
        "monitor_cond",
        vec![
            json!(c.database),
            json!("contract-test"),
            c.monitor_requests(),
        ],
        json!(1),
    );
    conn.write_all(&request.to_bytes()).unwrap();
    let reply = serde_json::Deserializer::from_reader(&conn)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    let Ok(Message::Reply { result, .. }) = Message::from_value(reply.clone()) else {
        panic!("monitor_cond failed: {reply}");
    };

    let names: BTreeSet<&str> = result["Interface"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|row| row["initial"]["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["gnv0", "gre0", "vx0"]));
    for row in result["Interface"].as_object().unwrap().values() {
        let columns: BTreeSet<&str> = row["initial"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // The server omits default-valued columns, but never sends one we did not ask for.
        assert!(
            columns.is_subset(
                &c.tables["Interface"]
                    .columns
                    .keys()
                    .map(String::as_str)
                    .collect()
            )
        );
    }
    assert_eq!(result["Open_vSwitch"].as_object().unwrap().len(), 1);
}
