//! unixctl: one `ovs-appctl` connection's bytes through the real connection loop and command
//! table; every answer must be a JSON-RPC reply or error with a string payload.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ovs_monitor_ipsec::fuzzing::unixctl_session(data);
});
