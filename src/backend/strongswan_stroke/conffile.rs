//! What our own `ipsec.conf` on disk tells the next pass (pure, except [`fingerprint`]).
//!
//! The file is the record of what charon was told: the connections it defines are the ones
//! this monitor created (so a deleted tunnel's SAs are known to be ours even after a monitor
//! restart), and its trailing *certificate stamps* record the SHA-256 of each certificate file
//! at the time charon loaded it. charon reads `leftcert=`/`rightcert=`/`cacert=` files only
//! when a connection is added (and private keys on `rereadsecrets`), so a certificate or key
//! replaced at the same path changes nothing in
//! the text and `ipsec update` would ignore it; comparing stamps with the files' current
//! digests finds it, also when the change happened while the monitor was not running.
//!
//! A stamp is a comment line, `# ovs-monitor-ipsec sha256 <hex> <path>`; paths passed the
//! model's path grammar, so they contain no spaces or newlines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::model::cert::{CertSource, FsCertSource};

const STAMP: &str = "# ovs-monitor-ipsec sha256 ";

/// Digests by certificate path.
pub type Stamps = BTreeMap<PathBuf, String>;

/// Splits a file into its rendered body and its stamps.
pub fn split(text: &str) -> (String, Stamps) {
    let mut body = String::with_capacity(text.len());
    let mut stamps = Stamps::new();
    for line in text.split_inclusive('\n') {
        match line
            .strip_prefix(STAMP)
            .and_then(|s| s.trim_end().split_once(' '))
        {
            Some((hex, path)) => {
                stamps.insert(PathBuf::from(path), hex.to_owned());
            }
            None => body.push_str(line),
        }
    }
    (body, stamps)
}

/// The file to write: the rendered body followed by its stamps.
pub fn join(body: &str, stamps: &Stamps) -> String {
    let mut s = body.to_owned();
    for (path, hex) in stamps {
        s.push_str(&format!("{STAMP}{hex} {}\n", path.display()));
    }
    s
}

/// The connections a file defines (`conn %default` excluded): name → the lines of its
/// section after the `conn` line, up to the blank line that ends it.
pub fn sections(body: &str) -> BTreeMap<String, String> {
    sections_in(body, |_| true)
}

/// [`sections`] of the connections `keep` accepts; the others are skipped without a copy.
pub fn sections_in(body: &str, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(&str, Vec<&str>)> = None;
    // A section is its `conn` line and the indented lines that follow it.
    for line in body.lines().chain(std::iter::once("")) {
        if line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            if let Some((_, lines)) = current.as_mut() {
                lines.push(line);
            }
            continue;
        }
        if let Some((name, lines)) = current.take()
            && name != "%default"
        {
            out.insert(name.to_owned(), lines.join("\n"));
        }
        current = line
            .strip_prefix("conn ")
            .map(str::trim)
            .filter(|n| !n.is_empty() && keep(n))
            .map(|n| (n, Vec::new()));
    }
    out
}

/// SHA-256 of each line of a secrets file by its selectors (the text before ` : `), so that
/// lines can be compared without keeping any secret in memory.
pub fn secret_lines(text: &str) -> BTreeMap<String, [u8; 32]> {
    secret_lines_in(text, |_| true)
}

/// [`secret_lines`] of the selectors `keep` accepts.
pub fn secret_lines_in(text: &str, keep: impl Fn(&str) -> bool) -> BTreeMap<String, [u8; 32]> {
    text.lines()
        .filter_map(|l| {
            let (sel, _) = l.split_once(" : ")?;
            keep(sel).then(|| (sel.to_owned(), crate::backend::files::sha256(l.as_bytes())))
        })
        .collect()
}

/// The SHA-256 (hex) of the certificate at `path` or, for a private key, of its public key
/// (nothing derived from the secret part is written); `None` when it cannot be read (the
/// model reports unreadable certificates itself). Cached by file identity, so cheap per pass.
pub fn fingerprint(certs: &mut FsCertSource, path: &Path) -> Option<String> {
    let digest = match certs.read(path) {
        Ok(info) => info.sha256,
        Err(_) => crate::backend::files::sha256(&certs.key_public(path).ok()?),
    };
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Stamped certificates whose file changed since the stamp was written.
pub fn changed(stamps: &Stamps, certs: &mut FsCertSource) -> BTreeSet<PathBuf> {
    stamps
        .iter()
        .filter(|(path, hex)| fingerprint(certs, path).is_some_and(|now| now != **hex))
        .map(|(path, _)| path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_stay_out_of_the_body() {
        let stamps = Stamps::from([(PathBuf::from("/etc/c.pem"), "ab01".to_owned())]);
        let text = join("conn %default\nconn a-1\n", &stamps);
        assert_eq!(
            text,
            "conn %default\nconn a-1\n# ovs-monitor-ipsec sha256 ab01 /etc/c.pem\n"
        );
        let (body, back) = split(&text);
        assert_eq!(body, "conn %default\nconn a-1\n");
        assert_eq!(back, stamps);
        assert_eq!(sections(&body).keys().collect::<Vec<_>>(), ["a-1"]);
        let two = "conn a-1\n    left=x\n\nconn b-1\n    left=y\n";
        assert_eq!(
            sections_in(two, |c| c == "b-1"),
            BTreeMap::from([("b-1".to_owned(), "    left=y".to_owned())])
        );
        let secrets = "x y : PSK 0x01\nx z : PSK 0x02\n";
        assert_eq!(
            secret_lines_in(secrets, |s| s == "x z")
                .keys()
                .collect::<Vec<_>>(),
            ["x z"]
        );
    }
}
