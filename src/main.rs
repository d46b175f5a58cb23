//! `ovs-monitor-ipsec`: see the library documentation and `docs/architecture.md`.

fn main() {
    std::process::exit(ovs_monitor_ipsec::app::main_entry());
}
