//! `meshctl init`: a commented starting inventory from a few facts about the user's network —
//! the hub's SSH target and endpoint, the NAS and its home LAN, the router, the clients. Pure:
//! it returns the YAML text; the command validates it with the inventory loader and writes it.
//! The VPN range it proposes never overlaps the home LAN it was told about.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

/// What `meshctl init` was told.
#[derive(Debug, Clone, Default)]
pub struct InitRequest {
    /// The network's name.
    pub name: String,
    /// The hub's SSH target, e.g. `root@vps.example.net`.
    pub hub: String,
    /// What the others dial; default: the hub's SSH host.
    pub endpoint: Option<String>,
    /// The hub's interface to the internet.
    pub wan_interface: String,
    /// The /64 the provider gave the hub, if clients should get public IPv6 addresses.
    pub ipv6_prefix: Option<Ipv6Net>,
    /// The NAS's SSH target and home LAN, if there is one.
    pub gateway: Option<GatewayRequest>,
    /// The home router's name and address (its static route is a manual step).
    pub router: Option<(String, Ipv4Addr)>,
    /// Managed clients: (name, SSH target).
    pub clients: Vec<(String, String)>,
    /// Unmanaged clients (phones): their names.
    pub phones: Vec<String>,
    /// The VPN's IPv4 range; default: the first candidate that does not overlap the LAN.
    pub vpn: Option<Ipv4Net>,
}

/// The NAS.
#[derive(Debug, Clone)]
pub struct GatewayRequest {
    /// Its name in the inventory.
    pub name: String,
    /// Its SSH target.
    pub ssh: String,
    /// The home LAN.
    pub lan: Ipv4Net,
    /// The NAS's address on the LAN; default: .10 of the LAN.
    pub address: Option<Ipv4Addr>,
    /// The NAS's LAN interface.
    pub interface: String,
}

/// Why no inventory could be proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The VPN range given overlaps the home LAN.
    #[error("--vpn {vpn} overlaps the home LAN {lan}: choose a range the LAN does not use")]
    Overlap {
        /// The VPN range.
        vpn: Ipv4Net,
        /// The LAN.
        lan: Ipv4Net,
    },
    /// Too many hosts for the VPN range.
    #[error("--vpn {vpn} has no room for {hosts} hosts: use a larger range")]
    TooSmall {
        /// The VPN range.
        vpn: Ipv4Net,
        /// How many hosts need an address.
        hosts: usize,
    },
    /// A name is used twice.
    #[error("the name `{0}` is used twice: every host needs its own")]
    Duplicate(String),
    /// An address is not inside the LAN.
    #[error("--lan-address {address} is not inside --lan {lan}")]
    OutsideLan {
        /// The address.
        address: Ipv4Addr,
        /// The LAN.
        lan: Ipv4Net,
    },
}

/// VPN ranges proposed, in order: the first that does not overlap the home LAN is taken.
const CANDIDATES: [&str; 4] = [
    "10.8.0.0/24",
    "10.77.0.0/24",
    "172.29.0.0/24",
    "192.168.253.0/24",
];

/// The VPN range to use: the one asked for, or the first candidate clear of the LAN.
pub fn vpn_range(req: &InitRequest) -> Result<Ipv4Net, InitError> {
    let lan = req.gateway.as_ref().map(|g| g.lan);
    let overlaps =
        |v: &Ipv4Net| lan.is_some_and(|l| l.contains(&v.network()) || v.contains(&l.network()));
    if let Some(v) = req.vpn {
        if let (true, Some(lan)) = (overlaps(&v), lan) {
            return Err(InitError::Overlap { vpn: v, lan });
        }
        return Ok(v);
    }
    Ok(CANDIDATES
        .iter()
        .map(|c| c.parse::<Ipv4Net>().expect("valid candidate"))
        .find(|v| !overlaps(v))
        .expect("four disjoint candidates: one is clear of any one LAN"))
}

/// The commented inventory text.
pub fn starting_inventory(req: &InitRequest) -> Result<String, InitError> {
    let vpn = vpn_range(req)?;
    let mut names = vec!["vps".to_owned()];
    names.extend(req.gateway.iter().map(|g| g.name.clone()));
    names.extend(req.clients.iter().map(|(n, _)| n.clone()));
    names.extend(req.phones.iter().cloned());
    names.extend(req.router.iter().map(|(n, _)| n.clone()));
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(InitError::Duplicate(n.clone()));
        }
    }
    let hosts = 2 + req.clients.len() + req.phones.len();
    let nth = |n: u32| -> Result<Ipv4Addr, InitError> {
        let size = 1u64 << (32 - u32::from(vpn.prefix_len()));
        if u64::from(n) + 1 >= size {
            return Err(InitError::TooSmall { vpn, hosts });
        }
        Ok(Ipv4Addr::from(u32::from(vpn.network()) + n))
    };
    let endpoint = req.endpoint.clone().unwrap_or_else(|| {
        let h = req
            .hub
            .rsplit_once('@')
            .map_or(req.hub.as_str(), |(_, h)| h);
        h.split(':').next().unwrap_or(h).to_owned()
    });

    let mut s = String::new();
    writeln!(
        s,
        "# meshctl inventory, started by `meshctl init`. Check every value, then run"
    )
    .ok();
    writeln!(
        s,
        "# `meshctl plan` (what would change) and `meshctl apply`."
    )
    .ok();
    writeln!(
        s,
        "network:\n  name: {}\n  interface: wg0\n  listen_port: 51820",
        req.name
    )
    .ok();
    writeln!(
        s,
        "  ipv4: {vpn}            # the VPN's range (clear of the home LAN)"
    )
    .ok();
    if let Some(p) = req.ipv6_prefix {
        let clients = Ipv6Net::new(
            std::net::Ipv6Addr::from(u128::from(p.network()) | (0x100u128 << 48)),
            72,
        )
        .expect("a /72");
        writeln!(
            s,
            "  ipv6:\n    prefix: {p}          # the /64 the provider gave the VPS"
        )
        .ok();
        writeln!(
            s,
            "    clients: {clients}   # the slice handed out to VPN hosts"
        )
        .ok();
        writeln!(s, "    mode: on-link                  # or routed, if the provider routes the prefix to the VPS").ok();
    }
    writeln!(s, "  dns: [{}]\n", nth(1)?).ok();
    writeln!(s, "hosts:").ok();
    writeln!(
        s,
        "  vps:\n    role: hub\n    ssh: {}                 # non-root logins use `sudo -n`\n    address: {}\n    endpoint: {endpoint}          # what the others dial\n    wan_interface: {}\n    nat: true",
        req.hub,
        nth(1)?,
        req.wan_interface
    )
    .ok();
    if let Some(g) = &req.gateway {
        let address = g
            .address
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(g.lan.network()) + 10));
        if !g.lan.contains(&address) {
            return Err(InitError::OutsideLan {
                address,
                lan: g.lan,
            });
        }
        writeln!(
            s,
            "  {}:\n    role: gateway\n    ssh: {}\n    address: {}\n    keepalive: 25                # behind NAT\n    lan:\n      subnet: {}\n      interface: {}\n      address: {address}    # the NAS on the home LAN (the router's next hop)",
            g.name,
            g.ssh,
            nth(2)?,
            g.lan,
            g.interface
        )
        .ok();
    }
    let mut next = 10;
    for (name, ssh) in &req.clients {
        writeln!(
            s,
            "  {name}:\n    role: client\n    ssh: {ssh}\n    address: {}\n    tunnel: split                # split: VPN + home LAN; full: all IPv4 through the hub",
            nth(next)?
        )
        .ok();
        next += 1;
    }
    for name in &req.phones {
        writeln!(
            s,
            "  {name}:\n    role: client                 # no `ssh:`: `meshctl client {name} --qr`\n    address: {}\n    tunnel: full",
            nth(next)?
        )
        .ok();
        next += 1;
    }
    if let (Some((router, address)), Some(g)) = (&req.router, &req.gateway) {
        writeln!(
            s,
            "\nrouters:\n  {router}:                     # unmanaged: meshctl prints its static route\n    lan: {}\n    address: {address}\n    gateway: {}",
            g.lan, g.name
        )
        .ok();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn friend() -> InitRequest {
        InitRequest {
            name: "home".into(),
            hub: "root@vps.example.net".into(),
            wan_interface: "eth0".into(),
            ipv6_prefix: Some("2001:db8:42::/64".parse().unwrap()),
            gateway: Some(GatewayRequest {
                name: "nas".into(),
                ssh: "admin@nas.home.arpa".into(),
                lan: "192.168.178.0/24".parse().unwrap(),
                address: None,
                interface: "eth0".into(),
            }),
            router: Some(("fritzbox".into(), "192.168.178.1".parse().unwrap())),
            clients: vec![("laptop".into(), "me@laptop.local".into())],
            phones: vec!["phone".into()],
            ..InitRequest::default()
        }
    }

    #[test]
    fn the_starting_inventory_validates_and_names_everything() {
        let text = starting_inventory(&friend()).unwrap();
        let inv =
            crate::inventory::parse(&text, "meshctl.yaml", std::path::Path::new("meshctl.yaml"))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(inv.hosts.len(), 4);
        assert!(text.contains("endpoint: vps.example.net"));
        assert!(text.contains("address: 192.168.178.10"));
        assert!(text.contains("clients: 2001:db8:42:0:100::/72"), "{text}");
        assert_eq!(inv.routers.len(), 1);
    }

    #[test]
    fn the_vpn_range_is_clear_of_the_home_lan() {
        let mut r = friend();
        r.gateway.as_mut().unwrap().lan = "10.8.0.0/16".parse().unwrap();
        r.router = Some(("fritzbox".into(), "10.8.0.1".parse().unwrap()));
        let v = vpn_range(&r).unwrap();
        assert_eq!(v.to_string(), "10.77.0.0/24");
        r.vpn = Some("10.8.5.0/24".parse().unwrap());
        assert!(matches!(vpn_range(&r), Err(InitError::Overlap { .. })));
        let text = {
            r.vpn = None;
            starting_inventory(&r).unwrap()
        };
        crate::inventory::parse(&text, "x.yaml", std::path::Path::new("x.yaml")).unwrap();
    }

    #[test]
    fn a_name_used_twice_is_refused() {
        let mut r = friend();
        r.phones.push("laptop".into());
        assert_eq!(
            starting_inventory(&r).unwrap_err(),
            InitError::Duplicate("laptop".into())
        );
    }

    #[test]
    fn only_a_hub_is_enough() {
        let r = InitRequest {
            name: "solo".into(),
            hub: "root@203.0.113.7".into(),
            wan_interface: "ens3".into(),
            phones: vec!["phone".into()],
            ..InitRequest::default()
        };
        let text = starting_inventory(&r).unwrap();
        crate::inventory::parse(&text, "x.yaml", std::path::Path::new("x.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(text.contains("endpoint: 203.0.113.7"));
    }
}
