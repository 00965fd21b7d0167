//! End to end: `network.ipv6.mode: routed`. The lab's provider routes the clients' prefix to the
//! hub's public address (no NDP): after one apply a client reaches the internet over IPv6, the
//! internet cannot open a connection to the client (the hub's REJECT rule), and the hub answers
//! no neighbour solicitations for the clients (no NDP proxy entries). Needs root; never skips.

mod support;

use std::time::Duration;

use support::{TestLab, ok, own_inventory, pings_within, rule_packets, text};

#[test]
fn a_routed_prefix_carries_the_clients_ipv6_without_ndp() {
    let (_keep, inv) = own_inventory("routed-v6");
    let yaml = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("mode: on-link", "mode: routed");
    assert!(yaml.contains("mode: routed"));
    std::fs::write(&inv, yaml).unwrap();
    let lab = TestLab::up("routed_v6", &inv);
    let route = ok(&lab, "internet", "ip -6 route show 2001:db8:10:0:100::/72");
    assert!(
        route.contains("via 2001:db8:10::1 dev br0"),
        "the provider routes the clients' prefix to the hub: {route:?}"
    );

    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert!(out.status.success(), "apply failed:\n{t}");
    assert!(t.contains("3 host(s) converged, 0 failed."), "{t}");

    // 1. No NDP proxy on the hub: routed mode answers no neighbour solicitations.
    let proxies = ok(&lab, "vps", "ip -6 neigh show proxy");
    assert!(proxies.trim().is_empty(), "no NDP proxy entries: {proxies}");

    // 2. The laptop's public address reaches inet over IPv6: a TCP connection.
    assert!(
        pings_within(&lab, "laptop", "10.8.0.1", 20),
        "laptop → hub over the VPN"
    );
    let got = lab.dir.join("inet-received");
    ok(
        &lab,
        "inet",
        &format!(
            "(nc -6 -l -p 8080 > {} 2>/dev/null </dev/null &) ; sleep 0.5",
            got.display()
        ),
    );
    let sent = lab.exec(
        "laptop",
        "echo hello-routed | nc -6 -N -w 5 2001:db8:ff::200 8080",
    );
    std::thread::sleep(Duration::from_millis(300));
    let received = std::fs::read_to_string(&got).unwrap_or_default();
    assert!(
        received.contains("hello-routed"),
        "TCP over IPv6 from the laptop to inet through the routed prefix: got {received:?} ({})",
        text(&sent)
    );

    // 3. inet cannot open a connection to the laptop: the hub's REJECT rule refuses it.
    let rejects = |lab: &TestLab| {
        rule_packets(
            lab,
            "vps",
            "ip6tables",
            "filter",
            "MESHCTL-FORWARD",
            &["REJECT", "!wg0", "2001:db8:10:0:100::/72"],
        )
    };
    let before = rejects(&lab);
    ok(
        &lab,
        "laptop",
        "(nc -6 -l -p 9090 >/dev/null 2>&1 </dev/null &) ; sleep 0.5",
    );
    let conn = lab.exec("inet", "nc -6 -z -w 3 2001:db8:10:0:100::a 9090");
    assert!(
        !conn.status.success(),
        "a connection from the internet to a client must be refused"
    );
    assert!(
        rejects(&lab) > before,
        "the refusal must come from the hub's REJECT rule"
    );
    // The laptop was listening: from the VPN side the port answers.
    ok(
        &lab,
        "laptop",
        "(nc -6 -l -p 9091 >/dev/null 2>&1 </dev/null &) ; sleep 0.5",
    );
    ok(&lab, "vps", "nc -6 -z -w 3 2001:db8:10:0:100::a 9091");
}
