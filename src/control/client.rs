//! The client side of the control socket, for `ovs-monitor-ipsec-ctl`.
//!
//! Targets resolve like `ovs-appctl -t`: a target containing `/` is a socket path; otherwise
//! `$OVS_RUNDIR/<target>.pid` names the process and the socket is
//! `$OVS_RUNDIR/<target>.<pid>.ctl`. One exchange is blocking and synchronous: a one-shot CLI
//! has nothing to overlap, and this keeps the binary free of a runtime.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

use crate::jsonrpc::Message;
use crate::jsonrpc::codec::Framer;

/// The daemon `-t` names when not given.
pub const DEFAULT_TARGET: &str = "ovs-monitor-ipsec";

/// OVS's run directory when `$OVS_RUNDIR` is unset.
pub const DEFAULT_RUNDIR: &str = "/var/run/openvswitch";

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot read pidfile \"{}\": {source}", path.display())]
    Pidfile { path: PathBuf, source: io::Error },
    #[error("pidfile \"{}\" does not contain a process ID", .0.display())]
    BadPidfile(PathBuf),
    #[error("cannot connect to \"{}\": {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("transaction with \"{}\" failed: {detail}", path.display())]
    Transaction { path: PathBuf, detail: String },
}

/// `$OVS_RUNDIR`, or [`DEFAULT_RUNDIR`].
pub fn rundir() -> PathBuf {
    std::env::var_os("OVS_RUNDIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_RUNDIR), PathBuf::from)
}

/// The socket path for `target`; see the module documentation.
pub fn socket_path(target: &str, rundir: &Path) -> Result<PathBuf, ClientError> {
    if target.contains('/') {
        return Ok(PathBuf::from(target));
    }
    let pidfile = rundir.join(format!("{target}.pid"));
    let text = std::fs::read_to_string(&pidfile).map_err(|source| ClientError::Pidfile {
        path: pidfile.clone(),
        source,
    })?;
    let pid: u32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ClientError::BadPidfile(pidfile))?;
    Ok(rundir.join(format!("{target}.{pid}.ctl")))
}

/// Sends one command and waits for its reply: `Ok(Ok(text))` for a result, `Ok(Err(text))`
/// for an error reply. `timeout` bounds the whole exchange.
pub fn call(
    path: &Path,
    method: &str,
    args: &[String],
    timeout: Option<Duration>,
) -> Result<Result<String, String>, ClientError> {
    let failed = |detail: String| ClientError::Transaction {
        path: path.to_path_buf(),
        detail,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let params = args.iter().map(|a| json!(a)).collect();
    let request = Message::request(method, params, json!(0));
    set_timeouts(&stream, deadline).map_err(|e| failed(e.to_string()))?;
    stream
        .write_all(&request.to_bytes())
        .map_err(|e| failed(e.to_string()))?;

    let mut framer = Framer::new();
    let mut buf = [0u8; 4096];
    let value = loop {
        if let Some(v) = framer.next_value().map_err(|e| failed(e.to_string()))? {
            break v;
        }
        set_timeouts(&stream, deadline).map_err(|e| failed(e.to_string()))?;
        let n = stream.read(&mut buf).map_err(|e| failed(e.to_string()))?;
        if n == 0 {
            return Err(failed("connection closed before the reply".into()));
        }
        framer.push(buf.get(..n).unwrap_or_default());
    };
    match Message::from_value(value).map_err(|e| failed(e.to_string()))? {
        Message::Reply { result, .. } => Ok(Ok(text_of(result))),
        Message::Error { error, .. } => Ok(Err(text_of(error))),
        _ => Err(failed(
            "the server sent a request instead of a reply".into(),
        )),
    }
}

/// Sets both socket timeouts to the time left before `deadline`.
fn set_timeouts(stream: &UnixStream, deadline: Option<Instant>) -> io::Result<()> {
    let left = match deadline {
        None => None,
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Some(left),
            _ => return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
        },
    };
    stream.set_read_timeout(left)?;
    stream.set_write_timeout(left)
}

/// unixctl replies are strings; anything else is shown as JSON.
fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_targets_are_used_as_is() {
        let p = socket_path("/run/x/y.ctl", Path::new("/nonexistent")).unwrap();
        assert_eq!(p, PathBuf::from("/run/x/y.ctl"));
    }

    #[test]
    fn name_targets_go_through_the_pidfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mon.pid"), "4242\n").unwrap();
        assert_eq!(
            socket_path("mon", dir.path()).unwrap(),
            dir.path().join("mon.4242.ctl")
        );
        std::fs::write(dir.path().join("bad.pid"), "zero\n").unwrap();
        assert!(matches!(
            socket_path("bad", dir.path()),
            Err(ClientError::BadPidfile(_))
        ));
        assert!(matches!(
            socket_path("missing", dir.path()),
            Err(ClientError::Pidfile { .. })
        ));
    }
}
