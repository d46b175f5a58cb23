//! A fake root for the strongSwan legacy backend: a recording, stateful stub `ipsec` that
//! answers `statusall` in charon's format, so call sequences can be checked without charon.
//! (Real charon runs in `tests/strongswan_stroke_netns.rs`.)
//!
//! The stub keeps the loaded connections (`ipsec update`/`reload` load what `ipsec.conf`
//! defines) and one established IKE_SA + installed CHILD_SA per connection, which, as in charon,
//! survive `update` until `stroke down-nb` removes them.

use std::path::{Path, PathBuf};

use super::monitor::{Monitor, launch};
use super::ovsdb_server::OvsdbServer;

const STUB: &str = r#"#!/bin/bash
R=$(cd "$(dirname "$0")/../.." && pwd)
C=$R/stub-conns; S=$R/stub-sas; touch "$C" "$S"
echo "ipsec $*" >> "$R/ipsec-calls.log"
case "$1" in
  restart) : > "$C"; : > "$S" ;;
  update|reload)
    grep -oP '^conn \K\S+' "$R/etc/ipsec.conf" | grep -vx '%default' > "$C"
    awk 'FILENAME == ARGV[1] { have[$1]=1; print; n=($2>n?$2:n); next }
        !($1 in have) && $1 !~ /^prevent_/ { n++; print $1, n }' "$S" "$C" > "$S.n"
    mv "$S.n" "$S" ;;
  statusall)
    echo "Connections:"
    awk '{ printf "%12s:  %%any...192.0.2.2  IKEv2\n%12s:   child:  dynamic === dynamic TRANSPORT\n", $1, $1 }' "$C"
    echo "Security Associations ($(wc -l < "$S") up, 0 connecting):"
    awk '{ printf "%12s[%s]: ESTABLISHED 1 second ago, 192.0.2.1...192.0.2.2\n%12s{%s}:  INSTALLED, TRANSPORT, reqid %s, ESP SPIs: c0dc3410_i cb107296_o\n", $1, $2, $1, $2, $2 }' "$S" ;;
  stroke)
    t=$3; name=${t%[\{\[]*}; id=${t##*[\{\[]}; id=${id%[\}\]]}
    grep -vxF "$name $id" "$S" > "$S.n"; mv "$S.n" "$S" ;;
esac
exit 0
"#;

/// The fake root of a test: `<db dir>/root`, as `Monitor` uses.
pub struct StubRoot {
    pub root: PathBuf,
}

impl StubRoot {
    pub fn new(db: &OvsdbServer) -> Self {
        let root = db.dir().join("root");
        let sbin = root.join("usr/sbin");
        std::fs::create_dir_all(&sbin).unwrap();
        std::fs::create_dir_all(root.join("etc/strongswan.d")).unwrap();
        let stub = sbin.join("ipsec");
        std::fs::write(&stub, STUB).unwrap();
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Self { root }
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.file(rel)).unwrap_or_default()
    }

    /// Recorded `ipsec` calls since the last [`StubRoot::take_calls`].
    pub fn take_calls(&self) -> Vec<String> {
        let log = self.file("ipsec-calls.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text.lines().map(str::to_owned).collect()
    }

    /// The connections the stub's charon holds.
    pub fn conns(&self) -> Vec<String> {
        self.read("stub-conns").lines().map(str::to_owned).collect()
    }

    /// charon loses connection `conn` behind the monitor's back (as `ipsec stroke delete`
    /// or a crash the starter does not replay); its SAs stay.
    pub fn lose(&self, conn: &str) {
        let kept: Vec<String> = self.conns().into_iter().filter(|c| c != conn).collect();
        std::fs::write(self.file("stub-conns"), kept.join("\n") + "\n").unwrap();
    }

    /// The SAs the stub holds, `name id` per line.
    pub fn sas(&self) -> Vec<String> {
        self.read("stub-sas").lines().map(str::to_owned).collect()
    }
}

/// Starts our monitor with `--ike-daemon=strongswan` on the stub root, not dry-run.
pub fn start_monitor(db: &OvsdbServer, extra: &[&str]) -> Monitor {
    let mut args = vec!["--ike-daemon=strongswan"];
    args.extend_from_slice(extra);
    launch(db, &[], "monitor.log", &args)
}

/// Mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}
