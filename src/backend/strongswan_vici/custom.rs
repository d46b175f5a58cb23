//! `options:ipsec_<key>` pass-through for swanctl: each supported ipsec.conf-style key maps to
//! one swanctl key of the connection or of its child (the table is documented in
//! `docs/strongswan-vici.md`). An unmapped key is a per-tunnel error, never dropped silently:
//! a security option that silently does nothing is worse than a tunnel that says why it is
//! not up.

use std::collections::BTreeMap;

use crate::backend::vici::{Element, Message, Value};

/// Where a swanctl key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Conn,
    Child,
}

/// How a value is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv {
    /// Same syntax on both sides (times like `30s`, `yes`/`no`, numbers).
    Same,
    /// A proposal string: becomes a one-item list.
    Proposals,
    /// `%forever` → `0`.
    Tries,
    /// ipsec.conf `dpdaction`: `hold` is swanctl's `trap`.
    DpdAction,
    /// `ikev1`/`ikev2`/`ike` → `1`/`2`/`0`.
    Version,
}

/// (ipsec.conf key, swanctl key, level, conversion). Keys that both strongSwan's and
/// Libreswan's spellings use (OVN passes Libreswan ones) are both listed.
const TABLE: &[(&str, &str, Level, Conv)] = &[
    ("ike", "proposals", Level::Conn, Conv::Proposals),
    ("esp", "esp_proposals", Level::Child, Conv::Proposals),
    ("ikelifetime", "rekey_time", Level::Conn, Conv::Same),
    ("lifetime", "rekey_time", Level::Child, Conv::Same),
    ("keylife", "rekey_time", Level::Child, Conv::Same),
    ("salifetime", "rekey_time", Level::Child, Conv::Same),
    ("dpddelay", "dpd_delay", Level::Conn, Conv::Same),
    ("dpd-delay", "dpd_delay", Level::Conn, Conv::Same),
    ("dpdtimeout", "dpd_timeout", Level::Conn, Conv::Same),
    ("dpd-timeout", "dpd_timeout", Level::Conn, Conv::Same),
    ("dpdaction", "dpd_action", Level::Child, Conv::DpdAction),
    ("forceencaps", "encap", Level::Conn, Conv::Same),
    ("encapsulation", "encap", Level::Conn, Conv::Same),
    ("mobike", "mobike", Level::Conn, Conv::Same),
    ("fragmentation", "fragmentation", Level::Conn, Conv::Same),
    ("keyingtries", "keyingtries", Level::Conn, Conv::Tries),
    ("keyexchange", "version", Level::Conn, Conv::Version),
    ("aggressive", "aggressive", Level::Conn, Conv::Same),
    ("replay_window", "replay_window", Level::Child, Conv::Same),
    ("replay-window", "replay_window", Level::Child, Conv::Same),
    ("compress", "ipcomp", Level::Child, Conv::Same),
    ("closeaction", "close_action", Level::Child, Conv::DpdAction),
    ("inactivity", "inactivity", Level::Child, Conv::Same),
];

/// The supported ipsec.conf-style keys, for documentation tests.
pub fn supported_keys() -> impl Iterator<Item = (&'static str, &'static str, Level)> {
    TABLE.iter().map(|(k, s, l, _)| (*k, *s, *l))
}

/// The swanctl settings for a tunnel's `ipsec_*` options, or the reason they cannot be used.
pub fn translate(
    custom: &BTreeMap<String, String>,
) -> Result<Vec<(Level, &'static str, Element)>, String> {
    custom
        .iter()
        .map(|(key, value)| {
            let (_, swanctl, level, conv) =
                TABLE.iter().find(|(k, ..)| k == key).ok_or_else(|| {
                    format!("'ipsec_{key}' has no swanctl equivalent in strongSwan VICI mode")
                })?;
            let element = convert(*conv, value).ok_or_else(|| {
                format!("'ipsec_{key}' value '{value}' cannot be expressed as swanctl '{swanctl}'")
            })?;
            Ok((*level, *swanctl, element))
        })
        .collect()
}

fn convert(conv: Conv, value: &str) -> Option<Element> {
    let v = |s: &str| Some(Element::Value(Value::from(s)));
    match conv {
        Conv::Same => v(value),
        Conv::Proposals => Some(Element::List(vec![Value::from(value)])),
        Conv::Tries => match value {
            "%forever" => v("0"),
            n if n.parse::<u32>().is_ok() => v(n),
            _ => None,
        },
        Conv::DpdAction => match value {
            "none" | "clear" | "restart" => v(value),
            "hold" | "trap" => v("trap"),
            _ => None,
        },
        Conv::Version => match value {
            "ikev1" => v("1"),
            "ikev2" => v("2"),
            "ike" => v("0"),
            _ => None,
        },
    }
}

/// Applies the translated settings of `level` to `target` (the conn, or one of its children).
pub fn apply(target: &mut Message, level: Level, settings: &[(Level, &'static str, Element)]) {
    for (_, key, element) in settings.iter().filter(|(l, ..)| *l == level) {
        target.set(key, element.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ovn_and_ovs_options_map_to_swanctl() {
        let s = translate(&opts(&[
            ("forceencaps", "yes"),
            ("ikelifetime", "3h"),
            ("dpd-delay", "30s"),
            ("replay-window", "100"),
            ("keyingtries", "%forever"),
            ("ike", "aes128-sha256-modp3072"),
            ("dpdaction", "hold"),
        ]))
        .unwrap();
        let find = |k: &str| s.iter().find(|(_, key, _)| *key == k).unwrap();
        assert_eq!(find("encap").0, Level::Conn);
        assert_eq!(find("rekey_time").2, Element::Value("3h".into()));
        assert_eq!(find("dpd_delay").2, Element::Value("30s".into()));
        assert_eq!(find("replay_window").0, Level::Child);
        assert_eq!(find("keyingtries").2, Element::Value("0".into()));
        assert_eq!(
            find("proposals").2,
            Element::List(vec!["aes128-sha256-modp3072".into()])
        );
        assert_eq!(find("dpd_action").2, Element::Value("trap".into()));
    }

    #[test]
    fn unmapped_key_or_value_is_an_error_with_the_reason() {
        let e = translate(&opts(&[("leftsourceip", "%config")])).unwrap_err();
        assert!(
            e.contains("'ipsec_leftsourceip' has no swanctl equivalent"),
            "{e}"
        );
        let e = translate(&opts(&[("keyexchange", "ikev3")])).unwrap_err();
        assert!(e.contains("cannot be expressed"), "{e}");
    }

    #[test]
    fn every_supported_key_is_in_the_documented_table() {
        let doc = include_str!("../../../docs/strongswan-vici.md");
        for (key, swanctl, _) in supported_keys() {
            let row = doc
                .lines()
                .find(|l| l.starts_with('|') && l.contains(&format!("`{key}`")))
                .unwrap_or_else(|| panic!("ipsec_{key} is not documented"));
            assert!(row.contains(&format!("`{swanctl}`")), "{row}");
        }
    }

    #[test]
    fn settings_land_in_the_conn_or_its_child() {
        let s = translate(&opts(&[("esp", "aes128gcm16"), ("mobike", "no")])).unwrap();
        let (mut conn, mut child) = (Message::new(), Message::new());
        apply(&mut conn, Level::Conn, &s);
        apply(&mut child, Level::Child, &s);
        assert_eq!(conn.str("mobike"), Some("no"));
        assert!(conn.get("esp_proposals").is_none());
        assert_eq!(child.strs("esp_proposals"), ["aes128gcm16"]);
        assert!(child.get("mobike").is_none());
    }
}
