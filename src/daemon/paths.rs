//! Where the daemon's run-time files live, resolved the way every OVS daemon resolves them.
//!
//! `ovs-appctl -t ovs-monitor-ipsec` and `ovs-ctl` compute these names on their own, from the
//! same environment variables, so we must agree with them exactly: the run directory is
//! `$OVS_RUNDIR` (default `/var/run/openvswitch`), the log directory `$OVS_LOGDIR` (default
//! `/var/log/openvswitch`); an empty variable counts as unset, as in OVS's C library. A bare
//! `--pidfile` / `--log-file` (the CLI hands us `""`) selects the default name, and a relative
//! name is taken relative to the run (or log) directory rather than the working directory,
//! which `--detach` changes to `/` anyway.

use std::path::{Path, PathBuf};

/// The name OVS tools use for this daemon (`ovs-appctl -t ovs-monitor-ipsec`).
pub const PROGRAM_NAME: &str = "ovs-monitor-ipsec";

const DEFAULT_RUNDIR: &str = "/var/run/openvswitch";
const DEFAULT_LOGDIR: &str = "/var/log/openvswitch";

fn dir_from_env(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

/// `$OVS_RUNDIR`, or `/var/run/openvswitch`.
pub fn rundir() -> PathBuf {
    dir_from_env("OVS_RUNDIR", DEFAULT_RUNDIR)
}

/// `$OVS_LOGDIR`, or `/var/log/openvswitch`.
pub fn logdir() -> PathBuf {
    dir_from_env("OVS_LOGDIR", DEFAULT_LOGDIR)
}

/// `<rundir>/ovs-monitor-ipsec.pid`: where `ovs-appctl` and `ovs-ctl` look for our pid.
pub fn default_pidfile() -> PathBuf {
    rundir().join(format!("{PROGRAM_NAME}.pid"))
}

/// `<logdir>/ovs-monitor-ipsec.log`.
pub fn default_log_file() -> PathBuf {
    logdir().join(format!("{PROGRAM_NAME}.log"))
}

/// `<rundir>/ovs-monitor-ipsec.<pid>.ctl`: the control socket `ovs-appctl` connects to after
/// reading `pid` from the pidfile.
pub fn default_unixctl(pid: u32) -> PathBuf {
    rundir().join(format!("{PROGRAM_NAME}.{pid}.ctl"))
}

/// `--pidfile[=FILE]` as given by the CLI (`""` for the bare flag) → the file to create.
pub fn resolve_pidfile(arg: &str) -> PathBuf {
    resolve(arg, &rundir(), default_pidfile)
}

/// `--log-file[=FILE]` as given by the CLI (`""` for the bare flag) → the file to open.
pub fn resolve_log_file(arg: &str) -> PathBuf {
    resolve(arg, &logdir(), default_log_file)
}

/// `--unixctl=PATH` (relative to the run directory) or, without it, the default socket.
pub fn resolve_unixctl(arg: Option<&Path>, pid: u32) -> PathBuf {
    match arg {
        Some(p) if !p.as_os_str().is_empty() => rundir().join(p),
        _ => default_unixctl(pid),
    }
}

/// `""` → `default()`; otherwise `base/arg`, which `Path::join` leaves alone when `arg` is
/// absolute.
fn resolve(arg: &str, base: &Path, default: impl FnOnce() -> PathBuf) -> PathBuf {
    if arg.is_empty() {
        default()
    } else {
        base.join(arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_are_taken_from_the_directory_and_absolute_ones_kept() {
        let base = Path::new("/run/ovs");
        let dflt = || PathBuf::from("/default");
        assert_eq!(resolve("", base, dflt), PathBuf::from("/default"));
        assert_eq!(
            resolve("x.pid", base, dflt),
            PathBuf::from("/run/ovs/x.pid")
        );
        assert_eq!(
            resolve("sub/x.pid", base, dflt),
            PathBuf::from("/run/ovs/sub/x.pid")
        );
        assert_eq!(
            resolve("/tmp/x.pid", base, dflt),
            PathBuf::from("/tmp/x.pid")
        );
    }

    #[test]
    fn default_names_follow_the_program_name() {
        // The environment is shared by parallel tests, so only check the file names here;
        // tests/daemon_pidfile.rs drives OVS_RUNDIR in a child process.
        let pidfile = default_pidfile();
        assert_eq!(
            pidfile.file_name().and_then(|n| n.to_str()),
            Some("ovs-monitor-ipsec.pid")
        );
        assert_eq!(pidfile.parent(), Some(rundir().as_path()));
        let ctl = default_unixctl(42);
        assert_eq!(
            ctl.file_name().and_then(|n| n.to_str()),
            Some("ovs-monitor-ipsec.42.ctl")
        );
        let log = default_log_file();
        assert_eq!(
            log.file_name().and_then(|n| n.to_str()),
            Some("ovs-monitor-ipsec.log")
        );
        assert_eq!(log.parent(), Some(logdir().as_path()));
    }
}
