//! `ipsec statusall` (strongSwan stroke): a filtered parse keeps whole groups exactly as the
//! whole parse reads them.
#![no_main]

use ovs_monitor_ipsec::backend::strongswan_stroke::statusall;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let all = statusall::parse(&text);
    let some = statusall::parse_in(&text, |name| name.len() % 2 == 0);
    for (peer, children) in &some.peers {
        assert_eq!(all.peers.get(peer), Some(children), "peer {peer:?}");
    }
    assert!(some.routed.is_subset(&all.routed));
    for sa in &some.sas {
        assert!(all.sas.contains(sa), "IKE_SA {:?}", sa.token());
    }
    for name in all.loaded() {
        assert!(all.peer_of(name).is_some());
    }
});
