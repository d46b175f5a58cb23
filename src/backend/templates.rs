//! Config templates are data: defaults live in `templates/` (compiled in), and an admin can
//! override any of them at run time by placing a file of the same name in the override
//! directory (`--template-dir`, default `/etc/openvswitch/ipsec/templates`). Templates use
//! tera; autoescaping is off (these are not HTML) and an undefined variable is an error, so
//! a broken override fails loudly instead of rendering an empty field.
//!
//! Values reach templates only after the model's grammars accepted them, so a template never
//! has to quote or escape anything (the PSK arrives already encoded).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use tera::{Context, Tera};
use thiserror::Error;

/// Default override directory, below `--root-prefix`.
pub const DEFAULT_TEMPLATE_DIR: &str = "/etc/openvswitch/ipsec/templates";

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("cannot read template override {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {name} is invalid: {detail}")]
    Parse { name: String, detail: String },
    #[error("cannot render template {name}: {detail}")]
    Render { name: String, detail: String },
}

/// A set of templates: compiled-in defaults with per-file overrides.
#[derive(Debug)]
pub struct Templates {
    tera: Tera,
    /// Names whose text came from the override directory (for logs).
    overridden: Vec<String>,
}

impl Templates {
    /// Loads `defaults` (name, text), replacing each by `<override_dir>/<name>` when that file
    /// exists.
    pub fn load(
        override_dir: Option<&Path>,
        defaults: &[(&str, &str)],
    ) -> Result<Self, TemplateError> {
        let mut tera = Tera::default();
        tera.autoescape_on(Vec::new());
        let mut overridden = Vec::new();
        for (name, text) in defaults {
            let custom = match override_dir.map(|d| d.join(name)) {
                Some(path) if path.is_file() => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|source| TemplateError::Read { path, source })?,
                ),
                _ => None,
            };
            if custom.is_some() {
                overridden.push((*name).to_owned());
            }
            tera.add_raw_template(name, custom.as_deref().unwrap_or(text))
                .map_err(|e| TemplateError::Parse {
                    name: (*name).to_owned(),
                    detail: chain(&e),
                })?;
        }
        Ok(Self { tera, overridden })
    }

    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// Renders template `name` with `ctx` (any serializable struct).
    pub fn render(&self, name: &str, ctx: &impl Serialize) -> Result<String, TemplateError> {
        let err = |e: tera::Error| TemplateError::Render {
            name: name.to_owned(),
            detail: chain(&e),
        };
        let ctx = Context::from_serialize(ctx).map_err(err)?;
        let mut text = self.tera.render(name, &ctx).map_err(err)?;
        // tera renders into a 2,000-byte buffer; a cached section of ~300 bytes would keep it
        // all (40 MB of the peak at 10,000 stroke tunnels).
        text.shrink_to_fit();
        Ok(text)
    }
}

/// The output of a file template that lists `pieces` (per-tunnel sections rendered before),
/// where `render` renders the template with the given list. Handing N sections to tera
/// copies each into its context and walks them again (O(N) per change, 90 ms at 10,000
/// tunnels), so the template is rendered with two and with three marker pieces instead:
/// when those show it prints the list as `prefix, piece, (separator, piece)…, suffix`, that
/// shape is filled with the real pieces; any other template (an override that counts or
/// repeats them) is rendered with the real list.
pub fn assemble<'a>(
    pieces: &[&'a str],
    render: impl Fn(Vec<&'a str>) -> Result<String, TemplateError>,
) -> Result<String, TemplateError> {
    // Rendered sections never hold control characters (the model's grammars).
    const MARKS: [&str; 3] = [
        "\u{1}piece 1\u{1}",
        "\u{1}piece 2\u{1}",
        "\u{1}piece 3\u{1}",
    ];
    if pieces.len() >= 2 {
        let two = render(MARKS[..2].to_vec())?;
        let three = render(MARKS.to_vec())?;
        let shape = two
            .split_once(MARKS[0])
            .and_then(|(prefix, rest)| Some((prefix, rest.split_once(MARKS[1])?)));
        if let Some((prefix, (sep, suffix))) = shape
            && three == [prefix, MARKS[0], sep, MARKS[1], sep, MARKS[2], suffix].concat()
        {
            let size = pieces.iter().map(|p| p.len() + sep.len()).sum::<usize>();
            let mut out = String::with_capacity(prefix.len() + size + suffix.len());
            out.push_str(prefix);
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                out.push_str(piece);
            }
            out.push_str(suffix);
            return Ok(out);
        }
    }
    render(pieces.to_vec())
}

/// Memoized per-tunnel sections of a config file (text, or any `T` cheap to clone), so that one changed tunnel costs one render,
/// not N (rendering every section through tera dominated a one-tunnel change: 82 % of 44 ms at
/// N = 1000).
///
/// A section is reused only while the input it was rendered from compares equal, so the cache
/// can never serve stale text: the input must hold everything the section's rendering reads.
/// Interior mutability keeps the callers' planning functions `&self`: memoizing a pure function
/// does not change what they compute. (A `Mutex`, not a `RefCell`, because backends' futures
/// must be `Send`; it is never contended.)
pub struct SectionCache<I, T = String> {
    entries: Mutex<Entries<I, T>>,
}

/// The sections kept, and the number of the last [`SectionCache::render_all`], which marks the
/// entries it saw so that the others can be dropped without building a second map: a
/// one-tunnel change at 10,000 tunnels used to rebuild the whole map (and copy every key).
struct Entries<I, T> {
    by_key: HashMap<String, Entry<I, T>>,
    round: u64,
}

struct Entry<I, T> {
    input: I,
    text: T,
    /// The [`Entries::round`] that last listed this key.
    round: u64,
}

impl<I, T> Default for SectionCache<I, T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Entries {
                by_key: HashMap::new(),
                round: 0,
            }),
        }
    }
}

/// Not derived: the inputs may hold secrets. Shows only how many sections are kept.
impl<I, T> std::fmt::Debug for SectionCache<I, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries().by_key.len();
        write!(f, "SectionCache({n} sections)")
    }
}

impl<I: PartialEq, T: Clone> SectionCache<I, T> {
    /// The text of every `(key, input)` in order: reused when `key` was rendered from an equal
    /// input before, else produced by `render`. Keys absent from this call are forgotten, so
    /// the cache holds one generation of sections. A failed render leaves every entry
    /// matching the input it was rendered from.
    pub fn render_all<'k, E>(
        &self,
        items: impl IntoIterator<Item = (&'k str, I)>,
        mut render: impl FnMut(&I) -> Result<T, E>,
    ) -> Result<Vec<T>, E> {
        let mut entries = self.entries();
        entries.round += 1;
        let round = entries.round;
        let mut out = Vec::with_capacity(entries.by_key.len());
        let mut listed = 0;
        for (key, input) in items {
            listed += 1;
            let text = match entries.by_key.get_mut(key) {
                Some(e) if e.input == input => {
                    e.round = round;
                    e.text.clone()
                }
                Some(e) => {
                    let text = render(&input)?;
                    *e = Entry {
                        input,
                        text: text.clone(),
                        round,
                    };
                    text
                }
                None => {
                    let text = render(&input)?;
                    let e = Entry {
                        input,
                        text: text.clone(),
                        round,
                    };
                    entries.by_key.insert(key.to_owned(), e);
                    text
                }
            };
            out.push(text);
        }
        if entries.by_key.len() > listed {
            entries.by_key.retain(|_, e| e.round == round);
        }
        Ok(out)
    }

    /// The text of one `(key, input)`, as [`SectionCache::render_all`] would give it, leaving
    /// the other keys alone: what a pass over a few tunnels uses.
    pub fn render_one<E>(
        &self,
        key: &str,
        input: I,
        render: impl FnOnce(&I) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut entries = self.entries();
        if let Some(e) = entries.by_key.get(key)
            && e.input == input
        {
            return Ok(e.text.clone());
        }
        // A failed render must not leave the old text behind for the new input.
        entries.by_key.remove(key);
        let text = render(&input)?;
        let round = entries.round;
        let e = Entry {
            input,
            text: text.clone(),
            round,
        };
        entries.by_key.insert(key.to_owned(), e);
        Ok(text)
    }

    /// Drops what was kept for `key` (a tunnel that is gone).
    pub fn forget(&self, key: &str) {
        self.entries().by_key.remove(key);
    }
}

impl<I, T> SectionCache<I, T> {
    /// A panic aborts the daemon, so a poisoned lock can only be seen by tests: take it.
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries<I, T>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// tera's errors keep the useful part in their source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Ctx {
        name: &'static str,
    }

    const DEFAULTS: &[(&str, &str)] = &[("a.conf", "conn {{ name }}\n"), ("b.conf", "x\n")];

    #[test]
    fn defaults_render_without_escaping() {
        let t = Templates::load(None, DEFAULTS).unwrap();
        assert_eq!(
            t.render("a.conf", &Ctx { name: "t<1>&" }).unwrap(),
            "conn t<1>&\n"
        );
        assert!(t.overridden().is_empty());
    }

    #[test]
    fn override_dir_replaces_one_template() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.conf"), "custom {{ name }}\n").unwrap();
        let t = Templates::load(Some(d.path()), DEFAULTS).unwrap();
        assert_eq!(
            t.render("a.conf", &Ctx { name: "x" }).unwrap(),
            "custom x\n"
        );
        assert_eq!(t.render("b.conf", &Ctx { name: "x" }).unwrap(), "x\n");
        assert_eq!(t.overridden(), ["a.conf"]);
    }

    #[test]
    fn sections_are_rendered_again_only_when_their_input_changes() {
        let cache = SectionCache::default();
        let mut calls = Vec::new();
        let run = |items: Vec<(&str, u32)>, calls: &mut Vec<u32>| {
            cache
                .render_all(items, |i: &u32| -> Result<String, ()> {
                    calls.push(*i);
                    Ok(format!("<{i}>"))
                })
                .unwrap()
        };
        assert_eq!(run(vec![("a", 1), ("b", 2)], &mut calls), ["<1>", "<2>"]);
        assert_eq!(run(vec![("a", 1), ("b", 3)], &mut calls), ["<1>", "<3>"]);
        // "a" was dropped by the call without it: it is rendered afresh when it returns.
        assert_eq!(run(vec![("b", 3)], &mut calls), ["<3>"]);
        assert_eq!(run(vec![("a", 1), ("b", 3)], &mut calls), ["<1>", "<3>"]);
        assert_eq!(calls, [1, 2, 3, 1]);
    }

    #[test]
    fn a_failed_render_all_keeps_what_still_matches() {
        let cache = SectionCache::default();
        let calls = std::cell::RefCell::new(Vec::new());
        let render = |i: &u32| -> Result<String, u32> {
            calls.borrow_mut().push(*i);
            if *i == 99 {
                Err(*i)
            } else {
                Ok(format!("<{i}>"))
            }
        };
        cache.render_all([("a", 1), ("b", 2)], render).unwrap();
        assert_eq!(cache.render_all([("a", 1), ("b", 99)], render), Err(99));
        let all = cache.render_all([("a", 1), ("b", 3)], render).unwrap();
        assert_eq!(all, ["<1>", "<3>"]);
        // "a" is reused throughout; "b" is never served from the failed input.
        assert_eq!(*calls.borrow(), [1, 2, 99, 3]);
    }

    #[test]
    fn one_section_is_rendered_like_all_of_them() {
        let cache = SectionCache::default();
        let calls = std::cell::RefCell::new(Vec::new());
        let render = |i: &u32| -> Result<String, ()> {
            calls.borrow_mut().push(*i);
            Ok(format!("<{i}>"))
        };
        cache.render_all([("a", 1), ("b", 2)], render).unwrap();
        assert_eq!(cache.render_one("a", 1, render).unwrap(), "<1>");
        assert_eq!(cache.render_one("b", 5, render).unwrap(), "<5>");
        assert_eq!(cache.render_one("c", 7, render).unwrap(), "<7>");
        cache.forget("a");
        let all = cache
            .render_all([("a", 1), ("b", 5), ("c", 7)], render)
            .unwrap();
        assert_eq!(all, ["<1>", "<5>", "<7>"]);
        // Rendered: a and b at first, b and c changed, a again after it was forgotten.
        assert_eq!(*calls.borrow(), [1, 2, 5, 7, 1]);
        assert_eq!(cache.render_one("c", 8, |_: &u32| Err(())), Err(()));
        assert_eq!(cache.render_one("c", 7, render).unwrap(), "<7>");
        assert_eq!(
            *calls.borrow(),
            [1, 2, 5, 7, 1, 7],
            "a failed render keeps nothing"
        );
    }

    #[test]
    fn assembled_output_is_what_the_template_renders() {
        #[derive(Serialize)]
        struct List<'a> {
            items: Vec<&'a str>,
        }
        let items = ["a\n", "b\n", "c\n", "d\n"];
        for (text, shortcut) in [
            ("head\n{% for s in items %}{{ s }}{% endfor %}tail\n", true),
            (
                "{% for s in items %}{{ s }}{% if not loop.last %}--\n{% endif %}{% endfor %}",
                true,
            ),
            // Counting or repeating the list: rendered with the real list.
            (
                "{{ items | length }}\n{% for s in items %}{{ s }}{% endfor %}",
                false,
            ),
            (
                "{% for s in items %}{{ loop.index }}:{{ s }}{% endfor %}",
                false,
            ),
            (
                "{% for s in items %}{{ s }}{% endfor %}{% for s in items %}{{ s }}{% endfor %}",
                false,
            ),
        ] {
            let t = Templates::load(None, &[("f", text)]).unwrap();
            let calls = std::cell::Cell::new(0);
            let render = |items: Vec<&str>| {
                calls.set(calls.get() + 1);
                t.render("f", &List { items })
            };
            for n in 0..=items.len() {
                calls.set(0);
                let want = t
                    .render(
                        "f",
                        &List {
                            items: items[..n].to_vec(),
                        },
                    )
                    .unwrap();
                assert_eq!(
                    assemble(&items[..n], render).unwrap(),
                    want,
                    "{text} with {n}"
                );
                if n >= 2 {
                    assert_eq!(calls.get(), if shortcut { 2 } else { 3 }, "{text}");
                }
            }
        }
    }

    #[test]
    fn a_failed_render_keeps_nothing_stale() {
        let cache = SectionCache::default();
        let ok = |i: &u32| -> Result<String, u32> { Ok(i.to_string()) };
        cache.render_all([("a", 1)], ok).unwrap();
        let failed = cache.render_all([("a", 2)], |i: &u32| Err(*i));
        assert_eq!(failed, Err(2));
        assert_eq!(cache.render_all([("a", 2)], ok).unwrap(), ["2"]);
    }

    #[test]
    fn undefined_variable_and_bad_syntax_fail_loudly() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.conf"), "{{ nosuch }}").unwrap();
        let t = Templates::load(Some(d.path()), DEFAULTS).unwrap();
        assert!(
            t.render("a.conf", &Ctx { name: "x" })
                .unwrap_err()
                .to_string()
                .contains("nosuch")
        );
        std::fs::write(d.path().join("a.conf"), "{% if %}").unwrap();
        assert!(matches!(
            Templates::load(Some(d.path()), DEFAULTS),
            Err(TemplateError::Parse { .. })
        ));
    }
}
