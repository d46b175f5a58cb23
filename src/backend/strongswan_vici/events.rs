//! The event watcher: a second VICI connection subscribed to IKE and CHILD_SA state changes.
//!
//! Each event only says "observe again" ([`BackendEvent::StateChanged`]); a burst of events
//! (a thousand tunnels coming up) collapses into the few passes the bounded channel allows,
//! since a pass reads the whole state anyway. The same connection is how a charon restart
//! is noticed: when it closes, tunnels are re-observed (and show `down` while charon is
//! gone); when it can be opened again, [`BackendEvent::DaemonRestarted`] makes the next pass
//! reload everything.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backend::BackendEvent;
use crate::backend::vici::{Connection, ViciError};

/// The events that change a tunnel's state.
pub const EVENTS: &[&str] = &["ike-updown", "child-updown", "ike-rekey", "child-rekey"];

/// How often a lost charon is looked for.
const RECONNECT_EVERY: Duration = Duration::from_millis(250);

/// Starts the watcher; the task ends when the receiver is dropped.
pub fn spawn(socket: PathBuf, timeout: Duration) -> (mpsc::Receiver<BackendEvent>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(2);
    (rx, tokio::spawn(run(socket, timeout, tx)))
}

async fn subscribe(socket: &std::path::Path, timeout: Duration) -> Result<Connection, ViciError> {
    let mut c = Connection::connect(socket, timeout).await?;
    for e in EVENTS {
        c.register(e).await?;
    }
    Ok(c)
}

async fn run(socket: PathBuf, timeout: Duration, tx: mpsc::Sender<BackendEvent>) {
    // Set once charon was missing: the next connection means everything must be reloaded
    // (charon restarted, or came up after us).
    let mut reload_on_connect = false;
    loop {
        match subscribe(&socket, timeout).await {
            Ok(mut conn) => {
                if reload_on_connect {
                    info!(
                        "charon is back on {}: reloading every tunnel",
                        socket.display()
                    );
                    if tx.send(BackendEvent::DaemonRestarted).await.is_err() {
                        return;
                    }
                }
                while let Ok(Some((name, _))) = conn.next_event().await {
                    debug!("VICI event {name}");
                    if tx.is_closed() {
                        return;
                    }
                    // A full channel already holds a pending re-observation.
                    let _ = tx.try_send(BackendEvent::StateChanged);
                }
                warn!(
                    "lost the VICI connection to charon ({}): tunnels are down until it is back",
                    socket.display()
                );
                if tx.send(BackendEvent::StateChanged).await.is_err() {
                    return;
                }
            }
            Err(e) if !reload_on_connect => debug!("charon is not reachable: {e}"),
            Err(_) => {}
        }
        reload_on_connect = true;
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}
