//! The XFRM netlink socket: batched writes and dumps.
//!
//! Why not one request per message (netlink-proto's model, which we used first): a cold start
//! of 10,000 tunnels is 40,000 writes, and one `sendto` plus one `recvfrom` of an ack per write
//! cost more than the kernel's work. Netlink accepts many messages in one datagram and the
//! kernel's XFRM handler runs them in order inside our `sendmsg`, so a batch is:
//!
//! - up to [`BATCH_MAX`] messages or [`BATCH_BYTES`] in one `send`, only the last one asking
//!   for an ack;
//! - the kernel answers only what failed (an error carries the failed message's sequence
//!   number) and then the last message's ack, which closes the batch.
//!
//! So a batch costs one `send` and one `recv` plus one per failure. `NETLINK_CAP_ACK` keeps
//! error replies to the header of the failed request: without it the kernel echoes the whole
//! request, key bytes included, into our receive buffer.
//!
//! Requests carry this socket's port id as their sender (`nlmsg_pid`): the kernel copies it
//! into the notifications it multicasts about them, so [`super::events`] can tell our own
//! writes from everyone else's. [`Subscription`] is the socket those notifications arrive on.

use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_xfrm::{
    XFRM_MSG_DELPOLICY, XFRM_MSG_DELSA, XFRM_MSG_EXPIRE, XFRM_MSG_FLUSHPOLICY, XFRM_MSG_FLUSHSA,
    XFRM_MSG_NEWPOLICY, XFRM_MSG_NEWSA, XFRM_MSG_POLEXPIRE, XFRM_MSG_UPDPOLICY, XFRM_MSG_UPDSA,
    XFRM_USER_EXPIRE_LEN, XFRM_USER_POLICY_EXPIRE_LEN, XFRM_USER_POLICY_ID_LEN,
    XFRM_USER_POLICY_INFO_LEN, XFRM_USER_SA_ID_LEN, XFRM_USER_SA_INFO_LEN, XfrmMessage,
};
use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket, protocols::NETLINK_XFRM};
use tracing::debug;

use super::error::XfrmError;

/// Bytes of messages per datagram: far below the socket's send buffer.
const BATCH_BYTES: usize = 32 * 1024;
/// Messages per datagram: if all fail, their error replies (~1 KiB of receive buffer each)
/// still fit the default 208 KiB receive buffer.
const BATCH_MAX: usize = 128;
/// Receive buffer per `recv`: the kernel fills dump datagrams up to 32 KiB.
const RECV_BYTES: usize = 64 * 1024;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// Receive buffer of the event socket: a cold start of 10,000 static tunnels is 20,000 SA
/// notifications (each about 400 bytes) arriving while the event loop applies.
const EVENT_RCVBUF: usize = 4 << 20;

pub struct Socket {
    sock: TokioSocket,
    seq: u32,
    /// Our netlink port id, put in every request's header.
    port: u32,
    timeout: Duration,
}

impl Socket {
    /// Opens the socket; must run inside the tokio runtime. `timeout` bounds the wait for
    /// one batch's or one dump's answers.
    pub fn open(timeout: Duration) -> Result<Self, XfrmError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| XfrmError::Io { what, source }
        };
        let mut sock = TokioSocket::new(NETLINK_XFRM).map_err(io("open the XFRM socket"))?;
        let s = sock.socket_mut();
        let port = s
            .bind_auto()
            .map_err(io("bind the XFRM socket"))?
            .port_number();
        s.set_cap_ack(true)
            .map_err(io("set NETLINK_CAP_ACK on the XFRM socket"))?;
        Ok(Self {
            sock,
            seq: 0,
            port,
            timeout,
        })
    }

    /// The port id the kernel names as sender in notifications about our requests.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Sends `msgs` (message, netlink flags) in batches; one result per message, in order.
    /// Messages are built as their batch fills, so at most one batch of keys is in memory.
    pub async fn write(
        &mut self,
        msgs: &mut (dyn Iterator<Item = (XfrmMessage, u16)> + Send),
    ) -> Vec<Result<(), XfrmError>> {
        let mut results = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut msgs = msgs.peekable();
        while let Some((msg, flags)) = msgs.next() {
            let m = self.message(msg, flags);
            bytes += m.buffer_len();
            batch.push(m);
            if bytes >= BATCH_BYTES || batch.len() >= BATCH_MAX || msgs.peek().is_none() {
                results.extend(self.write_batch(std::mem::take(&mut batch)).await);
                bytes = 0;
            }
        }
        results
    }

    /// Runs one dump request; `keep` turns each message of the answer into what the caller
    /// needs as it arrives, so a dump of 20,000 policies never holds 20,000 parsed messages.
    pub async fn dump<T>(
        &mut self,
        msg: XfrmMessage,
        flags: u16,
        mut keep: impl FnMut(XfrmMessage) -> Option<T> + Send,
    ) -> Result<Vec<T>, XfrmError> {
        let m = self.message(msg, flags);
        let seq = m.header.sequence_number;
        self.send(&[m]).await?;
        let mut out = Vec::new();
        let mut done = false;
        while !done {
            for reply in self.recv().await? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => out.extend(keep(m)),
                    NetlinkPayload::Done(_) => done = true,
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => return Err(kernel(code.get())),
                        None => done = true,
                    },
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// One request that the kernel answers with one message (`XFRM_MSG_GETSA`,
    /// `XFRM_MSG_GETPOLICY`): `Ok(None)` when it has no such object (ENOENT for a policy,
    /// ESRCH for an SA).
    pub async fn get(&mut self, msg: XfrmMessage) -> Result<Option<XfrmMessage>, XfrmError> {
        let m = self.message(msg, NLM_F_REQUEST);
        let seq = m.header.sequence_number;
        self.send(&[m]).await?;
        let answer = tokio::time::timeout(self.timeout, async {
            loop {
                for reply in self.recv().await? {
                    if reply.header.sequence_number != seq {
                        continue;
                    }
                    match reply.payload {
                        NetlinkPayload::InnerMessage(m) => return Ok(Some(m)),
                        NetlinkPayload::Error(e) => {
                            match e.code.map(|c| c.get().saturating_abs()) {
                                Some(libc::ENOENT | libc::ESRCH) => return Ok(None),
                                Some(code) => return Err(kernel(code)),
                                None => return Ok(None),
                            }
                        }
                        _ => {}
                    }
                }
            }
        })
        .await;
        answer.unwrap_or_else(|_| {
            Err(XfrmError::Netlink(format!(
                "no answer from the kernel within {:?}",
                self.timeout
            )))
        })
    }

    fn message(&mut self, msg: XfrmMessage, flags: u16) -> NetlinkMessage<XfrmMessage> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        header.port_number = self.port;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        m
    }

    async fn write_batch(
        &mut self,
        mut batch: Vec<NetlinkMessage<XfrmMessage>>,
    ) -> Vec<Result<(), XfrmError>> {
        let n = batch.len();
        let Some(first) = batch.first().map(|m| m.header.sequence_number) else {
            return Vec::new();
        };
        let Some(last) = batch.last_mut() else {
            return Vec::new();
        };
        // Only the last message is acked; its ack ends the batch.
        last.header.flags |= NLM_F_ACK;
        let last = last.header.sequence_number;
        let mut results: Vec<Result<(), XfrmError>> = (0..n).map(|_| Ok(())).collect();
        if let Err(e) = self.send(&batch).await {
            let msg = e.to_string();
            return (0..n)
                .map(|_| Err(XfrmError::Netlink(msg.clone())))
                .collect();
        }
        let answered = tokio::time::timeout(self.timeout, async {
            loop {
                for reply in self.recv().await? {
                    let seq = reply.header.sequence_number;
                    let NetlinkPayload::Error(e) = reply.payload else {
                        continue;
                    };
                    let at = usize::try_from(seq.wrapping_sub(first)).unwrap_or(usize::MAX);
                    if let (Some(code), Some(r)) = (e.code, results.get_mut(at)) {
                        *r = Err(kernel(code.get()));
                    }
                    if seq == last {
                        return Ok::<(), XfrmError>(());
                    }
                }
            }
        })
        .await;
        let lost = match answered {
            Ok(Ok(())) => return results,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer from the kernel within {:?}", self.timeout),
        };
        // Whatever did not fail explicitly is unknown: report it as a netlink error (never as
        // a kernel refusal, which would mean "not created").
        results
            .into_iter()
            .map(|r| r.and(Err(XfrmError::Netlink(lost.clone()))))
            .collect()
    }

    async fn send(&mut self, msgs: &[NetlinkMessage<XfrmMessage>]) -> Result<(), XfrmError> {
        let mut buf = vec![0u8; msgs.iter().map(|m| align(m.buffer_len())).sum()];
        let mut at = 0;
        for m in msgs {
            let len = m.buffer_len();
            if let Some(dst) = buf.get_mut(at..at + len) {
                m.serialize(dst);
            }
            at += align(len);
        }
        let sent = self
            .sock
            .send(&buf)
            .await
            .map_err(|e| XfrmError::Netlink(format!("send: {e}")))?;
        if sent == buf.len() {
            Ok(())
        } else {
            Err(XfrmError::Netlink("short send".into()))
        }
    }

    /// One datagram, split into messages ([`split`]).
    async fn recv(&mut self) -> Result<Vec<NetlinkMessage<XfrmMessage>>, XfrmError> {
        let mut buf = Vec::with_capacity(RECV_BYTES);
        self.sock
            .recv(&mut buf)
            .await
            .map_err(|e| XfrmError::Netlink(format!("receive: {e}")))?;
        Ok(split(&buf))
    }
}

/// The messages of one received datagram (a dump's or a notification's). Dumped SAs and SA
/// notifications carry keys: callers keep only what they need and drop the rest at once. A
/// message we cannot parse (another program's state in a shape netlink-packet-xfrm does not
/// know) is skipped, never fatal; a length that does not fit ends the datagram.
pub(crate) fn split(datagram: &[u8]) -> Vec<NetlinkMessage<XfrmMessage>> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while let Some(len) = rest
        .first_chunk::<4>()
        .and_then(|b| usize::try_from(u32::from_ne_bytes(*b)).ok())
        .filter(|len| (HEADER_LEN..=rest.len()).contains(len))
    {
        match rest
            .get(..len)
            .filter(|m| parseable(m))
            .map(NetlinkMessage::<XfrmMessage>::deserialize)
        {
            Some(Ok(m)) => out.push(m),
            _ => debug!("skipped an XFRM netlink message we cannot parse"),
        }
        rest = rest.get(align(len)..).unwrap_or_default();
    }
    out
}

/// Whether `msg` (header included) is a message we read and is long enough for its fixed
/// part. netlink-packet-xfrm 0.5 slices a message's fixed part (`struct xfrm_usersa_info`,
/// `struct xfrm_userpolicy_info`, ...) without checking its length, so a short one would
/// panic, and the daemon aborts on a panic: only the types the backend reads (dump replies
/// and the notifications `events` reacts to) are parsed, and only when they are whole.
/// Netlink's own messages (error, done) are parsed with checks.
fn parseable(msg: &[u8]) -> bool {
    let kind = msg
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_ne_bytes);
    let payload = msg.len().saturating_sub(HEADER_LEN);
    match kind {
        NLMSG_NOOP | NLMSG_ERROR | NLMSG_DONE => true,
        XFRM_MSG_NEWSA | XFRM_MSG_UPDSA => payload >= XFRM_USER_SA_INFO_LEN,
        XFRM_MSG_NEWPOLICY | XFRM_MSG_UPDPOLICY => payload >= XFRM_USER_POLICY_INFO_LEN,
        XFRM_MSG_DELSA => payload >= XFRM_USER_SA_ID_LEN,
        XFRM_MSG_DELPOLICY => payload >= XFRM_USER_POLICY_ID_LEN,
        XFRM_MSG_EXPIRE => payload >= XFRM_USER_EXPIRE_LEN,
        XFRM_MSG_POLEXPIRE => payload >= XFRM_USER_POLICY_EXPIRE_LEN,
        // `struct xfrm_usersa_flush` is one byte; a policy flush has no fixed part.
        XFRM_MSG_FLUSHSA => payload >= 1,
        XFRM_MSG_FLUSHPOLICY => true,
        _ => false,
    }
}

/// A socket subscribed to XFRM multicast groups: the kernel's notifications of SAs and
/// policies added, deleted and expired, by anyone.
pub struct Subscription {
    sock: TokioSocket,
}

impl Subscription {
    /// Opens the socket and joins `groups` (`XFRMNLGRP_*`); must run inside the tokio runtime.
    pub fn open(groups: &[u32]) -> Result<Self, XfrmError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| XfrmError::Io { what, source }
        };
        let mut sock = TokioSocket::new(NETLINK_XFRM).map_err(io("open the XFRM event socket"))?;
        let s = sock.socket_mut();
        s.bind_auto().map_err(io("bind the XFRM event socket"))?;
        // Best effort: a smaller buffer only makes an overrun (and a full pass) likelier.
        if let Err(e) = s.set_rx_buf_sz(EVENT_RCVBUF) {
            debug!("cannot enlarge the XFRM event socket's receive buffer: {e}");
        }
        for g in groups {
            s.add_membership(*g)
                .map_err(io(&format!("join XFRM multicast group {g}")))?;
        }
        Ok(Self { sock })
    }

    /// The messages of the next datagram. `Ok(None)`: the receive buffer overflowed and
    /// notifications were lost (`ENOBUFS`); the socket stays usable.
    pub async fn recv(&mut self) -> Result<Option<Vec<NetlinkMessage<XfrmMessage>>>, XfrmError> {
        let mut buf = Vec::with_capacity(RECV_BYTES);
        match self.sock.recv(&mut buf).await {
            Ok(()) => Ok(Some(split(&buf))),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(None),
            Err(e) => Err(XfrmError::Netlink(format!("receive: {e}"))),
        }
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The kernel sends negative error codes; ours are positive.
fn kernel(code: i32) -> XfrmError {
    XfrmError::Kernel {
        errno: code.saturating_abs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_xfrm::policy;

    fn whole_policy() -> Vec<u8> {
        let msg = XfrmMessage::AddPolicy(policy::ModifyMessage::default());
        let mut m =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    /// Found by the `xfrm_netlink` fuzz target: a `XFRM_MSG_NEWPOLICY` shorter than its
    /// fixed part made netlink-packet-xfrm panic (the daemon aborts on a panic). Every type
    /// we parse, one byte short of its fixed part, is skipped and the message after it kept.
    #[test]
    fn short_messages_are_skipped_not_parsed() {
        let whole = whole_policy();
        for (kind, fixed) in [
            (XFRM_MSG_NEWPOLICY, XFRM_USER_POLICY_INFO_LEN),
            (XFRM_MSG_UPDPOLICY, XFRM_USER_POLICY_INFO_LEN),
            (XFRM_MSG_NEWSA, XFRM_USER_SA_INFO_LEN),
            (XFRM_MSG_UPDSA, XFRM_USER_SA_INFO_LEN),
            (XFRM_MSG_DELSA, XFRM_USER_SA_ID_LEN),
            (XFRM_MSG_DELPOLICY, XFRM_USER_POLICY_ID_LEN),
            (XFRM_MSG_EXPIRE, XFRM_USER_EXPIRE_LEN),
            (XFRM_MSG_POLEXPIRE, XFRM_USER_POLICY_EXPIRE_LEN),
        ] {
            let len = HEADER_LEN + fixed - 1;
            let mut short = vec![0u8; align(len)];
            short[..4].copy_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
            short[4..6].copy_from_slice(&kind.to_ne_bytes());
            short.extend_from_slice(&whole);
            let got = split(&short);
            assert_eq!(
                got.len(),
                1,
                "kind {kind}: the whole message after it is kept"
            );
            assert!(matches!(
                got[0].payload,
                NetlinkPayload::InnerMessage(XfrmMessage::AddPolicy(_))
            ));
        }
    }
}
