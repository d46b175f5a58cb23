//! OVSDB values (RFC 7047 §5.1): atoms, sets and maps in their JSON encodings.
//!
//! A column value is a bare atom, `["set", [...]]`, or `["map", [[k, v], ...]]`; a set of one
//! element may be sent as the bare atom. We keep every value as a set or a map and offer typed
//! views for the few shapes the monitor reads.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::{Value, json};

/// One OVSDB atom.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Atom {
    String(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    Uuid(String),
    NamedUuid(String),
}

impl Atom {
    pub fn to_json(&self) -> Value {
        match self {
            Atom::String(s) => json!(s),
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::Uuid(u) => json!(["uuid", u]),
            Atom::NamedUuid(u) => json!(["named-uuid", u]),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One OVSDB column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

impl Default for Datum {
    fn default() -> Self {
        Datum::Set(Vec::new())
    }
}

impl Datum {
    /// Decodes a `Value` (the daemon decodes straight from the wire, see `ovsdb::updates`).
    pub fn from_json(v: &Value) -> Result<Self, serde_json::Error> {
        Datum::deserialize(v)
    }

    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(atoms) if atoms.len() == 1 => atoms[0].to_json(),
            Datum::Set(atoms) => {
                json!(["set", atoms.iter().map(Atom::to_json).collect::<Vec<_>>()])
            }
            Datum::Map(pairs) => json!([
                "map",
                pairs
                    .iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// The single string of a scalar string column.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Datum::Set(a) if a.len() == 1 => a[0].as_str(),
            _ => None,
        }
    }

    /// The value of an optional integer column (`ofport`).
    pub fn as_opt_int(&self) -> Option<i64> {
        match self {
            Datum::Set(a) if a.len() == 1 => match a[0] {
                Atom::Integer(i) => Some(i),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value of an optional boolean column (`cfm_fault`).
    pub fn as_opt_bool(&self) -> Option<bool> {
        match self {
            Datum::Set(a) if a.len() == 1 => match a[0] {
                Atom::Boolean(b) => Some(b),
                _ => None,
            },
            _ => None,
        }
    }

    /// A string-to-string map; non-string pairs are skipped. An empty set is an empty map.
    pub fn as_string_map(&self) -> BTreeMap<String, String> {
        match self {
            Datum::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect(),
            Datum::Set(_) => BTreeMap::new(),
        }
    }

    /// Applies an `update2` "modify" diff (RFC 7047 extension, ovsdb-server(7)): for a set the
    /// diff is the symmetric difference; for a map, a pair with a new key is added, a pair equal
    /// to the existing one is removed, a pair with a new value for an existing key replaces it.
    /// Scalar columns (`min == max == 1`) are replaced, which the caller decides by `scalar`.
    pub fn apply_diff(&mut self, diff: Datum, scalar: bool) {
        if scalar {
            *self = diff;
            return;
        }
        match (self, diff) {
            (Datum::Map(cur), Datum::Map(d)) => {
                for (k, v) in d {
                    match cur.iter().position(|(ck, _)| *ck == k) {
                        Some(i) if cur[i].1 == v => {
                            cur.remove(i);
                        }
                        Some(i) => cur[i].1 = v,
                        None => cur.push((k, v)),
                    }
                }
            }
            (cur @ Datum::Set(_), Datum::Map(d)) => {
                // An empty map arrives as an empty set; a diff against it just adds pairs.
                *cur = Datum::Map(d);
            }
            (Datum::Set(cur), Datum::Set(d)) => {
                for a in d {
                    match cur.iter().position(|c| *c == a) {
                        Some(i) => {
                            cur.remove(i);
                        }
                        None => cur.push(a),
                    }
                }
            }
            (cur @ Datum::Map(_), d @ Datum::Set(_)) => {
                // An empty-set diff against a map changes nothing; anything else is malformed,
                // and the full value is the best we can do.
                if !matches!(&d, Datum::Set(v) if v.is_empty()) {
                    *cur = d;
                }
            }
        }
    }
}

// Decoding straight from the wire (see `ovsdb::updates`): the same encodings as above, read
// by serde without an intermediate `Value`. Errors name shapes, never the values: a column
// may hold a pre-shared key.

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AtomVisitor)
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DatumVisitor)
    }
}

struct AtomVisitor;

impl<'de> Visitor<'de> for AtomVisitor {
    type Value = Atom;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB atom")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Atom, E> {
        Ok(Atom::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Atom, E> {
        Ok(Atom::String(s))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Atom, E> {
        Ok(Atom::Boolean(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Atom, E> {
        Ok(Atom::Integer(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Atom, E> {
        // Beyond i64, as serde_json's `Value::as_i64` would say: a real.
        Ok(i64::try_from(u).map_or(Atom::Real(u as f64), Atom::Integer))
    }

    fn visit_f64<E: de::Error>(self, r: f64) -> Result<Atom, E> {
        Ok(Atom::Real(r))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        let tag: String = next(&mut seq)?;
        tagged_atom(&tag, seq)
    }
}

/// `["uuid", u]` or `["named-uuid", u]`, after its tag.
fn tagged_atom<'de, A: SeqAccess<'de>>(tag: &str, mut seq: A) -> Result<Atom, A::Error> {
    let make = match tag {
        "uuid" => Atom::Uuid,
        "named-uuid" => Atom::NamedUuid,
        _ => return Err(de::Error::custom("not an OVSDB atom")),
    };
    let id: String = next(&mut seq)?;
    end(seq)?;
    Ok(make(id))
}

fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(seq: &mut A) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::custom("OVSDB value array too short"))
}

fn end<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    match seq.next_element::<IgnoredAny>()? {
        None => Ok(()),
        Some(_) => Err(de::Error::custom("OVSDB value array too long")),
    }
}

struct DatumVisitor;

impl DatumVisitor {
    fn one(a: Atom) -> Datum {
        Datum::Set(vec![a])
    }
}

impl<'de> Visitor<'de> for DatumVisitor {
    type Value = Datum;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB datum")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Datum, E> {
        AtomVisitor.visit_str(s).map(Self::one)
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Datum, E> {
        AtomVisitor.visit_string(s).map(Self::one)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Datum, E> {
        AtomVisitor.visit_bool(b).map(Self::one)
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Datum, E> {
        AtomVisitor.visit_i64(i).map(Self::one)
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Datum, E> {
        AtomVisitor.visit_u64(u).map(Self::one)
    }

    fn visit_f64<E: de::Error>(self, r: f64) -> Result<Datum, E> {
        AtomVisitor.visit_f64(r).map(Self::one)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        let tag: String = next(&mut seq)?;
        let datum = match tag.as_str() {
            "set" => Datum::Set(next(&mut seq)?),
            "map" => Datum::Map(next(&mut seq)?),
            _ => return tagged_atom(&tag, seq).map(Self::one),
        };
        end(seq)?;
        Ok(datum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: Value) -> Datum {
        Datum::deserialize(&v).unwrap()
    }

    #[test]
    fn decodes_every_shape() {
        assert_eq!(d(json!("gre")).as_str(), Some("gre"));
        assert_eq!(d(json!(["set", []])).as_opt_int(), None);
        assert_eq!(d(json!(5)).as_opt_int(), Some(5));
        assert_eq!(d(json!(true)).as_opt_bool(), Some(true));
        assert_eq!(
            d(json!(["map", [["psk", "x"], ["remote_ip", "1.2.3.4"]]])).as_string_map(),
            BTreeMap::from([
                ("psk".into(), "x".into()),
                ("remote_ip".into(), "1.2.3.4".into())
            ])
        );
        assert_eq!(
            d(json!(["uuid", "abc"])),
            Datum::Set(vec![Atom::Uuid("abc".into())])
        );
        assert!(Datum::deserialize(&json!({"a": 1})).is_err());
        assert!(Datum::deserialize(&json!(["map", [["a"]]])).is_err());
        assert!(Datum::deserialize(&json!(["set", [1], 2])).is_err());
        assert!(Datum::deserialize(&json!(["uuid"])).is_err());
        assert!(Datum::deserialize(&json!(["psk", "s3cret"])).is_err());
    }

    #[test]
    fn json_round_trip() {
        for v in [
            json!("x"),
            json!(["set", [1, 2]]),
            json!(["map", [["a", "b"]]]),
            json!(["set", []]),
            json!(["uuid", "u"]),
        ] {
            assert_eq!(d(v.clone()).to_json(), v);
        }
    }

    #[test]
    fn map_diff_adds_changes_and_removes() {
        let mut m = d(json!(["map", [["a", "1"], ["b", "2"]]]));
        m.apply_diff(
            d(json!(["map", [["a", "1"], ["b", "3"], ["c", "4"]]])),
            false,
        );
        assert_eq!(
            m.as_string_map(),
            BTreeMap::from([("b".into(), "3".into()), ("c".into(), "4".into())])
        );
    }

    #[test]
    fn map_diff_against_empty_set() {
        let mut m = d(json!(["set", []]));
        m.apply_diff(d(json!(["map", [["a", "1"]]])), false);
        assert_eq!(
            m.as_string_map(),
            BTreeMap::from([("a".into(), "1".into())])
        );
    }

    #[test]
    fn set_diff_is_symmetric_difference() {
        let mut s = d(json!(5));
        s.apply_diff(d(json!(["set", [5, 6]])), false);
        assert_eq!(s.as_opt_int(), Some(6));
        s.apply_diff(d(json!(6)), false);
        assert_eq!(s.as_opt_int(), None);
    }

    #[test]
    fn scalar_diff_replaces() {
        let mut s = d(json!("old"));
        s.apply_diff(d(json!("new")), true);
        assert_eq!(s.as_str(), Some("new"));
    }
}
