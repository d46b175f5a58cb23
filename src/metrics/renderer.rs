//! One encoding of the exposition at a time, shared by every request that wants it.
//!
//! A body is O(series): ~175 kB at 1,000 tunnels, ~1.75 MB at 10,000. If every scrape (and
//! `metrics/show`) encoded its own, a burst of concurrent scrapes would hold as many
//! body-sized buffers at once as there are requests, on as many blocking-pool threads (each
//! with its own allocator arena). Here a single thread (`metrics-render`, started on first
//! use) encodes one snapshot at a time; per format there is at most one render queued or in
//! flight, and a request arriving while one of its format is queued or in flight waits for it
//! and gets that render's body (the same [`Bytes`], not a copy). A request of the other format
//! starts the next render, which waits its turn.
//!
//! The event loop still builds the snapshot between passes ([`Renderer::start`]); the HTTP
//! endpoint subscribes first ([`Renderer::subscribe`]) and asks the loop for a snapshot only
//! when no render of its format is pending.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::exposition::{Format, render_into};
use super::families::Snapshot;

/// Who waits for a body.
enum Waiter {
    /// A scrape: the shared body, written by the HTTP endpoint.
    Http(oneshot::Sender<Result<Bytes, String>>),
    /// `metrics/show`: the control server's text reply.
    Text(oneshot::Sender<Result<String, String>>),
}

impl Waiter {
    fn send(self, body: Result<&Bytes, &str>) {
        // A requester that went away (deadline, closed socket) needs nothing.
        match self {
            Waiter::Http(tx) => {
                let _ = tx.send(body.cloned().map_err(str::to_owned));
            }
            Waiter::Text(tx) => {
                let text = body.map(|b| String::from_utf8_lossy(b).into_owned());
                let _ = tx.send(text.map_err(str::to_owned));
            }
        }
    }
}

/// The requests of one format.
#[derive(Default)]
struct Slot {
    /// Waiting for the render queued or in flight, or for the next one.
    waiters: Vec<Waiter>,
    /// A render of this format has been handed to the thread and has not delivered yet.
    queued: bool,
}

#[derive(Default)]
struct Slots([Slot; 2]);

impl Slots {
    fn of(&mut self, format: Format) -> &mut Slot {
        match format {
            Format::Prometheus => &mut self.0[0],
            Format::OpenMetrics => &mut self.0[1],
        }
    }
}

struct Job {
    format: Format,
    snapshot: Snapshot,
}

/// The shared render queue; clones are handles to the same one.
#[derive(Clone, Default)]
pub struct Renderer {
    slots: Arc<Mutex<Slots>>,
    /// The render thread's queue, once started. Dropping the last handle ends the thread.
    jobs: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (plain pushes and flag flips).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Renderer {
    /// A scrape of `format`: the receiver gets the body of the render queued or in flight, or
    /// of the next one. The flag says that no render of `format` is pending, so the caller
    /// must have the event loop [`start`](Self::start) one.
    pub fn subscribe(&self, format: Format) -> (oneshot::Receiver<Result<Bytes, String>>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut slots = lock(&self.slots);
        let slot = slots.of(format);
        slot.waiters.push(Waiter::Http(tx));
        (rx, !slot.queued)
    }

    /// `metrics/show`: `reply` gets the text of the pending render of `format`, or of a new
    /// one of `snapshot()`.
    pub fn show(
        &self,
        format: Format,
        reply: oneshot::Sender<Result<String, String>>,
        snapshot: impl FnOnce() -> Snapshot,
    ) {
        lock(&self.slots)
            .of(format)
            .waiters
            .push(Waiter::Text(reply));
        self.start(format, snapshot);
    }

    /// Renders `snapshot()` in `format` for the waiters, unless a render of that format is
    /// already pending (it serves them) or nobody waits (an earlier render served them).
    pub fn start(&self, format: Format, snapshot: impl FnOnce() -> Snapshot) {
        {
            let mut slots = lock(&self.slots);
            let slot = slots.of(format);
            if slot.queued || slot.waiters.is_empty() {
                return;
            }
            // Before the job exists, so that its delivery cannot come first.
            slot.queued = true;
        }
        let job = Job {
            format,
            snapshot: snapshot(),
        };
        if let Err(e) = self.send(job) {
            let e = format!("cannot render the metrics: {e}");
            let mut slots = lock(&self.slots);
            let slot = slots.of(format);
            slot.queued = false;
            std::mem::take(&mut slot.waiters)
                .into_iter()
                .for_each(|w| w.send(Err(&e)));
        }
    }

    fn send(&self, job: Job) -> Result<(), std::io::Error> {
        let mut jobs = lock(&self.jobs);
        let job = match jobs.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                // The thread is gone (it cannot be, short of a panic): start another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel();
        let slots = Arc::clone(&self.slots);
        std::thread::Builder::new()
            .name("metrics-render".into())
            .spawn(move || render_loop(&rx, &slots))?;
        let sent = tx
            .send(job)
            .map_err(|_| std::io::Error::other("render thread ended"));
        *jobs = Some(tx);
        sent
    }
}

/// The render thread: one job at a time, each body sized from the last one of its format.
fn render_loop(jobs: &mpsc::Receiver<Job>, slots: &Mutex<Slots>) {
    let mut last_len = [0usize; 2];
    while let Ok(Job { format, snapshot }) = jobs.recv() {
        let i = usize::from(format == Format::OpenMetrics);
        let mut out = String::with_capacity(last_len[i] + last_len[i] / 16);
        render_into(snapshot, format, &mut out);
        last_len[i] = out.len();
        let body = Bytes::from(out);
        // Requests that joined up to here get this body; later ones start the next render.
        let waiters = {
            let mut slots = lock(slots);
            let slot = slots.of(format);
            slot.queued = false;
            std::mem::take(&mut slot.waiters)
        };
        waiters.into_iter().for_each(|w| w.send(Ok(&body)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::metrics::{Metrics, View};
    use std::collections::BTreeMap;

    fn snapshot() -> Snapshot {
        let empty = BTreeMap::new();
        let (live, errors, alerts) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        Metrics::new(BackendKind::None, true).snapshot(&View {
            tunnels: &empty,
            live: &live,
            apply_errors: &errors,
            cert_alerts: &alerts,
            backend_error: false,
        })
    }

    #[test]
    fn requests_of_a_format_share_one_render_and_formats_take_turns() {
        let r = Renderer::default();
        let mut built = 0;
        let mut build = || {
            built += 1;
            snapshot()
        };
        // Both scrapes come before the loop starts the render: one render serves both.
        let (a, start_a) = r.subscribe(Format::Prometheus);
        let (b, start_b) = r.subscribe(Format::Prometheus);
        assert!(start_a && start_b, "nothing was pending");
        r.start(Format::Prometheus, &mut build);
        // The second request's start finds the render pending, or its waiters served.
        r.start(Format::Prometheus, &mut build);
        let (om, start_om) = r.subscribe(Format::OpenMetrics);
        assert!(
            start_om,
            "a render of the other format serves no OpenMetrics scrape"
        );
        r.start(Format::OpenMetrics, &mut build);
        let (a, b) = (
            a.blocking_recv().unwrap().unwrap(),
            b.blocking_recv().unwrap().unwrap(),
        );
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same body, not a copy");
        assert!(a.starts_with(b"# HELP ") && !a.ends_with(b"# EOF\n"));
        let om = om.blocking_recv().unwrap().unwrap();
        assert!(om.ends_with(b"# EOF\n"));
        assert_eq!(built, 2);
        // metrics/show gets text through the same queue.
        let (tx, rx) = oneshot::channel();
        r.show(Format::Prometheus, tx, snapshot);
        assert!(rx.blocking_recv().unwrap().unwrap().starts_with("# HELP "));
    }
}
