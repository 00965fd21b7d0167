//! The validated inventory: what the rest of meshctl reads. Every value here has passed
//! `validate`, so names are allowlisted, addresses sit inside their networks and nothing
//! overlaps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::names::{HostName, InterfaceName, WgKey};

/// Default persistent keepalive for hosts behind NAT (gateways and clients), in seconds.
pub const DEFAULT_KEEPALIVE: u16 = 25;

/// A checked inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The file it was read from (the pinned keys live beside it).
    pub path: PathBuf,
    /// The `network:` section: settings shared by every host.
    pub network: Network,
    /// The `hosts:` section, by name: the hub, gateways and clients.
    pub hosts: BTreeMap<HostName, Host>,
    /// The `routers:` section: home routers that need a static route added by hand.
    pub routers: BTreeMap<HostName, Router>,
    /// The `lab:` section (defaults when absent); only `meshctl lab` reads it.
    pub lab: LabSettings,
}

/// The `network:` section, with defaults filled in.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    /// `name`: the network's name, shown in plans.
    pub name: String,
    /// `interface`: the WireGuard interface on every host (default `wg0`).
    pub interface: InterfaceName,
    /// `listen_port`: the hub's UDP port, the one everybody dials (default 51820).
    pub listen_port: u16,
    /// `ipv4`: the VPN's IPv4 range, e.g. `10.8.0.0/24`; every host's `address` is inside it.
    pub ipv4: Ipv4Net,
    /// `ipv6`: the public IPv6 plan; `None`: the VPN is IPv4 only.
    pub ipv6: Option<Ipv6Plan>,
    /// `dns`: DNS servers written into unmanaged clients' configs (default none).
    pub dns: Vec<IpAddr>,
    /// `mtu`: the WireGuard interface's MTU (1280-9000); `None`: wg-quick's default.
    pub mtu: Option<u16>,
    /// `preshared_keys`: every pair of peers (the hub and each host) has a preshared key,
    /// unless the host says `preshared_key: false`.
    pub preshared_keys: bool,
}

/// The public IPv6 plan: the hub's prefix and the slice handed to VPN hosts.
#[derive(Debug, Clone, Serialize)]
pub struct Ipv6Plan {
    /// `prefix`: the hub's provider prefix, e.g. its /64.
    pub prefix: Ipv6Net,
    /// `clients`: the slice of `prefix` the VPN hosts' public addresses come from, e.g. a /72.
    pub clients: Ipv6Net,
    /// `mode`: how the provider delivers `prefix` to the hub.
    pub mode: Ipv6Mode,
}

/// `network.ipv6.mode`: whether the hub must answer NDP for the clients' addresses.
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
    /// The login user; `None`: ssh's default (ssh_config or the local user).
    pub user: Option<String>,
    /// A host name, address or ssh_config alias.
    pub host: String,
    /// The SSH port; `None`: ssh's default.
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

/// One entry of `hosts:`, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// The key under `hosts:`; also names the host's peer elsewhere.
    pub name: HostName,
    /// `role` together with the keys that only that role takes.
    pub role: Role,
    /// `None`: unmanaged (meshctl writes its config instead of applying it).
    pub ssh: Option<SshTarget>,
    /// `address`: the host's IPv4 address inside `network.ipv4`.
    pub address: Ipv4Addr,
    /// The host's public IPv6 address out of the clients' range, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    /// A key generated on the device itself (phones).
    pub public_key: Option<WgKey>,
    /// Persistent keepalive towards the hub; `None` for the hub.
    pub keepalive: Option<u16>,
    /// meshctl reaches this host through the network it manages (its SSH target is inside the
    /// VPN or a home LAN, or `guard: true`): changes are applied with a rollback timer on the
    /// host, confirmed over a new connection. Where the inventory does not say, the commands
    /// also guard a host whose SSH path, as ssh resolves it, crosses the VPN (`ssh_path`).
    pub guard: bool,
    /// Whether `guard:` was written in the inventory (then it is never second-guessed).
    pub guard_explicit: bool,
    /// `allow`: what the host may reach through the hub (and a gateway into its LAN);
    /// `None`: everything (no policy for this host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<AllowTarget>>,
    /// `preshared_key`: this host's own say on whether its pair with the hub has a preshared
    /// key; `None`: `network.preshared_keys` decides (see [`Inventory::has_psk`]).
    pub preshared_key: Option<bool>,
}

/// One entry of a host's `allow:` list, checked against the inventory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "target", rename_all = "lowercase")]
pub enum AllowTarget {
    /// A host name: that host's VPN addresses (IPv4 and, if it has one, IPv6).
    Host(HostName),
    /// `lan:NAME`: gateway NAME's home LAN (its IPv4 subnet and IPv6 prefix).
    Lan(HostName),
    /// A CIDR (or a single address), IPv4 or IPv6.
    Net(IpNet),
    /// `internet`: egress through the hub out of its WAN interface, IPv4 and IPv6.
    Internet,
}

impl std::fmt::Display for AllowTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowTarget::Host(h) => write!(f, "{h}"),
            AllowTarget::Lan(g) => write!(f, "lan:{g}"),
            AllowTarget::Net(n) => write!(f, "{n}"),
            AllowTarget::Internet => f.write_str("internet"),
        }
    }
}

impl Host {
    /// Whether meshctl applies to this host itself (it has `ssh`); otherwise it only writes a config.
    pub fn is_managed(&self) -> bool {
        self.ssh.is_some()
    }
}

/// What a host does in the network, with the settings of that role.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Role {
    /// `role: hub`: the VPS every host peers with, gateway to the internet.
    Hub(Hub),
    /// `role: gateway`: routes between the VPN and a home LAN (the NAS).
    Gateway(Gateway),
    /// `role: client`: a roaming device (laptop, phone) with the hub as its one peer.
    Client(Client),
}

impl Role {
    /// The role as written in YAML: `hub`, `gateway` or `client`; also picks the role file.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Hub(_) => "hub",
            Role::Gateway(_) => "gateway",
            Role::Client(_) => "client",
        }
    }
}

/// Settings of the hub.
#[derive(Debug, Clone, Serialize)]
pub struct Hub {
    /// What the others dial: a name or an address (port is the network's listen port).
    pub endpoint: String,
    /// `wan_interface` (required): the interface facing the internet, e.g. `eth0`.
    pub wan_interface: InterfaceName,
    /// `nat` (default true): masquerade the VPN's IPv4 range out of `wan_interface`.
    pub nat: bool,
    /// `wan_accepts_ra` (default false): keep accepting router advertisements on the WAN with forwarding on (`accept_ra = 2`).
    pub wan_accepts_ra: bool,
}

/// Settings of a gateway.
#[derive(Debug, Clone, Serialize)]
pub struct Gateway {
    /// `lan` (required): the home LAN it routes into the VPN.
    pub lan: Lan,
}

/// A gateway's home LAN.
#[derive(Debug, Clone, Serialize)]
pub struct Lan {
    /// `subnet`: the home LAN's IPv4 range, e.g. `192.168.1.0/24`; routed through the VPN.
    pub subnet: Ipv4Net,
    /// `interface`: the gateway's interface on the home LAN, e.g. `eth0`.
    pub interface: InterfaceName,
    /// `address`: the gateway's own address on the home LAN (the routers' next hop).
    pub address: Ipv4Addr,
    /// `ipv6_prefix`: the home LAN's IPv6 prefix, if it should be reachable over the VPN.
    pub ipv6_prefix: Option<Ipv6Net>,
    /// `ipv6_address`: the gateway's own address in `ipv6_prefix`, if given.
    pub ipv6_address: Option<Ipv6Addr>,
}

/// `tunnel`: what a client sends through the VPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    /// VPN and home LANs only.
    Split,
    /// All IPv4 through the hub.
    Full,
}

/// Settings of a client.
#[derive(Debug, Clone, Serialize)]
pub struct Client {
    /// `tunnel` (default `split`).
    pub tunnel: Tunnel,
}

/// An unmanaged home router: meshctl prints the static route to add by hand.
#[derive(Debug, Clone, Serialize)]
pub struct Router {
    /// The key under `routers:`.
    pub name: HostName,
    /// `lan`: the home LAN the router serves; must contain the gateway's LAN address.
    pub lan: Ipv4Net,
    /// `address`: the router's own address on that LAN.
    pub address: Ipv4Addr,
    /// `gateway`: the host of role gateway the router must send the VPN range to.
    pub gateway: HostName,
}

/// Addresses that only `meshctl lab` reads (they stand for the internet).
#[derive(Debug, Clone, Serialize)]
pub struct LabSettings {
    /// `lab.internet4`: the lab's stand-in for the IPv4 internet (default `198.51.100.0/24`).
    pub internet4: Ipv4Net,
    /// `lab.internet6`: the lab's stand-in for the IPv6 internet (default `2001:db8:ff::/64`).
    pub internet6: Ipv6Net,
    /// `lab.hub_public4`: the hub's public IPv4 address in the lab (default `.10` of `internet4`).
    pub hub_public4: Ipv4Addr,
    /// `lab.hub_public6`: the hub's public IPv6 address with its prefix (default `::1` of `network.ipv6.prefix`).
    pub hub_public6: Ipv6Net,
    /// `lab.machines`: managed hosts the lab boots as Debian machines with systemd instead of
    /// namespace hosts (default none).
    pub machines: BTreeSet<HostName>,
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

    /// Whether the pair of `host` and the hub has a preshared key (never for the hub itself,
    /// which is the other end of every pair).
    pub fn has_psk(&self, host: &Host) -> bool {
        !matches!(host.role, Role::Hub(_))
            && host.preshared_key.unwrap_or(self.network.preshared_keys)
    }

    /// The file of pinned public keys beside the inventory (`lab.yaml` → `lab.keys.yaml`).
    pub fn keys_path(&self) -> PathBuf {
        keys_path_beside(&self.path)
    }
}

/// The pinned keys file beside the inventory file `path` (`lab.yaml` → `lab.keys.yaml`).
pub fn keys_path_beside(path: &std::path::Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "inventory".into());
    path.with_file_name(format!("{stem}.keys.yaml"))
}
