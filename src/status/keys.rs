//! The `external_ids` keys the monitor owns. `vswitch-schema/contract.json` documents each one
//! and a test checks that these lists and the contract agree.

/// `Interface:external_ids:ipsec-state`: configured, negotiating, up, down, invalid or error.
pub const STATE: &str = "ipsec-state";
/// `Interface:external_ids:ipsec-error`: why the state is invalid, error or down.
pub const ERROR: &str = "ipsec-error";
/// `Interface:external_ids:ipsec-version`: the tunnel's configuration version.
pub const VERSION: &str = "ipsec-version";
/// `Interface:external_ids:ipsec-auth`: psk, self-signed or ca-signed.
pub const AUTH: &str = "ipsec-auth";

/// `Interface:external_ids:ipsec-generation`: our key generation (static keys only); the CMS
/// copies it into the peer's `options:ipsec_peer_generation`.
pub const GENERATION: &str = "ipsec-generation";
/// `Interface:external_ids:ipsec-rotation`: `pending` or `ready` while `ipsec_psk_next` is set
/// (static keys only).
pub const ROTATION: &str = "ipsec-rotation";

/// `Interface:external_ids:ipsec-warning`: a certificate of the tunnel expires within
/// `--cert-expiry-warning-days` (subject and date); absent otherwise.
pub const WARNING: &str = "ipsec-warning";

/// Keys a backend may publish through `LiveStatus::keys`; any other key is ignored.
pub const BACKEND_INTERFACE: &[&str] = &[GENERATION, ROTATION];

/// Every key we write on Interface rows.
pub const INTERFACE: &[&str] = &[STATE, ERROR, VERSION, AUTH, WARNING, GENERATION, ROTATION];

pub const MONITOR_BACKEND: &str = "ipsec-monitor-backend";
pub const MONITOR_VERSION: &str = "ipsec-monitor-version";
pub const MONITOR_LAST_RECONCILE: &str = "ipsec-monitor-last-reconcile";
pub const MONITOR_ERROR: &str = "ipsec-monitor-error";

/// Every key we write on the Open_vSwitch row.
pub const OPEN_VSWITCH: &[&str] = &[
    MONITOR_BACKEND,
    MONITOR_VERSION,
    MONITOR_LAST_RECONCILE,
    MONITOR_ERROR,
];
