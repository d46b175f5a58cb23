//! JSON-RPC 1.0 as Open vSwitch speaks it, shared by the OVSDB client and the unixctl server.
//!
//! OVS (`lib/jsonrpc.c`) differs from JSON-RPC 2.0 in ways that matter on the wire:
//! a reply always carries `"error": null`, an error reply always carries `"result": null`, a
//! notification carries `"id": null`, and unixctl errors are plain strings. Messages are
//! written back to back with no separator, so framing lives in [`codec`].

pub mod codec;

use serde_json::{Map, Value, json};
use thiserror::Error;

/// One JSON-RPC 1.0 message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects a reply with the same `id`.
    Request {
        method: String,
        params: Vec<Value>,
        id: Value,
    },
    /// A call with `"id": null` (OVSDB `update`, `update2`, `update3`).
    Notify { method: String, params: Vec<Value> },
    /// A successful reply.
    Reply { result: Value, id: Value },
    /// A failed reply; OVSDB sends an object or a string, unixctl a string.
    Error { error: Value, id: Value },
}

/// A JSON value that is not a JSON-RPC 1.0 message.
#[derive(Debug, Error, PartialEq)]
pub enum MessageError {
    #[error("JSON-RPC message is not an object")]
    NotObject,
    #[error("JSON-RPC message has neither a method nor a result/error pair")]
    Shape,
    #[error("JSON-RPC \"params\" is not an array")]
    Params,
    #[error("JSON-RPC \"method\" is not a string")]
    Method,
}

impl Message {
    pub fn request(method: impl Into<String>, params: Vec<Value>, id: Value) -> Self {
        Message::Request {
            method: method.into(),
            params,
            id,
        }
    }

    /// Converts to the exact object shape OVS emits.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { method, params, id } => {
                json!({"method": method, "params": params, "id": id})
            }
            Message::Notify { method, params } => {
                json!({"method": method, "params": params, "id": Value::Null})
            }
            Message::Reply { result, id } => {
                json!({"result": result, "error": Value::Null, "id": id})
            }
            Message::Error { error, id } => {
                json!({"result": Value::Null, "error": error, "id": id})
            }
        }
    }

    /// Serialises to bytes; `serde_json` cannot fail on a `Value` built from owned data.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }

    /// Classifies a decoded JSON value. Follows `jsonrpc_msg_from_json`: a `method` makes it a
    /// request (or a notification when `id` is null or absent); otherwise a non-null `error`
    /// makes it an error reply, and a `result` a reply.
    pub fn from_value(value: Value) -> Result<Self, MessageError> {
        let Value::Object(mut obj) = value else {
            return Err(MessageError::NotObject);
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(MessageError::Method);
            };
            let params = match obj.remove("params") {
                Some(Value::Array(p)) => p,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(MessageError::Params),
            };
            return Ok(if id.is_null() {
                Message::Notify { method, params }
            } else {
                Message::Request { method, params, id }
            });
        }
        match take_non_null(&mut obj, "error") {
            Some(error) => Ok(Message::Error { error, id }),
            None => match obj.remove("result") {
                Some(result) => Ok(Message::Reply { result, id }),
                None => Err(MessageError::Shape),
            },
        }
    }
}

fn take_non_null(obj: &mut Map<String, Value>, key: &str) -> Option<Value> {
    obj.remove(key).filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_always_carries_null_error() {
        let m = Message::Reply {
            result: json!("ok"),
            id: json!(0),
        };
        assert_eq!(
            m.to_value(),
            json!({"result": "ok", "error": null, "id": 0})
        );
    }

    #[test]
    fn error_always_carries_null_result() {
        let m = Message::Error {
            error: json!("bad"),
            id: json!(3),
        };
        assert_eq!(
            m.to_value(),
            json!({"result": null, "error": "bad", "id": 3})
        );
    }

    #[test]
    fn notification_has_null_id() {
        let m = Message::Notify {
            method: "update2".into(),
            params: vec![json!(null)],
        };
        assert_eq!(m.to_value()["id"], Value::Null);
        assert_eq!(Message::from_value(m.to_value()).unwrap(), m);
    }

    #[test]
    fn classifies_ovs_appctl_request() {
        let v = json!({"method": "tunnels/show", "params": [], "id": 0});
        assert_eq!(
            Message::from_value(v).unwrap(),
            Message::request("tunnels/show", vec![], json!(0))
        );
    }

    #[test]
    fn reply_with_null_error_is_a_reply() {
        let v = json!({"id": 5, "result": {"a": 1}, "error": null});
        assert_eq!(
            Message::from_value(v).unwrap(),
            Message::Reply {
                result: json!({"a": 1}),
                id: json!(5)
            }
        );
    }

    #[test]
    fn error_reply_with_null_result() {
        let v = json!({"id": 5, "result": null, "error": {"error": "unknown method"}});
        assert!(matches!(
            Message::from_value(v).unwrap(),
            Message::Error { .. }
        ));
    }

    #[test]
    fn rejects_non_objects_and_bad_shapes() {
        assert_eq!(
            Message::from_value(json!([1])),
            Err(MessageError::NotObject)
        );
        assert_eq!(
            Message::from_value(json!({"id": 1})),
            Err(MessageError::Shape)
        );
        assert_eq!(
            Message::from_value(json!({"method": 1, "id": 1})),
            Err(MessageError::Method)
        );
        assert_eq!(
            Message::from_value(json!({"method": "x", "params": {}, "id": 1})),
            Err(MessageError::Params)
        );
    }
}
