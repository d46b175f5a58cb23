//! The client handle and its connection task.
//!
//! One task per [`Client`] owns the connection and runs OVS's reconnect cycle:
//! connect → `get_schema` → monitor (newest method the server knows) → full resync → follow
//! updates, until the connection drops; then back off and start again with the next remote.
//! Handles share the replica behind a mutex that is only held for a synchronous read or for
//! applying one decoded update, never across an `.await`. A full resync builds the new replica
//! aside and swaps it in, so a reader sees either the old or the new content, never a gap; while
//! disconnected the replica keeps its last content. The task ends when every handle is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::error::OvsdbError;
use super::monitor::{
    MONITOR_ID, MonitorMethod, MonitorReply, SinceResult, Update3Params, UpdateParams,
};
use super::remote::Remote;
use super::replica::{Changes, Replica};
use super::schema::{MonitoredTable, Schema};
use super::session::{Incoming, Session, decode_params, decode_result};
use super::transact;
use super::transport::{self, TlsFiles};
use super::updates::{RowUpdate, RowUpdate2, TableUpdates, Updates};

/// What to monitor in one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub table: String,
    /// Columns to monitor; those missing from the schema are skipped with a warning. Empty
    /// means every column.
    pub columns: Vec<String>,
    /// Clauses for `monitor_cond(_since)`, OR-ed by the server (see [`monitor::any_of`]).
    /// Ignored by plain `monitor`, so readers must filter rows themselves as well.
    pub conditions: Option<Vec<Value>>,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Tried in turn, one per connection attempt.
    pub remotes: Vec<Remote>,
    /// Needed for `ssl:` remotes.
    pub tls: Option<TlsFiles>,
    pub database: String,
    pub tables: Vec<TableSpec>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Silence after which we send an `echo`, and then drop the connection if another
    /// interval passes silently; also bounds connecting. Zero disables both.
    pub inactivity_probe: Duration,
}

impl ClientConfig {
    /// OVS's defaults: back off from 1 s to 8 s, probe after 15 s of silence.
    pub fn new(remotes: Vec<Remote>, database: impl Into<String>, tables: Vec<TableSpec>) -> Self {
        ClientConfig {
            remotes,
            tls: None,
            database: database.into(),
            tables,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            inactivity_probe: Duration::from_secs(15),
        }
    }
}

/// Connection news, in the order things happen.
#[derive(Debug, Clone, PartialEq)]
pub enum DbEvent {
    /// The monitor is set up and the replica holds the server's content (a `Changed` follows).
    Connected {
        remote: String,
        method: MonitorMethod,
    },
    /// The replica changed: an update or a resync was applied.
    Changed,
    /// An established connection was lost; the replica keeps its last content.
    Disconnected { reason: String },
    /// An attempt to connect failed before the monitor was set up (server down, TLS refused,
    /// no such database...); the client tries again after its back-off.
    ConnectFailed { remote: String, reason: String },
}

#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<TxnRequest>,
}

struct Shared {
    replica: Mutex<Replica>,
    connected: AtomicBool,
    database: String,
}

type TxnResult = Result<Vec<Value>, OvsdbError>;

struct TxnRequest {
    /// The serialised params (see [`transact::params`]).
    params: Vec<u8>,
    reply: oneshot::Sender<TxnResult>,
}

impl Client {
    /// Spawns the connection task on the current tokio runtime (the daemon uses a
    /// current_thread runtime).
    pub fn spawn(config: ClientConfig) -> (Client, mpsc::UnboundedReceiver<DbEvent>) {
        let shared = Arc::new(Shared {
            replica: Mutex::new(Replica::default()),
            connected: AtomicBool::new(false),
            database: config.database.clone(),
        });
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let task = Task {
            config,
            shared: shared.clone(),
            requests: requests_rx,
            events,
            last_txn_id: None,
        };
        tokio::spawn(task.run());
        (Client { shared, requests }, events_rx)
    }

    /// Read access to the replica; `Changed` is sent after every applied update or resync.
    pub fn with_replica<R>(&self, f: impl FnOnce(&Replica) -> R) -> R {
        // Nothing panics while holding the lock, but a poisoned replica is still readable.
        f(&self
            .shared
            .replica
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Read access to the replica with the rows changed since the previous call (see
    /// [`Replica::take_changes`]). For the one reader that keeps derived state in step (the
    /// daemon's model): a second such reader would take the first one's changes.
    pub fn with_changes<R>(&self, f: impl FnOnce(&Replica, Changes) -> R) -> R {
        let mut replica = self
            .shared
            .replica
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changes = replica.take_changes();
        f(&replica, changes)
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Sends `["<database>", ops...]`, serialised here straight from `ops`. Fails if not
    /// connected, on disconnect while pending, on a JSON-RPC error, or when any operation
    /// result carries an "error".
    pub async fn transact<T: Serialize>(&self, ops: Vec<T>) -> TxnResult {
        if !self.is_connected() {
            return Err(OvsdbError::NotConnected);
        }
        let params = transact::params(&self.shared.database, &ops)?;
        drop(ops);
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(TxnRequest { params, reply })
            .map_err(|_| OvsdbError::NotConnected)?;
        rx.await.unwrap_or(Err(OvsdbError::NotConnected))
    }
}

/// Exponential backoff; zero right after an established connection drops, as OVS does.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = Duration::ZERO;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).clamp(self.min, self.max.max(self.min));
        delay
    }
}

/// How a connection attempt ended.
enum Outcome {
    /// Every client handle is gone: stop.
    Stopped,
    /// Failed before the monitor was running.
    Failed(OvsdbError),
    /// An established connection was lost.
    Dropped(OvsdbError),
}

struct Task {
    config: ClientConfig,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedReceiver<TxnRequest>,
    events: mpsc::UnboundedSender<DbEvent>,
    /// The transaction our replica reflects, for `monitor_cond_since` after a reconnect.
    last_txn_id: Option<String>,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let remotes = self.config.remotes.clone();
        if remotes.is_empty() {
            tracing::error!("no OVSDB remote configured");
            return;
        }
        for remote in remotes.iter().cycle() {
            tracing::info!("{remote}: connecting...");
            match self.connection(remote, &mut backoff).await {
                Outcome::Stopped => return,
                Outcome::Failed(e) => {
                    tracing::info!("{remote}: connection attempt failed ({e})");
                    self.emit(DbEvent::ConnectFailed {
                        remote: remote.to_string(),
                        reason: e.to_string(),
                    });
                }
                Outcome::Dropped(e) => {
                    tracing::info!("{remote}: connection dropped ({e})");
                    self.shared.connected.store(false, Ordering::SeqCst);
                    self.emit(DbEvent::Disconnected {
                        reason: e.to_string(),
                    });
                }
            }
            let delay = backoff.next_delay();
            if !delay.is_zero() {
                tracing::info!("{remote}: waiting {delay:?} before reconnect");
            }
            if !self.idle(delay).await {
                return;
            }
        }
    }

    /// Waits `delay`, failing transactions that raced with the disconnect. False when every
    /// client handle is gone.
    async fn idle(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                req = self.requests.recv() => match req {
                    Some(req) => {
                        let _ = req.reply.send(Err(OvsdbError::NotConnected));
                    }
                    None => return false,
                },
            }
        }
    }

    fn emit(&self, event: DbEvent) {
        // The daemon may not listen for events (a transact-only user); that is fine.
        let _ = self.events.send(event);
    }

    async fn connection(&mut self, remote: &Remote, backoff: &mut Backoff) -> Outcome {
        let mut session = match self.establish(remote).await {
            Ok(s) => s,
            Err(e) => {
                self.forget_txn_after(&e);
                return Outcome::Failed(e);
            }
        };
        backoff.reset();
        match self.follow(&mut session).await {
            Ok(()) => Outcome::Stopped,
            Err(e) => {
                self.forget_txn_after(&e);
                Outcome::Dropped(e)
            }
        }
    }

    /// After bad data from the server, our replica may not match any transaction id: ask for
    /// everything next time instead of a difference.
    fn forget_txn_after(&mut self, e: &OvsdbError) {
        if matches!(e, OvsdbError::Protocol { .. }) {
            self.last_txn_id = None;
        }
    }

    /// Connects, sets up the monitor and resyncs; then announces the connection.
    async fn establish(&mut self, remote: &Remote) -> Result<Session, OvsdbError> {
        let probe = self.config.inactivity_probe;
        let connect = transport::connect(remote, self.config.tls.as_ref());
        let stream = if probe.is_zero() {
            connect.await?
        } else {
            tokio::time::timeout(probe, connect)
                .await
                .map_err(|_| OvsdbError::ConnectTimeout(probe))??
        };
        tracing::info!("{remote}: connected");
        let mut session = Session::new(stream, probe);
        let db = self.config.database.clone();
        let schema = match session
            .call::<Value>("get_schema", vec![Value::String(db)])
            .await?
        {
            Ok(v) => Schema::from_json(&v)?,
            Err(e) => return Err(rpc_error("get_schema", &e)),
        };
        let tables = schema.restrict(&self.config.tables);
        let (method, reply) = self.monitor(&mut session, &tables).await?;
        self.resync(reply, &schema);
        self.shared.connected.store(true, Ordering::SeqCst);
        self.emit(DbEvent::Connected {
            remote: remote.to_string(),
            method,
        });
        self.emit(DbEvent::Changed);
        Ok(session)
    }

    /// Sends the newest monitor request, falling back on "unknown method".
    async fn monitor(
        &self,
        session: &mut Session,
        tables: &[MonitoredTable],
    ) -> Result<(MonitorMethod, MonitorReply), OvsdbError> {
        let mut method = MonitorMethod::MonitorCondSince;
        loop {
            let params = method.params(&self.config.database, tables, self.last_txn_id.as_deref());
            let name = method.as_str();
            // Each flavour's result is decoded straight into its typed rows.
            let reply = match method {
                MonitorMethod::MonitorCondSince => session
                    .call::<SinceResult>(name, params)
                    .await?
                    .map(|(found, txn, updates)| MonitorReply {
                        found,
                        last_txn_id: Some(txn),
                        updates: Updates::Diffs(updates),
                    }),
                MonitorMethod::MonitorCond => session
                    .call::<TableUpdates<RowUpdate2>>(name, params)
                    .await?
                    .map(|updates| unconditional(Updates::Diffs(updates))),
                MonitorMethod::Monitor => session
                    .call::<TableUpdates<RowUpdate>>(name, params)
                    .await?
                    .map(|updates| unconditional(Updates::Rows(updates))),
            };
            match reply {
                Ok(reply) => return Ok((method, reply)),
                Err(e) => match method.fallback(&e) {
                    Some(next) => {
                        tracing::debug!("server does not know {method}; trying {next}");
                        method = next;
                    }
                    None => return Err(rpc_error(name, &e)),
                },
            }
        }
    }

    /// Brings the replica in line with a monitor reply: the diff on top of what we kept when
    /// the server found our transaction id, otherwise a new replica swapped in whole.
    fn resync(&mut self, reply: MonitorReply, schema: &Schema) {
        if reply.found {
            self.lock().apply(reply.updates);
        } else {
            let mut fresh = Replica::new(schema.scalars());
            fresh.apply(reply.updates);
            *self.lock() = fresh;
        }
        self.last_txn_id = reply.last_txn_id;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Replica> {
        self.shared
            .replica
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows updates and runs transactions until the connection fails (`Err`) or every
    /// client handle is gone (`Ok`).
    async fn follow(&mut self, session: &mut Session) -> Result<(), OvsdbError> {
        let mut pending: HashMap<u64, oneshot::Sender<TxnResult>> = HashMap::new();
        loop {
            while let Some(msg) = session.take_message().await? {
                self.dispatch(msg, &mut pending)?;
            }
            let quiet = session.silence();
            tokio::select! {
                r = session.read_more() => r?,
                () = quiet => session.on_silence().await?,
                req = self.requests.recv() => {
                    let Some(TxnRequest { params, reply }) = req else {
                        return Ok(());
                    };
                    let id = session.request_raw("transact", &params).await?;
                    pending.insert(id, reply);
                }
            }
        }
    }

    fn dispatch(
        &mut self,
        msg: Incoming,
        pending: &mut HashMap<u64, oneshot::Sender<TxnResult>>,
    ) -> Result<(), OvsdbError> {
        match msg {
            Incoming::Update { method, frame } => self.notification(&method, &frame),
            Incoming::Reply { id, error, frame } => {
                if let Some(tx) = id.as_u64().and_then(|id| pending.remove(&id)) {
                    let result = match error {
                        Some(e) => Err(rpc_error("transact", &e)),
                        None => decode_result(&frame).and_then(transact::check_result),
                    };
                    let _ = tx.send(result);
                }
                Ok(())
            }
            Incoming::Notify { method } => {
                tracing::debug!("ignoring unknown notification {method:?}");
                Ok(())
            }
        }
    }

    /// Applies an update notification, decoded from its bytes straight into typed rows.
    fn notification(&mut self, method: &str, frame: &[u8]) -> Result<(), OvsdbError> {
        let Update {
            monitor,
            txn,
            updates,
        } = decode_update(method, frame)?;
        if monitor.as_str() != Some(MONITOR_ID) {
            tracing::debug!("ignoring {method:?} notification not for our monitor");
            return Ok(());
        }
        self.lock().apply(updates);
        if let Some(txn) = txn {
            self.last_txn_id = Some(txn);
        }
        self.emit(DbEvent::Changed);
        Ok(())
    }
}

/// An update notification, decoded.
pub(crate) struct Update {
    pub monitor: Value,
    /// `update3` only: the transaction the update brings the replica to.
    pub txn: Option<String>,
    pub updates: Updates,
}

/// Decodes the params of an `update3`, `update2` or (any other `method`) `update`
/// notification from its bytes straight into typed rows.
pub(crate) fn decode_update(method: &str, frame: &[u8]) -> Result<Update, OvsdbError> {
    Ok(match method {
        "update3" => {
            let (monitor, txn, u): Update3Params = decode_params("update3", frame)?;
            Update {
                monitor,
                txn: Some(txn),
                updates: Updates::Diffs(u),
            }
        }
        "update2" => {
            let (monitor, u): UpdateParams<RowUpdate2> = decode_params("update2", frame)?;
            Update {
                monitor,
                txn: None,
                updates: Updates::Diffs(u),
            }
        }
        _ => {
            let (monitor, u): UpdateParams<RowUpdate> = decode_params("update", frame)?;
            Update {
                monitor,
                txn: None,
                updates: Updates::Rows(u),
            }
        }
    })
}

/// A reply of a method without transaction ids: a whole new replica.
fn unconditional(updates: Updates) -> MonitorReply {
    MonitorReply {
        found: false,
        last_txn_id: None,
        updates,
    }
}

fn rpc_error(method: &str, error: &Value) -> OvsdbError {
    OvsdbError::Rpc {
        method: method.to_owned(),
        error: error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_restarts_at_zero() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let secs: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 8, 8]);
        b.reset();
        let secs: Vec<u64> = (0..3).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2]);
    }
}
