//! The desired state of every managed host, computed from the inventory, the roles and the
//! pinned public keys. Pure: no I/O, the same input always gives the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::inventory::{Host, Inventory, Ipv6Mode, Network, Role, Tunnel};
use crate::keys::PinnedKeys;
use crate::names::{HostName, InterfaceName};
use crate::persist;
use crate::policy;
use crate::psk;
use crate::roles::{Condition, Placeholder, Roles};
use crate::state::{
    ChainId, Family, HostState, Jump, KeyFile, NdpProxy, Peer, Psk, RULE_PRIORITY_SUPPRESS,
    RULE_PRIORITY_TUNNEL, Route, RoutingRule, RuleKind, ServiceState, TUNNEL_TABLE, WgInterface,
};

/// The desired state of one host plus what gathering it needs to know.
#[derive(Debug, Clone)]
pub struct Desired {
    /// What meshctl wants on the host: interface, peers, routes, sysctls, firewall, files.
    pub state: HostState,
    /// Endpoint names the host must resolve so a name compares with a live address.
    pub resolve: Vec<String>,
    /// NDP proxy entries inside this range are meshctl's.
    pub ndp_range: Option<Ipv6Net>,
    /// Peers left out, and why (an unmanaged client whose key is not known yet).
    pub notes: Vec<String>,
}

/// The desired state of every managed host, for a plan: a managed peer whose key is not
/// pinned yet is in it, its key "known after apply".
pub fn all(inv: &Inventory, roles: &Roles, keys: &PinnedKeys) -> BTreeMap<HostName, Desired> {
    all_hosts(inv, roles, keys, None)
}

/// The desired state of every managed host, for applying: every peer needs its key, so one
/// whose key is still unknown (its host could not be prepared) is left out, with a note.
pub fn all_with_known_keys(
    inv: &Inventory,
    roles: &Roles,
    keys: &PinnedKeys,
) -> BTreeMap<HostName, Desired> {
    all_hosts(inv, roles, keys, Some(&BTreeSet::new()))
}

/// [`all_with_known_keys`], except that the hosts in `later` are peers with their key "known
/// after apply": they were prepared, but have no `wg` yet, so their key is made after their
/// packages are installed (and filled in before any host's changes run).
pub fn all_for_apply(
    inv: &Inventory,
    roles: &Roles,
    keys: &PinnedKeys,
    later: &BTreeSet<HostName>,
) -> BTreeMap<HostName, Desired> {
    all_hosts(inv, roles, keys, Some(later))
}

/// `keys_required`: `None`, a peer without a key is in the state (its key known after apply);
/// `Some(later)`, it is left out unless it is in `later`.
fn all_hosts(
    inv: &Inventory,
    roles: &Roles,
    keys: &PinnedKeys,
    keys_required: Option<&BTreeSet<HostName>>,
) -> BTreeMap<HostName, Desired> {
    let shared = Shared::of(inv);
    inv.hosts
        .values()
        .filter(|h| h.is_managed())
        .map(|h| {
            (
                h.name.clone(),
                for_host_with(inv, roles, keys, h, &shared, keys_required),
            )
        })
        .collect()
}

/// The key file of an interface.
pub fn key_path(wg: &InterfaceName) -> String {
    format!("/etc/wireguard/{wg}.key")
}

/// Where a key rotation keeps the new private key until the switch (beside the key file, the
/// old key staying in place until then).
pub fn next_key_path(key_path: &str) -> String {
    format!("{key_path}.next")
}

/// What every host's desired state needs from the whole inventory, computed once (so a hub
/// with thousands of peers costs one pass, not one per host).
pub struct Shared<'a> {
    hub: (&'a Host, &'a crate::inventory::Hub),
    lans: Vec<Ipv4Net>,
    lans6: Vec<Ipv6Net>,
}

impl<'a> Shared<'a> {
    /// Looks up the hub and the home LANs of `inv`.
    pub fn of(inv: &'a Inventory) -> Self {
        Self {
            hub: inv.hub(),
            lans: inv.lans().iter().map(|(_, l)| l.subnet).collect(),
            lans6: inv
                .lans()
                .iter()
                .filter_map(|(_, l)| l.ipv6_prefix)
                .collect(),
        }
    }
}

/// The desired state of `host`.
pub fn for_host(inv: &Inventory, roles: &Roles, keys: &PinnedKeys, host: &Host) -> Desired {
    for_host_with(inv, roles, keys, host, &Shared::of(inv), None)
}

fn for_host_with(
    inv: &Inventory,
    roles: &Roles,
    keys: &PinnedKeys,
    host: &Host,
    shared: &Shared<'_>,
    keys_required: Option<&BTreeSet<HostName>>,
) -> Desired {
    let required = |h: &HostName| keys_required.is_some_and(|later| !later.contains(h));
    let net = &inv.network;
    let wg = &net.interface;
    let (hub, hub_role) = shared.hub;
    let mut notes = Vec::new();

    let addresses = addresses(net, host);

    let lans = HostLans::of(net, host, shared);
    let HostLans {
        all4: all_lans,
        own4: own_lan,
        remote4: remote_lans,
        all6: all_lans6,
        own6: own_lan6,
        remote6: remote_lans6,
    } = &lans;

    let mut peers = BTreeMap::new();
    let mut resolve = Vec::new();
    if matches!(host.role, Role::Hub(_)) {
        for other in inv.hosts.values().filter(|o| o.name != host.name) {
            let key = keys.get(&other.name).cloned();
            if key.is_none() && !other.is_managed() {
                notes.push(format!(
                    "peer {} left out: its public key is not known yet (run `meshctl client {}`)",
                    other.name, other.name
                ));
                continue;
            }
            if key.is_none() && required(&other.name) {
                notes.push(unknown_key_note(&other.name));
                continue;
            }
            let allowed: BTreeSet<IpNet> = policy::sources(inv, other).into_iter().collect();
            peers.insert(
                other.name.to_string(),
                Peer {
                    public_key: key,
                    allowed_ips: allowed,
                    endpoint: None,
                    persistent_keepalive: None,
                    preshared_key: inv
                        .has_psk(other)
                        .then(|| Psk::File(psk::path(&other.name))),
                },
            );
        }
    } else {
        let allowed: BTreeSet<IpNet> =
            policy::narrow(inv, host, allowed_ips_via_hub(net, host, &lans))
                .into_iter()
                .collect();
        if hub_role.endpoint.parse::<IpAddr>().is_err() {
            resolve.push(hub_role.endpoint.clone());
        }
        if required(&hub.name) && keys.get(&hub.name).is_none() {
            notes.push(unknown_key_note(&hub.name));
        } else {
            peers.insert(
                hub.name.to_string(),
                Peer {
                    public_key: keys.get(&hub.name).cloned(),
                    allowed_ips: allowed,
                    endpoint: Some(endpoint_string(&hub_role.endpoint, net.listen_port)),
                    persistent_keepalive: host.keepalive,
                    preshared_key: inv.has_psk(host).then(|| Psk::File(psk::path(&hub.name))),
                },
            );
        }
    }

    let interface = WgInterface {
        name: wg.clone(),
        addresses,
        listen_port: matches!(host.role, Role::Hub(_)).then_some(net.listen_port),
        public_key: keys.get(&host.name).cloned(),
        private_key_file: KeyFile { path: key_path(wg) },
        peers,
        fwmark: None,
    };

    // Values for the role's placeholders and conditions.
    let strings = |v: &[Ipv4Net]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let strings6 = |v: &[Ipv6Net]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let wg_v = vec![wg.to_string()];
    let port_v = vec![net.listen_port.to_string()];
    let wan_v: Vec<String> = match &host.role {
        Role::Hub(h) => vec![h.wan_interface.to_string()],
        _ => vec![],
    };
    let vpn4_v = vec![net.ipv4.to_string()];
    let clients6_v: Vec<String> = net.ipv6.iter().map(|p| p.clients.to_string()).collect();
    let (lan4_v, own_lan4_v, remote_lan4_v) =
        (strings(all_lans), strings(own_lan), strings(remote_lans));
    let (lan6_v, own_lan6_v, remote_lan6_v) = (
        strings6(all_lans6),
        strings6(own_lan6),
        strings6(remote_lans6),
    );
    // The reachability policy's rules: on the hub per restricted source, on a gateway for
    // its own LAN; none without `allow:` lists.
    let (policy4_v, policy6_v) = match &host.role {
        Role::Hub(h) => (
            policy::hub_rules(inv, Family::Ipv4, wg, &h.wan_interface),
            policy::hub_rules(inv, Family::Ipv6, wg, &h.wan_interface),
        ),
        Role::Gateway(_) => {
            let own: Vec<IpNet> = own_lan
                .iter()
                .map(|l| IpNet::V4(*l))
                .chain(own_lan6.iter().map(|l| IpNet::V6(*l)))
                .collect();
            (
                policy::gateway_rules(inv, host, Family::Ipv4, wg, &own),
                policy::gateway_rules(inv, host, Family::Ipv6, wg, &own),
            )
        }
        Role::Client(_) => (vec![], vec![]),
    };
    let value = |p: Placeholder| -> &[String] {
        match p {
            Placeholder::Wg => &wg_v,
            Placeholder::Port => &port_v,
            Placeholder::Wan => &wan_v,
            Placeholder::Vpn4 => &vpn4_v,
            Placeholder::Clients6 => &clients6_v,
            Placeholder::Lan4 => &lan4_v,
            Placeholder::Lan6 => &lan6_v,
            Placeholder::OwnLan4 => &own_lan4_v,
            Placeholder::RemoteLan4 => &remote_lan4_v,
            Placeholder::OwnLan6 => &own_lan6_v,
            Placeholder::RemoteLan6 => &remote_lan6_v,
            Placeholder::Policy4 => &policy4_v,
            Placeholder::Policy6 => &policy6_v,
        }
    };
    let full_tunnel = matches!(&host.role, Role::Client(c) if c.tunnel == Tunnel::Full);
    let holds = |when: Option<Condition>| -> bool {
        let Some(w) = when else { return true };
        match w {
            Condition::Ipv6 => net.ipv6.is_some(),
            Condition::Ipv6OnLink => net
                .ipv6
                .as_ref()
                .is_some_and(|p| p.mode == Ipv6Mode::OnLink),
            Condition::WanAcceptsRa => matches!(&host.role, Role::Hub(h) if h.wan_accepts_ra),
            Condition::Nat => matches!(&host.role, Role::Hub(h) if h.nat),
            Condition::HasIpv6 => host.ipv6.is_some(),
            Condition::SplitTunnel => !full_tunnel,
            Condition::FullTunnel => full_tunnel,
            Condition::HasLan6 => !own_lan6.is_empty(),
        }
    };

    let role = roles.get(host.role.name());
    let mut state = HostState::default();
    for s in role.sysctls.iter().filter(|s| holds(s.when)) {
        for key in s.key.expand(value) {
            for v in s.value.expand(value) {
                state.sysctls.insert(key.clone(), v);
            }
        }
    }
    for r in role.routes.iter().filter(|r| holds(r.when)) {
        for to in r.to.expand(value) {
            for dev in r.dev.expand(value) {
                if let (Ok(destination), Ok(device)) =
                    (to.parse::<IpNet>(), InterfaceName::parse(&dev))
                {
                    state.routes.insert(Route {
                        destination,
                        device,
                        via: None,
                        table: None,
                    });
                }
            }
        }
    }
    // A restricted host routes into the tunnel only what its one peer's AllowedIPs (narrowed
    // by the policy) carry; the VPN range is on-link through the interface's own address.
    if host.allow.is_some()
        && !matches!(host.role, Role::Hub(_))
        && let Some(peer) = interface.peers.get(hub.name.as_str())
    {
        state.routes.retain(|r| &r.device != wg);
        for n in peer
            .allowed_ips
            .iter()
            .filter(|n| !IpNet::V4(net.ipv4).contains(*n))
        {
            state.routes.insert(Route {
                destination: *n,
                device: wg.clone(),
                via: None,
                table: None,
            });
        }
    }
    for c in role.chains.iter().filter(|c| holds(c.when)) {
        let id = ChainId {
            family: c.family,
            table: c.table.clone(),
            chain: c.chain.clone(),
        };
        let rules: Vec<String> = c.rules.iter().flat_map(|r| r.expand(value)).collect();
        state.firewall.chains.entry(id).or_default().extend(rules);
        state.firewall.jumps.insert(Jump {
            family: c.family,
            table: c.table.clone(),
            from: c.from.clone(),
            to: c.chain.clone(),
        });
    }

    let ndp_range = match (&host.role, &net.ipv6) {
        (Role::Hub(h), Some(plan)) if plan.mode == Ipv6Mode::OnLink => {
            for other in inv.hosts.values() {
                if let Some(a) = other.ipv6 {
                    state.ndp_proxies.insert(NdpProxy {
                        address: a,
                        device: h.wan_interface.clone(),
                    });
                }
            }
            Some(plan.clients)
        }
        // Elsewhere meshctl makes no NDP proxy entries, so none are its own.
        _ => None,
    };

    let mut interface = interface;
    route_defaults_through_tunnel(&mut state, &mut interface);
    state.interface = Some(interface);
    state.services.insert(
        format!("wg-quick@{wg}"),
        ServiceState {
            enabled: true,
            active: true,
        },
    );
    state.files = persist::files(&state, inv);
    Desired {
        state,
        resolve,
        ndp_range,
        notes,
    }
}

/// The addresses of `host` on the WireGuard interface: the hub holds the clients' IPv6 range
/// (so it routes it there), every other host its own /128.
pub fn addresses(net: &Network, host: &Host) -> BTreeSet<IpNet> {
    let mut addresses = BTreeSet::new();
    addresses.insert(IpNet::V4(
        Ipv4Net::new(host.address, net.ipv4.prefix_len()).expect("valid prefix"),
    ));
    if let (Some(v6), Some(plan)) = (host.ipv6, &net.ipv6) {
        let len = if matches!(host.role, Role::Hub(_)) {
            plan.clients.prefix_len()
        } else {
            128
        };
        addresses.insert(IpNet::V6(Ipv6Net::new(v6, len).expect("valid prefix")));
    }
    addresses
}

/// The home LANs as one host sees them: its own (a gateway's) and the others'.
struct HostLans {
    all4: Vec<Ipv4Net>,
    own4: Vec<Ipv4Net>,
    remote4: Vec<Ipv4Net>,
    // IPv6 prefixes, routed only where the network has a public IPv6 plan.
    all6: Vec<Ipv6Net>,
    own6: Vec<Ipv6Net>,
    remote6: Vec<Ipv6Net>,
}

impl HostLans {
    fn of(net: &Network, host: &Host, shared: &Shared<'_>) -> Self {
        let all4 = shared.lans.clone();
        let own4: Vec<Ipv4Net> = match &host.role {
            Role::Gateway(g) => vec![g.lan.subnet],
            _ => vec![],
        };
        let remote4 = all4.iter().copied().filter(|l| !own4.contains(l)).collect();
        let own6: Vec<Ipv6Net> = match &host.role {
            Role::Gateway(g) if net.ipv6.is_some() => g.lan.ipv6_prefix.into_iter().collect(),
            _ => vec![],
        };
        let all6: Vec<Ipv6Net> = if net.ipv6.is_some() {
            shared.lans6.clone()
        } else {
            vec![]
        };
        let remote6 = all6.iter().copied().filter(|l| !own6.contains(l)).collect();
        Self {
            all4,
            own4,
            remote4,
            all6,
            own6,
            remote6,
        }
    }
}

/// The AllowedIPs of the one peer of a host that is not the hub: the hub, which routes the
/// VPN and the home LANs behind other gateways (or, for a full tunnel, all IPv4), and all IPv6
/// for a host with a public IPv6 address. In the order a wg-quick config lists them: the VPN,
/// then the LANs in inventory order, then IPv6.
fn allowed_ips_via_hub(net: &Network, host: &Host, lans: &HostLans) -> Vec<IpNet> {
    let mut allowed = Vec::new();
    if matches!(&host.role, Role::Client(c) if c.tunnel == Tunnel::Full) {
        allowed.push("0.0.0.0/0".parse().expect("valid"));
    } else {
        allowed.push(IpNet::V4(net.ipv4));
        allowed.extend(lans.remote4.iter().map(|l| IpNet::V4(*l)));
    }
    if host.ipv6.is_some() {
        allowed.push("::/0".parse().expect("valid"));
    } else if !lans.own6.is_empty() {
        // A gateway whose LAN has an IPv6 prefix talks to the clients' public addresses
        // and the other home LANs through the hub.
        allowed.extend(net.ipv6.iter().map(|p| IpNet::V6(p.clients)));
        allowed.extend(lans.remote6.iter().map(|l| IpNet::V6(*l)));
    }
    allowed
}

/// [`allowed_ips_via_hub`] for one host of `inv`: what `meshctl client` writes into an
/// unmanaged host's config, the same as its desired state would hold.
pub fn hub_allowed_ips(inv: &Inventory, host: &Host) -> Vec<IpNet> {
    let net = &inv.network;
    let today = allowed_ips_via_hub(net, host, &HostLans::of(net, host, &Shared::of(inv)));
    policy::narrow(inv, host, today)
}

/// A default route through the tunnel would also carry the tunnel's own packets to the hub.
/// As wg-quick does, such a route goes into its own table, which every packet *not* marked by
/// the tunnel looks up, after the main table's more specific routes (LANs, the VPN) had their
/// say. IPv4 also needs `src_valid_mark` so replies to marked packets pass reverse-path checks.
fn route_defaults_through_tunnel(state: &mut HostState, wg: &mut WgInterface) {
    let defaults: Vec<Route> = state
        .routes
        .iter()
        .filter(|r| r.destination.prefix_len() == 0 && r.table.is_none())
        .cloned()
        .collect();
    for r in defaults {
        state.routes.remove(&r);
        let family = if r.destination.addr().is_ipv6() {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        state.routes.insert(Route {
            table: Some(TUNNEL_TABLE),
            ..r
        });
        state.rules.insert(RoutingRule {
            family,
            priority: RULE_PRIORITY_SUPPRESS,
            kind: RuleKind::MainWithoutDefault,
        });
        state.rules.insert(RoutingRule {
            family,
            priority: RULE_PRIORITY_TUNNEL,
            kind: RuleKind::TunnelUnlessMarked {
                fwmark: TUNNEL_TABLE,
                table: TUNNEL_TABLE,
            },
        });
        wg.fwmark = Some(TUNNEL_TABLE);
        if family == Family::Ipv4 {
            state
                .sysctls
                .insert("net.ipv4.conf.all.src_valid_mark".into(), "1".into());
        }
    }
}

fn unknown_key_note(peer: &HostName) -> String {
    format!("peer {peer} left out: its key is not known (the host could not be prepared)")
}

/// `host:port`, with IPv6 literals bracketed as wg expects.
pub fn endpoint_string(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        // Canonical form, as the kernel prints it back.
        Ok(a) => std::net::SocketAddr::new(a, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}
