//! The contract between the monitor and OVSDB, compiled in from
//! `vswitch-schema/contract.json`.
//!
//! Everything the monitor reads from or writes to the database is declared there once: the
//! tables and columns it monitors (with their OVSDB types and the `monitor_cond` filter), the
//! map keys it interprets, and the map keys it owns. The daemon builds its monitor request and
//! its status keys from this, a test checks it against the installed `vswitch.ovsschema`, and
//! `docs/ovsdb-contract.md` documents every key, so none of the three can drift from the code.
//!
//! Column types use a small notation: `string`, `integer`, `boolean`, `real`, `uuid` for a
//! scalar; `optional<T>` for a set of at most one; `map<K,V>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;

const CONTRACT_JSON: &str = include_str!("../vswitch-schema/contract.json");

#[derive(Debug, Clone, Error, PartialEq)]
pub enum SchemaError {
    #[error("vswitch-schema/contract.json: {0}")]
    Contract(String),
    #[error("database schema: {0}")]
    Incompatible(String),
}

/// An OVSDB atomic type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atomic {
    String,
    Integer,
    Boolean,
    Real,
    Uuid,
}

impl Atomic {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Atomic::String,
            "integer" => Atomic::Integer,
            "boolean" => Atomic::Boolean,
            "real" => Atomic::Real,
            "uuid" => Atomic::Uuid,
            _ => return None,
        })
    }

    /// Reads an OVSDB `<base-type>`: `"string"` or `{"type": "string", ...}`.
    fn from_ovsdb(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) => Self::parse(s),
            Value::Object(o) => o.get("type").and_then(Value::as_str).and_then(Self::parse),
            _ => None,
        }
    }
}

/// The type of a column we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Exactly one value (`min == max == 1`).
    Scalar(Atomic),
    /// Zero or one value (`min == 0, max == 1`).
    Optional(Atomic),
    /// Key → value map (`max` > 1 or unlimited).
    Map(Atomic, Atomic),
}

impl ColumnType {
    fn parse(s: &str) -> Option<Self> {
        if let Some(inner) = s
            .strip_prefix("optional<")
            .and_then(|r| r.strip_suffix('>'))
        {
            return Atomic::parse(inner).map(ColumnType::Optional);
        }
        if let Some(inner) = s.strip_prefix("map<").and_then(|r| r.strip_suffix('>')) {
            let (k, v) = inner.split_once(',')?;
            return Some(ColumnType::Map(
                Atomic::parse(k.trim())?,
                Atomic::parse(v.trim())?,
            ));
        }
        Atomic::parse(s).map(ColumnType::Scalar)
    }

    /// Whether an `update2` diff of this column replaces its value (see `Replica::new`).
    pub fn is_scalar(self) -> bool {
        matches!(self, ColumnType::Scalar(_))
    }

    /// Whether an OVSDB `<type>` (a column's `"type"` in a `.ovsschema`) is this type.
    pub fn matches_ovsdb(self, ty: &Value) -> bool {
        if let Value::String(s) = ty {
            return Atomic::parse(s).is_some_and(|a| self == ColumnType::Scalar(a));
        }
        let Some(obj) = ty.as_object() else {
            return false;
        };
        let key = obj.get("key").and_then(Atomic::from_ovsdb);
        let value = obj.get("value").map(Atomic::from_ovsdb);
        let min = obj.get("min").map_or(Some(1), Value::as_u64);
        // "unlimited" reads as None.
        let max = obj.get("max").map_or(Some(1), Value::as_u64);
        match self {
            ColumnType::Scalar(a) => {
                key == Some(a) && value.is_none() && min == Some(1) && max == Some(1)
            }
            ColumnType::Optional(a) => {
                key == Some(a) && value.is_none() && min == Some(0) && max == Some(1)
            }
            ColumnType::Map(k, v) => {
                key == Some(k) && value == Some(Some(v)) && max.is_none_or(|m| m > 1)
            }
        }
    }
}

/// One `monitor_cond` clause: `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: String,
    pub value: Value,
}

impl Condition {
    pub fn to_json(&self) -> Value {
        json!([self.column, self.function, self.value])
    }
}

/// A table we monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadTable {
    pub columns: BTreeMap<String, ColumnType>,
    /// `monitor_cond` clauses; a row is monitored when it matches ANY of them (OVSDB
    /// monitor conditions are a disjunction). Empty: every row.
    pub conditions: Vec<Condition>,
}

/// The parsed contract; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub database: String,
    pub tables: BTreeMap<String, ReadTable>,
    /// "Table.column" → key → what it means.
    keys_read: BTreeMap<String, BTreeMap<String, String>>,
    keys_written: BTreeMap<String, BTreeMap<String, String>>,
}

/// The JSON shape, before types are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    database: String,
    read: BTreeMap<String, RawTable>,
    keys_read: BTreeMap<String, BTreeMap<String, String>>,
    keys_written: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    columns: BTreeMap<String, String>,
    #[serde(default, rename = "where")]
    conditions: Vec<(String, String, Value)>,
}

impl Contract {
    /// The compiled-in contract, parsed once.
    pub fn get() -> Result<&'static Contract, SchemaError> {
        static CONTRACT: OnceLock<Result<Contract, SchemaError>> = OnceLock::new();
        CONTRACT
            .get_or_init(|| Contract::parse(CONTRACT_JSON))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Parses contract text; every column type must be known and every key section must
    /// name a column of a table we read.
    pub fn parse(text: &str) -> Result<Contract, SchemaError> {
        let raw: RawContract =
            serde_json::from_str(text).map_err(|e| SchemaError::Contract(e.to_string()))?;
        let mut tables = BTreeMap::new();
        for (name, table) in raw.read {
            let columns = table
                .columns
                .into_iter()
                .map(|(col, ty)| match ColumnType::parse(&ty) {
                    Some(t) => Ok((col, t)),
                    None => Err(SchemaError::Contract(format!(
                        "{name}.{col}: unknown type \"{ty}\""
                    ))),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            let conditions = table
                .conditions
                .into_iter()
                .map(|(column, function, value)| Condition {
                    column,
                    function,
                    value,
                })
                .collect();
            tables.insert(
                name,
                ReadTable {
                    columns,
                    conditions,
                },
            );
        }
        let contract = Contract {
            database: raw.database,
            tables,
            keys_read: raw.keys_read,
            keys_written: raw.keys_written,
        };
        for section in contract
            .keys_read
            .keys()
            .chain(contract.keys_written.keys())
        {
            if contract.column_type(section).is_none() {
                return Err(SchemaError::Contract(format!(
                    "key section \"{section}\" is not a column we read"
                )));
            }
        }
        Ok(contract)
    }

    /// The type of "Table.column", if we read it.
    pub fn column_type(&self, table_column: &str) -> Option<ColumnType> {
        let (table, column) = table_column.split_once('.')?;
        self.tables.get(table)?.columns.get(column).copied()
    }

    /// The keys of "Table.column" we interpret; a trailing `*` stands for any suffix.
    pub fn keys_read(&self, table_column: &str) -> Vec<&str> {
        section_keys(&self.keys_read, table_column)
    }

    /// The keys of "Table.column" we own and write; nothing else in that map is touched.
    pub fn keys_written(&self, table_column: &str) -> Vec<&str> {
        section_keys(&self.keys_written, table_column)
    }

    /// Every key section: ("Table.column", key, meaning), read ones first.
    pub fn all_keys(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.keys_read
            .iter()
            .chain(&self.keys_written)
            .flat_map(|(section, keys)| {
                keys.iter()
                    .map(move |(k, doc)| (section.as_str(), k.as_str(), doc.as_str()))
            })
    }

    /// The (table, column) pairs that are scalars, for `Replica::new`.
    pub fn scalar_columns(&self) -> BTreeSet<(String, String)> {
        self.tables
            .iter()
            .flat_map(|(t, table)| {
                table
                    .columns
                    .iter()
                    .filter(|(_, ty)| ty.is_scalar())
                    .map(move |(c, _)| (t.clone(), c.clone()))
            })
            .collect()
    }

    /// The `<monitor-cond-requests>` parameter of `monitor_cond`/`monitor_cond_since`.
    pub fn monitor_requests(&self) -> Value {
        let requests = self
            .tables
            .iter()
            .map(|(name, table)| {
                let mut request = json!({ "columns": table.columns.keys().collect::<Vec<_>>() });
                if !table.conditions.is_empty() {
                    request["where"] = table.conditions.iter().map(Condition::to_json).collect();
                }
                (name.clone(), json!([request]))
            })
            .collect::<serde_json::Map<_, _>>();
        Value::Object(requests)
    }

    /// Checks a database schema (the `get_schema` reply, or a `.ovsschema` file) for every
    /// table and column we read, with a compatible type.
    pub fn check_schema(&self, schema: &Value) -> Result<(), SchemaError> {
        let name = schema.get("name").and_then(Value::as_str);
        if name != Some(self.database.as_str()) {
            return Err(SchemaError::Incompatible(format!(
                "database is {name:?}, expected \"{}\"",
                self.database
            )));
        }
        for (table, read) in &self.tables {
            for (column, ty) in &read.columns {
                let found = schema
                    .get("tables")
                    .and_then(|t| t.get(table))
                    .and_then(|t| t.get("columns"))
                    .and_then(|c| c.get(column))
                    .and_then(|c| c.get("type"));
                match found {
                    None => {
                        return Err(SchemaError::Incompatible(format!(
                            "no column {table}.{column}"
                        )));
                    }
                    Some(t) if !ty.matches_ovsdb(t) => {
                        return Err(SchemaError::Incompatible(format!(
                            "{table}.{column} has type {t}, expected {ty:?}"
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

fn section_keys<'a>(
    sections: &'a BTreeMap<String, BTreeMap<String, String>>,
    table_column: &str,
) -> Vec<&'a str> {
    sections
        .get(table_column)
        .map(|keys| keys.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_notation_parses() {
        assert_eq!(
            ColumnType::parse("map<string,string>"),
            Some(ColumnType::Map(Atomic::String, Atomic::String))
        );
        assert_eq!(
            ColumnType::parse("optional<integer>"),
            Some(ColumnType::Optional(Atomic::Integer))
        );
        assert_eq!(
            ColumnType::parse("boolean"),
            Some(ColumnType::Scalar(Atomic::Boolean))
        );
        assert_eq!(ColumnType::parse("set<string>"), None);
        assert_eq!(ColumnType::parse("map<string>"), None);
    }

    #[test]
    fn ovsdb_types_are_matched_by_cardinality_not_only_by_name() {
        let opt_int = json!({"key": "integer", "min": 0, "max": 1});
        let int = json!("integer");
        let string_map = json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"});
        let string_set = json!({"key": "string", "min": 0, "max": "unlimited"});
        assert!(ColumnType::Optional(Atomic::Integer).matches_ovsdb(&opt_int));
        assert!(!ColumnType::Optional(Atomic::Integer).matches_ovsdb(&int));
        assert!(ColumnType::Scalar(Atomic::Integer).matches_ovsdb(&int));
        assert!(!ColumnType::Scalar(Atomic::Integer).matches_ovsdb(&opt_int));
        let map = ColumnType::Map(Atomic::String, Atomic::String);
        assert!(map.matches_ovsdb(&string_map));
        assert!(!map.matches_ovsdb(&string_set));
        assert!(
            ColumnType::Optional(Atomic::Boolean)
                .matches_ovsdb(&json!({"key": {"type": "boolean"}, "min": 0, "max": 1}))
        );
    }

    #[test]
    fn a_key_section_must_name_a_column_we_read() {
        let text = r#"{"database": "Open_vSwitch",
            "read": {"Interface": {"columns": {"options": "map<string,string>"}}},
            "keys_read": {"Interface.status": {"x": "y"}}, "keys_written": {}}"#;
        assert!(
            matches!(Contract::parse(text), Err(SchemaError::Contract(m)) if m.contains("Interface.status"))
        );
    }

    #[test]
    fn monitor_request_lists_columns_and_the_type_filter() {
        let c = Contract::get().unwrap();
        let req = c.monitor_requests();
        let iface = &req["Interface"][0];
        assert_eq!(
            iface["where"],
            json!([
                ["type", "==", "gre"],
                ["type", "==", "geneve"],
                ["type", "==", "vxlan"]
            ])
        );
        let cols: Vec<&str> = iface["columns"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(cols.contains(&"options") && cols.contains(&"external_ids"));
        assert!(req["Open_vSwitch"][0].get("where").is_none());
        assert!(
            c.scalar_columns()
                .contains(&("Interface".into(), "name".into()))
        );
        assert!(
            !c.scalar_columns()
                .contains(&("Interface".into(), "ofport".into()))
        );
    }
}
