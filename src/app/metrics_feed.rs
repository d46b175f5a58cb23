//! The metrics' own observations, made by the shell: one XFRM SA dump (every backend's SAs
//! are in the kernel), `/proc/net/xfrm_stat`, and the notAfter of the certificates in use.
//!
//! They cost O(SAs), so they run on the periodic timer when `--metrics` is on (and for a
//! scrape only when there was none yet), and for each `metrics/show`, an operator's command;
//! a scrape reads what they left (see `metrics::traffic`).

use std::time::{Duration, Instant};

use tracing::debug;

use crate::backend::xfrm::netlink::Xfrm;
use crate::metrics::Metrics;
use crate::metrics::traffic::{CertExpiry, Role};
use crate::model::cert::CertSource;
use crate::model::{Auth, Desired};

/// The kernel reader, opened on first use.
#[derive(Default)]
pub struct Feed {
    xfrm: Option<Xfrm>,
}

impl Feed {
    /// Reads the kernel and the certificates again when the last read is older than
    /// `max_age` (or there was none).
    pub async fn refresh(
        &mut self,
        metrics: &mut Metrics,
        desired: &Desired,
        certs: &mut dyn CertSource,
        max_age: Duration,
    ) {
        if metrics
            .kernel()
            .read_at
            .is_some_and(|at| at.elapsed() < max_age)
        {
            return;
        }
        let sas = match self.xfrm.as_mut() {
            Some(x) => x.dump_host_sas().await,
            None => match Xfrm::open(Duration::from_secs(5)) {
                Ok(x) => self.xfrm.insert(x).dump_host_sas().await,
                Err(e) => Err(e),
            },
        };
        let rekeyed = match sas {
            Ok(sas) => metrics.kernel_mut().update_sas(desired, &sas),
            Err(e) => {
                debug!("metrics: cannot read the kernel's SAs: {e}");
                self.xfrm = None;
                Vec::new()
            }
        };
        for t in rekeyed {
            metrics.rekey(&t);
        }
        let kernel = metrics.kernel_mut();
        kernel.xfrm_stat = crate::backend::xfrm::read_xfrm_stat();
        kernel.certs = cert_expiry(desired, certs);
        kernel.read_at = Some(Instant::now());
    }
}

/// The local certificate, the CA's and every peer certificate file in use, by CN.
fn cert_expiry(desired: &Desired, certs: &mut dyn CertSource) -> Vec<CertExpiry> {
    let mut paths = Vec::new();
    if let Some(pki) = &desired.global.pki {
        paths.push((Role::Local, pki.certificate.clone()));
        paths.extend(pki.ca_cert.clone().map(|p| (Role::Ca, p)));
    }
    for t in desired.tunnels.values() {
        if let Auth::SelfSigned { remote_cert, .. } = &t.conf.auth {
            paths.push((Role::Peer, remote_cert.clone()));
        }
    }
    let mut out: Vec<CertExpiry> = paths
        .into_iter()
        .filter_map(|(role, path)| {
            let info = certs.cert_info(&path).ok()?;
            Some(CertExpiry {
                role,
                subject: info.cn,
                not_after: info.not_after,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
