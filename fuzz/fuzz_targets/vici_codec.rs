//! VICI: packets read from a stream as the client reads charon's socket; every packet decoded
//! re-encodes to one that decodes to the same packet, and the observation parsers take any
//! message.
#![no_main]

use ovs_monitor_ipsec::backend::strongswan_vici::observe;
use ovs_monitor_ipsec::backend::vici::message::Message;
use ovs_monitor_ipsec::backend::vici::packet::{self, Packet};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().build().expect("runtime");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let packets = RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut r = data;
            let mut out = Vec::new();
            while let Ok(Some(p)) = packet::read_packet(&mut r).await {
                out.push(p);
            }
            out
        })
    });
    let mut bodies: Vec<Message> = Vec::new();
    for p in packets.into_iter().chain(Packet::decode(data).ok()) {
        if let Ok(bytes) = p.encode() {
            let again = Packet::decode(bytes.get(4..).unwrap_or_default()).expect("own encoding");
            assert_eq!(again, p);
        }
        bodies.push(p.body);
    }
    if let Ok(m) = Message::decode(data) {
        let mut bytes = Vec::new();
        if m.encode(&mut bytes).is_ok() {
            assert_eq!(Message::decode(&bytes).expect("own encoding"), m);
        }
        bodies.push(m);
    }
    let _ = observe::parse_conns(&bodies);
    let _ = observe::parse_sas(&bodies);
});
