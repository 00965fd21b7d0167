//! The files that persist a host's state across a reboot, rendered from its desired state.
//!
//! The boot path is wg-quick's: `wg-quick up wg0` (enabled as `wg-quick@wg0` where systemd
//! runs) reads `/etc/wireguard/wg0.conf`, whose `PostUp` lines load the private key from its
//! 0600 file (the config never holds it) and run `/etc/meshctl/wg0-up.sh`, which restores the
//! sysctls, meshctl's routes (`Table = off`: wg-quick adds no routes of its own, so every route
//! is one meshctl owns and marks with `proto 157`), the NDP proxy entries, and meshctl's
//! firewall chains from `/etc/meshctl/rules.v4|v6` with their tagged jumps.
//!
//! An unmanaged host (a phone) gets its whole config as one file instead ([`client_conf`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use ipnet::IpNet;

use crate::desired;
use crate::inventory::{Host, Inventory};
use crate::names::WgKey;
use crate::spell;
use crate::state::{Family, HostState, ManagedFile, WgInterface};

/// The sysctl drop-in.
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/90-meshctl.conf";

/// Every path meshctl may manage for interface `wg`: gathered always, so that a file the
/// inventory no longer needs is noticed.
pub fn candidate_paths(wg: &str) -> Vec<String> {
    vec![
        conf_path(wg),
        SYSCTL_PATH.to_owned(),
        rules_path(Family::Ipv4),
        rules_path(Family::Ipv6),
        up_script_path(wg),
    ]
}

/// The wg-quick config of interface `wg`: `/etc/wireguard/<wg>.conf`.
pub fn conf_path(wg: &str) -> String {
    format!("/etc/wireguard/{wg}.conf")
}

/// The file meshctl's firewall chains of `family` are restored from at boot and by apply.
pub fn rules_path(family: Family) -> String {
    match family {
        Family::Ipv4 => "/etc/meshctl/rules.v4".to_owned(),
        Family::Ipv6 => "/etc/meshctl/rules.v6".to_owned(),
    }
}

/// The script the config's `PostUp` runs to restore routes, sysctls, NDP entries and chains.
pub fn up_script_path(wg: &str) -> String {
    format!("/etc/meshctl/{wg}-up.sh")
}

/// The files for `state` (whose interface, sysctls, routes and firewall are already set).
pub fn files(state: &HostState, inv: &Inventory) -> BTreeMap<String, ManagedFile> {
    let mut files = BTreeMap::new();
    let Some(wg) = &state.interface else {
        return files;
    };
    let name = wg.name.as_str();
    files.insert(
        conf_path(name),
        ManagedFile {
            content: wg_conf(wg, inv.network.mtu, &up_script_path(name)),
            mode: 0o600,
        },
    );
    if !state.sysctls.is_empty() {
        files.insert(
            SYSCTL_PATH.to_owned(),
            ManagedFile {
                content: sysctl_conf(state),
                mode: 0o644,
            },
        );
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        if let Some(rules) = rules_file(state, family) {
            files.insert(
                rules_path(family),
                ManagedFile {
                    content: rules,
                    mode: 0o644,
                },
            );
        }
    }
    files.insert(
        up_script_path(name),
        ManagedFile {
            content: up_script(state),
            mode: 0o755,
        },
    );
    files
}

/// `/etc/wireguard/wg0.conf`: everything but the private key, which PostUp loads from its file.
pub fn wg_conf(wg: &WgInterface, mtu: Option<u16>, up_script: &str) -> String {
    wg_conf_and_pending(wg, mtu, up_script).0
}

/// The `PublicKey =` line of a peer in a wg-quick config; `None`: known after apply.
pub fn public_key_line(key: Option<&crate::names::WgKey>) -> String {
    format!("PublicKey = {}", key_or_pending(key))
}

fn key_or_pending(key: Option<&crate::names::WgKey>) -> &str {
    key.map_or(crate::plan::KNOWN_AFTER_APPLY, |k| k.as_str())
}

/// [`wg_conf`], and the lines of it that hold a peer key known only after apply's first step
/// (a managed host without a key yet), for the plan to fill in then.
pub fn wg_conf_and_pending(
    wg: &WgInterface,
    mtu: Option<u16>,
    up_script: &str,
) -> (String, Vec<crate::plan::PendingKey>) {
    let mut pending = Vec::new();
    let mut s = String::from(
        "# Written by meshctl; changes made here are overwritten. No private key in here:\n# PostUp loads it from its 0600 file.\n[Interface]\n",
    );
    let addrs: Vec<String> = wg.addresses.iter().map(ToString::to_string).collect();
    writeln!(s, "Address = {}", addrs.join(", ")).ok();
    if let Some(p) = wg.listen_port {
        writeln!(s, "ListenPort = {p}").ok();
    }
    if let Some(m) = wg.fwmark {
        writeln!(s, "FwMark = {m}").ok();
    }
    if let Some(m) = mtu {
        writeln!(s, "MTU = {m}").ok();
    }
    s.push_str("Table = off\n");
    writeln!(
        s,
        "PostUp = wg set %i private-key {}",
        wg.private_key_file.path
    )
    .ok();
    // A preshared key never goes into the config: wg-quick has peers set from it first, then
    // these lines load each pair's key from its 0600 file.
    for (name, peer) in &wg.peers {
        if let Some(crate::state::Psk::File(path)) = &peer.preshared_key {
            note_pending(&mut pending, &s, name, peer);
            writeln!(
                s,
                "PostUp = wg set %i peer {} preshared-key {path}",
                key_or_pending(peer.public_key.as_ref())
            )
            .ok();
        }
    }
    writeln!(s, "PostUp = {up_script}").ok();
    for (name, peer) in &wg.peers {
        writeln!(s, "\n# {name}\n[Peer]").ok();
        note_pending(&mut pending, &s, name, peer);
        writeln!(s, "{}", public_key_line(peer.public_key.as_ref())).ok();
        peer_settings(
            &mut s,
            &peer.allowed_ips,
            peer.endpoint.as_deref(),
            peer.persistent_keepalive,
        );
    }
    (s, pending)
}

/// A config of [`wg_conf_and_pending`] without the peer whose pending key is on `line`: the
/// peer's block (and the blank line before it) cut out, and how many lines went; `None` when
/// `line` is not a pending peer's key line of that layout.
pub fn without_pending_peer(content: &str, line: usize) -> Option<(String, usize)> {
    let lines: Vec<&str> = content.split('\n').collect();
    let start = line.checked_sub(3)?;
    let layout = lines.get(start)?.is_empty()
        && lines.get(start + 1)?.starts_with("# ")
        && *lines.get(start + 2)? == "[Peer]"
        && lines.get(line)?.starts_with("PublicKey = ");
    if !layout {
        return None;
    }
    let end = (line + 1..lines.len()).find(|i| lines[*i].is_empty())?;
    let mut kept = lines[..start].to_vec();
    kept.extend_from_slice(&lines[end..]);
    Some((kept.join("\n"), end - start))
}

/// Records that the line about to be written after `s` holds the key of `peer`, when that key
/// is known only after apply's first step.
fn note_pending(
    pending: &mut Vec<crate::plan::PendingKey>,
    s: &str,
    name: &str,
    peer: &crate::state::Peer,
) {
    if peer.public_key.is_none()
        && let Ok(host) = crate::names::HostName::parse(name)
    {
        pending.push(crate::plan::PendingKey {
            line: s.matches('\n').count(),
            host,
        });
    }
}

/// A peer's `AllowedIPs`, `Endpoint` and `PersistentKeepalive` lines, the same in a managed
/// host's config and an unmanaged one's.
fn peer_settings<'a>(
    s: &mut String,
    allowed_ips: impl IntoIterator<Item = &'a IpNet>,
    endpoint: Option<&str>,
    keepalive: Option<u16>,
) {
    let allowed: Vec<String> = allowed_ips.into_iter().map(ToString::to_string).collect();
    writeln!(s, "AllowedIPs = {}", allowed.join(", ")).ok();
    if let Some(e) = endpoint {
        writeln!(s, "Endpoint = {e}").ok();
    }
    if let Some(k) = keepalive {
        writeln!(s, "PersistentKeepalive = {k}").ok();
    }
}

/// The complete wg-quick config of an unmanaged host (a phone), for `meshctl client`: the
/// addresses and the hub's AllowedIPs come from the same functions as a managed host's desired
/// state, so the hub and the phone agree on what goes through the tunnel. Unlike a managed
/// host's config it holds the private key when one is given (`None`: a commented placeholder
/// for the key made on the device), the pair's preshared key when it has one, the DNS servers,
/// and no `PostUp`: the app runs it as it is.
pub fn client_conf(
    inv: &Inventory,
    host: &Host,
    hub_key: &WgKey,
    private_key: Option<&str>,
    preshared_key: Option<&str>,
) -> String {
    let net = &inv.network;
    let (_, hub) = inv.hub();
    let mut s = format!(
        "# {}: WireGuard config made by meshctl for network {}\n[Interface]\n",
        host.name, net.name
    );
    match private_key {
        Some(k) => writeln!(s, "PrivateKey = {k}").ok(),
        None => writeln!(s, "# PrivateKey = (the key generated on the device)").ok(),
    };
    let addrs: Vec<String> = desired::addresses(net, host)
        .iter()
        .map(ToString::to_string)
        .collect();
    writeln!(s, "Address = {}", addrs.join(", ")).ok();
    if !net.dns.is_empty() {
        let dns: Vec<String> = net.dns.iter().map(ToString::to_string).collect();
        writeln!(s, "DNS = {}", dns.join(", ")).ok();
    }
    if let Some(m) = net.mtu {
        writeln!(s, "MTU = {m}").ok();
    }
    writeln!(s, "\n[Peer]\n# the hub\nPublicKey = {hub_key}").ok();
    if let Some(k) = preshared_key {
        writeln!(s, "PresharedKey = {k}").ok();
    }
    peer_settings(
        &mut s,
        &desired::hub_allowed_ips(inv, host),
        Some(&desired::endpoint_string(&hub.endpoint, net.listen_port)),
        host.keepalive,
    );
    s
}

fn sysctl_conf(state: &HostState) -> String {
    let mut s = String::from("# Written by meshctl.\n");
    for (k, v) in &state.sysctls {
        writeln!(s, "{} = {v}", spell::sysctl_key(k)).ok();
    }
    s
}

/// An `iptables-restore --noflush` file that (re)creates meshctl's chains of one family: a
/// chain declared here is flushed and refilled, every other chain is left alone.
pub fn rules_file(state: &HostState, family: Family) -> Option<String> {
    let chains: Vec<_> = state
        .firewall
        .chains
        .iter()
        .filter(|(id, _)| id.family == family)
        .collect();
    if chains.is_empty() {
        return None;
    }
    let tables: BTreeSet<&str> = chains.iter().map(|(id, _)| id.table.as_str()).collect();
    let mut s =
        String::from("# Written by meshctl: its own chains only (restored with --noflush).\n");
    for table in tables {
        writeln!(s, "*{table}").ok();
        for (id, _) in chains.iter().filter(|(id, _)| id.table == table) {
            writeln!(s, ":{} - [0:0]", id.chain).ok();
        }
        for (id, rules) in chains.iter().filter(|(id, _)| id.table == table) {
            for r in *rules {
                writeln!(s, "-A {} {r}", id.chain).ok();
            }
        }
        s.push_str("COMMIT\n");
    }
    Some(s)
}

fn up_script(state: &HostState) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Written by meshctl: restores what the WireGuard interface needs (run by wg-quick's PostUp).\nset -e\n",
    );
    // Under `meshctl apply` every line below is a step of the change script of its own.
    writeln!(
        s,
        "# meshctl apply does each of these as a step of its own\n[ -z \"${{{}:-}}\" ] || exit 0",
        crate::scripts::steps::APPLYING_ENV
    )
    .ok();
    // The firewall first, as in the change script: when a restore fails, `set -e` stops here,
    // before forwarding, routes or NDP answers open a path (and wg-quick takes the interface
    // down again).
    for family in [Family::Ipv4, Family::Ipv6] {
        if state.firewall.chains.keys().any(|c| c.family == family) {
            writeln!(s, "{}", spell::chains_restore(family, &rules_path(family))).ok();
        }
    }
    for j in &state.firewall.jumps {
        writeln!(s, "{}", spell::jump_ensure(j)).ok();
    }
    if !state.sysctls.is_empty() {
        writeln!(s, "{}", spell::sysctl_load(SYSCTL_PATH)).ok();
    }
    for r in &state.routes {
        writeln!(s, "{}", spell::route_replace(r)).ok();
    }
    for r in &state.rules {
        writeln!(s, "{}", spell::rule_add(r)).ok();
    }
    for n in &state.ndp_proxies {
        writeln!(s, "{}", spell::ndp_proxy_replace(n)).ok();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_peer_cut_out_leaves_the_config_without_it() {
        use crate::names::{HostName, InterfaceName, WgKey};
        let key = WgKey::parse("x/mx1BYRsLAiujkK0jxj1w7VcUqhmtKsX+NjQA+VdV0=").unwrap();
        let peer = |k: Option<WgKey>, ka: Option<u16>| crate::state::Peer {
            public_key: k,
            allowed_ips: ["10.8.0.2/32".parse().unwrap()].into(),
            endpoint: Some("vps:51820".into()),
            persistent_keepalive: ka,
            preshared_key: None,
        };
        let mut wg = WgInterface {
            name: InterfaceName::parse("wg0").unwrap(),
            addresses: ["10.8.0.1/24".parse().unwrap()].into(),
            listen_port: Some(51820),
            public_key: None,
            private_key_file: crate::state::KeyFile {
                path: "/etc/wireguard/wg0.key".into(),
            },
            fwmark: None,
            peers: Default::default(),
        };
        wg.peers.insert("alpha".into(), peer(None, Some(25)));
        wg.peers
            .insert("beta".into(), peer(Some(key.clone()), None));
        wg.peers.insert("gamma".into(), peer(None, None));
        let (conf, pending) = wg_conf_and_pending(&wg, None, "/up.sh");
        assert_eq!(pending.len(), 2);
        // Cut the last one, then the first (whose line does not move).
        let (cut, n) = without_pending_peer(&conf, pending[1].line).unwrap();
        assert_eq!(n, 6);
        let (cut, _) = without_pending_peer(&cut, pending[0].line).unwrap();
        let mut only_beta = wg.clone();
        only_beta.peers.retain(|name, _| name == "beta");
        assert_eq!(cut, wg_conf(&only_beta, None, "/up.sh"));
        assert_eq!(pending[0].host, HostName::parse("alpha").unwrap());
        // Not a pending key line: refused.
        assert_eq!(without_pending_peer(&conf, 2), None);
        assert_eq!(without_pending_peer(&conf, 999), None);
    }

    #[test]
    fn the_drop_in_writes_keys_of_dotted_interfaces_with_slashes() {
        let mut state = HostState::default();
        for k in ["net.ipv6.conf.eth0.100.proxy_ndp", "net.ipv4.ip_forward"] {
            state.sysctls.insert(k.into(), "1".into());
        }
        assert_eq!(
            sysctl_conf(&state),
            "# Written by meshctl.\nnet.ipv4.ip_forward = 1\nnet/ipv6/conf/eth0.100/proxy_ndp = 1\n"
        );
    }
}
