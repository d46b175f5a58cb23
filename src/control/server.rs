//! The unixctl server: JSON-RPC 1.0 over a unix socket, as the real `ovs-appctl` speaks it.
//!
//! Each connection is served by its own task and may send any number of requests; a request
//! is answered before the next one is read, and a connection that sends something that is
//! not a JSON-RPC request is closed without affecting the others. Built-in commands are
//! answered here; [`AppCommand`]s go to the daemon's main loop over an mpsc channel and the
//! reply comes back on a oneshot, so a main loop that has gone away yields an error reply
//! rather than a hang.
//!
//! The socket is bound under a temporary name, restricted to its owner (root drives the
//! daemon) and then renamed over the final path, so it is never reachable with looser
//! permissions and a stale socket from a dead process is replaced atomically. A path held by
//! a live server, or by something that is not a socket, is left alone. The file is removed
//! when the server (or its `run` future) is dropped, unless someone else replaced it.

use std::convert::Infallible;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::ControlError;
use super::commands::{self, AppCommand, Command, ControlRequest};
use crate::jsonrpc::Message;
use crate::jsonrpc::codec::Framer;
use crate::logging::LogHandle;

/// Requests larger than this are not unixctl requests; the connection is closed.
const MAX_REQUEST: usize = 1 << 20;

/// Requests the main loop has not picked up yet before senders wait.
const QUEUE: usize = 16;

/// The bound control socket; run it with [`ControlServer::run`].
#[derive(Debug)]
pub struct ControlServer {
    listener: StdListener,
    socket: SocketFile,
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) log: LogHandle,
    pub(crate) tx: mpsc::Sender<ControlRequest>,
}

/// Binds the control socket at `path`. The receiver yields the commands the main loop must
/// answer.
pub fn bind(
    path: &Path,
    log: LogHandle,
) -> Result<(ControlServer, mpsc::Receiver<ControlRequest>), ControlError> {
    let err = |what: &'static str| {
        move |source| ControlError::Socket {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    check_existing(path)?;
    let tmp = temp_path(path);
    // A leftover from a crashed bind with the same pid; absence is the normal case.
    let _ = fs::remove_file(&tmp);
    let listener = StdListener::bind(&tmp).map_err(err("bind"))?;
    let prepared = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
        .and_then(|()| listener.set_nonblocking(true))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = prepared {
        let _ = fs::remove_file(&tmp);
        return Err(err("set up")(e));
    }
    let meta = fs::symlink_metadata(path).map_err(err("stat"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let server = ControlServer {
        listener,
        socket: SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
        shared: Arc::new(Shared { log, tx }),
    };
    Ok((server, rx))
}

impl ControlServer {
    /// Another way in for [`AppCommand`]s (the metrics endpoint's scrapes).
    pub fn requests(&self) -> mpsc::Sender<ControlRequest> {
        self.shared.tx.clone()
    }
}

/// Refuses a path that is not a socket or that a live server answers on.
fn check_existing(path: &Path) -> Result<(), ControlError> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if !m.file_type().is_socket() => Err(ControlError::NotSocket(path.to_path_buf())),
        Ok(_) => match StdStream::connect(path) {
            Ok(_) => Err(ControlError::InUse(path.to_path_buf())),
            Err(_) => Ok(()),
        },
    }
}

/// A short name in the same directory (rename must not cross file systems, and socket paths
/// are limited to 107 bytes).
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{}.{n}.tmp", std::process::id()))
}

impl ControlServer {
    /// The socket path clients connect to.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Accepts and serves connections until dropped; returns only if the socket cannot be
    /// registered with the runtime. Must run inside a tokio runtime with I/O enabled.
    pub async fn run(self) -> Result<Infallible, ControlError> {
        let ControlServer {
            listener,
            socket,
            shared,
        } = self;
        let listener = UnixListener::from_std(listener).map_err(|source| ControlError::Socket {
            path: socket.path.clone(),
            what: "register",
            source,
        })?;
        // Dropping this future drops the JoinSet (aborting every connection) and the socket.
        let _socket = socket;
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(serve(stream, Arc::clone(&shared)));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("control socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }
}

/// Serves one connection until EOF or a protocol violation.
pub(crate) async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin, shared: Arc<Shared>) {
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 4096];
    let mut unanswered = 0usize;
    loop {
        loop {
            let value = match framer.next_value() {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("control connection closed: {e}");
                    return;
                }
            };
            unanswered = 0;
            let Some((reply, written)) = answer(value, &shared).await else {
                tracing::debug!("control connection closed: not a JSON-RPC request");
                return;
            };
            let sent = stream.write_all(&reply.to_bytes()).await;
            // The main loop may be waiting for this reply to leave before it exits.
            drop(written);
            if sent.is_err() {
                return;
            }
        }
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        unanswered += n;
        if unanswered > MAX_REQUEST {
            tracing::debug!("control connection closed: request larger than {MAX_REQUEST} bytes");
            return;
        }
        framer.push(buf.get(..n).unwrap_or_default());
    }
}

/// Dropped once a main loop's reply has been written (or cannot be): see
/// [`ControlRequest::written`].
type Written = Option<oneshot::Sender<()>>;

/// The reply to one message; `None` when it is not a request.
async fn answer(value: Value, shared: &Shared) -> Option<(Message, Written)> {
    let Ok(Message::Request { method, params, id }) = Message::from_value(value) else {
        return None;
    };
    let args: Option<Vec<String>> = params
        .into_iter()
        .map(|p| match p {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect();
    let (outcome, written) = match args {
        Some(args) => execute(&method, &args, shared).await,
        None => (
            Err(format!("\"{method}\" command has non-string argument")),
            None,
        ),
    };
    let reply = match outcome {
        Ok(text) => Message::Reply {
            result: Value::String(with_newline(text)),
            id,
        },
        Err(text) => Message::Error {
            error: Value::String(with_newline(text)),
            id,
        },
    };
    Some((reply, written))
}

/// `ovs-appctl` prints replies as they are; like OVS, end non-empty ones with a newline.
fn with_newline(mut text: String) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

async fn execute(
    method: &str,
    args: &[String],
    shared: &Shared,
) -> (Result<String, String>, Written) {
    let log = &shared.log;
    let command = match commands::parse(method, args) {
        Ok(command) => command,
        Err(e) => return (Err(e), None),
    };
    let outcome = match command {
        Command::ListCommands => Ok(commands::help_text()),
        // ovs-ctl's stop_daemon sends "exit" only when the last word of this line is a
        // version >= 2.5.90 (otherwise it falls back to SIGTERM, skipping the cleanup).
        Command::Version => Ok(format!(
            "ovs-monitor-ipsec (Rust) {} for Open vSwitch 3.1+",
            env!("CARGO_PKG_VERSION")
        )),
        Command::VlogList => Ok(log.list()),
        Command::VlogSet(specs) => specs
            .iter()
            .try_for_each(|s| log.set(s))
            .map(|()| String::new()),
        Command::VlogReopen => log.reopen().map(|()| String::new()),
        Command::VlogClose => {
            log.close();
            Ok(String::new())
        }
        Command::App(command) => {
            let (outcome, written) = forward(command, &shared.tx).await;
            return (outcome, Some(written));
        }
    };
    (outcome, None)
}

/// Hands `command` to the main loop and waits for its answer; the returned sender is to be
/// dropped once the answer is written.
async fn forward(
    command: AppCommand,
    tx: &mpsc::Sender<ControlRequest>,
) -> (Result<String, String>, oneshot::Sender<()>) {
    let gone = || "ovs-monitor-ipsec is not running its main loop (shutting down?)".to_string();
    let (reply, rx) = oneshot::channel();
    let (written, written_rx) = oneshot::channel();
    let request = ControlRequest {
        command,
        reply,
        written: written_rx,
    };
    if tx.send(request).await.is_err() {
        return (Err(gone()), written);
    }
    let outcome = rx.await.unwrap_or_else(|_| Err(gone()));
    (outcome, written)
}

/// The socket file, removed on drop if it is still the one this server created.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}
