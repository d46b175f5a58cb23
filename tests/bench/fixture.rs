//! What the process benchmarks share: N tunnels loaded into a real ovsdb-server, a client
//! watching `ipsec-state`, and the monitor's memory and CPU from /proc.

use serde_json::json;

use super::common::ovsdb_server::OvsdbServer;
use ovs_monitor_ipsec::ovsdb::{Client, ClientConfig, Remote, TableSpec};

/// Adds the one more tunnel ("extra") whose status the benchmarks wait for.
pub fn add_extra(db: &OvsdbServer) {
    db.vsctl(&[
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
    ]);
}

/// Inserts `n` vxlan PSK tunnels on br0 with our own client, 1,000 per transaction
/// (ovs-vsctl re-reads the whole database per call and times out at 10,000 ports).
pub async fn load(client: &Client, n: usize) {
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(1000) {
        let mut ops = Vec::new();
        for &i in chunk {
            let ip = format!("10.{}.{}.{}", i / 62500 % 250, i / 250 % 250, i % 250 + 1);
            ops.push(
                json!({"op": "insert", "table": "Interface", "uuid-name": format!("i{i}"),
                "row": {"name": format!("t{i}"), "type": "vxlan",
                        "options": ["map", [["remote_ip", ip], ["psk", "swordfish"]]]}}),
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
        client.transact(ops).await.expect("load tunnels");
    }
}

pub fn watch(db: &OvsdbServer) -> ClientConfig {
    let remotes = Remote::parse_list(&db.unix_remote()).unwrap();
    ClientConfig::new(
        remotes,
        "Open_vSwitch",
        vec![TableSpec {
            table: "Interface".into(),
            columns: vec!["name".into(), "external_ids".into()],
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

pub fn cpu_ms(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // By position: skipping the fields that are not u64 (the state letter, a tpgid of -1
    // without a terminal) would shift utime and stime to other fields.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks as f64 * 1000.0 / hz as f64
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
