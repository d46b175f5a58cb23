//! [`LogHandle`]: the shared level table and log file behind the layer, and the operations
//! `vlog/list`, `vlog/set`, `vlog/reopen` and `vlog/close` perform on them.
//!
//! Levels live in atomics so the per-event check is a few relaxed loads; only the file write
//! takes a lock.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::file::LogFile;
use super::format;
use super::spec::{self, Destination, Level, MODULES};
use super::{LogConfig, LogError};

type Row = [AtomicU8; 3];

#[derive(Debug)]
struct Inner {
    levels: Vec<Row>,
    seq: AtomicU64,
    syslog_attached: AtomicBool,
    /// Fixed at start-up: `vlog/close` pauses the file, it does not unconfigure it.
    file_configured: bool,
    file: Mutex<LogFile>,
}

/// Cheap to clone; every clone controls the same table and file.
#[derive(Debug, Clone)]
pub struct LogHandle {
    inner: Arc<Inner>,
}

fn default_level(d: Destination) -> Level {
    match d {
        Destination::Console | Destination::File => Level::Info,
        Destination::Syslog => Level::Off,
    }
}

impl LogHandle {
    /// Builds the table with OVS's defaults, applies `cfg.specs` in order and opens the log
    /// file. Installs nothing: see [`super::init`] or [`LogHandle::layer`].
    pub fn new(cfg: LogConfig) -> Result<Self, LogError> {
        let file = LogFile::new(cfg.log_file.clone()).map_err(|source| LogError::Open {
            path: cfg.log_file.unwrap_or_default(),
            source,
        })?;
        let levels = MODULES
            .iter()
            .map(|_| Destination::ALL.map(|d| AtomicU8::new(default_level(d) as u8)))
            .collect();
        let handle = Self {
            inner: Arc::new(Inner {
                levels,
                seq: AtomicU64::new(0),
                syslog_attached: AtomicBool::new(false),
                file_configured: file.is_configured(),
                file: Mutex::new(file),
            }),
        };
        for s in &cfg.specs {
            handle.set(s).map_err(LogError::Spec)?;
        }
        Ok(handle)
    }

    /// The layer that writes console and file lines according to this handle.
    pub fn layer(&self) -> super::layer::VlogLayer {
        super::layer::VlogLayer::new(self.clone())
    }

    /// Applies one spec (`vlog/set`).
    pub fn set(&self, spec_text: &str) -> Result<(), String> {
        let s = spec::parse(spec_text)?;
        for (m, row) in self.inner.levels.iter().enumerate() {
            if s.module.is_some_and(|sm| sm != m) {
                continue;
            }
            for d in Destination::ALL {
                if s.destination.is_none_or(|sd| sd == d)
                    && let Some(cell) = row.get(d.index())
                {
                    cell.store(s.level as u8, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// The level of one module at one destination.
    pub fn level(&self, module: usize, d: Destination) -> Level {
        self.inner
            .levels
            .get(module)
            .and_then(|row| row.get(d.index()))
            .map_or(Level::Off, |c| Level::from_u8(c.load(Ordering::Relaxed)))
    }

    /// `vlog/list`: modules × destinations, like OVS.
    pub fn list(&self) -> String {
        let mut out = String::from(
            "                 console    syslog    file\n                 -------    ------    ------\n",
        );
        for (m, name) in MODULES.iter().enumerate() {
            let [c, s, f] = Destination::ALL.map(|d| self.level(m, d).name());
            out.push_str(&format!("{name:<16}  {c:>4}       {s:>4}       {f:>4}\n"));
        }
        out
    }

    /// `vlog/reopen`: reopens the log file at its configured path.
    pub fn reopen(&self) -> Result<(), String> {
        self.file().reopen()
    }

    /// `vlog/close`: stops writing the log file until the next reopen.
    pub fn close(&self) {
        self.file().close();
    }

    fn file(&self) -> MutexGuard<'_, LogFile> {
        self.inner
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_syslog_attached(&self) {
        self.inner.syslog_attached.store(true, Ordering::Relaxed);
    }

    /// Whether an event of `level` from `module` goes to `d`.
    pub(super) fn enabled(&self, module: usize, d: Destination, level: Level) -> bool {
        let present = match d {
            Destination::Console => true,
            Destination::Syslog => self.inner.syslog_attached.load(Ordering::Relaxed),
            Destination::File => self.inner.file_configured,
        };
        present && level <= self.level(module, d)
    }

    /// Writes one event to console and file as their levels allow.
    pub(super) fn emit(&self, module: usize, level: Level, text: &str) {
        let console = self.enabled(module, Destination::Console, level);
        let file = self.enabled(module, Destination::File, level);
        if !console && !file {
            return;
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let name = MODULES.get(module).copied().unwrap_or("main");
        let line = format::line(SystemTime::now(), seq, name, level, text);
        if console {
            let _ = io::stderr().lock().write_all(line.as_bytes());
        }
        if file {
            self.file().write_line(&line);
        }
    }
}
