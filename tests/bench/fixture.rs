//! What the process benchmarks share: N tunnels loaded into a real ovsdb-server, a client
//! watching `ipsec-state`, and the monitor's memory and CPU from /proc.
// Each benchmark uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::common::ovsdb_server::OvsdbServer;
use ovs_monitor_ipsec::ovsdb::{Client, ClientConfig, DbEvent, Remote, TableSpec};

/// The `ovs-vsctl` arguments that add the one more tunnel ("extra") whose status the
/// benchmarks wait for.
pub const ADD_EXTRA: &[&str] = &[
    "add-port",
    "br0",
    "extra",
    "--",
    "set",
    "interface",
    "extra",
    "type=vxlan",
    "options:remote_ip=10.255.255.1",
    "options:psk=swordfish",
];

/// Adds the one more tunnel ("extra").
pub fn add_extra(db: &OvsdbServer) {
    db.vsctl(ADD_EXTRA);
}

/// Inserts `n` vxlan PSK tunnels on br0 with our own client, 1,000 per transaction
/// (ovs-vsctl re-reads the whole database per call and times out at 10,000 ports).
pub async fn load(client: &Client, n: usize) {
    load_with(client, n, &[]).await;
}

/// The remote address of tunnel `t<i>`.
pub fn remote_ip(i: usize) -> String {
    format!("10.{}.{}.{}", i / 62500 % 250, i / 250 % 250, i % 250 + 1)
}

/// [`load`], with `extra` options on every tunnel (a backend's `local_ip`, ...).
pub async fn load_with(client: &Client, n: usize, extra: &[(&str, &str)]) {
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(1000) {
        let mut ops = Vec::new();
        for &i in chunk {
            let mut options = vec![
                json!(["remote_ip", remote_ip(i)]),
                json!(["psk", "swordfish"]),
            ];
            options.extend(extra.iter().map(|(k, v)| json!([k, v])));
            ops.push(
                json!({"op": "insert", "table": "Interface", "uuid-name": format!("i{i}"),
                "row": {"name": format!("t{i}"), "type": "vxlan",
                        "options": ["map", options]}}),
            );
            ops.push(
                json!({"op": "insert", "table": "Port", "uuid-name": format!("p{i}"),
                "row": {"name": format!("t{i}"), "interfaces": ["named-uuid", format!("i{i}")]}}),
            );
        }
        let ports: Vec<_> = chunk
            .iter()
            .map(|i| json!(["named-uuid", format!("p{i}")]))
            .collect();
        ops.push(
            json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
            "mutations": [["ports", "insert", ["set", ports]]]}),
        );
        tokio::time::timeout(std::time::Duration::from_secs(120), client.transact(ops))
            .await
            .expect("loading 1,000 tunnels timed out")
            .expect("load tunnels");
    }
}

pub fn watch(db: &OvsdbServer) -> ClientConfig {
    let remotes = Remote::parse_list(&db.unix_remote()).unwrap();
    ClientConfig::new(
        remotes,
        "Open_vSwitch",
        vec![TableSpec {
            table: "Interface".into(),
            columns: ["name", "options", "external_ids"]
                .map(String::from)
                .to_vec(),
            conditions: None,
        }],
    )
}

/// A kB field of /proc/PID/status (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, from `/proc/PID/stat`.
pub fn cpu_ms(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    stat_ticks(&s) as f64 * 1000.0 / clock_ticks_per_sec() as f64
}

/// utime + stime, in clock ticks, of a `/proc/PID/stat` line: fields 14 and 15 of proc(5),
/// counted by position after the `)` that ends the command name (which may hold spaces).
/// Fields before them may be negative (`tpgid` is -1 without a terminal) or letters (`state`),
/// so every field keeps its place whether it parses or not.
pub fn stat_ticks(stat: &str) -> u64 {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .expect("a /proc/PID/stat line");
    let field = |i: usize| -> u64 {
        let f = rest.split_whitespace().nth(i);
        f.and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("/proc/PID/stat field {} is {f:?}", i + 3))
    };
    // After ")": state is field 3 of proc(5), so utime (14) and stime (15) are at 11 and 12.
    field(11) + field(12)
}

fn clock_ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|hz| u64::try_from(hz).ok())
        .unwrap_or(100)
}

/// Interfaces whose `ipsec-state` the watching client has seen.
pub fn with_state(c: &Client) -> usize {
    c.with_replica(|r| {
        r.table("Interface")
            .filter(|(_, row)| {
                row.get("external_ids")
                    .as_string_map()
                    .contains_key("ipsec-state")
            })
            .count()
    })
}

/// A fresh ovsdb-server with br0, and a connected client watching its Interface rows.
pub async fn watched_db() -> (OvsdbServer, Client, UnboundedReceiver<DbEvent>) {
    let db = OvsdbServer::start();
    db.vsctl(&["add-br", "br0"]);
    let (client, mut events) = Client::spawn(watch(&db));
    let limit = Duration::from_secs(120);
    until(
        "the watcher connected",
        limit,
        &client,
        &mut events,
        Client::is_connected,
    )
    .await;
    (db, client, events)
}

/// Waits until `done` holds on the watcher's replica, checking again after each OVSDB event;
/// panics naming `what` when `limit` has passed or the watcher's connection task has ended.
pub async fn until(
    what: &str,
    limit: Duration,
    client: &Client,
    events: &mut UnboundedReceiver<DbEvent>,
    done: impl Fn(&Client) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(client) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: the watcher's OVSDB client stopped"),
            Err(_) => panic!("{what}: not done after {limit:?}"),
        }
    }
}
