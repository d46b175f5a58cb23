//! XFRM: one datagram from the kernel on the static backend's netlink socket, split, decoded
//! and classified as a dump and as GET answers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ovs_monitor_ipsec::fuzzing::xfrm_datagram(data);
});
