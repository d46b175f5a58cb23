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

/// Every key we write on Interface rows.
pub const INTERFACE: &[&str] = &[STATE, ERROR, VERSION, AUTH];

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
