//! Typed views of the OVSDB rows the model reads. The column names come from the contract in
//! `vswitch-schema/contract.json` (see [`crate::schema`]).

use std::collections::BTreeMap;

use crate::ovsdb::replica::Replica;

/// An `Interface` row, with the columns the monitor reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceRow {
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub cfm_fault: Option<bool>,
    pub ofport: Option<i64>,
}

/// The `Open_vSwitch` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenVSwitchRow {
    pub uuid: String,
    pub other_config: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

/// All Interface rows of the replica.
pub fn interfaces(replica: &Replica) -> Vec<InterfaceRow> {
    replica
        .table("Interface")
        .map(|(uuid, row)| InterfaceRow {
            uuid: uuid.to_owned(),
            name: row.get("name").as_str().unwrap_or_default().to_owned(),
            kind: row.get("type").as_str().unwrap_or_default().to_owned(),
            options: row.get("options").as_string_map(),
            external_ids: row.get("external_ids").as_string_map(),
            cfm_fault: row.get("cfm_fault").as_opt_bool(),
            ofport: row.get("ofport").as_opt_int(),
        })
        .collect()
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
            external_ids: row.get("external_ids").as_string_map(),
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
