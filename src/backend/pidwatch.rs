//! Noticing an IKE daemon's death and return between passes, from its pid file.
//!
//! With stroke and Libreswan the monitor has no connection to the daemon that stays open
//! (every call is a short `ipsec` command), so without this a killed charon or pluto is
//! noticed only by the next periodic pass (up to 15 s), and its connections are loaded again
//! into a restarted one only by the pass after. Both daemons write their pid to a file
//! (`pluto.pid` beside `pluto.ctl`, charon's `charon.pid` in its run directory); a task reads
//! it five times a second and checks that the process exists. A change of the running pid
//! (gone, back, another one) is a [`BackendEvent`]: gone is `StateChanged` (the pass that follows
//! fails to observe and says so in every tunnel's status), a new pid is `DaemonRestarted` (the
//! pass loads every connection into it). A pid that cannot be checked (no pid file, the
//! daemon in another pid namespace) stays silent: the periodic pass still covers it. VICI
//! needs none of this: its socket closes when charon dies.
//!
//! A new pid counts only once the daemon answers: pluto writes its pid file before it creates
//! its control socket, and a pass run in between would find it not answering and leave every
//! connection unloaded until the next periodic pass. So the watch may name the daemon's
//! socket: a new pid counts once that socket is another file (inode and time) than the one
//! the watch last saw, the killed daemon's (which stays behind until the new daemon replaces
//! it). Connecting to it would be a surer test, but pluto logs a connection that sends no
//! request as an error; timestamps do not order the two files (pluto creates its pid file
//! first and may fill it after binding its socket, within one clock tick). charon writes its
//! pid file after loading its plugins (the stroke socket among them), so stroke needs no
//! socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::backend::BackendEvent;

/// How often the pid file is read (a read and a signal 0: nothing next to a pass).
pub const PERIOD: Duration = Duration::from_millis(200);

/// The running pid the file at `path` names, if any: the file parses and the process
/// exists (signal 0 reaches it, or it exists but belongs to someone else) and has not
/// exited. A killed daemon stays a zombie until its parent reaps it, which for a daemon (its
/// parent is init, or a container's init) may take seconds; it has exited once its main
/// thread is a zombie and no other thread is left (until the last thread is gone, its
/// sockets may still answer).
pub fn running(path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return None,
    }
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) if exited(&status) => None,
        _ => Some(pid),
    }
}

/// Whether a `/proc/PID/status` text describes a process that has exited: state zombie
/// (`Z`) or dead (`X`), and at most one thread (the zombie main thread) left.
fn exited(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let zombie = field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X'));
    let threads = field("Threads:").and_then(|t| t.parse::<u32>().ok());
    zombie && threads.is_some_and(|t| t <= 1)
}

/// Which file a path names: its inode and modification time (an inode number freed by the
/// old socket may be reused by the new one; their times differ).
type FileId = (u64, std::time::SystemTime);

/// The [`FileId`] of the file at `path`, if there is one.
fn identity(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?))
}

/// Which pid counts as running: `pid` (from [`running`]) if it is the one already known
/// (`last`), or if the daemon has no socket to wait for (`sock` is `None`), or if its
/// socket is there (`Some(Some(_))`) and is not the file `seen` with the previous daemon.
fn accepted(
    pid: Option<i32>,
    last: Option<i32>,
    sock: Option<Option<FileId>>,
    seen: Option<FileId>,
) -> Option<i32> {
    pid.filter(|p| {
        Some(*p) == last
            || match sock {
                None => true,
                Some(now) => now.is_some() && now != seen,
            }
    })
}

/// The event a change from `before` to `now` is, if any.
pub fn change(before: Option<i32>, now: Option<i32>) -> Option<BackendEvent> {
    match (before, now) {
        (a, b) if a == b => None,
        (_, Some(_)) => Some(BackendEvent::DaemonRestarted),
        (Some(_), None) => Some(BackendEvent::StateChanged),
        (None, None) => None,
    }
}

/// What the watch logs when the daemon's process is gone (after "DAEMON (pid N)").
pub const EXITED: &str = "has exited";

/// Starts the task that watches `daemon`'s pid file at `path` (and, for a new pid, its
/// `socket`) every `period`; the receiver gets its events. The task logs each change itself,
/// at once: a pass under way when the daemon dies delays the event's pass, not the
/// operator's news. The task ends when the receiver is dropped.
pub fn spawn(
    daemon: &'static str,
    path: PathBuf,
    socket: Option<PathBuf>,
    period: Duration,
) -> mpsc::Receiver<BackendEvent> {
    let (tx, rx) = mpsc::channel(4);
    let sock_id = move || socket.as_deref().map(identity);
    let mut last = running(&path);
    // The socket file that belongs to `last` (or, with no daemon, the one left behind).
    let mut seen = sock_id().flatten();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A new pid waits until the daemon answers (see the module docs).
            let sock = sock_id();
            let now = accepted(running(&path), last, sock, seen);
            if now.is_some() && now != last {
                seen = sock.flatten();
            }
            match (last, now) {
                (Some(old), None) => warn!("{daemon} (pid {old}) {EXITED}"),
                (Some(old), Some(new)) if old != new => {
                    // Gone and back between two looks (a busy event loop).
                    warn!("{daemon} (pid {old}) {EXITED}");
                    info!("{daemon} is running (pid {new})");
                }
                (None, Some(new)) => info!("{daemon} is running (pid {new})"),
                _ => {}
            }
            if let Some(ev) = change(last, now)
                && tx.send(ev).await.is_err()
            {
                return;
            }
            last = now;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> i32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_running_pid_is_read_a_dead_or_missing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("daemon.pid");
        assert_eq!(running(&f), None);
        std::fs::write(&f, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running(&f), Some(std::process::id() as i32));
        std::fs::write(&f, format!("{}\n", dead_pid())).unwrap();
        assert_eq!(running(&f), None);
        std::fs::write(&f, "garbage").unwrap();
        assert_eq!(running(&f), None);
    }

    #[test]
    fn death_is_a_state_change_a_new_pid_a_restart() {
        assert_eq!(change(Some(5), Some(5)), None);
        assert_eq!(change(None, None), None);
        assert_eq!(change(Some(5), None), Some(BackendEvent::StateChanged));
        assert_eq!(change(None, Some(6)), Some(BackendEvent::DaemonRestarted));
        assert_eq!(
            change(Some(5), Some(6)),
            Some(BackendEvent::DaemonRestarted)
        );
    }

    /// Found by the fault-injection soak (tests/chaos): a pluto (and a charon under stroke)
    /// killed with SIGKILL was noticed only by the next periodic pass, up to 15 s later, and
    /// its connections loaded again into the restarted one only by the pass after that.
    #[tokio::test]
    async fn the_watch_reports_a_killed_and_a_restarted_daemon_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("daemon.pid");
        let sock = dir.path().join("daemon.ctl");
        std::fs::write(&f, format!("{}\n", std::process::id())).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mut rx = spawn(
            "pluto",
            f.clone(),
            Some(sock.clone()),
            Duration::from_millis(20),
        );
        let limit = Duration::from_secs(10);
        // Killed: the pid file stays, naming a process that is gone, and so does its socket.
        std::fs::write(&f, format!("{}\n", dead_pid())).unwrap();
        drop(listener);
        let ev = tokio::time::timeout(limit, rx.recv()).await.unwrap();
        assert_eq!(ev, Some(BackendEvent::StateChanged));
        // A new pid, and only the stale socket file of the dead one: no restart until the
        // new daemon has created its own.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, format!("{}\n", std::process::id())).unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(
            early.is_err(),
            "a restart reported before the socket: {early:?}"
        );
        std::fs::remove_file(&sock).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let ev = tokio::time::timeout(limit, rx.recv()).await.unwrap();
        assert_eq!(ev, Some(BackendEvent::DaemonRestarted));
    }

    #[test]
    fn a_zombie_is_not_running_once_its_last_thread_is_gone() {
        assert!(exited("Name:\tcharon\nState:\tZ (zombie)\nThreads:\t1\n"));
        assert!(exited("State:\tX (dead)\nThreads:\t0\n"));
        // The main thread has exited, others still run: its sockets may still answer.
        assert!(!exited("State:\tZ (zombie)\nThreads:\t16\n"));
        assert!(!exited(
            "Name:\tcharon\nState:\tS (sleeping)\nThreads:\t16\n"
        ));
        assert!(!exited("garbage"));
        // A real zombie: a child that exited and is not reaped yet.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("daemon.pid");
        let mut c = std::process::Command::new("true").spawn().unwrap();
        std::fs::write(&f, format!("{}\n", c.id())).unwrap();
        let zombie =
            |p: u32| std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| exited(&s));
        let start = std::time::Instant::now();
        while !zombie(c.id()) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(zombie(c.id()), "the child did not become a zombie");
        assert_eq!(running(&f), None);
        c.wait().unwrap();
    }

    #[test]
    fn a_new_pid_counts_once_its_socket_is_not_the_old_one() {
        let t0 = std::time::SystemTime::UNIX_EPOCH;
        let t1 = t0 + Duration::from_secs(1);
        let old = Some((7, t0));
        // No socket to wait for (stroke): any running pid.
        assert_eq!(accepted(Some(9), Some(5), None, old), Some(9));
        // The known pid stays accepted whatever its socket.
        assert_eq!(accepted(Some(5), Some(5), Some(None), old), Some(5));
        // A new pid: not while its socket is missing or the old file, even with the old
        // inode number; yes once it is a new file.
        assert_eq!(accepted(Some(9), None, Some(None), old), None);
        assert_eq!(accepted(Some(9), None, Some(old), old), None);
        assert_eq!(accepted(Some(9), None, Some(Some((7, t1))), old), Some(9));
        assert_eq!(accepted(Some(9), None, Some(Some((8, t0))), old), Some(9));
        assert_eq!(accepted(None, Some(5), Some(old), old), None);
    }
}
