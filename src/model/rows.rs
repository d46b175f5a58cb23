//! Typed views of the OVSDB rows the model reads. The column names come from the contract in
//! `vswitch-schema/contract.json` (see [`crate::schema`]).
//!
//! [`Rows`] keeps the typed rows between OVSDB changes and converts again only the rows the
//! replica reports as changed: at 1,000 tunnels, converting every row (a dozen strings and two
//! maps each) after every change was a large part of a one-tunnel change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::string_map::StringMap;
use crate::ovsdb::datum::Datum;
use crate::ovsdb::replica::{Changes, Replica, Row};

/// An `Interface` row, with the columns the monitor reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceRow {
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub options: StringMap,
    pub external_ids: StringMap,
    pub cfm_fault: Option<bool>,
    pub ofport: Option<i64>,
}

/// The `Open_vSwitch` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenVSwitchRow {
    pub uuid: String,
    pub other_config: BTreeMap<String, String>,
    pub external_ids: StringMap,
}

/// All Interface rows of the replica.
pub fn interfaces(replica: &Replica) -> Vec<InterfaceRow> {
    replica
        .table("Interface")
        .map(|(uuid, row)| interface(uuid, row))
        .collect()
}

fn interface(uuid: &str, row: &Row) -> InterfaceRow {
    InterfaceRow {
        uuid: uuid.to_owned(),
        name: row.get("name").as_str().unwrap_or_default().to_owned(),
        kind: row.get("type").as_str().unwrap_or_default().to_owned(),
        options: string_map(row.get("options")),
        external_ids: string_map(row.get("external_ids")),
        cfm_fault: row.get("cfm_fault").as_opt_bool(),
        ofport: row.get("ofport").as_opt_int(),
    }
}

/// A map column's string pairs (others are not in our columns' types).
fn string_map(datum: &Datum) -> StringMap {
    match datum {
        Datum::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
            .collect(),
        Datum::Set(_) => StringMap::default(),
    }
}

/// The typed rows of a replica, kept between changes (see the module documentation).
#[derive(Debug, Default)]
pub struct Rows {
    /// By UUID: the replica's order.
    interfaces: BTreeMap<String, InterfaceRow>,
    /// Interface UUIDs by name (names are not unique in the schema), sorted. A `Vec`, not a
    /// `BTreeSet`: nearly every name has one row, and a set's node costs ~280 bytes for it.
    by_name: HashMap<String, Vec<String>>,
    open_vswitch: Option<OpenVSwitchRow>,
}

/// The Interface rows one refresh changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    pub uuids: BTreeSet<String>,
    /// The names these rows had before and have now.
    pub names: BTreeSet<String>,
}

impl Rows {
    /// [`Rows::refresh`] with the changes taken from `replica` itself: for tests and
    /// benchmarks that own their replica (the daemon reads it through the client's lock).
    pub fn catch_up(&mut self, replica: &mut Replica) -> Option<Touched> {
        let changes = replica.take_changes();
        self.refresh(replica, &changes)
    }

    /// Brings the rows in line with `replica`, given what changed since the last call.
    /// Returns the Interface rows that changed, or `None` when all were read again.
    pub fn refresh(&mut self, replica: &Replica, changes: &Changes) -> Option<Touched> {
        let ovs_untouched = changes
            .of("Open_vSwitch")
            .is_some_and(|mut u| u.next().is_none());
        if !ovs_untouched {
            self.open_vswitch = open_vswitch(replica);
        }
        let Some(changed) = changes.of("Interface") else {
            self.interfaces.clear();
            self.by_name.clear();
            for (uuid, row) in replica.table("Interface") {
                self.put(interface(uuid, row));
            }
            return None;
        };
        let mut touched = Touched::default();
        for uuid in changed {
            if let Some(old) = self.interfaces.remove(uuid) {
                if let Some(uuids) = self.by_name.get_mut(&old.name) {
                    uuids.retain(|u| u != uuid);
                    if uuids.is_empty() {
                        self.by_name.remove(&old.name);
                    }
                }
                touched.names.insert(old.name);
            }
            if let Some(row) = replica.row("Interface", uuid) {
                let row = interface(uuid, row);
                touched.names.insert(row.name.clone());
                self.put(row);
            }
            touched.uuids.insert(uuid.to_owned());
        }
        Some(touched)
    }

    fn put(&mut self, row: InterfaceRow) {
        let uuids = self.by_name.entry(row.name.clone()).or_default();
        if let Err(at) = uuids.binary_search(&row.uuid) {
            uuids.insert(at, row.uuid.clone());
        }
        self.interfaces.insert(row.uuid.clone(), row);
    }

    /// The Interface rows called `name`, by UUID.
    pub fn named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a InterfaceRow> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|uuid| self.interfaces.get(uuid))
    }

    /// Every Interface row, by UUID.
    pub fn interfaces(&self) -> impl Iterator<Item = &InterfaceRow> + Clone {
        self.interfaces.values()
    }

    pub fn interface(&self, uuid: &str) -> Option<&InterfaceRow> {
        self.interfaces.get(uuid)
    }

    pub fn open_vswitch(&self) -> Option<&OpenVSwitchRow> {
        self.open_vswitch.as_ref()
    }
}

/// The Open_vSwitch row. The table has one row; should there be more, the Python monitor
/// used the last one iterated, and we use the one with the greatest UUID, deterministically.
pub fn open_vswitch(replica: &Replica) -> Option<OpenVSwitchRow> {
    replica
        .table("Open_vSwitch")
        .last()
        .map(|(uuid, row)| OpenVSwitchRow {
            uuid: uuid.to_owned(),
            other_config: row.get("other_config").as_string_map(),
            external_ids: string_map(row.get("external_ids")),
        })
}

#[cfg(test)]
impl InterfaceRow {
    /// A row for tests: `name`, `type` and `options`; the UUID is derived from the name.
    pub fn for_test(name: &str, kind: &str, opts: &[(&str, &str)]) -> Self {
        InterfaceRow {
            uuid: format!("uuid-{name}"),
            name: name.to_owned(),
            kind: kind.to_owned(),
            options: opts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kept_rows_follow_every_change_and_only_changed_rows_are_read() {
        let scalar = ("Interface".to_owned(), "name".to_owned());
        let mut replica = Replica::new(BTreeSet::from([scalar]));
        let mut rows = Rows::default();
        replica
            .apply_update2(&json!({
                "Interface": {"u1": {"initial": {"name": "a"}}, "u2": {"initial": {"name": "b"}}},
                "Open_vSwitch": {"o": {"initial": {"other_config": ["map", [["k", "v"]]]}}}}))
            .unwrap();
        assert_eq!(
            rows.refresh(&replica, &replica.clone().take_changes()),
            None
        );
        replica.take_changes();
        assert_eq!(rows.interfaces().count(), 2);
        assert_eq!(rows.open_vswitch().unwrap().other_config["k"], "v");

        replica
            .apply_update2(&json!({"Interface": {"u1": {"delete": null},
                "u3": {"insert": {"name": "c"}}, "u2": {"modify": {"name": "b2"}}}}))
            .unwrap();
        let touched = {
            let c = replica.take_changes();
            rows.refresh(&replica, &c)
        }
        .unwrap();
        assert_eq!(touched.uuids.iter().collect::<Vec<_>>(), ["u1", "u2", "u3"]);
        assert_eq!(
            touched.names.iter().collect::<Vec<_>>(),
            ["a", "b", "b2", "c"]
        );
        assert_eq!(
            rows.interfaces().cloned().collect::<Vec<_>>(),
            interfaces(&replica)
        );
        assert_eq!(rows.interface("u2").unwrap().name, "b2");
        assert_eq!(rows.named("b2").count(), 1);
        assert_eq!(rows.named("a").count() + rows.named("b").count(), 0);
        assert!(rows.open_vswitch().is_some(), "an untouched table is kept");
    }
}
