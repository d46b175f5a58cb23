//! One live JSON-RPC connection: framing, request ids, `echo` in both directions.
//!
//! Reading is split from acting so that the connection task can `select!` on it safely:
//! [`Session::read_more`] and [`Session::silence`] are cancel-safe (a socket read or a timer,
//! and the bytes go straight into the [`Framer`]), while everything that writes runs to
//! completion in the task's own code, never inside a `select!` branch that may be dropped.
//!
//! Liveness follows OVS's inactivity probe: after `probe` of silence we send an `echo`; if
//! another `probe` passes with nothing received, the connection is declared dead. Any bytes
//! from the server count as life. A zero `probe` disables this.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::error::OvsdbError;
use super::transport::Stream;
use crate::jsonrpc::Message;
use crate::jsonrpc::codec::Framer;

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

/// A reply to one of our requests.
pub enum Reply {
    Ok(Value),
    Err(Value),
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
    pub async fn take_message(&mut self) -> Result<Option<Message>, OvsdbError> {
        while let Some(value) = self.framer.next_value()? {
            match Message::from_value(value)? {
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
                // The reply to our own probe: its arrival already counted as activity.
                Message::Reply { id, .. } if id.as_str() == Some("echo") => {}
                other => return Ok(Some(other)),
            }
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

    /// Sends a request and waits for its reply, answering echoes meanwhile. Used before the
    /// monitor is set up, when no other traffic is expected; anything else is logged and
    /// dropped.
    pub async fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Reply, OvsdbError> {
        let want = self.request(method, params).await?;
        loop {
            while let Some(msg) = self.take_message().await? {
                match msg {
                    Message::Reply { result, id } if id.as_u64() == Some(want) => {
                        return Ok(Reply::Ok(result));
                    }
                    Message::Error { error, id } if id.as_u64() == Some(want) => {
                        return Ok(Reply::Err(error));
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
