//! The inventory exactly as written in YAML: serde types that keep each value's line and column
//! (`Spanned`), so that validation can point at the offending spot. Nothing here is validated
//! beyond types; `validate` turns it into the checked `Inventory` model.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole inventory file, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    /// `network:` (required).
    pub network: Spanned<RawNetwork>,
    /// `hosts:` (required), keyed by host name.
    pub hosts: Spanned<BTreeMap<Key, Spanned<RawHost>>>,
    /// `routers:` (optional), keyed by router name.
    #[serde(default)]
    pub routers: BTreeMap<Key, Spanned<RawRouter>>,
    /// Only read by `meshctl lab`.
    #[serde(default)]
    pub lab: Option<Spanned<RawLab>>,
}

/// The `network:` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// `name` (required): the network's name.
    pub name: Spanned<String>,
    /// `interface`: the WireGuard interface name (default `wg0`).
    #[serde(default)]
    pub interface: Option<Spanned<String>>,
    /// `listen_port`: the hub's UDP port (default 51820).
    #[serde(default)]
    pub listen_port: Option<Spanned<u16>>,
    /// `ipv4` (required): the VPN's IPv4 range.
    pub ipv4: Spanned<Ipv4Net>,
    /// `ipv6`: the public IPv6 plan (optional: without it the VPN is IPv4 only).
    #[serde(default)]
    pub ipv6: Option<Spanned<RawIpv6>>,
    /// `dns`: DNS servers for unmanaged clients' configs (default none).
    #[serde(default)]
    pub dns: Option<Spanned<Vec<Spanned<IpAddr>>>>,
    /// `mtu`: the WireGuard MTU, 1280-9000 (default: wg-quick's).
    #[serde(default)]
    pub mtu: Option<Spanned<u16>>,
    /// `preshared_keys`: a preshared key for every pair of peers (default false).
    #[serde(default)]
    pub preshared_keys: Option<Spanned<bool>>,
}

/// The `network.ipv6` section as written; all three keys are required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpv6 {
    /// `prefix`: the hub's provider prefix.
    pub prefix: Spanned<Ipv6Net>,
    /// `clients`: the slice of `prefix` for the VPN hosts' addresses.
    pub clients: Spanned<Ipv6Net>,
    /// `mode`: `on-link` or `routed`.
    pub mode: Spanned<RawIpv6Mode>,
}

/// `network.ipv6.mode` as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawIpv6Mode {
    /// `on-link`: the provider's /64 is on the hub's WAN link (the hub proxies NDP).
    OnLink,
    /// `routed`: the provider routes the prefix to the hub.
    Routed,
}

/// A host's `role` as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawRole {
    /// `hub`.
    Hub,
    /// `gateway`.
    Gateway,
    /// `client`.
    Client,
}

/// A client's `tunnel` as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawTunnel {
    /// `split`: VPN and home LANs only.
    Split,
    /// `full`: all IPv4 through the hub.
    Full,
}

/// One entry of `hosts:` as written; keys that do not fit the role are rejected by validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// `role` (required): `hub`, `gateway` or `client`.
    pub role: Spanned<RawRole>,
    /// `ssh`: `[user@]host[:port]`; absent: an unmanaged host (a phone) that gets a config file.
    #[serde(default)]
    pub ssh: Option<Spanned<String>>,
    /// `address` (required): the host's IPv4 address inside `network.ipv4`.
    pub address: Spanned<Ipv4Addr>,
    /// `ipv6_address`: the host's public IPv6 address (default: derived from its IPv4 host number).
    #[serde(default)]
    pub ipv6_address: Option<Spanned<Ipv6Addr>>,
    /// `public_ipv6`: whether the host gets a public IPv6 address (default: hub and clients yes, gateways no).
    #[serde(default)]
    pub public_ipv6: Option<Spanned<bool>>,
    /// `public_key`: a key generated on the device itself (a phone); usually absent, as meshctl pins the keys it makes in the keys file.
    #[serde(default)]
    pub public_key: Option<Spanned<String>>,
    /// `keepalive`: persistent keepalive towards the hub in seconds (default 25; not for the hub).
    #[serde(default)]
    pub keepalive: Option<Spanned<u16>>,
    /// The host is reached through the network meshctl manages: apply with a confirm-or-roll-back guard.
    #[serde(default)]
    pub guard: Option<Spanned<bool>>,
    /// `allow`: what the host may reach through the VPN (host names, `lan:GATEWAY`, CIDRs,
    /// `internet`); absent: everything, as without a policy.
    #[serde(default)]
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// `preshared_key`: whether this host's pair with the hub has a preshared key (default:
    /// `network.preshared_keys`; not for the hub, which is in every pair).
    #[serde(default)]
    pub preshared_key: Option<Spanned<bool>>,
    // hub
    /// `endpoint` (hub, required): the DNS name or address the others dial.
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// `wan_interface` (hub, required): the interface facing the internet.
    #[serde(default)]
    pub wan_interface: Option<Spanned<String>>,
    /// `nat` (hub, default true): masquerade the VPN's IPv4 range to the internet.
    #[serde(default)]
    pub nat: Option<Spanned<bool>>,
    /// `wan_accepts_ra` (hub, default false): keep accepting router advertisements on the WAN.
    #[serde(default)]
    pub wan_accepts_ra: Option<Spanned<bool>>,
    // gateway
    /// `lan` (gateway, required): the home LAN it routes into the VPN.
    #[serde(default)]
    pub lan: Option<Spanned<RawLan>>,
    // client
    /// `tunnel` (client, default `split`): `split` or `full`.
    #[serde(default)]
    pub tunnel: Option<Spanned<RawTunnel>>,
}

/// A gateway's `lan:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLan {
    /// `subnet` (required): the home LAN's IPv4 range.
    pub subnet: Spanned<Ipv4Net>,
    /// `interface` (required): the gateway's interface on the home LAN.
    pub interface: Spanned<String>,
    /// `address` (required): the gateway's own address on the home LAN.
    pub address: Spanned<Ipv4Addr>,
    /// `ipv6_prefix`: the home LAN's IPv6 prefix, to reach it over the VPN (optional).
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<Ipv6Net>>,
    /// `ipv6_address`: the gateway's own address in `ipv6_prefix` (the next hop the home
    /// router's IPv6 route names; optional).
    #[serde(default)]
    pub ipv6_address: Option<Spanned<Ipv6Addr>>,
}

/// One entry of `routers:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    /// `lan` (required): the home LAN the router serves.
    pub lan: Spanned<Ipv4Net>,
    /// `address` (required): the router's own address on that LAN.
    pub address: Spanned<Ipv4Addr>,
    /// `gateway` (required): the gateway host the router sends the VPN range to.
    pub gateway: Spanned<String>,
}

/// The `lab:` section as written; every key has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLab {
    /// `internet4`: the lab's IPv4 internet (default `198.51.100.0/24`).
    #[serde(default)]
    pub internet4: Option<Spanned<Ipv4Net>>,
    /// `internet6`: the lab's IPv6 internet (default `2001:db8:ff::/64`).
    #[serde(default)]
    pub internet6: Option<Spanned<Ipv6Net>>,
    /// `hub_public4`: the hub's public IPv4 address in the lab (default `.10` of `internet4`).
    #[serde(default)]
    pub hub_public4: Option<Spanned<Ipv4Addr>>,
    /// `hub_public6`: the hub's public IPv6 address and prefix in the lab (default `::1` of `network.ipv6.prefix`).
    #[serde(default)]
    pub hub_public6: Option<Spanned<Ipv6Net>>,
    /// `machines`: the hosts `lab up` boots as Debian machines with systemd (default none).
    #[serde(default)]
    pub machines: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A mapping key with its location, ordered by its text (so it can key a map).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Key(pub Spanned<String>);

impl std::ops::Deref for Key {
    type Target = Spanned<String>;
    fn deref(&self) -> &Spanned<String> {
        &self.0
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.value.cmp(&other.0.value)
    }
}
