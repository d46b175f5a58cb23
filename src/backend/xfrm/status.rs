//! Pure: each tunnel's live state and `tunnels/show` details from an observation.

use std::collections::BTreeMap;

use super::error::XfrmError;
use super::types::{Guard, Observed, SaId, generation_hex};
use super::want::{TunnelWant, WAITING_FOR_PEER, Wants};
use crate::backend::{Details, LiveState, LiveStatus};
use crate::status::keys;

/// ESN sequence numbers are 64-bit.
const SEQ_MAX: u64 = u64::MAX;

pub fn status(wants: &Wants, obs: &Observed) -> BTreeMap<String, LiveStatus> {
    wants
        .iter()
        .map(|(name, w)| {
            let st = match w {
                Err(reason) => LiveStatus::failed(LiveState::Error, reason.as_str()),
                Ok(w) => tunnel_status(w, obs),
            };
            (name.clone(), st)
        })
        .collect()
}

fn tunnel_status(w: &TunnelWant, obs: &Observed) -> LiveStatus {
    let has_sa = |id: &SaId| obs.sas.contains_key(id);
    let guard = Guard {
        remote: w.out_flow.dst,
        local: w.out_flow.src,
        proto: w.out_flow.proto,
    };
    let guarded = obs.guards.as_ref().is_some_and(|g| g.contains(&guard));
    let mut missing = Vec::new();
    if w.out_sa.as_ref().is_some_and(|s| !has_sa(&s.id)) {
        missing.push("outbound SA");
    }
    if obs.policies.get(&w.out_policy()) != Some(&w.out_spi()) {
        missing.push("out policy");
    }
    if !obs.policies.contains_key(&w.in_policy()) {
        missing.push("in policy");
    }
    if w.in_sa.as_ref().is_some_and(|s| !has_sa(&s.id)) {
        missing.push("inbound SA");
    }
    if !guarded {
        missing.push("nftables guard");
    }
    let unknown = unknown_peer_spis(w, obs);
    let refused = w
        .sas()
        .filter(|(_, s)| !has_sa(&s.id))
        .find_map(|(d, s)| Some((d, s.id, obs.refused.get(&s.id)?.errno)));
    let mut st = if let Some((d, id, errno)) = refused {
        // Worded as the apply error of the pass that was refused, so OVSDB is not rewritten.
        let e = XfrmError::Kernel { errno };
        LiveStatus::failed(
            LiveState::Error,
            format!("cannot add {d} SA {id}: {e}{}", e.hint()),
        )
    } else {
        match (&w.in_sa, missing.is_empty(), &obs.nft_error) {
            (None, _, _) => down(WAITING_FOR_PEER.to_owned()),
            (Some(_), true, _) if !unknown.is_empty() => down(format!(
                "the peer sends ESP with SPI {} for which no key is installed here: the two ends disagree on a key generation (one of them rebooted or re-created its SAs?) or on the PSK; relay each end's external_ids:ipsec-generation into the other's options:ipsec_peer_generation. Its packets are dropped until then",
                unknown.join(", ")
            )),
            (Some(_), true, _) => LiveStatus::new(LiveState::Up),
            (Some(_), false, Some(e)) if !guarded => {
                LiveStatus::failed(LiveState::Error, format!("nftables guard: {e}"))
            }
            (Some(_), false, _) => down(format!("not installed: {}", missing.join(", "))),
        }
    };
    st.set_key(keys::GENERATION, generation_hex(&w.generation));
    if w.rotating {
        let ready = w.in_next.as_ref().is_some_and(|s| has_sa(&s.id));
        st.set_key(keys::ROTATION, if ready { "ready" } else { "pending" });
    }
    for (d, s) in w.sas().filter(|(_, s)| has_sa(&s.id)) {
        st.active_mut()
            .push_fmt(format_args!("{d} 0x{:08x}", s.id.spi));
    }
    details(st.details_mut(), w, obs, guarded);
    st.shrink_to_fit();
    st
}

/// SPIs that recently arrived from the peer and that no SA here (ours or foreign) knows: the
/// peer sends with a key we cannot derive, and the kernel drops those packets.
fn unknown_peer_spis(w: &TunnelWant, obs: &Observed) -> Vec<String> {
    obs.esp_seen
        .iter()
        .filter(|s| s.src == w.out_flow.dst && s.dst == w.out_flow.src)
        .filter(|s| !obs.sas.contains_key(s) && !obs.foreign_sas.contains(&(s.dst, s.spi)))
        .map(|s| format!("0x{:08x}", s.spi))
        .collect()
}

fn down(reason: String) -> LiveStatus {
    LiveStatus::failed(LiveState::Down, reason)
}

fn details(out: &mut Details, w: &TunnelWant, obs: &Observed, guarded: bool) {
    out.section("Kernel SAs (static keys)");
    for (d, s) in w.sas() {
        match obs.sas.get(&s.id) {
            Some(c) => out.push_fmt(format_args!(
                "{d} {}: {} bytes, {} packets, replay drops {}, integrity failures {}, sequence headroom {}",
                s.id,
                c.bytes,
                c.packets,
                c.replay_drops,
                c.integrity_failed,
                SEQ_MAX - c.oseq
            )),
            None => out.push_fmt(format_args!("{d} {}: missing", s.id)),
        }
    }
    let present = |ok: bool| if ok { "installed" } else { "missing" };
    out.section("Kernel policies");
    out.push_fmt(format_args!(
        "{} (spi 0x{:08x}): {}",
        w.out_policy(),
        w.out_spi(),
        present(obs.policies.get(&w.out_policy()) == Some(&w.out_spi()))
    ));
    out.push_fmt(format_args!(
        "{} (level required): {}",
        w.in_policy(),
        present(obs.policies.contains_key(&w.in_policy()))
    ));
    out.section("Fail-closed guard");
    out.push_fmt(format_args!(
        "table inet ovs_ipsec drops cleartext {}: {}",
        w.in_flow(),
        present(guarded)
    ));
    if !obs.xfrm_stat.is_empty() {
        out.section("Kernel XFRM error counters (/proc/net/xfrm_stat, all tunnels)");
        for (k, v) in &obs.xfrm_stat {
            out.push_fmt(format_args!("{k}: {v}"));
        }
    }
}
