//! pluto `ipsec status` (Libreswan v3, v4 with `000 ` prefixes, v5): a filtered parse keeps
//! exactly what the whole parse says about the conns it keeps.
#![no_main]

use ovs_monitor_ipsec::backend::libreswan::status::PlutoStatus;
use ovs_monitor_ipsec::backend::libreswan::version::Version;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let all = PlutoStatus::parse(&text);
    let even = |name: &str| name.len() % 2 == 0;
    let some = PlutoStatus::parse_in(&text, even);
    for name in some.loaded.iter().filter(|n| even(n)) {
        assert!(all.loaded.contains(name));
        assert_eq!(all.active.contains(name), some.active.contains(name));
        assert_eq!(all.ike_up.contains(name), some.ike_up.contains(name));
        assert_eq!(all.negotiating.get(name), some.negotiating.get(name));
    }
    // `ipsec --version` output is read from the same tool.
    let _ = Version::parse(&text);
});
