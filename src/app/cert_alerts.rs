//! Certificate expiry while the monitor runs: a certificate a tunnel uses (ours, the CA's, or
//! the peer's `remote_cert`) that expires within `--cert-expiry-warning-days` puts
//! `external_ids:ipsec-warning` on the tunnel for as long as it lasts and logs one warning a
//! day per certificate (path, subject, date); an expired one makes the tunnel `error` with that
//! reason. The facts come from `diagnose::certs::expiry` over the model's certificate cache,
//! looked at again at most once a minute (files are re-parsed only when they change).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::diagnose::Code;
use crate::diagnose::certs::{CertFile, expiry};
use crate::model::cert::FsCertSource;
use crate::model::{Auth, Desired};
use crate::status::CertAlert;

/// Seconds between two looks at the certificates.
const PERIOD: i64 = 60;

#[derive(Debug)]
pub struct CertAlerts {
    warning_days: u32,
    alerts: BTreeMap<String, CertAlert>,
    /// The day (since the epoch) each certificate was last logged.
    logged: HashMap<PathBuf, i64>,
    /// When the certificates were last looked at, and for which desired state.
    last: Option<(i64, u64)>,
}

impl CertAlerts {
    /// `--cert-expiry-warning-days`, which `diagnose` judges expiry by too.
    pub fn warning_days(&self) -> u32 {
        self.warning_days
    }

    pub fn new(warning_days: u32) -> Self {
        Self {
            warning_days,
            alerts: BTreeMap::new(),
            logged: HashMap::new(),
            last: None,
        }
    }

    pub fn alerts(&self) -> &BTreeMap<String, CertAlert> {
        &self.alerts
    }

    /// Looks at the certificates if a minute passed or the desired state (`generation`)
    /// changed; returns the tunnels whose alert changed.
    pub fn refresh(
        &mut self,
        desired: &Desired,
        generation: u64,
        certs: &mut FsCertSource,
        now: i64,
    ) -> BTreeSet<String> {
        if self
            .last
            .is_some_and(|(t, g)| g == generation && now - t < PERIOD)
        {
            return BTreeSet::new();
        }
        self.last = Some((now, generation));
        let mut by_path: HashMap<PathBuf, Option<CertAlert>> = HashMap::new();
        let mut alerts = BTreeMap::new();
        for (name, t) in &desired.tunnels {
            let conf = &t.conf;
            let pki = conf.pki.as_deref();
            let peer = match &conf.auth {
                Auth::SelfSigned { remote_cert, .. } => Some(("peer", remote_cert.as_path())),
                _ => None,
            };
            let files = pki
                .map(|p| ("local", p.certificate.as_path()))
                .into_iter()
                .chain(pki.and_then(|p| p.ca_cert.as_deref()).map(|c| ("CA", c)))
                .chain(peer);
            let mut worst: Option<CertAlert> = None;
            for (role, path) in files {
                let alert = by_path
                    .entry(path.to_owned())
                    .or_insert_with(|| self.look(role, path, certs, now))
                    .clone();
                worst = match (worst, alert) {
                    (Some(CertAlert::Expired(w)), _) => Some(CertAlert::Expired(w)),
                    (_, Some(a @ CertAlert::Expired(_))) => Some(a),
                    (w, a) => w.or(a),
                };
            }
            if let Some(a) = worst {
                alerts.insert(name.clone(), a);
            }
        }
        let changed = self
            .alerts
            .keys()
            .chain(alerts.keys())
            .filter(|n| self.alerts.get(*n) != alerts.get(*n))
            .cloned()
            .collect();
        self.alerts = alerts;
        changed
    }

    /// The alert of one certificate file, logged once a day while it lasts.
    fn look(
        &mut self,
        role: &str,
        path: &Path,
        certs: &mut FsCertSource,
        now: i64,
    ) -> Option<CertAlert> {
        let file = CertFile {
            path: path.to_owned(),
            info: certs.read(path).map_err(|e| e.to_string()),
        };
        let finding = expiry(role, &file, now, self.warning_days)?;
        let day = now.div_euclid(86_400);
        if self.logged.get(path) != Some(&day) {
            self.logged.insert(path.to_owned(), day);
            warn!("{}", finding.message);
        }
        Some(if finding.code == Code::CertExpired {
            CertAlert::Expired(finding.message)
        } else {
            CertAlert::Expiring(finding.message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DesiredTunnel, Pki, TunnelConf, TunnelType};
    use std::process::Command;
    use std::sync::Arc;

    fn cert(dir: &Path, name: &str, days: u32) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                &days.to_string(),
            ])
            .args(["-subj", &format!("/CN={name}"), "-keyout"])
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&path)
            .output()
            .expect("openssl");
        assert!(out.status.success());
        path
    }

    fn desired(local: &Path, peer: &Path) -> Desired {
        let mut conf = TunnelConf::new(
            "t1",
            TunnelType::Vxlan,
            "192.0.2.2".parse().unwrap(),
            Auth::SelfSigned {
                remote_cert: peer.to_owned(),
                remote_name: "peer".into(),
            },
        );
        conf.pki = Some(Arc::new(Pki {
            certificate: local.to_owned(),
            private_key: local.with_extension("key"),
            ca_cert: None,
            local_name: "me".into(),
        }));
        let mut d = Desired::default();
        d.tunnels.insert(
            "t1".into(),
            DesiredTunnel {
                version: 1,
                conf: Arc::new(conf),
            },
        );
        d
    }

    #[test]
    fn alerts_follow_time_and_are_looked_at_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let (me, peer) = (cert(dir.path(), "me", 365), cert(dir.path(), "peer", 3));
        let d = desired(&me, &peer);
        let mut certs = FsCertSource::new();
        let mut a = CertAlerts::new(30);
        let t0 = crate::status::time::unix_now();
        assert_eq!(
            a.refresh(&d, 1, &mut certs, t0),
            BTreeSet::from(["t1".to_owned()])
        );
        assert!(
            matches!(&a.alerts()["t1"], CertAlert::Expiring(m) if m.contains("CN=peer")),
            "{:?}",
            a.alerts()
        );
        // Logged once for the day.
        assert_eq!(a.logged.len(), 1);
        // Nothing new within the minute; four days later the peer's certificate expired.
        assert!(a.refresh(&d, 1, &mut certs, t0 + 10).is_empty());
        assert_eq!(a.refresh(&d, 1, &mut certs, t0 + 4 * 86_400).len(), 1);
        assert!(matches!(&a.alerts()["t1"], CertAlert::Expired(m) if m.contains("expired on")));
        // The peer's certificate renewed: the alert is gone (a new desired state looks now).
        let renewed = cert(dir.path(), "peer2", 365);
        assert_eq!(
            a.refresh(&desired(&me, &renewed), 2, &mut certs, t0 + 20)
                .len(),
            1
        );
        assert!(a.alerts().is_empty());
    }
}
