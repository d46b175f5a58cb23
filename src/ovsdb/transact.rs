//! `transact` (RFC 7047 §4.1.3): request params and the check of its result.
//!
//! A transaction the server rejects still comes back as a successful JSON-RPC reply; the
//! failure sits in the per-operation results (an object with "error" and maybe "details"),
//! possibly in an extra trailing element for a commit-time failure such as a constraint
//! violation. Callers must not have to dig for it, so any such error becomes an `Err`.

use serde_json::{Value, json};

use super::error::OvsdbError;

pub fn params(db: &str, ops: Vec<Value>) -> Vec<Value> {
    std::iter::once(json!(db)).chain(ops).collect()
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
    use super::*;

    #[test]
    fn params_put_the_database_first() {
        assert_eq!(
            params(
                "Open_vSwitch",
                vec![json!({"op": "comment", "comment": "x"})]
            ),
            vec![
                json!("Open_vSwitch"),
                json!({"op": "comment", "comment": "x"})
            ]
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
