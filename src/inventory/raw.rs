//! The inventory exactly as written in YAML: serde types that keep each value's line and column
//! (`Spanned`), so that validation can point at the offending spot. Nothing here is validated
//! beyond types; `validate` turns it into the checked `Inventory` model.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    pub network: Spanned<RawNetwork>,
    pub hosts: Spanned<BTreeMap<Key, Spanned<RawHost>>>,
    #[serde(default)]
    pub routers: BTreeMap<Key, Spanned<RawRouter>>,
    /// Only read by `meshctl lab`.
    #[serde(default)]
    pub lab: Option<Spanned<RawLab>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub name: Spanned<String>,
    #[serde(default)]
    pub interface: Option<Spanned<String>>,
    #[serde(default)]
    pub listen_port: Option<Spanned<u16>>,
    pub ipv4: Spanned<Ipv4Net>,
    #[serde(default)]
    pub ipv6: Option<Spanned<RawIpv6>>,
    #[serde(default)]
    pub dns: Option<Spanned<Vec<Spanned<IpAddr>>>>,
    #[serde(default)]
    pub mtu: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpv6 {
    pub prefix: Spanned<Ipv6Net>,
    pub clients: Spanned<Ipv6Net>,
    pub mode: Spanned<RawIpv6Mode>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawIpv6Mode {
    OnLink,
    Routed,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawRole {
    Hub,
    Gateway,
    Client,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawTunnel {
    Split,
    Full,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub role: Spanned<RawRole>,
    #[serde(default)]
    pub ssh: Option<Spanned<String>>,
    pub address: Spanned<Ipv4Addr>,
    #[serde(default)]
    pub ipv6_address: Option<Spanned<Ipv6Addr>>,
    #[serde(default)]
    pub public_ipv6: Option<Spanned<bool>>,
    #[serde(default)]
    pub public_key: Option<Spanned<String>>,
    #[serde(default)]
    pub keepalive: Option<Spanned<u16>>,
    /// The host is reached through the network meshctl manages: apply with a confirm-or-roll-back guard.
    #[serde(default)]
    pub guard: Option<Spanned<bool>>,
    // hub
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub wan_interface: Option<Spanned<String>>,
    #[serde(default)]
    pub nat: Option<Spanned<bool>>,
    #[serde(default)]
    pub wan_accepts_ra: Option<Spanned<bool>>,
    // gateway
    #[serde(default)]
    pub lan: Option<Spanned<RawLan>>,
    // client
    #[serde(default)]
    pub tunnel: Option<Spanned<RawTunnel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLan {
    pub subnet: Spanned<Ipv4Net>,
    pub interface: Spanned<String>,
    pub address: Spanned<Ipv4Addr>,
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<Ipv6Net>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub lan: Spanned<Ipv4Net>,
    pub address: Spanned<Ipv4Addr>,
    pub gateway: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLab {
    #[serde(default)]
    pub internet4: Option<Spanned<Ipv4Net>>,
    #[serde(default)]
    pub internet6: Option<Spanned<Ipv6Net>>,
    #[serde(default)]
    pub hub_public4: Option<Spanned<Ipv4Addr>>,
    #[serde(default)]
    pub hub_public6: Option<Spanned<Ipv6Net>>,
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
