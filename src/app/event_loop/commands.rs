//! The commands only the event loop can answer (`tunnels/show`, `diagnose`, `metrics/show`,
//! `refresh`, `exit`): each reads the state the loop owns, between passes.

use super::*;

impl<B: Backend> EventLoop<B> {
    pub(super) async fn on_control(&mut self, req: ControlRequest) -> Option<Exit> {
        let ControlRequest {
            command,
            reply,
            written,
        } = req;
        let (answer, exit) = match command {
            AppCommand::TunnelsShow { json } => {
                let events: Vec<_> = (self.registry.tunnels())
                    .map(|t| {
                        let live = self.outcome.live.get(&t.name);
                        (t, live, self.xfrm_watch.show(&t.name, live))
                    })
                    .collect();
                let tunnels: Vec<show::ShowTunnel<'_>> = (events.iter())
                    .map(|(t, live, with_events)| show::ShowTunnel {
                        tunnel: t,
                        live: with_events.as_ref().or(*live),
                        inner_mtu: self.inner_mtu(t),
                    })
                    .collect();
                (
                    Ok(show::render(json, self.registry.global(), &tunnels)),
                    None,
                )
            }
            AppCommand::Diagnose { interface, json } => (
                crate::app::diagnose::run(
                    &mut self.backend,
                    &self.registry,
                    &self.outcome,
                    crate::app::diagnose::Sources {
                        rows: &self.rows,
                        certs: &mut self.certs,
                        warning_days: self.cert_alerts.warning_days(),
                    },
                    interface.as_deref(),
                    json,
                )
                .await,
                None,
            ),
            AppCommand::Refresh => {
                self.perform(Work {
                    model: true,
                    status: true,
                    ..Work::full_pass(Trigger::Control)
                })
                .await;
                (Ok(String::new()), None)
            }
            AppCommand::MetricsShow {
                openmetrics,
                scrape,
            } => {
                // A scrape reads the periodic observation (read now only if there is none);
                // an operator's metrics/show reads the kernel now.
                let max_age = match scrape {
                    true => Duration::from_secs(crate::app::RECONCILE_INTERVAL_SECS),
                    false => Duration::ZERO,
                };
                self.refresh_metrics(max_age).await;
                let format = match openmetrics {
                    true => metrics::Format::OpenMetrics,
                    false => metrics::Format::Prometheus,
                };
                let snapshot = || {
                    let mut snapshot = self.metrics.snapshot(&metrics_view(
                        &self.registry,
                        &self.outcome,
                        &self.cert_alerts,
                    ));
                    if snapshot.per_tunnel {
                        snapshot.vanished = self.xfrm_watch.vanished_series().collect();
                    }
                    snapshot
                };
                // Encoding is O(series): the renderer's thread does it, one body at a time, so
                // that the loop (and the next pass) waits only for the snapshot. A scrape
                // subscribed to the renderer before asking (its body comes from there).
                match scrape {
                    true => {
                        self.renderer.start(format, snapshot);
                        let _ = reply.send(Ok(String::new()));
                    }
                    false => self.renderer.show(format, reply, snapshot),
                }
                return None;
            }
            AppCommand::Exit { cleanup: false } => (Ok(String::new()), Some(Exit::NoCleanup)),
            AppCommand::Exit { cleanup: true } => (self.cleanup().await, Some(Exit::Cleanup)),
        };
        // The requester may have gone away; nothing to do then.
        let _ = reply.send(answer);
        if exit.is_some() {
            // The process exits next: let the control server hand the reply to the socket
            // first. The bound only matters if a requester stops reading its socket.
            let _ = tokio::time::timeout(REPLY_FLUSH_LIMIT, written).await;
        }
        exit
    }

    /// `exit` with cleanup: remove IPsec state and our OVSDB keys.
    async fn cleanup(&mut self) -> Result<String, String> {
        info!("exit requested: removing IPsec state and OVSDB status");
        let mut problems = Vec::new();
        if let Err(e) = self.backend.cleanup().await {
            problems.push(format!("cannot clean up {}: {e}", self.backend.kind()));
        }
        // Nothing is left to adopt: the next run starts from version 1.
        if let Err(e) = files::remove(&self.versions_file) {
            problems.push(e.to_string());
        }
        let ops = self.client.with_replica(|r| {
            status::cleanup(&rows::interfaces(r), rows::open_vswitch(r).as_ref())
        });
        if !ops.is_empty()
            && let Err(e) = self.client.transact(ops).await
        {
            problems.push(format!("cannot remove status from OVSDB: {e}"));
        }
        for p in &problems {
            warn!("{p}");
        }
        if problems.is_empty() {
            Ok(String::new())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The largest inner MTU of a valid tunnel toward the kernel's path MTU to its peer.
    fn inner_mtu(&self, t: &crate::model::Tunnel) -> Option<u32> {
        let conf = t.conf()?;
        let path = crate::backend::initiator::probe(conf.remote_ip)?.mtu;
        let no_options = std::collections::BTreeMap::new();
        let options = self
            .rows
            .named(&t.name)
            .find(|r| r.uuid == t.uuid)
            .map_or(&no_options, |r| &r.options);
        mtu::input_for(conf, options, path, Vec::new()).inner_mtu()
    }
}

pub(super) fn metrics_view<'a>(
    registry: &'a Registry,
    outcome: &'a PassOutcome,
    cert_alerts: &'a CertAlerts,
) -> metrics::View<'a> {
    metrics::View {
        tunnels: registry.tunnel_map(),
        live: &outcome.live,
        apply_errors: &outcome.apply_errors,
        cert_alerts: cert_alerts.alerts(),
        backend_error: outcome.backend_error.is_some(),
    }
}
