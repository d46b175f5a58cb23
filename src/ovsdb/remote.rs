//! OVSDB remote names, as `ovs-vsctl --db` and the Python monitor accept them.
//!
//! `unix:PATH`, `tcp:HOST[:PORT]`, `ssl:HOST[:PORT]`, with IPv6 addresses in brackets
//! (`tcp:[::1]:6640`), and a comma-separated list of those, tried in turn on reconnect. The
//! port defaults to 6640, the IANA OVSDB port, as in OVS. Passive remotes (`punix:`, `ptcp:`,
//! `pssl:`) make sense for a server only and are rejected.

use std::fmt;
use std::path::PathBuf;

use super::error::OvsdbError;

/// The IANA-assigned OVSDB port, used when a tcp/ssl remote names none.
pub const DEFAULT_PORT: u16 = 6640;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp(String, u16),
    Ssl(String, u16),
}

impl Remote {
    /// Parses one remote.
    pub fn parse(s: &str) -> Result<Remote, OvsdbError> {
        let bad = |reason| OvsdbError::BadRemote {
            remote: s.to_owned(),
            reason,
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected unix:PATH, tcp:IP:PORT or ssl:IP:PORT"))?;
        match kind {
            "unix" if rest.is_empty() => Err(bad("empty socket path")),
            "unix" => Ok(Remote::Unix(PathBuf::from(rest))),
            "tcp" | "ssl" => {
                let (host, port) = parse_host_port(rest).map_err(bad)?;
                Ok(if kind == "tcp" {
                    Remote::Tcp(host, port)
                } else {
                    Remote::Ssl(host, port)
                })
            }
            "punix" | "ptcp" | "pssl" => Err(bad("passive remotes are for servers")),
            _ => Err(bad("unknown connection method")),
        }
    }

    /// Parses a comma-separated list of remotes (at least one).
    pub fn parse_list(s: &str) -> Result<Vec<Remote>, OvsdbError> {
        s.split(',').map(|r| Remote::parse(r.trim())).collect()
    }

    pub fn is_ssl(&self) -> bool {
        matches!(self, Remote::Ssl(..))
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unterminated '[' in address")?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("junk after ']'")?)),
        }
    } else {
        match s.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err("IPv6 addresses must be written in brackets");
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("missing host");
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse().map_err(|_| "bad port number")?,
    };
    Ok((host.to_owned(), port))
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host_port = |f: &mut fmt::Formatter<'_>, kind, host: &str, port| {
            if host.contains(':') {
                write!(f, "{kind}:[{host}]:{port}")
            } else {
                write!(f, "{kind}:{host}:{port}")
            }
        };
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp(h, p) => host_port(f, "tcp", h, p),
            Remote::Ssl(h, p) => host_port(f, "ssl", h, p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Remote::parse("unix:/var/run/openvswitch/db.sock").unwrap(),
            Remote::Unix("/var/run/openvswitch/db.sock".into())
        );
        assert_eq!(
            Remote::parse("tcp:192.0.2.1:6641").unwrap(),
            Remote::Tcp("192.0.2.1".into(), 6641)
        );
        assert_eq!(
            Remote::parse("ssl:[2001:db8::1]:6643").unwrap(),
            Remote::Ssl("2001:db8::1".into(), 6643)
        );
        assert_eq!(
            Remote::parse("tcp:[::1]").unwrap(),
            Remote::Tcp("::1".into(), DEFAULT_PORT)
        );
        assert_eq!(
            Remote::parse("tcp:ovsdb.example").unwrap(),
            Remote::Tcp("ovsdb.example".into(), DEFAULT_PORT)
        );
    }

    #[test]
    fn rejects_bad_remotes() {
        for bad in [
            "",
            "/var/run/db.sock",
            "unix:",
            "punix:/tmp/x",
            "ptcp:6640",
            "tcp:",
            "tcp::6640",
            "tcp:1.2.3.4:http",
            "tcp:1.2.3.4:70000",
            "tcp:::1:6640",
            "tcp:[::1",
            "tcp:[::1]6640",
            "udp:1.2.3.4:1",
        ] {
            assert!(Remote::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn list_keeps_order_and_fails_on_any_bad_entry() {
        assert_eq!(
            Remote::parse_list("tcp:10.0.0.1:6640, unix:/x").unwrap(),
            vec![
                Remote::Tcp("10.0.0.1".into(), 6640),
                Remote::Unix("/x".into())
            ]
        );
        assert!(Remote::parse_list("tcp:10.0.0.1:6640,bogus").is_err());
        assert!(Remote::parse_list("unix:/x,").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["unix:/a b/db.sock", "tcp:127.0.0.1:1", "ssl:[fe80::1]:6640"] {
            assert_eq!(Remote::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn error_names_the_remote() {
        let e = Remote::parse("ptcp:6640").unwrap_err().to_string();
        assert!(e.contains("ptcp:6640") && e.contains("passive"), "{e}");
    }
}
