//! Which Interface rows a status pass must look at.
//!
//! A row's status keys are a function of the row (its name and `external_ids`), of the tunnel
//! of that name, and of the tunnel's live state and apply error. After a write that OVSDB
//! accepted, a row none of whose inputs changed needs nothing, so the next pass plans only the
//! rows that changed in the replica and the rows of tunnels whose state changed: a one-tunnel
//! change no longer computes and compares the keys of every row. The result is the same as
//! planning every row, except that a row whose last write is not yet echoed by the replica is
//! not written a second time.
//!
//! It also tracks the rows that status may have been written to and that left the replica
//! (see `status::forget`), without a pass over every row.

use std::collections::BTreeSet;

use super::pass::PassOutcome;
use crate::model::rows::{InterfaceRow, Rows, Touched};

/// What changed since the last completed status write. `None` stands for "anything".
#[derive(Debug, Default)]
pub struct StatusScope {
    /// Interface rows the replica showed at the last completed write.
    seen_rows: BTreeSet<String>,
    /// UUIDs of the rows changed in the replica since then.
    rows: Option<BTreeSet<String>>,
    /// Names of the tunnels whose configuration or live state changed since then.
    tunnels: Option<BTreeSet<String>>,
}

impl StatusScope {
    /// The replica's rows changed (`None`: all of them may have).
    pub fn rows_changed(&mut self, touched: Option<&Touched>) {
        match (touched, &mut self.rows) {
            (None, rows) => *rows = None,
            (Some(t), Some(rows)) => rows.extend(t.uuids.iter().cloned()),
            (Some(_), None) => {}
        }
    }

    /// The model re-evaluated these tunnels (`None`: all of them).
    pub fn tunnels_changed<'a>(&mut self, names: Option<impl IntoIterator<Item = &'a String>>) {
        match (names, &mut self.tunnels) {
            (None, tunnels) => *tunnels = None,
            (Some(n), Some(tunnels)) => tunnels.extend(n.into_iter().cloned()),
            (Some(_), None) => {}
        }
    }

    /// A pass replaced `old` by `new`: the tunnels whose live state or apply error differ.
    pub fn outcome_changed(&mut self, old: &PassOutcome, new: &PassOutcome) {
        let Some(tunnels) = &mut self.tunnels else {
            return;
        };
        let live = old.live.keys().chain(new.live.keys());
        let errors = old.apply_errors.keys().chain(new.apply_errors.keys());
        for name in live {
            if old.live.get(name) != new.live.get(name) {
                tunnels.insert(name.clone());
            }
        }
        for name in errors {
            if old.apply_errors.get(name) != new.apply_errors.get(name) {
                tunnels.insert(name.clone());
            }
        }
    }

    /// The tunnels whose configuration or live state changed since the last completed write
    /// (`None`: any may have).
    pub fn tunnels(&self) -> Option<&BTreeSet<String>> {
        self.tunnels.as_ref()
    }

    /// The rows whose keys may differ from what the last completed write left, by UUID.
    pub fn candidates<'a>(&self, rows: &'a Rows) -> Vec<&'a InterfaceRow> {
        let (Some(changed), Some(tunnels)) = (&self.rows, &self.tunnels) else {
            return rows.interfaces().collect();
        };
        let mut out: Vec<&InterfaceRow> = changed
            .iter()
            .filter_map(|uuid| rows.interface(uuid))
            .chain(tunnels.iter().flat_map(|name| rows.named(name)))
            .collect();
        out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        out.dedup_by(|a, b| a.uuid == b.uuid);
        out
    }

    /// Rows status may have been written to that left the replica.
    pub fn vanished(&self, rows: &Rows) -> Vec<&str> {
        let gone = |uuid: &&str| rows.interface(uuid).is_none();
        match &self.rows {
            Some(changed) => changed
                .iter()
                .map(String::as_str)
                .filter(|u| self.seen_rows.contains(*u))
                .filter(gone)
                .collect(),
            None => self
                .seen_rows
                .iter()
                .map(String::as_str)
                .filter(gone)
                .collect(),
        }
    }

    /// OVSDB shows what the last plan wanted (written, or nothing was needed).
    pub fn written(&mut self, rows: &Rows) {
        match self.rows.replace(BTreeSet::new()) {
            Some(changed) => {
                for uuid in changed {
                    if rows.interface(&uuid).is_some() {
                        self.seen_rows.insert(uuid);
                    } else {
                        self.seen_rows.remove(&uuid);
                    }
                }
            }
            None => self.seen_rows = rows.interfaces().map(|i| i.uuid.clone()).collect(),
        }
        self.tunnels = Some(BTreeSet::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{LiveState, LiveStatus};
    use crate::ovsdb::Replica;
    use serde_json::json;

    fn replica(rows: &[(&str, &str)]) -> Replica {
        let mut r = Replica::new(Default::default());
        let mut update = json!({"Interface": {}});
        for (uuid, name) in rows {
            update["Interface"][*uuid] = json!({"initial": {"name": name}});
        }
        r.apply_update2(&update).unwrap();
        r
    }

    fn uuids(rows: Vec<&InterfaceRow>) -> Vec<&str> {
        rows.into_iter().map(|r| r.uuid.as_str()).collect()
    }

    #[test]
    fn after_a_write_only_changed_rows_and_tunnels_are_candidates() {
        let mut r = replica(&[("u1", "a"), ("u2", "b"), ("u3", "c"), ("u4", "a")]);
        let mut rows = Rows::default();
        let mut scope = StatusScope::default();
        scope.rows_changed(rows.catch_up(&mut r).as_ref());
        assert_eq!(
            uuids(scope.candidates(&rows)).len(),
            4,
            "everything at first"
        );
        scope.written(&rows);
        assert!(scope.candidates(&rows).is_empty());

        r.apply_update2(&json!({"Interface": {"u2": {"modify": {"name": "b2"}}}}))
            .unwrap();
        scope.rows_changed(rows.catch_up(&mut r).as_ref());
        scope.tunnels_changed(Some(&BTreeSet::from(["a".to_owned()])));
        // Both rows called "a" (one may lose the name to the other), and the changed row.
        assert_eq!(uuids(scope.candidates(&rows)), ["u1", "u2", "u4"]);

        let mut old = PassOutcome::default();
        old.live
            .insert("c".into(), LiveStatus::new(LiveState::Negotiating));
        let mut new = PassOutcome::default();
        new.live.insert("c".into(), LiveStatus::new(LiveState::Up));
        scope.outcome_changed(&old, &new);
        assert_eq!(uuids(scope.candidates(&rows)), ["u1", "u2", "u3", "u4"]);
        scope.written(&rows);
        scope.outcome_changed(&new, &new);
        assert!(scope.candidates(&rows).is_empty(), "unchanged state");
    }

    #[test]
    fn rows_that_left_are_vanished_until_a_write_completes() {
        let mut r = replica(&[("u1", "a"), ("u2", "b")]);
        let mut rows = Rows::default();
        let mut scope = StatusScope::default();
        scope.rows_changed(rows.catch_up(&mut r).as_ref());
        assert!(scope.vanished(&rows).is_empty());
        scope.written(&rows);
        r.apply_update2(&json!({"Interface": {"u1": {"delete": null},
            "u9": {"insert": {"name": "z"}}}}))
            .unwrap();
        scope.rows_changed(rows.catch_up(&mut r).as_ref());
        assert_eq!(scope.vanished(&rows), ["u1"]);
        // A failed write keeps it; a completed one forgets it.
        assert_eq!(scope.vanished(&rows), ["u1"]);
        scope.written(&rows);
        assert!(scope.vanished(&rows).is_empty());
        // After a resync (everything changed), rows gone meanwhile are found too.
        r.clear();
        scope.rows_changed(rows.catch_up(&mut r).as_ref());
        assert_eq!(scope.vanished(&rows), ["u2", "u9"]);
    }
}
