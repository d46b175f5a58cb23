//! The log file destination: append-only, created 0640, reopened on `vlog/reopen` after
//! logrotate moved it away.
//!
//! A failing write (disk full, file system gone) must not stop the daemon, and must not flood
//! stderr either: the first failure is reported once, and reporting re-arms after a successful
//! write or a reopen.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct LogFile {
    path: Option<PathBuf>,
    file: Option<File>,
    failing: bool,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

impl LogFile {
    /// Opens `path` when given; no path means the file destination is not configured.
    pub fn new(path: Option<PathBuf>) -> io::Result<Self> {
        let file = path.as_deref().map(open).transpose()?;
        Ok(Self {
            path,
            file,
            failing: false,
        })
    }

    pub fn is_configured(&self) -> bool {
        self.path.is_some()
    }

    /// Opens the configured path again, creating it if it was renamed or removed.
    pub fn reopen(&mut self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Err("Logging to file not configured".to_string());
        };
        let file = open(path).map_err(|e| format!("{}: reopen failed: {e}", path.display()))?;
        self.file = Some(file);
        self.failing = false;
        Ok(())
    }

    /// Stops writing until the next [`LogFile::reopen`].
    pub fn close(&mut self) {
        self.file = None;
    }

    pub fn write_line(&mut self, line: &str) {
        let Some(file) = &mut self.file else { return };
        match file.write_all(line.as_bytes()) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                let path = self.path.as_deref().unwrap_or(Path::new("?"));
                let _ = writeln!(
                    io::stderr(),
                    "ovs-monitor-ipsec: writing to log file {} failed: {e}",
                    path.display()
                );
            }
            Err(_) => {}
        }
    }
}
