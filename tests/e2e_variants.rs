//! Idempotency scenarios on inventories other than the reference one: for each, one apply on
//! fresh lab hosts converges, a second apply changes nothing and plan is empty — and taking a
//! feature away again (NAT, the IPv6 plan, a host) removes exactly what meshctl had made.

mod support;

use support::{TestLab, own_inventory, pings_within, text};

fn converges_twice(lab: &TestLab) {
    let first = lab.meshctl(&["apply", "--yes"]);
    assert!(first.status.success(), "first apply:\n{}", text(&first));
    let second = lab.meshctl(&["apply", "--yes"]);
    assert!(
        text(&second).contains("Plan: 0 to add, 0 to change, 0 to remove"),
        "the second apply changes nothing:\n{}",
        text(&second)
    );
    let plan = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "plan after apply is empty:\n{}",
        text(&plan)
    );
}

#[test]
fn routed_prefix_without_nat_and_two_laptops() {
    let (_keep, inv) = own_inventory("variant-routed");
    // Without `mtu`: wg-quick works the MTU out, so `wg-quick up` brings the interfaces up
    // (the other path of `create_interface`; every other lab inventory sets one).
    let yaml = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("  mtu: 1420\n", "")
        .replace("mode: on-link", "mode: routed")
        .replace("    nat: true\n", "    nat: false\n")
        .replace(
            "  phone:\n",
            "  laptop2:\n    role: client\n    ssh: root@laptop2\n    address: 10.8.0.20\n    keepalive: 10\n  phone:\n",
        );
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("variant_routed", &inv);
    converges_twice(&lab);
    let vps = lab.exec(
        "vps",
        "ip -6 neigh show proxy; iptables-save -t nat; sysctl -n net.ipv6.conf.eth0.proxy_ndp",
    );
    let vps = text(&vps);
    assert!(
        !vps.contains("proxy"),
        "routed mode: no NDP proxy entries:\n{vps}"
    );
    assert!(
        !vps.contains("MESHCTL-POSTROUTING"),
        "nat: false: no masquerade chain:\n{vps}"
    );
    assert!(
        lab.exec(
            "laptop2",
            "ping -c 1 -W 2 10.8.0.10 || ping -c 2 -W 2 10.8.0.10"
        )
        .status
        .success(),
        "client to client through the hub"
    );
}

#[test]
fn taking_features_away_removes_exactly_what_meshctl_made() {
    let (keep, inv) = own_inventory("variant-remove");
    let lab = TestLab::up("variant_remove", &inv);
    converges_twice(&lab);
    // A foreign route and rule that must survive the removals.
    assert!(lab.exec("vps", "ip route add 203.0.113.0/24 dev eth0 && iptables -w -A FORWARD -s 203.0.113.9 -j ACCEPT").status.success());

    // No NAT, no IPv6 plan, and the laptop leaves the network.
    let yaml = std::fs::read_to_string(&inv).unwrap();
    let start = yaml.find("  ipv6:\n").unwrap();
    let end = yaml[start..].find("  dns:").unwrap() + start;
    let yaml = format!("{}{}", &yaml[..start], &yaml[end..])
        .replace("    nat: true\n", "    nat: false\n");
    let start = yaml.find("  laptop:\n").unwrap();
    let end = yaml[start..].find("  phone:\n").unwrap() + start;
    let yaml = format!("{}{}", &yaml[..start], &yaml[end..]);
    std::fs::write(keep.path().join("lab.yaml"), yaml).unwrap();

    let plan = lab.meshctl(&["plan", "--detailed-exitcode"]);
    let t = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{t}");
    for removal in [
        "- peer laptop",
        "- chain ipv4 nat/MESHCTL-POSTROUTING",
        "- jump ipv4 nat/POSTROUTING -> MESHCTL-POSTROUTING",
        "- ndp proxy 2001:db8:10:0:100::a dev eth0",
        "- address 2001:db8:10:0:100::1/72 on wg0",
        "~ file /etc/meshctl/rules.v6",
    ] {
        assert!(t.contains(removal), "missing `{removal}` in:\n{t}");
    }
    let out = lab.meshctl(&["apply", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lab.meshctl(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );
    let left = text(&lab.exec("vps", "ip route show 203.0.113.0/24; iptables -w -S FORWARD; ip6tables-save; wg show wg0 peers | wc -l"));
    assert!(
        left.contains("203.0.113.0/24 dev eth0"),
        "the foreign route stays:\n{left}"
    );
    assert!(
        left.contains("-A FORWARD -s 203.0.113.9/32 -j ACCEPT"),
        "the foreign rule stays:\n{left}"
    );
    let v6 = text(&lab.exec("vps", "ip6tables-save"));
    assert!(
        !v6.contains("MESHCTL-FORWARD"),
        "the IPv6 FORWARD chain of meshctl's and its jump are gone:\n{v6}"
    );
}

#[test]
fn a_full_tunnel_laptop_reaches_the_internet_through_the_hub() {
    let (_keep, inv) = own_inventory("variant-full");
    let yaml = std::fs::read_to_string(&inv).unwrap().replace(
        "    address: 10.8.0.10\n    tunnel: split\n",
        "    address: 10.8.0.10\n    tunnel: full\n",
    );
    assert!(
        yaml.contains("tunnel: full\n"),
        "the laptop is made full tunnel"
    );
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("variant_full", &inv);
    converges_twice(&lab);

    // inet sees the laptop's connection coming from the hub's public address (the hub's NAT):
    // all of the laptop's IPv4 goes through the tunnel, and the tunnel itself still works. In
    // the lab, inet shares the laptop's segment (a connected route wins over the tunnel, as
    // with wg-quick), so give it an address somewhere else on the "internet" first.
    let dev = "$(ip -o -4 addr show | awk '/198.51.100.200/ {print $2}')";
    assert!(
        lab.exec("inet", &format!("ip addr add 203.0.113.200/24 dev {dev}"))
            .status
            .success()
    );
    assert!(
        lab.exec("internet", "ip addr add 203.0.113.1/24 dev br0")
            .status
            .success()
    );
    let seen = lab.dir.join("inet-seen");
    let listen = format!(
        "(nc -l -n -v -p 7070 >/dev/null 2>{} </dev/null &) ; sleep 0.5",
        seen.display()
    );
    assert!(lab.exec("inet", &listen).status.success());
    let out = lab.exec(
        "laptop",
        "ping -c 1 -W 2 10.8.0.1 >/dev/null; echo hi | nc -N -w 5 203.0.113.200 7070",
    );
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let seen = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(
        seen.contains("198.51.100.10"),
        "inet must see the hub's address, not the laptop's own 198.51.100.3: {seen:?}"
    );
    let route = text(&lab.exec("laptop", "ip route get 203.0.113.200"));
    assert!(route.contains("dev wg0"), "{route}");
    assert!(
        pings_within(&lab, "laptop", "192.168.178.10", 20),
        "the home LAN through the tunnel"
    );
}

#[test]
fn a_home_lan_with_an_ipv6_prefix_is_routed_to_the_clients() {
    let (_keep, inv) = own_inventory("variant-lan6");
    let yaml = std::fs::read_to_string(&inv).unwrap().replace(
        "      address: 192.168.178.10\n",
        "      address: 192.168.178.10\n      ipv6_prefix: 2001:db8:77::/64\n      ipv6_address: 2001:db8:77::10\n",
    );
    assert!(
        yaml.contains("ipv6_prefix"),
        "the NAS's LAN gets an IPv6 prefix"
    );
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("variant_lan6", &inv);

    // The home LAN's IPv6, as the router's SLAAC would hand it out (the lab has none).
    let dev = |ip: &str| format!("$(ip -o -4 addr show | awk '/{ip}\\// {{print $2}}')");
    let run = |host: &str, cmd: &str| {
        let out = lab.exec(host, cmd);
        assert!(out.status.success(), "{host}: {cmd}: {}", text(&out));
    };
    run(
        "nas",
        &format!(
            "ip -6 addr add 2001:db8:77::10/64 dev {} nodad",
            dev("192.168.178.10")
        ),
    );
    run(
        "fritzbox",
        &format!(
            "ip -6 addr add 2001:db8:77::1/64 dev {} nodad && sysctl -qw net.ipv6.conf.all.forwarding=1",
            dev("192.168.178.1")
        ),
    );
    run(
        "homepc",
        &format!(
            "ip -6 addr add 2001:db8:77::20/64 dev {} nodad && ip -6 route add default via 2001:db8:77::1",
            dev("192.168.178.20")
        ),
    );

    let first = lab.meshctl(&["apply", "--yes"]);
    let t = text(&first);
    assert!(first.status.success(), "{t}");
    let step = "fritzbox: add the static IPv6 route 2001:db8:10:0:100::/72 via 2001:db8:77::10";
    assert!(t.contains(step), "the router's IPv6 manual step:\n{t}");
    run(
        "fritzbox",
        "ip -6 route add 2001:db8:10:0:100::/72 via 2001:db8:77::10",
    );
    assert_eq!(
        lab.meshctl(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );

    let ping = |host: &str, addr: &str| pings_within(&lab, host, addr, 20);
    assert!(
        ping("laptop", "2001:db8:77::20"),
        "laptop's public IPv6 → homepc on the home LAN"
    );
    assert!(
        ping("homepc", "2001:db8:10:0:100::a"),
        "homepc → laptop's public IPv6"
    );
}

#[test]
fn two_sites_reach_each_others_home_lan_through_the_vpn() {
    let (_keep, inv) = own_inventory("variant-sites");
    let yaml = std::fs::read_to_string(&inv)
        .unwrap()
        .replace(
            "  laptop:\n    role: client",
            "  nas2:\n    role: gateway\n    ssh: root@nas2\n    address: 10.8.0.3\n    keepalive: 4\n    lan:\n      subnet: 192.168.50.0/24\n      interface: eth0\n      address: 192.168.50.10\n  laptop:\n    role: client",
        )
        .replace(
            "    gateway: nas\n",
            "    gateway: nas\n  speedport:\n    lan: 192.168.50.0/24\n    address: 192.168.50.1\n    gateway: nas2\n",
        );
    assert!(yaml.contains("speedport:"), "a second site");
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("variant_sites", &inv);
    // Both gateways drop forwarded traffic by default (as hosts with Docker or ufw do): only
    // meshctl's accepts let the sites through.
    for nas in ["nas", "nas2"] {
        assert!(
            lab.exec(nas, "iptables -w -P FORWARD DROP")
                .status
                .success()
        );
    }
    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Each router's manual steps, carried out as printed.
    let mut routes = 0;
    for line in t
        .lines()
        .filter(|l| l.contains(": add the static IPv4 route "))
    {
        let router = line.trim_start_matches("  - ").split(':').next().unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |w: &str| words[words.iter().position(|x| *x == w).unwrap() + 1];
        let cmd = format!("ip route replace {} via {}", at("route"), at("via"));
        assert!(lab.exec(router, &cmd).status.success(), "{router}: {cmd}");
        routes += 1;
    }
    assert_eq!(
        routes, 4,
        "the VPN and the other site's LAN, on each router:\n{t}"
    );
    assert_eq!(
        lab.meshctl(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );
    assert!(
        pings_within(&lab, "fritzbox-pc", "192.168.50.20", 20),
        "a PC at one site reaches a PC at the other"
    );
    assert!(
        pings_within(&lab, "speedport-pc", "192.168.178.20", 20),
        "and back"
    );
}

#[test]
fn a_vlan_named_wan_interface_converges_and_its_sysctls_load_at_boot() {
    // A WAN interface with a dot (a VLAN): its per-interface sysctl key must be written the way
    // sysctl reads it (`net/ipv6/conf/eth0.100/proxy_ndp`), else apply never converges.
    let (_keep, inv) = own_inventory("variant-vlan");
    let yaml = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("    wan_interface: eth0\n", "    wan_interface: eth0.100\n");
    assert!(yaml.contains("wan_interface: eth0.100"));
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("variant_vlan", &inv);
    assert!(
        text(&lab.exec("vps", "ip -o link show")).contains("eth0.100@"),
        "the lab gives the hub a WAN named eth0.100"
    );
    converges_twice(&lab);
    let proxy_ndp = "cat /proc/sys/net/ipv6/conf/eth0.100/proxy_ndp";
    assert_eq!(text(&lab.exec("vps", proxy_ndp)).trim(), "1");
    // The drop-in spells the key with slashes, and `sysctl -p` (what the boot script runs)
    // loads it.
    let conf = lab.ssh("vps", "cat /etc/sysctl.d/90-meshctl.conf");
    assert!(
        text(&conf).contains("net/ipv6/conf/eth0.100/proxy_ndp = 1"),
        "{}",
        text(&conf)
    );
    let boot = lab.ssh(
        "vps",
        "echo 0 > /proc/sys/net/ipv6/conf/eth0.100/proxy_ndp && \
         sysctl -q -p /etc/sysctl.d/90-meshctl.conf && cat /proc/sys/net/ipv6/conf/eth0.100/proxy_ndp",
    );
    assert!(boot.status.success(), "sysctl -p: {}", text(&boot));
    assert_eq!(String::from_utf8_lossy(&boot.stdout).trim(), "1");
    // The NDP proxy on the VLAN works: the laptop's public address reaches the internet.
    assert!(
        pings_within(&lab, "laptop", "2001:db8:ff::200", 20),
        "laptop → inet over IPv6 through eth0.100"
    );
}

#[test]
fn a_gateway_that_becomes_a_client_loses_its_firewall_chains_and_their_files() {
    // A client's gather reads the firewall only beside meshctl's rules files: the chains a
    // gateway had are found through them, removed, and the files after them.
    let (keep, inv) = own_inventory("variant-demote");
    let lab = TestLab::up("variant_demote", &inv);
    converges_twice(&lab);
    let fw = "iptables-save; ip6tables-save; ls /etc/meshctl";
    let before = text(&lab.exec("nas", fw));
    assert!(
        before.contains(":MESHCTL-FORWARD") && before.contains("rules.v4"),
        "the gateway has its IPv4 chain and its file:\n{before}"
    );

    let yaml = std::fs::read_to_string(&inv).unwrap();
    let start = yaml.find("    lan:\n").unwrap();
    let end = yaml[start..].find("  laptop:\n").unwrap() + start;
    let yaml = format!("{}{}", &yaml[..start], &yaml[end..])
        .replace("  nas:\n    role: gateway\n", "  nas:\n    role: client\n");
    let start = yaml.find("routers:\n").unwrap();
    let end = yaml[start..].find("# Read only by").unwrap() + start;
    let yaml = format!("{}{}", &yaml[..start], &yaml[end..]);
    assert!(yaml.contains("  nas:\n    role: client\n") && !yaml.contains("fritzbox"));
    std::fs::write(keep.path().join("lab.yaml"), yaml).unwrap();

    let plan = lab.meshctl(&["plan", "--detailed-exitcode", "--limit", "nas"]);
    let t = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{t}");
    for removal in [
        "- chain ipv4 filter/MESHCTL-FORWARD",
        "- jump ipv4 filter/FORWARD -> MESHCTL-FORWARD",
        "- file /etc/meshctl/rules.v4",
    ] {
        assert!(t.contains(removal), "missing `{removal}` in:\n{t}");
    }
    let out = lab.meshctl(&["apply", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lab.meshctl(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0),
        "converged without reading the chains again"
    );
    let after = text(&lab.exec("nas", fw));
    assert!(
        !after.contains("MESHCTL") && !after.contains("rules.v"),
        "no chain, jump or rules file of meshctl's is left:\n{after}"
    );
}
