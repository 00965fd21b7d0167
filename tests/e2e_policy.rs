//! End to end: the reachability policy (`allow:`) on real lab hosts. A client allowed only
//! `nas` reaches the NAS, and not the laptop, not `homepc` on the home LAN, not `inet` (IPv4
//! and IPv6) — also after it widens its own AllowedIPs and routes by hand, because the hub
//! refuses its packets (its REJECT rule counts them). The unrestricted laptop, edited the same
//! way, reaches all of them: the refusal is the policy's. A second apply changes nothing.
//! A client allowed `lan:nas` and `internet` reaches the home LAN and the internet through the
//! hub (IPv4 and IPv6), and neither the NAS's VPN address nor the laptop. Each test builds its
//! own lab (needs root; never skips).

mod support;

use support::{TestLab, ok, own_inventory, pings_within, rule_packets, text};

const NAS: &str = "10.8.0.2";
const LAPTOP: &str = "10.8.0.10";
const HOMEPC: &str = "192.168.178.20";
const INET4: &str = "198.51.100.200";
const INET6: &str = "2001:db8:ff::200";

fn pings(lab: &TestLab, host: &str, addr: &str) -> bool {
    lab.exec(host, &format!("ping -c 2 -W 1 {addr}"))
        .status
        .success()
}

/// What `host` gets through the tunnel after widening its own config by hand: its one peer
/// (the hub) allowed everything, and routes into the tunnel for the home LAN and for `inet`
/// (which the lab's clients otherwise reach directly on the internet segment).
fn widen_by_hand(lab: &TestLab, host: &str) {
    ok(
        lab,
        host,
        &format!(
            "peer=$(wg show wg0 peers) && wg set wg0 peer \"$peer\" allowed-ips 0.0.0.0/0,::/0 \
             && ip route replace 192.168.178.0/24 dev wg0 \
             && ip route replace {INET4}/32 dev wg0 \
             && ip -6 route replace {INET6}/128 dev wg0"
        ),
    );
}

fn hub_rejects(lab: &TestLab, tool: &str, source: &str) -> u64 {
    rule_packets(
        lab,
        "vps",
        tool,
        "filter",
        "MESHCTL-FORWARD",
        &["REJECT", source],
    )
}

#[test]
fn a_client_allowed_only_the_nas_reaches_nothing_else_even_with_its_config_widened() {
    let (_keep, inv) = own_inventory("policy");
    let yaml = std::fs::read_to_string(&inv).unwrap().replace(
        "  phone:\n",
        "  friend:\n    role: client\n    ssh: root@friend\n    address: 10.8.0.12\n    keepalive: 5\n    allow: [nas]\n  phone:\n",
    );
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("e2e_policy", &inv);

    let first = lab.meshctl(&["apply", "--yes"]);
    assert!(first.status.success(), "apply:\n{}", text(&first));
    // The manual step meshctl prints for the home router, done as a user would.
    ok(
        &lab,
        "fritzbox",
        "ip route replace 10.8.0.0/24 via 192.168.178.10",
    );
    let second = lab.meshctl(&["apply", "--yes"]);
    assert!(
        text(&second).contains("Plan: 0 to add, 0 to change, 0 to remove"),
        "the second apply changes nothing:\n{}",
        text(&second)
    );

    // The friend's own config says what it may reach: the hub and the NAS.
    let friend_wg = ok(&lab, "friend", "wg show wg0 allowed-ips");
    assert!(
        friend_wg.contains("10.8.0.1/32") && friend_wg.contains("10.8.0.2/32"),
        "{friend_wg}"
    );
    assert!(
        !friend_wg.contains("10.8.0.0/24") && !friend_wg.contains("::/0"),
        "{friend_wg}"
    );
    // The gateway refuses the friend on its LAN too.
    let nas_rules = ok(&lab, "nas", "iptables-save -t filter");
    assert!(
        nas_rules.contains(
            "-A MESHCTL-FORWARD -s 10.8.0.12/32 -d 192.168.178.0/24 -i wg0 -j REJECT --reject-with icmp-port-unreachable"
        ),
        "{nas_rules}"
    );

    assert!(
        pings_within(&lab, "friend", NAS, 30),
        "the friend reaches the NAS"
    );
    assert!(pings_within(&lab, "laptop", NAS, 30), "the laptop is up");
    assert!(
        pings_within(&lab, "laptop", HOMEPC, 30),
        "the laptop reaches homepc"
    );
    assert!(
        !pings(&lab, "friend", LAPTOP),
        "the friend reaches the laptop"
    );
    assert!(!pings(&lab, "friend", HOMEPC), "the friend reaches homepc");

    // By hand, the friend allows itself everything and routes the rest into the tunnel.
    let (rejected4, rejected6) = (
        hub_rejects(&lab, "iptables", "10.8.0.12"),
        hub_rejects(&lab, "ip6tables", "2001:db8:10:0:100::c"),
    );
    widen_by_hand(&lab, "friend");
    assert!(pings(&lab, "friend", NAS), "the NAS still answers");
    for addr in [LAPTOP, HOMEPC, INET4, INET6] {
        assert!(
            !pings(&lab, "friend", addr),
            "with its config widened, the friend reaches {addr}"
        );
    }
    assert!(
        hub_rejects(&lab, "iptables", "10.8.0.12") > rejected4,
        "the hub refused the friend's IPv4 packets"
    );
    assert!(
        hub_rejects(&lab, "ip6tables", "2001:db8:10:0:100::c") > rejected6,
        "the hub refused the friend's IPv6 packets"
    );

    // The gateway refuses the friend on its LAN by itself: with the hub opened for it by a
    // foreign rule ahead of meshctl's chain, the NAS's own rule stops it.
    let nas_rejected = rule_packets(
        &lab,
        "nas",
        "iptables",
        "filter",
        "MESHCTL-FORWARD",
        &["REJECT", "10.8.0.12"],
    );
    ok(
        &lab,
        "vps",
        "iptables -w -I FORWARD 1 -s 10.8.0.12 -d 192.168.178.0/24 -j ACCEPT",
    );
    assert!(
        !pings(&lab, "friend", HOMEPC),
        "past the hub, the friend reaches homepc"
    );
    assert!(
        rule_packets(
            &lab,
            "nas",
            "iptables",
            "filter",
            "MESHCTL-FORWARD",
            &["REJECT", "10.8.0.12"],
        ) > nas_rejected,
        "the NAS refused the friend's packets into its LAN"
    );
    ok(
        &lab,
        "vps",
        "iptables -w -D FORWARD -s 10.8.0.12 -d 192.168.178.0/24 -j ACCEPT",
    );

    // The laptop, unrestricted, widened the same way, reaches every one of them (and the
    // friend, whose answers are accepted as part of the laptop's connection).
    widen_by_hand(&lab, "laptop");
    for addr in ["10.8.0.12", HOMEPC, INET4, INET6] {
        assert!(
            pings_within(&lab, "laptop", addr, 10),
            "the laptop reaches {addr}"
        );
    }

    // meshctl sees the friend's hand edit as drift and puts its peer back.
    let repair = lab.meshctl(&["apply", "--yes"]);
    assert!(repair.status.success(), "apply:\n{}", text(&repair));
    let friend_wg = ok(&lab, "friend", "wg show wg0 allowed-ips");
    assert!(!friend_wg.contains("0.0.0.0/0"), "{friend_wg}");

    let down = lab.down();
    assert!(down.status.success(), "lab down:\n{}", text(&down));
}

#[test]
fn a_client_allowed_the_home_lan_and_the_internet_reaches_those_and_no_vpn_host() {
    let (_keep, inv) = own_inventory("policy-inet");
    let yaml = std::fs::read_to_string(&inv).unwrap().replace(
        "  phone:\n",
        "  friend:\n    role: client\n    ssh: root@friend\n    address: 10.8.0.12\n    keepalive: 5\n    tunnel: full\n    allow: [\"lan:nas\", internet]\n  phone:\n",
    );
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("e2e_policy_inet", &inv);
    let first = lab.meshctl(&["apply", "--yes"]);
    assert!(first.status.success(), "apply:\n{}", text(&first));
    ok(
        &lab,
        "fritzbox",
        "ip route replace 10.8.0.0/24 via 192.168.178.10",
    );
    let plan = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "converged:\n{}", text(&plan));
    // `inet` shares the lab's internet segment with the clients: route it into the tunnel, so
    // the test sees the hub's egress (IPv6 goes there anyway: the friend's is public).
    ok(
        &lab,
        "friend",
        &format!("ip route replace {INET4}/32 dev wg0"),
    );
    let accepted = |tool: &str, src: &str| {
        rule_packets(
            &lab,
            "vps",
            tool,
            "filter",
            "MESHCTL-FORWARD",
            &["ACCEPT", src, "eth0"],
        )
    };
    let (out4, out6) = (
        accepted("iptables", "10.8.0.12"),
        accepted("ip6tables", "2001:db8:10:0:100::c"),
    );
    for addr in [HOMEPC, INET4, INET6] {
        assert!(
            pings_within(&lab, "friend", addr, 30),
            "the friend reaches {addr}"
        );
    }
    assert!(
        accepted("iptables", "10.8.0.12") > out4,
        "IPv4 egress through the hub"
    );
    assert!(
        accepted("ip6tables", "2001:db8:10:0:100::c") > out6,
        "IPv6 egress through the hub"
    );
    assert!(pings_within(&lab, "laptop", NAS, 30), "the laptop is up");
    for addr in [NAS, LAPTOP] {
        assert!(!pings(&lab, "friend", addr), "the friend reaches {addr}");
    }
    let down = lab.down();
    assert!(down.status.success(), "lab down:\n{}", text(&down));
}
