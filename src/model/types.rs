//! Value types of the model: what a validated tunnel is, independent of any IKE daemon.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Tunnel protocols that can carry IPsec. `stt` was removed from OVS in 3.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelType {
    Gre,
    Geneve,
    Vxlan,
}

impl TunnelType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gre" => Some(Self::Gre),
            "geneve" => Some(Self::Geneve),
            "vxlan" => Some(Self::Vxlan),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gre => "gre",
            Self::Geneve => "geneve",
            Self::Vxlan => "vxlan",
        }
    }

    /// The IANA UDP port OVS uses when `options:dst_port` is unset; `None` for GRE.
    pub fn default_udp_port(self) -> Option<u16> {
        match self {
            Self::Gre => None,
            Self::Geneve => Some(6081),
            Self::Vxlan => Some(4789),
        }
    }
}

impl fmt::Display for TunnelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// A secret (PSK). `Debug` and `Display` never show it; only [`Secret::expose`] does, and
/// only backends that must hand it to an IKE daemon or a key derivation call that.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `Open_vSwitch:other_config:ipsec_skb_mark`, `value/mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SkbMark {
    pub value: u32,
    pub mask: u32,
}

impl fmt::Display for SkbMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.value, self.mask)
    }
}

/// The local certificate configuration (`other_config:certificate`, `private_key`, `ca_cert`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pki {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub ca_cert: Option<PathBuf>,
    /// CN of `certificate`: our IKE identity.
    pub local_name: String,
}

/// Global settings that apply to every tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Global {
    pub pki: Option<Arc<Pki>>,
    pub skb_mark: Option<SkbMark>,
    /// The members of `pki.ca_cert` as last read whole: a malformed bundle makes the
    /// CA-signed tunnels invalid and leaves the previous members here, so backends never
    /// read a bundle themselves and never see a broken one.
    pub ca_bundle: Option<Arc<super::bundle::CaBundle>>,
}

/// How a tunnel authenticates its peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Auth {
    /// `options:psk`.
    Psk(Secret),
    /// `options:remote_cert`: the peer's self-signed certificate; `remote_name` is its CN.
    SelfSigned {
        remote_cert: PathBuf,
        remote_name: String,
    },
    /// `options:remote_name` with a global `ca_cert`: the peer proves `remote_name` with a
    /// certificate signed by that CA.
    CaSigned { remote_name: String },
}

impl Auth {
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Psk(_) => "psk",
            Auth::SelfSigned { .. } => "self-signed",
            Auth::CaSigned { .. } => "ca-signed",
        }
    }

    pub fn remote_name(&self) -> Option<&str> {
        match self {
            Auth::Psk(_) => None,
            Auth::SelfSigned { remote_name, .. } | Auth::CaSigned { remote_name } => {
                Some(remote_name)
            }
        }
    }
}

/// A validated tunnel: every field has passed its grammar and may reach a config file, a
/// command line or a netlink message as is (the PSK through an encoding, see [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunnelConf {
    pub name: String,
    pub kind: TunnelType,
    /// `options:local_ip`; `None` means "the address of the default route".
    pub local_ip: Option<IpAddr>,
    pub remote_ip: IpAddr,
    pub family: Family,
    /// `options:dst_port` when set to another port than the type's default (the default
    /// spelled out is `None`, the same tunnel); see [`TunnelConf::udp_port`].
    pub dst_port: Option<u16>,
    pub auth: Auth,
    /// The global PKI this tunnel uses (certificate modes only), so that a PKI change gives a
    /// new version to exactly the tunnels that depend on it.
    pub pki: Option<Arc<Pki>>,
    /// `options:ipsec_<key>=<value>` with the prefix stripped, each checked by the grammar.
    pub custom: BTreeMap<String, String>,
    /// Options of the static-key backend (`--ike-daemon=none`); not passed to IKE daemons.
    pub static_keying: StaticKeying,
}

/// Static-key options of a PSK tunnel (see `docs/static-keying.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StaticKeying {
    /// `options:ipsec_psk_next`: the next PSK of a two-phase rotation.
    pub psk_next: Option<Secret>,
    /// `options:ipsec_peer_generation`: the peer's key generation (128 bits), relayed by the
    /// CMS from the peer's `external_ids:ipsec-generation`.
    pub peer_generation: Option<[u8; 16]>,
}

impl TunnelConf {
    /// A tunnel to `remote_ip` with `auth`, the default route as local address, the default
    /// port, no PKI and no options; set the other fields as needed.
    pub fn new(name: impl Into<String>, kind: TunnelType, remote_ip: IpAddr, auth: Auth) -> Self {
        Self {
            name: name.into(),
            kind,
            local_ip: None,
            remote_ip,
            family: Family::of(&remote_ip),
            dst_port: None,
            auth,
            pki: None,
            custom: BTreeMap::new(),
            static_keying: StaticKeying::default(),
        }
    }

    /// The UDP destination port of the tunnel traffic; `None` for GRE.
    pub fn udp_port(&self) -> Option<u16> {
        self.kind
            .default_udp_port()
            .map(|d| self.dst_port.unwrap_or(d))
    }

    /// Connection names, as the Python monitor names them: `X-N` for GRE, `X-in-N` and
    /// `X-out-N` for UDP tunnels. OVS's tests and operators grep these.
    pub fn conn_names(&self, version: u64) -> Vec<String> {
        match self.kind {
            TunnelType::Gre => vec![format!("{}-{version}", self.name)],
            TunnelType::Geneve | TunnelType::Vxlan => vec![
                format!("{}-in-{version}", self.name),
                format!("{}-out-{version}", self.name),
            ],
        }
    }
}

/// The tunnel as configured in OVSDB, valid or not, for display (`tunnels/show`, JSON
/// status). The PSK is never kept here, only whether one is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawTunnel {
    pub kind: String,
    pub local_ip: Option<String>,
    pub remote_ip: Option<String>,
    pub dst_port: Option<String>,
    pub remote_cert: Option<String>,
    pub remote_name: Option<String>,
    pub psk_set: bool,
    pub custom: BTreeMap<String, String>,
}

/// The outcome of validating one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    Valid(Arc<TunnelConf>),
    /// The reason, phrased as the Python monitor logs it after "contains invalid
    /// configuration": it starts with ": ".
    Invalid(String),
}

/// One IPsec tunnel known to the monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunnel {
    pub uuid: String,
    pub name: String,
    /// Starts at 1 and grows by one whenever the effective configuration changes.
    pub version: u64,
    pub validity: Validity,
    /// Boxed: only `tunnels/show` reads it, and inline it would be 176 of this struct's
    /// bytes in every slot of the registry's map (see docs/performance.md, Memory).
    pub raw: Box<RawTunnel>,
    pub ofport: Option<i64>,
    pub cfm_fault: Option<bool>,
}

impl Tunnel {
    pub fn conf(&self) -> Option<&Arc<TunnelConf>> {
        match &self.validity {
            Validity::Valid(c) => Some(c),
            Validity::Invalid(_) => None,
        }
    }
}

/// A valid tunnel as backends see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredTunnel {
    pub version: u64,
    pub conf: Arc<TunnelConf>,
}

impl DesiredTunnel {
    pub fn conn_names(&self) -> Vec<String> {
        self.conf.conn_names(self.version)
    }
}

/// Everything a backend must make true: the global settings and every valid tunnel by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub global: Global,
    pub tunnels: BTreeMap<String, DesiredTunnel>,
}
