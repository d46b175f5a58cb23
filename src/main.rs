//! `ovs-monitor-ipsec`: see the library documentation and `docs/architecture.md`.

fn main() {
    // A panic anywhere, including inside a spawned task that tokio would otherwise swallow, is
    // a bug: log it and abort, so that `--monitor` (or systemd) restarts a clean process.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("fatal: {info}");
        eprintln!("ovs-monitor-ipsec: fatal: {info}");
        std::process::abort();
    }));
    std::process::exit(ovs_monitor_ipsec::app::main_entry());
}
