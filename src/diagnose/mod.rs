//! `diagnose`: answers "why is this tunnel not encrypting?" layer by layer (OVSDB row, IKE
//! daemon, connections, IKE and Child SAs, kernel policies and SAs, traffic, MTU, NAT and
//! firewall, foreign policies, certificates, routing), each failure named by a stable
//! [`Code`] with a one-line fix.
//!
//! Diagnose is read-only and fed from what the pipeline already observed, plus read-only
//! looks at the host (routes, nft ruleset, certificate files); it never changes state and
//! never prints a secret. Each host check is a pure `check` over explicit inputs plus a small
//! gatherer that reads them.

pub mod certs;
pub mod finding;
pub mod mtu;
pub mod nft;
pub mod route;

pub use finding::{Code, Finding, Severity};
