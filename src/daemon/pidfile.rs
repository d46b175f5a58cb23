//! The pidfile, locked the way OVS tools expect.
//!
//! `ovs-appctl -t ovs-monitor-ipsec` and `ovs-ctl` trust a pidfile only while a POSIX record
//! lock (`fcntl`, not `flock`) is held on it by the process whose pid it names: they probe
//! with `F_GETLK` and call an unlocked file stale. So the daemon writes its pid into a
//! private temporary file, write-locks it, and renames it over the final name: readers never
//! see a half-written or unlocked pidfile. The open file is kept for the life of the
//! [`Pidfile`]: POSIX locks die with the process (so a crash leaves a stale file, never a
//! falsely live one) and also when *any* descriptor of the file is closed by the process,
//! hence the single owner.
//!
//! A lock is never inherited by `fork`, so the pidfile must be created by the worker process,
//! after [`super::daemonize`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PidfileError {
    #[error("{}: already running as pid {pid}", path.display())]
    AlreadyRunning { path: PathBuf, pid: i32 },
    #[error("{}: pidfile is stale (no process holds its lock)", path.display())]
    Stale { path: PathBuf },
    #[error("{}: pidfile does not hold a process id", path.display())]
    Malformed { path: PathBuf },
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

impl PidfileError {
    fn io(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { path, op, source }
    }
}

/// A created, locked pidfile; dropping it removes the file.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    /// Holds the lock; must stay open as long as the pidfile exists.
    file: File,
}

impl Pidfile {
    /// Writes our pid to `path`, locked. Fails with [`PidfileError::AlreadyRunning`] when a
    /// live process holds `path`, unless `overwrite`; a stale file is replaced.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self, PidfileError> {
        if !overwrite {
            match read_pid(path) {
                Ok(pid) => {
                    return Err(PidfileError::AlreadyRunning {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
                Err(PidfileError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound => {}
                Err(PidfileError::Stale { .. } | PidfileError::Malformed { .. }) => {}
                Err(e) => return Err(e),
            }
        }

        let pid = std::process::id();
        // Per-pid temporary name: two daemons starting at once cannot clobber each other's.
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp{pid}"));
        let tmp = PathBuf::from(tmp_name);

        let result = write_locked(&tmp, pid).and_then(|file| {
            std::fs::rename(&tmp, path).map_err(PidfileError::io(path, "rename pidfile"))?;
            Ok(Pidfile {
                path: path.to_path_buf(),
                file,
            })
        });
        if result.is_err() {
            // Best effort: the error we return matters more than a leftover temporary file.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Remove the file only if it is still ours: with --overwrite-pidfile another daemon
        // may have renamed its own pidfile over this name since.
        let ours = match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(on_disk), Ok(held)) => on_disk.dev() == held.dev() && on_disk.ino() == held.ino(),
            _ => false,
        };
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("{}: cannot remove pidfile: {e}", self.path.display());
        }
    }
}

/// Creates `tmp` holding `pid`, write-locked by this process.
fn write_locked(tmp: &Path, pid: u32) -> Result<File, PidfileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(PidfileError::io(tmp, "create pidfile"))?;
    fcntl(file.as_fd(), FcntlArg::F_SETLK(&whole_file(libc::F_WRLCK)))
        .map_err(|e| PidfileError::io(tmp, "lock pidfile")(e.into()))?;
    file.write_all(format!("{pid}\n").as_bytes())
        .map_err(PidfileError::io(tmp, "write pidfile"))?;
    Ok(file)
}

/// The pid of the live daemon named by `path`, checked as `ovs-appctl` checks it: the file
/// must be write-locked, by the very process it names.
///
/// Only for other processes (our control client, a second daemon starting up): a process
/// cannot see its own locks, and closing the descriptor opened here would even release the
/// lock of a [`Pidfile`] this process holds on the same file.
pub fn read_pid(path: &Path) -> Result<i32, PidfileError> {
    let mut file = File::open(path).map_err(PidfileError::io(path, "open pidfile"))?;
    let mut probe = whole_file(libc::F_WRLCK);
    fcntl(file.as_fd(), FcntlArg::F_GETLK(&mut probe))
        .map_err(|e: Errno| PidfileError::io(path, "probe pidfile lock")(e.into()))?;
    let stale = || PidfileError::Stale {
        path: path.to_path_buf(),
    };
    if i32::from(probe.l_type) == libc::F_UNLCK {
        return Err(stale());
    }

    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(PidfileError::io(path, "read pidfile"))?;
    let pid: i32 =
        text.trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| PidfileError::Malformed {
                path: path.to_path_buf(),
            })?;
    // Locked by someone else than the pid inside: that process is replacing a stale file.
    if probe.l_pid != pid {
        return Err(stale());
    }
    Ok(pid)
}

/// A lock description covering the whole file.
fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        // The constants are tiny (0..=2); `c_short` is what the kernel ABI stores them in.
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_writes_our_pid_and_drop_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let pidfile = Pidfile::create(&path, false).unwrap();
        assert_eq!(pidfile.path(), path);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(pidfile);
        assert!(!path.exists());
    }

    #[test]
    fn unlocked_or_garbage_files_are_not_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        std::fs::write(&path, "12345\n").unwrap();
        assert!(matches!(read_pid(&path), Err(PidfileError::Stale { .. })));
        let missing = read_pid(&dir.path().join("none.pid")).unwrap_err();
        assert!(
            matches!(missing, PidfileError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        // A stale file is replaced without --overwrite-pidfile.
        let pidfile = Pidfile::create(&path, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(pidfile.path()).unwrap().trim(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn drop_leaves_a_file_that_another_daemon_took_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let first = Pidfile::create(&path, false).unwrap();
        let second = Pidfile::create(&path, true).unwrap();
        drop(first);
        assert!(path.exists(), "the newer daemon's pidfile must survive");
        drop(second);
        assert!(!path.exists());
    }
}
