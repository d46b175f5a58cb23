//! Which end of a tunnel starts its IKE_SA.
//!
//! Both ends load the same connection shape with `start_action = trap`, so traffic from either
//! side brings the tunnel up and nothing ever leaves in clear. Starting it eagerly (VICI
//! `initiate`) from BOTH ends at the same moment — what OVN does when it adds a chassis — makes
//! two IKE_SAs whose IKE_AUTH both carry INITIAL_CONTACT (charon sends it when it has no
//! IKE_SA with that peer yet, unless `unique = never`); each charon then destroys the IKE_SA
//! it started ("destroying duplicate IKE_SA ... received INITIAL_CONTACT") and keeps the one
//! the peer started, so each end is left with an IKE_SA the other has deleted.
//!
//! So only one end initiates: the one with the lower address (`options:local_ip`, or the
//! source address the kernel picks for the peer, which is what charon's `%any` resolves to).
//! Both ends compute the same answer without talking to each other. The other end only
//! answers; its trap policies still start the IKE_SA if its own traffic comes first, and
//! INITIAL_CONTACT keeps its meaning for a rebooted peer (we keep charon's default
//! `unique = no`). When the address cannot be found (no route), this end initiates, as before.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

/// True when this end starts the IKE_SA to `remote`.
pub fn we_initiate(local: Option<IpAddr>, remote: IpAddr) -> bool {
    local
        .or_else(|| source_address(remote))
        .is_none_or(|l| l < remote)
}

/// The kernel's source address for packets to `remote`: a connected UDP socket sends nothing,
/// it only looks up the route.
fn source_address(remote: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = match remote {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).ok()?;
    socket.connect((remote, 500)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
