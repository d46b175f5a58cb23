//! One live JSON-RPC connection: framing, request ids, `echo` in both directions.
//!
//! Reading is split from acting so that the connection task can `select!` on it safely:
//! [`Session::read_more`] and [`Session::silence`] are cancel-safe (a socket read or a timer,
//! and the bytes go straight into the [`Framer`]), while everything that writes runs to
//! completion in the task's own code, never inside a `select!` branch that may be dropped.
//!
//! Replies and monitor updates are handed over undecoded ([`Incoming`]): the caller decodes
//! their payload straight into its own types, so the initial monitor reply of 10,000 rows
//! never exists as a `serde_json::Value` tree beside its text and the replica built from it.
//! The small rest (echo, unknown requests) is decoded as a [`Message`].
//!
//! Liveness follows OVS's inactivity probe: after `probe` of silence we send an `echo`; if
//! another `probe` passes with nothing received, the connection is declared dead. Any bytes
//! from the server count as life. A zero `probe` disables this.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::error::OvsdbError;
use super::transport::Stream;
use crate::jsonrpc::Message;
use crate::jsonrpc::codec::{FrameError, Framer};

const READ_CHUNK: usize = 64 * 1024;

pub struct Session {
    stream: Box<dyn Stream>,
    framer: Framer,
    buf: Vec<u8>,
    next_id: u64,
    probe: Duration,
    last_rx: Instant,
    probe_sent: bool,
}

/// What [`Session::take_message`] hands over. Replies and monitor updates keep their bytes:
/// their payload can be megabytes of rows, which the caller decodes straight into its own
/// types ([`decode_result`], [`decode_params`]) instead of a `Value` tree.
pub enum Incoming {
    /// An `update`, `update2` or `update3` notification.
    Update { method: String, frame: Vec<u8> },
    /// A reply to request `id`: a JSON-RPC error, or a result still in `frame`.
    Reply {
        id: Value,
        error: Option<Value>,
        frame: Vec<u8>,
    },
    /// Any other notification.
    Notify { method: String },
}

/// The members of a message that say what it is; `params` and `result` are skipped over
/// without being built.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    error: Value,
}

#[derive(Deserialize)]
struct ResultOf<T> {
    result: T,
}

#[derive(Deserialize)]
struct ParamsOf<T> {
    params: T,
}

/// The `result` of a reply's `frame`, decoded as `T`.
pub fn decode_result<T: DeserializeOwned>(frame: &[u8]) -> Result<T, OvsdbError> {
    serde_json::from_slice::<ResultOf<T>>(frame)
        .map(|r| r.result)
        .map_err(|e| shape_error("reply", &e))
}

/// The `params` of a notification's `frame`, decoded as `T`.
pub fn decode_params<T: DeserializeOwned>(
    what: &'static str,
    frame: &[u8],
) -> Result<T, OvsdbError> {
    serde_json::from_slice::<ParamsOf<T>>(frame)
        .map(|r| r.params)
        .map_err(|e| shape_error(what, &e))
}

/// A decoding error by position only: serde's text may quote the value, which may be a key.
fn shape_error(what: &'static str, e: &serde_json::Error) -> OvsdbError {
    OvsdbError::protocol(
        what,
        format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    )
}

impl Session {
    pub fn new(stream: Box<dyn Stream>, probe: Duration) -> Self {
        Session {
            stream,
            framer: Framer::new(),
            buf: vec![0; READ_CHUNK],
            next_id: 0,
            probe,
            last_rx: Instant::now(),
            probe_sent: false,
        }
    }

    pub async fn send(&mut self, msg: &Message) -> Result<(), OvsdbError> {
        self.stream.write_all(&msg.to_bytes()).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends a request and returns its id.
    pub async fn request(&mut self, method: &str, params: Vec<Value>) -> Result<u64, OvsdbError> {
        self.request_raw(method, &serde_json::to_vec(&params)?)
            .await
    }

    /// Sends a request whose params are already serialised (a JSON array), and returns its
    /// id. A large transaction is written as is, without a second copy as a `Value`.
    pub async fn request_raw(&mut self, method: &str, params: &[u8]) -> Result<u64, OvsdbError> {
        let id = self.next_id;
        self.next_id += 1;
        let head = format!("{{\"id\":{id},\"method\":{},\"params\":", json!(method));
        // Three writes rather than one copy of a multi-megabyte `params`.
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(params).await?;
        self.stream.write_all(b"}").await?;
        self.stream.flush().await?;
        Ok(id)
    }

    /// The next complete message already buffered, with `echo` requests answered here.
    pub async fn take_message(&mut self) -> Result<Option<Incoming>, OvsdbError> {
        while let Some(frame) = self.framer.next_frame()? {
            let head: Head =
                serde_json::from_slice(&frame).map_err(|e| shape_error("message", &e))?;
            match head.method {
                Some(method)
                    if head.id.is_null()
                        && matches!(method.as_str(), "update" | "update2" | "update3") =>
                {
                    return Ok(Some(Incoming::Update { method, frame }));
                }
                // The reply to our own probe: its arrival already counted as activity.
                None if head.id.as_str() == Some("echo") => {}
                None => {
                    let error = (!head.error.is_null()).then_some(head.error);
                    return Ok(Some(Incoming::Reply {
                        id: head.id,
                        error,
                        frame,
                    }));
                }
                Some(_) => {
                    let value: Value = serde_json::from_slice(&frame).map_err(FrameError::from)?;
                    if let Some(method) = self.answer(Message::from_value(value)?).await? {
                        return Ok(Some(Incoming::Notify { method }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Answers a request from the server (`echo`, or "unknown method"); returns the method of
    /// a notification.
    async fn answer(&mut self, msg: Message) -> Result<Option<String>, OvsdbError> {
        match msg {
            Message::Request { method, params, id } if method == "echo" => {
                self.send(&Message::Reply {
                    result: Value::Array(params),
                    id,
                })
                .await?;
            }
            Message::Request { method, id, .. } => {
                tracing::debug!("ignoring request {method:?} from the server");
                self.send(&Message::Error {
                    error: json!("unknown method"),
                    id,
                })
                .await?;
            }
            Message::Notify { method, .. } => return Ok(Some(method)),
            Message::Reply { .. } | Message::Error { .. } => {}
        }
        Ok(None)
    }

    /// Reads more bytes into the framer. Cancel-safe.
    pub async fn read_more(&mut self) -> Result<(), OvsdbError> {
        let n = self.stream.read(&mut self.buf).await?;
        let chunk = self.buf.get(..n).unwrap_or_default();
        if chunk.is_empty() {
            return Err(OvsdbError::Eof);
        }
        self.framer.push(chunk);
        self.last_rx = Instant::now();
        self.probe_sent = false;
        Ok(())
    }

    /// Resolves when the inactivity deadline passes; never when probing is disabled.
    /// Cancel-safe, and borrows nothing, so it can race [`Session::read_more`].
    pub fn silence(&self) -> impl Future<Output = ()> + use<> {
        let periods = if self.probe_sent { 2 } else { 1 };
        let deadline = (!self.probe.is_zero()).then(|| self.last_rx + self.probe * periods);
        async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        }
    }

    /// Acts on a passed inactivity deadline: probe first, then give up.
    pub async fn on_silence(&mut self) -> Result<(), OvsdbError> {
        if self.probe_sent {
            return Err(OvsdbError::Inactivity(self.probe * 2));
        }
        self.probe_sent = true;
        self.send(&Message::request("echo", vec![], json!("echo")))
            .await
    }

    /// Sends a request and waits for its reply, answering echoes meanwhile: the result
    /// decoded as `T`, or the JSON-RPC error. Used before the monitor is set up, when no other
    /// traffic is expected; anything else is logged and dropped.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Result<T, Value>, OvsdbError> {
        let want = self.request(method, params).await?;
        loop {
            while let Some(msg) = self.take_message().await? {
                match msg {
                    Incoming::Reply { id, error, frame } if id.as_u64() == Some(want) => {
                        return match error {
                            Some(e) => Ok(Err(e)),
                            None => decode_result(&frame).map(Ok),
                        };
                    }
                    // Never log the content: rows may carry pre-shared keys.
                    _ => {
                        tracing::debug!("ignoring an unexpected message while waiting for {method}")
                    }
                }
            }
            let quiet = self.silence();
            tokio::select! {
                r = self.read_more() => r?,
                () = quiet => self.on_silence().await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::monitor::Update3Params;
    use super::*;

    #[test]
    fn decoding_errors_name_the_position_never_the_value() {
        let frame =
            br#"{"id":null,"method":"update3","params":["m","t",{"Interface":{"u1":"s3cret"}}]}"#;
        let e = decode_params::<Update3Params>("update3", frame).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("update3") && text.contains("column"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn results_and_params_decode_from_the_bytes() {
        let frame = br#"{"error":null,"id":3,"result":[true,"t-1",{"Interface":{"u1":{"modify":{"name":"a"}}}}]}"#;
        let (found, txn, updates): super::super::monitor::SinceResult =
            decode_result(frame).unwrap();
        assert!(found);
        assert_eq!(txn, "t-1");
        assert_eq!(updates["Interface"].len(), 1);
        assert!(
            decode_result::<super::super::monitor::SinceResult>(br#"{"id":3,"result":[true,"x"]}"#)
                .is_err()
        );
    }
}
