//! The node's key generation and the SAs created under it, kept in a file of the run directory
//! (a tmpfs: a reboot forgets it, which is what makes a reboot draw a new one).
//!
//! Every key binds both ends' generations, so an SA listed here that has gone from the kernel
//! cannot be re-created with the same key: outbound, its sequence numbers would restart (nonce
//! reuse); inbound, its anti-replay window would (replay). The planner draws a new generation
//! instead, which changes every key of this node.
//!
//! Format, one record per line: `generation <32 hex>` first, then `used <src> <dst> <spi hex>`
//! for every SA (either direction) created under it, and `unused ...` for an add the kernel
//! refused. Records are appended and synced before the SA is added, so a crash can only
//! over-report use (which costs a new generation, never a reuse).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::XfrmError;
use super::types::{SaId, generation_hex};
use crate::backend::files::{SECRET_MODE, remove, write_if_changed};
use crate::model::grammar;

#[derive(Debug)]
pub struct GenerationStore {
    path: PathBuf,
    pub current: [u8; 16],
    pub used: BTreeSet<SaId>,
}

impl GenerationStore {
    /// Reads the file, or starts a new generation when it is missing or unreadable.
    pub fn load_or_create(path: &Path) -> Result<Self, XfrmError> {
        match std::fs::read_to_string(path).ok().and_then(|s| parse(&s)) {
            Some((current, used)) => Ok(Self {
                path: path.to_owned(),
                current,
                used,
            }),
            None => {
                let mut s = Self {
                    path: path.to_owned(),
                    current: [0; 16],
                    used: BTreeSet::new(),
                };
                s.renew()?;
                Ok(s)
            }
        }
    }

    /// Draws a new random generation and forgets the SAs of the old one.
    pub fn renew(&mut self) -> Result<(), XfrmError> {
        self.current = random16()?;
        self.used.clear();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| io("create the run directory", source))?;
        }
        let text = format!("generation {}\n", generation_hex(&self.current));
        write_if_changed(&self.path, text.as_bytes(), SECRET_MODE).map_err(|e| {
            io(
                "write the generation file",
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(())
    }

    /// Records SAs about to be created; synced before returning.
    pub fn record(&mut self, ids: &[SaId]) -> Result<(), XfrmError> {
        let new: Vec<SaId> = ids
            .iter()
            .filter(|i| !self.used.contains(i))
            .copied()
            .collect();
        self.append("used", &new)?;
        self.used.extend(new);
        Ok(())
    }

    /// Takes back records of SAs the kernel refused to create (an error reply to an
    /// exclusive add means nothing was created, so nothing was sent with the key).
    pub fn unrecord(&mut self, ids: &[SaId]) -> Result<(), XfrmError> {
        self.append("unused", ids)?;
        ids.iter().for_each(|i| {
            self.used.remove(i);
        });
        Ok(())
    }

    fn append(&self, verb: &str, ids: &[SaId]) -> Result<(), XfrmError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|source| io("open the generation file", source))?;
        let text: String = ids
            .iter()
            .map(|i| format!("{verb} {} {} {:08x}\n", i.src, i.dst, i.spi))
            .collect();
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|source| io("update the generation file", source))
    }

    /// `exit` with cleanup: the next start draws a new generation.
    pub fn forget(&self) -> Result<(), XfrmError> {
        remove(&self.path).map(|_| ()).map_err(|e| {
            io(
                "remove the generation file",
                std::io::Error::other(e.to_string()),
            )
        })
    }
}

fn io(what: &str, source: std::io::Error) -> XfrmError {
    XfrmError::Io {
        what: what.to_owned(),
        source,
    }
}

fn parse(text: &str) -> Option<([u8; 16], BTreeSet<SaId>)> {
    let mut lines = text.lines();
    let generation =
        grammar::generation("generation", lines.next()?.strip_prefix("generation ")?).ok()?;
    let mut used = BTreeSet::new();
    for l in lines {
        let mut f = l.split(' ');
        let verb = f.next()?;
        let id = SaId {
            src: f.next()?.parse().ok()?,
            dst: f.next()?.parse().ok()?,
            spi: u32::from_str_radix(f.next()?, 16).ok()?,
        };
        match verb {
            "used" => used.insert(id),
            "unused" => used.remove(&id),
            _ => return None,
        };
    }
    Some((generation, used))
}

fn random16() -> Result<[u8; 16], XfrmError> {
    let mut buf = [0u8; 16];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).ok() == Some(buf.len()) {
        Ok(buf)
    } else {
        Err(io(
            "draw a random generation",
            std::io::Error::last_os_error(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_survives_reload_with_its_used_sas_and_renews_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/gen");
        let mut g = GenerationStore::load_or_create(&path).unwrap();
        let id = SaId {
            src: "192.0.2.1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            spi: 0xabc,
        };
        let refused = SaId { spi: 0xdef, ..id };
        g.record(&[id, id, refused]).unwrap();
        g.unrecord(&[refused]).unwrap();
        let again = GenerationStore::load_or_create(&path).unwrap();
        assert!(!again.used.contains(&refused));
        assert_eq!((again.current, again.used.len()), (g.current, 1));
        let mut again = again;
        again.renew().unwrap();
        assert_ne!(again.current, g.current);
        assert!(
            GenerationStore::load_or_create(&path)
                .unwrap()
                .used
                .is_empty()
        );
        again.forget().unwrap();
        assert_ne!(
            GenerationStore::load_or_create(&path).unwrap().current,
            again.current
        );
    }

    #[test]
    fn a_corrupt_file_means_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gen");
        std::fs::write(&path, "generation zz\n").unwrap();
        let g = GenerationStore::load_or_create(&path).unwrap();
        assert_ne!(g.current, [0; 16]);
    }
}
