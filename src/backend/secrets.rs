//! Encodings that keep a PSK inside its field. The model accepts any PSK without NUL (quotes,
//! newlines and `#` included), so no backend may write one verbatim: strongSwan and Libreswan
//! both read `0x`-prefixed hex in their secrets files.

use crate::model::Secret;

/// `0x` + lowercase hex of the PSK's bytes: only `[0-9a-fx]`, so it cannot leave its field.
pub fn psk_hex(psk: &Secret) -> String {
    let mut s = String::with_capacity(2 + psk.expose().len() * 2);
    s.push_str("0x");
    for b in psk.expose().bytes() {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_psk_becomes_plain_hex() {
        assert_eq!(
            psk_hex(&Secret::new("swordfish")),
            "0x73776f7264666973 68".replace(' ', "")
        );
        let hex = psk_hex(&Secret::new("a\"b\n#c é"));
        assert_eq!(hex, "0x6122620a2363 20c3a9".replace(' ', ""));
        assert!(hex[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
