//! OVS-style logging as an operator sees it: the lines in the log file, `-v` specs, `vlog/set`
//! at run time and `vlog/reopen` after logrotate.

use std::fs;
use std::path::Path;

use ovs_monitor_ipsec::logging::{LogConfig, LogError, LogHandle};
use tracing_subscriber::layer::SubscriberExt;

/// A handle logging to `<dir>/test.log`, console off so test output stays clean.
fn handle(dir: &Path, specs: &[&str]) -> LogHandle {
    let mut all = vec!["console:off".to_string()];
    all.extend(specs.iter().map(|s| s.to_string()));
    LogHandle::new(LogConfig {
        log_file: Some(dir.join("test.log")),
        specs: all,
    })
    .unwrap()
}

/// Runs `f` with `h`'s layer as this thread's subscriber.
fn with_logging(h: &LogHandle, f: impl FnOnce()) {
    let subscriber = tracing_subscriber::registry().with(h.layer());
    tracing::subscriber::with_default(subscriber, f);
}

fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("test.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn line_has_ovs_layout() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &[]);
    with_logging(&h, || {
        tracing::info!(target: "ovs_monitor_ipsec::ovsdb::client", tunnel = "gnv1", "connected");
        tracing::warn!(target: "ovs_monitor_ipsec", "second");
    });
    let l = lines(dir.path());
    assert_eq!(l.len(), 2, "{l:?}");
    let parts: Vec<&str> = l[0].split('|').collect();
    assert_eq!(parts.len(), 5, "{}", l[0]);
    let ts = parts[0];
    assert_eq!(ts.len(), "2026-11-22T04:46:14.123Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
    assert_eq!(parts[1], "00001");
    assert_eq!(&parts[2..], ["ovsdb", "INFO", "connected tunnel=gnv1"]);
    assert!(l[1].ends_with("|00002|main|WARN|second"), "{}", l[1]);
}

#[test]
fn field_values_cannot_inject_lines() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &[]);
    let evil = "x\n2026-01-01T00:00:00.000Z|00001|main|ERR|forged";
    with_logging(&h, || {
        tracing::info!(target: "ovs_monitor_ipsec::model", name = evil, "Tunnel {evil} appeared\r");
    });
    let l = lines(dir.path());
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(l[0].contains("appeared\\r name=x\\n2026"), "{}", l[0]);
}

#[test]
fn default_is_info_and_specs_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &["ovsdb:file:warn", "model:file:dbg"]);
    with_logging(&h, || {
        tracing::debug!(target: "ovs_monitor_ipsec::backend", "backend debug");
        tracing::info!(target: "ovs_monitor_ipsec::ovsdb", "ovsdb info");
        tracing::warn!(target: "ovs_monitor_ipsec::ovsdb", "ovsdb warn");
        tracing::debug!(target: "ovs_monitor_ipsec::model", "model debug");
    });
    let l = lines(dir.path()).join("\n");
    assert!(!l.contains("backend debug"), "{l}");
    assert!(!l.contains("ovsdb info"), "{l}");
    assert!(l.contains("|ovsdb|WARN|ovsdb warn"), "{l}");
    assert!(l.contains("|model|DBG|model debug"), "{l}");
}

#[test]
fn bad_spec_is_rejected_at_start_and_at_run_time() {
    let err = LogHandle::new(LogConfig {
        log_file: None,
        specs: vec!["ovsdb:loud".into()],
    })
    .unwrap_err();
    assert!(
        matches!(&err, LogError::Spec(m) if m.contains("\"loud\"")),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &[]);
    assert!(
        h.set("nosuchmodule:dbg")
            .unwrap_err()
            .contains("nosuchmodule")
    );
}

#[test]
fn run_time_level_changes_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &[]);
    let log = |msg: &str| tracing::debug!(target: "ovs_monitor_ipsec::control", "{msg}");
    with_logging(&h, || {
        log("before");
        h.set("control:file:dbg").unwrap();
        log("after set");
        h.set("ANY:ANY:off").unwrap();
        log("after off");
        tracing::error!(target: "ovs_monitor_ipsec::control", "error while off");
    });
    let l = lines(dir.path()).join("\n");
    assert!(!l.contains("before"), "{l}");
    assert!(l.contains("|control|DBG|after set"), "{l}");
    assert!(!l.contains("off"), "{l}");
}

#[test]
fn list_shows_every_module_and_destination() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &["ovsdb:syslog:warn"]);
    let list = h.list();
    let rows: Vec<&str> = list.lines().collect();
    assert!(rows[0].split_whitespace().eq(["console", "syslog", "file"]));
    let row = |m: &str| {
        rows.iter()
            .find(|r| r.split_whitespace().next() == Some(m))
            .map(|r| r.split_whitespace().skip(1).collect::<Vec<_>>())
            .unwrap()
    };
    assert_eq!(row("ovsdb"), ["off", "warn", "info"]);
    assert_eq!(row("main"), ["off", "off", "info"]);
}

#[test]
fn reopen_after_rename_writes_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &[]);
    with_logging(&h, || {
        tracing::info!(target: "ovs_monitor_ipsec::daemon", "old line");
        fs::rename(dir.path().join("test.log"), dir.path().join("test.log.1")).unwrap();
        h.reopen().unwrap();
        tracing::info!(target: "ovs_monitor_ipsec::daemon", "new line");
        h.close();
        tracing::info!(target: "ovs_monitor_ipsec::daemon", "while closed");
        h.reopen().unwrap();
        tracing::info!(target: "ovs_monitor_ipsec::daemon", "reopened");
    });
    let old = fs::read_to_string(dir.path().join("test.log.1")).unwrap();
    assert!(
        old.contains("old line") && !old.contains("new line"),
        "{old}"
    );
    let new = lines(dir.path()).join("\n");
    assert!(
        new.contains("new line") && !new.contains("old line"),
        "{new}"
    );
    assert!(
        !new.contains("while closed") && new.contains("reopened"),
        "{new}"
    );
}

#[test]
fn log_file_is_created_0640_and_appended() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let h = handle(dir.path(), &[]);
    let mode = fs::metadata(dir.path().join("test.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640 & !current_umask());
    fs::write(dir.path().join("test.log"), "kept\n").unwrap();
    with_logging(&h, || tracing::info!("appended"));
    let l = lines(dir.path());
    assert_eq!(l[0], "kept");
    assert!(l[1].ends_with("appended"));
}

fn current_umask() -> u32 {
    // The test cannot change the umask (tests run in parallel threads); read it instead.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap()
}

#[test]
fn reopen_without_file_is_an_error() {
    let h = LogHandle::new(LogConfig {
        log_file: None,
        specs: vec!["console:off".into()],
    })
    .unwrap();
    assert!(h.reopen().is_err());
}

#[test]
fn init_installs_the_global_subscriber_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = ovs_monitor_ipsec::logging::init(LogConfig {
        log_file: Some(dir.path().join("test.log")),
        specs: vec!["console:off".into()],
    })
    .unwrap();
    // Another thread has no scoped subscriber, so it uses the global one.
    std::thread::spawn(|| tracing::info!(target: "ovs_monitor_ipsec::status", "global"))
        .join()
        .unwrap();
    assert!(lines(dir.path())[0].ends_with("|status|INFO|global"));
    assert!(matches!(
        ovs_monitor_ipsec::logging::init(LogConfig::default()),
        Err(LogError::AlreadyInstalled)
    ));
    h.close();
}
