//! Planner cases, pyinfra style: inputs (inventory + pinned keys + a live state per host) in,
//! expected plan out, snapshotted as text and JSON. Live states are the desired ones, cloned and
//! mutated the way a host drifts, with peers keyed by public key as facts produce them. Plus the
//! checks `meshctl apply plan.json` makes on a saved plan.

mod support;

use std::path::Path;

use meshctl::names::{InterfaceName, WgKey};
use meshctl::packages::Manager;
use meshctl::plan::{Action, Counts, HostStatus, Op, Plan};
use meshctl::planner;
use meshctl::render::{self, Style};
use meshctl::saved_plan::{self, SavedPlanError};
use meshctl::state::{
    ChainId, Family, Jump, ManagedFile, NdpProxy, Peer, Route, ServiceState, WgInterface,
};
use support::core::*;

/// One case: the fixture, the desired states and the live states gathered.
impl Case {
    /// The reference topology (`inventory/example.yaml`), every key pinned, every managed host
    /// converged.
    fn converged() -> Self {
        Self::from_fixture(Fixture::repo("example.yaml", &ALL_HOST_KEYS))
    }

    fn wg(&mut self, name: &str) -> &mut WgInterface {
        self.live(name).state.interface.as_mut().unwrap()
    }

    /// A live peer of `name`, found by public key (live peers are keyed by it).
    fn peer(&mut self, name: &str, key: &str) -> &mut Peer {
        self.wg(name).peers.get_mut(key).unwrap()
    }

    /// Builds the plan, snapshots its text and JSON under `name`, checks the JSON round-trips
    /// and carries no private key, and returns the plan.
    fn snapshot(&self, name: &str) -> Plan {
        let plan = self.plan();
        let json = render::json(&plan);
        assert_eq!(
            serde_json::from_str::<Plan>(&json).expect("the JSON reads back"),
            plan,
            "{name}: round trip"
        );
        assert_json_no_private_key(&json, name);
        let text = render::text(&plan, Style { color: false });
        assert_no_private_key(&text, name);
        assert!(
            !text.contains('\x1b'),
            "{name}: no colour without a terminal"
        );
        let shown = normalised(&plan);
        insta::assert_snapshot!(
            format!("{name}_text"),
            render::text(&shown, Style { color: false })
        );
        insta::assert_snapshot!(format!("{name}_json"), render::json(&shown));
        plan
    }
}

fn counts(add: usize, change: usize, remove: usize) -> Counts {
    Counts {
        add,
        change,
        remove,
    }
}

fn host_counts(plan: &Plan, name: &str) -> Counts {
    plan.hosts
        .iter()
        .find(|h| h.host.as_str() == name)
        .unwrap()
        .counts()
}

fn wg0() -> InterfaceName {
    InterfaceName::parse("wg0").unwrap()
}

fn chain(family: Family, table: &str, name: &str) -> ChainId {
    ChainId {
        family,
        table: table.into(),
        chain: name.into(),
    }
}

fn key(k: &str) -> WgKey {
    WgKey::parse(k).unwrap()
}

#[test]
fn fresh_hosts_get_everything() {
    let mut case = Case::converged();
    for h in ["vps", "nas", "laptop"] {
        case.live.insert(host(h), Ok(fresh(h)));
    }
    let plan = case.snapshot("fresh");
    assert!(plan.has_changes());
    for h in &plan.hosts {
        assert_eq!(h.status, HostStatus::Planned);
        assert!(
            h.changes.iter().all(|c| c.action == Action::Add),
            "{}: everything is +",
            h.host
        );
        // The interface, brought up by its unit (systemd runs there); the key is made on the
        // host, first.
        assert_eq!(
            h.changes[0].op,
            Op::StartService {
                unit: "wg-quick@wg0".into(),
                interface: "wg0".into()
            }
        );
        assert_eq!(
            h.changes[1].op,
            Op::GenerateKey {
                path: "/etc/wireguard/wg0.key".into()
            }
        );
    }
    // vps: interface, key, 2 addresses, listen port, 3 peers, 3 sysctls, 1 route, 5 chains,
    // 5 jumps, 3 NDP proxies, 5 files, 1 service; laptop: interface, key, 2 addresses, fwmark,
    // 1 peer, 2 routes (IPv6 default in the tunnel table), 2 rules, 2 files, 1 service.
    assert_eq!(host_counts(&plan, "vps"), counts(31, 0, 0));
    assert_eq!(host_counts(&plan, "nas"), counts(12, 0, 0));
    assert_eq!(host_counts(&plan, "laptop"), counts(13, 0, 0));
    assert_eq!(plan.counts(), counts(56, 0, 0));
}

#[test]
fn fresh_vps_gets_its_packages_first_and_a_host_without_a_package_manager_fails_alone() {
    let mut case = Case::converged();
    // The hub: a rented Debian VPS (apt, no wg, no iptables, no kernel WireGuard).
    case.live.insert(host("vps"), Ok(fresh_vps("vps")));
    // The NAS: Alpine with kernel WireGuard and iptables (its role has no IPv6 chains here,
    // so no ip6tables is needed).
    let mut nas = fresh_vps("nas");
    nas.system.tools = ["apk", "ip", "iptables", "iptables-save", "iptables-restore"]
        .into_iter()
        .map(String::from)
        .collect();
    nas.system.kernel_wireguard = true;
    case.live.insert(host("nas"), Ok(nas));
    // The laptop: no wg and no package manager meshctl knows.
    let mut laptop = fresh_vps("laptop");
    laptop.system.tools.remove("apt-get");
    case.live.insert(host("laptop"), Ok(laptop));
    let plan = case.snapshot("fresh_vps");
    let packages = |h: &str| -> Vec<Op> {
        ops(&plan, h)
            .into_iter()
            .filter(|o| matches!(o, Op::InstallPackages { .. }))
            .collect()
    };
    let install = |m: Manager, p: &str| Op::InstallPackages {
        manager: m,
        packages: vec![p.to_owned()],
    };
    assert_eq!(
        packages("vps"),
        [
            install(Manager::Apt, "wireguard-tools"),
            install(Manager::Apt, "wireguard-go"),
            install(Manager::Apt, "iptables"),
        ]
    );
    // Packages come first; the rest of the plan is a fresh host's (absent tools = empty state).
    assert!(matches!(ops(&plan, "vps")[0], Op::InstallPackages { .. }));
    let fresh_plan = {
        let mut c = Case::converged();
        c.live.insert(host("vps"), Ok(fresh("vps")));
        c.plan()
    };
    assert_eq!(
        ops(&plan, "vps")[3..],
        ops(&fresh_plan, "vps")[..],
        "after the packages, the same changes as on a provisioned fresh host"
    );
    assert_eq!(packages("nas"), [install(Manager::Apk, "wireguard-tools")]);
    let laptop = plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "laptop")
        .unwrap();
    assert_eq!(laptop.status, HostStatus::Failed);
    assert!(laptop.changes.is_empty());
    let err = laptop.error.as_deref().unwrap();
    assert!(
        err.contains("lacks wg and wg-quick") && err.contains("install wireguard-tools"),
        "{err}"
    );
    // The others are planned.
    assert_eq!(plan.failed_hosts().count(), 1);
}

#[test]
fn converged_hosts_have_no_changes() {
    let case = Case::converged();
    let plan = case.snapshot("converged");
    assert!(!plan.has_changes());
    assert_eq!(plan.counts(), counts(0, 0, 0));
    let text = render::text(&plan, Style { color: false });
    assert!(text.contains("No changes: laptop, nas, vps\n"), "{text}");
    assert!(
        plan.hosts
            .iter()
            .all(|h| h.warnings.is_empty() && h.fingerprint.is_some())
    );
}

#[test]
fn peer_added_when_the_inventory_gains_a_host() {
    let text = edit(
        &repo_text("inventory/example.yaml"),
        "\nrouters:\n",
        "  tablet:\n    role: client\n    address: 10.8.0.12\n    tunnel: split\n\nrouters:\n",
    );
    let mut keys = ALL_HOST_KEYS.to_vec();
    keys.push(("tablet", TABLET));
    let before = Case::converged();
    let mut case = Case::from_fixture(Fixture::new("example.yaml", &text, &keys, None));
    // The hosts are as the inventory without the tablet left them.
    case.live = before.live.clone();
    let plan = case.snapshot("peer_added");
    let vps = ops(&plan, "vps");
    assert!(vps.iter().any(|o| matches!(o, Op::SetPeer { name, peer, .. } if name == "tablet" && peer.public_key == Some(key(TABLET)))));
    assert!(vps.iter().any(|o| matches!(o, Op::AddNdpProxy { entry } if entry.address.to_string() == "2001:db8:42:0:100::c")));
    // + peer, + ndp proxy, ~ wg0.conf, ~ wg0-up.sh.
    assert_eq!(host_counts(&plan, "vps"), counts(2, 2, 0));
    assert_eq!(
        plan.counts(),
        counts(2, 2, 0),
        "nothing changes on the other hosts"
    );
    // Its key is pinned: `meshctl client tablet` made it and handed out its config then.
    assert!(!plan.manual_steps.iter().any(|m| m.subject == "tablet"));
}

/// A policy added to a converged network shows like any rule change: the hub's and the
/// gateway's `MESHCTL-FORWARD` chains (per source), the client's narrowed peer and routes, and
/// the files that persist them.
#[test]
fn policy_added_shows_as_rule_changes() {
    let text = edit(
        &repo_text("inventory/example.yaml"),
        "    tunnel: split ",
        "    allow: [nas]\n    tunnel: split ",
    );
    let before = Case::converged();
    let mut case = Case::from_fixture(Fixture::new("example.yaml", &text, &ALL_HOST_KEYS, None));
    case.live = before.live.clone();
    let plan = case.snapshot("policy_added");
    let text_now = render::text(&plan, Style { color: false });
    for rule in [
        "-s 10.8.0.10/32 -d 10.8.0.2/32 -i wg0 -j ACCEPT",
        "-s 10.8.0.10/32 -i wg0 -j REJECT --reject-with icmp-port-unreachable",
        "-s 10.8.0.10/32 -d 192.168.178.0/24 -i wg0 -j REJECT --reject-with icmp-port-unreachable",
    ] {
        assert!(text_now.contains(rule), "{rule} in:\n{text_now}");
    }
    assert!(
        ops(&plan, "vps")
            .iter()
            .any(|o| matches!(o, Op::RestoreChains { .. }))
    );
    assert!(
        ops(&plan, "nas")
            .iter()
            .any(|o| matches!(o, Op::RestoreChains { .. }))
    );
    // With the policy in place, the next plan is empty.
    assert_eq!(
        Case::from_fixture(Fixture::new("example.yaml", &text, &ALL_HOST_KEYS, None))
            .plan()
            .counts(),
        counts(0, 0, 0)
    );
}

#[test]
fn peer_removed_when_live_has_an_extra_key() {
    // The tablet left the inventory; its key is still pinned. And a key nobody knows.
    let mut keys = ALL_HOST_KEYS.to_vec();
    keys.push(("tablet", TABLET));
    let mut case = Case::from_fixture(Fixture::new(
        "example.yaml",
        &repo_text("inventory/example.yaml"),
        &keys,
        None,
    ));
    for (k, ip) in [(TABLET, "10.8.0.12/32"), (STRANGER, "10.8.0.99/32")] {
        let p = Peer {
            public_key: Some(key(k)),
            allowed_ips: [ip.parse().unwrap()].into(),
            endpoint: Some("203.0.113.9:41000".into()),
            persistent_keepalive: None,
            preshared_key: None,
        };
        case.wg("vps").peers.insert(k.to_owned(), p);
    }
    let plan = case.snapshot("peer_removed");
    let resources: Vec<&str> = plan
        .hosts
        .iter()
        .flat_map(|h| h.changes.iter().map(|c| c.resource.as_str()))
        .collect();
    // Live peers come in the order of their keys.
    assert_eq!(resources, ["peer tablet", "peer Lvhrxa3W…"]);
    assert!(ops(&plan, "vps").contains(&Op::RemovePeer {
        interface: "wg0".into(),
        public_key: STRANGER.into()
    }));
    assert_eq!(plan.counts(), counts(0, 0, 2));
}

#[test]
fn peer_changed_keepalive_and_allowed_ips() {
    let mut case = Case::converged();
    case.peer("laptop", VPS).persistent_keepalive = None;
    case.peer("vps", NAS)
        .allowed_ips
        .remove(&"192.168.178.0/24".parse().unwrap());
    let plan = case.snapshot("peer_changed");
    assert_eq!(host_counts(&plan, "laptop"), counts(0, 1, 0));
    assert_eq!(host_counts(&plan, "vps"), counts(0, 1, 0));
    let laptop = &plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "laptop")
        .unwrap()
        .changes[0];
    assert_eq!(laptop.resource, "peer vps");
    assert!(
        matches!(&laptop.op, Op::SetPeer { peer, .. } if peer.persistent_keepalive == Some(25))
    );
}

#[test]
fn sysctl_flipped_and_missing() {
    let mut case = Case::converged();
    let s = &mut case.live("vps").state.sysctls;
    s.insert("net.ipv4.ip_forward".into(), "0".into());
    s.remove("net.ipv6.conf.eth0.proxy_ndp");
    let plan = case.snapshot("sysctl");
    assert_eq!(plan.counts(), counts(1, 1, 0));
    let vps = ops(&plan, "vps");
    assert!(vps.contains(&Op::SetSysctl {
        key: "net.ipv4.ip_forward".into(),
        value: "1".into()
    }));
    assert!(vps.contains(&Op::SetSysctl {
        key: "net.ipv6.conf.eth0.proxy_ndp".into(),
        value: "1".into()
    }));
}

#[test]
fn route_missing_and_stale_route_removed() {
    let mut case = Case::converged();
    let lan = Route {
        destination: "192.168.178.0/24".parse().unwrap(),
        device: wg0(),
        via: None,
        table: None,
    };
    assert!(case.live("vps").state.routes.remove(&lan));
    // A route with meshctl's proto the inventory no longer has. (Routes of other protos never
    // reach the live state: the gather asks for `proto 157` only.)
    let stale = Route {
        destination: "10.99.0.0/24".parse().unwrap(),
        device: wg0(),
        via: None,
        table: None,
    };
    case.live("laptop").state.routes.insert(stale.clone());
    let plan = case.snapshot("route");
    assert_eq!(ops(&plan, "vps"), [Op::ReplaceRoute { route: lan }]);
    assert_eq!(ops(&plan, "laptop"), [Op::DelRoute { route: stale }]);
    assert_eq!(plan.counts(), counts(1, 0, 1));
}

#[test]
fn owned_rule_deleted_from_a_chain() {
    let mut case = Case::converged();
    let id = chain(Family::Ipv6, "filter", "MESHCTL-FORWARD");
    let rules = case.live("vps").state.firewall.chains.get_mut(&id).unwrap();
    let reject = rules.pop().unwrap();
    assert!(reject.contains("REJECT"));
    let plan = case.snapshot("rule_deleted");
    assert_eq!(ops(&plan, "vps"), [Op::RestoreChains { chain: id }]);
    let change = &plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "vps")
        .unwrap()
        .changes[0];
    assert!(
        change
            .diff
            .as_deref()
            .unwrap()
            .contains(&format!("\n+{reject}\n")),
        "{:?}",
        change.diff
    );
    assert_eq!(plan.counts(), counts(0, 1, 0));
}

#[test]
fn extra_chain_is_removed_with_its_jump() {
    // The laptop was a gateway once: its chain, its jump and its rules file are left over.
    let mut case = Case::converged();
    let id = chain(Family::Ipv4, "filter", "MESHCTL-FORWARD");
    let jump = Jump {
        family: Family::Ipv4,
        table: "filter".into(),
        from: "FORWARD".into(),
        to: "MESHCTL-FORWARD".into(),
    };
    let old = "# Written by meshctl: its own chains only (restored with --noflush).\n*filter\n:MESHCTL-FORWARD - [0:0]\n-A MESHCTL-FORWARD -s 10.8.0.0/24 -i wg0 -j ACCEPT\nCOMMIT\n";
    let fw = &mut case.live("laptop").state;
    fw.firewall
        .chains
        .insert(id.clone(), vec!["-s 10.8.0.0/24 -i wg0 -j ACCEPT".into()]);
    fw.firewall.jumps.insert(jump.clone());
    fw.files.insert(
        "/etc/meshctl/rules.v4".into(),
        ManagedFile {
            content: old.into(),
            mode: 0o644,
        },
    );
    let plan = case.snapshot("chain_extra");
    assert_eq!(
        ops(&plan, "laptop"),
        [
            Op::DelJump { jump },
            Op::DeleteChain { chain: id },
            Op::RemoveFile {
                path: "/etc/meshctl/rules.v4".into()
            }
        ],
        "the jump goes before its chain"
    );
    assert_eq!(plan.counts(), counts(0, 0, 3));
}

#[test]
fn jump_missing() {
    let mut case = Case::converged();
    let jump = Jump {
        family: Family::Ipv6,
        table: "filter".into(),
        from: "FORWARD".into(),
        to: "MESHCTL-FORWARD".into(),
    };
    assert!(case.live("vps").state.firewall.jumps.remove(&jump));
    let plan = case.snapshot("jump_missing");
    assert_eq!(ops(&plan, "vps"), [Op::AddJump { jump }]);
    assert_eq!(plan.counts(), counts(1, 0, 0));
}

#[test]
fn ndp_proxy_missing_and_stale() {
    let mut case = Case::converged();
    let eth0 = InterfaceName::parse("eth0").unwrap();
    let laptop = NdpProxy {
        address: "2001:db8:42:0:100::a".parse().unwrap(),
        device: eth0.clone(),
    };
    let gone = NdpProxy {
        address: "2001:db8:42:0:100::c".parse().unwrap(),
        device: eth0,
    };
    let n = &mut case.live("vps").state.ndp_proxies;
    assert!(n.remove(&laptop));
    n.insert(gone.clone());
    let plan = case.snapshot("ndp_proxy");
    assert_eq!(
        ops(&plan, "vps"),
        [
            Op::AddNdpProxy { entry: laptop },
            Op::DelNdpProxy { entry: gone }
        ]
    );
    assert_eq!(plan.counts(), counts(1, 0, 1));
}

#[test]
fn file_content_drift_shows_a_unified_diff() {
    let mut case = Case::converged();
    let path = "/etc/wireguard/wg0.conf";
    let f = case.live("nas").state.files.get_mut(path).unwrap();
    // Hand-edited: a key pasted in (blanked on the host by the gather) and another keepalive.
    f.content = f
        .content
        .replace("[Interface]\n", "[Interface]\nPrivateKey = (redacted)\n")
        .replace("PersistentKeepalive = 25", "PersistentKeepalive = 60");
    let plan = case.snapshot("file_content");
    let c = &plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "nas")
        .unwrap()
        .changes[0];
    assert_eq!(
        (c.action, c.resource.as_str()),
        (Action::Change, "file /etc/wireguard/wg0.conf")
    );
    let diff = c.diff.as_deref().unwrap();
    assert!(diff.starts_with("--- live\n+++ desired\n@@"), "{diff}");
    assert!(
        diff.contains("\n-PrivateKey = (redacted)\n")
            && diff.contains("\n-PersistentKeepalive = 60\n+PersistentKeepalive = 25\n"),
        "{diff}"
    );
    assert!(matches!(&c.op, Op::WriteFile { mode: 0o600, .. }));
    assert_eq!(plan.counts(), counts(0, 1, 0));
}

#[test]
fn file_mode_drift() {
    let mut case = Case::converged();
    case.live("vps")
        .state
        .files
        .get_mut("/etc/meshctl/wg0-up.sh")
        .unwrap()
        .mode = 0o644;
    let plan = case.snapshot("file_mode");
    let c = &plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "vps")
        .unwrap()
        .changes[0];
    assert_eq!(
        (c.before.as_deref(), c.after.as_deref(), c.diff.as_deref()),
        (Some("mode 0644"), Some("mode 0755"), None)
    );
    assert_eq!(plan.counts(), counts(0, 1, 0));
}

#[test]
fn key_file_mode_is_fixed() {
    let mut case = Case::converged();
    case.live("laptop").key_file_mode = Some(0o644);
    let plan = case.snapshot("key_mode");
    assert_eq!(
        ops(&plan, "laptop"),
        [Op::FixKeyMode {
            path: "/etc/wireguard/wg0.key".into()
        }]
    );
    assert_eq!(plan.counts(), counts(0, 1, 0));
    // 0400 and 0600 are both private enough.
    case.live("laptop").key_file_mode = Some(0o400);
    assert!(!case.plan().has_changes());
}

#[test]
fn pinned_key_differs_from_live_key() {
    let mut case = Case::converged();
    case.wg("vps").public_key = Some(key(VPS_REINSTALLED));
    let plan = case.snapshot("key_changed");
    let vps = plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "vps")
        .unwrap();
    assert_eq!(vps.warnings.len(), 2);
    assert!(
        vps.warnings[0]
            .starts_with("THE PUBLIC KEY OF THIS HOST CHANGED: pinned x/mx1BYR…, live PGphLCc7…"),
        "{:?}",
        vps.warnings
    );
    assert!(
        vps.warnings[1].ends_with("hand these out again: `meshctl client phone`"),
        "the hub's key is in the phone's config: {:?}",
        vps.warnings
    );
    assert!(
        !plan.has_changes(),
        "a warning does not change the exit code"
    );
}

#[test]
fn unreachable_host_fails_and_the_others_are_planned() {
    let mut case = Case::converged();
    case.live.insert(
        host("nas"),
        Err("ssh: connect to host nas.home.arpa port 22: No route to host".into()),
    );
    case.peer("laptop", VPS).persistent_keepalive = Some(10);
    let plan = case.snapshot("unreachable");
    let nas = plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "nas")
        .unwrap();
    assert_eq!(nas.status, HostStatus::Failed);
    assert!(nas.changes.is_empty() && nas.fingerprint.is_none());
    assert_eq!(plan.failed_hosts().count(), 1);
    assert_eq!(host_counts(&plan, "laptop"), counts(0, 1, 0));
    // The hub still has the unreachable host as a peer, from its pinned key.
    assert_eq!(host_counts(&plan, "vps"), counts(0, 0, 0));
    // A host missing from the gathered map is a failure too, never "in sync".
    case.live.remove(&host("nas"));
    let plan = case.plan();
    let nas = plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "nas")
        .unwrap();
    assert_eq!(
        (nas.status, nas.error.as_deref()),
        (HostStatus::Failed, Some("not gathered"))
    );
}

#[test]
fn roaming_peer_endpoint_is_not_drift() {
    let mut case = Case::converged();
    let before = planner::fingerprint(
        &case.live("vps").state.clone(),
        &case.desired[&host("vps")].state,
    );
    case.peer("vps", LAPTOP).endpoint = Some("203.0.113.7:51234".into());
    case.peer("vps", NAS).endpoint = Some("[2001:db8:ffff::7]:1024".into());
    let plan = case.snapshot("roaming_endpoint");
    assert!(!plan.has_changes());
    let after = planner::fingerprint(
        &case.live("vps").state.clone(),
        &case.desired[&host("vps")].state,
    );
    assert_eq!(before, after, "the fingerprint ignores roaming endpoints");
}

#[test]
fn endpoint_name_resolved_on_the_host_is_not_drift() {
    let mut case = Case::converged();
    for h in ["laptop", "nas"] {
        case.peer(h, VPS).endpoint = Some("198.51.100.10:51820".into());
        case.live(h).resolved.insert(
            "vps.example.net".into(),
            vec![
                "2001:db8:42::1".parse().unwrap(),
                "198.51.100.10".parse().unwrap(),
            ],
        );
    }
    // The kernel shows an IPv6 endpoint in brackets.
    case.peer("nas", VPS).endpoint = Some("[2001:db8:42::1]:51820".into());
    let plan = case.snapshot("endpoint_resolved");
    assert!(!plan.has_changes());

    // Counter-checks: the name resolves elsewhere, or the port differs: that is drift.
    case.live("laptop").resolved.insert(
        "vps.example.net".into(),
        vec!["198.51.100.99".parse().unwrap()],
    );
    case.peer("nas", VPS).endpoint = Some("[2001:db8:42::1]:51821".into());
    let plan = case.plan();
    assert_eq!(host_counts(&plan, "laptop"), counts(0, 1, 0));
    assert_eq!(host_counts(&plan, "nas"), counts(0, 1, 0));
}

#[test]
fn no_systemd_skips_enabling_the_service() {
    let mut case = Case::converged();
    case.live("laptop").system.systemd = false;
    case.live("laptop").state.services.clear();
    let plan = case.plan();
    let laptop = plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "laptop")
        .unwrap();
    assert!(laptop.changes.is_empty());
    assert_eq!(laptop.skipped.len(), 1);
    assert!(
        laptop.skipped[0].starts_with("no systemd on this host: wg-quick@wg0 not enabled at boot")
    );
    // A systemd host whose hand-made unit runs the interface but is not enabled gets it
    // enabled, and nothing else: the unit keeps the interface.
    case.live("nas").state.services.insert(
        "wg-quick@wg0".into(),
        ServiceState {
            enabled: false,
            active: true,
        },
    );
    assert_eq!(
        ops(&case.plan(), "nas"),
        [Op::EnableService {
            unit: "wg-quick@wg0".into()
        }]
    );
}

#[test]
fn under_systemd_the_unit_brings_the_interface_up_and_takes_over_a_hand_made_one() {
    let unit = || "wg-quick@wg0".to_owned();
    // A fresh systemd host: the unit starts the interface (no `wg-quick up` behind its back)
    // and is enabled, and the plan says what the boot restores.
    let mut case = Case::converged();
    case.live.insert(host("nas"), Ok(fresh("nas")));
    let plan = case.plan();
    let nas = ops(&plan, "nas");
    assert_eq!(
        nas[0],
        Op::StartService {
            unit: unit(),
            interface: "wg0".into()
        }
    );
    assert!(!nas.iter().any(|o| matches!(o, Op::CreateInterface { .. })));
    assert_eq!(nas.last(), Some(&Op::EnableService { unit: unit() }));
    let text = render::text(&plan, Style { color: false });
    assert!(
        text.contains("  + interface wg0 (started by wg-quick@wg0)\n"),
        "{text}"
    );
    assert!(
        text.contains("  + enable wg-quick@wg0 at boot (brings wg0 up; its PostUp restores the firewall chains and the sysctls)\n"),
        "{text}"
    );
    // wg0 up by a hand-made `wg-quick up` (the unit inactive): taken over by the unit.
    let mut case = Case::converged();
    case.live("nas").state.services.insert(
        unit(),
        ServiceState {
            enabled: true,
            active: false,
        },
    );
    assert_eq!(
        ops(&case.plan(), "nas"),
        [Op::TakeOverInterface {
            unit: unit(),
            interface: "wg0".into()
        }]
    );
    // A hand-made `wg-quick@wg0` already active and enabled: nothing to do for the unit;
    // a change is made live, the unit keeps the interface.
    let mut case = Case::converged();
    case.peer("nas", VPS).persistent_keepalive = Some(99);
    assert!(
        ops(&case.plan(), "nas")
            .iter()
            .all(|o| matches!(o, Op::SetPeer { .. }))
    );
    // Without systemd: the script brings it up itself, with the inventory's MTU.
    let mut case = Case::converged();
    let mut bare = fresh("nas");
    bare.system.systemd = false;
    case.live.insert(host("nas"), Ok(bare));
    assert_eq!(
        ops(&case.plan(), "nas")[0],
        Op::CreateInterface {
            interface: "wg0".into(),
            key_file: Some("/etc/wireguard/wg0.key".into()),
            mtu: Some(1420),
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Saved plans.

fn message(e: SavedPlanError, path: &Path) -> String {
    e.to_string().replace(&path.display().to_string(), "PLAN")
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn saved_plan_round_trips_and_is_private() {
    let case = Case::converged();
    let plan = case.plan();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    meshctl::files::save_plan(&plan, &path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = meshctl::files::load_plan(&path).unwrap();
    assert_eq!(loaded, plan);
    saved_plan::check(&loaded, &case.plan(), &path).unwrap();
}

#[test]
fn corrupt_saved_plan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "plan.json", "{\"version\": 2, \"hosts\": [");
    assert_eq!(
        message(meshctl::files::load_plan(&p).unwrap_err(), &p),
        "the saved plan PLAN is not a meshctl plan (corrupt or hand-edited?): EOF while parsing a list at line 1 column 25"
    );
    let p = write(dir.path(), "empty.json", "");
    assert!(matches!(
        meshctl::files::load_plan(&p),
        Err(SavedPlanError::Corrupt { .. })
    ));
    let missing = dir.path().join("absent.json");
    assert!(
        message(meshctl::files::load_plan(&missing).unwrap_err(), &missing)
            .starts_with("cannot read the saved plan PLAN: ")
    );
}

#[test]
fn hand_edited_saved_plan_is_refused() {
    let case = Case::converged();
    let dir = tempfile::tempdir().unwrap();
    // Valid JSON of the wrong shape.
    let p = write(
        dir.path(),
        "plan.json",
        "{\"version\": 3, \"hosts\": \"vps\"}",
    );
    assert_eq!(
        message(meshctl::files::load_plan(&p).unwrap_err(), &p),
        "the saved plan PLAN is not a meshctl plan (corrupt or hand-edited?): invalid type: string \"vps\", expected a sequence"
    );
    let p = write(dir.path(), "plan.json", "[1, 2, 3]");
    assert_eq!(
        message(meshctl::files::load_plan(&p).unwrap_err(), &p),
        "the saved plan PLAN is not a meshctl plan (corrupt or hand-edited?): no `version` field"
    );
    // A change whose op was edited into something apply does not know.
    let mut plan = case.plan();
    plan.hosts[0].changes.push(meshctl::plan::Change {
        action: Action::Add,
        kind: "interface".into(),
        resource: "interface wg0".into(),
        before: None,
        after: None,
        diff: None,
        op: Op::CreateInterface {
            interface: "wg0".into(),
            key_file: None,
            mtu: None,
        },
    });
    let json_with_op =
        render::json(&plan).replacen("\"op\": \"create_interface\"", "\"op\": \"run_shell\"", 1);
    assert!(json_with_op.contains("run_shell"));
    let p = write(dir.path(), "plan.json", &json_with_op);
    let msg = message(meshctl::files::load_plan(&p).unwrap_err(), &p);
    assert!(
        msg.starts_with("the saved plan PLAN is not a meshctl plan (corrupt or hand-edited?): unknown variant `run_shell`, expected one of `install_packages`, `generate_key`"),
        "{msg}"
    );
    // A key-like value where a host name belongs is refused by the newtype.
    let json =
        render::json(&case.plan()).replacen("\"host\": \"laptop\"", "\"host\": \"$(reboot)\"", 1);
    let p = write(dir.path(), "plan.json", &json);
    assert!(matches!(
        meshctl::files::load_plan(&p),
        Err(SavedPlanError::Corrupt { .. })
    ));
}

#[test]
fn saved_plan_of_another_version_is_refused() {
    let case = Case::converged();
    let dir = tempfile::tempdir().unwrap();
    let json = render::json(&case.plan()).replacen("\"version\": 3,", "\"version\": 2,", 1);
    let p = write(dir.path(), "plan.json", &json);
    assert_eq!(
        message(meshctl::files::load_plan(&p).unwrap_err(), &p),
        "the saved plan PLAN has schema version 2; this meshctl reads version 3: make a new plan"
    );
    let p = write(dir.path(), "plan.json", "{\"version\": \"1\"}");
    assert_eq!(
        message(meshctl::files::load_plan(&p).unwrap_err(), &p),
        "the saved plan PLAN is not a meshctl plan (corrupt or hand-edited?): no `version` field"
    );
}

#[test]
fn saved_plan_from_other_inputs_is_refused() {
    let saved = Case::converged().plan();
    let path = Path::new("/plans/plan.json");
    // Another inventory (one keepalive differs).
    let text = edit(
        &repo_text("inventory/example.yaml"),
        "    keepalive: 25 ",
        "    keepalive: 30 ",
    );
    let other =
        Case::from_fixture(Fixture::new("example.yaml", &text, &ALL_HOST_KEYS, None)).plan();
    assert_ne!(saved.inventory_digest, other.inventory_digest);
    assert_eq!(
        saved_plan::check(&saved, &other, path)
            .unwrap_err()
            .to_string(),
        "the saved plan /plans/plan.json was made from other inputs (inventory, roles or pinned keys differ): make a new plan"
    );
    // Other pinned keys.
    let other = Case::from_fixture(Fixture::repo("example.yaml", &MANAGED_KEYS)).plan();
    assert!(matches!(
        saved_plan::check(&saved, &other, path),
        Err(SavedPlanError::OtherInputs { .. })
    ));
    // Other roles.
    let roles = tempfile::tempdir().unwrap();
    std::fs::write(roles.path().join("client.yaml"), "routes: []\n").unwrap();
    let fx = Fixture::new(
        "example.yaml",
        &repo_text("inventory/example.yaml"),
        &ALL_HOST_KEYS,
        Some(roles.path()),
    );
    let other = Case::from_fixture(fx).plan();
    assert!(matches!(
        saved_plan::check(&saved, &other, path),
        Err(SavedPlanError::OtherInputs { .. })
    ));
    // The same inputs elsewhere on disk are the same inputs.
    let same = Case::converged().plan();
    assert_ne!(saved.inventory, same.inventory);
    saved_plan::check(&saved, &same, path).unwrap();
}

#[test]
fn saved_plan_whose_host_moved_is_refused() {
    let case = Case::converged();
    let saved = case.plan();
    let path = Path::new("/plans/plan.json");
    let mut moved = Case::converged();
    moved.fx = Fixture::repo("example.yaml", &ALL_HOST_KEYS);
    moved.peer("nas", VPS).persistent_keepalive = Some(60);
    let now = moved.plan();
    assert_eq!(saved.inventory_digest, now.inventory_digest);
    assert_eq!(
        saved_plan::check(&saved, &now, path)
            .unwrap_err()
            .to_string(),
        "host nas has changed since the plan /plans/plan.json was made: make a new plan"
    );
    // What meshctl does not own or compare does not move a host: roaming endpoints, the OS.
    let mut roamed = Case::converged();
    roamed.peer("vps", LAPTOP).endpoint = Some("203.0.113.7:51234".into());
    roamed.live("laptop").system.os = "Debian GNU/Linux 14".into();
    roamed.live("laptop").resolved.insert(
        "vps.example.net".into(),
        vec!["198.51.100.10".parse().unwrap()],
    );
    saved_plan::check(&saved, &roamed.plan(), path).unwrap();
    // A host that has become unreachable cannot be checked: refused.
    let mut gone = Case::converged();
    gone.live.insert(host("laptop"), Err("timeout".into()));
    assert!(
        matches!(saved_plan::check(&saved, &gone.plan(), path), Err(SavedPlanError::Moved { host, .. }) if host == "laptop")
    );
}

#[test]
fn a_guarded_hosts_rollback_restores_the_chains_as_gathered() {
    let mut case = Case::converged();
    // A rule added by hand to meshctl's chain on the hub since its rules file was written: the
    // plan removes it; the rollback puts back exactly what was gathered, hand-made rule included.
    let id = chain(Family::Ipv6, "filter", "MESHCTL-FORWARD");
    case.live("vps")
        .state
        .firewall
        .chains
        .get_mut(&id)
        .unwrap()
        .insert(0, "-s 2001:db8:99::/64 -j ACCEPT".into());
    let live = case.live("vps").clone();
    let desired = &case.desired[&host("vps")].state;
    let g = planner::guard_plan(&live, desired, &case.fx.inputs.keys);
    let restores: Vec<&Op> = g
        .rollback
        .iter()
        .map(|c| &c.op)
        .filter(|op| matches!(op, Op::RestoreChains { .. } | Op::RestoreRules { .. }))
        .collect();
    match restores.as_slice() {
        [Op::RestoreRules { family, rules }] => {
            assert_eq!(*family, Family::Ipv6);
            assert_eq!(
                Some(rules.clone()),
                meshctl::persist::rules_file(&live.state, Family::Ipv6)
            );
            assert!(rules.contains("-A MESHCTL-FORWARD -s 2001:db8:99::/64 -j ACCEPT"));
        }
        other => panic!("the rollback restores the gathered chains once: {other:?}"),
    }
    assert_eq!(g.created_interface, None);
}

/// The guard's path check (a process per host in `ssh_paths`) is asked about the hosts with
/// changes only, and not at all on a converged network; the hosts it names, and only they, get
/// a guard.
#[test]
fn the_crossing_check_is_asked_only_about_hosts_with_changes() {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    let asked: Arc<Mutex<Vec<BTreeSet<String>>>> = Arc::default();
    let crossing = {
        let asked = asked.clone();
        planner::Crossing::new(move |_, among| {
            asked
                .lock()
                .unwrap()
                .push(among.iter().map(|h| h.to_string()).collect());
            among
                .iter()
                .filter(|h| h.as_str() == "nas")
                .cloned()
                .collect()
        })
    };
    let converged = Case::converged();
    let plan = planner::build_guarded(
        &converged.fx.inputs,
        &converged.desired,
        &converged.live,
        &crossing,
    );
    assert!(!plan.has_changes());
    assert!(
        asked.lock().unwrap().is_empty(),
        "asked on a converged network"
    );

    let mut case = Case::converged();
    case.live("nas")
        .state
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    case.live("laptop").state.sysctls.clear();
    let plan = planner::build_guarded(&case.fx.inputs, &case.desired, &case.live, &crossing);
    let changed: BTreeSet<String> = plan.changed_hosts().iter().map(|h| h.to_string()).collect();
    assert!(
        changed.contains("nas") && !changed.contains("vps"),
        "{changed:?}"
    );
    assert_eq!(*asked.lock().unwrap(), vec![changed]);
    for hp in &plan.hosts {
        assert_eq!(hp.guard.is_some(), hp.host.as_str() == "nas", "{}", hp.host);
    }
}
