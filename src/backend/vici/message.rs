//! The VICI message body: an ordered tree of sections, lists and key/value pairs.
//!
//! Element encoding (strongSwan's `vici` plugin, `libvici`): one type byte, then
//! - `SECTION_START` (1) name; `SECTION_END` (2);
//! - `KEY_VALUE` (3) name, value;
//! - `LIST_START` (4) name; `LIST_ITEM` (5) value; `LIST_END` (6);
//!
//! where a name is a `u8` length plus bytes and a value a big-endian `u16` length plus bytes.
//! Order matters to charon (auth rounds, children), so a section is a `Vec`, not a map.
//! Values are raw bytes: PSKs and PEM blobs travel here, which is why [`Value`]'s `Debug` never
//! prints content.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

const SECTION_START: u8 = 1;
const SECTION_END: u8 = 2;
const KEY_VALUE: u8 = 3;
const LIST_START: u8 = 4;
const LIST_ITEM: u8 = 5;
const LIST_END: u8 = 6;

/// Deepest section nesting accepted when decoding (charon sends at most a handful of levels).
const MAX_DEPTH: usize = 32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("VICI message is truncated")]
    Truncated,
    #[error("VICI message has unknown element type {0}")]
    UnknownElement(u8),
    #[error("VICI message has an unbalanced section or list")]
    Unbalanced,
    #[error("VICI message nests sections deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("VICI name {0:?} is longer than 255 bytes")]
    NameTooLong(String),
    #[error("VICI value of {0:?} is longer than 65535 bytes")]
    ValueTooLong(String),
}

/// A value: raw bytes. `Debug` shows only the length, so secrets never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(pub Vec<u8>);

impl Value {
    /// The value as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self(s.into_bytes())
    }
}

/// One element of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Value(Value),
    List(Vec<Value>),
    Section(Message),
}

/// A message encoded once and shared by reference: what the backend keeps for each tunnel's
/// `load-conn` between passes. As a tree of owned names and values the same body held ~60
/// allocations (~3 KB a tunnel); encoded it is one buffer of a few hundred bytes, and a clone
/// (into a plan's action, a batch) copies nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded(Arc<[u8]>);

impl Encoded {
    pub fn new(message: &Message) -> Result<Self, MessageError> {
        let mut out = Vec::new();
        message.encode(&mut out)?;
        Ok(Self(out.into()))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The message again (tests, diagnostics).
    pub fn decode(&self) -> Result<Message, MessageError> {
        Message::decode(&self.0)
    }
}

/// Only the length, as for [`Value`]: a body may carry a secret.
impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

/// A section (the top level is one too): named elements in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub items: Vec<(String, Element)>,
}

impl Message {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder: adds `key = value`.
    pub fn kv(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.items
            .push((key.to_owned(), Element::Value(value.into())));
        self
    }

    /// Builder: adds `key = [items]`.
    pub fn list<V: Into<Value>>(mut self, key: &str, items: impl IntoIterator<Item = V>) -> Self {
        let items = items.into_iter().map(Into::into).collect();
        self.items.push((key.to_owned(), Element::List(items)));
        self
    }

    /// Builder: adds `key { section }`.
    pub fn section(mut self, key: &str, section: Message) -> Self {
        self.push_section(key, section);
        self
    }

    pub fn push_section(&mut self, key: &str, section: Message) {
        self.items.push((key.to_owned(), Element::Section(section)));
    }

    /// Sets `key = value` in place, replacing an existing value of that name.
    pub fn set(&mut self, key: &str, value: Element) {
        match self.items.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.items.push((key.to_owned(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Element> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A value as text.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Element::Value(v)) => v.as_str(),
            _ => None,
        }
    }

    pub fn section_of(&self, key: &str) -> Option<&Message> {
        match self.get(key) {
            Some(Element::Section(s)) => Some(s),
            _ => None,
        }
    }

    pub fn section_mut(&mut self, key: &str) -> Option<&mut Message> {
        self.items.iter_mut().find_map(|(k, v)| match v {
            Element::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    /// A list's items as text (non-UTF-8 items are skipped).
    pub fn strs(&self, key: &str) -> Vec<&str> {
        match self.get(key) {
            Some(Element::List(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The sub-sections, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Message)> {
        self.items.iter().filter_map(|(k, v)| match v {
            Element::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }

    /// Appends the wire encoding of this message's elements to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        for (name, element) in &self.items {
            match element {
                Element::Value(v) => {
                    out.push(KEY_VALUE);
                    put_name(out, name)?;
                    put_value(out, name, v)?;
                }
                Element::List(items) => {
                    out.push(LIST_START);
                    put_name(out, name)?;
                    for v in items {
                        out.push(LIST_ITEM);
                        put_value(out, name, v)?;
                    }
                    out.push(LIST_END);
                }
                Element::Section(s) => {
                    out.push(SECTION_START);
                    put_name(out, name)?;
                    s.encode(out)?;
                    out.push(SECTION_END);
                }
            }
        }
        Ok(())
    }

    /// Decodes a whole message body.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader { bytes, pos: 0 };
        let msg = decode_section(&mut r, 0)?;
        if r.pos != bytes.len() {
            // Only a SECTION_END can stop decode_section early.
            return Err(MessageError::Unbalanced);
        }
        Ok(msg)
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), MessageError> {
    let len = u8::try_from(name.len()).map_err(|_| MessageError::NameTooLong(name.into()))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_value(out: &mut Vec<u8>, name: &str, v: &Value) -> Result<(), MessageError> {
    let len = u16::try_from(v.0.len()).map_err(|_| MessageError::ValueTooLong(name.into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&v.0);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], MessageError> {
        let end = self.pos.checked_add(n).ok_or(MessageError::Truncated)?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(MessageError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn name(&mut self) -> Result<String, MessageError> {
        let len = usize::from(self.byte()?);
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn value(&mut self) -> Result<Value, MessageError> {
        let hi = self.byte()?;
        let lo = self.byte()?;
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        Ok(Value(self.take(len)?.to_vec()))
    }
}

/// Decodes elements until the end of input (depth 0) or a `SECTION_END` (inside a section).
fn decode_section(r: &mut Reader<'_>, depth: usize) -> Result<Message, MessageError> {
    if depth > MAX_DEPTH {
        return Err(MessageError::TooDeep);
    }
    let mut msg = Message::new();
    while r.pos < r.bytes.len() {
        match r.byte()? {
            KEY_VALUE => {
                let name = r.name()?;
                let v = r.value()?;
                msg.items.push((name, Element::Value(v)));
            }
            SECTION_START => {
                let name = r.name()?;
                let s = decode_section(r, depth + 1)?;
                msg.items.push((name, Element::Section(s)));
            }
            SECTION_END if depth > 0 => return Ok(msg),
            LIST_START => {
                let name = r.name()?;
                let mut items = Vec::new();
                loop {
                    match r.byte()? {
                        LIST_ITEM => items.push(r.value()?),
                        LIST_END => break,
                        _ => return Err(MessageError::Unbalanced),
                    }
                }
                msg.items.push((name, Element::List(items)));
            }
            SECTION_END | LIST_ITEM | LIST_END => return Err(MessageError::Unbalanced),
            other => return Err(MessageError::UnknownElement(other)),
        }
    }
    if depth > 0 {
        return Err(MessageError::Unbalanced);
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Message {
        Message::new()
            .section(
                "tun-in-1",
                Message::new()
                    .list("remote_addrs", ["192.0.2.2"])
                    .kv("version", "2")
                    .section("local", Message::new().kv("auth", "psk"))
                    .section(
                        "children",
                        Message::new().section(
                            "tun-in-1",
                            Message::new().list("local_ts", ["dynamic[gre]"]),
                        ),
                    ),
            )
            .list("empty", Vec::<&str>::new())
    }

    #[test]
    fn encodes_the_documented_layout() {
        let mut out = Vec::new();
        Message::new()
            .kv("a", "xy")
            .list("l", ["z"])
            .section("s", Message::new())
            .encode(&mut out)
            .unwrap();
        assert_eq!(
            out,
            [
                3, 1, b'a', 0, 2, b'x', b'y', // key-value
                4, 1, b'l', 5, 0, 1, b'z', 6, // list
                1, 1, b's', 2, // empty section
            ]
        );
    }

    #[test]
    fn nested_message_round_trips() {
        let m = sample();
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        let back = Message::decode(&out).unwrap();
        assert_eq!(back, m);
        let conn = back.section_of("tun-in-1").unwrap();
        assert_eq!(conn.strs("remote_addrs"), ["192.0.2.2"]);
        assert_eq!(conn.section_of("local").unwrap().str("auth"), Some("psk"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &[3u8, 5, b'a'][..],    // name runs past the end
            &[3, 1, b'a', 0, 9, 1], // value runs past the end
            &[1, 1, b's'],          // section never closed
            &[2],                   // close without open
            &[4, 1, b'l', 3],       // key-value inside a list
            &[9],                   // unknown type
        ] {
            assert!(Message::decode(bad).is_err(), "{bad:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n([1u8, 0], 40).flatten().collect();
        assert_eq!(Message::decode(&deep), Err(MessageError::TooDeep));
    }

    #[test]
    fn oversized_fields_are_rejected_when_encoding() {
        let long = "n".repeat(256);
        let m = Message::new().kv(&long, "v");
        assert!(matches!(
            m.encode(&mut Vec::new()),
            Err(MessageError::NameTooLong(_))
        ));
        let m = Message::new().kv("data", "x".repeat(70_000));
        assert!(matches!(
            m.encode(&mut Vec::new()),
            Err(MessageError::ValueTooLong(_))
        ));
    }

    #[test]
    fn debug_never_shows_values() {
        let m = Message::new().kv("data", "swordfish");
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("swordfish"), "{dbg}");
        assert!(dbg.contains("<9 bytes>"), "{dbg}");
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let name = "[a-z_-]{0,12}";
        let value = proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value);
        let leaf = prop_oneof![
            value.clone().prop_map(Element::Value),
            proptest::collection::vec(value, 0..4).prop_map(Element::List),
        ];
        let element = leaf.prop_recursive(4, 32, 4, move |inner| {
            proptest::collection::vec((name, inner), 0..4)
                .prop_map(|items| Element::Section(Message { items }))
        });
        proptest::collection::vec((name, element), 0..6).prop_map(|items| Message { items })
    }

    proptest! {
        #[test]
        fn any_message_round_trips(m in arb_message()) {
            let mut out = Vec::new();
            m.encode(&mut out).unwrap();
            prop_assert_eq!(Message::decode(&out).unwrap(), m);
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(&bytes);
        }
    }
}
