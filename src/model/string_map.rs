//! A small string → string map for the OVSDB map columns every typed row carries (`options`,
//! `external_ids`, `other_config`).
//!
//! A `BTreeMap<String, String>` allocates a node for eleven pairs (about 560 bytes) however few
//! it holds; a tunnel row has two such maps of two to six pairs, which at 10,000 tunnels made
//! the typed rows one of the largest holders of the heap. A sorted boxed slice holds exactly
//! its pairs, and a lookup among half a dozen keys is as fast by binary search.

use std::collections::BTreeMap;

/// Pairs sorted by key, keys unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StringMap {
    pairs: Box<[(String, String)]>,
}

impl StringMap {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .and_then(|i| self.pairs.get(i))
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> + Clone {
        self.pairs.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl FromIterator<(String, String)> for StringMap {
    /// A repeated key keeps its last value, as collecting into a map would.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut pairs: Vec<(String, String)> = iter.into_iter().collect();
        // Reversed, then a stable sort: the last value of a key leads its run, which is the
        // one `dedup_by` keeps.
        pairs.reverse();
        pairs.sort_by(|(a, _), (b, _)| a.cmp(b));
        pairs.dedup_by(|(a, _), (b, _)| a == b);
        Self {
            pairs: pairs.into_boxed_slice(),
        }
    }
}

impl From<BTreeMap<String, String>> for StringMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self {
            pairs: map.into_iter().collect(),
        }
    }
}

impl<const N: usize> From<[(String, String); N]> for StringMap {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn looks_up_like_a_btreemap() {
        let input = pairs(&[("psk", "x"), ("remote_ip", "1.2.3.4"), ("dst_port", "4789")]);
        let map: StringMap = input.clone().into_iter().collect();
        let reference: BTreeMap<String, String> = input.into_iter().collect();
        for key in ["psk", "remote_ip", "dst_port", "local_ip", ""] {
            assert_eq!(map.get(key), reference.get(key), "{key}");
            assert_eq!(map.contains_key(key), reference.contains_key(key), "{key}");
        }
        assert!(
            map.iter().eq(reference.iter()),
            "the same pairs in key order"
        );
        assert_eq!(map.len(), 3);
        assert_eq!(StringMap::from(reference), map);
        assert!(StringMap::default().is_empty());
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let map: StringMap = pairs(&[("a", "1"), ("b", "2"), ("a", "3")])
            .into_iter()
            .collect();
        assert_eq!(map.get("a").map(String::as_str), Some("3"));
        assert_eq!(map.len(), 2);
    }
}
