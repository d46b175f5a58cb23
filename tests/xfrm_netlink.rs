//! The batching XFRM socket against the real kernel, in a fresh network namespace: a batch
//! spans several datagrams, only failures and each datagram's last request are answered,
//! and every result must still land on the request it belongs to.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::kernel;
use common::xfrm::{LOCAL4, Netns};
use ovs_monitor_ipsec::backend::xfrm::derive::Key;
use ovs_monitor_ipsec::backend::xfrm::error::XfrmError;
use ovs_monitor_ipsec::backend::xfrm::netlink::{Op, Xfrm};
use ovs_monitor_ipsec::backend::xfrm::types::{Dir, Flow, PolicyId, Proto, SaId};
use ovs_monitor_ipsec::backend::xfrm::want::SaWant;

fn flow(i: u32) -> Flow {
    Flow {
        src: LOCAL4.parse().unwrap(),
        dst: IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        proto: Proto::Udp(4789),
    }
}

fn policy(i: u32) -> PolicyId {
    PolicyId {
        dir: Dir::Out,
        flow: flow(i),
    }
}

#[test]
fn results_of_a_multi_datagram_batch_land_on_their_own_requests() {
    const N: u32 = 600; // ~160 KB of requests: several datagrams
    let ns = Netns::new();
    // Every 50th request deletes a policy that does not exist (ENOENT); every 97th adds an
    // SA, which a kernel with ESP installs and one without refuses; everything else creates a
    // policy.
    let sa = |i: u32| SaWant {
        id: SaId {
            src: flow(i).src,
            dst: flow(i).dst,
            spi: 0x1000 + i,
        },
        flow: flow(i),
        key: Key([7; 20]),
    };
    let sas: Vec<SaWant> = (0..N).map(sa).collect();
    let ops: Vec<Op<'_>> = (0..N)
        .map(|i| match i {
            _ if i % 50 == 0 => Op::DelPolicy(policy(100_000 + i)),
            _ if i % 97 == 0 => Op::AddSa(Dir::Out, &sas[i as usize]),
            _ => Op::SetPolicy {
                id: policy(i),
                spi: 0x2000 + i,
            },
        })
        .collect();
    let (results, dumped) = ns.run_inside(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut x = Xfrm::open(Duration::from_secs(20)).unwrap();
            let results = x.run(ops.iter()).await;
            (results, x.dump_policies().await.unwrap())
        })
    });

    assert_eq!(results.len(), N as usize);
    for (i, r) in (0..N).zip(&results) {
        match (i % 50 == 0, i % 97 == 0, r) {
            (true, _, Err(XfrmError::Kernel { errno })) => assert_eq!(*errno, libc::ENOENT),
            (false, true, Ok(())) if kernel::has_esp() => {}
            (false, true, Err(XfrmError::Kernel { .. })) if !kernel::has_esp() => {}
            (false, false, Ok(())) => {}
            _ => panic!("request {i}: unexpected result {r:?}"),
        }
    }
    let sas_added = (0..N).filter(|i| i % 50 != 0 && i % 97 == 0).count();
    assert_eq!(
        ns.sas().len(),
        kernel::expect(sas_added, 0),
        "{:#?}",
        ns.sas()
    );
    let created = (0..N).filter(|i| i % 50 != 0 && i % 97 != 0).count();
    let ours: Vec<_> = dumped.iter().filter(|p| p.ours).collect();
    assert_eq!(ours.len(), created);
    // Each policy carries the SPI of its own request: nothing was shifted or swapped.
    for p in ours {
        assert_eq!(p.id, Some(policy(p.spi.wrapping_sub(0x2000))), "{p:?}");
    }
}
