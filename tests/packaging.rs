//! The distro service as users meet it: the man page and configuration reference cannot
//! drift from the code, the systemd unit passes `systemd-analyze verify` and starts the
//! daemon with a command line it accepts, and `ovs-ctl start-ovs-ipsec`/`stop-ovs-ipsec`
//! (the real scripts from openvswitch-switch) start and gracefully stop our binary.
//!
//! Building the .deb and the RPM takes a release build and root, so that part lives in
//! `tests/packaging/ci.sh`, which CI runs separately.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Parser;
use common::ovsdb_server::OvsdbServer;
use ovs_monitor_ipsec::cli::{Cli, normalize_args};
use ovs_monitor_ipsec::control::commands::COMMANDS;
use ovs_monitor_ipsec::schema::Contract;

const DAEMON: &str = env!("CARGO_BIN_EXE_ovs-monitor-ipsec");
const CTL: &str = env!("CARGO_BIN_EXE_ovs-monitor-ipsec-ctl");
const UNIT: &str = "debian/openvswitch-ipsec.service";
const DEFAULTS: &str = "debian/openvswitch-ipsec.default";
const OVS_CTL: &str = "/usr/share/openvswitch/scripts/ovs-ctl";

fn source(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn run(program: &str, args: &[&str], hint: &str) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {hint}"))
}

/// A flag as roff writes it: every `-` escaped.
fn roff(flag: &str) -> String {
    flag.replace('-', "\\-")
}

/// The long and short flags `--help` lists.
fn help_flags() -> Vec<String> {
    let out = run(DAEMON, &["--help"], "cargo builds it");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if !line.starts_with('-') {
            continue;
        }
        // "  -p, --private-key <FILE>  ..." or "      --detach  ...": flags come first.
        for word in line.split_whitespace() {
            let word = word.trim_end_matches(',');
            let name = word.split(['[', '<', '=']).next().unwrap();
            if !name.starts_with('-') {
                break;
            }
            flags.push(name.to_string());
        }
    }
    assert!(
        flags.len() > 20,
        "too few flags parsed from --help: {flags:?}"
    );
    flags
}

#[test]
fn man_page_documents_every_flag_of_help() {
    let man = source("docs/ovs-monitor-ipsec.8");
    let missing: Vec<_> = help_flags()
        .into_iter()
        .filter(|f| {
            // A short flag must stand alone: `\-p ` rather than the `\-p` in `\-\-private`.
            let needle = if f.starts_with("--") {
                roff(f)
            } else {
                format!("{} ", roff(f))
            };
            !man.contains(&needle)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "flags missing from the man page: {missing:?}"
    );
}

#[test]
fn man_page_documents_every_control_command_and_the_required_sections() {
    let man = source("docs/ovs-monitor-ipsec.8");
    for c in COMMANDS {
        assert!(man.contains(&roff(c.name)), "command {} missing", c.name);
    }
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "OVSDB KEYS",
        "CONTROL COMMANDS",
        "FILES",
        "ENVIRONMENT",
        "SIGNALS",
        "EXIT STATUS",
        "EXAMPLES",
    ] {
        assert!(
            man.contains(&format!(".SH {section}\n")),
            "section {section} missing"
        );
    }
    let ctl = source("docs/ovs-monitor-ipsec-ctl.8");
    for flag in ["--target", "--timeout", "-t", "-T"] {
        assert!(
            ctl.contains(&roff(flag)),
            "{flag} missing from ovs-monitor-ipsec-ctl(8)"
        );
    }
}

/// Every key and column of the contract is documented, and every key the reference
/// documents exists in the contract (no stale entries).
#[test]
fn configuration_reference_matches_the_ovsdb_contract() {
    let doc = source("docs/configuration.md");
    let contract = Contract::get().unwrap();
    let man = source("docs/ovs-monitor-ipsec.8");
    let mut keys = Vec::new();
    for (section, key, _) in contract.all_keys() {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "{section}:{key} missing"
        );
        assert!(
            man.contains(&roff(key.trim_end_matches('*'))),
            "{section}:{key} missing from the man page"
        );
        keys.push(key);
    }
    for (table, t) in &contract.tables {
        for column in t.columns.keys() {
            assert!(
                doc.contains(&format!("`{column}`")),
                "{table}.{column} missing"
            );
        }
    }
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let key = row.split('`').nth(1).unwrap();
        let service_variable = key.chars().all(|c| c.is_ascii_uppercase() || c == '_');
        assert!(
            service_variable || keys.contains(&key),
            "docs/configuration.md documents `{key}`, which the contract does not have"
        );
    }
}

/// `Environment=` defaults of the unit, then the assignments of the defaults file.
fn unit_environment(unit: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// systemd's expansion: `${VAR}` is one word, `$VAR` splits on white space, unset is empty.
fn expand(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut words = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix('$').filter(|w| !w.starts_with('{')) {
            let value = env.get(name).map(String::as_str).unwrap_or("");
            words.extend(value.split_whitespace().map(str::to_string));
            continue;
        }
        let mut out = word.to_string();
        for (k, v) in env {
            out = out.replace(&format!("${{{k}}}"), v);
        }
        assert!(!out.contains('$'), "unexpanded variable in {word}");
        words.push(out);
    }
    words
}

fn directive<'a>(unit: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    unit.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{key}= missing from the unit"))
}

/// The values the defaults file suggests (commented out), as the admin would uncomment them.
fn suggested(defaults: &str, var: &str) -> Vec<String> {
    let prefix = format!("#{var}=");
    let found: Vec<String> = defaults
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches('"').to_string())
        .collect();
    assert!(!found.is_empty(), "{var} is not documented in {DEFAULTS}");
    found
}

#[test]
fn unit_starts_the_daemon_with_a_command_line_it_accepts() {
    let unit = source(UNIT);
    let defaults = source(DEFAULTS);
    assert_eq!(directive(&unit, "Type"), "notify");
    assert_eq!(directive(&unit, "Restart"), "on-failure");
    assert_eq!(
        directive(&unit, "EnvironmentFile"),
        "-/etc/default/openvswitch-ipsec"
    );
    for dep in ["Requires", "After", "PartOf"] {
        assert_eq!(directive(&unit, dep), "openvswitch-switch.service");
    }
    assert_eq!(directive(&unit, "ProtectSystem"), "strict");
    assert!(directive(&unit, "CapabilityBoundingSet").contains("CAP_NET_ADMIN"));

    let mut variants = vec![vec![]];
    for opts in suggested(&defaults, "OVS_MONITOR_IPSEC_OPTIONS") {
        variants.push(vec![("OVS_MONITOR_IPSEC_OPTIONS", opts)]);
    }
    for ike in suggested(&defaults, "IKE_DAEMON") {
        variants.push(vec![("IKE_DAEMON", ike)]);
    }
    for variant in variants {
        let extra: Vec<(&str, &str)> = variant.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let env = unit_environment(&unit, &extra);
        let argv = expand(directive(&unit, "ExecStart"), &env);
        assert_eq!(argv[0], "/usr/sbin/ovs-monitor-ipsec");
        let cli = Cli::try_parse_from(normalize_args(argv.iter().map(OsString::from)))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(cli.backend_kind().is_ok(), "{argv:?}");
        assert!(!cli.detach && !cli.monitor, "systemd supervises the daemon");
        assert_eq!(cli.pidfile.as_deref(), Some(""), "the default pidfile");
        assert_eq!(cli.database, "unix:/var/run/openvswitch/db.sock");
    }
}

/// ExecStop/ExecReload reach the ctl client's command handling (exit status 1: nothing to
/// talk to), not a usage error.
#[test]
fn unit_stop_and_reload_commands_are_valid_for_the_ctl_client() {
    let unit = source(UNIT);
    let rundir = tempfile::tempdir().unwrap();
    for key in ["ExecStop", "ExecReload"] {
        for exit_options in ["", "--no-cleanup"] {
            let env = unit_environment(&unit, &[("OVS_MONITOR_IPSEC_EXIT_OPTIONS", exit_options)]);
            let argv = expand(directive(&unit, key), &env);
            assert_eq!(argv[0], "/usr/sbin/ovs-monitor-ipsec-ctl");
            let out = Command::new(CTL)
                .args(&argv[1..])
                .env("OVS_RUNDIR", rundir.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{argv:?}: {stderr}");
            assert!(!stderr.contains("Usage"), "{argv:?}: {stderr}");
        }
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = source(UNIT)
        .replace("/usr/sbin/ovs-monitor-ipsec-ctl", CTL)
        .replace("/usr/sbin/ovs-monitor-ipsec ", &format!("{DAEMON} "));
    let path = dir.path().join("openvswitch-ipsec.service");
    fs::write(&path, unit).unwrap();
    // The man page is checked after installation (tests/packaging/ci.sh); here it is not
    // installed yet.
    let out = run(
        "systemd-analyze",
        &["verify", "--man=no", path.to_str().unwrap()],
        "install systemd",
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private `ovs-ctl` environment: its run, log and data directories point into temp
/// dirs, and `$OVS_PKGDATADIR/scripts/ovs-monitor-ipsec` is our binary, as the package
/// installs it.
struct OvsCtl<'a> {
    server: &'a OvsdbServer,
    logdir: tempfile::TempDir,
    datadir: tempfile::TempDir,
}

impl<'a> OvsCtl<'a> {
    fn new(server: &'a OvsdbServer) -> Self {
        let datadir = tempfile::tempdir().unwrap();
        fs::create_dir(datadir.path().join("scripts")).unwrap();
        std::os::unix::fs::symlink(DAEMON, datadir.path().join("scripts/ovs-monitor-ipsec"))
            .unwrap();
        OvsCtl {
            server,
            logdir: tempfile::tempdir().unwrap(),
            datadir,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("OVS_RUNDIR", self.server.dir())
            .env("OVS_LOGDIR", self.logdir.path())
            .env("OVS_PKGDATADIR", self.datadir.path());
        c
    }

    fn ovs_ctl(&self, args: &[&str]) -> Output {
        self.command(OVS_CTL)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {OVS_CTL} ({e}): install openvswitch-switch"))
    }

    fn appctl(&self, args: &[&str]) -> Output {
        self.command("ovs-appctl")
            .args(["-t", "ovs-monitor-ipsec"])
            .args(args)
            .output()
            .expect("ovs-appctl: install openvswitch-common")
    }

    fn pidfile(&self) -> PathBuf {
        self.server.dir().join("ovs-monitor-ipsec.pid")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.logdir.path().join("ovs-monitor-ipsec.log")).unwrap_or_default()
    }
}

impl Drop for OvsCtl<'_> {
    /// A daemon left behind by a failed assertion is killed.
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.pidfile()) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

#[test]
fn ovs_ctl_starts_and_gracefully_stops_the_daemon() {
    let server = OvsdbServer::start();
    let ctl = OvsCtl::new(&server);

    let start = ctl.ovs_ctl(&["--ike-daemon=strongswan", "start-ovs-ipsec"]);
    assert!(
        start.status.success(),
        "ovs-ctl start-ovs-ipsec: {}{}",
        String::from_utf8_lossy(&start.stdout),
        String::from_utf8_lossy(&start.stderr)
    );
    // --detach returns after the first pass, so the daemon answers at once.
    let pid = fs::read_to_string(ctl.pidfile()).expect("pidfile written");
    let pid = pid.trim().to_string();
    let show = ctl.appctl(&["tunnels/show"]);
    assert_eq!(
        String::from_utf8_lossy(&show.stdout),
        "No tunnels configured with IPsec\n"
    );

    let stop = ctl.ovs_ctl(&["stop-ovs-ipsec"]);
    let said = String::from_utf8_lossy(&stop.stdout).into_owned();
    assert!(stop.status.success(), "ovs-ctl stop-ovs-ipsec: {said}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&pid) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    assert!(!alive(&pid), "the daemon survived ovs-ctl stop-ovs-ipsec");
    // ovs-ctl sends "exit" only to daemons whose version reply it accepts; otherwise it
    // falls back to SIGTERM, which leaves the IPsec state in place.
    assert!(said.contains("Exiting ovs-monitor-ipsec"), "{said}");
    assert!(!said.contains("Killing"), "{said}");
    assert!(ctl.log().contains("exiting after cleanup"), "{}", ctl.log());
    assert!(!ctl.pidfile().exists(), "pidfile left behind");
}
