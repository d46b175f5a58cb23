//! Entry points for the coverage-guided fuzz targets in `fuzz/` (cargo feature `fuzzing`, off
//! in every build that ships).
//!
//! Most parsers are public and the targets call them directly. These functions reach the few
//! that are private — the OVSDB notification decoding, the unixctl connection loop, the XFRM
//! datagram splitter and the certificate parser — by running exactly the code the daemon runs
//! on that input, so the library's API does not widen for the fuzzer's sake. Each panics only
//! when an invariant the daemon relies on is broken: that panic is the fuzzer's crash.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use netlink_packet_core::NetlinkPayload;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backend::xfrm::{netlink, observe, socket};
use crate::control::server::{Shared, serve};
use crate::jsonrpc::Message;
use crate::jsonrpc::codec::Framer;
use crate::logging::{LogConfig, LogHandle};
use crate::model::bundle::{BundleError, CaBundle};
use crate::model::cert::{CertInfo, CertSource};
use crate::model::registry::Registry;
use crate::model::rows::{self, Rows};
use crate::ovsdb::client::decode_update;
use crate::ovsdb::monitor::SinceResult;
use crate::ovsdb::replica::Replica;
use crate::ovsdb::session::decode_result;
use crate::ovsdb::updates::{RowUpdate, RowUpdate2, TableUpdates, Updates};

/// A certificate source with no certificates: the OVSDB target fuzzes rows, not files.
struct NoCerts;

impl CertSource for NoCerts {
    fn cert_info(&mut self, _: &Path) -> Result<CertInfo, String> {
        Err("no certificates while fuzzing".to_owned())
    }

    fn key_public(&mut self, _: &Path) -> Result<Vec<u8>, String> {
        Err("no keys while fuzzing".to_owned())
    }

    fn ca_bundle(&mut self, path: &Path) -> Result<Arc<CaBundle>, BundleError> {
        Err(BundleError::Read {
            path: path.display().to_string(),
            detail: "no files while fuzzing".to_owned(),
        })
    }
}

#[derive(Deserialize)]
struct MethodOf {
    #[serde(default)]
    method: Option<String>,
}

/// OVSDB: `input[0]` picks the monitor method whose reply the first JSON value of the rest
/// is (`monitor_cond_since`, `monitor_cond`, `monitor`); every later value is a notification
/// (`update3`, `update2`, `update`) applied on top, as the client applies them. After each
/// one the model reads the replica incrementally, as the daemon does; at the end the
/// incremental rows and desired tunnels must equal those read from scratch.
pub fn ovsdb_stream(input: &[u8]) {
    let Some((&selector, stream)) = input.split_first() else {
        return;
    };
    let mut framer = Framer::new();
    framer.push(stream);
    // The scalars of the columns the monitor reads (`vswitch-schema/contract.json`).
    let scalars: BTreeSet<(String, String)> = [("Interface", "name"), ("Interface", "type")]
        .iter()
        .map(|(t, c)| ((*t).to_owned(), (*c).to_owned()))
        .collect();
    let mut replica = Replica::new(scalars.clone());
    let mut rows = Rows::default();
    let mut registry = Registry::new();
    let mut first = true;
    while let Ok(Some(frame)) = framer.next_frame() {
        if std::mem::take(&mut first) {
            let reply = match selector % 3 {
                0 => decode_result::<SinceResult>(&frame)
                    .map(|(found, _, u)| (found, Updates::Diffs(u))),
                1 => decode_result::<TableUpdates<RowUpdate2>>(&frame)
                    .map(|u| (false, Updates::Diffs(u))),
                _ => decode_result::<TableUpdates<RowUpdate>>(&frame)
                    .map(|u| (false, Updates::Rows(u))),
            };
            // The client's resync: on top of the kept replica when the server found our
            // transaction, else a new one.
            match reply {
                Ok((true, updates)) => replica.apply(updates),
                Ok((false, updates)) => {
                    replica = Replica::new(scalars.clone());
                    replica.apply(updates);
                }
                Err(_) => {}
            }
        } else {
            let method = serde_json::from_slice::<MethodOf>(&frame)
                .ok()
                .and_then(|m| m.method)
                .unwrap_or_default();
            if let Ok(update) = decode_update(&method, &frame) {
                replica.apply(update.updates);
            }
        }
        let touched = rows.catch_up(&mut replica);
        registry.update_changed(
            rows.open_vswitch(),
            &rows,
            touched.as_ref().map(|t| &t.names),
            &mut NoCerts,
        );
    }
    let all = rows::interfaces(&replica);
    assert!(
        rows.interfaces().eq(all.iter()),
        "incremental rows differ from the replica's"
    );
    let mut fresh = Registry::new();
    fresh.update(rows::open_vswitch(&replica).as_ref(), &all, &mut NoCerts);
    let confs = |r: &Registry| {
        r.desired()
            .tunnels
            .iter()
            .map(|(n, t)| (n.clone(), Arc::clone(&t.conf)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        confs(&registry),
        confs(&fresh),
        "incremental model differs from a full evaluation"
    );
}

/// unixctl: `input` is what an `ovs-appctl` client sends on one connection, served by the
/// real connection loop and command table (the main loop's commands are answered by a stand-in).
/// Every answer must be a JSON-RPC reply or error whose payload is a string.
pub fn unixctl_session(input: &[u8]) {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
    }
    let Ok(log) = LogHandle::new(LogConfig {
        log_file: None,
        specs: Vec::new(),
    }) else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(16);
    let shared = Arc::new(Shared { log, tx });
    let answers = RUNTIME.with(|rt| {
        let rt = rt.as_ref()?;
        Some(rt.block_on(async {
            // Larger than any input and its answers, so neither side waits on the other.
            let (mut client, server) = tokio::io::duplex(16 << 20);
            let main_loop = async {
                while let Some(req) = rx.recv().await {
                    let _ = req.reply.send(Ok(format!("{:?}", req.command)));
                }
            };
            let user = async {
                let _ = client.write_all(input).await;
                let _ = client.shutdown().await;
                let mut out = Vec::new();
                let _ = client.read_to_end(&mut out).await;
                out
            };
            let ((), (), out) = tokio::join!(serve(server, shared), main_loop, user);
            out
        }))
    });
    let Some(answers) = answers else {
        return;
    };
    let mut framer = Framer::new();
    framer.push(&answers);
    loop {
        match framer.next_value() {
            Ok(Some(v)) => match Message::from_value(v) {
                Ok(Message::Reply { result, .. }) => assert!(result.is_string()),
                Ok(Message::Error { error, .. }) => assert!(error.is_string()),
                other => panic!("not a unixctl answer: {other:?}"),
            },
            Ok(None) => break,
            Err(e) => panic!("answers do not frame: {e}"),
        }
    }
    assert!(framer.is_idle(), "a partial answer");
}

/// XFRM: `input` is one datagram the kernel sent on the static backend's socket, as a dump
/// answer (every message kept) and as a GET answer (the first one patched in).
pub fn xfrm_datagram(input: &[u8]) {
    let mut policies = Vec::new();
    let mut sas = Vec::new();
    for m in socket::split(input) {
        if let NetlinkPayload::InnerMessage(m) = m.payload {
            policies.extend(netlink::policy_of(m.clone()));
            sas.extend(netlink::sa_of(m));
        }
    }
    let mut obs = observe::of_dump(policies.clone(), sas.clone());
    for p in policies {
        if let Some(id) = p.id {
            observe::patch_policy(&mut obs, &id, Some(p.clone()));
            assert!(obs.policies.contains_key(&id) != obs.foreign_policies.contains(&id));
        }
    }
    for s in sas {
        let id = s.id;
        observe::patch_sa(&mut obs, &id, Some(s));
        assert!(obs.sas.contains_key(&id) || obs.foreign_sas.contains(&(id.dst, id.spi)));
    }
}

/// Certificates: `input` is a certificate file's content. A CN found is never empty.
pub fn certificate(input: &[u8]) {
    if let Ok(info) = crate::model::cert::parse(input, || "fuzz.pem".to_owned()) {
        assert!(!info.cn.is_empty());
    }
}
