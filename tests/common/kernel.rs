//! What the kernel under test can do with ESP, probed once per test process.
//!
//! The integration tests run on two kinds of kernel: this project's build machine has XFRM
//! policies but no esp4/esp6 (every SA add is refused), a distribution kernel (the QEMU
//! guest's, or any Debian host) installs SAs. A test asserts the outcome of the kernel it runs
//! on, and says which one that was: the probe adds and deletes a scratch ESP SA, with the
//! algorithm the monitor uses, for each family in a private network namespace, and prints
//! its result once, so `cargo test` output (and every failure) names the path that ran.

use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The probe's result: `Ok` when ESP SAs of both families can be added, else the kernel's
/// refusal in `ip`'s words.
fn probe() -> &'static Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(|| {
        let r = run_probe();
        let line = match &r {
            Ok(()) => "kernel ESP probe: esp4 and esp6 SAs can be added: asserting the ESP path (SAs installed, tunnels up)".to_owned(),
            Err(e) => format!("kernel ESP probe: no ESP SA can be added ({e}): asserting the no-ESP path (the kernel's refusal reported)"),
        };
        // Straight to the process's stderr, past libtest's capture: shown once per test
        // binary whether its tests pass or fail.
        let _ = writeln!(std::io::stderr(), "{line}");
        r
    })
}

/// True when this kernel installs ESP SAs (esp4 and esp6 available). Every network namespace
/// a test creates asks first, so each binary that touches the kernel prints the probe.
pub fn has_esp() -> bool {
    probe().is_ok()
}

/// `with_esp` on a kernel with ESP, `without` on one without: the expectation of a test that
/// differs between the two, chosen in one place.
pub fn expect<T>(with_esp: T, without: T) -> T {
    if has_esp() { with_esp } else { without }
}

fn run_probe() -> Result<(), String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let ns = format!(
        "ovsesp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    ip(&["netns", "add", &ns]).expect("create the probe's network namespace");
    let r = [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")]
        .iter()
        .try_for_each(|(src, dst)| {
            let id = ["src", src, "dst", dst, "proto", "esp", "spi", "0x4f5350"];
            let mut add = vec!["-n", ns.as_str(), "xfrm", "state", "add"];
            add.extend(id);
            add.extend([
                "mode",
                "transport",
                "aead",
                "rfc4106(gcm(aes))",
                "0x0102030405060708090a0b0c0d0e0f1011121314",
                "128",
            ]);
            ip(&add)?;
            let mut del = vec!["-n", ns.as_str(), "xfrm", "state", "delete"];
            del.extend(id);
            ip(&del)
        });
    let _ = ip(&["netns", "del", &ns]);
    r
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (install iproute2): {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
