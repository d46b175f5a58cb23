//! The metrics as users read them: the real ovsdb-server and ovs-appctl, scraped with curl,
//! checked with `promtool check metrics`, and scraped by a real Prometheus server.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::monitor::{BIN, CTL_BIN, Monitor, iface_key, wait_for};
use common::ovsdb_server::{OvsdbServer, tunnel_port_args};

const T: Duration = Duration::from_secs(30);
const PSK: &str = "swordfish-metrics";

/// `curl` output (headers included with `-i`) of `url`, over `unix` when given.
fn curl(unix: Option<&Path>, extra: &[&str], url: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]);
    if let Some(sock) = unix {
        cmd.arg("--unix-socket").arg(sock);
    }
    let out = cmd.args(extra).arg(url).output().expect("run curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn promtool_check(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sample lines by series (name and labels) → value.
fn series(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn types(body: &str) -> Vec<&str> {
    body.lines().filter(|l| l.starts_with("# TYPE ")).collect()
}

fn value(body: &str, key: &str) -> Option<String> {
    series(body).get(key).cloned()
}

/// The tunnels by `ipsec-state`, as OVSDB has them.
fn ovsdb_states(db: &OvsdbServer, names: &[&str]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for n in names {
        if let Some(s) = iface_key(db, n, "ipsec-state") {
            *out.entry(s).or_insert(0) += 1;
        }
    }
    out
}

fn metric_states(body: &str) -> BTreeMap<String, u64> {
    series(body)
        .into_iter()
        .filter_map(|(k, v)| {
            let state = k
                .strip_prefix("ovs_ipsec_tunnels{state=\"")?
                .strip_suffix("\"}")?;
            let n: u64 = v.parse().ok()?;
            (n > 0).then(|| (state.to_owned(), n))
        })
        .collect()
}

#[test]
fn scrape_over_http_agrees_with_ovsdb_and_metrics_show() {
    let db = OvsdbServer::start();
    let sock = db.dir().join("metrics.sock");
    let arg = format!("--metrics=unix:{}", sock.display());
    let mon = Monitor::start(&db, &[&arg]);
    db.add_tunnel(
        "gnv0",
        "geneve",
        &["remote_ip=192.0.2.2", &format!("psk={PSK}")],
    );
    db.add_tunnel(
        "gre0",
        "gre",
        &["remote_ip=192.0.2.3", &format!("psk={PSK}")],
    );
    let names = ["gnv0", "gre0"];
    wait_for("both tunnels configured", T, || {
        ovsdb_states(&db, &names).get("configured") == Some(&2)
    });
    let url = "http://localhost/metrics";

    let body = curl(Some(&sock), &[], url);
    promtool_check(&body);
    assert!(!body.contains(PSK), "PSK in the metrics:\n{body}");
    assert_eq!(metric_states(&body), ovsdb_states(&db, &names), "{body}");
    assert_eq!(
        value(&body, "ovs_ipsec_tunnels{state=\"up\"}").as_deref(),
        Some("0")
    );
    assert_eq!(
        value(
            &body,
            "ovs_ipsec_tunnel_up{interface=\"gnv0\",type=\"geneve\",remote_ip=\"192.0.2.2\"}"
        )
        .as_deref(),
        Some("0"),
        "{body}"
    );
    assert_eq!(
        value(&body, "ovs_ipsec_ovsdb_connected").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &body,
            "ovs_ipsec_monitor_info{version=\"0.1.0\",backend=\"strongswan\"}"
        )
        .as_deref(),
        Some("1"),
        "{body}"
    );

    // metrics/show is the same exposition: same families and series.
    let show = mon.appctl_ok(&["metrics/show"]);
    assert_eq!(types(&show), types(&body));
    let keys = |b: &str| series(b).into_keys().collect::<BTreeSet<_>>();
    assert_eq!(keys(&show), keys(&body));
    // And through our own client.
    let ctl = Command::new(CTL_BIN)
        .arg("-t")
        .arg(&mon.ctl)
        .arg("metrics/show")
        .output()
        .unwrap();
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert_eq!(types(&String::from_utf8_lossy(&ctl.stdout)), types(&body));

    // OpenMetrics when asked; headers tell which.
    let om = curl(
        Some(&sock),
        &[
            "-i",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
        ],
        url,
    );
    assert!(
        om.contains("content-type: application/openmetrics-text"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE ovs_ipsec_passes counter\n"), "{om}");
    let plain = curl(Some(&sock), &["-i"], url);
    assert!(
        plain.contains("content-type: text/plain; version=0.0.4"),
        "{plain}"
    );
    let other = curl(
        Some(&sock),
        &["-o", "/dev/null", "-w", "%{http_code}"],
        "http://localhost/",
    );
    assert_eq!(other, "404");

    // Change: gre0 gets a remote_ip that is no address and becomes invalid; one state change.
    db.vsctl(&["set", "interface", "gre0", "options:remote_ip=not-an-ip"]);
    wait_for("gre0 invalid", T, || {
        iface_key(&db, "gre0", "ipsec-state").as_deref() == Some("invalid")
    });
    let body = curl(Some(&sock), &[], url);
    assert_eq!(metric_states(&body), ovsdb_states(&db, &names), "{body}");
    assert_eq!(
        value(
            &body,
            "ovs_ipsec_tunnel_state_changes_total{interface=\"gre0\"}"
        )
        .as_deref(),
        Some("1"),
        "{body}"
    );

    // Delete: every series of gre0 is gone.
    db.vsctl(&["del-port", "br-ipsec", "gre0"]);
    wait_for("gre0 gone from the metrics", T, || {
        !curl(Some(&sock), &[], url).contains("\"gre0\"")
    });
    let body = curl(Some(&sock), &[], url);
    assert_eq!(metric_states(&body), ovsdb_states(&db, &["gnv0"]), "{body}");
    assert!(value(&body, "ovs_ipsec_passes_total{trigger=\"ovsdb\"}").is_some_and(|v| v != "0"));
    promtool_check(&body);
}

#[test]
fn idle_clients_delay_no_pass_and_per_tunnel_families_can_be_dropped() {
    let db = OvsdbServer::start();
    let sock = db.dir().join("metrics.sock");
    let arg = format!("--metrics=unix:{}", sock.display());
    let mon = Monitor::start(&db, &[&arg, "--metrics-per-tunnel=false"]);
    // The endpoint listens once the monitor has started (later under a slow guest).
    wait_for("the metrics socket", T, || sock.exists());
    // More half-open clients than the endpoint serves at once, each sending nothing.
    let idle: Vec<_> = (0..12)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
        .collect();
    db.add_tunnel(
        "gnv1",
        "geneve",
        &["remote_ip=192.0.2.5", &format!("psk={PSK}")],
    );
    wait_for(
        "gnv1 configured while clients hang",
        Duration::from_secs(5),
        || iface_key(&db, "gnv1", "ipsec-state").as_deref() == Some("configured"),
    );
    let show = mon.appctl_ok(&["metrics/show"]);
    assert_eq!(
        value(&show, "ovs_ipsec_tunnels{state=\"configured\"}").as_deref(),
        Some("1")
    );
    assert!(!show.contains("interface="), "{show}");
    drop(idle);
    // Once they are gone (or timed out), scrapes are served again.
    let body = curl(Some(&sock), &[], "http://localhost/metrics");
    assert!(
        body.contains("ovs_ipsec_tunnels{state=\"configured\"} 1"),
        "{body}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_taken_port_is_a_clear_error_and_exit_1() {
    let db = OvsdbServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(BIN)
        .arg(db.unix_remote())
        .args(["--ike-daemon=none", "--dry-run", "--log-file=/dev/null"])
        .arg(format!("--unixctl={}", db.dir().join("m.ctl").display()))
        .arg(format!("--metrics=tcp:{addr}"))
        .env("OVS_RUNDIR", db.dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen for metrics on tcp:{addr}")),
        "{err}"
    );
}

/// A Prometheus server, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_monitor() {
    let db = OvsdbServer::start();
    let port = free_port();
    let arg = format!("--metrics=tcp:127.0.0.1:{port}");
    let _mon = Monitor::start(&db, &[&arg]);
    db.add_tunnel(
        "gnv0",
        "geneve",
        &["remote_ip=192.0.2.2", &format!("psk={PSK}")],
    );
    let dir = db.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ipsec\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("run prometheus (Debian package prometheus)"),
    );
    let query = format!(
        "http://127.0.0.1:{web}/api/v1/query?query=ovs_ipsec_tunnels%7Bstate%3D%22configured%22%7D"
    );
    let mut last = String::new();
    wait_for(
        "Prometheus to have ovs_ipsec_tunnels",
        Duration::from_secs(90),
        || {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "5", &query])
                .output()
                .unwrap();
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            last.contains("\"__name__\":\"ovs_ipsec_tunnels\"") && last.contains("\"1\"]")
        },
    );
    assert!(last.contains("\"job\":\"ipsec\""), "{last}");
}

#[test]
fn certificate_expiry_of_the_local_ca_and_peer_certificates() {
    let db = OvsdbServer::start();
    let dir = db.dir();
    for cn in ["host-a", "host-b", "test-ca"] {
        common::libreswan::self_signed(dir, cn);
    }
    let p = |f: &str| dir.join(f).display().to_string();
    db.vsctl(&[
        "set",
        "Open_vSwitch",
        ".",
        &format!("other_config:certificate={}", p("host-a-cert.pem")),
        &format!("other_config:private_key={}", p("host-a-privkey.pem")),
    ]);
    let mon = Monitor::start(&db, &[]);
    db.add_tunnel(
        "gnv3",
        "geneve",
        &[
            "remote_ip=192.0.2.7",
            &format!("remote_cert={}", p("host-b-cert.pem")),
        ],
    );
    wait_for("gnv3 configured", T, || {
        iface_key(&db, "gnv3", "ipsec-state").as_deref() == Some("configured")
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    // The certificates are valid for two days (-days 2).
    let expiry = |show: &str, role: &str, cn: &str| -> f64 {
        let key =
            format!("ovs_ipsec_cert_expiry_timestamp_seconds{{role=\"{role}\",subject=\"{cn}\"}}");
        let v: f64 = value(show, &key)
            .unwrap_or_else(|| panic!("{key} missing:\n{show}"))
            .parse()
            .unwrap();
        assert!(
            (v - now - 2.0 * 86400.0).abs() < 3600.0,
            "{key} = {v}, now {now}"
        );
        v
    };
    let show = mon.appctl_ok(&["metrics/show"]);
    expiry(&show, "local", "host-a");
    expiry(&show, "peer", "host-b");
    assert!(!show.contains("role=\"ca\""), "{show}");
    db.vsctl(&[
        "set",
        "Open_vSwitch",
        ".",
        &format!("other_config:ca_cert={}", p("test-ca-cert.pem")),
    ]);
    wait_for("the CA certificate in the metrics", T, || {
        mon.appctl_ok(&["metrics/show"])
            .contains("role=\"ca\",subject=\"test-ca\"")
    });
    expiry(&mon.appctl_ok(&["metrics/show"]), "ca", "test-ca");
}

/// The per-tunnel sample keys (name and labels) of a body: a truncated or mixed-up body lacks
/// some of them.
fn tunnel_keys(body: &str) -> BTreeSet<String> {
    series(body)
        .into_keys()
        .filter(|k| k.contains("interface=\""))
        .collect()
}

#[test]
fn concurrent_scrapes_of_both_formats_all_get_complete_bodies() {
    const TUNNELS: usize = 100;
    const EACH: usize = 10;
    let db = OvsdbServer::start();
    let sock = db.dir().join("metrics.sock");
    let arg = format!("--metrics=unix:{}", sock.display());
    let mon = Monitor::start(&db, &[&arg]);
    let mut args: Vec<String> = Vec::new();
    for i in 0..TUNNELS {
        if i > 0 {
            args.push("--".into());
        }
        let opts = [format!("remote_ip=192.0.2.{}", i + 1), format!("psk={PSK}")];
        args.extend(tunnel_port_args(&format!("gnv{i}"), "geneve", &opts));
    }
    db.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("every tunnel configured", T, || {
        let body = mon.appctl_ok(&["metrics/show"]);
        value(&body, "ovs_ipsec_tunnels{state=\"configured\"}") == Some(TUNNELS.to_string())
    });
    let reference = mon.appctl_ok(&["metrics/show"]);
    let keys = tunnel_keys(&reference);
    for i in 0..TUNNELS {
        assert!(
            reference.contains(&format!("interface=\"gnv{i}\"")),
            "{reference}"
        );
    }
    let families = types(&reference).len();
    // EACH scrapes of each format and EACH metrics/show at once (more than the endpoint's 8
    // connections: the rest wait in the backlog).
    let accept_om = "Accept: application/openmetrics-text;version=1.0.0";
    let (texts, oms, shows) = std::thread::scope(|s| {
        let scrape = |accept: Option<&'static str>| {
            let sock = &sock;
            s.spawn(move || {
                let mut extra = vec!["-w", "\n%{http_code} %{content_type}"];
                if let Some(a) = accept {
                    extra.extend(["-H", a]);
                }
                curl(Some(sock), &extra, "http://localhost/metrics")
            })
        };
        let texts: Vec<_> = (0..EACH).map(|_| scrape(None)).collect();
        let oms: Vec<_> = (0..EACH).map(|_| scrape(Some(accept_om))).collect();
        let shows: Vec<_> = (0..EACH)
            .map(|_| s.spawn(|| mon.appctl_ok(&["metrics/show"])))
            .collect();
        let join = |v: Vec<std::thread::ScopedJoinHandle<'_, String>>| -> Vec<String> {
            v.into_iter().map(|h| h.join().unwrap()).collect()
        };
        (join(texts), join(oms), join(shows))
    });
    // curl's -w line: status and content type after the body.
    let split = |out: &str| -> (String, String) {
        let (body, status) = out.rsplit_once('\n').unwrap();
        (body.to_owned(), status.to_owned())
    };
    for out in &texts {
        let (body, status) = split(out);
        assert_eq!(status, "200 text/plain; version=0.0.4; charset=utf-8");
        promtool_check(&body);
        assert!(!body.contains("# EOF"), "{body}");
        assert_eq!(types(&body).len(), families, "{body}");
        assert_eq!(tunnel_keys(&body), keys, "{body}");
    }
    for out in &oms {
        let (body, status) = split(out);
        assert_eq!(
            status,
            "200 application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(body.ends_with("\n# EOF\n"), "{body}");
        assert_eq!(body.matches("# EOF").count(), 1, "{body}");
        assert_eq!(types(&body).len(), families, "{body}");
        assert_eq!(tunnel_keys(&body), keys, "{body}");
    }
    for show in &shows {
        promtool_check(show);
        assert_eq!(types(show).len(), families, "{show}");
        assert_eq!(tunnel_keys(show), keys, "{show}");
    }
}
