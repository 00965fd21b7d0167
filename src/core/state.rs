//! The state of one host, as meshctl sees it: the same type holds the *desired* state (computed
//! from the inventory) and the *live* state (parsed from facts), so the diff is one generic step.
//!
//! Only what meshctl owns is in here: its WireGuard interface, routes marked with meshctl's own
//! `proto` number, the sysctls the roles name, meshctl's own firewall chains and their tagged
//! jumps, NDP proxy entries for the clients' addresses, and the files that persist it all.
//! No field can hold a private or preshared key: the key file's *location* and mode are state,
//! its content never is.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::names::{HostName, InterfaceName, WgKey};

/// The `proto` number meshctl stamps on every route it makes (`ip route ... proto 157`), so it
/// only ever removes routes it made itself. 157 is not assigned in iproute2's rt_protos.
pub const ROUTE_PROTO: u8 = 157;

/// The comment tag on the jump rules meshctl inserts into the built-in chains.
pub const JUMP_COMMENT: &str = "meshctl";

/// Everything meshctl manages on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The WireGuard interface; `None` when it does not exist.
    pub interface: Option<WgInterface>,
    /// sysctl key (dotted, e.g. `net.ipv4.ip_forward`) to value.
    pub sysctls: BTreeMap<String, String>,
    /// Routes carrying `proto 157`.
    pub routes: BTreeSet<Route>,
    /// Policy routing rules carrying `protocol 157` (default routes through the tunnel).
    #[serde(default)]
    pub rules: BTreeSet<RoutingRule>,
    /// meshctl's own firewall chains and the jumps into them.
    pub firewall: Firewall,
    /// `ip -6 neigh add proxy ADDR dev IF` entries.
    pub ndp_proxies: BTreeSet<NdpProxy>,
    /// Managed files by absolute path.
    pub files: BTreeMap<String, ManagedFile>,
    /// systemd units meshctl enables and runs (empty on hosts without systemd).
    pub services: BTreeMap<String, ServiceState>,
}

/// A WireGuard interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgInterface {
    /// The interface name (`network.interface`, default `wg0`).
    pub name: InterfaceName,
    /// Addresses with their prefix length (`10.8.0.1/24`).
    pub addresses: BTreeSet<IpNet>,
    /// The UDP port WireGuard listens on; `None`: a random one (only the hub needs a fixed port).
    pub listen_port: Option<u16>,
    /// The interface's public key: desired = the pinned key (`None`: known after apply);
    /// live = what `wg show IF public-key` printed.
    pub public_key: Option<WgKey>,
    /// Where the private key lives on the host, and whether it is there with mode 0600.
    pub private_key_file: KeyFile,
    /// The firewall mark of the interface's own packets (`None`: off): set where a default
    /// route goes through the tunnel, so the tunnel's packets are kept out of it.
    #[serde(default)]
    pub fwmark: Option<u32>,
    /// Peers keyed by their host name where known (desired: always; live: through the pinned
    /// keys), otherwise by their public key.
    pub peers: BTreeMap<String, Peer>,
}

/// The private key file. Desired, it is always 0600; its live mode is a fact of the host
/// (`LiveHost::key_file_mode`: the file exists whether or not the interface does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Absolute path, e.g. `/etc/wireguard/wg0.key`.
    pub path: String,
}

/// One WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// `None` in desired state: the peer's key is not pinned yet (known after apply).
    pub public_key: Option<WgKey>,
    /// The addresses routed to this peer and accepted from it.
    pub allowed_ips: BTreeSet<IpNet>,
    /// `host:port` as configured. A roaming peer has none in desired state, and then the live
    /// endpoint the kernel learnt is not compared.
    pub endpoint: Option<String>,
    /// Seconds; `None` = off.
    pub persistent_keepalive: Option<u16>,
    /// The pair's preshared key, by where it lives on this host (never its value). Desired:
    /// `Some(File)` where the pair has one. Live: what the interface holds, compared on the
    /// host with that file (`None`: no preshared key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<Psk>,
}

/// A peer's preshared key as meshctl sees it: only ever where it lives, never its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Psk {
    /// The one in this 0600 file on the host (live: the interface holds exactly its content).
    File(String),
    /// Live only: the interface holds a preshared key that is not the file's (or there is no
    /// file to compare it with).
    Other,
}

/// A preshared key file on a host: its mode and a SHA-256 of its content, computed on the
/// host, so two hosts' copies compare without the key leaving either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PskFile {
    /// Unix permission bits, e.g. 0o600.
    pub mode: u32,
    /// Lower-case hex SHA-256 of the file's content.
    pub sha256: String,
}

/// A route meshctl owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    /// The destination network, e.g. the home LAN `192.168.1.0/24`.
    pub destination: IpNet,
    /// The device the route goes out of (usually the WireGuard interface).
    pub device: InterfaceName,
    /// Next hop, when the route is not directly on the device.
    pub via: Option<std::net::IpAddr>,
    /// Routing table (`None`: main).
    #[serde(default)]
    pub table: Option<u32>,
}

/// The routing table, firewall mark and rule priorities of default routes through the tunnel
/// (wg-quick's scheme: everything not marked by the tunnel itself looks up this table, but the
/// main table's more specific routes still win).
pub const TUNNEL_TABLE: u32 = 51820;
/// Priority of the rule that lets main's non-default routes win.
pub const RULE_PRIORITY_SUPPRESS: u32 = 32760;
/// Priority of the rule that sends unmarked packets to the tunnel table.
pub const RULE_PRIORITY_TUNNEL: u32 = 32761;

/// A policy routing rule meshctl owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoutingRule {
    /// IPv4 or IPv6 (`ip -4|-6 rule`).
    pub family: Family,
    /// The rule's priority; see [`RULE_PRIORITY_SUPPRESS`] and [`RULE_PRIORITY_TUNNEL`].
    pub priority: u32,
    /// Which of the two rules: unmarked traffic to the tunnel, or main's specific routes first.
    pub kind: RuleKind,
}

/// The two rules of a default route through the tunnel (wg-quick's scheme).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// `not fwmark MARK table TABLE`
    TunnelUnlessMarked {
        /// The tunnel's own mark ([`TUNNEL_TABLE`] by convention), so its packets skip the rule.
        fwmark: u32,
        /// The table holding the default route through the tunnel.
        table: u32,
    },
    /// `table main suppress_prefixlength 0`
    MainWithoutDefault,
}

impl RoutingRule {
    /// What identifies this rule to `ip rule`, after the family and the verb:
    /// `not fwmark M table T priority P protocol 157`. The verb is the caller's (see
    /// [`crate::spell::rule_add`]); the plan's text shows the rule with it left out.
    pub fn selector(&self) -> String {
        let what = match &self.kind {
            RuleKind::TunnelUnlessMarked { fwmark, table } => {
                format!("not fwmark {fwmark} table {table}")
            }
            RuleKind::MainWithoutDefault => "table main suppress_prefixlength 0".to_owned(),
        };
        format!("{what} priority {} protocol {ROUTE_PROTO}", self.priority)
    }
}

/// Address family of a firewall table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// iptables, `ip -4`.
    Ipv4,
    /// ip6tables, `ip -6`.
    Ipv6,
}

impl Family {
    /// The family flag of `ip` (`ip -4 route`, `ip -6 rule`).
    pub fn ip_flag(self) -> &'static str {
        match self {
            Family::Ipv4 => "-4",
            Family::Ipv6 => "-6",
        }
    }

    /// The `*-save` / `*-restore` command prefix for the family.
    pub fn iptables(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }
}

/// meshctl's firewall: its own chains, each jumped to from a built-in chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// meshctl's chains and their rules, in `iptables-save` form without `-A CHAIN`.
    #[serde(with = "chain_list")]
    pub chains: BTreeMap<ChainId, Vec<String>>,
    /// Jumps from built-in chains, each a single rule tagged `-m comment --comment meshctl`.
    pub jumps: BTreeSet<Jump>,
}

/// Identifies one of meshctl's chains: family, table (`filter`, `nat`) and chain name
/// (`MESHCTL-FORWARD`). Rules are kept in `iptables-save` canonical form without the leading
/// `-A CHAIN` (e.g. `-s 10.8.0.0/24 -j ACCEPT`), which is what makes live and desired compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChainId {
    /// IPv4 (iptables) or IPv6 (ip6tables).
    pub family: Family,
    /// The table, e.g. `filter` or `nat`.
    pub table: String,
    /// The chain's name, e.g. `MESHCTL-FORWARD`.
    pub chain: String,
}

/// A tagged jump from a built-in chain (`FORWARD`) into one of meshctl's chains.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Jump {
    /// IPv4 (iptables) or IPv6 (ip6tables).
    pub family: Family,
    /// The table, e.g. `filter` or `nat`.
    pub table: String,
    /// The built-in chain: `FORWARD`, `INPUT`, `POSTROUTING`.
    pub from: String,
    /// meshctl's chain.
    pub to: String,
}

/// An NDP proxy entry, answering neighbour solicitations for `address` on `device`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NdpProxy {
    /// The client's public IPv6 address to answer for.
    pub address: std::net::Ipv6Addr,
    /// The device facing the provider (the hub's WAN interface).
    pub device: InterfaceName,
}

/// A managed file. Content never holds a private key: configs point at the key file instead.
/// Live content has any `PrivateKey`/`PresharedKey` value blanked on the host before sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedFile {
    /// The whole content; live content has key values blanked.
    pub content: String,
    /// Unix permission bits, e.g. 0o600.
    pub mode: u32,
}

/// A systemd unit's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Whether it is enabled at boot (`UnitFileState=enabled`).
    pub enabled: bool,
    /// Whether it is running (`ActiveState=active`): for `wg-quick@IF`, whether systemd
    /// brought the interface up, and so owns it.
    #[serde(default)]
    pub active: bool,
}

/// What is known about a host beyond its managed state: gathered with it, never diffed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// `PRETTY_NAME` from /etc/os-release.
    pub os: String,
    /// `/run/systemd/system` exists.
    pub systemd: bool,
    /// Tools found on the host (`wg`, `wg-quick`, `ip`, `iptables`, `ip6tables`, `sudo`, ...).
    pub tools: BTreeSet<String>,
    /// `nf_tables` or `legacy`, from `iptables -V`.
    pub iptables_backend: Option<String>,
    /// Whether the login is root (otherwise commands run through `sudo -n`).
    pub root: bool,
    /// Whether the running kernel has WireGuard (the module loaded or built in, or its module
    /// file there for the running release); without it, wireguard-go is needed.
    #[serde(default)]
    pub kernel_wireguard: bool,
}

/// Everything one gather returns: the live state plus what is only reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHost {
    /// The host this was gathered from; set by the caller, since the fact parser does not know it.
    pub host: Option<HostName>,
    /// OS, systemd, tools and iptables backend: reported, never diffed.
    pub system: SystemInfo,
    /// The live state, in the same shape as the desired state.
    pub state: HostState,
    /// Foreign rules that shadow meshctl's (an earlier DROP in FORWARD, ...).
    pub warnings: Vec<String>,
    /// Endpoint names resolved on the host (`getent ahosts`), so a configured name compares
    /// with the address the kernel shows.
    pub resolved: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// The private key file's mode (`None`: absent), known even while the interface is down.
    pub key_file_mode: Option<u32>,
    /// A key rotation in progress: the public key of the next private key step 1 made beside
    /// the key file (`None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_public_key: Option<WgKey>,
    /// The preshared key files the gather looked at that exist, by path (outside `state`, like
    /// the key file: apply's first step makes missing ones, which must not make a saved plan
    /// look stale).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub psk_files: BTreeMap<String, PskFile>,
}

/// JSON maps need string keys: chains are (de)serialised as a list of `{chain, rules}`.
mod chain_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ChainId;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        chain: ChainId,
        rules: Vec<String>,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<ChainId, Vec<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = map
            .iter()
            .map(|(c, r)| Entry {
                chain: c.clone(),
                rules: r.clone(),
            })
            .collect();
        entries.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ChainId, Vec<String>>, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Ok(entries.into_iter().map(|e| (e.chain, e.rules)).collect())
    }
}
