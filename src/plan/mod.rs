//! Pure planning helpers shared by backends: set differences that decide what to add, remove
//! and keep. A backend's own `plan` maps tunnels to the units its daemon knows (connections,
//! SAs, policies) and uses these to get a minimal action list.

use std::collections::{BTreeMap, BTreeSet};

/// What to add and remove to turn `observed` into `desired`; `keep` is in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDiff<K> {
    pub add: Vec<K>,
    pub remove: Vec<K>,
    pub keep: Vec<K>,
}

impl<K> SetDiff<K> {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Difference of two sets of keys.
pub fn diff_sets<K: Ord + Clone>(desired: &BTreeSet<K>, observed: &BTreeSet<K>) -> SetDiff<K> {
    SetDiff {
        add: desired.difference(observed).cloned().collect(),
        remove: observed.difference(desired).cloned().collect(),
        keep: desired.intersection(observed).cloned().collect(),
    }
}

/// Difference of two keyed maps: a key whose value differs is removed and added again (it
/// appears in both `remove` and `add`), which is how a changed connection is replaced.
pub fn diff_maps<K: Ord + Clone, V: PartialEq>(
    desired: &BTreeMap<K, V>,
    observed: &BTreeMap<K, V>,
) -> SetDiff<K> {
    let mut d = SetDiff {
        add: Vec::new(),
        remove: Vec::new(),
        keep: Vec::new(),
    };
    for (k, v) in desired {
        match observed.get(k) {
            None => d.add.push(k.clone()),
            Some(o) if o == v => d.keep.push(k.clone()),
            Some(_) => {
                d.remove.push(k.clone());
                d.add.push(k.clone());
            }
        }
    }
    d.remove.extend(
        observed
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned(),
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn set_difference() {
        let d = diff_sets(&set(&["a-1", "b-1"]), &set(&["b-1", "c-3"]));
        assert_eq!(d.add, vec!["a-1"]);
        assert_eq!(d.remove, vec!["c-3"]);
        assert_eq!(d.keep, vec!["b-1"]);
        assert!(diff_sets(&set(&["x"]), &set(&["x"])).is_empty());
    }

    #[test]
    fn changed_value_is_replaced() {
        let desired = BTreeMap::from([("a", 1), ("b", 2), ("c", 3)]);
        let observed = BTreeMap::from([("a", 1), ("b", 5), ("d", 4)]);
        let d = diff_maps(&desired, &observed);
        assert_eq!(d.add, vec!["b", "c"]);
        assert_eq!(d.remove, vec!["b", "d"]);
        assert_eq!(d.keep, vec!["a"]);
    }
}
