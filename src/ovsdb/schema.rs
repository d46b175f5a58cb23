//! What we need from the server's schema (`get_schema`, RFC 7047 §4.1.2): which of the
//! requested tables and columns exist, and which columns are scalars.
//!
//! Asking to monitor a column the server does not know fails the whole monitor request, and
//! an older or newer OVS may lack or add columns. So we intersect the caller's wishes with the
//! schema and warn about the rest instead of failing. The scalar set decides how `update2`
//! "modify" diffs apply in the [`Replica`](super::replica::Replica).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::client::TableSpec;
use super::error::OvsdbError;

/// Table name → column name → whether the column is a scalar (`min == max == 1`, no value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    tables: BTreeMap<String, BTreeMap<String, bool>>,
}

/// A table request reduced to what the schema has.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoredTable {
    pub table: String,
    /// Empty means every column.
    pub columns: Vec<String>,
    pub conditions: Option<Vec<Value>>,
}

impl Schema {
    pub fn from_json(v: &Value) -> Result<Self, OvsdbError> {
        let tables = v
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| OvsdbError::protocol("schema", "no \"tables\" object"))?;
        let mut out = BTreeMap::new();
        for (name, table) in tables {
            let columns = table
                .get("columns")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    OvsdbError::protocol("schema", format!("table {name} has no columns"))
                })?;
            let columns = columns
                .iter()
                .map(|(c, def)| (c.clone(), def.get("type").is_some_and(is_scalar)))
                .collect();
            out.insert(name.clone(), columns);
        }
        Ok(Schema { tables: out })
    }

    /// Keeps the tables and columns of `specs` that exist, logging a warning for each one
    /// that does not.
    pub fn restrict(&self, specs: &[TableSpec]) -> Vec<MonitoredTable> {
        specs
            .iter()
            .filter_map(|spec| {
                let Some(columns) = self.tables.get(&spec.table) else {
                    tracing::warn!(
                        "table {} is not in the database schema; not monitored",
                        spec.table
                    );
                    return None;
                };
                let kept = spec
                    .columns
                    .iter()
                    .filter(|c| {
                        let known = columns.contains_key(c.as_str());
                        if !known {
                            tracing::warn!(
                                "column {}.{c} is not in the database schema; not monitored",
                                spec.table
                            );
                        }
                        known
                    })
                    .cloned()
                    .collect::<Vec<_>>();
                if kept.is_empty() && !spec.columns.is_empty() {
                    return None;
                }
                Some(MonitoredTable {
                    table: spec.table.clone(),
                    columns: kept,
                    conditions: spec.conditions.clone(),
                })
            })
            .collect()
    }

    /// The (table, column) pairs that are scalars, for `Replica::new`.
    pub fn scalars(&self) -> BTreeSet<(String, String)> {
        self.tables
            .iter()
            .flat_map(|(t, cols)| {
                cols.iter()
                    .filter(|(_, scalar)| **scalar)
                    .map(move |(c, _)| (t.clone(), c.clone()))
            })
            .collect()
    }
}

/// RFC 7047 §3.2 `<type>`: an atomic-type string is a scalar; an object is one when it has no
/// "value" and both bounds are 1 (their default).
fn is_scalar(ty: &Value) -> bool {
    match ty {
        Value::String(_) => true,
        Value::Object(o) => {
            let bound = |k| o.get(k).map_or(Some(1), Value::as_u64) == Some(1);
            !o.contains_key("value") && bound("min") && bound("max")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::from_json(&json!({"name": "Open_vSwitch", "tables": {
            "Interface": {"columns": {
                "name": {"type": "string"},
                "type": {"type": {"key": "string"}},
                "ofport": {"type": {"key": "integer", "min": 0, "max": 1}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "bfd_status": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
            }},
            "Open_vSwitch": {"columns": {"other_config": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}}},
        }}))
        .unwrap()
    }

    fn spec(table: &str, columns: &[&str]) -> TableSpec {
        TableSpec {
            table: table.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            conditions: None,
        }
    }

    #[test]
    fn scalars_are_single_valued_non_map_columns() {
        let s: Vec<_> = schema().scalars().into_iter().collect();
        assert_eq!(
            s,
            vec![
                ("Interface".to_string(), "name".to_string()),
                ("Interface".to_string(), "type".to_string())
            ]
        );
    }

    #[test]
    fn missing_columns_and_tables_are_dropped_not_fatal() {
        let got = schema().restrict(&[
            spec("Interface", &["name", "cfm_fault", "options"]),
            spec("SSL", &["private_key"]),
            spec("Open_vSwitch", &["nope"]),
            spec("Open_vSwitch", &[]),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].columns, vec!["name", "options"]);
        assert_eq!(got[1].table, "Open_vSwitch");
        assert!(got[1].columns.is_empty());
    }

    #[test]
    fn rejects_a_schema_without_tables() {
        assert!(Schema::from_json(&json!({"name": "x"})).is_err());
        assert!(Schema::from_json(&json!({"tables": {"T": {}}})).is_err());
    }
}
