//! The local copy of the monitored rows, kept current by `update`, `update2` and `update3`
//! notifications.
//!
//! Updates arrive decoded into typed rows ([`super::updates`]), so applying them cannot fail;
//! the `Value` forms ([`Replica::apply_update`], [`Replica::apply_update2`]) decode first.
//!
//! The replica also records which rows each update touched ([`Replica::take_changes`]), so
//! that its reader can refresh what it derives from one changed row instead of from all N:
//! a one-tunnel change must not cost a pass over 10,000 rows.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use thiserror::Error;

use super::datum::Datum;
use super::updates::{RowUpdate, RowUpdate2, TableUpdates, Updates};

/// Only the fact, never the offending value: it may be a pre-shared key.
#[derive(Debug, Error, PartialEq)]
pub enum UpdateError {
    #[error("malformed table-updates")]
    Malformed,
}

/// One row: column name → value, sorted by name. Columns not monitored are absent.
///
/// A sorted `Vec` rather than a `BTreeMap`: a row has half a dozen columns, and a map's node
/// (~600 bytes) would cost more than the values at 10,000 rows. Column names are shared
/// ([`column_name`]): every row names the same few columns, and a heap copy of each name in
/// each row cost ~200 bytes a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    columns: Vec<(Arc<str>, Datum)>,
}

/// How many distinct column names are shared; past it (a server sending names we never asked
/// for) each row keeps its own copy, so a hostile server cannot grow the table without bound.
const SHARED_NAMES: usize = 256;

/// The shared copy of a column name (see [`Row`]).
fn column_name(name: String) -> Arc<str> {
    static NAMES: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = names.get(name.as_str()) {
        return Arc::clone(shared);
    }
    let name: Arc<str> = Arc::from(name);
    if names.len() < SHARED_NAMES {
        names.insert(Arc::clone(&name));
    }
    name
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RowVisitor)
    }
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Row;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB row")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut row = Row::default();
        while let Some((column, value)) = map.next_entry::<String, Datum>()? {
            // A repeated member: the last one wins, as in a JSON object decoded to a map.
            if let Some(slot) = row.entry(column_name(column)) {
                *slot = value;
            }
        }
        row.columns.shrink_to_fit();
        Ok(row)
    }
}

static EMPTY: Datum = Datum::Set(Vec::new());

impl Row {
    /// The column's value; an absent column reads as the empty set.
    pub fn get(&self, column: &str) -> &Datum {
        self.columns
            .binary_search_by(|(c, _)| (**c).cmp(column))
            .ok()
            .and_then(|i| self.columns.get(i))
            .map_or(&EMPTY, |(_, d)| d)
    }

    /// The column's value, inserted empty if absent (always `Some`).
    fn entry(&mut self, column: Arc<str>) -> Option<&mut Datum> {
        let i = match self.columns.binary_search_by(|(c, _)| c.cmp(&column)) {
            Ok(i) => i,
            Err(i) => {
                self.columns.insert(i, (column, Datum::default()));
                i
            }
        };
        self.columns.get_mut(i).map(|(_, d)| d)
    }
}

/// Rows by table, then by UUID.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replica {
    tables: BTreeMap<String, BTreeMap<String, Row>>,
    /// Columns whose `update2` diff replaces the value (scalars, `min == max == 1`).
    scalars: BTreeSet<(String, String)>,
    changes: Changes,
}

/// What changed in a replica since the last [`Replica::take_changes`].
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Changes {
    /// Anything may have changed (a new replica, a resync): read every row again.
    #[default]
    All,
    /// UUIDs of the rows inserted, modified or deleted, by table.
    Rows(BTreeMap<String, BTreeSet<String>>),
}

impl Changes {
    /// The UUIDs of `table` that changed; `None` when every row must be read again.
    pub fn of(&self, table: &str) -> Option<impl Iterator<Item = &str>> {
        match self {
            Changes::All => None,
            Changes::Rows(t) => Some(t.get(table).into_iter().flatten().map(String::as_str)),
        }
    }

    /// Folds `later` into `self`.
    pub fn merge(&mut self, later: Changes) {
        match (&mut *self, later) {
            (Changes::All, _) => {}
            (_, Changes::All) => *self = Changes::All,
            (Changes::Rows(mine), Changes::Rows(theirs)) => {
                for (table, uuids) in theirs {
                    mine.entry(table).or_default().extend(uuids);
                }
            }
        }
    }
}

impl Replica {
    /// An empty replica; `scalars` lists the (table, column) pairs that are scalars in the
    /// schema, which decides how `update2` diffs apply.
    pub fn new(scalars: BTreeSet<(String, String)>) -> Self {
        Self {
            tables: BTreeMap::new(),
            scalars,
            changes: Changes::All,
        }
    }

    /// The rows changed since the previous call (everything, for a new replica).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::replace(&mut self.changes, Changes::Rows(BTreeMap::new()))
    }

    pub fn table(&self, name: &str) -> impl Iterator<Item = (&str, &Row)> {
        self.tables
            .get(name)
            .into_iter()
            .flat_map(|t| t.iter().map(|(u, r)| (u.as_str(), r)))
    }

    pub fn row(&self, table: &str, uuid: &str) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, BTreeMap::len)
    }

    pub fn clear(&mut self) {
        self.tables.clear();
        self.changes = Changes::All;
    }

    /// Applies decoded updates of any monitor flavour. With `monitor` (RFC 7047 §4.1.6) a
    /// row's `new` is the whole row and a missing `new` deletes it; with `monitor_cond(_since)`
    /// a `modify` is a diff (see [`Datum::apply_diff`]).
    pub fn apply(&mut self, updates: Updates) {
        match updates {
            Updates::Rows(tables) => self.apply_ops(tables, |u: RowUpdate| match u.new {
                Some(row) => RowOp::Put(row),
                None => RowOp::Delete,
            }),
            Updates::Diffs(tables) => self.apply_ops(tables, |u| match u {
                RowUpdate2::Initial(row) | RowUpdate2::Insert(row) => RowOp::Put(row),
                RowUpdate2::Modify(diff) => RowOp::Modify(diff),
                RowUpdate2::Delete(_) => RowOp::Delete,
            }),
        }
    }

    /// Applies `<table-updates>` given as a `Value`. All or nothing: on error the replica is
    /// unchanged.
    pub fn apply_update(&mut self, updates: &Value) -> Result<(), UpdateError> {
        let tables =
            TableUpdates::<RowUpdate>::deserialize(updates).map_err(|_| UpdateError::Malformed)?;
        self.apply(Updates::Rows(tables));
        Ok(())
    }

    /// Applies `<table-updates2>` given as a `Value`. All or nothing: every row update is
    /// decoded before any is applied, so a malformed one leaves the replica unchanged.
    pub fn apply_update2(&mut self, updates: &Value) -> Result<(), UpdateError> {
        let tables =
            TableUpdates::<RowUpdate2>::deserialize(updates).map_err(|_| UpdateError::Malformed)?;
        self.apply(Updates::Diffs(tables));
        Ok(())
    }

    fn apply_ops<R>(&mut self, tables: TableUpdates<R>, op: impl Fn(R) -> RowOp) {
        for (table, rows) in tables {
            if let Changes::Rows(changed) = &mut self.changes {
                changed
                    .entry(table.clone())
                    .or_default()
                    .extend(rows.keys().cloned());
            }
            let t = self.tables.entry(table.clone()).or_default();
            for (uuid, update) in rows {
                match op(update) {
                    RowOp::Put(row) => {
                        t.insert(uuid, row);
                    }
                    RowOp::Delete => {
                        t.remove(&uuid);
                    }
                    RowOp::Modify(diff) => {
                        let row = t.entry(uuid).or_default();
                        for (col, d) in diff.columns {
                            let scalar = self.scalars.contains(&(table.clone(), col.to_string()));
                            if let Some(cur) = row.entry(col) {
                                cur.apply_diff(d, scalar);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One decoded row update, ready to apply infallibly.
enum RowOp {
    Put(Row),
    Delete,
    Modify(Row),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scalars() -> BTreeSet<(String, String)> {
        [("Interface", "name"), ("Interface", "type")]
            .iter()
            .map(|(t, c)| (t.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn rows_share_their_column_names() {
        let mut r = Replica::new(scalars());
        r.apply_update2(&json!({"Interface": {
            "u1": {"initial": {"name": "t1", "type": "gre"}},
            "u2": {"initial": {"name": "t2", "type": "gre"}}}}))
            .unwrap();
        let name = |uuid: &str| {
            let row = r.row("Interface", uuid).unwrap();
            Arc::clone(&row.columns[0].0)
        };
        assert_eq!(&*name("u1"), "name");
        assert!(
            Arc::ptr_eq(&name("u1"), &name("u2")),
            "one copy of a column name"
        );
    }

    #[test]
    fn update2_lifecycle() {
        let mut r = Replica::new(scalars());
        r.apply_update2(&json!({"Interface": {"u1": {"initial": {
            "name": "t1", "type": "gre", "options": ["map", [["psk", "a"], ["remote_ip", "1.1.1.1"]]],
            "ofport": ["set", []]}}}}))
        .unwrap();
        r.apply_update2(&json!({"Interface": {"u1": {"modify": {
            "type": "vxlan", "options": ["map", [["psk", "b"]]], "ofport": 3}}}}))
            .unwrap();
        let row = r.row("Interface", "u1").unwrap();
        assert_eq!(row.get("type").as_str(), Some("vxlan"));
        assert_eq!(row.get("options").as_string_map()["psk"], "b");
        assert_eq!(row.get("ofport").as_opt_int(), Some(3));
        r.apply_update2(&json!({"Interface": {"u1": {"delete": null}}}))
            .unwrap();
        assert_eq!(r.len("Interface"), 0);
    }

    #[test]
    fn changes_name_the_rows_each_update_touched() {
        let mut r = Replica::new(scalars());
        r.apply_update2(&json!({"Interface": {"u1": {"initial": {"name": "t1"}},
            "u2": {"initial": {"name": "t2"}}}}))
            .unwrap();
        assert_eq!(
            r.take_changes(),
            Changes::All,
            "a new replica is read whole"
        );
        assert_eq!(r.take_changes(), Changes::Rows(BTreeMap::new()));
        r.apply_update2(&json!({"Interface": {"u2": {"modify": {"name": "t3"}}}}))
            .unwrap();
        r.apply_update2(&json!({"Interface": {"u1": {"delete": null}}}))
            .unwrap();
        let mut changes = r.take_changes();
        let uuids: Vec<&str> = changes.of("Interface").unwrap().collect();
        assert_eq!(uuids, ["u1", "u2"]);
        assert_eq!(changes.of("Open_vSwitch").unwrap().count(), 0);
        changes.merge(Changes::All);
        assert!(changes.of("Interface").is_none());
    }

    #[test]
    fn plain_update_replaces_rows() {
        let mut r = Replica::new(BTreeSet::new());
        r.apply_update(&json!({"Interface": {"u1": {"new": {"name": "a"}}}}))
            .unwrap();
        r.apply_update(&json!({"Interface": {"u1": {"old": {"name": "a"}, "new": {"name": "b"}}}}))
            .unwrap();
        assert_eq!(
            r.row("Interface", "u1").unwrap().get("name").as_str(),
            Some("b")
        );
        r.apply_update(&json!({"Interface": {"u1": {"old": {"name": "b"}}}}))
            .unwrap();
        assert!(r.row("Interface", "u1").is_none());
    }

    #[test]
    fn malformed_update_leaves_replica_unchanged() {
        let mut r = Replica::new(scalars());
        r.apply_update2(&json!({"Interface": {"u1": {"initial": {"name": "t1"}}}}))
            .unwrap();
        let before = r.clone();
        // "a" sorts before "b": the good row update is decoded first, the bad one fails.
        let bad = json!({"Interface": {
            "a": {"insert": {"name": "t2"}},
            "b": {"modify": {"name": {"x": 1}}},
            "u1": {"delete": null}}});
        assert!(r.apply_update2(&bad).is_err());
        assert_eq!(r, before);
        let bad_plain = json!({"Interface": {"a": {"new": {"name": "t2"}}, "b": {"new": 7}}});
        assert!(r.apply_update(&bad_plain).is_err());
        assert_eq!(r, before);
    }

    #[test]
    fn malformed_updates_are_errors() {
        let mut r = Replica::new(BTreeSet::new());
        assert!(r.apply_update2(&json!([])).is_err());
        assert!(
            r.apply_update2(&json!({"T": {"u": {"explode": {}}}}))
                .is_err()
        );
        assert!(
            r.apply_update2(&json!({"T": {"u": {"insert": {"c": {"x": 1}}}}}))
                .is_err()
        );
    }
}
