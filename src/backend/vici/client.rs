//! One VICI connection to charon: commands (single, pipelined batches, streamed lists) and
//! event subscriptions.
//!
//! charon answers the requests of one connection in order, so a batch is written in chunks
//! and the answers are read back in the same order: a cold start of 1,000 tunnels costs a
//! few dozen socket writes instead of 2,000 round trips. Chunks stay far below the socket
//! buffer so that neither side can block on a full buffer while the other waits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use super::ViciError;
use super::message::{Encoded, Message};
use super::packet::{Packet, PacketType, frame, read_packet, write_all};

/// Requests written before their answers are read.
const PIPELINE_CHUNK: usize = 64;

/// A request's body: a message, or one encoded before and kept (see [`Encoded`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Message(Message),
    Encoded(Encoded),
}

impl From<Message> for Body {
    fn from(m: Message) -> Self {
        Body::Message(m)
    }
}

impl From<Encoded> for Body {
    fn from(e: Encoded) -> Self {
        Body::Encoded(e)
    }
}

impl Body {
    /// The request packet for `cmd`, with its length prefix.
    fn request(&self, cmd: &str) -> Result<Vec<u8>, super::MessageError> {
        frame(PacketType::CmdRequest, cmd, |out| match self {
            Body::Message(m) => m.encode(out),
            Body::Encoded(e) => {
                out.extend_from_slice(e.bytes());
                Ok(())
            }
        })
    }
}

/// A connection to charon's VICI socket.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    timeout: Duration,
}

impl Connection {
    /// Connects to `path`; every later operation is limited to `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, ViciError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| ViciError::Timeout("connect to the VICI socket".into()))?
            .map_err(|e| ViciError::Connect(PathBuf::from(path), e))?;
        Ok(Self { stream, timeout })
    }

    /// Sends `cmd` and returns its response body. A `success = no` answer is returned as is;
    /// see [`check`].
    pub async fn request(&mut self, cmd: &str, body: Message) -> Result<Message, ViciError> {
        let mut answers = self.batch(vec![(cmd.to_owned(), body.into())]).await?;
        answers
            .pop()
            .ok_or_else(|| ViciError::Protocol("no answer".into()))
    }

    /// Sends every request and returns the answers in order (pipelined in chunks).
    pub async fn batch(
        &mut self,
        requests: Vec<(String, Body)>,
    ) -> Result<Vec<Message>, ViciError> {
        let timeout = self.timeout;
        let mut answers = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<(String, Body)> = requests.by_ref().take(PIPELINE_CHUNK).collect();
            let mut bytes = Vec::new();
            for (cmd, body) in &chunk {
                bytes.extend(body.request(cmd)?);
            }
            let fut = async {
                write_all(&mut self.stream, &bytes).await?;
                let mut out = Vec::with_capacity(chunk.len());
                for (cmd, _) in &chunk {
                    out.push(self.response(cmd).await?);
                }
                Ok::<_, ViciError>(out)
            };
            let out = tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| ViciError::Timeout(format!("run VICI {}", chunk_name(&chunk))))??;
            answers.extend(out);
        }
        Ok(answers)
    }

    /// Runs a listing command (`list-sas`, `list-conns`): registers for `event`, sends `cmd`,
    /// and collects every event until the final response.
    pub async fn stream(
        &mut self,
        cmd: &str,
        event: &str,
        body: Message,
    ) -> Result<Vec<Message>, ViciError> {
        let timeout = self.timeout;
        let fut = async {
            self.register(event).await?;
            let bytes = Packet::new(PacketType::CmdRequest, cmd, body).encode()?;
            write_all(&mut self.stream, &bytes).await?;
            let mut items = Vec::new();
            loop {
                let p = self.next_packet().await?;
                match p.kind {
                    PacketType::Event if p.name == event => items.push(p.body),
                    PacketType::CmdResponse => break,
                    PacketType::CmdUnknown => return Err(ViciError::UnknownCommand(cmd.into())),
                    _ => return Err(unexpected(&p, cmd)),
                }
            }
            self.event_control(PacketType::EventUnregister, event)
                .await?;
            Ok(items)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ViciError::Timeout(format!("run VICI {cmd}")))?
    }

    /// Subscribes this connection to `event`.
    pub async fn register(&mut self, event: &str) -> Result<(), ViciError> {
        self.event_control(PacketType::EventRegister, event).await
    }

    /// Waits (without time limit) for the next event; `None` when charon closed the socket.
    pub async fn next_event(&mut self) -> Result<Option<(String, Message)>, ViciError> {
        loop {
            match read_packet(&mut self.stream).await? {
                None => return Ok(None),
                Some(p) if p.kind == PacketType::Event => return Ok(Some((p.name, p.body))),
                Some(_) => continue,
            }
        }
    }

    async fn event_control(&mut self, kind: PacketType, event: &str) -> Result<(), ViciError> {
        let bytes = Packet::new(kind, event, Message::new()).encode()?;
        write_all(&mut self.stream, &bytes).await?;
        loop {
            let p = self.next_packet().await?;
            match p.kind {
                PacketType::EventConfirm => return Ok(()),
                PacketType::EventUnknown => return Err(ViciError::UnknownEvent(event.into())),
                // An event registered earlier on this connection may still arrive.
                PacketType::Event => continue,
                _ => return Err(unexpected(&p, event)),
            }
        }
    }

    async fn response(&mut self, cmd: &str) -> Result<Message, ViciError> {
        loop {
            let p = self.next_packet().await?;
            match p.kind {
                PacketType::CmdResponse => return Ok(p.body),
                PacketType::CmdUnknown => return Err(ViciError::UnknownCommand(cmd.into())),
                PacketType::Event => continue,
                _ => return Err(unexpected(&p, cmd)),
            }
        }
    }

    async fn next_packet(&mut self) -> Result<Packet, ViciError> {
        read_packet(&mut self.stream)
            .await?
            .ok_or(ViciError::Closed)
    }
}

/// `Ok` for `success = yes`, else the command's `errmsg`.
pub fn check(cmd: &str, answer: &Message) -> Result<(), ViciError> {
    if answer.str("success") == Some("yes") {
        return Ok(());
    }
    Err(ViciError::Failed {
        cmd: cmd.to_owned(),
        errmsg: answer.str("errmsg").unwrap_or("no reason given").to_owned(),
    })
}

fn chunk_name(chunk: &[(String, Body)]) -> String {
    match chunk {
        [(cmd, _)] => cmd.clone(),
        _ => format!("batch of {} requests", chunk.len()),
    }
}

fn unexpected(p: &Packet, during: &str) -> ViciError {
    ViciError::Protocol(format!("unexpected {:?} packet during {during}", p.kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A tiny scripted server: answers each request with `success`, streams two events for
    /// `list-sas`, and answers an unknown command with CMD_UNKNOWN.
    async fn serve(listener: UnixListener) {
        let (mut s, _) = listener.accept().await.unwrap();
        while let Some(p) = read_packet(&mut s).await.unwrap() {
            let reply = |kind, name: &str, body| Packet::new(kind, name, body).encode().unwrap();
            let mut out = Vec::new();
            match (p.kind, p.name.as_str()) {
                (PacketType::EventRegister | PacketType::EventUnregister, _) => {
                    out.extend(reply(PacketType::EventConfirm, "", Message::new()))
                }
                (PacketType::CmdRequest, "list-sas") => {
                    for i in 0..2 {
                        let ev = Message::new().section(&format!("sa{i}"), Message::new());
                        out.extend(reply(PacketType::Event, "list-sa", ev));
                    }
                    out.extend(reply(PacketType::CmdResponse, "", Message::new()));
                }
                (PacketType::CmdRequest, "nosuch") => {
                    out.extend(reply(PacketType::CmdUnknown, "", Message::new()))
                }
                (PacketType::CmdRequest, name) => out.extend(reply(
                    PacketType::CmdResponse,
                    "",
                    Message::new().kv("success", "yes").kv("cmd", name),
                )),
                _ => panic!("unexpected {p:?}"),
            }
            write_all(&mut s, &out).await.unwrap();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batch_stream_and_unknown_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vici");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve(listener));
        let mut c = Connection::connect(&path, Duration::from_secs(5))
            .await
            .unwrap();
        let reqs: Vec<_> = (0..150)
            .map(|i| (format!("cmd{i}"), Message::new().into()))
            .collect();
        let answers = c.batch(reqs).await.unwrap();
        assert_eq!(answers.len(), 150);
        assert_eq!(answers[149].str("cmd"), Some("cmd149"));
        check("cmd0", &answers[0]).unwrap();
        let sas = c
            .stream("list-sas", "list-sa", Message::new())
            .await
            .unwrap();
        assert_eq!(sas.len(), 2);
        assert!(matches!(
            c.request("nosuch", Message::new()).await,
            Err(ViciError::UnknownCommand(_))
        ));
        drop(c);
        server.await.unwrap();
    }

    #[test]
    fn failed_answer_carries_errmsg() {
        let m = Message::new().kv("success", "no").kv("errmsg", "bad");
        assert_eq!(
            check("load-conn", &m).unwrap_err().to_string(),
            "VICI load-conn failed: bad"
        );
    }
}
