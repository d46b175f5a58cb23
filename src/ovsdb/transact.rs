//! `transact` (RFC 7047 §4.1.3): request params and the check of its result.
//!
//! The params are serialised from the caller's operations straight into bytes: a status write
//! of 10,000 rows never becomes a `serde_json::Value` tree (see `status::Mutation`).
//!
//! A transaction the server rejects still comes back as a successful JSON-RPC reply; the
//! failure sits in the per-operation results (an object with "error" and maybe "details"),
//! possibly in an extra trailing element for a commit-time failure such as a constraint
//! violation. Callers must not have to dig for it, so any such error becomes an `Err`.

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

use super::error::OvsdbError;

/// The request params `["<db>", op...]`, serialised.
pub fn params<T: Serialize>(db: &str, ops: &[T]) -> Result<Vec<u8>, OvsdbError> {
    Ok(serde_json::to_vec(&Params { db, ops })?)
}

struct Params<'a, T> {
    db: &'a str,
    ops: &'a [T],
}

impl<T: Serialize> Serialize for Params<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.ops.len() + 1))?;
        seq.serialize_element(self.db)?;
        for op in self.ops {
            seq.serialize_element(op)?;
        }
        seq.end()
    }
}

/// The per-operation results, or the first error among them.
pub fn check_result(result: Value) -> Result<Vec<Value>, OvsdbError> {
    let Value::Array(results) = result else {
        return Err(OvsdbError::protocol(
            "transact reply",
            "result is not an array",
        ));
    };
    if let Some(err) = results.iter().find_map(|r| r.get("error")) {
        let error = err.as_str().map_or_else(|| err.to_string(), str::to_owned);
        let first = results.iter().find(|r| r.get("error").is_some());
        let details = first.and_then(|r| r.get("details")).and_then(Value::as_str);
        return Err(OvsdbError::Transaction(match details {
            Some(d) => format!("{error}: {d}"),
            None => error,
        }));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn params_put_the_database_first() {
        let bytes = params("Open_vSwitch", &[json!({"op": "comment", "comment": "x"})]).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            json!(["Open_vSwitch", {"op": "comment", "comment": "x"}])
        );
    }

    #[test]
    fn success_returns_every_result() {
        let r = check_result(json!([{"count": 1}, {}])).unwrap();
        assert_eq!(r, vec![json!({"count": 1}), json!({})]);
    }

    #[test]
    fn operation_error_carries_error_and_details() {
        let e = check_result(json!([
            {"count": 0},
            {"error": "constraint violation", "details": "no row \"x\""},
            null
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("constraint violation") && e.contains("no row \"x\""),
            "{e}"
        );
    }

    #[test]
    fn commit_error_in_trailing_element_is_detected() {
        let e = check_result(json!([{}, {"error": "referential integrity violation"}]));
        assert!(
            matches!(e, Err(OvsdbError::Transaction(m)) if m == "referential integrity violation")
        );
    }

    #[test]
    fn non_array_result_is_a_protocol_error() {
        assert!(matches!(
            check_result(json!({"a": 1})),
            Err(OvsdbError::Protocol { .. })
        ));
    }
}
