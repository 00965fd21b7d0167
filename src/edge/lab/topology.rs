//! The lab's network, planned from an inventory without touching the machine.
//!
//! The result lists every namespace to make, its addresses, the veth that joins it to a bridge
//! (the internet segment `br0` or a router's `br-lan`) and the shell lines that configure it.
//! Keeping this pure makes the address plan testable and lets `lab up` be a dumb executor.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, bail, ensure};
use ipnet::{Ipv4Net, Ipv6Net};

use super::state::HostKind;
use crate::inventory::{Inventory, Ipv6Mode, Role};

/// The name of the internet segment's namespace suffix and bridge.
pub const INTERNET: &str = "internet";
/// The extra host standing for "somewhere on the internet".
pub const INET: &str = "inet";
/// The extra host on a router's LAN (`homepc`, or `<router>-pc` when there are several routers).
pub const HOMEPC: &str = "homepc";

/// Everything `lab up` makes, in creation order (bridges before the hosts plugged into them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The namespace prefix (`m` plus a hash of the lab directory), so coexisting labs do not clash.
    pub prefix: String,
    /// Every namespace to make, in creation order.
    pub hosts: Vec<NetHost>,
}

/// One namespace of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetHost {
    /// The inventory name (or `internet`, `inet`, `homepc`, a router's name).
    pub name: String,
    /// What the namespace stands for.
    pub kind: HostKind,
    /// The network namespace's name, `<prefix>-<name>`.
    pub namespace: String,
    /// Reached over SSH (the inventory gave it an `ssh:` target): its own sshd, or the
    /// machine's when `machine`.
    pub sshd: bool,
    /// Booted as a Debian machine with systemd (`lab.machines`) instead of a namespace host.
    pub machine: bool,
    /// The inventory names the host is reached by in ssh_config (its name and its `ssh:` host).
    pub ssh_aliases: Vec<String>,
    /// Addresses on the uplink, with prefix length (`10.0.0.2/24`).
    pub addresses: Vec<String>,
    /// Shell lines run inside the namespace right after it is made (bridges, sysctls, NAT).
    pub init: Vec<String>,
    /// The veth into a bridge, if the host has one.
    pub uplink: Option<Uplink>,
    /// Shell lines run inside the namespace once the uplink exists (addresses, routes).
    pub setup: Vec<String>,
}

/// A veth pair: `interface` inside the host, `peer` inside `peer_namespace`, enslaved to `bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// The veth end inside the host.
    pub interface: String,
    /// The namespace holding the bridge.
    pub peer_namespace: String,
    /// The veth end in `peer_namespace`, plugged into `bridge`.
    pub peer: String,
    /// The bridge: `br0` (internet) or a router's `br-lan`.
    pub bridge: String,
}

/// The namespace of lab host `name` under `prefix`.
pub fn namespace(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}")
}

/// The address `n` past `net`'s network address, for `what` (a message): an error, never a
/// wrapped address or one outside `net`, when `net` has no such address.
fn v4_nth(net: Ipv4Net, n: u32, what: &str) -> anyhow::Result<Ipv4Addr> {
    u32::from(net.network())
        .checked_add(n)
        .map(Ipv4Addr::from)
        .filter(|a| net.contains(a))
        .with_context(|| {
            format!("{net} has no address network + {n} for {what}: use a larger network")
        })
}

/// [`v4_nth`] for IPv6.
fn v6_nth(net: Ipv6Net, n: u128, what: &str) -> anyhow::Result<Ipv6Addr> {
    u128::from(net.network())
        .checked_add(n)
        .map(Ipv6Addr::from)
        .filter(|a| net.contains(a))
        .with_context(|| format!("{net} has no address network + {n:#x} for {what}: use a /64"))
}

/// Hands out the free host addresses of an IPv4 net, in order, skipping the reserved ones.
struct Allocator {
    net: Ipv4Net,
    next: u32,
    taken: BTreeSet<Ipv4Addr>,
}

impl Allocator {
    fn new(net: Ipv4Net, start: u32, taken: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        Self {
            net,
            next: start,
            taken: taken.into_iter().collect(),
        }
    }

    fn take(&mut self, what: &str) -> anyhow::Result<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.net.prefix_len()));
        while u64::from(self.next) < size.saturating_sub(1) {
            let a = v4_nth(self.net, self.next, what)?;
            self.next += 1;
            if self.taken.insert(a) {
                return Ok(a);
            }
        }
        bail!(
            "no free address left in {} for {what}: use a larger network",
            self.net
        )
    }
}

/// Plans the lab for `inv`, naming every namespace `<prefix>-<host>`.
pub fn plan(inv: &Inventory, prefix: &str) -> anyhow::Result<Topology> {
    let lab = &inv.lab;
    let net4 = lab.internet4;
    let net6 = lab.internet6;
    let len4 = net4.prefix_len();
    ensure!(
        len4 <= 30,
        "lab.internet4 {net4} is too small for the lab: use a /24 or larger"
    );
    let gw4 = v4_nth(net4, 1, "the internet's router (lab.internet4)")?;
    let gw6 = v6_nth(net6, 1, "the internet's router (lab.internet6)")?;
    let hub4 = lab.hub_public4;
    ensure!(
        net4.contains(&hub4) && hub4 != gw4,
        "lab.hub_public4 {hub4} must be a host address of lab.internet4 {net4} other than {gw4}"
    );
    let hub6 = lab.hub_public6;
    let hub6_net = hub6.trunc();
    let provider6 = v6_nth(
        hub6_net,
        0xffff,
        "the provider's router on the hub's link (lab.hub_public6)",
    )?;
    ensure!(
        hub6.addr() != provider6,
        "lab.hub_public6 {hub6}: {provider6} is the provider's router in the lab; pick another address"
    );
    let last = (1u32 << (32 - u32::from(len4))) - 2;
    let inet4 = v4_nth(net4, 200.min(last), "inet (lab.internet4)")?;
    let inet6 = v6_nth(net6, 0x200, "inet (lab.internet6)")?;
    ensure!(
        hub4 != inet4,
        "lab.hub_public4 {hub4}: the lab puts its host inet there; pick another address"
    );
    let mut internet_alloc = Allocator::new(net4, 2, [gw4, hub4, inet4]);

    // Names the lab adds must not collide with the inventory's.
    let homepc_name = |router: &str| {
        if inv.routers.len() == 1 {
            HOMEPC.to_owned()
        } else {
            format!("{router}-pc")
        }
    };
    let mut extra: Vec<String> = vec![INTERNET.into(), INET.into()];
    extra.extend(inv.routers.keys().map(|r| homepc_name(r.as_str())));
    for name in &extra {
        if let Some(h) = inv
            .hosts
            .keys()
            .chain(inv.routers.keys())
            .find(|h| h.as_str() == name)
        {
            bail!(
                "inventory host {h} has the name of one of the lab's own hosts; rename it for the lab"
            );
        }
    }

    let ns = |name: &str| namespace(prefix, name);
    let internet_ns = ns(INTERNET);
    let mut vcount = 0usize;
    let mut uplink = |interface: &str, peer_namespace: &str, bridge: &str| {
        vcount += 1;
        Uplink {
            interface: interface.to_owned(),
            peer_namespace: peer_namespace.to_owned(),
            peer: format!("v{vcount}"),
            bridge: bridge.to_owned(),
        }
    };
    let on_internet = |ifname: &str, a: Ipv4Addr| {
        vec![
            format!("ip addr add {a}/{len4} dev {ifname}"),
            format!("ip link set {ifname} up"),
            format!("ip route add default via {gw4}"),
        ]
    };
    let forwarding = "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1".to_owned();

    // `routed`: the provider routes the clients' prefix to the hub's public address (with
    // `on-link` it finds them on the hub's link, answered by the hub's NDP proxy).
    let routed6 = inv
        .network
        .ipv6
        .as_ref()
        .filter(|p| p.mode == Ipv6Mode::Routed)
        .map(|p| format!("ip -6 route add {} via {} dev br0", p.clients, hub6.addr()));

    let mut hosts = Vec::new();
    hosts.push(NetHost {
        name: INTERNET.into(),
        kind: HostKind::Internet,
        namespace: internet_ns.clone(),
        sshd: false,
        machine: false,
        ssh_aliases: vec![],
        addresses: vec![
            format!("{gw4}/{len4}"),
            format!("{gw6}/{}", net6.prefix_len()),
            format!("{provider6}/{}", hub6.prefix_len()),
        ],
        init: vec![
            "ip link add br0 type bridge".into(),
            "ip link set br0 up".into(),
            format!("ip addr add {gw4}/{len4} dev br0"),
            format!("ip addr add {gw6}/{} dev br0", net6.prefix_len()),
            // The hub's /64 is on-link on the provider's segment.
            format!("ip addr add {provider6}/{} dev br0", hub6.prefix_len()),
            forwarding.clone(),
        ]
        .into_iter()
        .chain(routed6)
        .collect(),
        uplink: None,
        setup: vec![],
    });

    let is_machine = |h: &crate::inventory::Host| h.is_managed() && lab.machines.contains(&h.name);
    let aliases = |h: &crate::inventory::Host| {
        let mut v = vec![h.name.to_string()];
        if let Some(t) = &h.ssh
            && t.host != h.name.as_str()
        {
            v.push(t.host.clone());
        }
        v
    };

    // The hub, on the internet with its public addresses.
    let (hub, hub_role) = inv.hub();
    let wan = hub_role.wan_interface.as_str();
    let mut setup = on_internet(wan, hub4);
    setup.insert(1, format!("ip addr add {hub6} dev {wan}"));
    setup.push(format!("ip -6 route add default via {provider6}"));
    hosts.push(NetHost {
        name: hub.name.to_string(),
        kind: HostKind::Hub,
        namespace: ns(hub.name.as_str()),
        sshd: hub.is_managed(),
        machine: is_machine(hub),
        ssh_aliases: aliases(hub),
        addresses: vec![format!("{hub4}/{len4}"), hub6.to_string()],
        init: vec![],
        uplink: Some(uplink(wan, &internet_ns, "br0")),
        setup,
    });

    // Each router: WAN on the internet, NAT to its LAN bridge, the gateway and a PC behind it.
    for (rname, r) in &inv.routers {
        let router_ns = ns(rname.as_str());
        let lan_len = r.lan.prefix_len();
        let wan4 = internet_alloc.take(rname.as_str())?;
        hosts.push(NetHost {
            name: rname.to_string(),
            kind: HostKind::Router,
            namespace: router_ns.clone(),
            sshd: false,
            machine: false,
            ssh_aliases: vec![],
            addresses: vec![format!("{wan4}/{len4}"), format!("{}/{lan_len}", r.address)],
            init: vec![
                "ip link add br-lan type bridge".into(),
                "ip link set br-lan up".into(),
                format!("ip addr add {}/{lan_len} dev br-lan", r.address),
                "sysctl -qw net.ipv4.ip_forward=1".into(),
                "iptables -w -t nat -A POSTROUTING -o eth0 -j MASQUERADE".into(),
                // A consumer router: answers from outside come in, new connections do not.
                "iptables -w -A FORWARD -i eth0 -o br-lan -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
                "iptables -w -A FORWARD -i eth0 -o br-lan -j DROP".into(),
            ],
            uplink: Some(uplink("eth0", &internet_ns, "br0")),
            setup: on_internet("eth0", wan4),
        });
        let mut lan_taken = vec![r.address];
        let on_lan = |ifname: &str, a: Ipv4Addr| {
            vec![
                format!("ip addr add {a}/{lan_len} dev {ifname}"),
                format!("ip link set {ifname} up"),
                format!("ip route add default via {}", r.address),
            ]
        };
        if let Some(gw) = inv.hosts.get(&r.gateway) {
            let Role::Gateway(g) = &gw.role else {
                bail!("router {rname}: its gateway {} is not a gateway", r.gateway);
            };
            let lan_if = g.lan.interface.as_str();
            lan_taken.push(g.lan.address);
            hosts.push(NetHost {
                name: gw.name.to_string(),
                kind: HostKind::Gateway,
                namespace: ns(gw.name.as_str()),
                sshd: gw.is_managed(),
                machine: is_machine(gw),
                ssh_aliases: aliases(gw),
                addresses: vec![format!("{}/{lan_len}", g.lan.address)],
                init: vec![],
                uplink: Some(uplink(lan_if, &router_ns, "br-lan")),
                setup: on_lan(lan_if, g.lan.address),
            });
        }
        let mut lan_alloc = Allocator::new(r.lan, 20.min(last), lan_taken);
        let pc = homepc_name(rname.as_str());
        let pc4 = lan_alloc.take(&pc)?;
        hosts.push(NetHost {
            name: pc.clone(),
            kind: HostKind::LanHost,
            namespace: ns(&pc),
            sshd: false,
            machine: false,
            ssh_aliases: vec![],
            addresses: vec![format!("{pc4}/{lan_len}")],
            init: vec![],
            uplink: Some(uplink("eth0", &router_ns, "br-lan")),
            setup: on_lan("eth0", pc4),
        });
    }

    // Gateways no router names: straight on the internet (`wan0`), their LAN a dummy interface.
    for h in inv.hosts.values() {
        let Role::Gateway(g) = &h.role else { continue };
        if inv.routers.values().any(|r| r.gateway == h.name) {
            continue;
        }
        let wan4 = internet_alloc.take(h.name.as_str())?;
        let lan_if = g.lan.interface.as_str();
        let wan_if = if lan_if == "wan0" { "wan1" } else { "wan0" };
        hosts.push(NetHost {
            name: h.name.to_string(),
            kind: HostKind::Gateway,
            namespace: ns(h.name.as_str()),
            sshd: h.is_managed(),
            machine: is_machine(h),
            ssh_aliases: aliases(h),
            addresses: vec![
                format!("{wan4}/{len4}"),
                format!("{}/{}", g.lan.address, g.lan.subnet.prefix_len()),
            ],
            init: vec![
                format!("ip link add {lan_if} type dummy"),
                format!(
                    "ip addr add {}/{} dev {lan_if}",
                    g.lan.address,
                    g.lan.subnet.prefix_len()
                ),
                format!("ip link set {lan_if} up"),
            ],
            uplink: Some(uplink(wan_if, &internet_ns, "br0")),
            setup: on_internet(wan_if, wan4),
        });
    }

    // Roaming clients with SSH: IPv4 only on the internet (their IPv6 comes through the VPN).
    for h in inv.hosts.values() {
        if !matches!(h.role, Role::Client(_)) || !h.is_managed() {
            continue;
        }
        let a = internet_alloc.take(h.name.as_str())?;
        hosts.push(NetHost {
            name: h.name.to_string(),
            kind: HostKind::Client,
            namespace: ns(h.name.as_str()),
            sshd: true,
            machine: is_machine(h),
            ssh_aliases: aliases(h),
            addresses: vec![format!("{a}/{len4}")],
            init: vec![],
            uplink: Some(uplink("eth0", &internet_ns, "br0")),
            setup: on_internet("eth0", a),
        });
    }

    // `inet`: somewhere on the internet, dual-stack.
    let mut setup = on_internet("eth0", inet4);
    setup.insert(
        1,
        format!("ip addr add {inet6}/{} dev eth0", net6.prefix_len()),
    );
    setup.push(format!("ip -6 route add default via {gw6}"));
    hosts.push(NetHost {
        name: INET.into(),
        kind: HostKind::Inet,
        namespace: ns(INET),
        sshd: false,
        machine: false,
        ssh_aliases: vec![],
        addresses: vec![
            format!("{inet4}/{len4}"),
            format!("{inet6}/{}", net6.prefix_len()),
        ],
        init: vec![],
        uplink: Some(uplink("eth0", &internet_ns, "br0")),
        setup,
    });

    Ok(Topology {
        prefix: prefix.to_owned(),
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn lab_inventory() -> Inventory {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/lab.yaml");
        crate::files::load_inventory(&path).expect("inventory/lab.yaml loads")
    }

    #[test]
    fn reference_topology_addresses() {
        let t = plan(&lab_inventory(), "m00000").unwrap();
        let summary: Vec<String> = t
            .hosts
            .iter()
            .map(|h| {
                let up = h
                    .uplink
                    .as_ref()
                    .map(|u| format!(" {}->{}:{}", u.interface, u.peer_namespace, u.bridge))
                    .unwrap_or_default();
                format!(
                    "{} {} {} sshd={} [{}]{up}",
                    h.name,
                    h.kind.as_str(),
                    h.namespace,
                    h.sshd,
                    h.addresses.join(" ")
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "internet internet m00000-internet sshd=false [198.51.100.1/24 2001:db8:ff::1/64 2001:db8:10::ffff/64]",
                "vps hub m00000-vps sshd=true [198.51.100.10/24 2001:db8:10::1/64] eth0->m00000-internet:br0",
                "fritzbox router m00000-fritzbox sshd=false [198.51.100.2/24 192.168.178.1/24] eth0->m00000-internet:br0",
                "nas gateway m00000-nas sshd=true [192.168.178.10/24] eth0->m00000-fritzbox:br-lan",
                "homepc lan-host m00000-homepc sshd=false [192.168.178.20/24] eth0->m00000-fritzbox:br-lan",
                "laptop client m00000-laptop sshd=true [198.51.100.3/24] eth0->m00000-internet:br0",
                "inet inet m00000-inet sshd=false [198.51.100.200/24 2001:db8:ff::200/64] eth0->m00000-internet:br0",
            ]
        );
        // veth peers are unique inside each namespace.
        let peers: BTreeSet<_> = t
            .hosts
            .iter()
            .filter_map(|h| h.uplink.as_ref().map(|u| (&u.peer_namespace, &u.peer)))
            .collect();
        assert_eq!(peers.len(), 6);
    }

    #[test]
    fn the_provider_routes_the_clients_prefix_to_the_hub_only_when_routed() {
        let route = "ip -6 route add 2001:db8:10:0:100::/72 via 2001:db8:10::1 dev br0".to_owned();
        let mut inv = lab_inventory();
        let internet = |inv: &Inventory| {
            let t = plan(inv, "m00000").unwrap();
            t.hosts.into_iter().find(|h| h.name == INTERNET).unwrap()
        };
        assert!(!internet(&inv).init.contains(&route), "on-link: no route");
        inv.network.ipv6.as_mut().unwrap().mode = Ipv6Mode::Routed;
        let routed = internet(&inv);
        assert!(routed.init.contains(&route), "{:?}", routed.init);
        // After the address that makes the hub's address on-link.
        let addr = routed
            .init
            .iter()
            .position(|l| l == "ip addr add 2001:db8:10::ffff/64 dev br0")
            .unwrap();
        assert!(routed.init.iter().position(|l| *l == route).unwrap() > addr);
    }

    #[test]
    fn addresses_at_the_top_of_the_address_space_are_checked() {
        // A high IPv4 internet works and has the addresses it should.
        let mut inv = lab_inventory();
        inv.lab.internet4 = "255.255.255.0/24".parse().unwrap();
        inv.lab.hub_public4 = "255.255.255.10".parse().unwrap();
        let t = plan(&inv, "m00000").unwrap();
        let addrs: Vec<&str> = t
            .hosts
            .iter()
            .filter_map(|h| h.addresses.first().map(String::as_str))
            .collect();
        assert_eq!(
            addrs,
            [
                "255.255.255.1/24",
                "255.255.255.10/24",
                "255.255.255.2/24",
                "192.168.178.10/24",
                "192.168.178.20/24",
                "255.255.255.3/24",
                "255.255.255.200/24",
            ]
        );

        // Nets where network + N wraps around, or leaves the net: an error, no address.
        let err = |inv: &Inventory| format!("{:#}", plan(inv, "m00000").unwrap_err());
        let mut inv = lab_inventory();
        inv.lab.internet6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"
            .parse()
            .unwrap();
        let e = err(&inv);
        assert!(
            e.contains("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120 has no address network + 0x200 for inet"),
            "{e}"
        );
        inv.lab.internet6 = "2001:db8:ff::/120".parse().unwrap();
        assert!(
            err(&inv).contains("2001:db8:ff::/120 has no address"),
            "{}",
            err(&inv)
        );

        let mut inv = lab_inventory();
        inv.lab.hub_public6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff01/120"
            .parse()
            .unwrap();
        let e = err(&inv);
        assert!(
            e.contains("has no address network + 0xffff for the provider's router"),
            "{e}"
        );

        // The hub on inet's address: an error, not two hosts with one address.
        let mut inv = lab_inventory();
        inv.lab.hub_public4 = "198.51.100.200".parse().unwrap();
        assert!(
            err(&inv).contains("the lab puts its host inet there"),
            "{}",
            err(&inv)
        );
    }

    #[test]
    fn the_hub_routes_v6_via_the_providers_router_on_its_64() {
        let t = plan(&lab_inventory(), "m00000").unwrap();
        let vps = t.hosts.iter().find(|h| h.name == "vps").unwrap();
        assert!(
            vps.setup
                .contains(&"ip -6 route add default via 2001:db8:10::ffff".to_owned())
        );
        assert!(
            vps.setup
                .contains(&"ip route add default via 198.51.100.1".to_owned())
        );
    }
}
