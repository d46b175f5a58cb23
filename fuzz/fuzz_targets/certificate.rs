//! Certificates: a PEM or DER file's bytes through the model's certificate reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ovs_monitor_ipsec::fuzzing::certificate(data);
});
