//! The reachability policy: a host's `allow:` list turned into networks and firewall rules.
//! Pure: computed from the inventory alone.
//!
//! Enforcement is on the hub (rules at the top of its `MESHCTL-FORWARD` chains, per source,
//! where the role files put `{policy4}`/`{policy6}`) and on each gateway for its own home LAN,
//! so it does not depend on the client's own config: WireGuard's cryptokey routing on the hub
//! pins every source address to one peer, and a client that widens its own AllowedIPs only
//! sends more packets the hub refuses. The client's AllowedIPs (and routes) are narrowed too,
//! so that its config says the truth. Answers (RELATED,ESTABLISHED) are always accepted, so an
//! unrestricted host still talks to a restricted one.

use ipnet::IpNet;

use crate::inventory::{AllowTarget, Host, Inventory, Role};
use crate::names::InterfaceName;
use crate::state::Family;

fn family_of(n: &IpNet) -> Family {
    match n {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

fn reject(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "-j REJECT --reject-with icmp-port-unreachable",
        Family::Ipv6 => "-j REJECT --reject-with icmp6-port-unreachable",
    }
}

/// `-d NET ` as iptables-save prints it (nothing for a default route: it matches everything).
fn dest(n: &IpNet) -> String {
    if n.prefix_len() == 0 {
        String::new()
    } else {
        format!("-d {n} ")
    }
}

/// The addresses a host's packets come from, as the hub's peer entry for it allows them: its
/// VPN addresses and, for a gateway, its home LAN (IPv6 prefix only where the network has IPv6).
pub fn sources(inv: &Inventory, host: &Host) -> Vec<IpNet> {
    let mut nets = vec![IpNet::from(std::net::IpAddr::V4(host.address))];
    if let Some(v6) = host.ipv6 {
        nets.push(IpNet::from(std::net::IpAddr::V6(v6)));
    }
    if let Role::Gateway(g) = &host.role {
        nets.push(IpNet::V4(g.lan.subnet));
        if let (Some(p), Some(_)) = (g.lan.ipv6_prefix, &inv.network.ipv6) {
            nets.push(IpNet::V6(p));
        }
    }
    nets
}

/// The networks one `allow:` entry names (`internet` names none: it is the hub's WAN).
fn target_nets(inv: &Inventory, t: &AllowTarget) -> Vec<IpNet> {
    match t {
        AllowTarget::Host(name) => inv.hosts.get(name).map_or_else(Vec::new, |h| {
            let mut v = vec![IpNet::from(std::net::IpAddr::V4(h.address))];
            v.extend(h.ipv6.map(|a| IpNet::from(std::net::IpAddr::V6(a))));
            v
        }),
        AllowTarget::Lan(name) => match inv.hosts.get(name).map(|h| &h.role) {
            Some(Role::Gateway(g)) => {
                let mut v = vec![IpNet::V4(g.lan.subnet)];
                if inv.network.ipv6.is_some() {
                    v.extend(g.lan.ipv6_prefix.map(IpNet::V6));
                }
                v
            }
            _ => vec![],
        },
        AllowTarget::Net(n) => vec![*n],
        AllowTarget::Internet => vec![],
    }
}

/// The networks `host` may reach through the VPN (its `allow:` entries, `internet` aside);
/// `None`: no policy, everything.
pub fn destinations(inv: &Inventory, host: &Host) -> Option<Vec<IpNet>> {
    let allow = host.allow.as_ref()?;
    let mut nets: Vec<IpNet> = allow.iter().flat_map(|t| target_nets(inv, t)).collect();
    nets.sort();
    nets.dedup();
    Some(nets)
}

/// Whether `host` may reach the internet (then its tunnel carries everything).
pub fn allows_internet(host: &Host) -> bool {
    host.allow
        .as_ref()
        .is_some_and(|a| a.contains(&AllowTarget::Internet))
}

/// The hub's policy rules of `family`, in the order they go into `MESHCTL-FORWARD`: answers
/// accepted, then per restricted source what it may reach, then a reject of the rest from it.
/// Empty when no host has an `allow:` list (today's chain, unchanged).
pub fn hub_rules(
    inv: &Inventory,
    family: Family,
    wg: &InterfaceName,
    wan: &InterfaceName,
) -> Vec<String> {
    let mut rules = Vec::new();
    for host in inv.hosts.values() {
        let Some(dests) = destinations(inv, host) else {
            continue;
        };
        for s in sources(inv, host).iter().filter(|s| family_of(s) == family) {
            for d in dests.iter().filter(|d| family_of(d) == family) {
                rules.push(format!("-s {s} {}-i {wg} -j ACCEPT", dest(d)));
            }
            if allows_internet(host) {
                rules.push(format!("-s {s} -i {wg} -o {wan} -j ACCEPT"));
            }
            rules.push(format!("-s {s} -i {wg} {}", reject(family)));
        }
    }
    if !rules.is_empty() {
        rules.insert(
            0,
            format!("-i {wg} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        );
    }
    rules
}

/// A gateway's policy rules of `family` for its own home LAN `lans` (the IPv4 subnet, or the
/// IPv6 prefix): for every restricted host that may not reach all of it, accepts for the parts
/// it may reach and a reject of the rest. Empty when nobody is restricted there.
pub fn gateway_rules(
    inv: &Inventory,
    gateway: &Host,
    family: Family,
    wg: &InterfaceName,
    lans: &[IpNet],
) -> Vec<String> {
    let mut rules = Vec::new();
    for lan in lans.iter().filter(|l| family_of(l) == family) {
        let mut for_lan = Vec::new();
        for host in inv.hosts.values().filter(|h| h.name != gateway.name) {
            let Some(dests) = destinations(inv, host) else {
                continue;
            };
            let parts: Vec<IpNet> = dests
                .iter()
                .filter(|d| family_of(d) == family)
                .filter_map(|d| {
                    if d.contains(lan) {
                        Some(*lan)
                    } else if lan.contains(d) {
                        Some(*d)
                    } else {
                        None
                    }
                })
                .collect();
            if parts.contains(lan) {
                continue;
            }
            for s in sources(inv, host)
                .iter()
                .filter(|s| family_of(s) == family && !lan.contains(*s))
            {
                for p in &parts {
                    for_lan.push(format!("-s {s} -d {p} -i {wg} -j ACCEPT"));
                }
                for_lan.push(format!("-s {s} -d {lan} -i {wg} {}", reject(family)));
            }
        }
        if !for_lan.is_empty() {
            rules.push(format!(
                "-d {lan} -i {wg} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            ));
            rules.extend(for_lan);
        }
    }
    rules
}

/// `today` (the AllowedIPs of a host's one peer, the hub, in config order) narrowed to what
/// the host may reach: each network cut down to the allowed ones inside it, plus the hub's own
/// addresses (the hub is always reachable: it is not forwarding). `internet` keeps the default
/// routes (AllowedIPs cannot say "all but the VPN"; the hub refuses the rest). Unchanged
/// without a policy.
pub fn narrow(inv: &Inventory, host: &Host, today: Vec<IpNet>) -> Vec<IpNet> {
    let Some(dests) = destinations(inv, host) else {
        return today;
    };
    let (hub, _) = inv.hub();
    let mut allowed = target_nets(inv, &AllowTarget::Host(hub.name.clone()));
    allowed.extend(dests);
    if allows_internet(host) {
        allowed.push("0.0.0.0/0".parse().expect("valid"));
        allowed.push("::/0".parse().expect("valid"));
    }
    let mut out: Vec<IpNet> = Vec::new();
    for t in &today {
        for d in &allowed {
            let n = if t.contains(d) {
                *d
            } else if d.contains(t) {
                *t
            } else {
                continue;
            };
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    // Only the widest of nested networks (a /32 inside an allowed /24 adds nothing).
    let widest: Vec<IpNet> = out
        .iter()
        .filter(|n| !out.iter().any(|o| o != *n && o.contains(*n)))
        .copied()
        .collect();
    widest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(allow: &str) -> Inventory {
        let yaml = format!(
            "network:\n  name: t\n  ipv4: 10.8.0.0/24\n  ipv6:\n    prefix: 2001:db8:10::/64\n    clients: 2001:db8:10:0:100::/72\n    mode: on-link\nhosts:\n  vps:\n    role: hub\n    ssh: root@vps\n    address: 10.8.0.1\n    endpoint: 198.51.100.10\n    wan_interface: eth0\n  nas:\n    role: gateway\n    ssh: root@nas\n    address: 10.8.0.2\n    lan:\n      subnet: 192.168.178.0/24\n      interface: eth0\n      address: 192.168.178.10\n  laptop:\n    role: client\n    ssh: root@laptop\n    address: 10.8.0.10\n  friend:\n    role: client\n    ssh: root@friend\n    address: 10.8.0.12\n    tunnel: full\n    allow: {allow}\n"
        );
        crate::inventory::parse(&yaml, "t.yaml", std::path::Path::new("t.yaml")).expect("valid")
    }

    fn names(v: &[IpNet]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_host_reaches_its_vpn_addresses_not_the_lan_behind_it() {
        let i = inv("[nas]");
        let f = &i.hosts[&crate::names::HostName::parse("friend").unwrap()];
        let wg = InterfaceName::parse("wg0").unwrap();
        let wan = InterfaceName::parse("eth0").unwrap();
        assert_eq!(
            hub_rules(&i, Family::Ipv4, &wg, &wan),
            [
                "-i wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-s 10.8.0.12/32 -d 10.8.0.2/32 -i wg0 -j ACCEPT",
                "-s 10.8.0.12/32 -i wg0 -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
        // The friend's public IPv6 address may reach nothing (the NAS has no IPv6 address).
        assert_eq!(
            hub_rules(&i, Family::Ipv6, &wg, &wan)[1..],
            ["-s 2001:db8:10:0:100::c/128 -i wg0 -j REJECT --reject-with icmp6-port-unreachable"]
        );
        let nas = &i.hosts[&crate::names::HostName::parse("nas").unwrap()];
        let lan: Vec<IpNet> = vec!["192.168.178.0/24".parse().unwrap()];
        assert_eq!(
            gateway_rules(&i, nas, Family::Ipv4, &wg, &lan),
            [
                "-d 192.168.178.0/24 -i wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-s 10.8.0.12/32 -d 192.168.178.0/24 -i wg0 -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
        let today: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        assert_eq!(
            names(&narrow(&i, f, today)),
            ["10.8.0.1/32", "10.8.0.2/32", "2001:db8:10:0:100::1/128"]
        );
    }

    #[test]
    fn lans_cidrs_and_the_internet() {
        let i = inv("[\"lan:nas\", 10.8.0.0/25, internet]");
        let f = &i.hosts[&crate::names::HostName::parse("friend").unwrap()];
        let wg = InterfaceName::parse("wg0").unwrap();
        let wan = InterfaceName::parse("eth0").unwrap();
        assert_eq!(
            hub_rules(&i, Family::Ipv4, &wg, &wan)[1..],
            [
                "-s 10.8.0.12/32 -d 10.8.0.0/25 -i wg0 -j ACCEPT",
                "-s 10.8.0.12/32 -d 192.168.178.0/24 -i wg0 -j ACCEPT",
                "-s 10.8.0.12/32 -i wg0 -o eth0 -j ACCEPT",
                "-s 10.8.0.12/32 -i wg0 -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
        let nas = &i.hosts[&crate::names::HostName::parse("nas").unwrap()];
        let lan: Vec<IpNet> = vec!["192.168.178.0/24".parse().unwrap()];
        assert!(gateway_rules(&i, nas, Family::Ipv4, &wg, &lan).is_empty());
        let today: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        assert_eq!(names(&narrow(&i, f, today)), ["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn a_restricted_hosts_desired_peer_and_routes_match_its_policy() {
        let i = inv("[\"lan:nas\"]");
        let f = &i.hosts[&crate::names::HostName::parse("friend").unwrap()];
        // What `meshctl client` would write for it, and what its desired state holds.
        assert_eq!(
            names(&crate::desired::hub_allowed_ips(&i, f)),
            [
                "10.8.0.1/32",
                "192.168.178.0/24",
                "2001:db8:10:0:100::1/128"
            ]
        );
        let roles = crate::roles::Roles::builtin();
        let d = crate::desired::for_host(&i, &roles, &crate::keys::PinnedKeys::default(), f);
        let routes: Vec<String> = d
            .state
            .routes
            .iter()
            .map(|r| r.destination.to_string())
            .collect();
        // The full tunnel's default route is gone: the friend may not reach the internet.
        assert_eq!(routes, ["192.168.178.0/24", "2001:db8:10:0:100::1/128"]);
        assert!(d.state.rules.is_empty());
    }

    #[test]
    fn roles_that_do_not_place_the_policy_are_refused_when_a_host_has_allow() {
        let i = inv("[nas]");
        assert!(crate::roles::Roles::builtin().check_policy(&i).is_ok());
        let hub = include_str!("../../roles/hub.yaml").replace("      - \"{policy4}\"\n", "");
        let mut o = std::collections::BTreeMap::new();
        o.insert("hub".to_owned(), ("mine/hub.yaml".to_owned(), hub));
        let roles = crate::roles::Roles::with_overrides(&o).expect("a valid role");
        let e = roles.check_policy(&i).unwrap_err().to_string();
        assert!(
            e.contains("roles/hub.yaml") && e.contains("{policy4}"),
            "{e}"
        );
        // Without any `allow:`, the same roles are fine (nothing to enforce).
        let yaml = inv("[]");
        let mut none = yaml.clone();
        for h in none.hosts.values_mut() {
            h.allow = None;
        }
        assert!(roles.check_policy(&none).is_ok());
    }

    #[test]
    fn without_allow_nothing_changes() {
        let yaml = inv("[]");
        let laptop = &yaml.hosts[&crate::names::HostName::parse("laptop").unwrap()];
        let today: Vec<IpNet> = vec!["10.8.0.0/24".parse().unwrap()];
        assert_eq!(narrow(&yaml, laptop, today.clone()), today);
        assert!(destinations(&yaml, laptop).is_none());
    }
}
