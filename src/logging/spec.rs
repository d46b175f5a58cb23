//! The vocabulary of OVS's vlog (modules, destinations, levels) and the parser of the
//! `[MODULE|ANY][:DESTINATION|ANY][:LEVEL]` specs that both `-v` and `vlog/set` take.
//!
//! Modules are fixed at compile time, like OVS's `VLOG_DEFINE_THIS_MODULE`, so that `vlog/list`
//! is stable and a misspelt module in a spec is an error rather than a silent no-op.

use std::fmt;

/// The crate's top-level modules, plus `main` for the binaries' own code and anything else.
/// A new top-level module that is not listed here logs as `main`.
pub const MODULES: &[&str] = &[
    "backend", "cli", "control", "daemon", "jsonrpc", "logging", "main", "model", "ovsdb", "plan",
    "schema", "status",
];

/// Index of `main` in [`MODULES`].
const MAIN: usize = 6;

/// Maps a tracing target (`ovs_monitor_ipsec::ovsdb::client`) to an index in [`MODULES`].
pub fn module_of(target: &str) -> usize {
    let mut parts = target.split("::");
    let _crate = parts.next();
    parts
        .next()
        .and_then(|m| MODULES.iter().position(|n| *n == m))
        .unwrap_or(MAIN)
}

/// Where a log line can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Console,
    Syslog,
    File,
}

impl Destination {
    pub const ALL: [Destination; 3] = [Self::Console, Self::Syslog, Self::File];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Syslog => "syslog",
            Self::File => "file",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// OVS log levels, least verbose first. `Emer` has no tracing counterpart, so a destination
/// set to `emer` receives nothing from tracing events, like `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off = 0,
    Emer = 1,
    Err = 2,
    Warn = 3,
    Info = 4,
    Dbg = 5,
}

impl Level {
    const ALL: [Level; 6] = [
        Self::Off,
        Self::Emer,
        Self::Err,
        Self::Warn,
        Self::Info,
        Self::Dbg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Emer => "emer",
            Self::Err => "err",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Dbg => "dbg",
        }
    }

    /// The upper-case form used in log lines (`INFO`, `DBG`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Emer => "EMER",
            Self::Err => "ERR",
            Self::Warn => "WARN",
            Self::Info => "INFO",
            Self::Dbg => "DBG",
        }
    }

    pub fn from_u8(v: u8) -> Self {
        Self::ALL.get(usize::from(v)).copied().unwrap_or(Self::Off)
    }

    pub fn of_tracing(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => Self::Err,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::INFO => Self::Info,
            _ => Self::Dbg,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One parsed spec: `None` means every module / every destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub module: Option<usize>,
    pub destination: Option<Destination>,
    pub level: Level,
}

/// Parses a spec. Words are separated by `:` and may come in any order; each of module,
/// destination and level may appear once; `ANY` stands for "all" and a missing level is `dbg`.
pub fn parse(spec: &str) -> Result<Spec, String> {
    let mut out = Spec {
        module: None,
        destination: None,
        level: Level::Dbg,
    };
    let mut level_seen = false;
    for word in spec.split(':').map(str::trim).filter(|w| !w.is_empty()) {
        let lower = word.to_ascii_lowercase();
        if lower == "any" {
            continue;
        }
        if let Some(d) = Destination::ALL.iter().find(|d| d.as_str() == lower) {
            if out.destination.replace(*d).is_some() {
                return Err(format!(
                    "cannot specify multiple destinations (at \"{word}\")"
                ));
            }
        } else if let Some(l) = Level::ALL.iter().find(|l| l.name() == lower) {
            if level_seen {
                return Err(format!("cannot specify multiple levels (at \"{word}\")"));
            }
            level_seen = true;
            out.level = *l;
        } else if let Some(m) = MODULES.iter().position(|m| *m == lower) {
            if out.module.replace(m).is_some() {
                return Err(format!("cannot specify multiple modules (at \"{word}\")"));
            }
        } else {
            return Err(format!("no destination, level, or module \"{word}\""));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str) -> Option<usize> {
        MODULES.iter().position(|m| *m == name)
    }

    #[test]
    fn targets_map_to_top_level_modules() {
        assert_eq!(
            module_of("ovs_monitor_ipsec::ovsdb::client"),
            module("ovsdb").unwrap()
        );
        assert_eq!(module_of("ovs_monitor_ipsec"), MAIN);
        assert_eq!(module_of("ovs_monitor_ipsec::nonexistent"), MAIN);
        assert_eq!(MODULES[MAIN], "main");
    }

    #[test]
    fn good_specs() {
        let all_dbg = Spec {
            module: None,
            destination: None,
            level: Level::Dbg,
        };
        assert_eq!(parse(""), Ok(all_dbg));
        assert_eq!(parse("dbg"), Ok(all_dbg));
        assert_eq!(
            parse("file:dbg"),
            Ok(Spec {
                destination: Some(Destination::File),
                ..all_dbg
            })
        );
        assert_eq!(
            parse("ovsdb:console:warn"),
            Ok(Spec {
                module: module("ovsdb"),
                destination: Some(Destination::Console),
                level: Level::Warn
            })
        );
        assert_eq!(parse("warn:console:ovsdb"), parse("ovsdb:console:warn"));
        assert_eq!(
            parse("ANY:ANY:off"),
            Ok(Spec {
                level: Level::Off,
                ..all_dbg
            })
        );
        assert_eq!(parse("SYSLOG:Info").map(|s| s.level), Ok(Level::Info));
    }

    #[test]
    fn bad_specs_name_the_word() {
        let e = parse("ovsdb:bogus").unwrap_err();
        assert!(e.contains("\"bogus\""), "{e}");
        assert!(parse("file:console").unwrap_err().contains("destinations"));
        assert!(parse("info:dbg").unwrap_err().contains("levels"));
        assert!(parse("ovsdb:model").unwrap_err().contains("modules"));
    }
}
