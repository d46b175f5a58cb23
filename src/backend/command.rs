//! External commands (`ipsec`, `certutil`, `nft`, ...) with a time limit.
//!
//! The Python monitor's lessons: a hung `ipsec --start` must not block the daemon forever
//! (Libreswan 4.5–4.15), a failure must be logged with its command line, and a known-harmless
//! stderr line must not count as a failure. Command lines never carry secrets by design: PSKs
//! go to files or sockets, never to argv. stdin may carry secrets, so it is never logged.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::memfd::{MFdFlags, memfd_create};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

#[derive(Debug, Error)]
pub enum CommandError {
    #[error("cannot run {cmdline}: {source}")]
    Spawn {
        cmdline: String,
        source: std::io::Error,
    },
    #[error("Timed out after {secs} seconds trying to {what}.")]
    Timeout { what: String, secs: u64 },
    #[error("failed to {what} (exit code {code}): {stderr}")]
    Failed {
        what: String,
        code: i32,
        stderr: String,
    },
}

/// How a command ended, for the `ovs_ipsec_external_commands_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CmdResult {
    Ok,
    /// It could not be started or exited non-zero.
    Failed,
    Timeout,
}

impl CmdResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }
}

/// Commands run by this process, by program name (`ipsec`, `certutil`, ...) and result. A
/// process-wide tally: commands run deep inside every backend, and a count is all that
/// leaves this module.
static RUNS: Mutex<BTreeMap<(String, CmdResult), u64>> = Mutex::new(BTreeMap::new());

/// How many commands ran, by (program name, result).
pub fn runs() -> BTreeMap<(String, CmdResult), u64> {
    RUNS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A command to run: program, arguments, what it is for (for logs), and its time limit.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<String>,
    what: String,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
    ignore_stderr: Vec<String>,
    /// Collect stdout in memory (see [`Cmd::collect_stdout`]) instead of a pipe.
    collected: bool,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    pub code: i32,
    pub stdout: String,
    /// stderr with the ignored lines removed.
    pub stderr: String,
}

impl Cmd {
    /// `what` completes "trying to ..." and "Failed to ...", e.g. "restart the IKE daemon".
    pub fn new(program: impl Into<PathBuf>, what: impl Into<String>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            what: what.into(),
            timeout,
            stdin: None,
            ignore_stderr: Vec::new(),
            collected: false,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Bytes for the child's stdin; never logged.
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// stderr lines containing `pattern` are dropped (known-harmless warnings).
    pub fn ignore_stderr(mut self, pattern: impl Into<String>) -> Self {
        self.ignore_stderr.push(pattern.into());
        self
    }

    /// The child's stdout goes to an anonymous in-memory file, read once the child exited.
    /// For long outputs written a line at a time (pluto's status, relayed by `whack`): read
    /// through a pipe, each line woke the daemon once, which cost more CPU than parsing them.
    pub fn collect_stdout(mut self) -> Self {
        self.collected = true;
        self
    }

    /// The command line as it is logged.
    pub fn cmdline(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command. A timeout kills the child. Completion with any exit code is `Ok`;
    /// see [`Cmd::run_checked`] for "must succeed".
    pub async fn run(&self) -> Result<CmdOutput, CommandError> {
        let out = self.run_uncounted().await;
        let result = match &out {
            Ok(o) if o.code == 0 => CmdResult::Ok,
            Err(CommandError::Timeout { .. }) => CmdResult::Timeout,
            _ => CmdResult::Failed,
        };
        let name = self.program.file_name().map_or_else(
            || self.program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        *RUNS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name, result))
            .or_default() += 1;
        out
    }

    async fn run_uncounted(&self) -> Result<CmdOutput, CommandError> {
        debug!("Running {}", self.cmdline());
        let spawn_error = |source| CommandError::Spawn {
            cmdline: self.cmdline(),
            source,
        };
        let memfile = match self.collected {
            true => Some(std::fs::File::from(
                memfd_create("command-stdout", MFdFlags::MFD_CLOEXEC)
                    .map_err(|e| spawn_error(e.into()))?,
            )),
            false => None,
        };
        let stdout = match &memfile {
            Some(f) => Stdio::from(f.try_clone().map_err(spawn_error)?),
            None => Stdio::piped(),
        };
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(bytes), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            // A child that exits without reading its stdin is not our error; its exit code says.
            let _ = pipe.write_all(bytes).await;
        }
        let mut out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(source)) => {
                return Err(CommandError::Spawn {
                    cmdline: self.cmdline(),
                    source,
                });
            }
            Err(_) => {
                let e = CommandError::Timeout {
                    what: self.what.clone(),
                    secs: self.timeout.as_secs(),
                };
                warn!("{e}");
                return Err(e);
            }
        };
        if let Some(mut f) = memfile {
            // Memory, not a disk: reading it does not block.
            f.seek(SeekFrom::Start(0))
                .and_then(|_| f.read_to_end(&mut out.stdout))
                .map_err(spawn_error)?;
        }
        let stderr = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !self.ignore_stderr.iter().any(|p| l.contains(p.as_str())))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(CmdOutput {
            // A child killed by a signal reports no code; 128+signal is the shell's convention.
            code: out.status.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap_or(0)
            }),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }

    /// Runs the command and treats a non-zero exit, or stderr output that is not ignored, as
    /// a failure, logged as the Python monitor logs it.
    pub async fn run_checked(&self) -> Result<CmdOutput, CommandError> {
        let out = self.run().await?;
        if out.code == 0 && out.stderr.trim().is_empty() {
            return Ok(out);
        }
        warn!("Failed to {}; exit code: {}", self.what, out.code);
        warn!("cmdline: {}", self.cmdline());
        warn!("stderr: {:?}", out.stderr);
        warn!("stdout: {:?}", out.stdout);
        Err(CommandError::Failed {
            what: self.what.clone(),
            code: out.code,
            stderr: out.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Cmd {
        Cmd::new("/bin/sh", "run a test script", Duration::from_secs(5))
            .arg("-c")
            .arg(script)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn captures_output_and_exit_code() {
        let out = sh("echo out; echo err >&2; exit 3").run().await.unwrap();
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (3, "out\n", "err")
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn collected_stdout_is_the_same_output() {
        let script = "for i in 1 2 3; do echo line $i; done; echo err >&2; exit 2";
        let piped = sh(script).run().await.unwrap();
        let collected = sh(script).collect_stdout().run().await.unwrap();
        assert_eq!(collected, piped);
        assert_eq!(collected.stdout, "line 1\nline 2\nline 3\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn timeout_kills_and_reports_the_ovs_message() {
        let cmd = Cmd::new("/bin/sleep", "wait for pluto", Duration::from_millis(200)).arg("30");
        let start = std::time::Instant::now();
        let err = cmd.run().await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.to_string(),
            "Timed out after 0 seconds trying to wait for pluto."
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ignored_stderr_is_not_a_failure() {
        let cmd = sh("echo 'conn x: overriding auto=route with auto=add' >&2")
            .ignore_stderr("overriding auto=route");
        assert!(cmd.run_checked().await.is_ok());
        assert!(sh("echo boom >&2").run_checked().await.is_err());
        assert!(sh("exit 1").run_checked().await.is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stdin_reaches_the_child() {
        let out = sh("cat").stdin(b"secret".to_vec()).run().await.unwrap();
        assert_eq!(out.stdout, "secret");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_are_counted_by_program_and_result() {
        let count = |r| runs().get(&("sh".to_string(), r)).copied().unwrap_or(0);
        let (ok, failed) = (count(CmdResult::Ok), count(CmdResult::Failed));
        sh("exit 0").run().await.unwrap();
        sh("exit 4").run().await.unwrap();
        // Other tests run commands in parallel: at least ours were counted.
        assert!(count(CmdResult::Ok) > ok);
        assert!(count(CmdResult::Failed) > failed);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missing_program_is_a_spawn_error() {
        let err = Cmd::new("/nonexistent/ipsec", "x", Duration::from_secs(1))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err}");
    }
}
