//! The unixctl command table and argument checking, with OVS's error texts.
//!
//! Like OVS's unixctl registry, every command has a usage string and an argument count range
//! that is checked before the command runs, so `ovs-appctl` users get the same messages as
//! from any other OVS daemon. Commands are split in two: the ones the server answers itself
//! ([`Command`] other than `App`), and [`AppCommand`]s that only the main loop can answer.

use tokio::sync::oneshot;

/// A command the daemon's main loop answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCommand {
    /// `diagnose [INTERFACE] [--json]`: read-only, per-layer findings (see `diagnose`).
    Diagnose {
        interface: Option<String>,
        json: bool,
    },
    /// `tunnels/show [--json]`.
    TunnelsShow { json: bool },
    /// `refresh`: observe and reconcile now.
    Refresh,
    /// `metrics/show` (Prometheus text 0.0.4, with the kernel's SA counters read now), and
    /// each `--metrics` scrape (`scrape`: from the periodic kernel observation; OpenMetrics
    /// when the scraper asks for it).
    MetricsShow { openmetrics: bool, scrape: bool },
    /// `exit [--no-cleanup]`: with cleanup, remove everything the monitor created first.
    Exit { cleanup: bool },
}

/// An [`AppCommand`] and where to send its reply text (`Err` is an error reply).
#[derive(Debug)]
pub struct ControlRequest {
    pub command: AppCommand,
    pub reply: oneshot::Sender<Result<String, String>>,
    /// Resolves (with an error: the server drops its end) once the reply has been written to
    /// the requester's socket or cannot be; a main loop that exits after replying waits for it
    /// so that `ovs-appctl exit` gets its answer.
    pub written: oneshot::Receiver<()>,
}

/// A parsed, argument-checked command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `list-commands` and `help`.
    ListCommands,
    Version,
    VlogList,
    VlogSet(Vec<String>),
    VlogReopen,
    VlogClose,
    App(AppCommand),
}

/// One row of the command table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub min_args: usize,
    pub max_args: usize,
}

const fn spec(name: &'static str, usage: &'static str, min: usize, max: usize) -> CommandSpec {
    CommandSpec {
        name,
        usage,
        min_args: min,
        max_args: max,
    }
}

/// Every command, sorted by name (the order `list-commands` prints).
pub const COMMANDS: &[CommandSpec] = &[
    spec("diagnose", "[INTERFACE] [--json]", 0, 2),
    spec("exit", "[--no-cleanup]", 0, 1),
    spec("help", "", 0, 0),
    spec("list-commands", "", 0, 0),
    spec("metrics/show", "", 0, 0),
    spec("refresh", "", 0, 0),
    spec("tunnels/show", "[--json]", 0, 1),
    spec("version", "", 0, 0),
    spec("vlog/close", "", 0, 0),
    spec("vlog/list", "", 0, 0),
    spec("vlog/reopen", "", 0, 0),
    spec("vlog/set", "spec", 1, usize::MAX),
];

/// The `list-commands` / `help` reply.
pub fn help_text() -> String {
    let mut out = String::from("The available commands are:\n");
    for c in COMMANDS {
        out.push_str(&format!("  {:<23} {}\n", c.name, c.usage));
    }
    out
}

/// Looks `method` up, checks the argument count and parses the arguments.
pub fn parse(method: &str, args: &[String]) -> Result<Command, String> {
    let Some(spec) = COMMANDS.iter().find(|c| c.name == method) else {
        return Err(format!(
            "\"{method}\" is not a valid command (use \"list-commands\" to see a list of valid commands)"
        ));
    };
    if args.len() < spec.min_args {
        return Err(format!(
            "\"{method}\" command requires at least {} arguments",
            spec.min_args
        ));
    }
    if args.len() > spec.max_args {
        return Err(format!(
            "\"{method}\" command takes at most {} arguments",
            spec.max_args
        ));
    }
    let flag = |name: &str| match args.first() {
        None => Ok(false),
        Some(a) if a == name => Ok(true),
        Some(a) => Err(format!("unrecognized parameter: {a}")),
    };
    Ok(match method {
        "help" | "list-commands" => Command::ListCommands,
        "version" => Command::Version,
        "vlog/list" => Command::VlogList,
        "vlog/set" => Command::VlogSet(args.to_vec()),
        "vlog/reopen" => Command::VlogReopen,
        "vlog/close" => Command::VlogClose,
        "refresh" => Command::App(AppCommand::Refresh),
        "metrics/show" => Command::App(AppCommand::MetricsShow {
            openmetrics: false,
            scrape: false,
        }),
        "tunnels/show" => Command::App(AppCommand::TunnelsShow {
            json: flag("--json")?,
        }),
        "diagnose" => diagnose(args)?,
        _ => Command::App(AppCommand::Exit {
            cleanup: !flag("--no-cleanup")?,
        }),
    })
}

/// `diagnose [INTERFACE] [--json]`, the two in either order.
fn diagnose(args: &[String]) -> Result<Command, String> {
    let mut interface = None;
    let mut json = false;
    for a in args {
        if a == "--json" && !json {
            json = true;
        } else if a.starts_with('-') || interface.is_some() {
            return Err(format!("unrecognized parameter: {a}"));
        } else {
            interface = Some(a.clone());
        }
    }
    Ok(Command::App(AppCommand::Diagnose { interface, json }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: &str, args: &[&str]) -> Result<Command, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(method, &args)
    }

    #[test]
    fn table_is_sorted_and_every_name_parses() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        for c in COMMANDS {
            let args = vec!["spec".to_string(); c.min_args];
            assert!(parse(c.name, &args).is_ok(), "{}", c.name);
        }
    }

    #[test]
    fn app_commands_and_flags() {
        assert_eq!(
            p("exit", &[]),
            Ok(Command::App(AppCommand::Exit { cleanup: true }))
        );
        assert_eq!(
            p("exit", &["--no-cleanup"]),
            Ok(Command::App(AppCommand::Exit { cleanup: false }))
        );
        assert_eq!(
            p("exit", &["--bogus"]),
            Err("unrecognized parameter: --bogus".into())
        );
        assert_eq!(
            p("tunnels/show", &["--json"]),
            Ok(Command::App(AppCommand::TunnelsShow { json: true }))
        );
    }

    #[test]
    fn diagnose_takes_an_interface_and_json_in_any_order() {
        let d = |interface: Option<&str>, json| {
            Ok(Command::App(AppCommand::Diagnose {
                interface: interface.map(str::to_owned),
                json,
            }))
        };
        assert_eq!(p("diagnose", &[]), d(None, false));
        assert_eq!(p("diagnose", &["tun0", "--json"]), d(Some("tun0"), true));
        assert_eq!(p("diagnose", &["--json", "tun0"]), d(Some("tun0"), true));
        assert_eq!(
            p("diagnose", &["a", "b"]),
            Err("unrecognized parameter: b".into())
        );
        assert_eq!(
            p("diagnose", &["--jsn"]),
            Err("unrecognized parameter: --jsn".into())
        );
    }

    #[test]
    fn ovs_error_texts() {
        assert_eq!(
            p("nope", &[]),
            Err("\"nope\" is not a valid command (use \"list-commands\" to see a list of valid commands)".into())
        );
        assert_eq!(
            p("version", &["x"]),
            Err("\"version\" command takes at most 0 arguments".into())
        );
        assert_eq!(
            p("vlog/set", &[]),
            Err("\"vlog/set\" command requires at least 1 arguments".into())
        );
    }

    #[test]
    fn help_lists_commands_with_usage() {
        let h = help_text();
        assert!(h.starts_with("The available commands are:\n"));
        assert!(h.contains("\n  exit                    [--no-cleanup]\n"));
        assert_eq!(h.lines().count(), COMMANDS.len() + 1);
    }
}
