//! Connection versions that survive a restart of the monitor (pure).
//!
//! Connection names carry the tunnel's version (`X-in-3`), and the model numbers versions
//! from 1 at every start. After a restart with `--no-restart-ike-daemon`, charon still holds
//! `X-in-3` and its SAs; naming the same tunnel `X-in-1` would replace the connection and
//! bring its established SAs down for nothing. So, per tunnel, from our file on disk:
//! - its connections at the desired version exist with the same text: keep the version;
//! - they exist at another version with the same text and the same secrets line: *adopt*
//!   that version (nothing changes in charon);
//! - otherwise, if the desired names are taken by different text (a stale file from an
//!   earlier run), use one more than the highest version on disk, so that new connections
//!   never share a name with old SAs.
//!
//! A pass over a few tunnels decides for those only; the caller keeps what earlier passes
//! decided for the others (their rows did not change, so neither did the answer).

use std::collections::BTreeMap;

use super::conffile;
use super::plan::Observed;
use super::render::Rendered;
use crate::backend::Scope;
use crate::model::{Desired, DesiredTunnel};

/// The section bodies of `conns` in `sections`, or `None` if one is missing.
fn bodies<'a>(sections: &'a BTreeMap<String, String>, conns: &[String]) -> Option<Vec<&'a str>> {
    conns
        .iter()
        .map(|c| sections.get(c).map(String::as_str))
        .collect()
}

/// Tunnels of `scope` whose connections must be rendered with another version than the
/// desired one.
pub fn versions(
    desired: &Desired,
    r: &Rendered,
    obs: &Observed,
    scope: &Scope,
) -> BTreeMap<String, u64> {
    // Our file as we would write it now: every tunnel is on disk at its own version. The
    // common case (every pass after the one that wrote it) without parsing either file.
    if obs.conf.as_deref() == Some(r.conf.as_str()) {
        return BTreeMap::new();
    }
    let ours = conffile::sections_in(&r.conf, |c| super::plan::covers(scope, c));
    let in_scope = || {
        desired
            .tunnels
            .iter()
            .filter(|(name, _)| scope.covers(name))
    };
    let selectors: std::collections::BTreeSet<String> = in_scope()
        .filter_map(|(_, t)| secret_line_of(t, &ours))
        .collect();
    let our_secrets = conffile::secret_lines_in(&r.secrets, |sel| selectors.contains(sel));
    // On-disk versions by tunnel, for the tunnels we want.
    let mut on_disk: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for name in obs.conf_sections.keys() {
        let Some(v) = super::plan::version_of(name) else {
            continue;
        };
        for t in super::plan::tunnel_candidates(name) {
            if let Some((t, dt)) = desired.tunnels.get_key_value(t)
                && dt.conf.conn_names(v).contains(name)
            {
                on_disk.entry(t.as_str()).or_default().push(v);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, t) in in_scope() {
        let Some(disk) = on_disk.get(name.as_str()) else {
            continue;
        };
        let conns = t.conn_names();
        let Some(want) = bodies(&ours, &conns) else {
            continue; // rejected: not rendered
        };
        if bodies(&obs.conf_sections, &conns).as_ref() == Some(&want) {
            continue;
        }
        let same_secret = secret_line_of(t, &ours)
            .is_none_or(|sel| our_secrets.get(&sel) == obs.secret_lines.get(&sel));
        let adopted = disk.iter().copied().filter(|v| *v != t.version).find(|v| {
            same_secret
                && bodies(&obs.conf_sections, &t.conf.conn_names(*v)).as_ref() == Some(&want)
        });
        match adopted {
            Some(v) => {
                out.insert(name.clone(), v);
            }
            None if disk.contains(&t.version) => {
                let next = disk.iter().max().copied().unwrap_or(t.version) + 1;
                out.insert(name.clone(), next);
            }
            None => {}
        }
    }
    out
}

/// The selectors of `t`'s secrets line (`left right`), taken from its rendered `left=`/`right=`.
fn secret_line_of(t: &DesiredTunnel, ours: &BTreeMap<String, String>) -> Option<String> {
    let body = ours.get(t.conn_names().first()?)?;
    let value = |key: &str| {
        body.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::to_owned)
    };
    Some(format!("{} {}", value("left=")?, value("right=")?))
}

/// `desired` with the versions of [`versions`] applied.
pub fn with_versions(desired: &Desired, versions: &BTreeMap<String, u64>) -> Desired {
    let mut d = desired.clone();
    for (name, v) in versions {
        if let Some(t) = d.tunnels.get_mut(name) {
            t.version = *v;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::super::render::{Sections, render};
    use super::super::testutil::{desired, psk_tunnel, templates};
    use super::*;

    /// What a monitor that wrote `r` left on disk.
    fn disk(r: &Rendered) -> Observed {
        Observed {
            conf_sections: conffile::sections(&r.conf),
            secret_lines: conffile::secret_lines(&r.secrets),
            ..Default::default()
        }
    }

    #[test]
    fn restarted_monitor_adopts_unchanged_connections_and_never_reuses_a_name() {
        let t = templates();
        let before = desired(vec![
            psk_tunnel("vx1", "vxlan", "192.0.2.2", "k", 3),
            psk_tunnel("gre1", "gre", "192.0.2.3", "k", 2),
        ]);
        let obs = disk(&render(&t, &Sections::default(), &before).unwrap());
        // After a restart the model numbers from 1; gre1 changed its PSK meanwhile.
        let after = desired(vec![
            psk_tunnel("vx1", "vxlan", "192.0.2.2", "k", 1),
            psk_tunnel("gre1", "gre", "192.0.2.3", "new", 1),
        ]);
        let r = render(&t, &Sections::default(), &after).unwrap();
        let v = versions(&after, &r, &obs, &Scope::All);
        assert_eq!(v, BTreeMap::from([("vx1".to_string(), 3)]));
        // A stale file holding gre1-1 with other text: the new connection gets a fresh name.
        let stale = desired(vec![psk_tunnel("gre1", "gre", "192.0.2.9", "k", 1)]);
        let obs = disk(&render(&t, &Sections::default(), &stale).unwrap());
        let now = desired(vec![psk_tunnel("gre1", "gre", "192.0.2.3", "k", 1)]);
        let r = render(&t, &Sections::default(), &now).unwrap();
        assert_eq!(
            versions(&now, &r, &obs, &Scope::All),
            BTreeMap::from([("gre1".to_string(), 2)])
        );
        // Converged: nothing to change.
        let obs = disk(&r);
        assert!(versions(&now, &r, &obs, &Scope::All).is_empty());
    }
}
