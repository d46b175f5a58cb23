//! How the memory bench measures one window of the monitor's CPU: the process CPU clock
//! ([`Cpu`]), the calls the daemon's stand-in recorded ([`Calls`]), and the pacing that puts
//! each window on a quiet monitor, clear of the periodic pass ([`Pacer`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::fake_charon::{FakeCharon, State as CharonState};
use super::common::monitor::Monitor;
use super::common::ovsdb_server::OvsdbServer;
use super::{Daemon, LIMIT, PERIOD};

/// How often the monitor's CPU, children and daemon calls are looked at.
pub(super) const POLL: Duration = Duration::from_millis(20);
/// Quiet: no child, no daemon call and no more CPU than idling takes (twice the least of
/// `IDLE_WINDOWS` such windows, at least `QUIET_NS`) for this long. An idle monitor is not
/// still: the pid file watch of stroke and Libreswan wakes it 5 times a second.
pub(super) const QUIET: Duration = Duration::from_millis(500);
pub(super) const QUIET_NS: u64 = 500_000;
pub(super) const IDLE_WINDOWS: usize = 6;

/// The monitor's CPU over one measured window.
pub(super) struct Step {
    pub(super) ms: f64,
    /// Daemon calls in the window (None for static keys).
    pub(super) calls: Option<usize>,
    /// Periodic passes that fell inside (the figure is then marked).
    pub(super) timer_passes: u64,
}

/// The monitor's CPU time, read with nanosecond resolution from its process CPU clock: all
/// its threads, including those that have exited (a blocking-pool thread ends after 10 s
/// idle; a sum over `/proc/PID/task/*/schedstat` would lose its time).
pub(super) struct Cpu {
    clock: libc::clockid_t,
    pid: u32,
}

impl Cpu {
    pub(super) fn of(pid: u32) -> Self {
        let mut clock: libc::clockid_t = 0;
        let pid_t = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: `clock` is a valid out-pointer for the call's duration.
        let rc = unsafe { libc::clock_getcpuclockid(pid_t, &mut clock) };
        assert_eq!(rc, 0, "clock_getcpuclockid({pid}) failed: errno {rc}");
        Self { clock, pid }
    }

    pub(super) fn ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer for the call's duration.
        let rc = unsafe { libc::clock_gettime(self.clock, &mut ts) };
        assert_eq!(
            rc, 0,
            "the monitor's CPU clock is unreadable (has it exited?)"
        );
        let sec = u64::try_from(ts.tv_sec).expect("CPU seconds are positive");
        let nsec = u64::try_from(ts.tv_nsec).expect("CPU nanoseconds are positive");
        sec * 1_000_000_000 + nsec
    }

    pub(super) fn ms(&self) -> f64 {
        self.ns() as f64 / 1e6
    }

    /// Whether any thread of the monitor has a child process (an `ipsec` run).
    pub(super) fn has_children(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
        })
    }
}

/// The monitor's calls to its daemon, as the daemon's stand-in recorded them.
pub(super) enum Calls {
    /// The stub `ipsec`'s log, a call a line.
    Log(PathBuf),
    /// The fake charon's record of VICI messages.
    Vici(Arc<Mutex<CharonState>>),
    /// Static keys: netlink, not counted.
    None,
}

impl Calls {
    pub(super) fn of(mode: &str, db: &OvsdbServer, daemon: &Daemon) -> Self {
        let root = db.dir().join("root");
        match mode {
            "stroke" => Calls::Log(root.join("ipsec-calls.log")),
            "libreswan" => Calls::Log(root.join("usr/sbin/state/calls.log")),
            "vici" => {
                let fake = daemon
                    .as_ref()
                    .and_then(|d| d.downcast_ref::<FakeCharon>())
                    .expect("VICI mode runs the fake charon");
                Calls::Vici(fake.state.clone())
            }
            _ => Calls::None,
        }
    }

    /// Something that moves with each call (cheap enough to poll).
    pub(super) fn mark(&self) -> u64 {
        match self {
            Calls::Log(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
            Calls::Vici(s) => s.lock().expect("the fake charon's state").calls.len() as u64,
            Calls::None => 0,
        }
    }

    pub(super) fn count(&self) -> Option<usize> {
        match self {
            Calls::Log(p) => Some(std::fs::read_to_string(p).map_or(0, |t| t.lines().count())),
            Calls::Vici(s) => Some(s.lock().expect("the fake charon's state").calls.len()),
            Calls::None => None,
        }
    }
}

/// Runs the measured windows: each on a quiet monitor and, with `wait_timer`, clear of the
/// periodic pass.
pub(super) struct Pacer<'a> {
    pub(super) mon: &'a Monitor,
    cpu: Cpu,
    calls: Calls,
    /// `ovs_ipsec_passes_total{trigger="timer"}` at the last look.
    timer: u64,
    /// When the next periodic pass is due, if known.
    due: Option<Instant>,
    /// The CPU an idle monitor takes in `QUIET` (see [`Pacer::learn_idle`]).
    idle_ns: u64,
    /// The wall time of the last step.
    last_step: Duration,
    /// Measure the periodic pass and keep the steps clear of it (the bench), or not (the
    /// smoke, which does not wait for the timer).
    pub(super) wait_timer: bool,
}

impl<'a> Pacer<'a> {
    pub(super) async fn new(mon: &'a Monitor, cpu: Cpu, calls: Calls, wait_timer: bool) -> Self {
        let mut p = Self {
            mon,
            cpu,
            calls,
            timer: 0,
            due: None,
            idle_ns: 0,
            last_step: Duration::ZERO,
            wait_timer,
        };
        p.learn_idle().await;
        p.timer_passes().await;
        p
    }

    /// Learns what the monitor's idling costs: the least CPU of `IDLE_WINDOWS` windows of
    /// `QUIET` in a row without a child or a daemon call.
    pub(super) async fn learn_idle(&mut self) {
        let deadline = Instant::now() + LIMIT;
        let mut least = Vec::new();
        while least.len() < IDLE_WINDOWS {
            assert!(
                Instant::now() < deadline,
                "the monitor is not idle after {LIMIT:?}"
            );
            let (c0, k0) = (self.cpu.ns(), self.calls.mark());
            let end = Instant::now() + QUIET;
            let mut still = true;
            while Instant::now() < end {
                tokio::time::sleep(POLL).await;
                still &= !self.cpu.has_children() && self.calls.mark() == k0;
            }
            match still {
                true => least.push(self.cpu.ns() - c0),
                false => least.clear(),
            }
        }
        let least = least.into_iter().min().unwrap_or(0);
        self.idle_ns = QUIET_NS.max(2 * least);
    }

    /// Waits until the monitor is quiet; returns its CPU then.
    pub(super) async fn quiet(&self) -> u64 {
        let deadline = Instant::now() + LIMIT;
        let mut since = (Instant::now(), self.cpu.ns(), self.calls.mark());
        loop {
            tokio::time::sleep(POLL).await;
            let (cpu, mark) = (self.cpu.ns(), self.calls.mark());
            if self.cpu.has_children() || mark != since.2 || cpu - since.1 > self.idle_ns {
                since = (Instant::now(), cpu, mark);
            } else if since.0.elapsed() >= QUIET {
                return cpu;
            }
            assert!(
                Instant::now() < deadline,
                "the monitor is not quiet after {LIMIT:?}"
            );
        }
    }

    /// Waits (up to `limit`) until the monitor is busy (a child, a daemon call, or more CPU
    /// in one `POLL` than idling takes in `QUIET`); returns when it was seen so.
    pub(super) async fn busy(&self, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        let (mut cpu, mark) = (self.cpu.ns(), self.calls.mark());
        while Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            let now = self.cpu.ns();
            if self.cpu.has_children() || self.calls.mark() != mark || now - cpu > self.idle_ns {
                return Some(Instant::now());
            }
            cpu = now;
        }
        None
    }

    /// Reads the timer's pass count (outside any window: `metrics/show` costs CPU), waits
    /// until that is over, and returns how many passes it counted since the last look.
    pub(super) async fn timer_passes(&mut self) -> u64 {
        let out = self.mon.appctl_ok(&["metrics/show"]);
        let n = out
            .lines()
            .find_map(|l| l.strip_prefix("ovs_ipsec_passes_total{trigger=\"timer\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("metrics/show counts the timer's passes") as u64;
        self.quiet().await;
        let new = n - self.timer;
        self.timer = n;
        new
    }

    /// Waits for the next periodic pass and returns its window: from the monitor quiet before
    /// it to the monitor quiet after it, with no other pass inside (else the next one).
    pub(super) async fn await_pass(&mut self) -> Step {
        loop {
            // Quiet: the last look at the timer waited for it.
            let (c0, k0) = (self.cpu.ns(), self.calls.count());
            let seen = self
                .busy(PERIOD + LIMIT)
                .await
                .expect("no periodic pass in 15 s");
            let (c1, k1) = (self.quiet().await, self.calls.count());
            match self.timer_passes().await {
                1 => {
                    self.due = Some(seen + PERIOD);
                    return Step {
                        ms: (c1 - c0) as f64 / 1e6,
                        calls: k1.zip(k0).map(|(b, a)| b - a),
                        timer_passes: 0,
                    };
                }
                n => eprintln!("memory bench: {n} periodic passes in one window, waiting again"),
            }
        }
    }

    /// One change: `change` sends it and waits for its effect; the window is from the
    /// monitor quiet before to the monitor quiet after. With `wait_timer`, it starts after a
    /// periodic pass unless the next one is due well after the step would end.
    pub(super) async fn step(&mut self, change: impl Future<Output = ()>) -> Step {
        if self.wait_timer {
            let budget = Duration::from_secs(3).max(self.last_step * 3);
            if self.due.is_none_or(|due| Instant::now() + budget > due) {
                self.await_pass().await;
            }
        }
        let started = Instant::now();
        // Quiet: the last look at the timer waited for it.
        let (c0, k0) = (self.cpu.ns(), self.calls.count());
        change.await;
        // A removal is not written back: if the monitor has not moved yet, give it time to
        // start on it.
        if self.cpu.ns() - c0 <= self.idle_ns {
            let _ = self.busy(Duration::from_secs(2)).await;
        }
        let (c1, k1) = (self.quiet().await, self.calls.count());
        self.last_step = started.elapsed();
        let timer_passes = self.timer_passes().await;
        if timer_passes > 0 {
            self.due = None;
        }
        Step {
            ms: (c1 - c0) as f64 / 1e6,
            calls: k1.zip(k0).map(|(b, a)| b - a),
            timer_passes,
        }
    }
}
