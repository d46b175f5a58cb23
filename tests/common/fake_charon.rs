//! A recording stand-in for charon's VICI socket, for call-sequence tests and benchmarks: it
//! answers every command with success, keeps the loaded connections and their children (so
//! `list-conns` tells the truth), lists no SAs, and records every command in order. Real-daemon behaviour
//! is covered by `tests/strongswan_vici.rs`; this only counts and orders messages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ovs_monitor_ipsec::backend::vici::Message;
use ovs_monitor_ipsec::backend::vici::packet::{Packet, PacketType, read_packet, write_all};
use tokio::net::UnixListener;

#[derive(Debug, Default)]
pub struct State {
    /// (command, first section or `name`/`id` value) in arrival order.
    pub calls: Vec<(String, String)>,
    /// Loaded connection → its children, as `load-conn` sent them.
    pub conns: BTreeMap<String, Vec<String>>,
    pub connections: usize,
}

pub struct FakeCharon {
    pub socket: PathBuf,
    pub state: Arc<Mutex<State>>,
}

impl FakeCharon {
    /// Listens on `<dir>/charon.vici`; the serving thread lives as long as the test process.
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("charon.vici");
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind fake VICI");
        listener.set_nonblocking(true).expect("nonblocking");
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = UnixListener::from_std(listener).expect("listener");
                while let Ok((s, _)) = listener.accept().await {
                    st.lock().unwrap().connections += 1;
                    tokio::spawn(serve(s, st.clone()));
                }
            });
        });
        Self { socket, state }
    }

    pub fn count(&self, cmd: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(c, _)| c == cmd)
            .count()
    }

    pub fn calls(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn conns(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().conns.keys().cloned().collect()
    }

    /// The children of loaded connection `conn`.
    pub fn children(&self, conn: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .conns
            .get(conn)
            .cloned()
            .unwrap_or_default()
    }
}

fn subject(body: &Message) -> String {
    body.str("name")
        .or_else(|| body.str("id"))
        .or_else(|| body.str("child"))
        .or_else(|| body.str("ike"))
        .map(str::to_owned)
        .or_else(|| body.sections().next().map(|(n, _)| n.to_owned()))
        .unwrap_or_default()
}

async fn serve(mut s: tokio::net::UnixStream, st: Arc<Mutex<State>>) {
    let ok = || Message::new().kv("success", "yes");
    while let Ok(Some(p)) = read_packet(&mut s).await {
        let mut out = Vec::new();
        let mut reply = |kind, name: &str, body| {
            out.extend(Packet::new(kind, name, body).encode().expect("encode"))
        };
        match p.kind {
            PacketType::EventRegister | PacketType::EventUnregister => {
                reply(PacketType::EventConfirm, "", Message::new())
            }
            PacketType::CmdRequest => {
                let subj = subject(&p.body);
                let conns: Vec<(String, Vec<String>)> = {
                    let mut g = st.lock().unwrap();
                    g.calls.push((p.name.clone(), subj.clone()));
                    match p.name.as_str() {
                        "load-conn" => {
                            let children = p
                                .body
                                .section_of(&subj)
                                .and_then(|c| c.section_of("children"))
                                .map(|c| c.sections().map(|(n, _)| n.to_owned()).collect())
                                .unwrap_or_default();
                            g.conns.insert(subj.clone(), children);
                        }
                        "unload-conn" => {
                            g.conns.remove(&subj);
                        }
                        _ => {}
                    }
                    // Copied only for a listing: 4,000 loads must not copy 1,000 conns each.
                    if p.name == "list-conns" {
                        g.conns.clone().into_iter().collect()
                    } else {
                        Vec::new()
                    }
                };
                match p.name.as_str() {
                    "list-conns" => {
                        for (c, children) in conns {
                            let mut listed = Message::new();
                            for child in children {
                                listed.push_section(&child, Message::new().kv("mode", "TRANSPORT"));
                            }
                            let body = Message::new()
                                .section(&c, Message::new().section("children", listed));
                            reply(PacketType::Event, "list-conn", body);
                        }
                        reply(PacketType::CmdResponse, "", Message::new());
                    }
                    "list-sas" => reply(PacketType::CmdResponse, "", Message::new()),
                    "version" => reply(
                        PacketType::CmdResponse,
                        "",
                        Message::new().kv("version", "5.9.8-fake"),
                    ),
                    "load-key" => reply(PacketType::CmdResponse, "", ok().kv("id", "00aa")),
                    _ => reply(PacketType::CmdResponse, "", ok()),
                }
            }
            _ => {}
        }
        if write_all(&mut s, &out).await.is_err() {
            return;
        }
    }
}
