//! `meshctl import`: infer an inventory from the live state of hosts of a network built by hand
//! (one read-only gather each). Pure: it reads gathered [`LiveHost`]s — the WireGuard interface
//! as the kernel shows it and the wg-quick config as gathered, key values already blanked on the
//! host — and writes the inventory's text, the public keys to pin, and the list of everything it
//! could not map. It guesses nothing silently: whatever it had to assume is written into the
//! file as a `# CHECK:` comment and listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::keys::PinnedKeys;
use crate::names::{HostName, WgKey};
use crate::state::LiveHost;

/// One gathered host: the name it gets, where meshctl logs in, and what the gather saw.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The inventory name (from the `--host` target).
    pub name: HostName,
    /// The `--host` target as given, `user@host[:port]`.
    pub ssh: String,
    /// The gather's result.
    pub live: LiveHost,
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The inventory, commented.
    pub yaml: String,
    /// The managed hosts' public keys, for `<inventory>.keys.yaml`.
    pub pins: PinnedKeys,
    /// What could not be mapped or had to be assumed (also `# CHECK:` comments in the file).
    pub unmapped: Vec<String>,
}

/// Why no inventory could be inferred at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// No gathered host has the interface with a listen port and peers.
    #[error(
        "no hub: none of the hosts has {interface} with a listen port and peers (give the hub with --host, or the interface with --interface)"
    )]
    NoHub {
        /// The interface looked for.
        interface: String,
    },
    /// The hub's interface has no IPv4 address, so the VPN's range is unknown.
    #[error("{host}: {interface} has no IPv4 address, so the VPN's range is unknown")]
    NoRange {
        /// The hub.
        host: String,
        /// Its interface.
        interface: String,
    },
}

/// One `[Peer]` (or `[Interface]`) section of a wg-quick config, with the comments above it.
#[derive(Debug, Clone, Default)]
struct Section {
    comments: Vec<String>,
    keys: Vec<(String, String)>,
}

impl Section {
    fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// A wg-quick config: its `[Interface]` and its `[Peer]`s. Comments directly above a section
/// header, or inside it before its first key, belong to it.
#[derive(Debug, Clone, Default)]
struct Conf {
    interface: Section,
    peers: Vec<Section>,
}

fn parse_conf(text: &str) -> Conf {
    let mut conf = Conf::default();
    let mut pending: Vec<String> = Vec::new();
    let mut current: Option<Section> = None;
    let mut in_interface = false;
    let flush = |conf: &mut Conf, s: Option<Section>, iface: bool| {
        if let Some(s) = s {
            if iface {
                conf.interface = s;
            } else {
                conf.peers.push(s);
            }
        }
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(c) = l.strip_prefix('#') {
            let c = c.trim_start_matches('#').trim();
            if !c.is_empty() {
                match &mut current {
                    Some(s) if s.keys.is_empty() => s.comments.push(c.to_owned()),
                    _ => pending.push(c.to_owned()),
                }
            }
            continue;
        }
        if l.is_empty() {
            continue;
        }
        if l.eq_ignore_ascii_case("[interface]") || l.eq_ignore_ascii_case("[peer]") {
            flush(&mut conf, current.take(), in_interface);
            in_interface = l.eq_ignore_ascii_case("[interface]");
            current = Some(Section {
                comments: std::mem::take(&mut pending),
                keys: Vec::new(),
            });
            continue;
        }
        if let (Some(s), Some((k, v))) = (&mut current, l.split_once('=')) {
            // A comment after the section's first key is about the next section.
            pending.clear();
            s.keys.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    flush(&mut conf, current, in_interface);
    conf
}

/// The word after `flag` in a `PostUp`-style command line (`-o eth0` → `eth0`).
fn word_after<'a>(line: &'a str, flag: &str) -> Option<&'a str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == flag)
        .and_then(|i| words.get(i + 1).copied())
}

/// A name for an unmanaged peer from its config comment: lowercase, allowlisted characters.
fn name_from_comment(comments: &[String]) -> Option<HostName> {
    let c = comments.last()?;
    let word: String = c
        .trim_start_matches(|ch: char| !ch.is_ascii_alphanumeric())
        .to_ascii_lowercase()
        .chars()
        .map(|ch| {
            if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
                ch
            } else {
                '-'
            }
        })
        .collect();
    let word = word.split("--").next().unwrap_or("").trim_matches('-');
    let word: String = word.chars().take(63).collect();
    HostName::parse(word.trim_end_matches('-')).ok()
}

/// YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct HostOut {
    name: HostName,
    lines: Vec<String>,
}

/// Infers the inventory of the network `hosts` belong to; `interface` is the WireGuard
/// interface gathered (wg0 unless `--interface`).
pub fn infer(hosts: &[Observed], interface: &str) -> Result<Imported, ImportError> {
    let mut unmapped = Vec::new();
    let conf_path = crate::persist::conf_path(interface);
    let confs: BTreeMap<&HostName, Conf> = hosts
        .iter()
        .map(|h| {
            let text = h
                .live
                .state
                .files
                .get(&conf_path)
                .map(|f| f.content.as_str())
                .unwrap_or("");
            (&h.name, parse_conf(text))
        })
        .collect();
    for h in hosts {
        if h.live.state.interface.is_none() {
            unmapped.push(format!(
                "{}: has no {interface}; left out (not part of this network?)",
                h.name
            ));
        }
    }
    let with_if: Vec<&Observed> = hosts
        .iter()
        .filter(|h| h.live.state.interface.is_some())
        .collect();
    let iface = |h: &Observed| h.live.state.interface.clone().expect("filtered");
    // The hub: a listen port and the most peers.
    let hub = with_if
        .iter()
        .filter(|h| iface(h).listen_port.is_some() && !iface(h).peers.is_empty())
        .max_by_key(|h| iface(h).peers.len())
        .copied()
        .ok_or_else(|| ImportError::NoHub {
            interface: interface.to_owned(),
        })?;
    let hub_if = iface(hub);
    let hub_conf = &confs[&hub.name];
    let hub_v4 = hub_if
        .addresses
        .iter()
        .find_map(|a| match a {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .ok_or_else(|| ImportError::NoRange {
            host: hub.name.to_string(),
            interface: interface.to_owned(),
        })?;
    let vpn4 = hub_v4.trunc();
    let hub_v6: Option<Ipv6Net> = hub_if.addresses.iter().find_map(|a| match a {
        IpNet::V6(n) if !is_link_local(n.addr()) => Some(*n),
        _ => None,
    });
    let clients6 = hub_v6.map(|n| n.trunc());
    let prefix6 = clients6.map(|c| {
        Ipv6Net::new(c.addr(), 64.min(c.prefix_len()))
            .expect("valid prefix")
            .trunc()
    });

    // Every gathered host's key, so the hub's peers can be told apart.
    let by_key: BTreeMap<WgKey, &Observed> = with_if
        .iter()
        .filter_map(|h| iface(h).public_key.map(|k| (k, *h)))
        .collect();
    let mut pins = PinnedKeys::default();
    for (k, h) in &by_key {
        pins.keys.insert(h.name.clone(), k.clone());
    }
    // The hub's peers, with their config sections (by public key).
    let hub_sections: BTreeMap<String, &Section> = hub_conf
        .peers
        .iter()
        .filter_map(|s| s.get("PublicKey").map(|k| (k.to_owned(), s)))
        .collect();

    let mut mtu = hub_conf
        .interface
        .get("MTU")
        .and_then(|v| v.parse::<u16>().ok());
    let mut dns: BTreeSet<IpAddr> = BTreeSet::new();
    let mut endpoint: Option<String> = None;
    for h in &with_if {
        if h.name == hub.name {
            continue;
        }
        let c = &confs[&h.name];
        if mtu.is_none() {
            mtu = c.interface.get("MTU").and_then(|v| v.parse().ok());
        }
        for d in c.interface.all("DNS") {
            for part in d.split(',') {
                if let Ok(a) = part.trim().parse::<IpAddr>() {
                    dns.insert(a);
                }
            }
        }
        if endpoint.is_none() {
            endpoint = c
                .peers
                .iter()
                .find_map(|p| p.get("Endpoint"))
                .map(|e| e.rsplit_once(':').map_or(e, |(host, _)| host))
                .map(|e| e.trim_matches(['[', ']']).to_owned());
        }
    }
    let listen_port = hub_if.listen_port.unwrap_or(51820);
    let endpoint = endpoint.unwrap_or_else(|| {
        let host = hub.ssh.rsplit('@').next().unwrap_or(&hub.ssh);
        let host = host.split(':').next().unwrap_or(host).to_owned();
        unmapped.push(format!(
            "{}: endpoint: no host's config has an Endpoint; assumed the SSH host {host}",
            hub.name
        ));
        host
    });

    // The hub's WAN interface and NAT, from the config's PostUp lines.
    let post_up: Vec<&str> = hub_conf.interface.all("PostUp").collect();
    let masq = post_up.iter().find(|l| l.contains("MASQUERADE"));
    let wan = masq
        .and_then(|l| word_after(l, "-o"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            unmapped.push(format!(
                "{}: wan_interface: not in the config's PostUp lines; assumed eth0",
                hub.name
            ));
            "eth0".into()
        });

    let mut outs: Vec<HostOut> = Vec::new();
    let mut lans: Vec<(HostName, Ipv4Net)> = Vec::new();
    let mut seen_v4: BTreeSet<Ipv4Addr> = BTreeSet::new();
    // The hub.
    {
        let mut l = vec![
            "    role: hub".to_owned(),
            format!("    ssh: {}", q(&hub.ssh)),
            format!("    address: {}", hub_v4.addr()),
            format!(
                "    endpoint: {}           # what the others dial",
                q(&endpoint)
            ),
            format!("    wan_interface: {}", q(&wan)),
            format!(
                "    nat: {}                     # {}",
                masq.is_some(),
                if masq.is_some() {
                    "a MASQUERADE rule was in PostUp"
                } else {
                    "no MASQUERADE rule in PostUp"
                }
            ),
        ];
        if let Some(v6) = hub_v6 {
            l.push(format!("    ipv6_address: {}", v6.addr()));
        }
        seen_v4.insert(hub_v4.addr());
        outs.push(HostOut {
            name: hub.name.clone(),
            lines: l,
        });
    }
    // Managed hosts other than the hub, matched to the hub's peers by key.
    let mut mapped_keys: BTreeSet<WgKey> = BTreeSet::new();
    if let Some(k) = &hub_if.public_key {
        mapped_keys.insert(k.clone());
    }
    for h in &with_if {
        if h.name == hub.name {
            continue;
        }
        let i = iface(h);
        let Some(v4) = i.addresses.iter().find_map(|a| match a {
            IpNet::V4(n) if vpn4.contains(&n.addr()) => Some(n.addr()),
            _ => None,
        }) else {
            unmapped.push(format!(
                "{}: {interface} has no address in {vpn4}; left out",
                h.name
            ));
            continue;
        };
        let v6 = i.addresses.iter().find_map(|a| match a {
            IpNet::V6(n) if clients6.is_some_and(|c| c.contains(&n.addr())) => Some(n.addr()),
            _ => None,
        });
        let key = i.public_key.clone();
        let on_hub = key.as_ref().and_then(|k| {
            hub_if
                .peers
                .values()
                .find(|p| p.public_key.as_ref() == Some(k))
        });
        if on_hub.is_none() {
            unmapped.push(format!(
                "{}: the hub has no peer with its key; written as a client, apply will add it",
                h.name
            ));
        }
        if let Some(k) = key {
            mapped_keys.insert(k);
        }
        // Its own peer towards the hub: keepalive and tunnel.
        let to_hub = i
            .peers
            .values()
            .find(|p| p.public_key.is_some() && p.public_key == hub_if.public_key);
        let keepalive = to_hub.and_then(|p| p.persistent_keepalive);
        let full = to_hub.is_some_and(|p| {
            p.allowed_ips
                .iter()
                .any(|n| matches!(n, IpNet::V4(n) if n.prefix_len() == 0))
        });
        let lan: Option<Ipv4Net> = on_hub.and_then(|p| {
            p.allowed_ips.iter().find_map(|n| match n {
                IpNet::V4(n) if n.prefix_len() < 32 && !vpn4.contains(n) && n.prefix_len() > 0 => {
                    Some(n.trunc())
                }
                _ => None,
            })
        });
        let mut l = Vec::new();
        match lan {
            Some(subnet) => {
                l.push("    role: gateway".to_owned());
                l.push(format!("    ssh: {}", q(&h.ssh)));
                l.push(format!("    address: {v4}"));
                let ssh_host = h.ssh.rsplit('@').next().unwrap_or("");
                let ssh_host = ssh_host.split(':').next().unwrap_or("");
                let lan_addr = ssh_host
                    .parse::<Ipv4Addr>()
                    .ok()
                    .filter(|a| subnet.contains(a));
                let post: Vec<&str> = confs[&h.name].interface.all("PostUp").collect();
                let lan_if = post
                    .iter()
                    .find_map(|p| word_after(p, "-o").filter(|w| *w != interface))
                    .map(str::to_owned);
                l.push("    lan:".to_owned());
                l.push(format!("      subnet: {subnet}"));
                // An IPv6 prefix the hub routes to it, outside the clients' range: its LAN's.
                let lan6 = on_hub.and_then(|p| {
                    p.allowed_ips.iter().find_map(|n| match n {
                        IpNet::V6(n)
                            if n.prefix_len() > 0
                                && n.prefix_len() < 128
                                && !clients6.is_some_and(|c| c.contains(&n.addr())) =>
                        {
                            Some(n.trunc())
                        }
                        _ => None,
                    })
                });
                match (lan6, clients6) {
                    (Some(p6), Some(_)) => l.push(format!("      ipv6_prefix: {p6}")),
                    (Some(p6), None) => unmapped.push(format!(
                        "{}: the hub routes {p6} to it, but the network has no IPv6 range; left out",
                        h.name
                    )),
                    _ => {}
                }
                match &lan_if {
                    Some(li) => l.push(format!("      interface: {}", q(li))),
                    None => {
                        l.push(
                            "      interface: eth0          # CHECK: assumed; the NAS's interface on the LAN"
                                .to_owned(),
                        );
                        unmapped.push(format!(
                            "{}: lan.interface: not seen (the gather reads no foreign routes or interfaces); assumed eth0",
                            h.name
                        ));
                    }
                }
                match lan_addr {
                    Some(a) => l.push(format!("      address: {a}")),
                    None => {
                        let guess = subnet.hosts().next().unwrap_or(subnet.addr());
                        l.push(format!(
                            "      address: {guess}   # CHECK: placeholder; the NAS's own address on the LAN"
                        ));
                        unmapped.push(format!(
                            "{}: lan.address: not seen; written as {guess}, set the NAS's address on {subnet}",
                            h.name
                        ));
                    }
                }
                lans.push((h.name.clone(), subnet));
            }
            None => {
                l.push("    role: client".to_owned());
                l.push(format!("    ssh: {}", q(&h.ssh)));
                l.push(format!("    address: {v4}"));
                l.push(format!(
                    "    tunnel: {}",
                    if full { "full" } else { "split" }
                ));
            }
        }
        match keepalive {
            Some(k) => l.push(format!("    keepalive: {k}")),
            None => unmapped.push(format!(
                "{}: no persistent keepalive towards the hub; meshctl's default (25 s) is written by apply",
                h.name
            )),
        }
        push_v6(&mut l, v6, clients6.is_some());
        seen_v4.insert(v4);
        outs.push(HostOut {
            name: h.name.clone(),
            lines: l,
        });
    }
    // Peers only the hub knows: unmanaged clients (phones).
    let mut taken: BTreeSet<HostName> = outs.iter().map(|o| o.name.clone()).collect();
    let mut n = 0;
    let mut unmanaged: Vec<HostOut> = Vec::new();
    for p in hub_if.peers.values() {
        let Some(k) = &p.public_key else { continue };
        if mapped_keys.contains(k) {
            continue;
        }
        let Some(v4) = p.allowed_ips.iter().find_map(|a| match a {
            IpNet::V4(n) if n.prefix_len() == 32 && vpn4.contains(&n.addr()) => Some(n.addr()),
            _ => None,
        }) else {
            unmapped.push(format!(
                "the hub's peer {k}: no /32 in {vpn4} among its AllowedIPs; left out (plan will show its removal: add it by hand)"
            ));
            continue;
        };
        if !seen_v4.insert(v4) {
            unmapped.push(format!(
                "the hub's peer {k}: {v4} is another host's address; left out"
            ));
            continue;
        }
        let comments = hub_sections
            .get(k.as_str())
            .map(|s| s.comments.clone())
            .unwrap_or_default();
        let name = name_from_comment(&comments)
            .filter(|n| !taken.contains(n))
            .unwrap_or_else(|| {
                loop {
                    n += 1;
                    let cand = HostName::parse(&format!("peer-{n}")).expect("valid");
                    if !taken.contains(&cand) {
                        break cand;
                    }
                }
            });
        taken.insert(name.clone());
        let v6 = p.allowed_ips.iter().find_map(|a| match a {
            IpNet::V6(n)
                if n.prefix_len() == 128 && clients6.is_some_and(|c| c.contains(&n.addr())) =>
            {
                Some(n.addr())
            }
            _ => None,
        });
        let extra: Vec<String> = p
            .allowed_ips
            .iter()
            .filter(|a| match a {
                IpNet::V4(n) => !(n.prefix_len() == 32 && vpn4.contains(&n.addr())),
                IpNet::V6(n) => !(n.prefix_len() == 128 && Some(n.addr()) == v6),
            })
            .map(ToString::to_string)
            .collect();
        if !extra.is_empty() {
            unmapped.push(format!(
                "{name}: the hub also routes {} to it; an unmanaged client carries no LAN",
                extra.join(", ")
            ));
        }
        let mut l = vec![
            "    role: client                 # unmanaged: only in the hub's config".to_owned(),
            format!("    address: {v4}"),
            format!("    public_key: {}", q(k.as_str())),
            "    tunnel: split                # CHECK: its own config is not seen".to_owned(),
        ];
        unmapped.push(format!(
            "{name}: an unmanaged peer; its tunnel (split or full) is on the device, written as split"
        ));
        push_v6(&mut l, v6, clients6.is_some());
        unmanaged.push(HostOut { name, lines: l });
    }
    outs.extend(unmanaged);
    if clients6.is_some() {
        unmapped.push(format!(
            "network.ipv6: the clients' range {} is the hub's {interface} address; the provider's prefix {} and mode on-link are assumed",
            clients6.map(|c| c.to_string()).unwrap_or_default(),
            prefix6.map(|c| c.to_string()).unwrap_or_default()
        ));
    }
    if !lans.is_empty() {
        unmapped.push(
            "routers: the home routers are not seen; add each under `routers:` to get its manual route printed".to_owned(),
        );
    }

    // The text.
    let mut y = String::new();
    y.push_str(
        "# Imported by `meshctl import` from the live state of the hosts below (read only).\n",
    );
    y.push_str("# Lines marked CHECK were assumed: read them before `meshctl plan`.\n");
    y.push_str("network:\n  name: imported\n");
    let _ = writeln!(y, "  interface: {}", q(interface));
    let _ = writeln!(y, "  listen_port: {listen_port}");
    let _ = writeln!(y, "  ipv4: {vpn4}");
    if let (Some(p), Some(c)) = (prefix6, clients6) {
        y.push_str("  ipv6:\n");
        let _ = writeln!(
            y,
            "    prefix: {p}          # CHECK: assumed the /64 around the clients"
        );
        let _ = writeln!(y, "    clients: {c}");
        y.push_str(
            "    mode: on-link              # CHECK: routed if the provider routes it to the hub\n",
        );
    }
    if !dns.is_empty() {
        let d: Vec<String> = dns.iter().map(ToString::to_string).collect();
        let _ = writeln!(y, "  dns: [{}]", d.join(", "));
    }
    if let Some(m) = mtu {
        let _ = writeln!(y, "  mtu: {m}");
    }
    y.push_str("\nhosts:\n");
    for o in &outs {
        let _ = writeln!(y, "  {}:", o.name);
        for l in &o.lines {
            y.push_str(l);
            y.push('\n');
        }
    }
    if !unmapped.is_empty() {
        y.push_str("\n# Not mapped or assumed:\n");
        for u in &unmapped {
            let _ = writeln!(y, "#   - {}", u.replace('\n', " "));
        }
    }
    Ok(Imported {
        yaml: y,
        pins,
        unmapped,
    })
}

fn push_v6(l: &mut Vec<String>, v6: Option<Ipv6Addr>, network_has_v6: bool) {
    match v6 {
        Some(a) => l.push(format!("    ipv6_address: {a}")),
        None if network_has_v6 => l.push("    public_ipv6: false".to_owned()),
        None => {}
    }
}

fn is_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_comments_name_sections() {
        let c = parse_conf(
            "[Interface]\nAddress = 10.8.0.1/24\nPrivateKey = \nListenPort = 51820\n\n# Anna's Phone\n[Peer]\nPublicKey = AAA\nAllowedIPs = 10.8.0.11/32\n\n[Peer]\n# tablet\nPublicKey = BBB\n\n[Peer]\nPublicKey = CCC\n",
        );
        assert_eq!(c.interface.get("ListenPort"), Some("51820"));
        assert_eq!(c.peers.len(), 3);
        let names: Vec<Option<String>> = c
            .peers
            .iter()
            .map(|p| name_from_comment(&p.comments).map(|n| n.to_string()))
            .collect();
        assert_eq!(
            names,
            vec![Some("anna-s-phone".into()), Some("tablet".into()), None]
        );
    }

    #[test]
    fn post_up_words() {
        let l = "iptables -t nat -A POSTROUTING -s 10.8.0.0/24 -o ens3 -j MASQUERADE";
        assert_eq!(word_after(l, "-o"), Some("ens3"));
        assert_eq!(word_after("x -o", "-o"), None);
    }
}
