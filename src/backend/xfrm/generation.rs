//! The node's key generations and the SAs created under them, kept in a file of the run
//! directory (a tmpfs: a reboot forgets it, which is what makes a reboot draw a new one).
//!
//! Every key binds both ends' generations, so an SA listed here that has gone from the kernel
//! cannot be re-created with the same key: outbound, its sequence numbers would restart (nonce
//! reuse); inbound, its anti-replay window would (replay). The planner draws a new generation
//! for that tunnel instead. The node's generation is the default of every tunnel; a tunnel that
//! had to draw its own keeps it, by its identity in key derivation (its out-flow: addresses,
//! protocol, port), so removing and re-adding one tunnel re-keys that tunnel only and the peers
//! of the others need no relay.
//!
//! Format, one record per line: `generation <32 hex>` (the node's) first, then
//! `used <src> <dst> <spi hex>` for every SA (either direction) created under any of them,
//! `unused ...` for an add the kernel refused, and `tunnel <local> <remote> <gre|udp/port>
//! <32 hex>` for a tunnel's own generation (a later record for the same tunnel replaces an
//! earlier one). Records are appended and synced before they are relied on (before the SA is
//! added, before a key is derived from a new generation), so a crash can only over-report use
//! (which costs a new generation, never a reuse), or leave a torn last line: that record was
//! never relied on, so loading ignores it. Any other unreadable line makes the whole file
//! unreadable, which draws a new node generation and forgets every tunnel's own: all keys new.
//!
//! Loading compacts the file: it is rewritten (atomically, mode 0600) as the state it
//! describes, one `used` record per SA still counted and the latest generation of each tunnel;
//! `unused` records, superseded `tunnel` records and a torn line go. What stays grows by one line
//! per SA created in this boot: an SPI alone does not say which generation it was derived under
//! (that needs the PSK), so the records of generations no longer in use cannot be told apart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::XfrmError;
use super::types::{Flow, Generations, Proto, SaId, generation_hex};
use crate::backend::files::{SECRET_MODE, remove, write_if_changed};
use crate::model::grammar;

#[derive(Debug)]
pub struct GenerationStore {
    path: PathBuf,
    pub generations: Generations,
    pub used: BTreeSet<SaId>,
}

impl GenerationStore {
    /// Reads the file, or starts a new node generation (and no tunnel's own) when it is
    /// missing or unreadable; either way the file is (re)written as what was loaded.
    pub fn load_or_create(path: &Path) -> Result<Self, XfrmError> {
        let (generations, used) = match std::fs::read_to_string(path).ok().and_then(|s| parse(&s)) {
            Some(loaded) => loaded,
            None => (
                Generations {
                    node: random16()?,
                    tunnels: BTreeMap::new(),
                },
                BTreeSet::new(),
            ),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| io("create the run directory", source))?;
        }
        write_if_changed(path, render(&generations, &used).as_bytes(), SECRET_MODE).map_err(
            |e| {
                io(
                    "write the generation file",
                    std::io::Error::other(e.to_string()),
                )
            },
        )?;
        Ok(Self {
            path: path.to_owned(),
            generations,
            used,
        })
    }

    /// Draws a new generation for each of these tunnels (by out-flow); synced before
    /// returning. Other tunnels keep theirs. The SAs of the old ones stay recorded.
    pub fn renew_tunnels(&mut self, flows: &[Flow]) -> Result<(), XfrmError> {
        let drawn = flows
            .iter()
            .map(|f| Ok((*f, random16()?)))
            .collect::<Result<Vec<_>, XfrmError>>()?;
        let text: String = drawn.iter().map(|(f, g)| tunnel_record(f, g)).collect();
        self.append(&text)?;
        self.generations.tunnels.extend(drawn);
        Ok(())
    }

    /// Records SAs about to be created; synced before returning.
    pub fn record(&mut self, ids: &[SaId]) -> Result<(), XfrmError> {
        let new: Vec<SaId> = ids
            .iter()
            .filter(|i| !self.used.contains(i))
            .copied()
            .collect();
        self.append(&sa_records("used", &new))?;
        self.used.extend(new);
        Ok(())
    }

    /// Takes back records of SAs the kernel refused to create (an error reply to an
    /// exclusive add means nothing was created, so nothing was sent with the key).
    pub fn unrecord(&mut self, ids: &[SaId]) -> Result<(), XfrmError> {
        self.append(&sa_records("unused", ids))?;
        ids.iter().for_each(|i| {
            self.used.remove(i);
        });
        Ok(())
    }

    fn append(&self, text: &str) -> Result<(), XfrmError> {
        if text.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|source| io("open the generation file", source))?;
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

fn sa_records<'a>(verb: &str, ids: impl IntoIterator<Item = &'a SaId>) -> String {
    ids.into_iter()
        .map(|i| format!("{verb} {} {} {:08x}\n", i.src, i.dst, i.spi))
        .collect()
}

/// A tunnel's own generation, the tunnel named by its out-flow: `<local> <remote> gre` or
/// `<local> <remote> udp/<port>`.
fn tunnel_record(f: &Flow, g: &[u8; 16]) -> String {
    let proto = match f.proto {
        Proto::Gre => "gre".to_owned(),
        Proto::Udp(port) => format!("udp/{port}"),
    };
    format!("tunnel {} {} {proto} {}\n", f.src, f.dst, generation_hex(g))
}

/// The file's text for this state (see the module comment).
fn render(generations: &Generations, used: &BTreeSet<SaId>) -> String {
    let mut text = format!("generation {}\n", generation_hex(&generations.node));
    text.extend(generations.tunnels.iter().map(|(f, g)| tunnel_record(f, g)));
    text.push_str(&sa_records("used", used));
    text
}

fn parse(text: &str) -> Option<(Generations, BTreeSet<SaId>)> {
    // Only complete lines: a torn last one was never relied on (module comment).
    let complete = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
    let mut lines = complete.lines();
    let node =
        grammar::generation("generation", lines.next()?.strip_prefix("generation ")?).ok()?;
    let mut generations = Generations {
        node,
        tunnels: BTreeMap::new(),
    };
    let mut used = BTreeSet::new();
    for l in lines {
        let mut f = l.split(' ');
        let verb = f.next()?;
        let (src, dst) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        let third = f.next()?;
        match verb {
            "tunnel" => {
                let proto = match third {
                    "gre" => Proto::Gre,
                    udp => Proto::Udp(udp.strip_prefix("udp/")?.parse().ok()?),
                };
                let g = grammar::generation("tunnel", f.next()?).ok()?;
                generations.tunnels.insert(Flow { src, dst, proto }, g);
            }
            "used" | "unused" => {
                let id = SaId {
                    src,
                    dst,
                    spi: u32::from_str_radix(third, 16).ok()?,
                };
                if verb == "used" {
                    used.insert(id);
                } else {
                    used.remove(&id);
                }
            }
            _ => return None,
        }
    }
    Some((generations, used))
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

    fn flow(remote: &str, proto: Proto) -> Flow {
        Flow {
            src: "192.0.2.1".parse().unwrap(),
            dst: remote.parse().unwrap(),
            proto,
        }
    }

    #[test]
    fn generations_survive_reload_with_their_used_sas_and_a_lost_file_renews_all() {
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
        let (gre, udp) = (
            flow("192.0.2.2", Proto::Gre),
            flow("2001:db8::2", Proto::Udp(6090)),
        );
        g.renew_tunnels(&[gre, udp]).unwrap();
        let first_gre = *g.generations.of(&gre);
        g.renew_tunnels(&[gre]).unwrap();
        assert_ne!(
            *g.generations.of(&gre),
            first_gre,
            "a later record replaces"
        );
        assert_ne!(*g.generations.of(&gre), g.generations.node);
        let again = GenerationStore::load_or_create(&path).unwrap();
        assert!(!again.used.contains(&refused));
        assert_eq!(again.used.len(), 1);
        assert_eq!(
            again.generations, g.generations,
            "node and tunnels' own reload"
        );
        // Loading compacted the file: no `unused` record, one record per tunnel, mode 0600.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1 + 2 + 1, "{text}");
        assert!(!text.contains("unused") && !text.contains(&generation_hex(&first_gre)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A torn last record (a crash inside an append) was never relied on: it is ignored,
        // and nothing else is lost.
        std::fs::write(&path, format!("{text}used 192.0.2.1 192.0")).unwrap();
        let torn = GenerationStore::load_or_create(&path).unwrap();
        assert_eq!((&torn.generations, &torn.used), (&g.generations, &g.used));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        // exit with cleanup (or a reboot: the tmpfs file is gone): everything is new.
        again.forget().unwrap();
        let fresh = GenerationStore::load_or_create(&path).unwrap();
        assert_ne!(fresh.generations.node, g.generations.node);
        assert!(fresh.generations.tunnels.is_empty() && fresh.used.is_empty());
        assert_eq!(fresh.generations.of(&gre), &fresh.generations.node);
    }

    #[test]
    fn a_corrupt_file_means_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gen");
        std::fs::write(&path, "generation zz\n").unwrap();
        let g = GenerationStore::load_or_create(&path).unwrap();
        assert_ne!(g.generations.node, [0; 16]);
    }
}
