//! Framing of back-to-back JSON values on a byte stream.
//!
//! OVS writes JSON-RPC messages with no newline or length prefix between them, so a reader must
//! find where each top-level value ends. [`Framer`] scans incrementally: every byte is looked at
//! once, however the stream is split, so a multi-megabyte initial monitor reply costs O(n).

use serde_json::Value;
use thiserror::Error;

/// Largest single message accepted; a peer that sends more is broken or hostile.
pub const MAX_MESSAGE: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("stream does not start a JSON object or array (byte 0x{0:02x})")]
    NotJson(u8),
    #[error("JSON message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("malformed JSON message: {0}")]
    Parse(#[from] serde_json::Error),
}

/// Incremental splitter of a byte stream into JSON values.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for the current value.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when no partial message is buffered (whitespace aside).
    pub fn is_idle(&self) -> bool {
        self.buf.iter().all(u8::is_ascii_whitespace)
    }

    /// Returns the next complete value, `Ok(None)` when more bytes are needed.
    pub fn next_value(&mut self) -> Result<Option<Value>, FrameError> {
        match self.next_frame()? {
            Some(frame) => Ok(Some(serde_json::from_slice(&frame)?)),
            None => Ok(None),
        }
    }

    /// Returns the next complete value's bytes, undecoded, `Ok(None)` when more bytes are
    /// needed. The bytes are handed over, not copied, and the buffer keeps only what follows
    /// them: a multi-megabyte message leaves no buffer of its size behind.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.scanned == 0 {
            let skip = self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.buf.drain(..skip);
            match self.buf.first() {
                None => return Ok(None),
                Some(b'{') | Some(b'[') => {}
                Some(&b) => return Err(FrameError::NotJson(b)),
            }
        }
        let mut end = None;
        for (i, &b) in self.buf.iter().enumerate().skip(self.scanned) {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_MESSAGE {
                return Err(FrameError::TooLarge);
            }
            return Ok(None);
        };
        let rest = self.buf.split_off(end);
        let frame = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(f: &mut Framer) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = f.next_value().unwrap() {
            out.push(v);
        }
        out
    }

    #[test]
    fn concatenated_messages_split_apart() {
        let mut f = Framer::new();
        f.push(br#"{"id":1,"result":[]}{"id":null,"method":"update2","params":[]}  {"a":"}{"}"#);
        assert_eq!(
            all(&mut f),
            vec![
                json!({"id":1,"result":[]}),
                json!({"id":null,"method":"update2","params":[]}),
                json!({"a":"}{"}),
            ]
        );
        assert!(f.is_idle());
    }

    #[test]
    fn message_split_at_every_byte() {
        let msg = br#"{"k":"a\"b\\","n":[1,{"x":"]"}]}"#;
        for cut in 0..msg.len() {
            let mut f = Framer::new();
            f.push(&msg[..cut]);
            assert_eq!(f.next_value().unwrap(), None, "cut at {cut}");
            f.push(&msg[cut..]);
            assert_eq!(
                f.next_value().unwrap(),
                Some(json!({"k":"a\"b\\","n":[1,{"x":"]"}]}))
            );
        }
    }

    #[test]
    fn byte_by_byte_stream_of_two() {
        let mut f = Framer::new();
        let mut got = Vec::new();
        for b in br#"{"a":1}{"b":"\\"}"# {
            f.push(&[*b]);
            got.extend(all(&mut f));
        }
        assert_eq!(got, vec![json!({"a":1}), json!({"b":"\\"})]);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut f = Framer::new();
        f.push(b"hello");
        assert!(matches!(f.next_value(), Err(FrameError::NotJson(b'h'))));
        let mut f = Framer::new();
        f.push(b"{\"a\":tru}");
        assert!(matches!(f.next_value(), Err(FrameError::Parse(_))));
    }

    #[test]
    fn unicode_passes_through() {
        let mut f = Framer::new();
        f.push("{\"name\":\"tün\u{1F600}\"}".as_bytes());
        assert_eq!(
            f.next_value().unwrap(),
            Some(json!({"name":"tün\u{1F600}"}))
        );
    }
}
