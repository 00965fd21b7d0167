//! Semantic checks that turn a `RawInventory` into a checked `Inventory`. Every problem of a
//! file is reported at once, each at its own line and column, with what to do about it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_saphyr::{Location, Spanned};

use super::diagnostic::{Collector, Diagnostics};
use super::model::*;
use super::raw::*;
use crate::names::{HostName, InterfaceName, WgKey};

/// Checks `raw` and builds the model; `file` is used in messages.
pub fn validate(raw: RawInventory, file: &str, path: std::path::PathBuf) -> Result<Inventory, Diagnostics> {
    let mut c = Collector::new(file);
    let network = network(&raw.network, &mut c);

    let mut hosts = BTreeMap::new();
    let mut host_spans: HashMap<HostName, Location> = HashMap::new();
    for (name, host) in &raw.hosts.value {
        let Ok(host_name) = HostName::parse(&name.value) else {
            c.error(
                name.referenced,
                format!("host name {:?} is not allowed", name.value),
                "use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            );
            continue;
        };
        if let Some(h) = self::host(&host_name, &host.value, &network, &mut c) {
            host_spans.insert(host_name.clone(), name.referenced);
            hosts.insert(host_name, h);
        }
    }

    let hubs: Vec<_> = hosts.values().filter(|h| matches!(h.role, Role::Hub(_))).collect();
    match hubs.len() {
        1 => {}
        0 => c.error(
            raw.hosts.referenced,
            "the inventory has no hub",
            "give exactly one host `role: hub` (the VPS everyone dials)",
        ),
        _ => {
            for h in hubs.iter().skip(1) {
                c.error(
                    host_spans[&h.name],
                    format!("host {} is a second hub", h.name),
                    "meshctl builds a hub-and-spoke network: keep exactly one `role: hub`",
                );
            }
        }
    }

    check_unique_addresses(&raw, &hosts, &mut c);
    check_subnets(&raw, &network, &mut c);

    let mut routers = BTreeMap::new();
    for (name, r) in &raw.routers {
        let Ok(router_name) = HostName::parse(&name.value) else {
            c.error(
                name.referenced,
                format!("router name {:?} is not allowed", name.value),
                "use 1-63 characters of a-z, 0-9 and '-'",
            );
            continue;
        };
        let r = &r.value;
        let Ok(gw) = HostName::parse(&r.gateway.value) else {
            c.error(r.gateway.referenced, format!("unknown host {:?}", r.gateway.value), "name a host of role gateway");
            continue;
        };
        match hosts.get(&gw).map(|h| &h.role) {
            Some(Role::Gateway(g)) => {
                if !r.lan.value.contains(&g.lan.address) {
                    c.error(
                        r.lan.referenced,
                        format!("router LAN {} does not contain gateway {}'s LAN address {}", r.lan.value, gw, g.lan.address),
                        "the router and the gateway must share the home LAN",
                    );
                }
            }
            Some(_) => c.error(
                r.gateway.referenced,
                format!("host {gw} is not a gateway"),
                "a router sends the VPN range to a host of role gateway",
            ),
            None => {
                let names: Vec<&str> = hosts.keys().map(|h| h.as_str()).collect();
                let help = match super::diagnostic::did_you_mean(gw.as_str(), names) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a host of role gateway".into(),
                };
                c.error(r.gateway.referenced, format!("unknown host `{gw}`"), help);
            }
        }
        if !r.lan.value.contains(&r.address.value) {
            c.error(
                r.address.referenced,
                format!("router address {} is outside its LAN {}", r.address.value, r.lan.value),
                "give the router's own address inside `lan`",
            );
        }
        routers.insert(
            router_name.clone(),
            Router { name: router_name, lan: r.lan.value, address: r.address.value, gateway: gw },
        );
    }

    let lab = lab_settings(raw.lab.as_ref().map(|l| &l.value), &network);
    c.finish()?;
    Ok(Inventory { path, network, hosts, routers, lab })
}

fn network(raw: &Spanned<RawNetwork>, c: &mut Collector) -> Network {
    let n = &raw.value;
    let interface = match &n.interface {
        None => InterfaceName::parse("wg0").expect("valid"),
        Some(i) => InterfaceName::parse(&i.value).unwrap_or_else(|e| {
            c.error(i.referenced, e.to_string(), "for example `wg0`");
            InterfaceName::parse("wg0").expect("valid")
        }),
    };
    if n.name.value.is_empty()
        || !n.name.value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.error(n.name.referenced, format!("network name {:?} is not allowed", n.name.value), "use letters, digits, '-' and '_'");
    }
    if n.ipv4.value.prefix_len() > 30 {
        c.error(n.ipv4.referenced, format!("VPN range {} is too small", n.ipv4.value), "use a /24 or similar private range");
    }
    if n.ipv4.value != n.ipv4.value.trunc() {
        c.error(
            n.ipv4.referenced,
            format!("VPN range {} has host bits set", n.ipv4.value),
            format!("write the network address: {}", n.ipv4.value.trunc()),
        );
    }
    let ipv6 = n.ipv6.as_ref().map(|v6| {
        let v = &v6.value;
        if !v.prefix.value.contains(&v.clients.value) {
            c.error(
                v.clients.referenced,
                format!("the clients' IPv6 range {} is not inside the hub's prefix {}", v.clients.value, v.prefix.value),
                "take the clients' range as a slice of `prefix`, e.g. a /72 of the /64",
            );
        }
        if v.clients.value != v.clients.value.trunc() {
            c.error(
                v.clients.referenced,
                format!("the clients' IPv6 range {} has host bits set", v.clients.value),
                format!("write the network address: {}", v.clients.value.trunc()),
            );
        }
        Ipv6Plan {
            prefix: v.prefix.value,
            clients: v.clients.value,
            mode: match v.mode.value {
                RawIpv6Mode::OnLink => Ipv6Mode::OnLink,
                RawIpv6Mode::Routed => Ipv6Mode::Routed,
            },
        }
    });
    if let Some(mtu) = &n.mtu
        && !(1280..=9000).contains(&mtu.value)
    {
        c.error(mtu.referenced, format!("MTU {} is out of range", mtu.value), "use 1280..9000 (1420 is WireGuard's usual)");
    }
    if let Some(p) = &n.listen_port
        && p.value == 0
    {
        c.error(p.referenced, "listen port 0 is not allowed", "use 51820 or another fixed UDP port");
    }
    Network {
        name: n.name.value.clone(),
        interface,
        listen_port: n.listen_port.as_ref().map_or(51820, |p| p.value),
        ipv4: n.ipv4.value,
        ipv6,
        dns: n.dns.as_ref().map(|d| d.value.iter().map(|a| a.value).collect()).unwrap_or_default(),
        mtu: n.mtu.as_ref().map(|m| m.value),
    }
}

/// Refuses a field that does not belong to the host's role.
fn not_for_role<T>(field: &Option<Spanned<T>>, name: &str, role: &str, c: &mut Collector) {
    if let Some(f) = field {
        c.error(f.referenced, format!("`{name}` does not apply to a {role}"), format!("remove `{name}` or change the host's role"));
    }
}

fn required<'a, T>(field: &'a Option<Spanned<T>>, name: &str, role: &str, host: &HostName, at: Location, c: &mut Collector) -> Option<&'a Spanned<T>> {
    if field.is_none() {
        c.error(at, format!("host {host} (a {role}) has no `{name}`"), format!("add `{name}:` to host {host}"));
    }
    field.as_ref()
}

fn iface(field: &Spanned<String>, c: &mut Collector) -> Option<InterfaceName> {
    InterfaceName::parse(&field.value)
        .map_err(|e| c.error(field.referenced, e.to_string(), "use the interface's name as `ip link` shows it"))
        .ok()
}

fn host(name: &HostName, h: &RawHost, net: &Network, c: &mut Collector) -> Option<Host> {
    let at = h.role.referenced;
    let role_name = match h.role.value {
        RawRole::Hub => "hub",
        RawRole::Gateway => "gateway",
        RawRole::Client => "client",
    };
    let mut ok = true;
    let role = match h.role.value {
        RawRole::Hub => {
            not_for_role(&h.lan, "lan", role_name, c);
            not_for_role(&h.tunnel, "tunnel", role_name, c);
            not_for_role(&h.keepalive, "keepalive", role_name, c);
            let endpoint = required(&h.endpoint, "endpoint", role_name, name, at, c);
            let wan = required(&h.wan_interface, "wan_interface", role_name, name, at, c);
            if let Some(e) = endpoint
                && !valid_endpoint_host(&e.value)
            {
                c.error(e.referenced, format!("endpoint {:?} is not a host name or address", e.value), "give a DNS name or an IP address, without a port (the port is `network.listen_port`)");
                ok = false;
            }
            let wan = wan.and_then(|w| iface(w, c));
            match (endpoint, wan) {
                (Some(e), Some(wan)) => Role::Hub(Hub {
                    endpoint: e.value.clone(),
                    wan_interface: wan,
                    nat: h.nat.as_ref().is_none_or(|n| n.value),
                    wan_accepts_ra: h.wan_accepts_ra.as_ref().is_some_and(|n| n.value),
                }),
                _ => return None,
            }
        }
        RawRole::Gateway => {
            for (f, n) in [(&h.endpoint, "endpoint"), (&h.wan_interface, "wan_interface")] {
                not_for_role(f, n, role_name, c);
            }
            not_for_role(&h.nat, "nat", role_name, c);
            not_for_role(&h.wan_accepts_ra, "wan_accepts_ra", role_name, c);
            not_for_role(&h.tunnel, "tunnel", role_name, c);
            let Some(lan) = h.lan.as_ref() else {
                c.error(at, format!("gateway {name} has no `lan`"), "add `lan: {subnet, interface, address}`: the home LAN this gateway routes into the VPN");
                return None;
            };
            let l = &lan.value;
            if !l.subnet.value.contains(&l.address.value) {
                c.error(l.address.referenced, format!("LAN address {} is outside the LAN {}", l.address.value, l.subnet.value), "give the gateway's own address inside `subnet`");
                ok = false;
            }
            if l.subnet.value != l.subnet.value.trunc() {
                c.error(l.subnet.referenced, format!("LAN {} has host bits set", l.subnet.value), format!("write the network address: {}", l.subnet.value.trunc()));
            }
            let interface = iface(&l.interface, c)?;
            Role::Gateway(Gateway { lan: Lan { subnet: l.subnet.value, interface, address: l.address.value, ipv6_prefix: l.ipv6_prefix.as_ref().map(|p| p.value) } })
        }
        RawRole::Client => {
            for (f, n) in [(&h.endpoint, "endpoint"), (&h.wan_interface, "wan_interface")] {
                not_for_role(f, n, role_name, c);
            }
            not_for_role(&h.nat, "nat", role_name, c);
            not_for_role(&h.wan_accepts_ra, "wan_accepts_ra", role_name, c);
            not_for_role(&h.lan, "lan", role_name, c);
            let tunnel = match h.tunnel.as_ref().map(|t| (t.value, t.referenced)) {
                None | Some((RawTunnel::Split, _)) => Tunnel::Split,
                Some((RawTunnel::Full, at)) => {
                    if h.ssh.is_some() {
                        c.error(at, format!("full tunnel on a managed host ({name}) is not supported yet"), "use `tunnel: split` for hosts meshctl manages over SSH; unmanaged clients (phones) may use `full`");
                        ok = false;
                    }
                    Tunnel::Full
                }
            };
            Role::Client(Client { tunnel })
        }
    };

    let addr = h.address.value;
    if !net.ipv4.contains(&addr) || addr == net.ipv4.network() || addr == net.ipv4.broadcast() {
        c.error(
            h.address.referenced,
            format!("address {addr} of host {name} is outside the VPN range {}", net.ipv4),
            format!("pick a free host address inside {}", net.ipv4),
        );
        ok = false;
    }

    let ssh = match &h.ssh {
        None => None,
        Some(s) => match parse_ssh_target(&s.value) {
            Some(t) => Some(t),
            None => {
                c.error(s.referenced, format!("ssh target {:?} is not user@host[:port]", s.value), "write e.g. `root@vps.example.net` or `admin@nas:2222` (letters, digits, '.', '-', '_' only)");
                ok = false;
                None
            }
        },
    };

    let public_key = match &h.public_key {
        None => None,
        Some(k) => match WgKey::parse(&k.value) {
            Ok(k) => Some(k),
            Err(e) => {
                c.error(k.referenced, format!("host {name}: {e}"), "paste the output of `wg pubkey` (the public key, never the private one)");
                ok = false;
                None
            }
        },
    };

    let wants_v6 = match (&h.public_ipv6, &h.ipv6_address) {
        (Some(b), _) => b.value,
        (None, Some(_)) => true,
        (None, None) => matches!(role, Role::Client(_) | Role::Hub(_)),
    };
    let ipv6 = match (&net.ipv6, wants_v6) {
        (Some(plan), true) => {
            let a = h.ipv6_address.as_ref().map(|a| a.value).unwrap_or_else(|| derive_ipv6(plan.clients, addr, net.ipv4));
            if !plan.clients.contains(&a) {
                let at = h.ipv6_address.as_ref().map_or(h.address.referenced, |a| a.referenced);
                c.error(at, format!("IPv6 address {a} of host {name} is outside the clients' range {}", plan.clients), "pick an address inside `network.ipv6.clients`");
                ok = false;
            }
            Some(a)
        }
        (None, true) => {
            if let Some(a) = h.ipv6_address.as_ref().or(None) {
                c.error(a.referenced, "an IPv6 address without `network.ipv6`", "add `network.ipv6` (prefix, clients, mode) or remove the address");
            } else if let Some(b) = &h.public_ipv6 {
                c.error(b.referenced, "`public_ipv6: true` without `network.ipv6`", "add `network.ipv6` (prefix, clients, mode)");
            }
            None
        }
        (_, false) => None,
    };

    let keepalive = match &role {
        Role::Hub(_) => None,
        _ => Some(h.keepalive.as_ref().map_or(DEFAULT_KEEPALIVE, |k| k.value)),
    };
    ok.then(|| Host { name: name.clone(), role, ssh, address: addr, ipv6, public_key, keepalive })
}

/// The IPv6 address for host number `n` (its offset in the VPN range) in the clients' range.
pub fn derive_ipv6(clients: Ipv6Net, v4: Ipv4Addr, range: Ipv4Net) -> Ipv6Addr {
    let n = u32::from(v4).wrapping_sub(u32::from(range.network()));
    Ipv6Addr::from(u128::from(clients.network()) | u128::from(n))
}

fn valid_endpoint_host(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses `user@host[:port]`; the host may be an ssh_config alias.
pub fn parse_ssh_target(s: &str) -> Option<SshTarget> {
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, s),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p.parse::<u16>().ok().filter(|p| *p > 0)?)),
        _ => (rest, None),
    };
    let word = |w: &str| !w.is_empty() && !w.starts_with('-') && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if user.is_some_and(|u| !word(u)) || !word(host) {
        return None;
    }
    Some(SshTarget { user: user.map(str::to_owned), host: host.to_owned(), port })
}

fn check_unique_addresses(raw: &RawInventory, hosts: &BTreeMap<HostName, Host>, c: &mut Collector) {
    let mut seen: HashMap<IpAddr, &str> = HashMap::new();
    for (name, h) in &raw.hosts.value {
        let a = IpAddr::V4(h.value.address.value);
        if let Some(other) = seen.insert(a, &name.value) {
            c.error(h.value.address.referenced, format!("address {a} is used by both {other} and {}", name.value), "give every host its own address");
        }
    }
    let mut seen6: HashMap<Ipv6Addr, &HostName> = HashMap::new();
    for h in hosts.values() {
        if let Some(a) = h.ipv6
            && let Some(other) = seen6.insert(a, &h.name)
        {
            let at = raw.hosts.value.iter().find(|(n, _)| n.value == h.name.as_str()).map(|(_, r)| r.value.ipv6_address.as_ref().map_or(r.value.address.referenced, |x| x.referenced)).unwrap_or(raw.hosts.referenced);
            c.error(at, format!("IPv6 address {a} is used by both {other} and {}", h.name), "give every host its own IPv6 address");
        }
    }
}

fn check_subnets(raw: &RawInventory, net: &Network, c: &mut Collector) {
    // Every IPv4 range a peer of the hub routes: the VPN and each home LAN. Two that overlap
    // would make WireGuard silently move the range to the last peer configured.
    let mut ranges: Vec<(Ipv4Net, String, Location)> = vec![(net.ipv4, "the VPN range".into(), raw.network.value.ipv4.referenced)];
    for (name, h) in &raw.hosts.value {
        if let (RawRole::Gateway, Some(lan)) = (h.value.role.value, &h.value.lan) {
            let s = &lan.value.subnet;
            for (other, what, _) in &ranges {
                if overlaps(IpNet::V4(*other), IpNet::V4(s.value)) {
                    c.error(s.referenced, format!("LAN {} of {} overlaps {what} ({other})", s.value, name.value), "every home LAN and the VPN need distinct, non-overlapping ranges");
                }
            }
            ranges.push((s.value, format!("the LAN of {}", name.value), s.referenced));
        }
    }
}

/// Whether two networks share any address.
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn lab_settings(raw: Option<&RawLab>, net: &Network) -> LabSettings {
    let internet4 = raw.and_then(|l| l.internet4.as_ref()).map_or("198.51.100.0/24".parse().expect("valid"), |v| v.value);
    let internet6 = raw.and_then(|l| l.internet6.as_ref()).map_or("2001:db8:ff::/64".parse().expect("valid"), |v| v.value);
    let hub_public4 = raw.and_then(|l| l.hub_public4.as_ref()).map_or(Ipv4Addr::from(u32::from(internet4.network()) + 10), |v| v.value);
    let hub_public6 = raw.and_then(|l| l.hub_public6.as_ref()).map(|v| v.value).unwrap_or_else(|| {
        let prefix = net.ipv6.as_ref().map_or("2001:db8:10::/64".parse().expect("valid"), |p| p.prefix);
        Ipv6Net::new(Ipv6Addr::from(u128::from(prefix.network()) | 1), prefix.prefix_len()).expect("valid")
    });
    LabSettings { internet4, internet6, hub_public4, hub_public6 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ssh_targets() {
        assert_eq!(parse_ssh_target("root@vps").unwrap().to_string(), "root@vps");
        assert_eq!(parse_ssh_target("a@b.c:2222").unwrap().port, Some(2222));
        for bad in ["root@", "@h", "r@h:0", "r@h;reboot", "r@$(id)", "r@-oProxyCommand=x", "r@h:x"] {
            assert!(parse_ssh_target(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn derived_ipv6_stays_in_range_and_is_unique(a in 1u32..254, b in 1u32..254) {
            let clients: Ipv6Net = "2001:db8:10:0:100::/72".parse().unwrap();
            let range: Ipv4Net = "10.8.0.0/24".parse().unwrap();
            let x = derive_ipv6(clients, Ipv4Addr::from(u32::from(range.network()) + a), range);
            let y = derive_ipv6(clients, Ipv4Addr::from(u32::from(range.network()) + b), range);
            prop_assert!(clients.contains(&x));
            prop_assert_eq!(x == y, a == b);
        }

        #[test]
        fn overlap_is_symmetric_and_matches_containment(a in any::<u32>(), la in 8u8..=32, b in any::<u32>(), lb in 8u8..=32) {
            let x = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), la).unwrap().trunc());
            let y = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(b), lb).unwrap().trunc());
            prop_assert_eq!(overlaps(x, y), overlaps(y, x));
            let shared = x.contains(&y.network()) || y.contains(&x.network());
            prop_assert_eq!(overlaps(x, y), shared);
        }
    }
}
