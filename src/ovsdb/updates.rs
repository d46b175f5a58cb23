//! `<table-updates>` (RFC 7047 §4.1.6) and `<table-updates2>` (ovsdb-server(7)), decoded
//! straight into typed row operations.
//!
//! The initial monitor reply carries every monitored row, and the echo of a status write at
//! 10,000 tunnels carries 10,000 row diffs. Decoded first into a `serde_json::Value` tree, a
//! row costs 2–3 KB (every object a map node, every string its own allocation) on top of the
//! message text and of the replica being built: heaptrack showed this as the largest
//! transient after the status transaction itself. Here serde reads the bytes directly into
//! [`Row`]s (column → [`super::datum::Datum`]), which move into the replica as they are.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::replica::Row;

/// Row updates by table, then by UUID.
pub type TableUpdates<R> = BTreeMap<String, BTreeMap<String, R>>;

/// One row of a plain `monitor` update: the whole new row, none when the row was deleted.
#[derive(Debug, Deserialize)]
pub struct RowUpdate {
    #[serde(default)]
    pub new: Option<Row>,
}

/// One row of `monitor_cond(_since)`: exactly one of these members.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowUpdate2 {
    Initial(Row),
    Insert(Row),
    Modify(Row),
    Delete(IgnoredAny),
}

/// The updates of any monitor flavour.
#[derive(Debug)]
pub enum Updates {
    /// `monitor`: whole rows.
    Rows(TableUpdates<RowUpdate>),
    /// `monitor_cond(_since)`: initial rows, inserts, diffs and deletes.
    Diffs(TableUpdates<RowUpdate2>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_row_operation_and_rejects_ambiguous_ones() {
        let text = br#"{"Interface": {
            "a": {"initial": {"name": "t1", "options": ["map", [["psk", "x"]]]}},
            "b": {"modify": {"ofport": 3}},
            "c": {"delete": null}}}"#;
        let t: TableUpdates<RowUpdate2> = serde_json::from_slice(text).unwrap();
        let rows = &t["Interface"];
        assert!(
            matches!(&rows["a"], RowUpdate2::Initial(r) if r.get("name").as_str() == Some("t1"))
        );
        assert!(
            matches!(&rows["b"], RowUpdate2::Modify(r) if r.get("ofport").as_opt_int() == Some(3))
        );
        assert!(matches!(rows["c"], RowUpdate2::Delete(_)));
        for bad in [
            &br#"{"T": {"u": {"insert": {}, "delete": null}}}"#[..],
            br#"{"T": {"u": {"explode": {}}}}"#,
            br#"{"T": {"u": {"insert": {"c": {"x": 1}}}}}"#,
        ] {
            assert!(serde_json::from_slice::<TableUpdates<RowUpdate2>>(bad).is_err());
        }
    }

    #[test]
    fn a_plain_update_without_new_is_a_delete() {
        let text = br#"{"T": {"u1": {"old": {"name": "a"}}, "u2": {"new": {"name": "b"}}}}"#;
        let t: TableUpdates<RowUpdate> = serde_json::from_slice(text).unwrap();
        assert!(t["T"]["u1"].new.is_none());
        assert_eq!(
            t["T"]["u2"].new.as_ref().unwrap().get("name").as_str(),
            Some("b")
        );
    }
}
