//! The vocabulary of `diagnose`: a finding is one thing wrong (or worth knowing) about one
//! tunnel, named by a stable [`Code`].
//!
//! Codes are a contract: scripts and runbooks match on them, and `docs/troubleshooting.md`
//! lists each with its cause and fix. A code is never renamed or reused for another cause;
//! [`Code::ALL`] is the list a test checks against the documentation.

use serde::Serialize;

/// How bad a finding is. `error`: the tunnel does not (or will not) carry encrypted traffic;
/// `warning`: it works now but will break or is unsafe; `info`: context for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

macro_rules! codes {
    ($($variant:ident => $name:literal,)*) => {
        /// A stable finding code (kebab-case on the wire and in the docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    InvalidConfig => "invalid-config",
    IkeDaemonDown => "ike-daemon-down",
    ConnNotLoaded => "conn-not-loaded",
    IkeSaMissing => "ike-sa-missing",
    ChildSaMissing => "child-sa-missing",
    PolicyMissing => "policy-missing",
    SaMissing => "sa-missing",
    NoInboundTraffic => "no-inbound-traffic",
    MtuExceedsPath => "mtu-exceeds-path",
    NatOnTunnelPort => "nat-on-tunnel-port",
    FirewallBlocksIke => "firewall-blocks-ike",
    ForeignPolicyShadows => "foreign-policy-shadows",
    CleartextNotGuarded => "cleartext-not-guarded",
    CertExpired => "cert-expired",
    CertExpiring => "cert-expiring",
    CertNameMismatch => "cert-name-mismatch",
    CertKeyMismatch => "cert-key-mismatch",
    CertNotSignedByCa => "cert-not-signed-by-ca",
    KeyFileReadableByOthers => "key-file-readable-by-others",
    PeerUnreachable => "peer-unreachable",
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One finding: what is wrong, in a sentence, and a one-line fix. Neither ever holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub hint: String,
}

impl Finding {
    pub fn new(
        code: Code,
        severity: Severity,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            code,
            severity,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_kebab_case_and_serialise_as_their_name() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            let name = c.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(
                name.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-'),
                "{name}"
            );
            assert_eq!(
                serde_json::to_string(c).unwrap_or_default(),
                format!("\"{name}\"")
            );
        }
    }

    #[test]
    fn a_finding_serialises_with_the_documented_keys() {
        let f = Finding::new(
            Code::SaMissing,
            Severity::Error,
            "no outbound SA",
            "run refresh",
        );
        let v = serde_json::to_value(&f).unwrap_or_default();
        assert_eq!(v["code"], "sa-missing");
        assert_eq!(v["severity"], "error");
        assert_eq!(v["message"], "no outbound SA");
        assert_eq!(v["hint"], "run refresh");
    }
}
