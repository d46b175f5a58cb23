//! Strict grammars for every OVSDB value that can reach a config file, a command line or a
//! netlink message. A value that does not match is rejected with a reason naming the key;
//! nothing is ever escaped into a config.
//!
//! Why grammars instead of escaping: the Python monitor pasted OVSDB strings verbatim into
//! `ipsec.conf`, so a newline or a `%include` in an option injected configuration into the IKE
//! daemon. Each grammar below is a small allow-list of ASCII characters, wide enough for every
//! legitimate value we know of and narrow enough that no value can break out of its line, its
//! quoting or its argument (no spaces, quotes, `#`, `;`, `$`, backslash, control characters or
//! non-ASCII look-alikes; identities and names cannot start with `-`).
//!
//! The PSK is the exception: it may contain anything but NUL, because every backend writes it
//! hex- or base64-encoded (`0x...`/`0s...` in `ipsec.secrets`, raw bytes to netlink), never as
//! text. Its reasons never show the value.
//!
//! Reasons name the key (`'remote_ip'`) and show the offending value only through
//! [`escaped`]: Rust's `{:?}` quoting, cut to [`SHOWN_MAX`] characters, so a newline or a
//! megabyte of junk cannot reach the log.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::PathBuf;

use thiserror::Error;

use super::types::{Secret, SkbMark};

/// Longest prefix of a rejected value shown in a reason, in characters.
pub const SHOWN_MAX: usize = 256;

/// Prefix of the per-tunnel pass-through options (`options:ipsec_<key>=<value>`).
pub const CUSTOM_PREFIX: &str = "ipsec_";

/// Longest PSK we accept, in bytes. IKE daemons accept much more, but nobody needs it.
pub const PSK_MAX: usize = 1024;

/// Longest certificate or key path, in bytes (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// `ipsec_` keys that the monitor writes itself, so a pass-through option must not override
/// them (or, for `also`/`include`, pull in foreign configuration). Any key starting with
/// `left` or `right` is reserved as well, see [`custom_option`].
const RESERVED_KEYS: &[&str] = &[
    "also",
    "auto",
    "type",
    "authby",
    "conn",
    "include",
    "mark",
    "mark_in",
    "mark_out",
    "keyexchange",
    // The Libreswan backend batches initiations and deletions through it.
    "connalias",
];

/// Directives a pass-through value may be, as a whole; no other value may contain `%`.
const DIRECTIVES: &[&str] = &["%forever", "%any", "%none", "%defaultroute"];

/// A value rejected by a grammar. `Display` is the reason, without the leading ": ".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GrammarError {
    /// `key` and `value` are already rendered for display (see [`GrammarError::value`]).
    #[error("{key} value {value} {why}")]
    Value {
        key: String,
        value: String,
        why: &'static str,
    },
    /// A problem with the key itself, or with a secret whose value must not be shown.
    #[error("{key} {why}")]
    Key { key: String, why: &'static str },
}

impl GrammarError {
    /// A rejected value; renders the key and the escaped value.
    pub fn value(key: &str, value: &str, why: &'static str) -> Self {
        Self::Value {
            key: key_label(key),
            value: escaped(value),
            why,
        }
    }

    /// A rejected key, or a secret rejected without showing it.
    pub fn key(key: &str, why: &'static str) -> Self {
        Self::Key {
            key: key_label(key),
            why,
        }
    }
}

/// `s` in `{:?}` form, cut to [`SHOWN_MAX`] characters (then followed by `...`).
pub fn escaped(s: &str) -> String {
    match s.char_indices().nth(SHOWN_MAX) {
        Some((cut, _)) => format!("{:?}...", s.get(..cut).unwrap_or_default()),
        None => format!("{s:?}"),
    }
}

/// `s` as is when it is printable ASCII without quotes or backslashes and at most
/// [`PATH_MAX`] bytes, else [`escaped`]. For names and paths in log lines.
pub fn shown(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.len() <= PATH_MAX
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'\'' | b'"' | b'\\'));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(escaped(s))
    }
}

/// An interface name for a log line: as is when it passes [`interface_name`], else
/// [`escaped`].
pub fn shown_name(name: &str) -> Cow<'_, str> {
    match interface_name(name) {
        Ok(()) => Cow::Borrowed(name),
        Err(_) => Cow::Owned(escaped(name)),
    }
}

/// A key as reasons name it: `'remote_ip'`, or escaped when the key itself is hostile.
pub fn key_label(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= SHOWN_MAX
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b' '));
    if plain {
        format!("'{key}'")
    } else {
        escaped(key)
    }
}

/// True when `s` is one `first` byte followed by at most `max_len - 1` `rest` bytes.
/// The classes are ASCII, so any non-ASCII byte fails.
fn matches_class(s: &str, max_len: usize, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
    match s.as_bytes().split_first() {
        Some((f, tail)) => s.len() <= max_len && first(*f) && tail.iter().all(|b| rest(*b)),
        None => false,
    }
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`: the interface name becomes an IPsec connection name.
pub fn interface_name(name: &str) -> Result<(), GrammarError> {
    if matches_class(name, 63, alnum, |b| {
        alnum(b) || matches!(b, b'_' | b'.' | b'-')
    }) {
        Ok(())
    } else {
        Err(GrammarError::value(
            "name",
            name,
            "is not a valid interface name for IPsec: it must match [A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
        ))
    }
}

/// An IPv4 or IPv6 literal usable as a tunnel endpoint (`remote_ip`, `local_ip`).
pub fn ip_address(key: &str, value: &str) -> Result<IpAddr, GrammarError> {
    if value == "flow" {
        return Err(GrammarError::value(
            key,
            value,
            "is not supported: IPsec needs a fixed peer address",
        ));
    }
    let ip: IpAddr = value
        .parse()
        .map_err(|_| GrammarError::value(key, value, "is not an IPv4 or IPv6 address"))?;
    let why = match ip {
        _ if ip.is_unspecified() => Some("is the unspecified address"),
        _ if ip.is_multicast() => Some("is a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("is the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("is an IPv4-mapped IPv6 address: write it as IPv4")
        }
        _ => None,
    };
    match why {
        Some(why) => Err(GrammarError::value(key, value, why)),
        None => Ok(ip),
    }
}

/// `options:dst_port`: decimal digits only, 1-65535.
pub fn dst_port(value: &str) -> Result<u16, GrammarError> {
    let port = matches_class(value, 5, |b| b.is_ascii_digit(), |b| b.is_ascii_digit())
        .then(|| value.parse::<u16>().ok())
        .flatten()
        .filter(|p| *p != 0);
    port.ok_or_else(|| {
        GrammarError::value(
            "dst_port",
            value,
            "is not a port number (decimal digits, 1-65535)",
        )
    })
}

/// `options:psk`: non-empty, at most [`PSK_MAX`] bytes, no NUL. Reasons never show it.
pub fn psk(value: &str) -> Result<Secret, GrammarError> {
    secret("psk", value)
}

/// A PSK-like secret under option `key` (`psk`, `ipsec_psk_next`); see [`psk`].
pub fn secret(key: &str, value: &str) -> Result<Secret, GrammarError> {
    let why = if value.is_empty() {
        "must not be empty"
    } else if value.len() > PSK_MAX {
        "is longer than 1024 bytes"
    } else if value.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(Secret::new(value));
    };
    Err(GrammarError::key(key, why))
}

/// A key generation (`options:ipsec_peer_generation`): exactly 32 lowercase hex digits.
pub fn generation(key: &str, value: &str) -> Result<[u8; 16], GrammarError> {
    let mut out = [0u8; 16];
    let ok = value.len() == 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && out.iter_mut().enumerate().all(|(i, byte)| {
            value
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|v| *byte = v)
                .is_some()
        });
    if ok {
        Ok(out)
    } else {
        Err(GrammarError::value(
            key,
            value,
            "is not a key generation: it must be 32 lowercase hex digits",
        ))
    }
}

/// A certificate or key path: absolute, `[A-Za-z0-9._/+@=,-]`, no `..` segment, at most
/// [`PATH_MAX`] bytes.
pub fn path(key: &str, value: &str) -> Result<PathBuf, GrammarError> {
    let why = if !value.starts_with('/') {
        "is not an absolute path"
    } else if value.len() > PATH_MAX {
        "is longer than 4096 bytes"
    } else if !value
        .bytes()
        .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'/' | b'+' | b'@' | b'=' | b',' | b'-'))
    {
        "contains a character outside [A-Za-z0-9._/+@=,-]"
    } else if value.split('/').any(|seg| seg == "..") {
        "has a '..' segment"
    } else {
        return Ok(PathBuf::from(value));
    };
    Err(GrammarError::value(key, value, why))
}

/// An IKE identity (`remote_name`, the CN of a certificate):
/// `[A-Za-z0-9][A-Za-z0-9._@:+-]{0,254}`.
pub fn identity(key: &str, value: &str) -> Result<String, GrammarError> {
    if matches_class(value, 255, alnum, |b| {
        alnum(b) || matches!(b, b'.' | b'_' | b'@' | b':' | b'+' | b'-')
    }) {
        Ok(value.to_owned())
    } else {
        Err(GrammarError::value(
            key,
            value,
            "is not a valid IKE identity: it must match [A-Za-z0-9][A-Za-z0-9._@:+-]{0,254}",
        ))
    }
}

/// An `options:ipsec_<key>=<value>` pass-through option; returns `(key, value)` with the
/// prefix stripped. `option_key` must start with [`CUSTOM_PREFIX`].
pub fn custom_option(option_key: &str, value: &str) -> Result<(String, String), GrammarError> {
    let key = option_key.strip_prefix(CUSTOM_PREFIX).unwrap_or(option_key);
    if !option_key.starts_with(CUSTOM_PREFIX)
        || !matches_class(
            key,
            64,
            |b| b.is_ascii_lowercase(),
            |b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'),
        )
    {
        return Err(GrammarError::key(
            option_key,
            "is not a valid pass-through option: the part after 'ipsec_' must match [a-z][a-z0-9_-]{0,63}",
        ));
    }
    if RESERVED_KEYS.contains(&key) || key.starts_with("left") || key.starts_with("right") {
        return Err(GrammarError::key(
            option_key,
            "is reserved: the monitor sets this IPsec option itself",
        ));
    }
    let plain = matches_class(value, 255, custom_value_byte, custom_value_byte);
    if plain || DIRECTIVES.contains(&value) {
        Ok((key.to_owned(), value.to_owned()))
    } else {
        Err(GrammarError::value(
            option_key,
            value,
            "is not allowed: it must match [A-Za-z0-9._:/,+@=!-]{1,255} or be one of %forever, %any, %none, %defaultroute",
        ))
    }
}

fn custom_value_byte(b: u8) -> bool {
    alnum(b)
        || matches!(
            b,
            b'.' | b'_' | b':' | b'/' | b',' | b'+' | b'@' | b'=' | b'!' | b'-'
        )
}

/// `other_config:ipsec_skb_mark`: `VALUE/MASK`, each a decimal or `0x`-hex `u32`.
pub fn skb_mark(value: &str) -> Result<SkbMark, GrammarError> {
    let parsed = value.split_once('/').and_then(|(v, m)| {
        Some(SkbMark {
            value: mark_number(v)?,
            mask: mark_number(m)?,
        })
    });
    parsed.ok_or_else(|| {
        GrammarError::value(
            "ipsec_skb_mark",
            value,
            "is not VALUE/MASK with decimal or 0x-hex 32-bit numbers",
        )
    })
}

fn mark_number(s: &str) -> Option<u32> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    match hex {
        Some(h) if matches_class(h, 8, |b| b.is_ascii_hexdigit(), |b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(h, 16).ok()
        }
        Some(_) => None,
        None if matches_class(s, 10, |b| b.is_ascii_digit(), |b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["a", "tun0", "gnv-1.x_y", &"a".repeat(63)] {
            assert!(interface_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a\nb", "tün", &"a".repeat(64), "a/b"] {
            let err = interface_name(bad).unwrap_err().to_string();
            assert!(err.starts_with("'name' value "), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            ip_address("remote_ip", "192.0.2.1").unwrap().to_string(),
            "192.0.2.1"
        );
        assert!(ip_address("remote_ip", "fd01::2").is_ok());
        let cases = [
            ("flow", "IPsec needs a fixed peer address"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::ffff:192.0.2.1", "IPv4-mapped"),
            ("192.0.2.1 ", "not an IPv4 or IPv6"),
            ("01.2.3.4", "not an IPv4 or IPv6"),
            ("fe80::1%eth0", "not an IPv4 or IPv6"),
            ("host.example", "not an IPv4 or IPv6"),
        ];
        for (value, why) in cases {
            let err = ip_address("remote_ip", value).unwrap_err().to_string();
            assert!(err.starts_with("'remote_ip' value "), "{err}");
            assert!(err.contains(why), "{value}: {err}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(dst_port("1").unwrap(), 1);
        assert_eq!(dst_port("65535").unwrap(), 65535);
        for bad in ["0", "65536", "+1", "-1", "", " 1", "0x10", "000001", "１"] {
            assert!(dst_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn psk_accepts_anything_but_nul_and_never_shows_it() {
        for ok in [
            "a",
            "quote'\"",
            "new\nline",
            "sp ace",
            "ünï©ødé",
            &"x".repeat(1024),
        ] {
            assert_eq!(psk(ok).unwrap().expose(), ok);
        }
        for bad in ["", "se\0cret", &"s".repeat(1025)] {
            let err = psk(bad).unwrap_err().to_string();
            assert!(err.starts_with("'psk' "), "{err}");
            assert!(!err.contains("se") && !err.contains("ss"), "{err}");
        }
    }

    #[test]
    fn paths() {
        assert!(path("certificate", "/etc/ipsec.d/certs/host-1@x=y,z+w.pem").is_ok());
        let cases = [
            ("rel/x.pem", "absolute"),
            ("/a/../etc/shadow", "'..' segment"),
            ("/a/..", "'..' segment"),
            ("/a b", "character"),
            ("/a\nb", "character"),
            ("/a;b", "character"),
        ];
        for (value, why) in cases {
            let err = path("certificate", value).unwrap_err().to_string();
            assert!(err.contains(why), "{value}: {err}");
        }
        assert!(path("certificate", "/a/..b/c..").is_ok());
        let long = format!("/{}", "a".repeat(PATH_MAX));
        assert!(
            path("certificate", &long)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }

    #[test]
    fn identities() {
        for ok in ["host2", "a.b@c:d+e-f_g", &"h".repeat(255)] {
            assert!(identity("remote_name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-host",
            "a b",
            "a\"b",
            "a%b",
            "a#b",
            "hоst",
            &"h".repeat(256),
        ] {
            assert!(identity("remote_name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn custom_options() {
        assert_eq!(
            custom_option("ipsec_encapsulation", "yes").unwrap(),
            ("encapsulation".to_owned(), "yes".to_owned())
        );
        assert!(custom_option("ipsec_ike", "aes256-sha2_256-modp2048!").is_ok());
        assert!(custom_option("ipsec_dpdtimeout", "%forever").is_ok());
        for key in [
            "ipsec_",
            "ipsec_Ike",
            "ipsec_1x",
            "ipsec_a b",
            "ipsec_a.b",
            "psk",
        ] {
            let err = custom_option(key, "yes").unwrap_err().to_string();
            assert!(err.contains("not a valid pass-through option"), "{err}");
        }
        for key in [
            "ipsec_also",
            "ipsec_include",
            "ipsec_connalias",
            "ipsec_leftid",
            "ipsec_rightsubnet",
        ] {
            let err = custom_option(key, "yes").unwrap_err().to_string();
            assert!(err.contains("reserved"), "{err}");
        }
        for value in [
            "", "%include", "%any ", "a b", "a\"b", "a#b", "a;b", "$(x)", "`x`", "{",
        ] {
            let err = custom_option("ipsec_ike", value).unwrap_err().to_string();
            assert!(err.starts_with("'ipsec_ike' value "), "{err}");
        }
    }

    #[test]
    fn skb_marks() {
        assert_eq!(skb_mark("1/1").unwrap(), SkbMark { value: 1, mask: 1 });
        assert_eq!(
            skb_mark("0x10/0xFFFFFFFF").unwrap(),
            SkbMark {
                value: 16,
                mask: u32::MAX
            }
        );
        for bad in [
            "1",
            "1/",
            "/1",
            "1/1/1",
            "0x/1",
            "4294967296/1",
            "-1/1",
            "1 /1",
            "0x1ffffffff/1",
        ] {
            assert!(skb_mark(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escaped_values_are_cut_and_single_line() {
        let long = "\n".repeat(1000);
        let shown = escaped(&long);
        assert!(shown.len() < 2 * SHOWN_MAX + 8 && !shown.contains('\n'));
        assert_eq!(super::shown("tun0"), "tun0");
        assert_eq!(super::shown("a\nb"), "\"a\\nb\"");
    }
}
