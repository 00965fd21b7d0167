//! The pure core without SSH: the desired state of every managed host and every file that
//! persists it, for the shipped inventories (snapshots), targeted checks of what the reference
//! topology needs (DESIGN.md), and a property test that the core is idempotent (a host whose
//! live state is its desired state has nothing to change).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use ipnet::IpNet;
use meshctl::desired::Desired;
use meshctl::diff::diff_host;
use meshctl::names::HostName;
use meshctl::persist;
use meshctl::planner;
use meshctl::state::{ChainId, Family, HostState, Jump, ROUTE_PROTO, Route};
use proptest::prelude::*;
use serde::Serialize;
use support::core::*;

/// What a snapshot shows of one host: its state with the files reduced to path and mode
/// (their content has its own, plain-text snapshot), and what the gather needs.
#[derive(Serialize)]
struct Shown {
    state: HostState,
    files: BTreeMap<String, String>,
    resolve: Vec<String>,
    ndp_range: Option<String>,
    notes: Vec<String>,
}

fn shown(desired: &BTreeMap<HostName, Desired>) -> BTreeMap<String, Shown> {
    desired
        .iter()
        .map(|(h, d)| {
            let mut state = d.state.clone();
            let files = std::mem::take(&mut state.files)
                .into_iter()
                .map(|(p, f)| (p, format!("{:04o}", f.mode)))
                .collect();
            let s = Shown {
                state,
                files,
                resolve: d.resolve.clone(),
                ndp_range: d.ndp_range.map(|r| r.to_string()),
                notes: d.notes.clone(),
            };
            (h.to_string(), s)
        })
        .collect()
}

/// Every rendered file of every host, one after the other.
fn files_text(desired: &BTreeMap<HostName, Desired>) -> String {
    let mut s = String::new();
    for (h, d) in desired {
        for (path, f) in &d.state.files {
            writeln!(s, "===== {h}: {path} (mode {:04o}) =====", f.mode).unwrap();
            s.push_str(&f.content);
            if !f.content.ends_with('\n') {
                s.push_str("\n(no newline at end of file)\n");
            }
        }
    }
    s
}

fn snapshot_all(inventory: &str, keys: &[(&str, &str)], suffix: &str) {
    let fx = Fixture::repo(inventory, keys);
    let desired = fx.desired();
    let stem = inventory.trim_end_matches(".yaml");
    insta::assert_yaml_snapshot!(format!("{stem}_{suffix}_state"), shown(&desired));
    insta::assert_snapshot!(format!("{stem}_{suffix}_files"), files_text(&desired));
}

#[test]
fn example_pinned() {
    snapshot_all("example.yaml", &ALL_HOST_KEYS, "pinned");
}

#[test]
fn example_unpinned() {
    snapshot_all("example.yaml", &[], "unpinned");
}

#[test]
fn lab_pinned() {
    snapshot_all("lab.yaml", &ALL_HOST_KEYS, "pinned");
}

#[test]
fn lab_unpinned() {
    snapshot_all("lab.yaml", &[], "unpinned");
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> BTreeSet<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

fn example(keys: &[(&str, &str)]) -> BTreeMap<HostName, Desired> {
    Fixture::repo("example.yaml", keys).desired()
}

fn example_edited(edits: &[(&str, &str)], keys: &[(&str, &str)]) -> BTreeMap<HostName, Desired> {
    let mut text = repo_text("inventory/example.yaml");
    for (from, to) in edits {
        text = edit(&text, from, to);
    }
    Fixture::new("example.yaml", &text, keys, None).desired()
}

#[test]
fn only_managed_hosts_have_a_desired_state() {
    let d = example(&ALL_HOST_KEYS);
    assert_eq!(
        d.keys().map(HostName::as_str).collect::<Vec<_>>(),
        ["laptop", "nas", "vps"]
    );
}

#[test]
fn hub_has_a_peer_per_other_host() {
    let d = example(&ALL_HOST_KEYS);
    let wg = d[&host("vps")].state.interface.clone().unwrap();
    let peers: Vec<&str> = wg.peers.keys().map(String::as_str).collect();
    assert_eq!(peers, ["laptop", "nas", "phone"]);
    // The gateway: its /32 and its home LAN; no IPv6 (a gateway has none unless asked).
    assert_eq!(
        wg.peers["nas"].allowed_ips,
        nets(&["10.8.0.2/32", "192.168.178.0/24"])
    );
    // Clients: /32 and /128 (their public IPv6, derived from the host number).
    assert_eq!(
        wg.peers["laptop"].allowed_ips,
        nets(&["10.8.0.10/32", "2001:db8:42:0:100::a/128"])
    );
    assert_eq!(
        wg.peers["phone"].allowed_ips,
        nets(&["10.8.0.11/32", "2001:db8:42:0:100::b/128"])
    );
    for (name, p) in &wg.peers {
        assert_eq!(p.endpoint, None, "the hub never dials {name}: they roam");
        assert_eq!(p.persistent_keepalive, None, "{name}");
    }
    assert_eq!(p_key(&wg.peers["laptop"]), Some(LAPTOP));
    assert_eq!(wg.listen_port, Some(51820));
    // The hub holds the clients' slice on wg0 (so the kernel routes it there).
    assert_eq!(
        wg.addresses,
        nets(&["10.8.0.1/24", "2001:db8:42:0:100::1/72"])
    );
}

fn p_key(p: &meshctl::state::Peer) -> Option<&str> {
    p.public_key.as_ref().map(|k| k.as_str())
}

#[test]
fn split_tunnel_client_routes_vpn_lans_and_ipv6_default() {
    let d = example(&ALL_HOST_KEYS);
    let laptop = &d[&host("laptop")].state;
    let wg = laptop.interface.as_ref().unwrap();
    assert_eq!(wg.peers.keys().collect::<Vec<_>>(), ["vps"]);
    let hub = &wg.peers["vps"];
    assert_eq!(
        hub.allowed_ips,
        nets(&["10.8.0.0/24", "192.168.178.0/24", "::/0"])
    );
    assert_eq!(hub.endpoint.as_deref(), Some("vps.example.net:51820"));
    assert_eq!(hub.persistent_keepalive, Some(25));
    assert_eq!(p_key(hub), Some(VPS));
    assert_eq!(wg.listen_port, None);
    assert_eq!(
        wg.addresses,
        nets(&["10.8.0.10/24", "2001:db8:42:0:100::a/128"])
    );
    // The endpoint is a name: the host resolves it so a live address can be compared.
    assert_eq!(d[&host("laptop")].resolve, ["vps.example.net"]);

    // Without a public IPv6 address: VPN + LAN only, and no IPv6 default route.
    let d = example_edited(
        &[(
            "    tunnel: split ",
            "    public_ipv6: false\n    tunnel: split ",
        )],
        &ALL_HOST_KEYS,
    );
    let laptop = &d[&host("laptop")].state;
    let hub = &laptop.interface.as_ref().unwrap().peers["vps"];
    assert_eq!(hub.allowed_ips, nets(&["10.8.0.0/24", "192.168.178.0/24"]));
    assert!(laptop.routes.iter().all(|r| r.destination != net("::/0")));
}

#[test]
fn gateway_peers_with_the_hub_only() {
    let d = example(&ALL_HOST_KEYS);
    let nas = &d[&host("nas")].state;
    let wg = nas.interface.as_ref().unwrap();
    assert_eq!(wg.peers.keys().collect::<Vec<_>>(), ["vps"]);
    let hub = &wg.peers["vps"];
    assert_eq!(hub.allowed_ips, nets(&["10.8.0.0/24"]));
    assert_eq!(hub.persistent_keepalive, Some(25), "behind NAT");
    assert_eq!(
        nas.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
        Some("1")
    );
    let fwd = &nas.firewall.chains[&chain(Family::Ipv4, "filter", "MESHCTL-FORWARD")];
    assert!(
        fwd.contains(&"-s 10.8.0.0/24 -d 192.168.178.0/24 -i wg0 -j ACCEPT".to_owned()),
        "{fwd:?}"
    );
    assert!(
        fwd.contains(&"-s 192.168.178.0/24 -d 10.8.0.0/24 -o wg0 -j ACCEPT".to_owned()),
        "{fwd:?}"
    );
}

fn chain(family: Family, table: &str, name: &str) -> ChainId {
    ChainId {
        family,
        table: table.into(),
        chain: name.into(),
    }
}

#[test]
fn routes_carry_meshctls_proto() {
    assert_eq!(ROUTE_PROTO, 157);
    for (h, d) in example(&ALL_HOST_KEYS) {
        let script = &d.state.files[&persist::up_script_path("wg0")].content;
        let route_lines: Vec<&str> = script
            .lines()
            .filter(|l| l.starts_with("ip -4 route") || l.starts_with("ip -6 route"))
            .collect();
        assert_eq!(
            route_lines.len(),
            d.state.routes.len(),
            "{h}: one line per route"
        );
        for l in route_lines {
            assert!(
                l.contains(" route replace ") && l.ends_with(" proto 157"),
                "{h}: {l}"
            );
        }
        // wg-quick adds no routes of its own: every route is one meshctl owns.
        assert!(
            d.state.files[&persist::conf_path("wg0")]
                .content
                .contains("\nTable = off\n"),
            "{h}"
        );
    }
    let d = example(&ALL_HOST_KEYS);
    let route = |dest: &str| Route {
        destination: net(dest),
        device: meshctl::names::InterfaceName::parse("wg0").unwrap(),
        via: None,
        table: None,
    };
    assert_eq!(
        d[&host("vps")].state.routes,
        [route("192.168.178.0/24")].into()
    );
    // A default route goes into the tunnel's own table (policy routing, as wg-quick does).
    let in_tunnel_table = Route {
        table: Some(meshctl::state::TUNNEL_TABLE),
        ..route("::/0")
    };
    assert_eq!(
        d[&host("laptop")].state.routes,
        [route("192.168.178.0/24"), in_tunnel_table].into()
    );
    assert_eq!(
        d[&host("laptop")].state.rules.len(),
        2,
        "the suppress and the fwmark rule"
    );
    assert!(
        d[&host("nas")].state.routes.is_empty(),
        "its own LAN is on-link, the VPN on wg0's /24"
    );
}

#[test]
fn no_private_key_in_any_file() {
    for inv in ["example.yaml", "lab.yaml"] {
        for keys in [&ALL_HOST_KEYS[..], &[]] {
            for (h, d) in Fixture::repo(inv, keys).desired() {
                for (path, f) in &d.state.files {
                    assert_no_private_key(&f.content, &format!("{inv} {h} {path}"));
                    let key_lines: Vec<&str> = f
                        .content
                        .lines()
                        .filter(|l| {
                            l.to_lowercase().contains("private-key")
                                || l.to_lowercase().contains("privatekey")
                        })
                        .collect();
                    if path.ends_with(".conf") && path.starts_with("/etc/wireguard/") {
                        assert_eq!(
                            key_lines,
                            ["PostUp = wg set %i private-key /etc/wireguard/wg0.key"],
                            "{inv} {h}"
                        );
                    } else {
                        assert!(key_lines.is_empty(), "{inv} {h} {path}: {key_lines:?}");
                    }
                }
                let wg = d.state.interface.as_ref().unwrap();
                assert_eq!(wg.private_key_file.path, "/etc/wireguard/wg0.key");
            }
        }
    }
}

#[test]
fn file_modes() {
    for (h, d) in example(&ALL_HOST_KEYS) {
        let modes: BTreeMap<&str, u32> = d
            .state
            .files
            .iter()
            .map(|(p, f)| (p.as_str(), f.mode))
            .collect();
        assert_eq!(modes["/etc/wireguard/wg0.conf"], 0o600, "{h}");
        assert_eq!(modes["/etc/meshctl/wg0-up.sh"], 0o755, "{h}");
        for (p, m) in &modes {
            if p.starts_with("/etc/meshctl/rules.") || p.starts_with("/etc/sysctl.d/") {
                assert_eq!(*m, 0o644, "{h} {p}");
            }
        }
    }
}

#[test]
fn unmanaged_client_without_key_is_left_out_with_a_note() {
    let d = example(&MANAGED_KEYS);
    let vps = &d[&host("vps")];
    let peers = &vps.state.interface.as_ref().unwrap().peers;
    assert!(!peers.contains_key("phone"));
    assert_eq!(
        vps.notes,
        ["peer phone left out: its public key is not known yet (run `meshctl client phone`)"]
    );
    assert!(
        !vps.state.files["/etc/wireguard/wg0.conf"]
            .content
            .contains("# phone")
    );
    // Other hosts get no note; and with the key given in the inventory the phone is a peer.
    assert!(d[&host("laptop")].notes.is_empty());
    let d = example_edited(
        &[(
            "    tunnel: full\n",
            &format!("    tunnel: full\n    public_key: \"{PHONE}\"\n"),
        )],
        &MANAGED_KEYS,
    );
    let vps = &d[&host("vps")];
    assert_eq!(
        p_key(&vps.state.interface.as_ref().unwrap().peers["phone"]),
        Some(PHONE)
    );
    assert!(vps.notes.is_empty());
    // A managed host without a key is a peer "known after apply", not left out.
    let d = example(&[]);
    let peers = &d[&host("vps")].state.interface.as_ref().unwrap().peers;
    assert_eq!(peers.keys().collect::<Vec<_>>(), ["laptop", "nas"]);
    assert!(peers.values().all(|p| p.public_key.is_none()));
    assert!(
        d[&host("vps")].state.files["/etc/wireguard/wg0.conf"]
            .content
            .contains("PublicKey = (known after apply)")
    );
}

#[test]
fn on_link_ipv6_proxies_ndp_and_routed_does_not() {
    let on_link = example(&ALL_HOST_KEYS);
    let vps = &on_link[&host("vps")];
    let proxied: Vec<String> = vps
        .state
        .ndp_proxies
        .iter()
        .map(|n| format!("{} dev {}", n.address, n.device))
        .collect();
    assert_eq!(
        proxied,
        [
            "2001:db8:42:0:100::1 dev eth0",
            "2001:db8:42:0:100::a dev eth0",
            "2001:db8:42:0:100::b dev eth0"
        ]
    );
    assert_eq!(
        vps.state
            .sysctls
            .get("net.ipv6.conf.eth0.proxy_ndp")
            .map(String::as_str),
        Some("1")
    );
    assert!(
        vps.state.files["/etc/meshctl/wg0-up.sh"]
            .content
            .contains("ip -6 neigh replace proxy 2001:db8:42:0:100::a dev eth0\n")
    );
    assert!(
        vps.state.files["/etc/sysctl.d/90-meshctl.conf"]
            .content
            .contains("net.ipv6.conf.eth0.proxy_ndp = 1\n")
    );

    let routed = example_edited(
        &[("    mode: on-link ", "    mode: routed ")],
        &ALL_HOST_KEYS,
    );
    let vps = &routed[&host("vps")];
    assert!(vps.state.ndp_proxies.is_empty());
    assert!(
        !vps.state
            .sysctls
            .contains_key("net.ipv6.conf.eth0.proxy_ndp")
    );
    assert!(
        !vps.state.files["/etc/meshctl/wg0-up.sh"]
            .content
            .contains("neigh")
    );
    assert!(
        !vps.state.files["/etc/sysctl.d/90-meshctl.conf"]
            .content
            .contains("proxy_ndp")
    );
    // Forwarding and the IPv6 firewall are the same in both modes.
    assert_eq!(
        vps.state
            .sysctls
            .get("net.ipv6.conf.all.forwarding")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        vps.state
            .firewall
            .chains
            .get(&chain(Family::Ipv6, "filter", "MESHCTL-FORWARD")),
        on_link[&host("vps")].state.firewall.chains.get(&chain(
            Family::Ipv6,
            "filter",
            "MESHCTL-FORWARD"
        ))
    );
}

#[test]
fn hub_ipv6_firewall_protects_the_clients() {
    let d = example(&ALL_HOST_KEYS);
    let fwd6 =
        &d[&host("vps")].state.firewall.chains[&chain(Family::Ipv6, "filter", "MESHCTL-FORWARD")];
    let c = "2001:db8:42:0:100::/72";
    let related = fwd6
        .iter()
        .position(|r| *r == format!("-d {c} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"));
    let icmp = fwd6
        .iter()
        .position(|r| *r == format!("-d {c} -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"));
    let from_vpn = fwd6
        .iter()
        .position(|r| *r == format!("-s {c} -i wg0 -j ACCEPT"));
    let reject = fwd6.iter().position(|r| {
        *r == format!("-d {c} ! -i wg0 -j REJECT --reject-with icmp6-port-unreachable")
    });
    let (related, icmp, from_vpn, reject) = (
        related.unwrap(),
        icmp.unwrap(),
        from_vpn.unwrap(),
        reject.unwrap(),
    );
    assert!(
        related < reject && icmp < reject && from_vpn < reject,
        "the REJECT comes last: {fwd6:?}"
    );
    assert_eq!(reject, fwd6.len() - 1);
    // Nothing INVALID reaches the ICMPv6 accepts, which name their types (RFC 4890).
    let invalid = fwd6
        .iter()
        .position(|r| *r == format!("-d {c} ! -i wg0 -m conntrack --ctstate INVALID -j DROP"))
        .unwrap();
    assert!(related < invalid && invalid < icmp, "{fwd6:?}");
    assert!(
        fwd6.iter()
            .filter(|r| r.contains("ipv6-icmp"))
            .all(|r| r.contains("--icmpv6-type")),
        "no ICMPv6 accept without a type: {fwd6:?}"
    );
    // INPUT only ever accepts.
    for (id, rules) in &d[&host("vps")].state.firewall.chains {
        if id.chain == "MESHCTL-INPUT" {
            assert_eq!(rules, &["-p udp -m udp --dport 51820 -j ACCEPT"]);
        }
    }
    // One tagged jump per owned chain.
    let jumps: BTreeSet<String> = d[&host("vps")]
        .state
        .firewall
        .jumps
        .iter()
        .map(jump_text)
        .collect();
    let chains: BTreeSet<String> = d[&host("vps")]
        .state
        .firewall
        .chains
        .keys()
        .map(|c| format!("{:?} {} {}", c.family, c.table, c.chain))
        .collect();
    assert_eq!(jumps, chains);
}

fn jump_text(j: &Jump) -> String {
    format!("{:?} {} {}", j.family, j.table, j.to)
}

#[test]
fn nat_false_drops_postrouting() {
    let with = example(&ALL_HOST_KEYS);
    let vps = &with[&host("vps")].state;
    let nat = chain(Family::Ipv4, "nat", "MESHCTL-POSTROUTING");
    assert_eq!(
        vps.firewall.chains[&nat],
        ["-s 10.8.0.0/24 -o eth0 -j MASQUERADE"]
    );
    assert!(
        vps.files["/etc/meshctl/rules.v4"]
            .content
            .contains("*nat\n:MESHCTL-POSTROUTING - [0:0]\n")
    );

    let without = example_edited(&[("    nat: true ", "    nat: false ")], &ALL_HOST_KEYS);
    let vps = &without[&host("vps")].state;
    assert!(!vps.firewall.chains.contains_key(&nat));
    assert!(vps.firewall.jumps.iter().all(|j| j.from != "POSTROUTING"));
    let rules4 = &vps.files["/etc/meshctl/rules.v4"].content;
    assert!(
        !rules4.contains("*nat") && !rules4.contains("MASQUERADE"),
        "{rules4}"
    );
    assert!(
        !vps.files["/etc/meshctl/wg0-up.sh"]
            .content
            .contains("POSTROUTING")
    );
}

#[test]
fn wan_accepts_ra_sets_accept_ra_2() {
    let d = example_edited(
        &[("    wan_accepts_ra: false ", "    wan_accepts_ra: true ")],
        &ALL_HOST_KEYS,
    );
    assert_eq!(
        d[&host("vps")]
            .state
            .sysctls
            .get("net.ipv6.conf.eth0.accept_ra")
            .map(String::as_str),
        Some("2")
    );
    assert!(
        !example(&ALL_HOST_KEYS)[&host("vps")]
            .state
            .sysctls
            .contains_key("net.ipv6.conf.eth0.accept_ra")
    );
}

#[test]
fn roles_dir_overrides_a_role() {
    let roles = tempfile::tempdir().unwrap();
    std::fs::write(
        roles.path().join("client.yaml"),
        "sysctls:\n  - key: net.ipv4.conf.{wg}.rp_filter\n    value: \"2\"\nroutes:\n  - to: \"{remote_lan4}\"\n    dev: \"{wg}\"\n",
    )
    .unwrap();
    let text = repo_text("inventory/example.yaml");
    let builtin = Fixture::new("example.yaml", &text, &ALL_HOST_KEYS, None).desired();
    let custom = Fixture::new("example.yaml", &text, &ALL_HOST_KEYS, Some(roles.path())).desired();
    let (b, c) = (
        &builtin[&host("laptop")].state,
        &custom[&host("laptop")].state,
    );
    assert!(b.sysctls.is_empty());
    assert_eq!(
        c.sysctls
            .get("net.ipv4.conf.wg0.rp_filter")
            .map(String::as_str),
        Some("2")
    );
    assert!(b.routes.iter().any(|r| r.destination == net("::/0")));
    assert!(
        c.routes.iter().all(|r| r.destination != net("::/0")),
        "the override has no IPv6 default route"
    );
    assert!(
        c.files.contains_key("/etc/sysctl.d/90-meshctl.conf")
            && !b.files.contains_key("/etc/sysctl.d/90-meshctl.conf")
    );
    // Roles that were not overridden stay built in.
    assert_eq!(builtin[&host("vps")].state, custom[&host("vps")].state);
    assert_eq!(builtin[&host("nas")].state, custom[&host("nas")].state);
}

// ---------------------------------------------------------------------------------------------
// Idempotency: for random valid small inventories, a host whose live state is its desired state
// has nothing to change.

/// A client of a random topology.
#[derive(Debug, Clone)]
struct Client {
    number: u8,
    managed: bool,
    full: bool,
    ipv6: Option<bool>,
    keepalive: Option<u16>,
    pinned: bool,
}

#[derive(Debug, Clone)]
struct Topology {
    third_octet: u8,
    ipv6: Option<bool>,
    nat: bool,
    accepts_ra: bool,
    endpoint_is_name: bool,
    gateways: u8,
    clients: Vec<Client>,
}

fn topology() -> impl Strategy<Value = Topology> {
    let client = (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u16..600),
        any::<bool>(),
    );
    (
        0u8..=255,
        proptest::option::of(any::<bool>()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..=2,
        proptest::sample::subsequence((10u8..=250).collect::<Vec<_>>(), 1..=20),
        proptest::collection::vec(client, 20),
    )
        .prop_map(
            |(third_octet, ipv6, nat, accepts_ra, endpoint_is_name, gateways, numbers, flags)| {
                Topology {
                    third_octet,
                    ipv6,
                    nat,
                    accepts_ra,
                    endpoint_is_name,
                    gateways,
                    clients: numbers
                        .into_iter()
                        .zip(flags)
                        .map(
                            |(number, (managed, full, ipv6, keepalive, pinned))| Client {
                                number,
                                managed,
                                full,
                                ipv6,
                                keepalive,
                                pinned,
                            },
                        )
                        .collect(),
                }
            },
        )
}

/// A deterministic, valid WireGuard public key for host number `n`.
fn key_for(n: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([n; 32])
}

fn inventory_text(t: &Topology) -> (String, Vec<(String, String)>) {
    let o = t.third_octet;
    let mut s = format!("network:\n  name: prop\n  ipv4: 10.{o}.0.0/24\n");
    if let Some(on_link) = t.ipv6 {
        let mode = if on_link { "on-link" } else { "routed" };
        s += &format!(
            "  ipv6:\n    prefix: 2001:db8:{o:x}::/64\n    clients: 2001:db8:{o:x}:0:100::/72\n    mode: {mode}\n"
        );
    }
    let endpoint = if t.endpoint_is_name {
        "hub.example.net".to_owned()
    } else {
        "198.51.100.1".to_owned()
    };
    s += &format!(
        "hosts:\n  hub:\n    role: hub\n    ssh: root@hub\n    address: 10.{o}.0.1\n    endpoint: {endpoint}\n    wan_interface: eth0\n    nat: {}\n    wan_accepts_ra: {}\n",
        t.nat, t.accepts_ra
    );
    let mut keys = vec![("hub".to_owned(), key_for(1))];
    for g in 0..t.gateways {
        let n = 2 + g;
        s += &format!(
            "  gw{g}:\n    role: gateway\n    ssh: root@gw{g}\n    address: 10.{o}.0.{n}\n    lan:\n      subnet: 192.168.{g}.0/24\n      interface: eth1\n      address: 192.168.{g}.1\n"
        );
        keys.push((format!("gw{g}"), key_for(n)));
    }
    for c in &t.clients {
        let n = c.number;
        s += &format!(
            "  c{n}:\n    role: client\n    address: 10.{o}.0.{n}\n    tunnel: {}\n",
            if c.full { "full" } else { "split" }
        );
        if c.managed {
            s += &format!("    ssh: root@c{n}\n");
        }
        if let (Some(v6), Some(_)) = (c.ipv6, t.ipv6) {
            s += &format!("    public_ipv6: {v6}\n");
        }
        if let Some(k) = c.keepalive {
            s += &format!("    keepalive: {k}\n");
        }
        // After an apply every managed host's key is pinned; unmanaged ones maybe not yet.
        if c.managed || c.pinned {
            keys.push((format!("c{n}"), key_for(n)));
        }
    }
    (s, keys)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn desired_state_diffed_against_itself_has_no_changes(t in topology()) {
        let (text, keys) = inventory_text(&t);
        let key_refs: Vec<(&str, &str)> = keys.iter().map(|(h, k)| (h.as_str(), k.as_str())).collect();
        let fx = Fixture::new("prop.yaml", &text, &key_refs, None);
        let desired = fx.desired();
        let managed = 1 + usize::from(t.gateways) + t.clients.iter().filter(|c| c.managed).count();
        prop_assert_eq!(desired.len(), managed);
        let mut live = BTreeMap::new();
        for (h, d) in &desired {
            let mut l = converged(h.as_str(), d);
            // A name resolves on the host to what the kernel shows.
            if let Some(wg) = l.state.interface.as_mut() {
                for p in wg.peers.values_mut() {
                    if let Some(e) = p.endpoint.as_mut() && e.starts_with("hub.example.net:") {
                        *e = e.replace("hub.example.net", "198.51.100.1");
                    }
                }
            }
            l.resolved.insert("hub.example.net".into(), vec!["198.51.100.1".parse().unwrap()]);
            let hd = diff_host(&d.state, &l, &fx.inputs.keys);
            prop_assert!(hd.changes.is_empty(), "{}: {:#?}\n{}", h, hd.changes, text);
            prop_assert!(hd.warnings.is_empty(), "{}: {:?}", h, hd.warnings);
            // Endpoints the kernel learnt for roaming peers do not move the fingerprint.
            let mut roamed = l.state.clone();
            if let Some(wg) = roamed.interface.as_mut() {
                for (i, p) in wg.peers.values_mut().enumerate() {
                    if d.state.interface.as_ref().unwrap().peers.values().all(|dp| dp.public_key != p.public_key || dp.endpoint.is_none()) {
                        p.endpoint = Some(format!("203.0.113.{}:{}", i + 1, 40000 + i));
                    }
                }
            }
            prop_assert_eq!(planner::fingerprint(&l.state, &d.state), planner::fingerprint(&roamed, &d.state));
            live.insert(h.clone(), Ok(l));
        }
        let plan = planner::build(&fx.inputs, &desired, &live);
        prop_assert!(!plan.has_changes());
        // Every hub peer that has a key is there; only unpinned unmanaged clients are left out.
        let hub = &desired[&host("hub")];
        let peers = &hub.state.interface.as_ref().unwrap().peers;
        let unpinned = t.clients.iter().filter(|c| !c.managed && !c.pinned).count();
        prop_assert_eq!(peers.len() + unpinned, usize::from(t.gateways) + t.clients.len());
        prop_assert_eq!(hub.notes.len(), unpinned);
    }
}
