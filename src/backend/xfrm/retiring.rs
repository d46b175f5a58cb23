//! Grace-period deadlines of retiring SAs, kept in a file of the run directory so that a
//! monitor restart keeps each deadline instead of granting a new grace period (a monitor
//! restarted in a loop would otherwise never remove a retired SA).
//!
//! Deadlines are stored as `CLOCK_BOOTTIME` seconds: that clock is per boot like the SAs
//! themselves (a reboot loses both), counts suspended time like the peer's clock does, and
//! unlike wall-clock time cannot jump. In memory they are `Instant`s, which is what the
//! planner compares. Format, one line per SA: `<src> <dst> <spi hex> <deadline seconds>`.
//! An unreadable file is ignored: every retiring SA then gets a full grace period, which is
//! late removal, never early.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::XfrmError;
use super::types::SaId;
use crate::backend::files::{CONFIG_MODE, remove, write_if_changed};

#[derive(Debug)]
pub struct RetiringStore {
    path: PathBuf,
    pub deadlines: BTreeMap<SaId, Instant>,
}

impl RetiringStore {
    /// Reads the file; a missing or unreadable one means nothing is retiring.
    pub fn load(path: &Path) -> Self {
        let now = (Instant::now(), boottime());
        let deadlines = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| parse(&text, now))
            .unwrap_or_default();
        Self {
            path: path.to_owned(),
            deadlines,
        }
    }

    /// Starts the grace period of `id` unless it has one already (a deadline is never moved).
    pub fn retire(&mut self, id: SaId, deadline: Instant) {
        self.deadlines.entry(id).or_insert(deadline);
    }

    /// Forgets SAs that are gone from the kernel.
    pub fn retain(&mut self, keep: impl Fn(&SaId) -> bool) {
        self.deadlines.retain(|id, _| keep(id));
    }

    /// Writes the deadlines; removes the file when there are none.
    pub fn save(&self) -> Result<(), XfrmError> {
        let result = if self.deadlines.is_empty() {
            remove(&self.path).map(|_| ())
        } else {
            let text = render(&self.deadlines, (Instant::now(), boottime()));
            write_if_changed(&self.path, text.as_bytes(), CONFIG_MODE).map(|_| ())
        };
        result.map_err(|e| XfrmError::Io {
            what: "write the retiring SAs file".into(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// `exit` with cleanup: our SAs are gone.
    pub fn clear(&mut self) -> Result<(), XfrmError> {
        self.deadlines.clear();
        self.save()
    }
}

/// Seconds since boot, suspend included.
fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    match (rc, u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
        (0, Ok(s), Ok(ns)) => Duration::new(s, ns),
        // Cannot happen on Linux; a zero clock makes every deadline late, never early.
        _ => Duration::ZERO,
    }
}

/// `now` pairs an `Instant` with the boot time read at the same moment.
fn render(deadlines: &BTreeMap<SaId, Instant>, now: (Instant, Duration)) -> String {
    deadlines
        .iter()
        .map(|(id, at)| {
            let secs = now.1 + at.saturating_duration_since(now.0);
            format!(
                "{} {} {:08x} {}\n",
                id.src,
                id.dst,
                id.spi,
                secs.as_secs_f64()
            )
        })
        .collect()
}

fn parse(text: &str, now: (Instant, Duration)) -> Option<BTreeMap<SaId, Instant>> {
    text.lines()
        .map(|l| {
            let mut f = l.split(' ');
            let id = SaId {
                src: f.next()?.parse().ok()?,
                dst: f.next()?.parse().ok()?,
                spi: u32::from_str_radix(f.next()?, 16).ok()?,
            };
            let secs: f64 = f.next()?.parse().ok()?;
            let at = Duration::try_from_secs_f64(secs).ok()?;
            // A deadline already passed is due now.
            Some((id, now.0 + at.saturating_sub(now.1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(spi: u32) -> SaId {
        SaId {
            src: "2001:db8::2".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            spi,
        }
    }

    #[test]
    fn a_reload_keeps_each_deadline_instead_of_granting_a_new_grace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/retiring");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut s = RetiringStore::load(&path);
        assert!(s.deadlines.is_empty());
        let deadline = Instant::now() + Duration::from_secs(60);
        s.retire(id(1), deadline);
        // Retiring again (the next pass plans Retire again only if it was lost) keeps it.
        s.retire(id(1), deadline + Duration::from_secs(60));
        s.save().unwrap();

        let again = RetiringStore::load(&path);
        let got = again.deadlines[&id(1)];
        let drift = got
            .saturating_duration_since(deadline)
            .max(deadline.saturating_duration_since(got));
        assert!(
            drift < Duration::from_secs(1),
            "deadline moved by {drift:?}"
        );
    }

    #[test]
    fn a_passed_deadline_is_due_at_once_and_gone_sas_are_forgotten() {
        let t0 = Instant::now();
        let boot = Duration::from_secs(1000);
        let text = format!(
            "{}{}",
            render(&BTreeMap::from([(id(1), t0)]), (t0, boot)),
            "2001:db8::2 2001:db8::1 00000002 900.5\n"
        );
        let later = t0 + Duration::from_secs(5);
        let got = parse(&text, (later, boot + Duration::from_secs(5))).unwrap();
        assert_eq!(got[&id(1)], later);
        assert_eq!(got[&id(2)], later);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retiring");
        let mut s = RetiringStore::load(&path);
        s.retire(id(1), t0);
        s.retire(id(2), t0);
        s.retain(|i| i.spi == 2);
        s.save().unwrap();
        assert_eq!(
            RetiringStore::load(&path)
                .deadlines
                .keys()
                .collect::<Vec<_>>(),
            [&id(2)]
        );
        s.clear().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn an_unreadable_file_retires_nothing_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retiring");
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(RetiringStore::load(&path).deadlines.is_empty());
    }
}
