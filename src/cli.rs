//! Command line, drop-in compatible with the Python monitor at OVS HEAD (reference §1).
//!
//! OVS's `-v[SPEC]` takes an optional value that must be attached (`-vfile:dbg`); clap cannot
//! express "attached only" for a short flag, so [`normalize_args`] rewrites `-vX` to
//! `--verbose=X` before parsing, and a bare `-v` to `--verbose` (everything at debug).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::backend::BackendKind;
use crate::backend::strongswan_vici::mode::StrongSwanMode;

/// Keeps the kernel's IPsec state in line with Open vSwitch tunnels whose `options` carry
/// `psk`, `remote_cert` or `remote_name`.
#[derive(Debug, Clone, Parser)]
#[command(name = "ovs-monitor-ipsec", version, about, long_about = None)]
pub struct Cli {
    /// OVSDB remote: unix:PATH, tcp:IP:PORT or ssl:IP:PORT (e.g. unix:/var/run/openvswitch/db.sock).
    #[arg(value_name = "DATABASE")]
    pub database: String,

    /// IKE daemon to drive: strongswan, libreswan, or none (static keys in kernel XFRM).
    #[arg(long, value_name = "DAEMON")]
    pub ike_daemon: Option<String>,

    /// Prefix for every file and binary the monitor uses (for tests and sandboxes).
    #[arg(long, value_name = "DIR", default_value = "")]
    pub root_prefix: String,

    /// Do not restart the IKE daemon at start-up; adopt what it has.
    #[arg(long)]
    pub no_restart_ike_daemon: bool,

    /// Libreswan: the config file the monitor owns [default: /etc/ipsec.conf].
    #[arg(long, value_name = "FILE")]
    pub ipsec_conf: Option<PathBuf>,

    /// Libreswan: the main config that includes --ipsec-conf [default: --ipsec-conf].
    #[arg(long, value_name = "FILE")]
    pub root_ipsec_conf: Option<PathBuf>,

    /// Libreswan: NSS database directory [default: /var/lib/ipsec/nss, /etc/ipsec.d before v4].
    #[arg(long, value_name = "DIR")]
    pub ipsec_d: Option<PathBuf>,

    /// Libreswan: secrets file [default: /etc/ipsec.secrets].
    #[arg(long, value_name = "FILE")]
    pub ipsec_secrets: Option<PathBuf>,

    /// Libreswan: pluto control socket [default: /run/pluto/pluto.ctl].
    #[arg(long, value_name = "FILE")]
    pub ipsec_ctl: Option<PathBuf>,

    /// strongSwan: drive charon over its VICI socket (vici), through ipsec.conf and the `ipsec`
    /// command (stroke), or pick vici when the VICI socket answers (auto).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = StrongSwanMode::Auto)]
    pub strongswan_mode: StrongSwanMode,

    /// strongSwan: charon's VICI socket, used as given [default: /var/run/charon.vici below
    /// --root-prefix].
    #[arg(long, value_name = "PATH")]
    pub vici_socket: Option<PathBuf>,

    /// Seconds an external command may run before it is killed and treated as failed.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub command_timeout: u64,

    /// --ike-daemon=none: seconds an SA that is no longer wanted (the old key after a
    /// rotation) stays installed, so that packets already sent with it are still accepted.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub static_rekey_grace: u64,

    /// Days before a certificate's expiry from which the tunnel carries
    /// external_ids:ipsec-warning, the log warns once a day, and diagnose reports
    /// cert-expiring.
    #[arg(long, value_name = "DAYS", default_value_t = crate::diagnose::certs::DEFAULT_WARNING_DAYS)]
    pub cert_expiry_warning_days: u32,

    /// Libreswan: leave ike=, esp= and ikev2= out and use the daemon's default crypto.
    #[arg(long)]
    pub use_default_crypto: bool,

    /// Log to FILE [default: $OVS_LOGDIR/ovs-monitor-ipsec.log].
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub log_file: Option<String>,

    /// Log levels, OVS style: [MODULE][:DESTINATION][:LEVEL], e.g. -vfile:dbg, -vconsole:off.
    /// A bare -v sets every destination to dbg.
    #[arg(long = "verbose", value_name = "SPEC", num_args = 0..=1, require_equals = true,
          default_missing_value = "", action = clap::ArgAction::Append)]
    pub verbose: Vec<String>,

    /// Run in the background once the first pass is applied.
    #[arg(long)]
    pub detach: bool,

    /// Write the process ID to FILE [default: $OVS_RUNDIR/ovs-monitor-ipsec.pid], locked.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub pidfile: Option<String>,

    /// Restart the daemon if it crashes.
    #[arg(long)]
    pub monitor: bool,

    /// With --detach, do not change directory to /.
    #[arg(long)]
    pub no_chdir: bool,

    /// Replace a pidfile that another process holds instead of failing.
    #[arg(long)]
    pub overwrite_pidfile: bool,

    /// ssl: remote: our private key (PEM).
    #[arg(short = 'p', long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,

    /// ssl: remote: our certificate (PEM).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub certificate: Option<PathBuf>,

    /// ssl: remote: CA certificate that signs the server's certificate (PEM).
    #[arg(short = 'C', long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Directory whose files override the built-in config templates (below --root-prefix).
    #[arg(long, value_name = "DIR", default_value = crate::backend::templates::DEFAULT_TEMPLATE_DIR)]
    pub template_dir: PathBuf,

    /// Plan and log every action but apply none: no IKE daemon, file or kernel state is
    /// touched (for tests and demos of the daemon core).
    #[arg(long)]
    pub dry_run: bool,

    /// Control socket [default: $OVS_RUNDIR/ovs-monitor-ipsec.<pid>.ctl].
    #[arg(long, value_name = "PATH")]
    pub unixctl: Option<PathBuf>,

    /// Serve Prometheus metrics over HTTP (GET /metrics) on tcp:IP:PORT or unix:PATH
    /// [default: off; `metrics/show` works without it].
    #[arg(long, value_name = "ENDPOINT")]
    pub metrics: Option<crate::metrics::http::Listen>,

    /// Export the per-tunnel metric families (one series or more per tunnel); false keeps
    /// only the aggregates, for very large hosts.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_per_tunnel: bool,
}

/// The error printed (and exit code 1) for a missing or unknown `--ike-daemon`.
pub const IKE_DAEMON_ERROR: &str = "The IKE daemon should be strongswan, libreswan or none.";

impl Cli {
    /// Parses the process arguments; see [`normalize_args`].
    pub fn parse_args() -> Self {
        Self::parse_from(normalize_args(std::env::args_os()))
    }

    /// `--template-dir` below `--root-prefix`.
    pub fn template_dir(&self) -> PathBuf {
        crate::backend::files::under_root(
            std::path::Path::new(&self.root_prefix),
            &self.template_dir,
        )
    }

    /// The VICI socket: `--vici-socket`, else charon's default below `--root-prefix`.
    pub fn vici_socket(&self) -> PathBuf {
        self.vici_socket.clone().unwrap_or_else(|| {
            crate::backend::files::under_root(
                std::path::Path::new(&self.root_prefix),
                std::path::Path::new(crate::backend::strongswan_vici::DEFAULT_SOCKET),
            )
        })
    }

    pub fn backend_kind(&self) -> Result<BackendKind, &'static str> {
        self.ike_daemon
            .as_deref()
            .and_then(BackendKind::parse)
            .ok_or(IKE_DAEMON_ERROR)
    }
}

/// Rewrites OVS-style `-vSPEC` into `--verbose=SPEC` and a bare `-v` into `--verbose`.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut seen_dashdash = false;
    args.into_iter()
        .map(|a| {
            if seen_dashdash {
                return a;
            }
            match a.to_str() {
                Some("--") => {
                    seen_dashdash = true;
                    a
                }
                Some("-v") => OsString::from("--verbose"),
                Some(s) if s.starts_with("-v") && !s.starts_with("--") => {
                    OsString::from(format!("--verbose={}", &s[2..]))
                }
                _ => a,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let v = std::iter::once("ovs-monitor-ipsec")
            .chain(args.iter().copied())
            .map(OsString::from);
        Cli::try_parse_from(normalize_args(v))
    }

    #[test]
    fn ovs_ctl_command_line_parses() {
        let c = parse(&[
            "unix:/var/run/openvswitch/db.sock",
            "--log-file=/var/log/openvswitch/ovs-monitor-ipsec.log",
            "--pidfile=/var/run/openvswitch/ovs-monitor-ipsec.pid",
            "--detach",
            "--monitor",
            "--ike-daemon=libreswan",
            "--no-restart-ike-daemon",
            "--ipsec-conf=/etc/ipsec.d/openshift.conf",
            "--root-ipsec-conf=/etc/ipsec.conf",
            "-vfile:dbg",
            "-v",
        ])
        .unwrap();
        assert_eq!(c.database, "unix:/var/run/openvswitch/db.sock");
        assert_eq!(c.backend_kind(), Ok(BackendKind::Libreswan));
        assert!(c.detach && c.monitor && c.no_restart_ike_daemon);
        assert_eq!(c.verbose, vec!["file:dbg".to_string(), String::new()]);
        assert_eq!(c.command_timeout, 120);
        assert_eq!(
            c.pidfile.as_deref(),
            Some("/var/run/openvswitch/ovs-monitor-ipsec.pid")
        );
    }

    #[test]
    fn bare_optional_flags_take_defaults() {
        let c = parse(&["unix:x", "--ike-daemon=none", "--pidfile", "--log-file"]).unwrap();
        assert_eq!(c.pidfile.as_deref(), Some(""));
        assert_eq!(c.log_file.as_deref(), Some(""));
        assert_eq!(c.backend_kind(), Ok(BackendKind::None));
    }

    #[test]
    fn bad_or_missing_ike_daemon_is_reported() {
        assert_eq!(
            parse(&["unix:x"]).unwrap().backend_kind(),
            Err(IKE_DAEMON_ERROR)
        );
        assert_eq!(
            parse(&["unix:x", "--ike-daemon=racoon"])
                .unwrap()
                .backend_kind(),
            Err(IKE_DAEMON_ERROR)
        );
    }

    #[test]
    fn strongswan_mode_and_vici_socket() {
        let c = parse(&["unix:x", "--ike-daemon=strongswan", "--root-prefix=/r"]).unwrap();
        assert_eq!(c.strongswan_mode, StrongSwanMode::Auto);
        assert_eq!(c.vici_socket(), PathBuf::from("/r/var/run/charon.vici"));
        let c = parse(&[
            "unix:x",
            "--strongswan-mode=vici",
            "--vici-socket=/tmp/c.vici",
            "--root-prefix=/r",
        ])
        .unwrap();
        assert_eq!(c.strongswan_mode, StrongSwanMode::Vici);
        assert_eq!(c.vici_socket(), PathBuf::from("/tmp/c.vici"));
        assert!(parse(&["unix:x", "--strongswan-mode=racoon"]).is_err());
    }

    #[test]
    fn metrics_flags() {
        let c = parse(&["unix:x"]).unwrap();
        assert_eq!((c.metrics, c.metrics_per_tunnel), (None, true));
        let c = parse(&[
            "unix:x",
            "--metrics=tcp:127.0.0.1:9101",
            "--metrics-per-tunnel=false",
        ])
        .unwrap();
        assert_eq!(c.metrics.unwrap().to_string(), "tcp:127.0.0.1:9101");
        assert!(!c.metrics_per_tunnel);
        assert!(parse(&["unix:x", "--metrics=http://x"]).is_err());
    }

    #[test]
    fn database_is_required() {
        assert!(parse(&["--ike-daemon=none"]).is_err());
    }
}
