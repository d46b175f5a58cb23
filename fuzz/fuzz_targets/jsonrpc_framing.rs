//! JSON-RPC stream framing and message decoding: the frames do not depend on how the stream
//! is cut into reads, and every decoded message survives its own encoding.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use ovs_monitor_ipsec::jsonrpc::Message;
use ovs_monitor_ipsec::jsonrpc::codec::Framer;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Read sizes, cycled (0 is read as 1).
    cuts: Vec<u8>,
    stream: Vec<u8>,
}

/// Frames until the first error; the error as text.
fn frames(input: &[u8], cuts: &[u8]) -> (Vec<Vec<u8>>, Option<String>) {
    let mut f = Framer::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    loop {
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        if rest.is_empty() {
            return (out, None);
        }
        let n = cuts
            .get(i % cuts.len().max(1))
            .map_or(rest.len(), |&c| usize::from(c.max(1)));
        let (now, later) = rest.split_at(n.min(rest.len()));
        f.push(now);
        rest = later;
        i += 1;
    }
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let whole = frames(&input.stream, &[]);
    let cut = frames(&input.stream, &input.cuts);
    assert_eq!(whole.0, cut.0, "frames depend on the reads");
    assert_eq!(
        whole.1.is_some(),
        cut.1.is_some(),
        "errors depend on the reads"
    );
    for frame in whole.0 {
        let Ok(value) = serde_json::from_slice(&frame) else {
            continue;
        };
        let Ok(msg) = Message::from_value(value) else {
            continue;
        };
        let mut f = Framer::new();
        f.push(&msg.to_bytes());
        let again = f
            .next_value()
            .expect("our encoding frames")
            .expect("one value");
        let again = Message::from_value(again).expect("our encoding decodes");
        assert_eq!(msg.to_value(), again.to_value());
        assert!(f.is_idle());
    }
});
