//! The three monitor flavours, newest first, and how to fall back between them.
//!
//! - `monitor_cond_since` (OVS ≥ 2.12) sends `update3` and, on reconnect, only what changed
//!   since the last transaction id we saw (when the server still has that history);
//! - `monitor_cond` (OVS ≥ 2.6) sends `update2` diffs and filters rows on the server;
//! - `monitor` (RFC 7047) sends whole rows and cannot filter: the caller filters.
//!
//! A server that lacks a method answers with the JSON-RPC error "unknown method", and we try
//! the next one. Conditions of one table are OR-ed by the server (ovsdb-server(7) §4.1.12:
//! updates are sent for rows "matching one of the conditions"), so "type is gre, geneve or
//! vxlan" is three clauses, see [`any_of`].

use std::fmt;

use serde_json::{Map, Value, json};

use super::schema::MonitoredTable;
use super::updates::{RowUpdate2, TableUpdates, Updates};

/// The `<json-value>` that tags our monitor; notifications carrying another one are not ours.
pub const MONITOR_ID: &str = "ovs-monitor-ipsec";

/// The transaction id that means "I have nothing": the server sends everything.
pub const ZERO_TXN_ID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMethod {
    MonitorCondSince,
    MonitorCond,
    Monitor,
}

impl MonitorMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MonitorCondSince => "monitor_cond_since",
            Self::MonitorCond => "monitor_cond",
            Self::Monitor => "monitor",
        }
    }

    /// The method to try after the server rejected this one with `error`, if any: only an
    /// "unknown method" error means the server is too old; anything else is a real failure.
    pub fn fallback(self, error: &Value) -> Option<MonitorMethod> {
        let text = error
            .as_str()
            .or_else(|| error.get("error").and_then(Value::as_str));
        if text != Some("unknown method") {
            return None;
        }
        match self {
            Self::MonitorCondSince => Some(Self::MonitorCond),
            Self::MonitorCond => Some(Self::Monitor),
            Self::Monitor => None,
        }
    }

    /// The notification method that carries this monitor's updates.
    pub fn notification(self) -> &'static str {
        match self {
            Self::MonitorCondSince => "update3",
            Self::MonitorCond => "update2",
            Self::Monitor => "update",
        }
    }

    /// The request params: `[db, id, requests]`, plus the last transaction id for
    /// `monitor_cond_since`.
    pub fn params(
        self,
        db: &str,
        tables: &[MonitoredTable],
        last_txn_id: Option<&str>,
    ) -> Vec<Value> {
        let requests: Map<String, Value> = tables
            .iter()
            .map(|t| {
                let mut req = Map::new();
                if !t.columns.is_empty() {
                    req.insert("columns".into(), json!(t.columns));
                }
                let request = match (self, &t.conditions) {
                    (Self::Monitor, _) => Value::Object(req),
                    (_, Some(conds)) => {
                        req.insert("where".into(), json!(conds));
                        json!([req])
                    }
                    (_, None) => json!([req]),
                };
                (t.table.clone(), request)
            })
            .collect();
        let mut params = vec![json!(db), json!(MONITOR_ID), Value::Object(requests)];
        if self == Self::MonitorCondSince {
            params.push(json!(last_txn_id.unwrap_or(ZERO_TXN_ID)));
        }
        params
    }
}

impl fmt::Display for MonitorMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A successful monitor reply, decoded.
#[derive(Debug)]
pub struct MonitorReply {
    /// `monitor_cond_since` only: the server sent just the changes after our transaction id,
    /// to be applied on top of the replica we kept.
    pub found: bool,
    pub last_txn_id: Option<String>,
    /// `<table-updates>` or `<table-updates2>`, by method.
    pub updates: Updates,
}

/// `monitor_cond_since`'s result, `[found, last-txn-id, table-updates2]`.
pub type SinceResult = (bool, String, TableUpdates<RowUpdate2>);

/// An `update3` notification's params, `[monitor-id, last-txn-id, table-updates2]`.
pub type Update3Params = (Value, String, TableUpdates<RowUpdate2>);

/// An `update`/`update2` notification's params, `[monitor-id, table-updates(2)]`.
pub type UpdateParams<R> = (Value, TableUpdates<R>);

/// Clauses selecting rows whose `column` equals any of `values` (OR-ed by the server).
pub fn any_of(column: &str, values: &[&str]) -> Vec<Value> {
    values.iter().map(|v| json!([column, "==", v])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Vec<MonitoredTable> {
        vec![
            MonitoredTable {
                table: "Interface".into(),
                columns: vec!["name".into(), "type".into()],
                conditions: Some(any_of("type", &["gre", "vxlan"])),
            },
            MonitoredTable {
                table: "Open_vSwitch".into(),
                columns: vec!["other_config".into()],
                conditions: None,
            },
        ]
    }

    #[test]
    fn monitor_cond_since_request() {
        let p = MonitorMethod::MonitorCondSince.params("Open_vSwitch", &tables(), Some("t-1"));
        assert_eq!(
            p,
            vec![
                json!("Open_vSwitch"),
                json!(MONITOR_ID),
                json!({
                    "Interface": [{"columns": ["name", "type"],
                                   "where": [["type", "==", "gre"], ["type", "==", "vxlan"]]}],
                    "Open_vSwitch": [{"columns": ["other_config"]}],
                }),
                json!("t-1"),
            ]
        );
        let first = MonitorMethod::MonitorCondSince.params("db", &tables(), None);
        assert_eq!(first[3], json!(ZERO_TXN_ID));
    }

    #[test]
    fn monitor_cond_request_has_no_txn_id() {
        let p = MonitorMethod::MonitorCond.params("db", &tables(), Some("t-1"));
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2]["Interface"][0]["where"][1],
            json!(["type", "==", "vxlan"])
        );
    }

    #[test]
    fn plain_monitor_request_drops_conditions() {
        let p = MonitorMethod::Monitor.params("db", &tables(), None);
        assert_eq!(p.len(), 3);
        assert_eq!(p[2]["Interface"], json!({"columns": ["name", "type"]}));
    }

    #[test]
    fn all_columns_when_none_listed() {
        let t = vec![MonitoredTable {
            table: "T".into(),
            columns: vec![],
            conditions: None,
        }];
        assert_eq!(
            MonitorMethod::MonitorCond.params("db", &t, None)[2],
            json!({"T": [{}]})
        );
    }

    #[test]
    fn falls_back_only_on_unknown_method() {
        let unknown = json!("unknown method");
        assert_eq!(
            MonitorMethod::MonitorCondSince.fallback(&unknown),
            Some(MonitorMethod::MonitorCond)
        );
        assert_eq!(
            MonitorMethod::MonitorCond.fallback(&json!({"error": "unknown method"})),
            Some(MonitorMethod::Monitor)
        );
        assert_eq!(MonitorMethod::Monitor.fallback(&unknown), None);
        assert_eq!(
            MonitorMethod::MonitorCondSince.fallback(&json!({"error": "syntax error"})),
            None
        );
    }
}
