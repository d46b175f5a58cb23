//! The fuzz crate (`fuzz/`, run by `tests/fuzz/run.sh`) and its documentation agree: every
//! target declared in `fuzz/Cargo.toml` has its source, a committed seed corpus, and a row in
//! `docs/reliability.md`, and the document names no target that does not exist.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The `name` of every `[[bin]]` of the fuzz crate.
fn declared() -> BTreeSet<String> {
    let manifest = read("fuzz/Cargo.toml");
    let mut names = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(v) = line.strip_prefix("name = ") {
            names.insert(v.trim_matches('"').to_owned());
        }
    }
    names
}

/// The targets in the first column of the document's figures table (rows "| `name` |").
fn documented() -> BTreeSet<String> {
    read("docs/reliability.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn every_target_has_source_seeds_and_figures() {
    let targets = declared();
    assert!(targets.len() >= 9, "{targets:?}");
    for t in &targets {
        assert!(
            root().join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(),
            "{t}: no source"
        );
        let seeds = fs::read_dir(root().join(format!("fuzz/corpus/{t}")))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(seeds > 0, "{t}: no committed seed corpus");
    }
    assert_eq!(
        documented(),
        targets,
        "docs/reliability.md's table vs fuzz/Cargo.toml"
    );
}
