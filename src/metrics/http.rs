//! The `--metrics` endpoint: HTTP/1 with hyper on the daemon's runtime, `GET /metrics` only.
//!
//! A scrape waits for a body from the [`Renderer`]: the render of its format already pending,
//! or one it asks the event loop to start (with a snapshot taken between passes, as for
//! `metrics/show`); then it only writes finished bytes. Each connection serves one request and has a
//! deadline for all of it ([`CONNECTION_DEADLINE`]), headers included, and at most
//! [`MAX_CONNECTIONS`] are served at once: a slow or half-open client costs a socket until its
//! deadline, never a pass.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use super::Format;
use super::renderer::Renderer;
use crate::control::{AppCommand, ControlRequest};

/// Longest a connection may take, from accept to the last byte of the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest a scrape waits for the event loop (which answers between passes).
const ANSWER_DEADLINE: Duration = Duration::from_secs(8);

/// Where `--metrics` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            return addr.parse().map(Listen::Tcp).map_err(|_| {
                format!("{s}: expected tcp:IP:PORT (an IPv6 address in brackets: tcp:[::1]:9100)")
            });
        }
        match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(Listen::Unix(PathBuf::from(p))),
            _ => Err(format!("{s}: expected tcp:IP:PORT or unix:PATH")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {listen}: {source}")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
    #[error("cannot listen for metrics on {0}: the path exists and is not a socket")]
    NotSocket(String),
}

/// A bound endpoint; [`Endpoint::run`] serves it.
#[derive(Debug)]
pub enum Endpoint {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

/// Binds `listen`; must run inside the runtime. A leftover socket file (from a crash) at a
/// `unix:` path is replaced; any other file there is an error.
pub fn bind(listen: &Listen) -> Result<Endpoint, MetricsError> {
    let err = |source| MetricsError::Bind {
        listen: listen.to_string(),
        source,
    };
    match listen {
        Listen::Tcp(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            Ok(Endpoint::Tcp(
                tokio::net::TcpListener::from_std(l).map_err(err)?,
            ))
        }
        Listen::Unix(path) => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => {
                    std::fs::remove_file(path).map_err(err)?;
                }
                Ok(_) => return Err(MetricsError::NotSocket(listen.to_string())),
                Err(_) => {}
            }
            let l = tokio::net::UnixListener::bind(path).map_err(err)?;
            Ok(Endpoint::Unix(l, path.clone()))
        }
    }
}

impl Endpoint {
    /// Serves scrapes until the task is dropped; `requests` reaches the event loop.
    pub async fn run(self, requests: mpsc::Sender<ControlRequest>, renderer: Renderer) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let accepted = match &self {
                Endpoint::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
                Endpoint::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
            };
            match accepted {
                Ok(Conn::Tcp(s)) => spawn_conn(s, (requests.clone(), renderer.clone()), slot),
                Ok(Conn::Unix(s)) => spawn_conn(s, (requests.clone(), renderer.clone()), slot),
                Err(e) => {
                    warn!("metrics: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Endpoint::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Where a scrape's body comes from: the event loop (which starts renders) and the renderer.
type Source = (mpsc::Sender<ControlRequest>, Renderer);

fn spawn_conn<S>(stream: S, source: Source, slot: tokio::sync::OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| answer(req, source.clone()));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(CONNECTION_DEADLINE)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("metrics: connection ended: {e}"),
            Err(_) => debug!("metrics: connection closed after {CONNECTION_DEADLINE:?}"),
        }
        drop(slot);
    });
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn answer(
    req: Request<Incoming>,
    (requests, renderer): Source,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "Not found: try /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "Use GET\n"));
    }
    let format = Format::from_accept(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
    let unavailable = |why: &str| reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n"));
    const GONE: &str = "the monitor is shutting down";
    let (body, start) = renderer.subscribe(format);
    let body = async move {
        if start {
            let (tx, rx) = oneshot::channel();
            // Only `exit` waits for its reply to be written; a scrape's is sent by this task.
            let (_written, written) = oneshot::channel();
            let request = ControlRequest {
                command: AppCommand::MetricsShow {
                    openmetrics: format == Format::OpenMetrics,
                    scrape: true,
                },
                reply: tx,
                written,
            };
            requests.send(request).await.map_err(|_| GONE.to_owned())?;
            // The loop acknowledges once the render is queued (or says why not).
            rx.await.map_err(|_| GONE.to_owned())??;
        }
        body.await.map_err(|_| GONE.to_owned())?
    };
    Ok(match tokio::time::timeout(ANSWER_DEADLINE, body).await {
        Ok(Ok(body)) => reply(StatusCode::OK, format.content_type(), body),
        Ok(Err(e)) => unavailable(&e),
        Err(_) => unavailable("the monitor is busy; try again"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "tcp:127.0.0.1:9100".parse::<Listen>(),
            Ok(Listen::Tcp("127.0.0.1:9100".parse().unwrap()))
        );
        assert_eq!(
            "tcp:[::1]:9100".parse::<Listen>(),
            Ok(Listen::Tcp("[::1]:9100".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/m.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/m.sock".into()))
        );
        for bad in ["tcp:9100", "udp:1.2.3.4:5", "unix:", "127.0.0.1:9100"] {
            assert!(bad.parse::<Listen>().is_err(), "{bad}");
        }
    }
}
