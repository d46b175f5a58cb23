//! Which end of a tunnel starts its IKE SA, when starting it from both ends would break it.
//!
//! strongSwan: both ends load the same connection shape with `start_action = trap`, so traffic
//! from either side brings the tunnel up and nothing ever leaves in clear. Starting it eagerly
//! (VICI `initiate`) from BOTH ends at the same moment — what OVN does when it adds a chassis —
//! makes two IKE_SAs whose IKE_AUTH both carry INITIAL_CONTACT (charon sends it when it has no
//! IKE_SA with that peer yet, unless `unique = never`); each charon then destroys the IKE_SA
//! it started ("destroying duplicate IKE_SA ... received INITIAL_CONTACT") and keeps the one
//! the peer started, so each end is left with an IKE_SA the other has deleted.
//!
//! Libreswan: a GRE tunnel is one conn on both ends. When both pluto 4.10 start it and the
//! exchanges cross, each end completes the peer's IKE_AUTH as responder, then drops the IKE SA
//! it initiated as superseded without telling the peer ("IKE SA was superseded #7; drop this
//! negotiation", "NOT sending notification"): each end keeps a Child SA whose other half the
//! peer never installed, both report it established, and every packet is dropped (found by
//! the QEMU tier, `libreswan-gre-ipv4-ca`). A geneve/vxlan tunnel has an inbound and an
//! outbound conn and each end starts only its outbound one, so it is not affected.
//!
//! So only one end initiates: the one with the lower address (`options:local_ip`, or the
//! source address the kernel picks for the peer, which is what charon's `%any` and pluto's
//! `%defaultroute` resolve to; the monitor runs in the IKE daemon's network namespace).
//! Both ends compute the same answer without talking to each other. The other end only
//! answers (strongSwan's trap policies still start the IKE_SA if its own traffic comes first;
//! Libreswan's backend initiates after the grace period if the peer did not). When the
//! address cannot be found (no route), this end initiates, as before.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// True when this end starts the IKE_SA to `remote`.
pub fn we_initiate(local: Option<IpAddr>, remote: IpAddr) -> bool {
    local
        .or_else(|| source_address(remote))
        .is_none_or(|l| l < remote)
}

/// The kernel's routing decision toward a peer, as a connected socket sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteProbe {
    /// The source address the kernel picks.
    pub source: IpAddr,
    /// The path MTU it knows (route MTU, else the output device's, lowered by a cached
    /// path-MTU exception); `None` if it cannot say.
    pub mtu: Option<u32>,
}

thread_local! {
    /// One unconnected UDP socket per address family, reused by [`probe`]: a passive pass of
    /// VICI or Libreswan probes every tunnel without `local_ip` whose IKE SA is missing, and a
    /// socket made and closed per probe cost three times the lookup (10,000 probes: ~120 ms
    /// against ~40 ms).
    static SOCKETS: RefCell<Sockets> = const { RefCell::new(Sockets { v4: None, v6: None }) };
}

struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

/// Looks up the route to `remote`: a connected UDP socket sends nothing, it only looks up
/// the route (`None`: no route). Also what `tunnels/show` uses for each tunnel's path MTU, so
/// it costs a few system calls, never a process. The socket is dissolved again afterwards
/// (`connect` to `AF_UNSPEC`, udp(7)), which also forgets the source address the kernel chose,
/// so the next probe gets its own.
pub fn probe(remote: IpAddr) -> Option<RouteProbe> {
    #[cfg(test)]
    tests::PROBES.with(|n| n.set(n.get() + 1));
    SOCKETS.with(|cell| {
        let mut sockets = cell.borrow_mut();
        let slot = match remote {
            IpAddr::V4(_) => &mut sockets.v4,
            IpAddr::V6(_) => &mut sockets.v6,
        };
        let socket = match slot.take() {
            Some(s) => s,
            None => UdpSocket::bind((unspecified(remote), 0)).ok()?,
        };
        let found = probe_with(&socket, remote);
        if disconnect(&socket) {
            *slot = Some(socket);
        }
        found
    })
}

/// The wildcard address of `remote`'s family, for a probe socket to bind.
fn unspecified(remote: IpAddr) -> IpAddr {
    match remote {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn probe_with(socket: &UdpSocket, remote: IpAddr) -> Option<RouteProbe> {
    socket.connect((remote, 500)).ok()?;
    let source = socket.local_addr().ok()?.ip();
    let (level, name) = match remote {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on a socket we own, into a c_int of the length we pass.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut mtu).cast(),
            &raw mut len,
        )
    };
    let mtu = (rc == 0).then(|| u32::try_from(mtu).ok()).flatten();
    Some(RouteProbe { source, mtu })
}

/// Dissolves `socket`'s association (and its source address and port); false if the kernel
/// refused, and the socket is then not reused.
fn disconnect(socket: &UdpSocket) -> bool {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: connect(2) on a socket we own, with a sockaddr of the length we pass.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            &raw const unspec,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// The source address the kernel picks for `remote` (`None`: no route), remembered until the
/// routing may have changed: a passive pass of VICI or Libreswan asks it for every tunnel
/// without `local_ip` whose IKE SA is missing, each pass (10,000 route lookups were a third of
/// such a pass's CPU).
pub fn source_address(remote: IpAddr) -> Option<IpAddr> {
    SOURCES.with(|cell| cell.borrow_mut().source(remote))
}

/// Most sources remembered (a few hundred KiB); past it the cache starts over.
const MAX_SOURCES: usize = 65_536;

/// rtnetlink groups whose notifications can change a source address: links, addresses, routes
/// and policy rules, both families.
const ROUTING_GROUPS: [libc::c_uint; 7] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV4_RULE,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_IPV6_RULE,
];

thread_local! {
    static SOURCES: RefCell<SourceCache> = RefCell::new(SourceCache::default());
}

/// Sources found by [`probe`], valid while no routing notification arrived on `watch` (a
/// socket subscribed to [`ROUTING_GROUPS`] before the first probe it covers, so no change after
/// a probe can go unseen; a lost notification, `ENOBUFS`, counts as a change). Without the
/// socket nothing is remembered.
#[derive(Default)]
struct SourceCache {
    watch: Option<netlink_sys::Socket>,
    /// The watch could not be opened: probe every time.
    unwatched: bool,
    sources: std::collections::HashMap<IpAddr, Option<IpAddr>>,
}

impl SourceCache {
    fn source(&mut self, remote: IpAddr) -> Option<IpAddr> {
        if !self.unchanged() {
            self.sources.clear();
        }
        if let Some(found) = self.sources.get(&remote) {
            return *found;
        }
        let found = probe(remote).map(|p| p.source);
        if self.watch.is_some() {
            if self.sources.len() >= MAX_SOURCES {
                self.sources.clear();
            }
            self.sources.insert(remote, found);
        }
        found
    }

    /// True when no routing notification arrived since the last look (reads them all).
    fn unchanged(&mut self) -> bool {
        if self.watch.is_none() && !self.unwatched {
            self.watch = watch();
            self.unwatched = self.watch.is_none();
            return false;
        }
        let Some(socket) = &self.watch else {
            return false;
        };
        // Only that something arrived matters: a notification longer than the buffer is
        // truncated, and it is read on every lookup, so it lives on the stack.
        let mut buf = [0u8; 64];
        let mut unchanged = true;
        loop {
            match socket.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                Ok(_) => unchanged = false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return unchanged,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => unchanged = false,
                Err(_) => {
                    self.watch = None;
                    self.unwatched = true;
                    return false;
                }
            }
        }
    }
}

/// A non-blocking rtnetlink socket joined to [`ROUTING_GROUPS`]; `None` if the kernel refuses.
fn watch() -> Option<netlink_sys::Socket> {
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).ok()?;
    socket.bind_auto().ok()?;
    for group in ROUTING_GROUPS {
        socket.add_membership(group).ok()?;
    }
    Some(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::process::Command;

    thread_local! {
        /// Route lookups made by this thread.
        pub(super) static PROBES: Cell<u64> = const { Cell::new(0) };
    }

    fn probes() -> u64 {
        PROBES.with(Cell::get)
    }

    fn run_ip(args: &str) {
        let out = Command::new("ip").args(args.split(' ')).output().unwrap();
        assert!(out.status.success(), "ip {args}: {out:?}");
    }

    #[test]
    fn a_remembered_source_is_forgotten_when_the_addresses_change() {
        // A network namespace of this thread alone (processes it starts inherit it).
        std::thread::spawn(|| {
            // SAFETY: unshare(2) of this thread's network namespace; no pointer involved.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            run_ip("link add d0 type veth peer name d1");
            run_ip("link set d1 up");
            run_ip("addr add 10.9.0.1/24 dev d0");
            run_ip("link set d0 up");
            let peer = ip("10.9.0.2");
            // Links coming up notify for a while (carrier, IPv6 link-local addresses), and
            // each notification rightly forgets what was found: wait until an answer stays.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let looked_up = loop {
                assert_eq!(source_address(peer), Some(ip("10.9.0.1")));
                std::thread::sleep(std::time::Duration::from_millis(300));
                let looked_up = probes();
                assert_eq!(source_address(peer), Some(ip("10.9.0.1")));
                if probes() == looked_up {
                    break looked_up;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "routing never settled"
                );
            };
            run_ip("addr del 10.9.0.1/24 dev d0");
            run_ip("addr add 10.9.0.5/24 dev d0");
            assert_eq!(
                source_address(peer),
                Some(ip("10.9.0.5")),
                "not the old source"
            );
            assert_eq!(probes(), looked_up + 1);
        })
        .join()
        .unwrap();
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exactly_one_end_initiates() {
        for (a, b) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::9", "2001:db8::10")] {
            assert_ne!(
                we_initiate(Some(ip(a)), ip(b)),
                we_initiate(Some(ip(b)), ip(a))
            );
        }
        assert!(we_initiate(Some(ip("10.0.0.1")), ip("10.0.0.2")));
    }

    #[test]
    fn without_local_ip_the_route_source_decides() {
        // Loopback: the source is 127.0.0.1 itself, never lower than 127.0.0.1.
        assert!(!we_initiate(None, ip("127.0.0.1")));
        assert_eq!(source_address(ip("127.0.0.1")), Some(ip("127.0.0.1")));
    }

    /// What a socket made for one probe sees (the probe before sockets were reused).
    fn fresh(remote: IpAddr) -> Option<IpAddr> {
        let s = UdpSocket::bind((unspecified(remote), 0)).ok()?;
        s.connect((remote, 500)).ok()?;
        Some(s.local_addr().ok()?.ip())
    }

    #[test]
    fn a_reused_socket_picks_each_probes_own_source_address() {
        // Loopback, then the default route (192.0.2.1 is routed by it, if there is one),
        // then loopback again: a source kept from the previous probe would show here.
        let seq = [
            "127.0.0.1",
            "192.0.2.1",
            "127.0.0.1",
            "::1",
            "2001:db8::1",
            "::1",
        ];
        for remote in seq.map(ip) {
            assert_eq!(source_address(remote), fresh(remote), "probe of {remote}");
        }
        assert_eq!(source_address(ip("127.0.0.1")), Some(ip("127.0.0.1")));
    }

    #[test]
    fn the_probe_reads_the_path_mtu_of_loopback() {
        let lo_mtu: u32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65536);
        // The kernel caps an IPv4 path MTU at 65535.
        let p = probe(ip("127.0.0.1"));
        assert_eq!(p.map(|p| p.mtu), Some(Some(lo_mtu.min(65535))));
    }
}
