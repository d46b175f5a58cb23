//! Pure model: OVSDB rows → validated desired tunnels and global PKI.
//!
//! Nothing here does I/O except through [`cert::CertSource`], which the shell provides (and
//! tests fake). [`registry::Registry`] keeps the per-tunnel version counter, the one piece of
//! state, and returns [`registry::ModelEvent`]s that the shell logs with the exact wording OVS's
//! tests grep ("Tunnel X appeared in OVSDB", ...).

pub mod bundle;
pub mod cert;
pub mod grammar;
pub mod key;
mod pki_check;
pub mod registry;
pub mod rows;
#[cfg(test)]
mod test_pki;
pub mod types;
pub mod validate;
pub mod versions;

pub use types::*;
