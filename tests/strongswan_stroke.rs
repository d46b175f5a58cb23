//! strongSwan legacy mode without charon: golden rendering against the Python monitor's
//! output, and call sequences against a recording stub `ipsec` driven through a real
//! ovsdb-server, ovs-vsctl and ovs-appctl.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::monitor::{Monitor, iface_key, wait_for};
use common::ovsdb_server::{OvsdbServer, tunnel_port_args};
use common::strongswan_stroke::{StubRoot, mode, start_monitor};
use ovs_monitor_ipsec::backend::strongswan_stroke::plan::OUTDATED;
use ovs_monitor_ipsec::backend::strongswan_stroke::render::{self, DEFAULTS};
use ovs_monitor_ipsec::backend::templates::Templates;
use ovs_monitor_ipsec::model::bundle::{BundleCa, CaBundle};
use ovs_monitor_ipsec::model::{
    Auth, Desired, DesiredTunnel, Pki, Secret, SkbMark, TunnelConf, TunnelType,
};

const T: Duration = Duration::from_secs(20);

/// The CA directory the golden files are rendered with, and the id of the one CA there.
const CA_DIR: &str = "/etc/ipsec.d/ovs-cacerts";
const CA_ID: &str = "1111111111111111";

// ---------------------------------------------------------------- golden rendering

fn tunnel(
    name: &str,
    kind: TunnelType,
    remote: &str,
    auth: Auth,
    pki: Option<Arc<Pki>>,
) -> DesiredTunnel {
    let remote_ip = remote.parse().unwrap();
    DesiredTunnel {
        version: 1,
        conf: Arc::new(TunnelConf {
            pki,
            ..TunnelConf::new(name, kind, remote_ip, auth)
        }),
    }
}

fn desired(tunnels: Vec<DesiredTunnel>) -> Desired {
    Desired {
        global: Default::default(),
        tunnels: tunnels
            .into_iter()
            .map(|t| (t.conf.name.clone(), t))
            .collect(),
    }
}

fn psk(s: &str) -> Auth {
    Auth::Psk(Secret::new(s))
}

fn pki(ca: bool) -> Arc<Pki> {
    Arc::new(Pki {
        certificate: "/tmp/tb/pki/left-cert.pem".into(),
        private_key: "/tmp/tb/pki/left-privkey.pem".into(),
        ca_cert: ca.then(|| PathBuf::from("/tmp/tb/pki/right-cert.pem")),
        local_name: "left".into(),
    })
}

/// A config file's sections (header line + its lines in order), sorted, plus the first line:
/// what charon reads, independent of section order and blank lines. A section written twice
/// stays twice, so it cannot compare equal to a file with it once.
fn sections(text: &str) -> (String, Vec<Vec<String>>) {
    let mut all = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        if !line.starts_with(' ') && !cur.is_empty() {
            all.push(std::mem::take(&mut cur));
        }
        cur.push(line.trim().to_owned());
    }
    if !cur.is_empty() {
        all.push(cur);
    }
    all.sort();
    (text.lines().next().unwrap_or_default().to_owned(), all)
}

/// Section headers (`conn X`, `ca X`) that appear more than once.
fn duplicated_headers(sections: &[Vec<String>]) -> Vec<&str> {
    let mut headers: Vec<&str> = sections.iter().map(|s| s[0].as_str()).collect();
    headers.sort_unstable();
    let mut dups: Vec<&str> = headers
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    dups.dedup();
    dups
}

fn golden(case: &str, file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/golden/strongswan/{case}/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The Python output with our deliberate changes: PSKs in hex, no stt shunt, and the CA
/// section loaded (`auto=add`: a `ca` section defaults to `auto=ignore`, so charon never
/// loaded the Python monitor's CA and CA-signed peers failed with "no trusted RSA public key"),
/// one per member of the bundle, from its own file in the CA directory.
fn expected_conf(case: &str) -> (String, Vec<Vec<String>>) {
    let (first, s) = sections(&golden(case, "ipsec.conf"));
    let mut s: Vec<Vec<String>> = s
        .into_iter()
        .filter(|sec| sec[0] != "conn prevent_unencrypted_stt")
        .map(|mut sec| {
            if sec[0] == "ca ca_auth" {
                sec = vec![
                    format!("ca ovs-ca-{CA_ID}"),
                    format!("cacert={CA_DIR}/ovs-ca-{CA_ID}.der"),
                    "auto=add".into(),
                ];
            }
            sec
        })
        .collect();
    s.sort();
    (first, s)
}

fn expected_secrets(case: &str) -> Vec<String> {
    let mut lines = golden(case, "ipsec.secrets")
        .lines()
        .map(|l| match l.split_once(" : PSK \"") {
            Some((sel, rest)) => {
                let key = rest.trim_end_matches('"');
                let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
                format!("{sel} : PSK 0x{hex}")
            }
            None => l.replace(" : RSA ", " : PKCS8 "),
        })
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>();
    lines.sort();
    lines
}

fn check(case: &str, d: &Desired) {
    let t = Templates::load(None, DEFAULTS).unwrap();
    let r = render::render(Path::new(CA_DIR), &t, &render::Sections::default(), d).unwrap();
    let ours = sections(&r.conf);
    assert_eq!(
        duplicated_headers(&ours.1),
        Vec::<&str>::new(),
        "{case} ipsec.conf has a section twice:\n{}",
        r.conf
    );
    assert_eq!(ours, expected_conf(case), "{case} ipsec.conf:\n{}", r.conf);
    let mut ours: Vec<&str> = r.secrets.lines().filter(|l| !l.trim().is_empty()).collect();
    ours.sort_unstable();
    assert_eq!(ours, expected_secrets(case), "{case} ipsec.secrets");
}

#[test]
fn golden_psk_gre_vxlan_and_ipv6_geneve_with_pass_through() {
    let mut gnv = tunnel(
        "gnv1",
        TunnelType::Geneve,
        "2001:db8::2",
        psk("v6secret"),
        None,
    );
    Arc::make_mut(&mut gnv.conf)
        .custom
        .insert("ikelifetime".into(), "3h".into());
    check(
        "psk",
        &desired(vec![
            gnv,
            tunnel(
                "vx1",
                TunnelType::Vxlan,
                "192.0.2.2",
                psk("swordfish"),
                None,
            ),
            tunnel("gre1", TunnelType::Gre, "192.0.2.3", psk("gresecret"), None),
        ]),
    );
}

#[test]
fn golden_ca_signed() {
    let p = pki(true);
    let mut d = desired(vec![tunnel(
        "gnv1",
        TunnelType::Geneve,
        "192.0.2.2",
        Auth::CaSigned {
            remote_name: "right".into(),
        },
        Some(p.clone()),
    )]);
    d.global.ca_bundle = p.ca_cert.clone().map(|path| {
        Arc::new(CaBundle {
            path,
            sha256: [0; 32],
            members: vec![BundleCa {
                der: b"the CA".to_vec(),
                sha256: [0x11; 32],
                subject: "CN=right".into(),
            }],
        })
    });
    d.global.pki = Some(p);
    check("cert-ca", &d);
}

#[test]
fn golden_self_signed() {
    let p = pki(false);
    let mut d = desired(vec![tunnel(
        "gnv1",
        TunnelType::Geneve,
        "192.0.2.2",
        Auth::SelfSigned {
            remote_cert: "/tmp/tb/pki/right-cert.pem".into(),
            remote_name: "right".into(),
        },
        Some(p.clone()),
    )]);
    d.global.pki = Some(p);
    check("cert-selfsigned", &d);
}

#[test]
fn golden_skb_mark_shunts() {
    let mut d = desired(vec![tunnel(
        "gre1",
        TunnelType::Gre,
        "192.0.2.3",
        psk("gresecret"),
        None,
    )]);
    d.global.skb_mark = Some(SkbMark { value: 0, mask: 1 });
    check("skbmark", &d);
}

#[test]
fn golden_empty_config_and_charon_drop_in() {
    let t = Templates::load(None, DEFAULTS).unwrap();
    let r = render::empty(&t).unwrap();
    assert_eq!(
        sections(&r.conf),
        sections(&golden("psk", "ipsec.conf.after-modify-and-delete"))
    );
    let flat = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split_whitespace())
            .collect()
    };
    assert_eq!(
        flat(&render::ovs_conf(&t).unwrap()),
        flat(&golden(".", "ovs.conf"))
    );
}

// ---------------------------------------------------------------- call sequences (stub)

/// `ovs-vsctl` arguments adding `(name, type, remote_ip, psk)` ports in one transaction.
fn add_ports(db: &OvsdbServer, ports: &[(&str, &str, &str, &str)]) {
    let mut args: Vec<String> = Vec::new();
    for (name, kind, remote, key) in ports {
        if !args.is_empty() {
            args.push("--".into());
        }
        let opts = [format!("remote_ip={remote}"), format!("psk={key}")];
        args.extend(tunnel_port_args(name, kind, &opts));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    db.vsctl(&refs);
}

/// Waits for `iface`'s `ipsec-state`; on timeout the panic shows the monitor's log.
fn wait_state(db: &OvsdbServer, mon: &Monitor, iface: &str, state: &str) {
    let start = Instant::now();
    while iface_key(db, iface, "ipsec-state").as_deref() != Some(state) {
        assert!(
            start.elapsed() < T,
            "{iface} never reached ipsec-state={state} (now {:?}, error {:?}); log:\n{}",
            iface_key(db, iface, "ipsec-state"),
            iface_key(db, iface, "ipsec-error"),
            mon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The calls that change something (everything but `statusall`), after checking that the
/// status queries are O(1) too: one per pass, and a pass may be repeated by a DB echo.
fn changes(calls: &[String]) -> Vec<&str> {
    let status = calls.iter().filter(|c| *c == "ipsec statusall").count();
    assert!((1..=3).contains(&status), "{calls:?}");
    calls
        .iter()
        .filter(|c| *c != "ipsec statusall")
        .map(String::as_str)
        .collect()
}

fn down_nbs(calls: &[String]) -> Vec<&str> {
    calls
        .iter()
        .filter(|c| c.starts_with("ipsec stroke down-nb"))
        .map(String::as_str)
        .collect()
}

#[test]
fn cold_start_add_modify_delete_and_monitor_restart() {
    let db = OvsdbServer::start();
    let stub = StubRoot::new(&db);
    add_ports(
        &db,
        &[
            ("gre1", "gre", "192.0.2.3", "gresecret"),
            ("vx1", "vxlan", "192.0.2.2", "swordfish"),
        ],
    );
    let mon = start_monitor(&db, &[]);
    wait_state(&db, &mon, "vx1", "up");
    wait_state(&db, &mon, "gre1", "up");
    assert_eq!(
        stub.take_calls(),
        [
            "ipsec restart",
            "ipsec statusall",
            "ipsec rereadsecrets",
            "ipsec update",
            "ipsec statusall"
        ]
    );
    // Files: drop-in written on restart, secrets 0600 and hex-encoded.
    assert!(
        stub.read("etc/strongswan.d/ovs.conf")
            .contains("set_proto_port_transport_sa = yes")
    );
    let secrets = stub.file("etc/ipsec.secrets");
    assert_eq!(mode(&secrets), 0o600);
    let text = stub.read("etc/ipsec.secrets");
    assert!(
        text.contains("%any 192.0.2.2 : PSK 0x73776f726466697368"),
        "{text}"
    );
    assert!(!text.contains("swordfish"));
    let show = mon.appctl_ok(&["tunnels/show"]);
    assert!(
        show.contains("vx1-in-1{"),
        "in/out SAs are listed as active:\n{show}"
    );

    // Periodic and requested passes on a converged system: status only, nothing rewritten.
    let mtime = std::fs::metadata(stub.file("etc/ipsec.conf"))
        .unwrap()
        .modified()
        .unwrap();
    mon.appctl_ok(&["refresh"]);
    assert_eq!(changes(&stub.take_calls()), Vec::<&str>::new());
    assert_eq!(
        std::fs::metadata(stub.file("etc/ipsec.conf"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );

    // +1 tunnel: O(1) calls, no SA of the other tunnels touched.
    add_ports(&db, &[("gnv1", "geneve", "192.0.2.4", "gnvsecret")]);
    wait_state(&db, &mon, "gnv1", "up");
    let calls = stub.take_calls();
    assert_eq!(
        calls,
        [
            "ipsec statusall",
            "ipsec rereadsecrets",
            "ipsec update",
            "ipsec statusall"
        ]
    );

    // Modify: only the modified tunnel's old SA goes down.
    db.vsctl(&["set", "interface", "vx1", "options:remote_ip=192.0.2.5"]);
    wait_for("vx1 v2", T, || {
        iface_key(&db, "vx1", "ipsec-version").as_deref() == Some("2")
    });
    wait_state(&db, &mon, "vx1", "up");
    let calls = stub.take_calls();
    let mut downs = down_nbs(&calls);
    downs.sort();
    assert_eq!(downs.len(), 2, "{calls:?}");
    assert!(
        downs
            .iter()
            .all(|c| c.contains("vx1-in-1[") || c.contains("vx1-out-1[")),
        "{calls:?}"
    );
    mon.wait_log("is outdated 1");

    // Delete: only the deleted tunnel's SA goes down.
    db.vsctl(&["del-port", "gre1"]);
    wait_for("gre1 SA gone", T, || {
        !stub.sas().iter().any(|s| s.starts_with("gre1-1 "))
    });
    let calls = stub.take_calls();
    assert_eq!(down_nbs(&calls).len(), 1, "{calls:?}");
    assert!(!stub.read("etc/ipsec.conf").contains("gre1"));
    let sas_before = stub.sas();
    drop(mon);

    // The monitor restarts with --no-restart-ike-daemon: it adopts charon's state.
    let mon = start_monitor(&db, &["--no-restart-ike-daemon"]);
    wait_for("the second monitor's first pass", T, || {
        mon.log_count("first pass applied") == 2
    });
    assert_eq!(changes(&stub.take_calls()), Vec::<&str>::new());
    assert_eq!(stub.sas(), sas_before);

    // exit (with cleanup) removes our connections and SAs.
    mon.appctl_ok(&["exit"]);
    wait_for("SAs gone", T, || stub.sas().is_empty());
    assert!(!stub.read("etc/ipsec.conf").contains("conn gnv1"));
    assert!(!stub.read("etc/ipsec.secrets").contains("PSK"));
}

#[test]
fn thousand_tunnels_cold_start_and_one_more_are_o1_calls() {
    const N: usize = 1000;
    let db = OvsdbServer::start();
    let stub = StubRoot::new(&db);
    let names: Vec<String> = (0..N).map(|i| format!("t{i}")).collect();
    let remotes: Vec<String> = (0..N)
        .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let ports: Vec<(&str, &str, &str, &str)> = names
        .iter()
        .zip(&remotes)
        .map(|(n, r)| (n.as_str(), "vxlan", r.as_str(), "k"))
        .collect();
    add_ports(&db, &ports);
    let start = Instant::now();
    let mon = start_monitor(&db, &["--no-restart-ike-daemon"]);
    mon.wait_log("first pass applied");
    let cold = start.elapsed();
    let calls = stub.take_calls();
    assert_eq!(
        calls,
        [
            "ipsec statusall",
            "ipsec rereadsecrets",
            "ipsec update",
            "ipsec statusall"
        ]
    );
    assert_eq!(
        stub.read("etc/ipsec.conf").matches("\nconn t").count(),
        2 * N
    );

    let start = Instant::now();
    add_ports(&db, &[("extra", "vxlan", "198.18.9.9", "k")]);
    wait_state(&db, &mon, "extra", "up");
    let plus_one = start.elapsed();
    assert_eq!(
        stub.take_calls(),
        [
            "ipsec statusall",
            "ipsec rereadsecrets",
            "ipsec update",
            "ipsec statusall"
        ]
    );
    let log = mon.log();
    eprintln!("N={N}: cold start to first pass {cold:?}; +1 tunnel to ipsec-state=up {plus_one:?}");
    assert!(!log.contains(OUTDATED), "nothing may go down");
}
