//! `--strongswan-mode`: VICI (swanctl's socket) or the legacy stroke interface
//! (ipsec.conf + `ipsec`). `auto` picks VICI when charon's VICI socket answers a `version`
//! request, so hosts that run charon-systemd or enable the vici plugin get the batched,
//! event-driven backend, and classic starter setups keep working unchanged.

use std::path::Path;
use std::time::Duration;

use crate::backend::vici::Connection;

/// The strongSwan interface to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StrongSwanMode {
    /// VICI when the socket answers, else stroke.
    #[default]
    Auto,
    /// charon's VICI socket (swanctl).
    Vici,
    /// ipsec.conf, ipsec.secrets and the `ipsec` command (starter/stroke).
    Stroke,
}

/// How long `auto` waits for the VICI socket to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves `auto` to `Vici` or `Stroke`; explicit modes are returned as they are.
pub async fn resolve(mode: StrongSwanMode, socket: &Path) -> StrongSwanMode {
    match mode {
        StrongSwanMode::Auto if answers(socket).await => StrongSwanMode::Vici,
        StrongSwanMode::Auto => StrongSwanMode::Stroke,
        explicit => explicit,
    }
}

async fn answers(socket: &Path) -> bool {
    match Connection::connect(socket, PROBE_TIMEOUT).await {
        Ok(mut c) => c
            .request("version", crate::backend::vici::Message::new())
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn auto_falls_back_to_stroke_without_a_socket_and_explicit_modes_stay() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("charon.vici");
        assert_eq!(
            resolve(StrongSwanMode::Auto, &s).await,
            StrongSwanMode::Stroke
        );
        assert_eq!(
            resolve(StrongSwanMode::Vici, &s).await,
            StrongSwanMode::Vici
        );
        // A socket that accepts but never answers is not VICI either.
        let _l = std::os::unix::net::UnixListener::bind(&s).unwrap();
        let start = std::time::Instant::now();
        assert_eq!(
            resolve(StrongSwanMode::Auto, &s).await,
            StrongSwanMode::Stroke
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
