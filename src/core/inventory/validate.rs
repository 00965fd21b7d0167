//! Semantic checks that turn a `RawInventory` into a checked `Inventory`. Every problem of a
//! file is reported at once, each at its own line and column, with what to do about it: a
//! host with one mistake is still checked for all the others, and the cross-host checks
//! (duplicate addresses, overlapping ranges, the one hub) read the raw values so that one bad
//! host does not hide or fake a problem elsewhere.
//!
//! Values that could reach a remote shell (host, router and interface names, ssh targets, the
//! endpoint, the network name) are held to strict allowlists here. Messages show such values
//! with control characters escaped, and never show a key at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_saphyr::{Location, Spanned};

use super::diagnostic::{Collector, Diagnostics, did_you_mean, non_ascii_hint, shown};
use super::model::*;
use super::raw::*;
use crate::names::{HostName, InterfaceName, WgKey};

/// A value as messages quote it: `"x;reboot"`, control characters escaped.
fn quoted(v: &str) -> String {
    format!("\"{}\"", shown(v))
}

/// `": it contains 'о' (U+043E), ..."` for a value with a non-ASCII look-alike, else `""`.
fn lookalike(v: &str) -> String {
    non_ascii_hint(v).map_or(String::new(), |h| format!(": {h}"))
}

fn at(l: Location) -> (u64, u64) {
    (l.line(), l.column())
}

/// Map entries in the order they were written (a `BTreeMap` orders them by name).
fn in_file_order<V>(m: &BTreeMap<Key, V>) -> Vec<(&Key, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by_key(|(k, _)| at(k.referenced));
    v
}

const HOST_NAME_HELP: &str =
    "use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit";
const INTERFACE_HELP: &str =
    "use 1-15 characters of a-z, A-Z, 0-9 and _=+.- (the name `ip link` shows, e.g. `wg0`)";

/// Checks `raw` and builds the model; `file` is used in messages.
pub fn validate(raw: RawInventory, file: &str, path: PathBuf) -> Result<Inventory, Diagnostics> {
    let mut c = Collector::new(file);
    let network = network(&raw.network, &mut c);
    let raw_hosts = in_file_order(&raw.hosts.value);
    let lans: Vec<Ipv4Net> = raw_hosts
        .iter()
        .filter_map(|(_, h)| h.value.lan.as_ref().map(|l| l.value.subnet.value))
        .collect();

    let mut hosts = BTreeMap::new();
    for &(name, host) in &raw_hosts {
        let host_name = HostName::parse(&name.value)
            .map_err(|_| {
                c.error(
                    name.referenced,
                    format!(
                        "host name {} is not allowed{}",
                        quoted(&name.value),
                        lookalike(&name.value)
                    ),
                    HOST_NAME_HELP,
                )
            })
            .ok();
        if let Some(h) = self::host(
            &name.value,
            host_name,
            name.referenced,
            &host.value,
            &network,
            &lans,
            &mut c,
        ) {
            hosts.insert(h.name.clone(), h);
        }
    }

    check_one_hub(&raw, &raw_hosts, &mut c);
    check_unique_addresses(&raw_hosts, &network, &mut c);
    check_unique_keys(&raw_hosts, &mut c);
    check_subnets(&raw_hosts, &network, &mut c);
    check_allowed_ips(&raw_hosts, &network, &mut c);
    for (name, allow) in allow_lists(&raw_hosts, &mut c) {
        if let Some(h) = HostName::parse(&name).ok().and_then(|n| hosts.get_mut(&n)) {
            h.allow = Some(allow);
        }
    }
    let routers = routers(&raw, &raw_hosts, &mut c);
    let mut lab = lab_settings(raw.lab.as_ref().map(|l| &l.value), &network, &mut c);
    lab.machines = lab_machines(raw.lab.as_ref().map(|l| &l.value), &raw_hosts, &mut c);

    c.finish()?;
    Ok(Inventory {
        path,
        network,
        hosts,
        routers,
        lab,
    })
}

fn network(raw: &Spanned<RawNetwork>, c: &mut Collector) -> Network {
    let n = &raw.value;
    let default_wg = || InterfaceName::parse("wg0").expect("valid");
    let interface = match &n.interface {
        None => default_wg(),
        Some(i) => iface(i, c).unwrap_or_else(default_wg),
    };
    let name = &n.name.value;
    if name.is_empty()
        || name.len() > 63
        || name.starts_with('-')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.error(
            n.name.referenced,
            format!(
                "network name {} is not allowed{}",
                quoted(name),
                lookalike(name)
            ),
            "use 1-63 letters, digits, '-' and '_', not starting with '-'",
        );
    }
    let v4 = n.ipv4.value;
    if v4.prefix_len() > 30 {
        c.error(
            n.ipv4.referenced,
            format!("VPN range {v4} is too small"),
            "use a /24 or similar private range",
        );
    }
    host_bits(IpNet::V4(v4), "VPN range", n.ipv4.referenced, c);
    let ipv6 = n.ipv6.as_ref().map(|v6| {
        let v = &v6.value;
        host_bits(
            IpNet::V6(v.prefix.value),
            "IPv6 prefix",
            v.prefix.referenced,
            c,
        );
        host_bits(
            IpNet::V6(v.clients.value),
            "the clients' IPv6 range",
            v.clients.referenced,
            c,
        );
        if !v.prefix.value.contains(&v.clients.value) {
            c.error(
                v.clients.referenced,
                format!(
                    "the clients' IPv6 range {} is not inside the hub's prefix {}",
                    v.clients.value, v.prefix.value
                ),
                "take the clients' range as a slice of `prefix`, e.g. a /72 of the /64",
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
        c.error(
            mtu.referenced,
            format!("MTU {} is out of range", mtu.value),
            "use 1280..9000 (1420 is WireGuard's usual)",
        );
    }
    if let Some(p) = &n.listen_port
        && p.value == 0
    {
        c.error(
            p.referenced,
            "listen port 0 is not allowed",
            "use 51820 or another fixed UDP port",
        );
    }
    Network {
        name: name.clone(),
        interface,
        listen_port: n.listen_port.as_ref().map_or(51820, |p| p.value),
        ipv4: v4,
        ipv6,
        dns: n
            .dns
            .as_ref()
            .map(|d| d.value.iter().map(|a| a.value).collect())
            .unwrap_or_default(),
        mtu: n.mtu.as_ref().map(|m| m.value),
        preshared_keys: n.preshared_keys.as_ref().is_some_and(|p| p.value),
    }
}

/// Refuses a network written with host bits set (`10.8.0.1/24`): say which one was meant.
fn host_bits(net: IpNet, what: &str, at: Location, c: &mut Collector) {
    if net != net.trunc() {
        c.error(
            at,
            format!("{what} {net} has host bits set"),
            format!("write the network address: {}", net.trunc()),
        );
    }
}

/// Whether `a` is a usable host address of `net` (inside it, and for ranges of more than two
/// addresses neither the network nor the broadcast address).
fn usable_in(net: Ipv4Net, a: Ipv4Addr) -> bool {
    net.contains(&a) && (net.prefix_len() >= 31 || (a != net.network() && a != net.broadcast()))
}

/// Why `a` cannot be a host's address in `net`, for a message.
fn outside_why(net: Ipv4Net, a: Ipv4Addr) -> &'static str {
    if !net.contains(&a) {
        "is outside"
    } else if a == net.network() {
        "is the network address of"
    } else {
        "is the broadcast address of"
    }
}

fn iface(field: &Spanned<String>, c: &mut Collector) -> Option<InterfaceName> {
    InterfaceName::parse(&field.value)
        .map_err(|_| {
            c.error(
                field.referenced,
                format!(
                    "interface name {} is not allowed{}",
                    quoted(&field.value),
                    lookalike(&field.value)
                ),
                INTERFACE_HELP,
            )
        })
        .ok()
}

/// Which roles a role-specific field belongs to.
fn only_for(field: &str) -> &'static str {
    match field {
        "lan" => "gateways",
        "tunnel" => "clients",
        "keepalive" => "gateways and clients (the hub is the one everyone dials)",
        "preshared_key" => {
            "gateways and clients (the hub is in every pair: use `network.preshared_keys`)"
        }
        _ => "the hub",
    }
}

/// Refuses a field that does not belong to the host's role.
fn not_for_role<T>(
    field: &Option<Spanned<T>>,
    field_name: &str,
    role: &str,
    host: &str,
    c: &mut Collector,
) {
    if let Some(f) = field {
        c.error(
            f.referenced,
            format!("`{field_name}` does not apply to {role} `{}`", shown(host)),
            format!(
                "`{field_name}` is only for {}: remove it or change the host's role",
                only_for(field_name)
            ),
        );
    }
}

fn role_name(r: RawRole) -> &'static str {
    match r {
        RawRole::Hub => "hub",
        RawRole::Gateway => "gateway",
        RawRole::Client => "client",
    }
}

/// Checks one host; `None` when anything about it is wrong (all of it has been reported).
/// `checked` is its name if that passed the allowlist.
fn host(
    name: &str,
    checked: Option<HostName>,
    key_at: Location,
    h: &RawHost,
    net: &Network,
    lans: &[Ipv4Net],
    c: &mut Collector,
) -> Option<Host> {
    let before = c.found.len();
    let role_n = role_name(h.role.value);
    let shown_name = shown(name);
    let missing = |field: &str, what: &str, c: &mut Collector| {
        c.error(
            key_at,
            format!("{role_n} `{shown_name}` has no `{field}`"),
            format!("add `{field}:` to host `{shown_name}`: {what}"),
        );
    };
    let role = match h.role.value {
        RawRole::Hub => {
            not_for_role(&h.lan, "lan", role_n, name, c);
            not_for_role(&h.tunnel, "tunnel", role_n, name, c);
            not_for_role(&h.keepalive, "keepalive", role_n, name, c);
            not_for_role(&h.preshared_key, "preshared_key", role_n, name, c);
            let endpoint = match &h.endpoint {
                None => {
                    missing("endpoint", "the DNS name or address the others dial", c);
                    None
                }
                Some(e) => check_endpoint(e, name, net, c),
            };
            let wan = match &h.wan_interface {
                None => {
                    missing(
                        "wan_interface",
                        "the interface facing the internet, e.g. `eth0`",
                        c,
                    );
                    None
                }
                Some(w) => iface(w, c),
            };
            endpoint.zip(wan).map(|(endpoint, wan_interface)| {
                Role::Hub(Hub {
                    endpoint,
                    wan_interface,
                    nat: h.nat.as_ref().is_none_or(|n| n.value),
                    wan_accepts_ra: h.wan_accepts_ra.as_ref().is_some_and(|n| n.value),
                })
            })
        }
        RawRole::Gateway => {
            not_for_role(&h.endpoint, "endpoint", role_n, name, c);
            not_for_role(&h.wan_interface, "wan_interface", role_n, name, c);
            not_for_role(&h.nat, "nat", role_n, name, c);
            not_for_role(&h.wan_accepts_ra, "wan_accepts_ra", role_n, name, c);
            not_for_role(&h.tunnel, "tunnel", role_n, name, c);
            match &h.lan {
                None => {
                    missing(
                        "lan",
                        "the home LAN it routes into the VPN (`subnet`, `interface`, `address`)",
                        c,
                    );
                    None
                }
                Some(lan) => {
                    check_lan(&lan.value, name, c).map(|lan| Role::Gateway(Gateway { lan }))
                }
            }
        }
        RawRole::Client => {
            not_for_role(&h.endpoint, "endpoint", role_n, name, c);
            not_for_role(&h.wan_interface, "wan_interface", role_n, name, c);
            not_for_role(&h.nat, "nat", role_n, name, c);
            not_for_role(&h.wan_accepts_ra, "wan_accepts_ra", role_n, name, c);
            not_for_role(&h.lan, "lan", role_n, name, c);
            let tunnel = match &h.tunnel {
                None => Tunnel::Split,
                Some(t) if t.value == RawTunnel::Split => Tunnel::Split,
                Some(_) => Tunnel::Full,
            };
            Some(Role::Client(Client { tunnel }))
        }
    };

    let addr = h.address.value;
    if !usable_in(net.ipv4, addr) {
        c.error(
            h.address.referenced,
            format!(
                "address {addr} of host `{shown_name}` {} the VPN range {}",
                outside_why(net.ipv4, addr),
                net.ipv4
            ),
            format!("pick a free host address inside {}", net.ipv4),
        );
    }

    let ssh = h.ssh.as_ref().and_then(|s| check_ssh(s, name, c));

    let public_key = h.public_key.as_ref().and_then(|k| {
        // The value is never shown: it may be a private key pasted by mistake.
        WgKey::parse(&k.value)
            .map_err(|_| {
                c.error(
                    k.referenced,
                    format!("`public_key` of host `{shown_name}` is not a valid WireGuard public key"),
                    "paste the output of `wg pubkey`: 44 characters of base64 (the public key, never the private one)",
                )
            })
            .ok()
    });

    if let (Some(b), Some(a)) = (&h.public_ipv6, &h.ipv6_address)
        && !b.value
    {
        c.error(
            a.referenced,
            format!("host `{shown_name}` has an `ipv6_address` but `public_ipv6: false`"),
            "remove `ipv6_address`, or set `public_ipv6: true`",
        );
    }
    let ipv6 = match (&net.ipv6, wants_ipv6(h)) {
        (Some(plan), true) => {
            let (a, loc) = host_ipv6(h, plan, net.ipv4);
            if !plan.clients.contains(&a) {
                c.error(
                    loc,
                    format!(
                        "IPv6 address {a} of host `{shown_name}` is outside the clients' range {}",
                        plan.clients
                    ),
                    if h.ipv6_address.is_some() {
                        "pick an address inside `network.ipv6.clients`".to_owned()
                    } else {
                        format!(
                            "the address is derived from the host's number in {}: make `network.ipv6.clients` large enough, or give `ipv6_address`",
                            net.ipv4
                        )
                    },
                );
            }
            Some(a)
        }
        (None, true) => {
            if let Some(a) = &h.ipv6_address {
                c.error(
                    a.referenced,
                    format!(
                        "host `{shown_name}` has an `ipv6_address` but the network has no `ipv6`"
                    ),
                    "add `network.ipv6` (prefix, clients, mode) or remove the address",
                );
            } else if let Some(b) = &h.public_ipv6 {
                c.error(
                    b.referenced,
                    format!(
                        "host `{shown_name}` has `public_ipv6: true` but the network has no `ipv6`"
                    ),
                    "add `network.ipv6` (prefix, clients, mode) or remove `public_ipv6`",
                );
            }
            None
        }
        (_, false) => None,
    };

    let keepalive = match h.role.value {
        RawRole::Hub => None,
        _ => Some(h.keepalive.as_ref().map_or(DEFAULT_KEEPALIVE, |k| k.value)),
    };
    // A target inside the VPN or a home LAN is reached through the network meshctl manages.
    let through_vpn = ssh
        .as_ref()
        .and_then(|t| t.host.parse::<Ipv4Addr>().ok())
        .is_some_and(|a| net.ipv4.contains(&a) || lans.iter().any(|l| l.contains(&a)));
    let guard = h.guard.as_ref().map_or(through_vpn, |g| g.value);
    let guard_explicit = h.guard.is_some();
    let (name, role) = (checked?, role?);
    (c.found.len() == before).then_some(Host {
        name,
        role,
        ssh,
        address: addr,
        ipv6,
        public_key,
        keepalive,
        guard,
        guard_explicit,
        allow: None,
        preshared_key: h.preshared_key.as_ref().map(|p| p.value),
    })
}

/// Checks every host's `allow:` list against the inventory: each entry is `internet`, a CIDR
/// (or one address), `lan:GATEWAY` or a host name; unknown names are reported where they are
/// written, with the closest name that exists. The hub takes no `allow:` (it forwards, it is
/// not behind itself). Returns the checked lists by host name.
fn allow_lists(
    hosts: &[(&Key, &Spanned<RawHost>)],
    c: &mut Collector,
) -> Vec<(String, Vec<AllowTarget>)> {
    let names = || hosts.iter().map(|(k, _)| k.value.as_str());
    let gateways = || {
        hosts
            .iter()
            .filter(|(_, h)| h.value.role.value == RawRole::Gateway)
            .map(|(k, _)| k.value.as_str())
    };
    let mut lists = Vec::new();
    for (name, h) in hosts {
        let Some(allow) = &h.value.allow else {
            continue;
        };
        let host = shown(&name.value);
        if h.value.role.value == RawRole::Hub {
            c.error(
                allow.referenced,
                format!("`allow` does not apply to hub `{host}`"),
                "`allow` restricts what a gateway or client may reach through the hub: remove it",
            );
            continue;
        }
        let mut targets = Vec::new();
        for entry in &allow.value {
            let v = entry.value.trim();
            let target = if v == "internet" {
                Some(AllowTarget::Internet)
            } else if let Some(gw) = v.strip_prefix("lan:") {
                match hosts.iter().find(|(k, _)| k.value == gw) {
                    Some((_, g)) if g.value.role.value == RawRole::Gateway => {
                        HostName::parse(gw).ok().map(AllowTarget::Lan)
                    }
                    Some((_, g)) => {
                        c.error(
                            entry.referenced,
                            format!(
                                "`allow` of host `{host}` names the LAN of `{}`, a {}, not a gateway",
                                shown(gw),
                                role_name(g.value.role.value)
                            ),
                            "`lan:NAME` names a host of role gateway (its home LAN)",
                        );
                        None
                    }
                    None => {
                        let help = match did_you_mean(gw, gateways()) {
                            Some(s) => format!("did you mean `lan:{s}`?"),
                            None => "`lan:NAME` names a host of role gateway (its home LAN)".into(),
                        };
                        c.error(
                            entry.referenced,
                            format!(
                                "`allow` of host `{host}` names the LAN of {}, which is not a host of the inventory{}",
                                quoted(gw),
                                lookalike(gw)
                            ),
                            help,
                        );
                        None
                    }
                }
            } else if let Ok(n) = v.parse::<IpNet>() {
                Some(AllowTarget::Net(n.trunc()))
            } else if let Ok(a) = v.parse::<IpAddr>() {
                Some(AllowTarget::Net(IpNet::from(a)))
            } else if v.contains('/') || v.parse::<f64>().is_ok() || v.contains(':') {
                c.error(
                    entry.referenced,
                    format!(
                        "`allow` of host `{host}` names {}, which is not a CIDR",
                        quoted(v)
                    ),
                    "write a network with its prefix length, e.g. 192.168.178.0/24 or 2001:db8::/64, or one address",
                );
                None
            } else if names().any(|n| n == v) {
                HostName::parse(v).ok().map(AllowTarget::Host)
            } else {
                let help = match did_you_mean(v, names()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a host of the inventory, `lan:GATEWAY`, a CIDR such as 192.168.178.0/24, or `internet`".into(),
                };
                c.error(
                    entry.referenced,
                    format!(
                        "`allow` of host `{host}` names {}, which is not a host of the inventory{}",
                        quoted(v),
                        lookalike(v)
                    ),
                    help,
                );
                None
            };
            targets.extend(target);
        }
        targets.sort();
        targets.dedup();
        lists.push((name.value.clone(), targets));
    }
    lists
}

fn check_endpoint(
    e: &Spanned<String>,
    host: &str,
    net: &Network,
    c: &mut Collector,
) -> Option<String> {
    let v = &e.value;
    if !valid_endpoint_host(v) {
        c.error(
            e.referenced,
            format!(
                "endpoint {} of hub `{}` is not a host name or an IP address{}",
                quoted(v),
                shown(host),
                lookalike(v)
            ),
            "give a DNS name (letters, digits, '-' and '.') or an IP address, without a port (the port is `network.listen_port`)",
        );
        return None;
    }
    if let Ok(IpAddr::V4(a)) = v.parse::<IpAddr>()
        && net.ipv4.contains(&a)
    {
        c.error(
            e.referenced,
            format!("endpoint {a} of hub `{}` is inside the VPN range {}", shown(host), net.ipv4),
            "the endpoint is the hub's public address (or name) that the others dial over the internet",
        );
        return None;
    }
    Some(v.clone())
}

fn check_lan(l: &RawLan, host: &str, c: &mut Collector) -> Option<Lan> {
    let before = c.found.len();
    let (subnet, address) = (l.subnet.value, l.address.value);
    host_bits(IpNet::V4(subnet), "LAN", l.subnet.referenced, c);
    if !usable_in(subnet, address) {
        c.error(
            l.address.referenced,
            format!(
                "LAN address {address} of gateway `{}` {} its LAN {subnet}",
                shown(host),
                outside_why(subnet, address)
            ),
            "give the gateway's own address inside `subnet`",
        );
    }
    if let Some(p) = &l.ipv6_prefix {
        host_bits(IpNet::V6(p.value), "LAN IPv6 prefix", p.referenced, c);
    }
    match (&l.ipv6_address, &l.ipv6_prefix) {
        (Some(a), Some(p)) if !p.value.contains(&a.value) => c.error(
            a.referenced,
            format!(
                "LAN IPv6 address {} of gateway `{}` is outside its LAN prefix {}",
                a.value,
                shown(host),
                p.value
            ),
            "give the gateway's own address inside `ipv6_prefix`",
        ),
        (Some(a), None) => c.error(
            a.referenced,
            format!(
                "gateway `{}` has a LAN IPv6 address but no `ipv6_prefix`",
                shown(host)
            ),
            "add `ipv6_prefix:` (the home LAN's IPv6 prefix) or remove `ipv6_address`",
        ),
        _ => {}
    }
    let interface = iface(&l.interface, c);
    (c.found.len() == before).then_some(())?;
    Some(Lan {
        subnet,
        interface: interface?,
        address,
        ipv6_prefix: l.ipv6_prefix.as_ref().map(|p| p.value),
        ipv6_address: l.ipv6_address.as_ref().map(|a| a.value),
    })
}

fn check_ssh(s: &Spanned<String>, host: &str, c: &mut Collector) -> Option<SshTarget> {
    let t = parse_ssh_target(&s.value);
    if t.is_none() {
        let v = &s.value;
        let (user, rest) = v.split_once('@').unwrap_or(("", v));
        let why = if v.starts_with('-') || rest.starts_with('-') || user.starts_with('-') {
            ": it starts with '-', which ssh would read as an option".to_owned()
        } else {
            lookalike(v)
        };
        c.error(
            s.referenced,
            format!(
                "ssh target {} of host `{}` is not user@host[:port]{why}",
                quoted(v),
                shown(host)
            ),
            "write e.g. `root@vps.example.net` or `admin@nas:2222` (letters, digits, '.', '-' and '_'; no leading '-')",
        );
    }
    t
}

/// Whether a host gets a public IPv6 address (when the network has an IPv6 plan).
fn wants_ipv6(h: &RawHost) -> bool {
    match (&h.public_ipv6, &h.ipv6_address) {
        (Some(b), _) => b.value,
        (None, Some(_)) => true,
        (None, None) => matches!(h.role.value, RawRole::Client | RawRole::Hub),
    }
}

/// The host's IPv6 address (given, or derived from its IPv4 host number) and where it comes
/// from in the file.
fn host_ipv6(h: &RawHost, plan: &Ipv6Plan, range: Ipv4Net) -> (Ipv6Addr, Location) {
    match &h.ipv6_address {
        Some(a) => (a.value, a.referenced),
        None => (
            derive_ipv6(plan.clients, h.address.value, range),
            h.address.referenced,
        ),
    }
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
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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
    let word = |w: &str| {
        !w.is_empty()
            && !w.starts_with('-')
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if user.is_some_and(|u| !word(u)) || !word(host) {
        return None;
    }
    Some(SshTarget {
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
    })
}

fn check_one_hub(raw: &RawInventory, hosts: &[(&Key, &Spanned<RawHost>)], c: &mut Collector) {
    let hubs: Vec<&Key> = hosts
        .iter()
        .filter(|(_, h)| h.value.role.value == RawRole::Hub)
        .map(|(k, _)| *k)
        .collect();
    match hubs.as_slice() {
        [] => c.error(
            raw.hosts.referenced,
            "the inventory has no hub",
            "give exactly one host `role: hub` (the VPS everyone dials)",
        ),
        [_] => {}
        [first, rest @ ..] => {
            for h in rest {
                c.error(
                    h.referenced,
                    format!(
                        "host `{}` is a second hub (`{}` is one already)",
                        shown(&h.value),
                        shown(&first.value)
                    ),
                    "meshctl builds a hub-and-spoke network: keep exactly one `role: hub`",
                );
            }
        }
    }
}

fn check_unique_addresses(hosts: &[(&Key, &Spanned<RawHost>)], net: &Network, c: &mut Collector) {
    let mut seen: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut seen6: HashMap<Ipv6Addr, &str> = HashMap::new();
    for (name, h) in hosts {
        let h = &h.value;
        let a = h.address.value;
        match seen.get(&a) {
            Some(other) => c.error(
                h.address.referenced,
                format!(
                    "address {a} of host `{}` is already used by host `{}`",
                    shown(&name.value),
                    shown(other)
                ),
                "give every host its own address",
            ),
            None => {
                seen.insert(a, &name.value);
            }
        }
        if let Some(plan) = &net.ipv6
            && wants_ipv6(h)
        {
            let (a, loc) = host_ipv6(h, plan, net.ipv4);
            match seen6.get(&a) {
                Some(other) => c.error(
                    loc,
                    format!(
                        "IPv6 address {a} of host `{}` is already used by host `{}`",
                        shown(&name.value),
                        shown(other)
                    ),
                    "give every host its own IPv6 address",
                ),
                None => {
                    seen6.insert(a, &name.value);
                }
            }
        }
    }
}

fn check_unique_keys(hosts: &[(&Key, &Spanned<RawHost>)], c: &mut Collector) {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (name, h) in hosts {
        let Some(k) = &h.value.public_key else {
            continue;
        };
        let Ok(key) = WgKey::parse(&k.value) else {
            continue;
        };
        match seen.get(key.as_str()) {
            Some(other) => c.error(
                k.referenced,
                format!(
                    "host `{}` has the same public key as host `{}`",
                    shown(&name.value),
                    shown(other)
                ),
                "every device has its own key pair: paste each one's own `wg pubkey` output",
            ),
            None => {
                seen.insert(key.as_str().to_owned(), &name.value);
            }
        }
    }
}

/// Ranges that must not overlap the VPN: the home LANs (each is routed through the tunnel),
/// and LAN IPv6 prefixes that must stay clear of the clients' range.
fn check_subnets(hosts: &[(&Key, &Spanned<RawHost>)], net: &Network, c: &mut Collector) {
    for (name, h) in hosts {
        let (RawRole::Gateway, Some(lan)) = (h.value.role.value, &h.value.lan) else {
            continue;
        };
        let s = &lan.value.subnet;
        if overlaps(IpNet::V4(net.ipv4), IpNet::V4(s.value)) {
            c.error(
                s.referenced,
                format!(
                    "LAN {} of gateway `{}` overlaps the VPN range {}",
                    s.value,
                    shown(&name.value),
                    net.ipv4
                ),
                "the VPN and every home LAN need distinct, non-overlapping ranges",
            );
        }
        // A LAN prefix may be a slice of a routed hub prefix, but never of the clients' range:
        // the hub routes those addresses to the clients themselves.
        if let (Some(p6), Some(plan)) = (&lan.value.ipv6_prefix, &net.ipv6)
            && overlaps(IpNet::V6(plan.clients), IpNet::V6(p6.value))
        {
            c.error(
                p6.referenced,
                format!(
                    "LAN IPv6 prefix {} of gateway `{}` overlaps the clients' IPv6 range {}",
                    p6.value,
                    shown(&name.value),
                    plan.clients
                ),
                "give the home LAN its own IPv6 prefix (from the home router), outside `network.ipv6.clients`",
            );
        }
    }
}

/// What a range in a peer's AllowedIPs on the hub is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Address,
    Address6,
    Lan,
    Lan6,
}

/// The hub has one peer per other host, and WireGuard routes each range of an AllowedIPs to
/// exactly one peer: a range given to two peers silently moves to the last one configured.
/// Every pair of overlapping ranges of two different peers is an error (pairs another check
/// already reports — duplicate addresses, a LAN overlapping the VPN or the clients' range —
/// are left to it).
fn check_allowed_ips(hosts: &[(&Key, &Spanned<RawHost>)], net: &Network, c: &mut Collector) {
    let mut ranges: Vec<(IpNet, &str, Allowed, Location)> = Vec::new();
    for (name, h) in hosts {
        let h = &h.value;
        if h.role.value == RawRole::Hub {
            continue;
        }
        let n = name.value.as_str();
        ranges.push((
            IpNet::V4(Ipv4Net::from(h.address.value)),
            n,
            Allowed::Address,
            h.address.referenced,
        ));
        if let Some(plan) = &net.ipv6
            && wants_ipv6(h)
        {
            let (a, loc) = host_ipv6(h, plan, net.ipv4);
            ranges.push((IpNet::V6(Ipv6Net::from(a)), n, Allowed::Address6, loc));
        }
        if let (RawRole::Gateway, Some(lan)) = (h.role.value, &h.lan) {
            let l = &lan.value;
            ranges.push((
                IpNet::V4(l.subnet.value.trunc()),
                n,
                Allowed::Lan,
                l.subnet.referenced,
            ));
            if let Some(p) = &l.ipv6_prefix {
                ranges.push((IpNet::V6(p.value.trunc()), n, Allowed::Lan6, p.referenced));
            }
        }
    }
    let describe = |r: &(IpNet, &str, Allowed, Location)| {
        let what = match r.2 {
            Allowed::Address | Allowed::Address6 => "address of",
            Allowed::Lan => "LAN of gateway",
            Allowed::Lan6 => "LAN IPv6 prefix of gateway",
        };
        format!("{} ({what} `{}`)", r.0, shown(r.1))
    };
    let lan6_in_clients = |n: IpNet| {
        net.ipv6
            .as_ref()
            .is_some_and(|p| overlaps(IpNet::V6(p.clients), n))
    };
    for (i, j) in overlapping_pairs(ranges.iter().map(|r| r.0)) {
        let (earlier, later) = (&ranges[i], &ranges[j]);
        if earlier.1 == later.1 {
            continue;
        }
        let reported = match (earlier.2, later.2) {
            (Allowed::Address, Allowed::Address) | (Allowed::Address6, Allowed::Address6) => true,
            (Allowed::Address, Allowed::Lan) | (Allowed::Lan, Allowed::Address) => true,
            (Allowed::Address6, Allowed::Lan6) => lan6_in_clients(later.0),
            (Allowed::Lan6, Allowed::Address6) => lan6_in_clients(earlier.0),
            _ => false,
        };
        if reported {
            continue;
        }
        c.error(
            later.3,
            format!(
                "AllowedIPs of two peers of the hub's {} overlap: {} and {}",
                net.interface,
                describe(later),
                describe(earlier)
            ),
            "WireGuard would silently move the overlap to whichever peer is configured last: give each peer its own, non-overlapping range",
        );
    }
}

/// Every pair `(i, j)`, `i < j`, of overlapping networks, in the order a nested loop over `j`
/// then `i` would find them — without the nested loop: CIDR blocks either nest or are apart,
/// so a sweep in address order with a stack of the blocks still open finds each overlap once
/// (a hub with 10,000 peers is checked in milliseconds).
pub fn overlapping_pairs(nets: impl Iterator<Item = IpNet>) -> Vec<(usize, usize)> {
    let nets: Vec<IpNet> = nets.collect();
    let mut order: Vec<usize> = (0..nets.len()).collect();
    order.sort_by_key(|&k| {
        let n = nets[k];
        (n.addr().is_ipv6(), n.network(), n.prefix_len())
    });
    let mut open: Vec<usize> = Vec::new();
    let mut pairs = Vec::new();
    for k in order {
        let n = nets[k];
        while let Some(&top) = open.last() {
            if nets[top].addr().is_ipv6() == n.addr().is_ipv6() && nets[top].contains(&n.network())
            {
                break;
            }
            open.pop();
        }
        pairs.extend(open.iter().map(|&o| (o.min(k), o.max(k))));
        open.push(k);
    }
    pairs.sort_by_key(|&(i, j)| (j, i));
    pairs
}

/// Whether two networks share any address.
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn routers(
    raw: &RawInventory,
    hosts: &[(&Key, &Spanned<RawHost>)],
    c: &mut Collector,
) -> BTreeMap<HostName, Router> {
    let by_name: HashMap<&str, &RawHost> = hosts
        .iter()
        .map(|(k, h)| (k.value.as_str(), &h.value))
        .collect();
    let mut routers = BTreeMap::new();
    for (name, r) in in_file_order(&raw.routers) {
        let before = c.found.len();
        let router_name = HostName::parse(&name.value)
            .map_err(|_| {
                c.error(
                    name.referenced,
                    format!(
                        "router name {} is not allowed{}",
                        quoted(&name.value),
                        lookalike(&name.value)
                    ),
                    HOST_NAME_HELP,
                )
            })
            .ok();
        let r = &r.value;
        let gw = &r.gateway.value;
        host_bits(IpNet::V4(r.lan.value), "router LAN", r.lan.referenced, c);
        match by_name.get(gw.as_str()) {
            Some(h) if h.role.value == RawRole::Gateway => {
                if let Some(lan) = &h.lan {
                    let lan_addr = lan.value.address.value;
                    if !r.lan.value.contains(&lan_addr) {
                        c.error(
                            r.lan.referenced,
                            format!(
                                "router LAN {} does not contain gateway `{}`'s LAN address {lan_addr}",
                                r.lan.value,
                                shown(gw)
                            ),
                            "the router and its gateway must share the home LAN",
                        );
                    }
                    if r.address.value == lan_addr {
                        c.error(
                            r.address.referenced,
                            format!(
                                "router address {} is gateway `{}`'s own LAN address",
                                r.address.value,
                                shown(gw)
                            ),
                            "give the router's own address on the home LAN (often .1)",
                        );
                    }
                }
            }
            Some(h) => c.error(
                r.gateway.referenced,
                format!(
                    "gateway `{}` of router `{}` is a {}, not a gateway",
                    shown(gw),
                    shown(&name.value),
                    role_name(h.role.value)
                ),
                "a router sends the VPN range to a host of role gateway",
            ),
            None => {
                let gateways = hosts
                    .iter()
                    .filter(|(_, h)| h.value.role.value == RawRole::Gateway)
                    .map(|(k, _)| k.value.as_str());
                let help = match did_you_mean(gw, gateways) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a host of role gateway".into(),
                };
                c.error(
                    r.gateway.referenced,
                    format!(
                        "gateway {} of router `{}` is not a host of the inventory{}",
                        quoted(gw),
                        shown(&name.value),
                        lookalike(gw)
                    ),
                    help,
                );
            }
        }
        if !usable_in(r.lan.value, r.address.value) {
            c.error(
                r.address.referenced,
                format!(
                    "router address {} {} its LAN {}",
                    r.address.value,
                    outside_why(r.lan.value, r.address.value),
                    r.lan.value
                ),
                "give the router's own address inside `lan`",
            );
        }
        if c.found.len() == before
            && let (Some(router_name), Ok(gateway)) = (router_name, HostName::parse(gw))
        {
            routers.insert(
                router_name.clone(),
                Router {
                    name: router_name,
                    lan: r.lan.value,
                    address: r.address.value,
                    gateway,
                },
            );
        }
    }
    routers
}

fn lab_settings(raw: Option<&RawLab>, net: &Network, c: &mut Collector) -> LabSettings {
    let internet4 = raw
        .and_then(|l| l.internet4.as_ref())
        .map_or("198.51.100.0/24".parse().expect("valid"), |v| v.value);
    let internet6 = raw
        .and_then(|l| l.internet6.as_ref())
        .map_or("2001:db8:ff::/64".parse().expect("valid"), |v| v.value);
    let hub_public4 = match raw.and_then(|l| l.hub_public4.as_ref()) {
        Some(v) => {
            if !usable_in(internet4, v.value) {
                c.error(
                    v.referenced,
                    format!(
                        "lab hub address {} {} the lab internet {internet4}",
                        v.value,
                        outside_why(internet4, v.value)
                    ),
                    "give `lab.hub_public4` inside `lab.internet4`",
                );
            }
            v.value
        }
        None => {
            // The default is the net's `.10`: checked, since a net at the top of the address
            // space (`255.255.255.248/29`) has no `network + 10`, and a small one has it outside.
            let default = u32::from(internet4.network())
                .checked_add(10)
                .map(Ipv4Addr::from)
                .filter(|a| usable_in(internet4, *a));
            match (default, raw.and_then(|l| l.internet4.as_ref())) {
                (Some(a), _) => a,
                (None, given) => {
                    if let Some(v) = given {
                        c.error(
                            v.referenced,
                            format!(
                                "lab internet {internet4} has no host address .10 for the hub's \
                                 default public address (network + 10)"
                            ),
                            "give `lab.hub_public4` inside `lab.internet4`, or use a /24 or larger",
                        );
                    }
                    internet4.network()
                }
            }
        }
    };
    let hub_public6 = raw
        .and_then(|l| l.hub_public6.as_ref())
        .map(|v| v.value)
        .unwrap_or_else(|| {
            let prefix = net
                .ipv6
                .as_ref()
                .map_or("2001:db8:10::/64".parse().expect("valid"), |p| p.prefix);
            Ipv6Net::new(
                Ipv6Addr::from(u128::from(prefix.network()) | 1),
                prefix.prefix_len(),
            )
            .expect("valid")
        });
    LabSettings {
        internet4,
        internet6,
        hub_public4,
        hub_public6,
        machines: BTreeSet::new(),
    }
}

/// `lab.machines`: each a host of the inventory that meshctl reaches over SSH (a machine is
/// booted to be managed), named once.
fn lab_machines(
    raw: Option<&RawLab>,
    hosts: &[(&Key, &Spanned<RawHost>)],
    c: &mut Collector,
) -> BTreeSet<HostName> {
    let mut machines = BTreeSet::new();
    let Some(list) = raw.and_then(|l| l.machines.as_ref()) else {
        return machines;
    };
    for name in &list.value {
        let Some((_, host)) = hosts.iter().find(|(k, _)| k.value == name.value) else {
            let help = match did_you_mean(&name.value, hosts.iter().map(|(k, _)| k.value.as_str()))
            {
                Some(s) => format!("did you mean `{s}`?"),
                None => "name hosts of `hosts:` that have an `ssh:` target".into(),
            };
            c.error(
                name.referenced,
                format!(
                    "lab machine {} is not a host of the inventory{}",
                    quoted(&name.value),
                    lookalike(&name.value)
                ),
                help,
            );
            continue;
        };
        if host.value.ssh.is_none() {
            c.error(
                name.referenced,
                format!(
                    "lab machine `{}` has no `ssh:` target: a lab machine is managed over SSH",
                    shown(&name.value)
                ),
                "give the host an `ssh:` target, or leave it out of `lab.machines`",
            );
            continue;
        }
        // A host name that does not parse is reported at the host itself.
        if let Ok(n) = HostName::parse(&name.value)
            && !machines.insert(n)
        {
            c.error(
                name.referenced,
                format!("lab machine `{}` is named twice", shown(&name.value)),
                "name each machine once",
            );
        }
    }
    machines
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `inventory/lab.yaml` with its `lab:` section's IPv4 lines replaced by `lab4`.
    fn lab_yaml_with(lab4: &str) -> String {
        let text = include_str!("../../../inventory/lab.yaml");
        let text = text
            .replace("  internet4: 198.51.100.0/24\n", lab4)
            .replace("  hub_public4: 198.51.100.10\n", "");
        assert!(text.contains(lab4));
        text
    }

    #[test]
    fn a_lab_internet_at_the_top_of_the_address_space_is_an_error_not_an_overflow() {
        let path = std::path::Path::new("lab.yaml");
        for net in ["255.255.255.248/29", "255.255.255.252/30", "10.0.0.0/29"] {
            let text = lab_yaml_with(&format!("  internet4: {net}\n"));
            let err = super::super::parse(&text, "lab.yaml", path)
                .expect_err("no default hub address")
                .to_string();
            assert!(
                err.contains(&format!("lab internet {net} has no host address .10"))
                    && err.contains("lab.hub_public4"),
                "{net}: {err}"
            );
        }
        // A high /24 has its .10: the default works.
        let text = lab_yaml_with("  internet4: 255.255.255.0/24\n");
        let inv = super::super::parse(&text, "lab.yaml", path).expect("255.255.255.0/24 loads");
        assert_eq!(inv.lab.hub_public4, Ipv4Addr::new(255, 255, 255, 10));
    }

    #[test]
    fn lab_machines_name_managed_hosts_once() {
        let path = std::path::Path::new("lab.yaml");
        let with = |list: &str| {
            let text = include_str!("../../../inventory/lab.yaml").replace(
                "  hub_public6: 2001:db8:10::1/64\n",
                &format!("  hub_public6: 2001:db8:10::1/64\n  machines: {list}\n"),
            );
            super::super::parse(&text, "lab.yaml", path)
        };
        let inv = with("[vps, nas]").expect("machines load");
        let names: Vec<&str> = inv.lab.machines.iter().map(|h| h.as_str()).collect();
        assert_eq!(names, ["nas", "vps"]);
        assert!(with("[]").unwrap().lab.machines.is_empty());

        // The line of `machines:` in lab.yaml, for the expected locations.
        let line = include_str!("../../../inventory/lab.yaml")
            .lines()
            .position(|l| l.starts_with("  hub_public6:"))
            .unwrap()
            + 2;
        let err = with("[vps, nsa]").unwrap_err().to_string();
        assert!(
            err.contains(&format!("lab.yaml:{line}:19"))
                && err.contains("lab machine \"nsa\" is not a host of the inventory")
                && err.contains("did you mean `nas`?"),
            "{err}"
        );
        let err = with("[phone]").unwrap_err().to_string();
        assert!(
            err.contains(&format!("lab.yaml:{line}:14"))
                && err.contains("lab machine `phone` has no `ssh:` target"),
            "{err}"
        );
        let err = with("[vps, vps]").unwrap_err().to_string();
        assert!(
            err.contains(&format!("lab.yaml:{line}:19"))
                && err.contains("lab machine `vps` is named twice"),
            "{err}"
        );
    }

    #[test]
    fn ssh_targets() {
        assert_eq!(
            parse_ssh_target("root@vps").unwrap().to_string(),
            "root@vps"
        );
        assert_eq!(parse_ssh_target("a@b.c:2222").unwrap().port, Some(2222));
        for bad in [
            "root@",
            "@h",
            "r@h:0",
            "r@h;reboot",
            "r@$(id)",
            "r@-oProxyCommand=x",
            "-oProxyCommand=x",
            "r@h:x",
            "r@vрs",
        ] {
            assert!(parse_ssh_target(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn the_sweep_finds_exactly_the_pairs_a_nested_loop_finds(
            nets in proptest::collection::vec((0u32..64, 24u8..=32, any::<bool>()), 0..40)
        ) {
            // Small address space, so overlaps are common; IPv4 and IPv6 mixed.
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, len, v6)| {
                    let a = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + a * 8;
                    if v6 {
                        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(u128::from(a)), len + 96).unwrap().trunc())
                    } else {
                        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc())
                    }
                })
                .collect();
            let mut naive = Vec::new();
            for j in 0..nets.len() {
                for i in 0..j {
                    if nets[i].addr().is_ipv6() == nets[j].addr().is_ipv6() && overlaps(nets[i], nets[j]) {
                        naive.push((i, j));
                    }
                }
            }
            prop_assert_eq!(overlapping_pairs(nets.into_iter()), naive);
        }

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
