//! Fault-injection soak: a seeded random mix of tunnel changes and faults against real
//! daemons, with the invariants checked after every step (docs/reliability.md, "Soak").
//!
//! Each mode (charon over VICI, charon under starter over stroke, pluto) runs two nodes in a
//! pair of network namespaces, so that IKE really negotiates: per node an ovsdb-server, the
//! IKE daemon and our monitor (tests/common starts all of them; this binary only adds the
//! soak's own driving, checks and figures). Every step is one operation (add, change or
//! delete a tunnel, a hostile row) or one fault (kill -9 of ovsdb-server, of the IKE daemon
//! or of the monitor, SIGHUP, `refresh`, a connection deleted behind the monitor's back,
//! `ipsec` commands that hang, a full config filesystem); after it, every invariant of
//! `chaos/check.rs` must hold again within the step's deadline. The convergence time is
//! recorded per step kind.
//!
//! Configuration comes from the environment (tests/chaos/run.sh sets it from its options):
//! `CHAOS_SECS` (duration), `CHAOS_SEED` (the seed, printed first so that a failure
//! replays), `CHAOS_MODE` (`vici`, `stroke`, `libreswan`; `all` runs each for an equal
//! share), `CHAOS_TUNNELS` (tunnel slots, 8 by default), `CHAOS_RECOVERY=N` (N tunnels at
//! once, then only the faults whose recovery is measured).
//!
//! Why a `harness = false` target: the soak is one long process with its own report, not a
//! set of independent tests, and its duration is a parameter. Under a plain
//! `cargo test --all-targets` (no `CHAOS_SECS`) it runs a 20-second smoke pass, so that it
//! cannot rot and `cargo test` stays short; tests/run.sh then runs the 3-minute soak through
//! tests/chaos/run.sh, and a 30-minute soak is one command on demand.

mod common;

#[path = "chaos/check.rs"]
mod check;
#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/node.rs"]
mod node;
#[path = "chaos/report.rs"]
mod report;
#[path = "chaos/soak.rs"]
mod soak;
#[path = "chaos/tunnels.rs"]
mod tunnels;

use std::time::Duration;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("{name}={v:?} is not a whole number");
            std::process::exit(2);
        }
    }
}

fn main() {
    // `cargo test` passes harness arguments (e.g. `--test-threads`); a soak has no filter.
    let secs = env_u64("CHAOS_SECS").unwrap_or(20);
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let recovery = env_u64("CHAOS_RECOVERY");
    let slots = recovery.or(env_u64("CHAOS_TUNNELS")).unwrap_or(8) as usize;
    let mode = std::env::var("CHAOS_MODE").unwrap_or_else(|_| "all".into());
    let modes: Vec<soak::Mode> = match mode.as_str() {
        "all" => soak::Mode::ALL.to_vec(),
        m => match soak::Mode::parse(m) {
            Some(m) => vec![m],
            None => {
                eprintln!(
                    "CHAOS_MODE={m:?}: expected one of {:?} or all",
                    soak::Mode::NAMES
                );
                std::process::exit(2);
            }
        },
    };
    println!(
        "chaos: seed {seed} (replay with --seed {seed}), {secs} s, modes {modes:?}, {slots} tunnel slots"
    );
    let per_mode = Duration::from_secs(secs) / modes.len() as u32;
    let mut failed = false;
    for (i, m) in modes.iter().enumerate() {
        let r = soak::run(
            *m,
            seed.wrapping_add(i as u64),
            per_mode,
            slots,
            recovery.is_some(),
        );
        r.print();
        failed |= !r.violations.is_empty();
    }
    if failed {
        println!("chaos: FAILED (seed {seed})");
        std::process::exit(1);
    }
    println!("chaos: ok (seed {seed})");
}
