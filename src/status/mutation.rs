//! One status write on one row, in the compact form it is planned in.
//!
//! A status pass at 10,000 tunnels writes 10,000 rows. As `serde_json::Value` trees the
//! operations cost about 1.2 KB each (every object is a map node, every string its own
//! allocation), and the request was copied once more into the JSON-RPC message before being
//! serialised: heaptrack attributed ~45 MB of the peak at N=10000 to this one transaction. A
//! [`Mutation`] holds only the row's UUID and our key/value pairs (~200 bytes) and serialises
//! straight into the request bytes (see `ovsdb::Client::transact`), producing exactly the
//! RFC 7047 `mutate` operation the `Value` form did.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// `mutate` of `external_ids` on one row: delete `delete`, then insert `insert`. A map
/// `insert` never overwrites an existing key (RFC 7047 §5.1), so a changed value is in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub table: &'static str,
    pub uuid: String,
    pub delete: Vec<&'static str>,
    pub insert: Vec<(&'static str, String)>,
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut op = s.serialize_map(Some(4))?;
        op.serialize_entry("op", "mutate")?;
        op.serialize_entry("table", self.table)?;
        op.serialize_entry("where", &[("_uuid", "==", ("uuid", &self.uuid))])?;
        op.serialize_entry("mutations", &Mutations(self))?;
        op.end()
    }
}

/// The `mutations` array: a delete of a key set and an insert of a map, each only when
/// non-empty.
struct Mutations<'a>(&'a Mutation);

impl Serialize for Mutations<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut seq = s.serialize_seq(None)?;
        if !m.delete.is_empty() {
            seq.serialize_element(&("external_ids", "delete", ("set", &m.delete)))?;
        }
        if !m.insert.is_empty() {
            seq.serialize_element(&("external_ids", "insert", ("map", &m.insert)))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn serialises_to_the_rfc7047_mutate_operation() {
        let m = Mutation {
            table: "Interface",
            uuid: "u1".into(),
            delete: vec!["ipsec-state"],
            insert: vec![("ipsec-state", "up".into()), ("ipsec-version", "2".into())],
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"op": "mutate", "table": "Interface",
                "where": [["_uuid", "==", ["uuid", "u1"]]],
                "mutations": [
                    ["external_ids", "delete", ["set", ["ipsec-state"]]],
                    ["external_ids", "insert", ["map", [["ipsec-state", "up"], ["ipsec-version", "2"]]]]]})
        );
        let delete_only = Mutation {
            insert: vec![],
            ..m
        };
        assert_eq!(
            serde_json::to_value(&delete_only).unwrap()["mutations"],
            json!([["external_ids", "delete", ["set", ["ipsec-state"]]]])
        );
    }
}
