//! Observation + rendering → the minimal list of stroke actions (pure).
//!
//! - Files are rewritten only when their text differs; `ipsec update` runs only when
//!   `ipsec.conf` changed, `ipsec rereadsecrets` only when `ipsec.secrets` changed.
//! - A certificate replaced at the same path (see [`super::conffile`]) gives
//!   `ipsec rereadall` + `ipsec reload`: charon re-reads the files and re-adds the
//!   connections; established SAs stay up and re-authenticate with the new certificate.
//! - A certificate or key at a new path keeps the tunnel's version (see
//!   `model::versions::same_version`): only `leftcert=`/`rightcert=` and the secrets line
//!   change, so `rereadsecrets` + `update` re-add those connections under the same names and
//!   charon keeps their IKE_SAs (checked with real charons, `tests/strongswan_stroke_certs.rs`);
//!   the stamps then follow the new path.
//! - Drift: a connection of an unchanged file that charon does not have (deleted by hand,
//!   lost by a crash) gives `ipsec reload`, since `ipsec update` only acts on file changes.
//!   Not while our own update or reload may still be in progress in starter (it applies them
//!   asynchronously). A connection charon was seen holding since then and no longer holds
//!   was *lost*: it is reloaded at the first full pass after that, so a lost connection is
//!   back within one period. One charon never loaded after our last reload is probably
//!   refused by it: that is retried at most once a minute, so nothing reloads in a loop.
//! - `ipsec stroke down-nb` only for SAs of connections that are really outdated: ours (named
//!   in our file, or with a tunnel's name) and not in the desired set. An IKE_SA is named after
//!   the first connection merged into its peer configuration, which may carry connections of
//!   other, current tunnels: it is brought down only when none of its CHILD_SAs and none of
//!   the connections of its peer configuration are still wanted; otherwise only its outdated
//!   CHILD_SAs are.
//! - A pass over a few tunnels ([`Scope::Tunnels`]) sees only their part of charon's status
//!   and of our file (see `statusall::parse_in`), so it reloads and brings down only
//!   connections of those tunnels; drift elsewhere is the periodic full pass's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use super::render::Rendered;
use super::statusall::Status;
use crate::backend::Scope;
use crate::backend::files::sha256;
use crate::model::Desired;

/// What a pass sees before planning.
/// Not `Debug`: it holds digests of secrets lines.
#[derive(Clone, Default)]
pub struct Observed {
    /// `ipsec.conf` on disk without its stamps; `None` when missing.
    pub conf: Option<String>,
    /// Connections our file on disk defines: name → section text (see `conffile::sections`).
    pub conf_sections: BTreeMap<String, String>,
    /// SHA-256 and mode of `ipsec.secrets` on disk (never its text: it holds PSKs).
    pub secrets: Option<([u8; 32], u32)>,
    /// SHA-256 of each secrets line on disk, by selectors.
    pub secret_lines: BTreeMap<String, [u8; 32]>,
    /// Stamped certificates whose content changed since charon loaded them.
    pub cert_changed: BTreeSet<PathBuf>,
    /// `ipsec statusall`.
    pub status: Status,
    /// Our last `ipsec update`/`reload` may still be in progress in starter.
    pub settling: bool,
    /// Our last `ipsec update`/`reload` was less than a minute ago: a connection charon has
    /// not loaded since is not reloaded again yet.
    pub backoff: bool,
    /// Our connections charon was seen holding since our last `update`/`reload` and no
    /// longer holds: evidence that it lost them, which overrides the back-off.
    pub lost: BTreeSet<String>,
}

/// What the log line of [`Action::DownNb`] says after the SA's name (tests look for its
/// absence).
pub const OUTDATED: &str = "is outdated";

/// One step of a pass, in the order it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `ipsec.conf` (with fresh stamps) and `ipsec.secrets`, where they differ.
    WriteFiles,
    /// `ipsec update`: starter adds, replaces and removes changed connections.
    Update,
    /// `ipsec rereadsecrets`.
    RereadSecrets,
    /// `ipsec rereadall` + `ipsec reload`, for certificates changed in place.
    ReloadCredentials(Vec<PathBuf>),
    /// `ipsec reload`, for connections charon lost.
    Reconcile(Vec<String>),
    /// `ipsec stroke down-nb <sa>`; `version` is the outdated connection's, for the log.
    DownNb { sa: String, version: Option<u64> },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WriteFiles => f.write_str("Writing StrongSwan configuration files"),
            Action::Update => f.write_str("Refreshing StrongSwan configuration"),
            Action::RereadSecrets => f.write_str("Rereading StrongSwan secrets"),
            Action::ReloadCredentials(paths) => {
                let list: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "certificates changed ({}): reloading StrongSwan credentials and connections",
                    list.join(", ")
                )
            }
            Action::Reconcile(conns) => write!(
                f,
                "{} missing in charon ({} in all), need to reconcile: reloading connections",
                conns.first().map_or("", String::as_str),
                conns.len()
            ),
            Action::DownNb { sa, version } => match version {
                Some(v) => write!(f, "{sa} {OUTDATED} {v}"),
                None => write!(f, "{sa} {OUTDATED}"),
            },
        }
    }
}

/// The version number at the end of an OVS connection name (`X-N`, `X-in-N`, `X-out-N`).
pub fn version_of(conn: &str) -> Option<u64> {
    let (_, v) = conn.rsplit_once('-')?;
    v.parse().ok()
}

/// The interface names a connection name may belong to: `X-in-N` is tunnel `X` (vxlan or
/// geneve) or tunnel `X-in` (gre); both are returned, the caller knows which tunnels exist.
pub fn tunnel_candidates(conn: &str) -> Vec<&str> {
    let Some((base, v)) = conn.rsplit_once('-') else {
        return Vec::new();
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let mut c = vec![base];
    c.extend(["-in", "-out"].iter().filter_map(|s| base.strip_suffix(s)));
    c
}

/// Whether connection `conn` belongs to a tunnel of `scope` (a removed tunnel's name is in a
/// scope too). Shunts belong to none: a change of the skb mark makes the pass a full one.
pub fn covers(scope: &Scope, conn: &str) -> bool {
    let Scope::Tunnels(names) = scope else {
        return true;
    };
    // `tunnel_candidates` without its Vec: this runs for every line of charon's output.
    let Some((base, v)) = conn.rsplit_once('-') else {
        return false;
    };
    !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit())
        && (names.contains(base)
            || ["-in", "-out"]
                .iter()
                .filter_map(|s| base.strip_suffix(s))
                .any(|t| names.contains(t)))
}

/// True when `conn` is a connection this monitor created.
fn ours(conn: &str, desired: &Desired, obs: &Observed, loaded: &BTreeSet<&str>) -> bool {
    obs.conf_sections.contains_key(conn)
        || tunnel_candidates(conn)
            .iter()
            .any(|t| desired.tunnels.contains_key(*t))
        // An SA whose connection no longer exists and that carries an OVS-style name: left
        // over from a tunnel deleted while the monitor was not running.
        || (!loaded.contains(conn) && !tunnel_candidates(conn).is_empty())
}

/// The SAs of `scope` to bring down, as `down-nb` actions.
pub fn outdated(desired: &Desired, r: &Rendered, obs: &Observed, scope: &Scope) -> Vec<Action> {
    let loaded = obs.status.loaded();
    let is_outdated = |name: &str| {
        covers(scope, name) && !r.conns.contains(name) && ours(name, desired, obs, &loaded)
    };
    let mut actions = Vec::new();
    for ike in &obs.status.sas {
        let group_wanted = obs
            .status
            .peers
            .get(&ike.name)
            .is_some_and(|kids| kids.iter().any(|k| r.conns.contains(k)));
        let whole = is_outdated(&ike.name)
            && !group_wanted
            && ike.children.iter().all(|c| is_outdated(&c.name));
        if whole {
            actions.push(Action::DownNb {
                sa: ike.token(),
                version: version_of(&ike.name),
            });
            continue;
        }
        actions.extend(
            ike.children
                .iter()
                .filter(|c| is_outdated(&c.name))
                .map(|c| Action::DownNb {
                    sa: c.token(),
                    version: version_of(&c.name),
                }),
        );
    }
    actions
}

/// The actions that make charon and the files match `r`, rendered from `desired`, for the
/// tunnels of `scope`: `obs` may hold only their part of charon's status.
pub fn plan(desired: &Desired, r: &Rendered, obs: &Observed, scope: &Scope) -> Vec<Action> {
    let conf_differs = obs.conf.as_deref() != Some(r.conf.as_str());
    let secrets_differ = obs.secrets
        != Some((
            sha256(r.secrets.as_bytes()),
            crate::backend::files::SECRET_MODE,
        ));
    let mut actions = Vec::new();
    if conf_differs || secrets_differ || !obs.cert_changed.is_empty() {
        actions.push(Action::WriteFiles);
    }
    let loaded = obs.status.loaded();
    let missing: Vec<String> = r
        .conns
        .iter()
        .filter(|c| covers(scope, c) && !loaded.contains(c.as_str()))
        .cloned()
        .collect();
    if !obs.cert_changed.is_empty() {
        actions.push(Action::ReloadCredentials(
            obs.cert_changed.iter().cloned().collect(),
        ));
    } else {
        // Secrets first: `update` routes the new connections at once, and a peer that
        // negotiates before our key is loaded gets AUTHENTICATION_FAILED; the kernel's acquire
        // for that policy then blocks a retry for 30 s (seen with two real charons).
        if secrets_differ {
            actions.push(Action::RereadSecrets);
        }
        if conf_differs {
            actions.push(Action::Update);
        }
        let lost = missing.iter().any(|c| obs.lost.contains(c));
        if !conf_differs && !obs.settling && !missing.is_empty() && (lost || !obs.backoff) {
            actions.push(Action::Reconcile(missing));
        }
    }
    actions.extend(outdated(desired, r, obs, scope));
    actions
}

#[cfg(test)]
mod tests {
    use super::super::statusall::parse;
    use super::super::testutil::{desired, psk_tunnel, rendered};
    use super::*;
    use crate::backend::files::SECRET_MODE;

    /// The observation of a charon that loaded exactly `r`, with `status` text.
    fn converged(r: &Rendered, status: &str) -> Observed {
        Observed {
            conf: Some(r.conf.clone()),
            conf_sections: super::super::conffile::sections(&r.conf),
            secrets: Some((sha256(r.secrets.as_bytes()), SECRET_MODE)),
            secret_lines: super::super::conffile::secret_lines(&r.secrets),
            cert_changed: BTreeSet::new(),
            status: parse(status),
            settling: false,
            backoff: false,
            lost: BTreeSet::new(),
        }
    }

    const UP: &str = "\
Connections:
    vx1-in-1:  %any...192.0.2.2  IKEv2
    vx1-in-1:   child:  dynamic[udp/4789] === dynamic[udp] TRANSPORT
   vx1-out-1:   child:  dynamic[udp] === dynamic[udp/4789] TRANSPORT
      gre1-1:   child:  dynamic[gre] === dynamic[gre] TRANSPORT
      office:  %any...198.51.100.7  IKEv2
      office:   child:  dynamic === 10.0.0.0/8 TUNNEL
Security Associations (2 up, 0 connecting):
    vx1-in-1[1]: ESTABLISHED 8 seconds ago, 192.0.2.1[192.0.2.1]...192.0.2.2[192.0.2.2]
   vx1-out-1{1}:  INSTALLED, TRANSPORT, reqid 2, ESP SPIs: ce04275e_i c41b58b3_o
    vx1-in-1{2}:  INSTALLED, TRANSPORT, reqid 1, ESP SPIs: c0dc3410_i cb107296_o
      gre1-1{3}:  INSTALLED, TRANSPORT, reqid 3, ESP SPIs: c0dc3411_i cb107297_o
      office[2]: ESTABLISHED 1 hour ago, 192.0.2.1[192.0.2.1]...198.51.100.7[198.51.100.7]
      office{4}:  INSTALLED, TUNNEL, reqid 4, ESP SPIs: c0dc3412_i cb107298_o
";

    fn two(vx_version: u64, gre_version: u64) -> Desired {
        desired(vec![
            psk_tunnel("vx1", "vxlan", "192.0.2.2", "k", vx_version),
            psk_tunnel("gre1", "gre", "192.0.2.2", "k", gre_version),
        ])
    }

    #[test]
    fn converged_plans_nothing_and_keeps_in_out_sas() {
        let d = two(1, 1);
        let r = rendered(&d);
        assert_eq!(plan(&d, &r, &converged(&r, UP), &Scope::All), vec![]);
    }

    #[test]
    fn version_bump_downs_only_the_outdated_children_of_a_shared_ike_sa() {
        let old = two(1, 1);
        let obs = converged(&rendered(&old), UP);
        let d = two(2, 1);
        let r = rendered(&d);
        assert_eq!(
            plan(&d, &r, &obs, &Scope::All),
            vec![
                Action::WriteFiles,
                Action::Update,
                // vx1-in-1[1] also carries the current gre1-1{3}: it stays up.
                Action::DownNb {
                    sa: "vx1-out-1{1}".into(),
                    version: Some(1)
                },
                Action::DownNb {
                    sa: "vx1-in-1{2}".into(),
                    version: Some(1)
                },
            ]
        );
    }

    #[test]
    fn deleting_every_tunnel_downs_their_ike_sa_and_never_a_foreign_one() {
        let old = two(1, 1);
        let obs = converged(&rendered(&old), UP);
        let d = desired(vec![]);
        let r = rendered(&d);
        assert_eq!(
            plan(&d, &r, &obs, &Scope::All),
            vec![
                Action::WriteFiles,
                Action::RereadSecrets,
                Action::Update,
                Action::DownNb {
                    sa: "vx1-in-1[1]".into(),
                    version: Some(1)
                },
            ]
        );
    }

    #[test]
    fn a_pass_over_one_tunnel_plans_from_its_part_of_the_status_only() {
        let scope = Scope::Tunnels(["vx1".to_string()].into());
        let part = |r: &Rendered, status: &str| Observed {
            conf_sections: super::super::conffile::sections_in(&r.conf, |c| covers(&scope, c)),
            status: super::super::statusall::parse_in(status, |c| covers(&scope, c)),
            ..converged(r, status)
        };
        // gre1-1 has a peer configuration of its own here: the partial status does not list
        // it, which must not read as "lost by charon".
        let apart = UP.replace(
            "      gre1-1:   child",
            "      gre1-1:  %any...192.0.2.3  IKEv2\n      gre1-1:   child",
        );
        let d = two(1, 1);
        let r = rendered(&d);
        let obs = part(&r, &apart);
        assert!(!obs.status.loaded().contains("gre1-1"));
        assert_eq!(plan(&d, &r, &obs, &scope), vec![]);
        // vx1 changes: the same actions as a full pass; the IKE_SA that also carries gre1-1
        // (in the original sample) is kept whole in the partial status, so it stays up.
        let obs = part(&r, UP);
        let d2 = two(2, 1);
        let r2 = rendered(&d2);
        let full = converged(&r, UP);
        assert_eq!(
            plan(&d2, &r2, &obs, &scope),
            plan(&d2, &r2, &full, &Scope::All)
        );
        assert!(covers(&scope, "vx1-in-3") && covers(&scope, "vx1-2"));
        assert!(!covers(&scope, "vx1") && !covers(&scope, "vx12-in-1"));
        // A removed tunnel is in the scope through its name.
        let gone = desired(vec![psk_tunnel("gre1", "gre", "192.0.2.2", "k", 1)]);
        let r3 = rendered(&gone);
        let downs = plan(&gone, &r3, &obs, &scope);
        assert!(
            downs.contains(&Action::DownNb {
                sa: "vx1-in-1{2}".into(),
                version: Some(1)
            }),
            "{downs:?}"
        );
    }

    #[test]
    fn a_connection_lost_by_charon_is_reloaded_once_things_settled() {
        let d = two(1, 1);
        let r = rendered(&d);
        let mut obs = converged(
            &r,
            &UP.replace("      gre1-1:   child", "      xxx:   child"),
        );
        assert_eq!(
            plan(&d, &r, &obs, &Scope::All),
            vec![Action::Reconcile(vec!["gre1-1".into()])]
        );
        obs.settling = true;
        assert_eq!(plan(&d, &r, &obs, &Scope::All), vec![]);
    }

    /// Issue 22: within a minute of our last reload, a connection charon never loaded waits
    /// (it may refuse it: no reload loop), but one it held and lost is reloaded at once.
    #[test]
    fn a_lost_connection_overrides_the_back_off_a_refused_one_does_not() {
        let d = two(1, 1);
        let r = rendered(&d);
        let mut obs = converged(
            &r,
            &UP.replace("      gre1-1:   child", "      xxx:   child"),
        );
        obs.backoff = true;
        assert_eq!(plan(&d, &r, &obs, &Scope::All), vec![], "never loaded");
        obs.lost.insert("gre1-1".into());
        assert_eq!(
            plan(&d, &r, &obs, &Scope::All),
            vec![Action::Reconcile(vec!["gre1-1".into()])]
        );
        obs.settling = true;
        assert_eq!(
            plan(&d, &r, &obs, &Scope::All),
            vec![],
            "starter still busy"
        );
    }

    #[test]
    fn certificate_changed_in_place_reloads_credentials_without_down() {
        let d = two(1, 1);
        let r = rendered(&d);
        let mut obs = converged(&r, UP);
        obs.cert_changed.insert("/etc/c.pem".into());
        assert_eq!(
            plan(&d, &r, &obs, &Scope::All),
            vec![
                Action::WriteFiles,
                Action::ReloadCredentials(vec!["/etc/c.pem".into()])
            ]
        );
    }

    #[test]
    fn secrets_with_a_wrong_mode_are_rewritten_and_reread() {
        let d = two(1, 1);
        let r = rendered(&d);
        let mut obs = converged(&r, UP);
        obs.secrets = obs.secrets.map(|(h, _)| (h, 0o644));
        assert_eq!(
            plan(&d, &r, &obs, &Scope::All),
            vec![Action::WriteFiles, Action::RereadSecrets]
        );
    }

    #[test]
    fn outdated_log_line_keeps_the_python_wording() {
        let a = Action::DownNb {
            sa: "vx1-in-1{2}".into(),
            version: Some(1),
        };
        assert_eq!(a.to_string(), "vx1-in-1{2} is outdated 1");
    }
}
