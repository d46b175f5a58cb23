//! VICI packets and their framing on the socket.
//!
//! On the wire every packet is a big-endian `u32` length, then the packet: one type byte, for
//! named types (`CMD_REQUEST`, `EVENT_REGISTER`, `EVENT_UNREGISTER`, `EVENT`) a `u8`-length
//! name, then a [`Message`] body.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ViciError;
use super::message::{Message, MessageError};

/// Largest packet accepted from charon; its own limit is 512 KiB.
pub const MAX_PACKET: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    CmdRequest = 0,
    CmdResponse = 1,
    CmdUnknown = 2,
    EventRegister = 3,
    EventUnregister = 4,
    EventConfirm = 5,
    EventUnknown = 6,
    Event = 7,
}

impl PacketType {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::CmdRequest,
            1 => Self::CmdResponse,
            2 => Self::CmdUnknown,
            3 => Self::EventRegister,
            4 => Self::EventUnregister,
            5 => Self::EventConfirm,
            6 => Self::EventUnknown,
            7 => Self::Event,
            _ => return None,
        })
    }

    fn is_named(self) -> bool {
        matches!(
            self,
            Self::CmdRequest | Self::EventRegister | Self::EventUnregister | Self::Event
        )
    }
}

/// One packet: its type, the command or event name for named types, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: PacketType,
    pub name: String,
    pub body: Message,
}

impl Packet {
    pub fn new(kind: PacketType, name: &str, body: Message) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            body,
        }
    }

    /// The packet with its length prefix, ready to write.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        frame(self.kind, &self.name, |out| self.body.encode(out))
    }

    /// Decodes a packet without its length prefix.
    pub fn decode(bytes: &[u8]) -> Result<Self, ViciError> {
        let (&kind, rest) = bytes.split_first().ok_or(MessageError::Truncated)?;
        let kind = PacketType::from_byte(kind)
            .ok_or_else(|| ViciError::Protocol(format!("unknown packet type {kind}")))?;
        let (name, rest) = if kind.is_named() {
            let (&len, rest) = rest.split_first().ok_or(MessageError::Truncated)?;
            let len = usize::from(len);
            let name = rest.get(..len).ok_or(MessageError::Truncated)?;
            let body = rest.get(len..).unwrap_or_default();
            (String::from_utf8_lossy(name).into_owned(), body)
        } else {
            (String::new(), rest)
        };
        Ok(Self {
            kind,
            name,
            body: Message::decode(rest)?,
        })
    }
}

/// Reads one packet; `Ok(None)` on a clean end of stream between packets.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Packet>, ViciError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ViciError::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PACKET {
        return Err(ViciError::Protocol(format!(
            "packet of {len} bytes exceeds the {MAX_PACKET} byte limit"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(ViciError::Io)?;
    Packet::decode(&buf).map(Some)
}

/// Writes encoded packets in one system call where the kernel allows.
pub async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), ViciError> {
    w.write_all(bytes).await.map_err(ViciError::Io)?;
    w.flush().await.map_err(ViciError::Io)
}

/// A packet of `kind` named `name` whose body `body` writes, with its length prefix.
pub fn frame(
    kind: PacketType,
    name: &str,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), MessageError>,
) -> Result<Vec<u8>, MessageError> {
    let mut out = vec![0, 0, 0, 0, kind as u8];
    if kind.is_named() {
        let len = u8::try_from(name.len()).map_err(|_| MessageError::NameTooLong(name.into()))?;
        out.push(len);
        out.extend_from_slice(name.as_bytes());
    }
    body(&mut out)?;
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_unnamed_packets_round_trip() {
        let req = Packet::new(
            PacketType::CmdRequest,
            "load-conn",
            Message::new().kv("a", "b"),
        );
        let bytes = req.encode().unwrap();
        assert_eq!(
            &bytes[..15],
            &[
                0, 0, 0, 17, 0, 9, b'l', b'o', b'a', b'd', b'-', b'c', b'o', b'n', b'n'
            ]
        );
        assert_eq!(Packet::decode(&bytes[4..]).unwrap(), req);
        let resp = Packet::new(
            PacketType::CmdResponse,
            "",
            Message::new().kv("success", "yes"),
        );
        let bytes = resp.encode().unwrap();
        assert_eq!(bytes[4], 1);
        assert_eq!(Packet::decode(&bytes[4..]).unwrap(), resp);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reads_back_to_back_packets_and_a_clean_eof() {
        let a = Packet::new(
            PacketType::Event,
            "ike-updown",
            Message::new().kv("up", "yes"),
        );
        let b = Packet::new(PacketType::EventConfirm, "", Message::new());
        let mut bytes = a.encode().unwrap();
        bytes.extend(b.encode().unwrap());
        let mut r = bytes.as_slice();
        assert_eq!(read_packet(&mut r).await.unwrap(), Some(a));
        assert_eq!(read_packet(&mut r).await.unwrap(), Some(b));
        assert_eq!(read_packet(&mut r).await.unwrap(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn oversized_or_unknown_packets_are_errors() {
        let mut r: &[u8] = &[0xff, 0, 0, 0];
        assert!(matches!(
            read_packet(&mut r).await,
            Err(ViciError::Protocol(_))
        ));
        let mut r: &[u8] = &[0, 0, 0, 1, 42];
        assert!(matches!(
            read_packet(&mut r).await,
            Err(ViciError::Protocol(_))
        ));
    }
}
