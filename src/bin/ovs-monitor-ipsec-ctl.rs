//! `ovs-monitor-ipsec-ctl`: sends one command to the monitor's control socket, for hosts
//! without `ovs-appctl`. Same targets, output and exit codes as `ovs-appctl`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ovs_monitor_ipsec::control::client;

/// Sends COMMAND to a running ovs-monitor-ipsec and prints its reply.
///
/// TARGET is a socket path if it contains a '/'; otherwise the process ID is read from
/// $OVS_RUNDIR/TARGET.pid (OVS_RUNDIR defaults to /var/run/openvswitch) and the socket is
/// $OVS_RUNDIR/TARGET.<pid>.ctl. Use the command "list-commands" to see every command, e.g.
/// "tunnels/show [--json]", "diagnose [INTERFACE] [--json]", "refresh", "vlog/set ovsdb:file:dbg", "exit [--no-cleanup]".
///
/// Exit status: 0 on success; 1 if the daemon cannot be reached; 2 if it answered with an
/// error (printed on stderr).
#[derive(Debug, Parser)]
#[command(name = "ovs-monitor-ipsec-ctl", version, verbatim_doc_comment)]
struct Args {
    /// Daemon name or control socket path.
    #[arg(short = 't', long, value_name = "TARGET", default_value = client::DEFAULT_TARGET)]
    target: String,

    /// Give up after SECS seconds (0: wait forever).
    #[arg(short = 'T', long, value_name = "SECS", default_value_t = 0)]
    timeout: u64,

    /// The command, e.g. tunnels/show.
    command: String,

    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

const NAME: &str = "ovs-monitor-ipsec-ctl";

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let reply = client::socket_path(&args.target, &client::rundir())
        .and_then(|path| client::call(&path, &args.command, &args.args, timeout));
    match reply {
        Ok(Ok(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Err(text)) => {
            let _ = std::io::stderr().write_all(text.as_bytes());
            eprintln!("{NAME}: {}: server returned an error", args.target);
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{NAME}: {e}");
            ExitCode::from(1)
        }
    }
}
