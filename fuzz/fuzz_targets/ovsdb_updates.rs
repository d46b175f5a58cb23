//! OVSDB: a monitor reply, then `update3`/`update2`/`update` notifications, applied to a
//! replica and read by the model incrementally; must match a from-scratch evaluation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ovs_monitor_ipsec::fuzzing::ovsdb_stream(data);
});
