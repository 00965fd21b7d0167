//! The validated inventory: what the rest of meshctl reads. Every value here has passed
//! `validate`, so names are allowlisted, addresses sit inside their networks and nothing
//! overlaps.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::names::{HostName, InterfaceName, WgKey};

/// Default persistent keepalive for hosts behind NAT (gateways and clients), in seconds.
pub const DEFAULT_KEEPALIVE: u16 = 25;

/// A checked inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The file it was read from (the pinned keys live beside it).
    pub path: PathBuf,
    pub network: Network,
    pub hosts: BTreeMap<HostName, Host>,
    pub routers: BTreeMap<HostName, Router>,
    pub lab: LabSettings,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub name: String,
    pub interface: InterfaceName,
    pub listen_port: u16,
    pub ipv4: Ipv4Net,
    pub ipv6: Option<Ipv6Plan>,
    pub dns: Vec<IpAddr>,
    pub mtu: Option<u16>,
}

/// The public IPv6 plan: the hub's prefix and the slice handed to VPN hosts.
#[derive(Debug, Clone, Serialize)]
pub struct Ipv6Plan {
    pub prefix: Ipv6Net,
    pub clients: Ipv6Net,
    pub mode: Ipv6Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ipv6Mode {
    /// The provider's /64 is on the hub's WAN link: the hub proxies NDP for the clients.
    OnLink,
    /// The provider routes the prefix to the hub.
    Routed,
}

/// Where meshctl logs in: `user@host[:port]` (the host may be an ssh_config alias).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: HostName,
    pub role: Role,
    /// `None`: unmanaged (meshctl writes its config instead of applying it).
    pub ssh: Option<SshTarget>,
    pub address: Ipv4Addr,
    /// The host's public IPv6 address out of the clients' range, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    /// A key generated on the device itself (phones).
    pub public_key: Option<WgKey>,
    /// Persistent keepalive towards the hub; `None` for the hub.
    pub keepalive: Option<u16>,
    /// meshctl reaches this host through the network it manages (its SSH target is inside the
    /// VPN or a home LAN, or `guard: true`): changes are applied with a rollback timer on the
    /// host, confirmed over a new connection.
    pub guard: bool,
}

impl Host {
    pub fn is_managed(&self) -> bool {
        self.ssh.is_some()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Role {
    Hub(Hub),
    Gateway(Gateway),
    Client(Client),
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Hub(_) => "hub",
            Role::Gateway(_) => "gateway",
            Role::Client(_) => "client",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Hub {
    /// What the others dial: a name or an address (port is the network's listen port).
    pub endpoint: String,
    pub wan_interface: InterfaceName,
    pub nat: bool,
    pub wan_accepts_ra: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gateway {
    pub lan: Lan,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lan {
    pub subnet: Ipv4Net,
    pub interface: InterfaceName,
    pub address: Ipv4Addr,
    pub ipv6_prefix: Option<Ipv6Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    /// VPN and home LANs only.
    Split,
    /// All IPv4 through the hub.
    Full,
}

#[derive(Debug, Clone, Serialize)]
pub struct Client {
    pub tunnel: Tunnel,
}

/// An unmanaged home router: meshctl prints the static route to add by hand.
#[derive(Debug, Clone, Serialize)]
pub struct Router {
    pub name: HostName,
    pub lan: Ipv4Net,
    pub address: Ipv4Addr,
    pub gateway: HostName,
}

/// Addresses that only `meshctl lab` reads (they stand for the internet).
#[derive(Debug, Clone, Serialize)]
pub struct LabSettings {
    pub internet4: Ipv4Net,
    pub internet6: Ipv6Net,
    pub hub_public4: Ipv4Addr,
    pub hub_public6: Ipv6Net,
}

impl Inventory {
    /// The one hub (validation guarantees exactly one).
    pub fn hub(&self) -> (&Host, &Hub) {
        self.hosts
            .values()
            .find_map(|h| match &h.role {
                Role::Hub(hub) => Some((h, hub)),
                _ => None,
            })
            .expect("validated inventory has exactly one hub")
    }

    /// All home LANs behind gateways, with the gateway that routes them.
    pub fn lans(&self) -> Vec<(&Host, &Lan)> {
        self.hosts
            .values()
            .filter_map(|h| match &h.role {
                Role::Gateway(g) => Some((h, &g.lan)),
                _ => None,
            })
            .collect()
    }

    /// The file of pinned public keys beside the inventory (`lab.yaml` → `lab.keys.yaml`).
    pub fn keys_path(&self) -> PathBuf {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "inventory".into());
        self.path.with_file_name(format!("{stem}.keys.yaml"))
    }
}
