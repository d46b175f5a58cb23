//! The Libreswan version and what it decides: the command forms (`ipsec auto …` before v5,
//! plain `ipsec …` from v5 on, with v5's argument order), whether `keyingtries=%forever` is
//! still written, and the default NSS database directory.
//!
//! The probe is `ipsec --version`. Release builds print `Libreswan 4.10` (older ones
//! `Libreswan v3.32`), git builds `Libreswan v4.6-123-gdeadbeef-main` or `Libreswan 5.0rc1`:
//! the major number is the leading digits after the optional `v`. Anything else is version 0,
//! which, like the Python monitor, gets the oldest behaviour.

use std::path::{Path, PathBuf};

/// A parsed `ipsec --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    /// The version text after `Libreswan `, for logs ("4.10", "v4.6-123-gdeadbeef").
    pub text: String,
}

impl Version {
    /// Parses the output of `ipsec --version`; `None` when no line names Libreswan.
    pub fn parse(output: &str) -> Option<Self> {
        output.lines().find_map(|line| {
            let text = line.trim().strip_prefix("Libreswan ")?.trim();
            let digits: String = text
                .strip_prefix('v')
                .unwrap_or(text)
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some(Self {
                major: digits.parse().unwrap_or(0),
                text: text.to_owned(),
            })
        })
    }

    /// Version 0: the probe failed.
    pub fn unknown() -> Self {
        Self {
            major: 0,
            text: "unknown".into(),
        }
    }

    /// `ipsec auto` was removed in v5.
    pub fn has_auto(&self) -> bool {
        self.major < 5
    }

    /// `keyingtries` is obsolete from v5 on (v5.3 warns about it).
    pub fn wants_keyingtries(&self) -> bool {
        self.major < 5
    }

    /// The NSS database when `--ipsec-d` is not given.
    pub fn default_nss_dir(&self) -> &'static Path {
        if self.major >= 4 {
            Path::new("/var/lib/ipsec/nss")
        } else {
            Path::new("/etc/ipsec.d")
        }
    }
}

/// Builds the argument lists of every `ipsec` call, for one version and one set of paths.
/// Only argument vectors: running them is the caller's business, so the forms are unit-tested.
#[derive(Debug, Clone)]
pub struct Commands {
    pub version: Version,
    /// `--ctlsocket`: pluto's control socket (below `--root-prefix`).
    pub ctl: PathBuf,
    /// `--config`: the root config file pluto's tools read.
    pub config: PathBuf,
}

impl Commands {
    fn ctl(&self) -> String {
        self.ctl.display().to_string()
    }

    fn config(&self) -> String {
        self.config.display().to_string()
    }

    /// `[auto] --ctlsocket C --config F <op…>`: the form of control operations.
    fn control(&self, op: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if self.version.has_auto() {
            v.push("auto".into());
        }
        v.extend([
            "--ctlsocket".into(),
            self.ctl(),
            "--config".into(),
            self.config(),
        ]);
        v.extend(op.iter().map(|s| (*s).to_owned()));
        v
    }

    /// Makes pluto re-read the secrets file.
    pub fn rereadsecrets(&self) -> Vec<String> {
        self.control(&["--rereadsecrets"])
    }

    /// What makes pluto forget what it read from the NSS database: `--rereadcerts` reloads
    /// the certificates of loaded conns and, from v5 on, drops pluto's cache of root CAs
    /// (libreswan #1038, fixed in 5.0). Before v5 only the cache's own timer drops it, and
    /// whack's `trigger` runs that timer's handler now (a one-off call, not an impairment
    /// that stays set).
    pub fn reload_certs(&self) -> Vec<Vec<String>> {
        let mut v = vec![self.control(&["--rereadcerts"])];
        if self.version.major < 5 {
            v.push(vec![
                "whack".into(),
                "--ctlsocket".into(),
                self.ctl(),
                "--impair".into(),
                "trigger:FREE_ROOT_CERTS".into(),
            ]);
        }
        v
    }

    /// `ipsec status`, parsed by [`super::status`].
    pub fn status(&self) -> Vec<String> {
        vec!["status".into(), "--ctlsocket".into(), self.ctl()]
    }

    /// Deletes a connection and its SAs.
    pub fn delete(&self, conn: &str) -> Vec<String> {
        self.control(&["--delete", conn])
    }

    /// Loads connections from the config file in one call. `addconn` takes any number of
    /// names in every version; one call per connection is what makes the Python monitor slow.
    /// `auto=` is not acted upon for named conns, so nothing is routed or initiated here.
    pub fn addconn(&self, conns: &[String]) -> Vec<String> {
        let mut v = vec![
            "addconn".into(),
            "--ctlsocket".into(),
            self.ctl(),
            "--config".into(),
            self.config(),
        ];
        v.extend(conns.iter().cloned());
        v
    }

    /// Starts negotiating a loaded connection without waiting for the result (whack's own
    /// options have not changed between v3 and v5).
    pub fn initiate(&self, conn: &str) -> Vec<String> {
        vec![
            "whack".into(),
            "--ctlsocket".into(),
            self.ctl(),
            "--asynchronous".into(),
            "--name".into(),
            conn.into(),
            "--initiate".into(),
        ]
    }

    /// Installs the kernel policy of a loaded shunt (`type=drop`) connection.
    pub fn route(&self, conn: &str) -> Vec<String> {
        vec![
            "whack".into(),
            "--ctlsocket".into(),
            self.ctl(),
            "--name".into(),
            conn.into(),
            "--route".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> u32 {
        Version::parse(s).map(|v| v.major).unwrap_or(99)
    }

    #[test]
    fn release_old_and_git_versions() {
        assert_eq!(v("Libreswan 4.10\n"), 4);
        assert_eq!(v("Libreswan v3.32\n"), 3);
        assert_eq!(v("Libreswan 5.1"), 5);
        assert_eq!(v("Libreswan v4.6-123-gdeadbeef-main"), 4);
        assert_eq!(v("Libreswan 5.0rc1"), 5);
        assert_eq!(v("Libreswan (unknown)"), 0);
        assert_eq!(v("Linux strongSwan U5.9.8/K6.1.0"), 99);
    }

    fn cmds(major: u32) -> Commands {
        Commands {
            version: Version {
                major,
                text: String::new(),
            },
            ctl: "/run/pluto/pluto.ctl".into(),
            config: "/etc/ipsec.conf".into(),
        }
    }

    #[test]
    fn v4_uses_auto_and_v5_does_not() {
        assert_eq!(
            cmds(4).delete("t-in-1").join(" "),
            "auto --ctlsocket /run/pluto/pluto.ctl --config /etc/ipsec.conf --delete t-in-1"
        );
        assert_eq!(
            cmds(5).rereadsecrets().join(" "),
            "--ctlsocket /run/pluto/pluto.ctl --config /etc/ipsec.conf --rereadsecrets"
        );
        let reload = |m| {
            cmds(m)
                .reload_certs()
                .iter()
                .map(|c| c.join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reload(4),
            [
                "auto --ctlsocket /run/pluto/pluto.ctl --config /etc/ipsec.conf --rereadcerts",
                "whack --ctlsocket /run/pluto/pluto.ctl --impair trigger:FREE_ROOT_CERTS"
            ]
        );
        assert_eq!(
            reload(5),
            ["--ctlsocket /run/pluto/pluto.ctl --config /etc/ipsec.conf --rereadcerts"]
        );
        assert_eq!(
            cmds(5).addconn(&["a".into(), "b".into()]).join(" "),
            "addconn --ctlsocket /run/pluto/pluto.ctl --config /etc/ipsec.conf a b"
        );
    }

    #[test]
    fn version_drives_keyingtries_and_nss_dir() {
        assert!(cmds(4).version.wants_keyingtries() && !cmds(5).version.wants_keyingtries());
        assert_eq!(cmds(3).version.default_nss_dir(), Path::new("/etc/ipsec.d"));
        assert_eq!(
            cmds(4).version.default_nss_dir(),
            Path::new("/var/lib/ipsec/nss")
        );
    }
}
