//! Libreswan test harness: a recording stub `ipsec` (for call sequences only) that keeps the
//! conns it was told to load and start and prints them in the real v4 or v5 `ipsec status`
//! format, and a runner for our monitor in Libreswan mode under a temp root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::monitor::{Monitor, launch_rooted, wait_for};
use super::ovsdb_server::OvsdbServer;

/// The stub. State lives beside it: `loaded`, `active`, `initiated` (one conn a line),
/// `aliases` (`conn alias…` a line, from the `connalias=` of each conn when it was loaded),
/// `calls.log`. Like pluto, a `whack --name X` or `--delete X` acts on conn X or, when no conn
/// has that name, on every loaded conn with alias X.
/// `nochild` present: an initiate brings the IKE SA up but no ESP SA (like this kernel).
/// `refuse` lists conns that pluto cannot initiate ("we cannot identify ourselves").
const STUB: &str = r#"#!/bin/bash
S=$(cd "$(dirname "$0")" && pwd)/state; mkdir -p $S; touch $S/loaded $S/active $S/aliases $S/refuse
# The monitor runs whack calls concurrently; pluto serializes them, so does the stub.
exec 9>>$S/lock; flock 9
echo "ipsec $*" >> $S/calls.log
major=$(cat $S/version)
p=""; [ "$major" -lt 5 ] && p="000 "
name_after() { local f=$1 prev=""; shift; for a in "$@"; do [ "$prev" = "$f" ] && { echo "$a"; return; }; prev=$a; done; }
drop() { grep -vxF "$1" $S/$2 > $S/$2.n; mv $S/$2.n $S/$2; }
# The conns X names: the conn called X, else the loaded conns with alias X.
resolve() {
  if grep -qxF "$1" $S/loaded; then echo "$1"; return; fi
  awk -v x="$1" 'FILENAME == ARGV[1] { l[$1] = 1; next } ($1 in l) { for (i = 2; i <= NF; i++) if ($i == x) print $1 }' $S/loaded $S/aliases
}
case "$1" in
  --version) echo "Libreswan $major.1"; exit 0 ;;
  status)
    # One awk pass (a fork per conn made 10,000 conns take minutes): each loaded conn, the
    # totals, then an IKE SA (#n) per initiated conn still loaded, in `sort -u` order, with
    # its Child SA (#n+1) when active.
    st="STATE_V2_"; [ "$major" -ge 5 ] && st=""
    sort -u $S/initiated 2>/dev/null | awk -v p="$p" -v st="$st" '
      FILENAME == ARGV[1] { l[$0] = 1; nl++
        printf "%s\"%s\": 192.0.2.1/32:UDP/0-65535===192.0.2.1...192.0.2.2===192.0.2.2/32:UDP/0-65535; unrouted; eroute owner: #0\n", p, $0; next }
      FILENAME == ARGV[2] { a[$0] = 1; na++; next }
      !($0 in l) { next }
      { sa[ns++] = $0 }
      END {
        printf "%sTotal IPsec connections: loaded %d, active %d\n", p, nl, na
        for (i = 0; i < ns; i++) { c = sa[i]; n = 2 * i + 1
          printf "%s#%d: \"%s\":500 %sESTABLISHED_IKE_SA (established IKE SA); REKEY in 27456s; newest; idle;\n", p, n, c, st
          if (c in a) {
            printf "%s#%d: \"%s\":500 %sESTABLISHED_CHILD_SA (established Child SA); newest; eroute owner; IKE SA #%d; idle;\n", p, n + 1, c, st, n
            printf "%s#%d: \"%s\" esp.248d1071@192.0.2.2 esp.4e68b7a9@192.0.2.1 Traffic: ESPin=0B ESPout=0B ESPmax=2^63B\n", p, n + 1, c
          }
        }
      }' $S/loaded $S/active -
    exit 0 ;;
  addconn)
    conf=$(name_after --config "$@"); shift; names=()
    while [ $# -gt 0 ]; do case "$1" in --ctlsocket|--config) shift 2;; *) names+=("$1"); shift;; esac; done
    # pluto keeps the connalias each conn had in the config when it was added.
    files=("$conf"); for f in $(awk '$1 == "include" { print $2 }' "$conf"); do files+=("$f"); done
    printf '%s\n' "${names[@]}" > $S/names
    awk '/^conn / { c = $2 } /^[ \t]+connalias=/ { v = $0; sub(/^[ \t]+connalias="?/, "", v); sub(/"$/, "", v); print c, v }' "${files[@]}" \
      | awk 'FILENAME == ARGV[1] { n[$1] = 1; next } ($1 in n)' $S/names - > $S/aliases.new
    awk 'FILENAME == ARGV[1] { n[$1] = 1; next } !($1 in n)' $S/names $S/aliases >> $S/aliases.new
    mv $S/aliases.new $S/aliases
    cat $S/names >> $S/loaded; sort -u -o $S/loaded $S/loaded; exit 0 ;;
  whack)
    c=$(name_after --name "$@")
    case "$*" in
      *--initiate*) conns=$(resolve "$c")
                    [ -n "$conns" ] || { echo "021 no connection named \"$c\""; exit 0; }
                    grep -qxF "$c" $S/loaded || echo "000 initiating all conns with alias='$c'"
                    for x in $conns; do
                      if grep -qxF "$x" $S/refuse; then
                        echo "022 \"$x\": we cannot identify ourselves with either end of this connection."
                        # pluto adds this for a conn named directly, not for an alias's
                        [ "$x" = "$c" ] && echo "036 \"$x\": failed to initiate connection"
                        continue
                      fi
                      # the peer answers on the same IKE SA and brings up our inbound conn
                      for y in "$x" "${x/-out-/-in-}"; do echo "$y" >> $S/initiated; [ -e $S/nochild ] || echo "$y" >> $S/active; done
                      echo "002 \"$x\" #1: initiating IKEv2 connection"
                    done ;;
    esac; exit 0 ;;
esac
case "$*" in
  *--delete*) for c in $(resolve "${@: -1}"); do drop "$c" loaded; drop "$c" active; [ -e $S/initiated ] && drop "$c" initiated; done ;;
esac
exit 0
"#;

/// A temp root with the stub `ipsec` at `<root>/usr/sbin/ipsec`.
pub struct StubRoot {
    pub root: PathBuf,
}

impl StubRoot {
    pub fn new(dir: &Path, major: u32) -> Self {
        let root = dir.join("root");
        let sbin = root.join("usr/sbin");
        std::fs::create_dir_all(sbin.join("state")).expect("mkdir");
        std::fs::write(sbin.join("ipsec"), STUB).expect("write stub");
        std::fs::write(sbin.join("state/version"), major.to_string()).expect("write version");
        let mut perm = std::fs::metadata(sbin.join("ipsec"))
            .expect("stat")
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(sbin.join("ipsec"), perm).expect("chmod");
        Self { root }
    }

    fn state(&self, f: &str) -> PathBuf {
        self.root.join("usr/sbin/state").join(f)
    }

    /// Every `ipsec` call so far, one a line.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn loaded(&self) -> Vec<String> {
        std::fs::read_to_string(self.state("loaded"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Deletes a conn behind the monitor's back (`ipsec auto --delete` by an admin).
    pub fn delete_by_hand(&self, conn: &str) {
        for f in ["loaded", "active", "initiated"] {
            let text = std::fs::read_to_string(self.state(f)).unwrap_or_default();
            let kept: String = text
                .lines()
                .filter(|l| *l != conn)
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(self.state(f), kept).expect("write state");
        }
    }

    /// From now on initiations establish the IKE SA only.
    pub fn no_child_sa(&self) {
        std::fs::write(self.state("nochild"), "").expect("write nochild");
    }

    /// From now on pluto cannot initiate `conns` (as for an address that is not ours).
    pub fn refuse(&self, conns: &[&str]) {
        let text: String = conns.iter().map(|c| format!("{c}\n")).collect();
        std::fs::write(self.state("refuse"), text).expect("write refuse");
    }

    /// Each loaded conn with its aliases, as pluto got them from the config.
    pub fn aliases(&self) -> Vec<String> {
        std::fs::read_to_string(self.state("aliases"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Starts `ovs-monitor-ipsec --ike-daemon=libreswan` on `db` with `--root-prefix=root`,
/// `--no-restart-ike-daemon` and `extra`, optionally inside network namespace `netns`.
pub fn start_monitor(
    db: &OvsdbServer,
    root: &Path,
    netns: Option<&str>,
    extra: &[&str],
) -> Monitor {
    let wrapper = netns.map_or_else(Vec::new, |ns| vec!["ip", "netns", "exec", ns]);
    start_monitor_wrapped(db, root, &wrapper, extra)
}

/// [`start_monitor`] behind `wrapper` (e.g. `ip netns exec NS env PATH=…`).
fn start_monitor_wrapped(
    db: &OvsdbServer,
    root: &Path,
    wrapper: &[&str],
    extra: &[&str],
) -> Monitor {
    let mut args = vec!["--ike-daemon=libreswan", "--no-restart-ike-daemon"];
    args.extend_from_slice(extra);
    launch_rooted(db, wrapper, "monitor.log", root, &args)
}

/// A self-signed RSA certificate with CN `cn` (what `ovs-pki self-sign` makes), as
/// `<dir>/<cn>-cert.pem` and `<dir>/<cn>-privkey.pem`.
pub fn self_signed(dir: &Path, cn: &str) {
    let p = |s: &str| dir.join(format!("{cn}-{s}.pem")).display().to_string();
    sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        &p("privkey"),
        "-out",
        &p("cert"),
    ]);
}

/// Unpacked Libreswan 4.10's `ipsec` (Debian bookworm; tests/deps/libreswan.sh).
pub const REAL_IPSEC: &str = "/opt/lsw/ipsec";

/// Unpacked Libreswan 5's `ipsec` (Debian trixie; tests/deps/libreswan.sh).
pub const REAL_IPSEC_V5: &str = "/opt/lsw5/ipsec";

fn sh(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An executable script at `path` that appends `<label> ARGS` to `log`, then runs `target`
/// with the same arguments; while a file `hang` exists beside `log`, it hangs instead (a
/// wedged daemon, for the soak).
fn logging_wrapper(path: &Path, label: &str, target: &str, log: &Path) {
    let script = format!(
        "#!/bin/sh\necho \"{label} $*\" >> {}\n[ -e {} ] && exec sleep 3600\nexec {target} \"$@\"\n",
        log.display(),
        log.with_file_name("hang").display()
    );
    std::fs::write(path, script).expect("write wrapper");
    let mut perm = std::fs::metadata(path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(path, perm).expect("chmod");
}

/// A real pluto in `netns`, files under `<dir>/root` at the paths our monitor gets, killed
/// on drop.
pub struct Pluto {
    pub root: PathBuf,
    pub netns: String,
    /// The `ipsec` it was started with ([`REAL_IPSEC`] or [`REAL_IPSEC_V5`]).
    ipsec: &'static str,
    log: PathBuf,
}

impl Pluto {
    pub fn start(dir: &Path, netns: &str, ipsec: &'static str) -> Self {
        assert!(
            Path::new(ipsec).exists(),
            "{ipsec} is missing: run tests/install-deps.sh (tests/deps/libreswan.sh unpacks libreswan 4 and 5)"
        );
        let root = dir.join("root");
        for d in ["etc/ipsec.d", "usr/sbin", "run/pluto"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        // Logs each call, like the stub, so tests can count what the monitor ran; while the
        // file `hang` exists beside `calls.log`, every call hangs (a wedged pluto).
        logging_wrapper(
            &root.join("usr/sbin/ipsec"),
            "ipsec",
            ipsec,
            &root.join("calls.log"),
        );
        std::fs::write(root.join("etc/ipsec.conf"), "").expect("conf");
        std::fs::write(root.join("etc/ipsec.secrets"), "").expect("secrets");
        let p = |s: &str| root.join(s).display().to_string();
        sh(&[ipsec, "initnss", "--nssdir", &p("etc/ipsec.d")]);
        let pluto = Self {
            root,
            netns: netns.to_owned(),
            ipsec,
            log: dir.join("pluto.log"),
        };
        pluto.launch();
        pluto
    }

    /// Starts pluto on the files prepared by [`Pluto::start`] and waits until it listens.
    fn launch(&self) {
        let p = |s: &str| self.root.join(s).display().to_string();
        let (ipsec, netns) = (self.ipsec, self.netns.as_str());
        let log = self.log.display().to_string();
        sh(&[
            "ip",
            "netns",
            "exec",
            netns,
            ipsec,
            "pluto",
            "--config",
            &p("etc/ipsec.conf"),
            "--ipsecdir",
            &p("etc"),
            "--nssdir",
            &p("etc/ipsec.d"),
            "--logfile",
            &log,
            "--secretsfile",
            &p("etc/ipsec.secrets"),
            "--rundir",
            &p("run/pluto"),
        ]);
        wait_for("pluto's control socket", Duration::from_secs(10), || {
            self.root.join("run/pluto/pluto.ctl").exists()
        });
        // What `ipsec start` does after pluto is up. pluto 5 waits for it: at start it runs
        // its compiled-in /usr/libexec/ipsec/addconn, which here is 4.10's.
        self.whack(&["--listen"]);
    }

    /// pluto's pid, from its pid file.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.root.join("run/pluto/pluto.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills pluto with SIGKILL (a crash), waits until it is gone and removes what it leaves
    /// (its pid file and control socket), as a service manager's restart would find them.
    pub fn kill9(&self) {
        if let Some(pid) = self.pid() {
            super::kill9_and_wait(pid, "pluto gone");
        }
        for f in ["run/pluto/pluto.pid", "run/pluto/pluto.ctl"] {
            let _ = std::fs::remove_file(self.root.join(f));
        }
    }

    /// Starts pluto again after [`Pluto::kill9`].
    pub fn restart(&self) {
        self.launch();
    }

    /// `ipsec whack --ctlsocket <ctl> ARGS` in pluto's namespace (it must succeed).
    pub fn whack(&self, args: &[&str]) -> std::process::Output {
        let out = self.try_whack(args);
        assert!(
            out.status.success(),
            "whack {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// [`Pluto::whack`] that may fail (e.g. on a state that has just gone).
    pub fn try_whack(&self, args: &[&str]) -> std::process::Output {
        let ctl = self.root.join("run/pluto/pluto.ctl");
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                self.ipsec,
                "whack",
                "--ctlsocket",
            ])
            .arg(ctl)
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// `ipsec status`, or None when pluto does not answer (killed, crashed, starting).
    pub fn try_status(&self) -> Option<String> {
        let out = self.try_whack(&["--status"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Deletes `conn` from pluto behind the monitor's back (`ipsec auto --delete`).
    pub fn delete_conn(&self, conn: &str) {
        self.whack(&["--delete", "--name", conn]);
    }

    /// `ipsec status` as pluto prints it.
    pub fn status(&self) -> String {
        String::from_utf8_lossy(&self.whack(&["--status"]).stdout).into_owned()
    }

    /// Every `ipsec` call the monitor made, one a line.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// pluto's log (written lazily).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The nicknames in this pluto's NSS database.
    pub fn nss_nicknames(&self) -> String {
        let db = format!("sql:{}", self.root.join("etc/ipsec.d").display());
        String::from_utf8_lossy(&sh(&["certutil", "-L", "-d", &db]).stdout).into_owned()
    }

    /// Our monitor for this pluto ([`Pluto::MONITOR_ARGS`]) in its namespace, with `certutil`
    /// and `pk12util` found first in a directory of wrappers that log each call
    /// ([`Pluto::nss_calls`]) before running the real tool.
    pub fn start_monitor(&self, db: &OvsdbServer) -> Monitor {
        let tools = self.root.join("nss-tools");
        std::fs::create_dir_all(&tools).expect("mkdir");
        let log = self.root.join("nss-calls.log");
        for tool in ["certutil", "pk12util"] {
            logging_wrapper(&tools.join(tool), tool, &format!("/usr/bin/{tool}"), &log);
        }
        let path = format!(
            "PATH={}:{}",
            tools.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let wrapper = ["ip", "netns", "exec", &self.netns, "env", &path];
        start_monitor_wrapped(db, &self.root, &wrapper, Self::MONITOR_ARGS)
    }

    /// Every `certutil`/`pk12util` call of the monitor started by [`Pluto::start_monitor`].
    pub fn nss_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("nss-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The state numbers of the established IKE SAs (`#N`) in pluto's status.
    pub fn ike_sas(&self) -> Vec<String> {
        self.status()
            .lines()
            .filter(|l| l.contains("ESTABLISHED_IKE_SA"))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('#')))
            .map(|w| w.trim_end_matches(':').to_owned())
            .collect()
    }

    /// The monitor options that point at this pluto's files (below `--root-prefix`).
    pub const MONITOR_ARGS: &'static [&'static str] = &[
        "--ipsec-conf=/etc/ipsec.conf",
        "--ipsec-d=/etc/ipsec.d",
        "--ipsec-secrets=/etc/ipsec.secrets",
        "--ipsec-ctl=/run/pluto/pluto.ctl",
    ];
}

impl Drop for Pluto {
    fn drop(&mut self) {
        let pid =
            std::fs::read_to_string(self.root.join("run/pluto/pluto.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}
