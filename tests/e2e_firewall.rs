//! End to end: the hub's forwarding policy, tried from the outside on real lab hosts. Nothing
//! but the tunnel opens a connection to the protected ranges (the clients' IPv6 range, the VPN,
//! the home LANs over IPv4 and IPv6) — not the WAN and not a second interface of the hub — the
//! clients do not reach the provider's link-local metadata service, and ICMPv6 from the WAN is
//! limited to what RFC 4890 says a forwarding firewall should pass. Each test builds its own lab
//! (needs root; never skips) and counts packets at the hub's rules.

mod support;

use std::time::Duration;

use support::{TestLab, ok, own_inventory, pings_within, rule_packets, text, try_rule_packets};

/// The laptop's public IPv6 address and the clients' range in `inventory/lab.yaml`.
const LAPTOP6: &str = "2001:db8:10:0:100::a";
const CLIENTS6: &str = "2001:db8:10:0:100::/72";
/// `inet`'s addresses (the lab's internet ranges).
const INET4: &str = "198.51.100.200";
const INET6: &str = "2001:db8:ff::200";

/// A lab from `inventory/lab.yaml` edited by `edit` (not applied yet).
fn lab_from(name: &str, edit: impl Fn(String) -> String) -> (tempfile::TempDir, TestLab) {
    let (keep, inv) = own_inventory(name);
    let yaml = edit(std::fs::read_to_string(&inv).unwrap());
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up(&name.replace('-', "_"), &inv);
    (keep, lab)
}

fn apply(lab: &TestLab) -> String {
    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert!(out.status.success(), "apply failed:\n{t}");
    t
}

/// A shell expression for the interface that holds IPv4 address `ip`.
fn dev_of(ip: &str) -> String {
    format!("$(ip -o -4 addr show | awk '/{ip}\\// {{print $2}}')")
}

/// A packet counter on the hub for what leaves it into the tunnel from `src` to `dst`
/// (a foreign rule without a target in mangle/POSTROUTING: it only counts).
fn count_into_wg0(lab: &TestLab, tool: &str, src: &str, dst: &str) {
    ok(
        lab,
        "vps",
        &format!("{tool} -w -t mangle -A POSTROUTING -s {src} -d {dst} -o wg0"),
    );
}

fn into_wg0(lab: &TestLab, tool: &str, dst: &str) -> u64 {
    rule_packets(lab, "vps", tool, "mangle", "POSTROUTING", &["wg0", dst])
}

/// A namespace of the test's own, deleted when dropped (before the lab, declared after it).
struct ExtraNamespace(String);

impl Drop for ExtraNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn in_ns(ns: &str, cmd: &str) -> std::process::Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .expect("run ip netns exec")
}

/// Item 2: the WAN reaches no host of a home LAN's IPv6 prefix through the hub.
#[test]
fn wan_connections_to_a_home_lans_ipv6_prefix_are_refused_at_the_hub() {
    let lan6 = "2001:db8:77::/64";
    let (_keep, lab) = lab_from("fw-lan6", |y| {
        y.replace(
            "      address: 192.168.178.10\n",
            "      address: 192.168.178.10\n      ipv6_prefix: 2001:db8:77::/64\n      ipv6_address: 2001:db8:77::10\n",
        )
    });
    // The home LAN's IPv6, as the router's SLAAC would hand it out (the lab has none).
    ok(
        &lab,
        "nas",
        &format!(
            "ip -6 addr add 2001:db8:77::10/64 dev {} nodad",
            dev_of("192.168.178.10")
        ),
    );
    ok(
        &lab,
        "fritzbox",
        &format!(
            "ip -6 addr add 2001:db8:77::1/64 dev {} nodad && sysctl -qw net.ipv6.conf.all.forwarding=1",
            dev_of("192.168.178.1")
        ),
    );
    ok(
        &lab,
        "homepc",
        &format!(
            "ip -6 addr add 2001:db8:77::20/64 dev {} nodad && ip -6 route add default via 2001:db8:77::1",
            dev_of("192.168.178.20")
        ),
    );
    apply(&lab);
    ok(
        &lab,
        "fritzbox",
        &format!("ip -6 route add {CLIENTS6} via 2001:db8:77::10"),
    );
    // The provider routes the prefix the hub announces for the home LAN to the hub.
    ok(
        &lab,
        "internet",
        &format!("ip -6 route add {lan6} via 2001:db8:10::1"),
    );
    count_into_wg0(&lab, "ip6tables", INET6, lan6);
    ok(
        &lab,
        "homepc",
        "(nc -6 -l -p 8081 >/dev/null 2>&1 </dev/null &) ; sleep 0.5",
    );

    let conn = lab.exec("inet", "nc -6 -z -w 3 2001:db8:77::20 8081");
    assert!(
        !conn.status.success(),
        "a connection from the internet to a home LAN host must fail"
    );
    // A stray FIN (INVALID for conntrack) does not get in either.
    let fin = "import socket, struct\n\
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)\n\
s.setsockopt(socket.IPPROTO_IPV6, 7, 16)\n\
s.sendto(struct.pack('!HHIIBBHHH', 40000, 8081, 1, 0, 5 << 4, 0x01, 1024, 0, 0), ('2001:db8:77::20', 0))\n";
    ok(&lab, "inet", &format!("/usr/bin/python3 -c \"{fin}\""));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        into_wg0(&lab, "ip6tables", lan6),
        0,
        "no packet from the internet to the LAN prefix is forwarded into the tunnel"
    );
    let reject = rule_packets(
        &lab,
        "vps",
        "ip6tables",
        "filter",
        "MESHCTL-FORWARD",
        &["REJECT", lan6],
    );
    assert!(
        reject > 0,
        "the hub's REJECT for the LAN prefix refused the connection"
    );
    // The tunnel side still works both ways, statefully: the laptop reaches homepc, homepc the laptop.
    assert!(
        pings_within(&lab, "laptop", "2001:db8:77::20", 20),
        "laptop's public IPv6 → homepc"
    );
    assert!(
        pings_within(&lab, "homepc", LAPTOP6, 20),
        "homepc → laptop's public IPv6"
    );
}

/// Item 3: an interface of the hub other than its WAN and the tunnel (here a veth standing for
/// docker0) does not route into the protected ranges either.
#[test]
fn a_second_interface_on_the_hub_cannot_reach_a_client() {
    let (_keep, lab) = lab_from("fw-dock", |y| y);
    apply(&lab);
    let dock = ExtraNamespace(format!("{}-dock", lab.prefix()));
    let vps_ns = format!("{}-vps", lab.prefix());
    let made = std::process::Command::new("ip")
        .args(["netns", "add", &dock.0])
        .status()
        .unwrap();
    assert!(made.success());
    let link = std::process::Command::new("ip")
        .args([
            "link", "add", "dock0", "netns", &vps_ns, "type", "veth", "peer", "name", "eth0",
            "netns", &dock.0,
        ])
        .status()
        .unwrap();
    assert!(link.success(), "veth between the hub and the container");
    ok(
        &lab,
        "vps",
        "ip addr add 172.17.0.1/16 dev dock0 && ip addr add 2001:db8:d0c::1/64 dev dock0 nodad && ip link set dock0 up",
    );
    let setup = in_ns(
        &dock.0,
        "ip link set lo up && ip addr add 172.17.0.2/16 dev eth0 && ip addr add 2001:db8:d0c::2/64 dev eth0 nodad \
         && ip link set eth0 up && ip route add default via 172.17.0.1 && ip -6 route add default via 2001:db8:d0c::1",
    );
    assert!(setup.status.success(), "{}", text(&setup));
    count_into_wg0(&lab, "ip6tables", "2001:db8:d0c::2", CLIENTS6);
    count_into_wg0(&lab, "iptables", "172.17.0.2", "10.8.0.0/24");
    ok(
        &lab,
        "laptop",
        "(nc -6 -l -p 9092 >/dev/null 2>&1 </dev/null &) ; (nc -l -p 9093 >/dev/null 2>&1 </dev/null &) ; sleep 0.5",
    );
    // The hub learns the roaming laptop's endpoint from its handshake.
    assert!(
        pings_within(&lab, "laptop", "10.8.0.1", 20),
        "the laptop's tunnel is up"
    );
    // The container can talk to the hub itself: the link works.
    assert!(
        in_ns(&dock.0, "ping -c 1 -W 2 2001:db8:d0c::1")
            .status
            .success()
    );

    let v6 = in_ns(&dock.0, &format!("nc -6 -z -w 3 {LAPTOP6} 9092"));
    assert!(
        !v6.status.success(),
        "the container opened a connection to the laptop's public IPv6 address through the hub"
    );
    let v4 = in_ns(&dock.0, "nc -z -w 3 10.8.0.10 9093");
    assert!(
        !v4.status.success(),
        "the container reached the laptop's VPN address"
    );
    assert!(
        rule_packets(
            &lab,
            "vps",
            "ip6tables",
            "filter",
            "MESHCTL-FORWARD",
            &["REJECT", "!wg0", CLIENTS6]
        ) > 0,
        "refused by the hub's REJECT for everything not from the tunnel"
    );
    assert!(
        rule_packets(
            &lab,
            "vps",
            "iptables",
            "filter",
            "MESHCTL-FORWARD",
            &["REJECT", "!wg0", "10.8.0.0/24"]
        ) > 0,
        "refused by the hub's IPv4 REJECT for everything not from the tunnel"
    );
    assert_eq!(
        into_wg0(&lab, "ip6tables", CLIENTS6),
        0,
        "nothing forwarded into wg0 (IPv6)"
    );
    assert_eq!(
        into_wg0(&lab, "iptables", "10.8.0.0/24"),
        0,
        "nothing forwarded into wg0 (IPv4)"
    );
    // The laptop does answer connections from the tunnel side.
    ok(
        &lab,
        "laptop",
        "(nc -6 -l -p 9094 >/dev/null 2>&1 </dev/null &) ; sleep 0.5",
    );
    ok(&lab, "vps", &format!("nc -6 -z -w 3 {LAPTOP6} 9094"));
}

/// Item 4: a client (a lost phone's full-tunnel config) does not read the VPS provider's
/// metadata service at 169.254.169.254 through the hub.
#[test]
fn a_client_cannot_reach_the_providers_metadata_service() {
    let (_keep, lab) = lab_from("fw-meta", |y| {
        let y = y.replace(
            "    address: 10.8.0.10\n    tunnel: split\n",
            "    address: 10.8.0.10\n    tunnel: full\n",
        );
        assert!(
            y.contains("tunnel: full\n"),
            "the laptop is made full tunnel"
        );
        y
    });
    apply(&lab);
    // The metadata service: on inet, behind the hub's WAN, routed there as a cloud does.
    ok(
        &lab,
        "inet",
        &format!("ip addr add 169.254.169.254/32 dev {}", dev_of(INET4)),
    );
    ok(
        &lab,
        "vps",
        &format!("ip route add 169.254.169.254/32 via {INET4} dev eth0"),
    );
    let seen = lab.dir.join("metadata-seen");
    ok(
        &lab,
        "inet",
        &format!(
            "(nc -k -l -n -v -s 169.254.169.254 -p 80 >/dev/null 2>{} </dev/null &)",
            seen.display()
        ),
    );
    // Under load the listener can take longer than any fixed sleep: wait until it listens.
    ok(
        &lab,
        "inet",
        "for i in $(seq 100); do ss -Hltn 'sport = :80' | grep -q . && exit 0; sleep 0.1; done; exit 1",
    );
    assert!(
        pings_within(&lab, "laptop", "10.8.0.1", 20),
        "the laptop's tunnel is up"
    );
    let route = text(&lab.exec("laptop", "ip route get 169.254.169.254"));
    assert!(route.contains("dev wg0"), "through the tunnel: {route}");
    // The hub itself reaches it (its own traffic is not forwarded).
    ok(&lab, "vps", "nc -z -w 3 169.254.169.254 80");
    let count = || {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .matches("Connection received")
            .count()
    };
    // nc logs a connection after it accepted it; give a loaded machine up to 5 s to catch up
    // with the count expected, then report what was seen (fewer or more fails the asserts).
    let connections_after = |expected: usize| {
        for _ in 0..50 {
            if count() >= expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        count()
    };
    // For "nothing more came": one settled look, long enough for a late log line.
    let connections = || {
        std::thread::sleep(Duration::from_millis(1000));
        count()
    };
    let by_hub = connections_after(1);
    assert_eq!(by_hub, 1, "the metadata service is up");

    let reject = || {
        rule_packets(
            &lab,
            "vps",
            "iptables",
            "filter",
            "MESHCTL-FORWARD",
            &["REJECT", "169.254.0.0/16"],
        )
    };
    let from_laptop = |lab: &TestLab| lab.exec("laptop", "nc -z -w 3 169.254.169.254 80");
    assert!(
        !from_laptop(&lab).status.success(),
        "a client read the provider's metadata service through the hub"
    );
    assert!(reject() > 0, "refused by the hub's link-local REJECT");
    assert_eq!(
        connections(),
        by_hub,
        "the metadata service saw a forwarded connection"
    );

    // Without the rule the same connection goes through (so the refusal above is the rule's),
    // and apply puts the rule back.
    ok(
        &lab,
        "vps",
        "iptables -w -D MESHCTL-FORWARD -d 169.254.0.0/16 -i wg0 -j REJECT --reject-with icmp-port-unreachable",
    );
    let open = from_laptop(&lab);
    assert!(open.status.success(), "without the rule: {}", text(&open));
    assert_eq!(
        connections_after(by_hub + 1),
        by_hub + 1,
        "the connection went through"
    );
    apply(&lab);
    assert!(
        !from_laptop(&lab).status.success(),
        "refused again once apply restored the rule"
    );
}

/// Item 5: ICMPv6 from the WAN to the clients is limited to RFC 4890's list for forwarded
/// traffic; ping still works, nothing INVALID gets through.
#[test]
fn icmpv6_from_the_internet_to_a_client_follows_rfc_4890() {
    let (_keep, lab) = lab_from("fw-icmp6", |y| y);
    apply(&lab);
    assert!(
        pings_within(&lab, "laptop", "10.8.0.1", 20),
        "the laptop's tunnel is up"
    );
    assert!(
        pings_within(&lab, "inet", LAPTOP6, 10),
        "ping from the internet to a client works"
    );

    // On the laptop, every ICMPv6 message from inet is recorded by type for a few seconds.
    let seen = lab.dir.join("laptop-icmp6-types");
    // (A raw string: Python's indentation must survive.)
    let listen = format!(
        r#"import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(0.2)
types = []
end = time.time() + 4
while time.time() < end:
    try:
        data, src = s.recvfrom(2048)
    except socket.timeout:
        continue
    if src[0] == '{INET6}':
        types.append(data[0])
open('{}', 'w').write(' '.join(map(str, types)))
"#,
        seen.display()
    );
    ok(
        &lab,
        "laptop",
        &format!("(/usr/bin/python3 -c \"{listen}\" >/dev/null 2>&1 </dev/null &) ; sleep 0.5"),
    );
    let reject = || {
        rule_packets(
            &lab,
            "vps",
            "ip6tables",
            "filter",
            "MESHCTL-FORWARD",
            &["REJECT", "!wg0", CLIENTS6],
        )
    };
    let invalid = || {
        rule_packets(
            &lab,
            "vps",
            "ip6tables",
            "filter",
            "MESHCTL-FORWARD",
            &["DROP", "!wg0", CLIENTS6, "INVALID"],
        )
    };
    // Taken before the rules may exist (so the test fails on what the laptop sees, first).
    let counter = |needles: &[&str]| {
        try_rule_packets(
            &lab,
            "vps",
            "ip6tables",
            "filter",
            "MESHCTL-FORWARD",
            needles,
        )
        .unwrap_or(0)
    };
    let reject0 = counter(&["REJECT", "!wg0", CLIENTS6]);
    let invalid0 = counter(&["DROP", "!wg0", CLIENTS6, "INVALID"]);
    // A node information query (type 139, RFC 4620; conntrack: NEW) and an echo reply nobody
    // asked for (type 129; conntrack: INVALID). The kernel fills in ICMPv6 checksums.
    let send = format!(
        "import socket, struct\n\
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
s.sendto(struct.pack('!BBHHH8s', 139, 0, 0, 2, 0, b'nonce-01') + socket.inet_pton(socket.AF_INET6, '{LAPTOP6}'), ('{LAPTOP6}', 0))\n\
s.sendto(struct.pack('!BBHHH', 129, 0, 0, 4242, 1) + b'unsolicited', ('{LAPTOP6}', 0))\n"
    );
    ok(&lab, "inet", &format!("/usr/bin/python3 -c \"{send}\""));
    std::thread::sleep(Duration::from_secs(5));
    let types = std::fs::read_to_string(&seen).unwrap_or_else(|e| panic!("the listener ran: {e}"));
    assert!(
        types.trim().is_empty(),
        "the laptop received ICMPv6 of types {types:?} from the internet"
    );
    assert!(
        reject() > reject0,
        "the node information query was refused by the REJECT"
    );
    assert!(
        invalid() > invalid0,
        "the unsolicited echo reply was dropped as INVALID"
    );
    // Ping (echo request out, echo reply back) still works.
    assert!(
        pings_within(&lab, "inet", LAPTOP6, 10),
        "ping from the internet to a client still works"
    );
}
