//! Micro-benchmarks of the pure paths that scale with the number of tunnels, without any
//! process, socket or file: what bounds the monitor's CPU per OVSDB change.
//!
//! - `parse`: an `update2` notification of N Interface rows, from JSON text to the replica
//!   (what a cold start or a reconnect costs).
//! - `one change`: at N tunnels, one row modified: apply the one-row update, refresh the typed
//!   rows it touched, re-evaluate the registry for them, render strongSwan's ipsec.conf and
//!   plan against the previous file (the work the daemon does for one `ovs-vsctl set`).
//! - `VICI one change`: the same change as the VICI backend handles it with every tunnel up,
//!   in a pass scoped to the changed tunnel as the daemon runs it: model, plan (memoised
//!   `load-conn` bodies), the backend's status, and the OVSDB status diff of the changed row.
//!
//! `cargo bench --bench hot_paths` runs N ∈ {1000, 10000}; under `cargo test` it runs N = 100
//! once so it cannot rot.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ovs_monitor_ipsec::backend::Scope;
use ovs_monitor_ipsec::backend::strongswan_stroke::plan::{self, Observed};
use ovs_monitor_ipsec::backend::strongswan_stroke::render;
use ovs_monitor_ipsec::backend::templates::Templates;
use ovs_monitor_ipsec::model::cert::FsCertSource;
use ovs_monitor_ipsec::model::registry::Registry;
use ovs_monitor_ipsec::model::rows;
use ovs_monitor_ipsec::ovsdb::Replica;
use serde_json::{Value, json};

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (sizes, reps): (&[usize], u32) = if bench {
        (&[1000, 10000], 20)
    } else {
        (&[100], 1)
    };
    println!("| N | parse update2 (N rows) | one change: total | of which model | render | plan |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let text = initial(n);
        let parse = time(reps, || parse(&text, n));
        let c = one_change(n, reps);
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(parse),
            ms(c.model + c.render + c.plan),
            ms(c.model),
            ms(c.render),
            ms(c.plan)
        );
    }
    println!();
    println!("| N | VICI one change: total | model | plan | backend status | OVSDB status |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let [model, plan, live, status] = vici_change(n, reps);
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(model + plan + live + status),
            ms(model),
            ms(plan),
            ms(live),
            ms(status)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median of `reps` runs of `f`.
fn time(reps: u32, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn scalars() -> BTreeSet<(String, String)> {
    ["name", "type", "cfm_fault", "ofport"]
        .iter()
        .map(|c| ("Interface".to_owned(), (*c).to_owned()))
        .collect()
}

fn uuid(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// A row as ovsdb-server sends it in `update2`, for tunnel `i` with `remote_ip`.
fn row(i: usize, remote_ip: &str) -> Value {
    json!({
        "name": format!("vx{i}"),
        "type": "vxlan",
        "options": ["map", [["psk", format!("secret{i}")], ["remote_ip", remote_ip]]],
        "external_ids": ["map", []],
        "cfm_fault": ["set", []],
        "ofport": 1 + i as i64,
    })
}

fn remote_ip(i: usize) -> String {
    format!("198.{}.{}.{}", 18 + i / 62500, i / 250 % 250, i % 250 + 1)
}

fn initial(n: usize) -> String {
    let rows: serde_json::Map<String, Value> = (0..n)
        .map(|i| (uuid(i), json!({ "initial": row(i, &remote_ip(i)) })))
        .collect();
    json!({ "Interface": rows }).to_string()
}

fn parse(text: &str, n: usize) {
    let v: Value = serde_json::from_str(text).unwrap();
    let mut r = Replica::new(scalars());
    r.apply_update2(&v).unwrap();
    assert_eq!(black_box(&r).len("Interface"), n);
}

/// Medians, per phase, of one modified row at some N.
struct Change {
    /// Apply the one-row update, rebuild the typed rows, re-evaluate the registry, desired set.
    model: Duration,
    /// strongSwan's ipsec.conf and secrets for all tunnels.
    render: Duration,
    plan: Duration,
}

/// The daemon's model side, as it runs: replica, kept typed rows, incremental registry.
struct Model {
    replica: Replica,
    kept: rows::Rows,
    registry: Registry,
    certs: FsCertSource,
}

impl Model {
    /// `n` tunnels loaded and evaluated once.
    fn loaded(n: usize) -> Self {
        let v: Value = serde_json::from_str(&initial(n)).unwrap();
        let mut m = Model {
            replica: Replica::new(scalars()),
            kept: rows::Rows::default(),
            registry: Registry::new(),
            certs: FsCertSource::new(),
        };
        m.replica.apply_update2(&v).unwrap();
        m.catch_up();
        m
    }

    /// Rows and registry brought up to the replica; the registry's events.
    fn catch_up(&mut self) -> usize {
        let touched = self.kept.catch_up(&mut self.replica);
        let names = touched.as_ref().map(|t| &t.names);
        self.registry
            .update_changed(None, &self.kept, names, &mut self.certs)
            .len()
    }

    /// Round `round`'s one-row change (tunnel 0's remote_ip alternates), applied and
    /// evaluated; the registry's events.
    fn modify(&mut self, round: u32) -> usize {
        let ip = format!("203.0.113.{}", round % 200 + 1);
        let update = json!({ "Interface": { uuid(0): { "modify": {
            "options": ["map", [["remote_ip", ip]]] } } } });
        self.replica.apply_update2(&update).unwrap();
        self.catch_up()
    }
}

/// One modified row at `n` tunnels, `reps` times, alternating its remote_ip each round.
fn one_change(n: usize, reps: u32) -> Change {
    let mut model = Model::loaded(n);
    let templates = Templates::load(None, render::DEFAULTS).unwrap();
    let desired = model.registry.desired();
    let sections = render::Sections::default();
    let rendered =
        render::render(std::path::Path::new("/"), &templates, &sections, desired).unwrap();
    let mut observed = Observed {
        conf: Some(rendered.conf),
        ..Default::default()
    };
    let mut phases: [Vec<Duration>; 3] = Default::default();
    for round in 0..reps {
        let t = Instant::now();
        let events = model.modify(round);
        let desired = model.registry.desired();
        phases[0].push(t.elapsed());
        let t = Instant::now();
        let rendered =
            render::render(std::path::Path::new("/"), &templates, &sections, desired).unwrap();
        phases[1].push(t.elapsed());
        let t = Instant::now();
        let actions = plan::plan(desired, &rendered, &observed, &Scope::All);
        phases[2].push(t.elapsed());
        assert!(events > 0 && !actions.is_empty(), "the change is seen");
        observed.conf = Some(rendered.conf);
    }
    let [model, render, plan] = phases.map(|mut v| {
        v.sort();
        v[v.len() / 2]
    });
    Change {
        model,
        render,
        plan,
    }
}

/// The VICI daemon's pure work for one modified row at `n` tunnels, all of them up (one
/// ESTABLISHED IKE_SA with its CHILD_SAs each), done as the daemon does it (kept rows,
/// incremental registry, memoised connections, a pass scoped to the changed tunnel): model,
/// plan, backend status, OVSDB status.
fn vici_change(n: usize, reps: u32) -> [Duration; 4] {
    use ovs_monitor_ipsec::backend::Scope;
    use ovs_monitor_ipsec::backend::strongswan_vici::conns::ConnMemo;
    use ovs_monitor_ipsec::backend::strongswan_vici::{observe, plan as vplan, status as vstatus};
    use ovs_monitor_ipsec::status;
    use std::collections::BTreeMap;
    let scope = Scope::Tunnels(BTreeSet::from(["vx0".to_owned()]));
    let mut model = Model::loaded(n);
    let memo = ConnMemo::default();
    let mut observed = observe::Observed::default();
    let desired = model.registry.desired();
    let actions = vplan::plan_with(&memo, desired, &observed);
    converge(&mut observed, desired, &actions);
    let mut phases: [Vec<Duration>; 4] = Default::default();
    for round in 0..reps {
        let t = Instant::now();
        let events = model.modify(round);
        let desired = model.registry.desired();
        phases[0].push(t.elapsed());
        let t = Instant::now();
        let actions = vplan::plan_in(&memo, desired, &observed, &scope);
        phases[1].push(t.elapsed());
        assert!(events > 0 && !actions.is_empty(), "the change is seen");
        converge(&mut observed, desired, &actions);
        let t = Instant::now();
        let live = vstatus::status_in(&memo, desired, &observed, &scope);
        phases[2].push(t.elapsed());
        let t = Instant::now();
        let ops = status::plan(&status::StatusInput {
            interfaces: model.kept.named("vx0").collect::<Vec<_>>().into_iter(),
            open_vswitch: None,
            tunnels: model.registry.tunnel_map(),
            live: &live,
            apply_errors: &BTreeMap::new(),
            cert_alerts: &BTreeMap::new(),
            monitor: Default::default(),
        });
        phases[3].push(t.elapsed());
        black_box(ops);
    }
    phases.map(|mut v| {
        v.sort();
        v[v.len() / 2]
    })
}

/// What charon and the backend's memory hold once `actions` succeeded, with every tunnel's
/// IKE_SA and CHILD_SAs up.
fn converge(
    o: &mut ovs_monitor_ipsec::backend::strongswan_vici::observe::Observed,
    desired: &ovs_monitor_ipsec::model::Desired,
    actions: &[ovs_monitor_ipsec::backend::strongswan_vici::plan::Action],
) {
    use ovs_monitor_ipsec::backend::strongswan_vici::creds::{CredSource, desired_creds};
    use ovs_monitor_ipsec::backend::strongswan_vici::observe::{ChildSa, IkeSa};
    use ovs_monitor_ipsec::backend::strongswan_vici::plan::{Action, body_digest};
    use std::sync::Arc;
    let creds = desired_creds(desired);
    for a in actions {
        match a {
            Action::LoadCred(k) => {
                if let Some(CredSource::Psk { digest, .. }) = creds.get(k) {
                    Arc::make_mut(&mut o.loaded)
                        .creds
                        .insert(k.clone(), *digest);
                }
            }
            Action::LoadConn(c) => {
                Arc::make_mut(&mut o.conns).insert(c.name.clone(), c.listed());
                Arc::make_mut(&mut o.loaded)
                    .conns
                    .insert(c.name.clone(), body_digest(&c.body));
                o.sas.push(IkeSa {
                    conn: c.name.clone(),
                    state: "ESTABLISHED".into(),
                    children: c
                        .listed()
                        .children
                        .into_keys()
                        .map(|name| ChildSa {
                            name,
                            state: "INSTALLED".into(),
                            mode: "TRANSPORT".into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                });
            }
            Action::Initiate { .. } => {}
            Action::UnloadConn(name) => {
                Arc::make_mut(&mut o.conns).remove(name);
                Arc::make_mut(&mut o.loaded).conns.remove(name);
                o.sas.retain(|sa| &sa.conn != name);
            }
            Action::UnloadCred(k) => {
                Arc::make_mut(&mut o.loaded).creds.remove(k);
            }
        }
    }
}
