//! Per-SA key and SPI derivation (HKDF-SHA256, RFC 5869), as `docs/static-keying.md` specifies.
//!
//! Both ends compute the same values from the same OVSDB data, so nothing secret is ever sent.
//! The context binds the direction (sender and receiver addresses), the tunnel type and port,
//! and both ends' generations: no two directions, tunnels or boots share a key, and an SA that
//! either end re-creates under a new generation (a reboot, `exit` with cleanup, a flush) has a
//! new key, so ESP recorded before cannot be replayed into its fresh anti-replay window.

use std::fmt;
use std::net::IpAddr;

use hkdf::Hkdf;
use sha2::Sha256;

use super::types::{Flow, Proto};

/// HKDF salt and the version of this scheme; changing it changes every key.
const SALT: &[u8] = b"ovs-monitor-ipsec xfrm v2";
/// AES-128 key plus the 4-byte GCM salt of rfc4106.
pub const KEY_LEN: usize = 20;
/// SPIs 1-255 are reserved by RFC 4303; 0 means "none".
const SPI_MIN: u32 = 0x100;

/// An AEAD key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// What one direction of one tunnel is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Sender → receiver, with the tunnel protocol and port.
    pub flow: &'a Flow,
    /// The sender's generation.
    pub sender: &'a [u8; 16],
    /// The receiver's generation.
    pub receiver: &'a [u8; 16],
}

/// The key and SPI of one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub key: Key,
    pub spi: u32,
}

/// Derives the key and SPI of one direction from `psk`.
pub fn derive(psk: &[u8], ctx: Context<'_>) -> Derived {
    let hk = Hkdf::<Sha256>::new(Some(SALT), psk);
    let info = |label: &[u8]| {
        let mut v = Vec::with_capacity(3 + CONTEXT_LEN);
        v.extend_from_slice(label);
        v.extend_from_slice(&context_bytes(ctx));
        v
    };
    let mut key = [0u8; KEY_LEN];
    let mut spi = [0u8; 4];
    // Expand only fails for outputs longer than 255 hash lengths; ours are 20 and 4 bytes.
    let (k, s) = (
        hk.expand(&info(b"key"), &mut key),
        hk.expand(&info(b"spi"), &mut spi),
    );
    debug_assert!(k.is_ok() && s.is_ok());
    Derived {
        key: Key(key),
        spi: spi_in_range(u32::from_be_bytes(spi)),
    }
}

/// family(1) | src(16) | dst(16) | type(1) | port(2, BE) | sender generation(16)
/// | receiver generation(16).
const CONTEXT_LEN: usize = 1 + 16 + 16 + 1 + 2 + 16 + 16;

fn context_bytes(ctx: Context<'_>) -> Vec<u8> {
    let mut v = Vec::with_capacity(CONTEXT_LEN);
    v.push(match ctx.flow.src {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    });
    v.extend_from_slice(&addr16(&ctx.flow.src));
    v.extend_from_slice(&addr16(&ctx.flow.dst));
    let (kind, port) = match ctx.flow.proto {
        Proto::Gre => (47u8, 0u16),
        Proto::Udp(p) => (17u8, p),
    };
    v.push(kind);
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(ctx.sender);
    v.extend_from_slice(ctx.receiver);
    v
}

/// An address as the 16 bytes XFRM uses (IPv4 in the first 4).
pub fn addr16(ip: &IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

fn spi_in_range(raw: u32) -> u32 {
    SPI_MIN + raw % (u32::MAX - SPI_MIN + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, proto: Proto) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 5869 appendix A.1: the HKDF we build on is the standard one.
    #[test]
    fn hkdf_rfc5869_test_case_1() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    /// Our own vector, computed independently (Python hmac/hashlib) from the documented
    /// layout: pins the scheme so that an accidental change (which would make two monitor
    /// versions unable to talk) fails here.
    #[test]
    fn derivation_vector_is_stable() {
        let f = flow("192.0.2.1", "192.0.2.2", Proto::Udp(6081));
        let d = derive(
            b"swordfish",
            Context {
                flow: &f,
                sender: &[7u8; 16],
                receiver: &[8u8; 16],
            },
        );
        assert_eq!(hex(&d.key.0), "53fdf9dee5072813bf3ce15c6ec52a99207e91a3");
        assert_eq!(d.spi, 0xeea2_83aa);
    }

    #[test]
    fn every_binding_changes_key_and_spi() {
        let g = [1u8; 16];
        let base = flow("192.0.2.1", "192.0.2.2", Proto::Udp(6081));
        let d0 = derive(
            b"psk",
            Context {
                flow: &base,
                sender: &g,
                receiver: &g,
            },
        );
        let variants = [
            flow("192.0.2.2", "192.0.2.1", Proto::Udp(6081)),
            flow("192.0.2.1", "192.0.2.3", Proto::Udp(6081)),
            flow("192.0.2.1", "192.0.2.2", Proto::Udp(4789)),
            flow("192.0.2.1", "192.0.2.2", Proto::Gre),
            flow("2001:db8::1", "2001:db8::2", Proto::Udp(6081)),
        ];
        for v in &variants {
            let d = derive(
                b"psk",
                Context {
                    flow: v,
                    sender: &g,
                    receiver: &g,
                },
            );
            assert_ne!(d.key, d0.key, "{v:?}");
            assert_ne!(d.spi, d0.spi, "{v:?}");
        }
        // A new generation on either end (a reboot, a re-created SA) changes the key.
        for (sender, receiver) in [(&[2u8; 16], &g), (&g, &[2u8; 16])] {
            let d = derive(
                b"psk",
                Context {
                    flow: &base,
                    sender,
                    receiver,
                },
            );
            assert_ne!(d.key, d0.key);
            assert_ne!(d.spi, d0.spi);
        }
        let other_psk = derive(
            b"psk2",
            Context {
                flow: &base,
                sender: &g,
                receiver: &g,
            },
        );
        assert_ne!(other_psk.key, d0.key);
    }

    #[test]
    fn spis_avoid_the_reserved_range_and_keys_are_redacted() {
        assert_eq!(spi_in_range(0), 0x100);
        assert_eq!(spi_in_range(u32::MAX - 0x100), u32::MAX);
        assert_eq!(spi_in_range(u32::MAX - 0xff), 0x100);
        let f = flow("192.0.2.1", "192.0.2.2", Proto::Gre);
        let d = derive(
            b"psk",
            Context {
                flow: &f,
                sender: &[0; 16],
                receiver: &[0; 16],
            },
        );
        assert!(!format!("{d:?}").contains(&hex(&d.key.0)));
        assert!(format!("{:?}", d.key).contains("redacted"));
    }
}
