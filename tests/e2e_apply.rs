//! End to end: `meshctl apply` on freshly built lab hosts must produce a network that works —
//! real WireGuard (wireguard-go), real routing through the NAS and the router's NAT, real
//! ip6tables on the hub — and keep it that way: idempotent, drift repaired exactly, peers
//! changed without disturbing others, saved plans refused when stale, and a reboot restored
//! from the persisted files alone. Each test builds its own lab (needs root; never skips).

mod support;

use std::time::Duration;

use support::{
    TestLab, add_router_route, assert_success, ok, own_inventory, pings_within, rule_packets, text,
};

/// Pings `addr` from `host` (a few tries: the first handshake takes a moment).
fn pings(lab: &TestLab, host: &str, addr: &str) -> bool {
    lab.exec(
        host,
        &format!("ping -c 1 -W 2 {addr} || ping -c 2 -W 2 {addr}"),
    )
    .status
    .success()
}

/// Applies and checks that every host converged.
fn apply(lab: &TestLab) -> String {
    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert!(out.status.success(), "apply failed:\n{t}");
    assert!(t.contains("3 host(s) converged, 0 failed."), "{t}");
    t
}

fn plan_exit(lab: &TestLab) -> (Option<i32>, String) {
    let out = lab.meshctl(&["plan", "--detailed-exitcode"]);
    (out.status.code(), text(&out))
}

/// The hub's peers as (public key, latest handshake, rx, tx), from `wg show` dumps of fields
/// that carry no secret.
fn hub_sessions(lab: &TestLab) -> Vec<(String, String, String)> {
    let hs = ok(lab, "vps", "wg show wg0 latest-handshakes");
    let tr = ok(lab, "vps", "wg show wg0 transfer");
    hs.lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let (k, h) = (f.next().unwrap().to_owned(), f.next().unwrap().to_owned());
            let t = tr
                .lines()
                .find(|t| t.starts_with(&k))
                .unwrap_or_default()
                .to_owned();
            (k, h, t)
        })
        .collect()
}

#[test]
fn one_apply_builds_a_working_network() {
    let (_keep, inv) = own_inventory("apply-net");
    let lab = TestLab::up("apply_network", &inv);
    let before: Vec<_> = ["vps", "nas", "laptop"]
        .iter()
        .map(|h| lab.sshd_counts(h))
        .collect();
    let out = apply(&lab);
    // Apply: one connection, at most three executions; then the verify it runs by default:
    // one more connection and one execution.
    assert!(out.contains("Applied and verified."), "{out}");
    for (i, h) in ["vps", "nas", "laptop"].iter().enumerate() {
        let after = lab.sshd_counts(h);
        assert_eq!(
            after.0 - before[i].0,
            2,
            "{h}: apply uses one connection, its verify one more"
        );
        assert!(
            after.1 - before[i].1 <= 4,
            "{h}: apply uses at most three executions, its verify one"
        );
    }
    add_router_route(&lab, &out);

    // 1. IPv4 across the tunnels and through the NAS into the home LAN, and back.
    assert!(
        pings_within(&lab, "laptop", "10.8.0.1", 20),
        "laptop → hub over the VPN"
    );
    assert!(
        pings_within(&lab, "laptop", "10.8.0.2", 20),
        "laptop → NAS over the VPN"
    );
    assert!(
        pings_within(&lab, "laptop", "192.168.178.20", 20),
        "laptop → homepc through the NAS"
    );
    assert!(
        pings(&lab, "homepc", "10.8.0.10"),
        "homepc → laptop through the router's static route and the NAS"
    );

    // 2. The laptop's public IPv6 address, a TCP connection out to the internet, and nothing
    //    from outside gets in: refused by the hub's firewall, whose REJECT counter rises.
    let addrs = ok(&lab, "laptop", "ip -6 addr show dev wg0");
    assert!(addrs.contains("2001:db8:10:0:100::a/128"), "{addrs}");
    // inet has no mount namespace of its own: its file lives in the lab directory.
    let got = lab.dir.join("inet-received");
    ok(
        &lab,
        "inet",
        &format!(
            "(nc -6 -l -p 8080 > {} 2>/dev/null </dev/null &) ; sleep 0.5",
            got.display()
        ),
    );
    ok(
        &lab,
        "laptop",
        "echo hello-from-laptop | nc -6 -N -w 5 2001:db8:ff::200 8080",
    );
    std::thread::sleep(Duration::from_millis(300));
    let received = std::fs::read_to_string(&got).unwrap_or_default();
    assert!(
        received.contains("hello-from-laptop"),
        "TCP over IPv6 from the laptop to inet: got {received:?}"
    );

    let counter = |lab: &TestLab, needles: &[&str]| {
        rule_packets(
            lab,
            "vps",
            "ip6tables",
            "filter",
            "MESHCTL-FORWARD",
            needles,
        )
    };
    let rejects = |lab: &TestLab| counter(lab, &["REJECT", "!wg0", "2001:db8:10:0:100::/72"]);
    let invalid =
        |lab: &TestLab| counter(lab, &["DROP", "!wg0", "2001:db8:10:0:100::/72", "INVALID"]);
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
    // A packet conntrack does not know (a stray FIN: INVALID, not NEW) is dropped, rather than
    // falling through to FORWARD's policy.
    let before = invalid(&lab);
    let fin = "import socket, struct\n\
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)\n\
s.setsockopt(socket.IPPROTO_IPV6, 7, 16)  # IPV6_CHECKSUM: the kernel fills in TCP's\n\
s.sendto(struct.pack('!HHIIBBHHH', 40000, 5555, 1, 0, 5 << 4, 0x01, 1024, 0, 0), ('2001:db8:10:0:100::a', 0))\n";
    ok(&lab, "inet", &format!("/usr/bin/python3 -c \"{fin}\""));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        invalid(&lab) > before,
        "a stray FIN from the internet to a client is dropped by the hub"
    );
    // The laptop really was listening: from the VPN side the same port answers.
    ok(
        &lab,
        "laptop",
        "(nc -6 -l -p 9091 >/dev/null 2>&1 </dev/null &) ; sleep 0.5",
    );
    ok(&lab, "vps", "nc -6 -z -w 3 2001:db8:10:0:100::a 9091");

    // 3. The NAS behind NAT stays reachable after the router's UDP mapping would have expired:
    //    only its keepalive (4 s in the lab inventory) keeps the mapping open.
    ok(
        &lab,
        "fritzbox",
        "sysctl -qw net.netfilter.nf_conntrack_udp_timeout=10 net.netfilter.nf_conntrack_udp_timeout_stream=10",
    );
    ok(&lab, "fritzbox", "conntrack -F 2>/dev/null || true");
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        lab.exec("vps", "ping -c 1 -W 3 10.8.0.2").status.success(),
        "hub → NAS after the NAT timeout"
    );

    // 4. Idempotent: a second apply changes nothing, plan exits 0.
    let again = apply(&lab);
    assert!(
        again.contains("Plan: 0 to add, 0 to change, 0 to remove"),
        "{again}"
    );
    let (code, t) = plan_exit(&lab);
    assert_eq!(code, Some(0), "{t}");
}

#[test]
fn drift_is_shown_exactly_and_repaired_exactly() {
    let (_keep, inv) = own_inventory("apply-drift");
    let lab = TestLab::up("apply_drift", &inv);
    apply(&lab);
    let laptop_key = ok(&lab, "laptop", "wg show wg0 public-key")
        .trim()
        .to_owned();

    // Drift by hand: a peer removed, a sysctl flipped, a route deleted, an owned rule deleted.
    ok(&lab, "vps", &format!("wg set wg0 peer {laptop_key} remove"));
    ok(&lab, "nas", "sysctl -qw net.ipv4.ip_forward=0");
    ok(
        &lab,
        "vps",
        "ip route del 192.168.178.0/24 dev wg0 proto 157",
    );
    ok(
        &lab,
        "vps",
        "ip6tables -w -D MESHCTL-FORWARD -d 2001:db8:10:0:100::/72 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT",
    );
    // A foreign rule outside meshctl's chains: left alone.
    ok(&lab, "vps", "iptables -w -A FORWARD -s 203.0.113.7 -j DROP");

    let (code, t) = plan_exit(&lab);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("+ peer laptop"), "{t}");
    assert!(t.contains("~ sysctl net.ipv4.ip_forward: 0 → 1"), "{t}");
    assert!(t.contains("+ route 192.168.178.0/24 dev wg0"), "{t}");
    assert!(t.contains("~ chain ipv6 filter/MESHCTL-FORWARD"), "{t}");
    assert!(
        t.contains("+-d 2001:db8:10:0:100::/72 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"),
        "the chain diff shows the missing rule:\n{t}"
    );
    assert!(
        t.contains("Plan: 2 to add, 2 to change, 0 to remove"),
        "exactly those four changes:\n{t}"
    );

    let out = apply(&lab);
    assert!(
        out.contains("Plan: 2 to add, 2 to change, 0 to remove"),
        "{out}"
    );
    let (code, t) = plan_exit(&lab);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        ok(&lab, "vps", "iptables -w -S FORWARD").contains("-A FORWARD -s 203.0.113.7/32 -j DROP"),
        "the foreign rule stays"
    );
    // The hub lost the laptop's session with the peer; the laptop starts a new handshake by
    // itself once its packets go unanswered (WireGuard's rekey timeout, about 15 s).
    assert!(
        pings_within(&lab, "laptop", "10.8.0.2", 30),
        "the network works again"
    );

    // A foreign DROP ahead of meshctl's jump shadows its rules: a warning, not a change.
    ok(&lab, "vps", "iptables -w -I FORWARD 1 -i wg0 -j DROP");
    let (code, t) = plan_exit(&lab);
    assert_eq!(
        code,
        Some(0),
        "a warning does not change the exit code:\n{t}"
    );
    assert!(t.contains("warning:"), "{t}");
}

#[test]
fn changing_one_peer_leaves_the_other_sessions_alone() {
    let (keep, inv) = own_inventory("apply-peer");
    let lab = TestLab::up("apply_peer", &inv);
    apply(&lab);
    assert!(
        pings_within(&lab, "laptop", "10.8.0.2", 20),
        "traffic on both tunnels first"
    );
    let ifindex = |h: &str| ok(&lab, h, "cat /sys/class/net/wg0/ifindex");
    let (vps_if, laptop_if) = (ifindex("vps"), ifindex("laptop"));
    let sessions = hub_sessions(&lab);
    let nas_key = ok(&lab, "nas", "wg show wg0 public-key").trim().to_owned();
    let nas_before = sessions
        .iter()
        .find(|s| s.0 == nas_key)
        .cloned()
        .expect("hub has the nas peer");

    // The laptop's keepalive changes (a peer change on the laptop) and a tablet joins (a new
    // peer on the hub, key generated on the device).
    let yaml = std::fs::read_to_string(&inv).unwrap();
    let yaml = yaml.replace(
        "    tunnel: split\n",
        "    tunnel: split\n    keepalive: 15\n",
    );
    let yaml = yaml.replace(
        "\nrouters:",
        "  tablet:\n    role: client\n    address: 10.8.0.12\n    public_key: \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\n\nrouters:",
    );
    std::fs::write(keep.path().join("lab.yaml"), yaml).unwrap();
    let (code, t) = plan_exit(&lab);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("~ peer vps"), "{t}");
    assert!(t.contains("+ peer tablet"), "{t}");
    apply(&lab);

    assert_eq!(
        ifindex("vps"),
        vps_if,
        "the hub's interface was not recreated"
    );
    assert_eq!(
        ifindex("laptop"),
        laptop_if,
        "the laptop's interface was not recreated"
    );
    let nas_after = hub_sessions(&lab)
        .into_iter()
        .find(|s| s.0 == nas_key)
        .expect("nas peer");
    assert_eq!(
        nas_after.1, nas_before.1,
        "the NAS's session on the hub was untouched (same handshake)"
    );
    let bytes = |t: &str| -> (u64, u64) {
        let f: Vec<u64> = t
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        (f[0], f[1])
    };
    let (b, a) = (bytes(&nas_before.2), bytes(&nas_after.2));
    assert!(
        a.0 >= b.0 && a.1 >= b.1,
        "transfer counters did not reset: {b:?} → {a:?}"
    );
    assert!(ok(&lab, "laptop", "wg show wg0 persistent-keepalive").contains("15"));
}

#[test]
fn a_saved_plan_is_applied_exactly_or_refused_when_stale() {
    let (keep, inv) = own_inventory("apply-saved");
    let lab = TestLab::up("apply_saved", &inv);
    let plan_file = keep.path().join("plan.json");
    let pf = plan_file.to_str().unwrap();

    // Made against empty hosts, then one host changes: refused, nothing done.
    assert_success(&lab.meshctl(&["plan", "-o", pf]), "plan -o");
    ok(&lab, "nas", "sysctl -qw net.ipv4.ip_forward=1");
    let out = lab.meshctl(&["apply", pf, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("host nas has changed since the plan"),
        "{}",
        text(&out)
    );
    assert!(
        !lab.exec("vps", "ip link show wg0").status.success(),
        "a refused plan changes nothing"
    );
    assert!(
        !lab.exec("vps", "test -e /run/meshctl/lock")
            .status
            .success(),
        "the lock is released"
    );

    // A fresh saved plan is applied.
    assert_success(&lab.meshctl(&["plan", "-o", pf]), "plan -o");
    let out = lab.meshctl(&["apply", pf, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(plan_exit(&lab).0, Some(0));

    // A corrupt plan file is refused with a clear message.
    std::fs::write(&plan_file, "{ not json").unwrap();
    let out = lab.meshctl(&["apply", pf, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is not a meshctl plan"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_reboot_is_restored_from_the_persisted_files_alone() {
    let (_keep, inv) = own_inventory("apply-reboot");
    let lab = TestLab::up("apply_reboot", &inv);
    let out = apply(&lab);
    add_router_route(&lab, &out);

    // Tear the runtime state down on every host: the interface, meshctl's chains and jumps,
    // its routes and NDP entries, and the sysctls back to their defaults.
    let teardown = "ip link del wg0; \
        for t in iptables ip6tables; do \
          $t-save | grep -- '--comment meshctl' | sed 's/^-A/-D/' | while read -r r; do $t -w $r; done; \
          for c in MESHCTL-FORWARD MESHCTL-INPUT; do $t -w -F $c 2>/dev/null; $t -w -X $c 2>/dev/null; done; \
        done; \
        iptables-save -t nat | grep -- '--comment meshctl' | sed 's/^-A/-D/' | while read -r r; do iptables -w -t nat $r; done; \
        iptables -w -t nat -F MESHCTL-POSTROUTING 2>/dev/null; iptables -w -t nat -X MESHCTL-POSTROUTING 2>/dev/null; \
        ip -6 neigh flush proxy; \
        sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0; true";
    for h in ["vps", "nas", "laptop"] {
        ok(&lab, h, teardown);
    }
    let (code, t) = plan_exit(&lab);
    assert_eq!(code, Some(2), "the teardown is seen as drift:\n{t}");

    // The boot path: exactly what the persisted files define (wg-quick's config, whose PostUp
    // restores sysctls, routes, NDP proxies and the firewall).
    for h in ["vps", "nas", "laptop"] {
        ok(&lab, h, "wg-quick up wg0 2>&1");
    }
    let (code, t) = plan_exit(&lab);
    assert_eq!(code, Some(0), "after the boot path the plan is empty:\n{t}");
    assert!(
        pings_within(&lab, "laptop", "192.168.178.20", 20),
        "and the network works"
    );
}

#[test]
fn ctrl_c_at_the_prompt_releases_every_lock() {
    let (keep, inv) = own_inventory("apply-ctrlc");
    let lab = TestLab::up("apply_ctrl_c", &inv);
    // A terminal of its own (a pty), Ctrl-C typed at the prompt, as a user would.
    let driver = keep.path().join("ctrlc.py");
    std::fs::write(
        &driver,
        r#"import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, sent, end = b"", False, time.time() + 60
while time.time() < end:
    if select.select([fd], [], [], 0.5)[0]:
        try:
            d = os.read(fd, 65536)
        except OSError:
            break
        if not d:
            break
        out += d
        if not sent and b"Only 'yes' is accepted" in out:
            time.sleep(0.3)
            os.write(fd, b"\x03")
            sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(0 if sent else 3)
"#,
    )
    .unwrap();
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&driver)
        .args([support::MESHCTL, "apply", "-i"])
        .arg(&inv)
        .arg("--ssh-config")
        .arg(lab.ssh_config())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        out.status.success(),
        "the prompt was shown and Ctrl-C typed:\n{t}"
    );
    assert!(t.contains("Apply cancelled"), "{t}");
    for h in ["vps", "nas", "laptop"] {
        assert!(
            !lab.exec(h, "test -e /run/meshctl/lock").status.success(),
            "{h} is still locked after Ctrl-C"
        );
        assert!(
            !lab.exec(h, "ip link show wg0").status.success(),
            "{h}: nothing was changed"
        );
    }
}
