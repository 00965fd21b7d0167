//! End-to-end tests of `meshctl lab` on real namespaces (root required; they never skip).
//! Each test builds its own lab from `inventory/lab.yaml`, so they run in parallel.

mod support;

use std::path::Path;
use std::process::Command;

use support::{TestLab, assert_success, process_alive};

const INVENTORY: &str = "inventory/lab.yaml";
const MANAGED: [&str; 3] = ["vps", "nas", "laptop"];

fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn ssh_with_known_hosts(lab: &TestLab, host: &str, known_hosts: &Path) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg(lab.ssh_config())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([host, "true"])
        .output()
        .expect("run ssh")
}

#[test]
fn managed_hosts_answer_ssh_with_strict_host_key_checking() {
    let lab = TestLab::up("lab_ssh", Path::new(INVENTORY));
    let state = lab.state();
    for kind in [
        "internet", "inet", "fritzbox", "homepc", "vps", "nas", "laptop",
    ] {
        assert!(
            state.hosts.contains_key(kind),
            "lab has no {kind}: {:?}",
            state.hosts.keys()
        );
    }
    assert!(
        !state.hosts.contains_key("phone"),
        "an unmanaged client gets no namespace"
    );

    // The inventory's own targets (root@vps ...) work against the lab's ssh_config.
    for host in MANAGED {
        let before = lab.sshd_counts(host);
        assert_success(
            &lab.ssh(&format!("root@{host}"), "true"),
            &format!("ssh root@{host} true"),
        );
        let (c, s) = lab.sshd_counts(host);
        assert_eq!(
            (c, s),
            (before.0 + 1, before.1 + 1),
            "{host}: one connection, one session logged"
        );
    }
    assert_success(
        &lab.meshctl(&["lab", "status", "--dir", lab.dir.to_str().unwrap()]),
        "lab status",
    );

    // Host key checking stays on: no entry, or a different key, is refused.
    let empty = lab.dir.join("known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    let out = ssh_with_known_hosts(&lab, "vps", &empty);
    assert!(
        !out.status.success(),
        "ssh accepted vps with an empty known_hosts"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let known = std::fs::read_to_string(lab.dir.join("known_hosts")).unwrap();
    let laptop_key = known.lines().find(|l| l.starts_with("laptop ")).unwrap();
    let wrong = lab.dir.join("known_hosts.wrong");
    std::fs::write(&wrong, laptop_key.replacen("laptop", "vps", 1) + "\n").unwrap();
    let out = ssh_with_known_hosts(&lab, "vps", &wrong);
    assert!(
        !out.status.success(),
        "ssh accepted vps with laptop's host key"
    );

    // Hosts that are not lab hosts are named in the error.
    let out = lab.exec("phone", "true");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("phone is not a host of the lab"));
    // lab exec returns the command's exit code.
    assert_eq!(lab.exec("inet", "exit 7").status.code(), Some(7));
}

#[test]
fn hosts_do_not_share_wireguard_or_meshctl_dirs() {
    let lab = TestLab::up("lab_isolation", Path::new(INVENTORY));
    let marker = format!("isolation-{}", lab.prefix());
    assert_success(
        &lab.ssh(
            "nas",
            &format!("echo x > /etc/wireguard/{marker} && echo y > /run/meshctl/{marker}"),
        ),
        "write markers on nas",
    );
    // lab exec enters the same mount namespace as the host's sshd.
    assert_success(
        &lab.exec("nas", &format!("test -f /etc/wireguard/{marker}")),
        "nas sees its file",
    );
    for host in ["vps", "laptop"] {
        for dir in ["/etc/wireguard", "/run/meshctl"] {
            let out = lab.ssh(host, &format!("test ! -e {dir}/{marker}"));
            assert_success(&out, &format!("{host} must not see nas's {dir}/{marker}"));
        }
    }
    for dir in ["/etc/wireguard", "/run/meshctl"] {
        assert!(
            !Path::new(dir).join(&marker).exists(),
            "the machine sees nas's {dir}/{marker}"
        );
    }
    // Each host has its own hostname (its inventory name); the machine keeps its own.
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        assert_success(&lab.ssh("nas", "hostname"), "hostname").trim(),
        "nas"
    );
    assert_eq!(
        assert_success(&lab.exec("vps", "hostname"), "hostname").trim(),
        "vps"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        machine
    );
    // Each host has a clean /root and no systemd directory of the machine.
    assert_success(
        &lab.ssh(
            "vps",
            "test -z \"$(ls -A /root)\" && test ! -d /run/systemd/system",
        ),
        "clean vps",
    );
}

#[test]
fn gateway_reaches_inet_through_nat_but_inet_cannot_reach_the_lan() {
    let lab = TestLab::up("lab_nat", Path::new(INVENTORY));
    // inet has no route to 192.168.178.0/24: the answer can only come back through the NAT.
    assert_success(
        &lab.ssh("nas", "ping -c1 -W3 198.51.100.200"),
        "nas pings inet",
    );
    let counters = assert_success(
        &lab.exec("fritzbox", "iptables -w -t nat -L POSTROUTING -v -n -x"),
        "fritzbox NAT counters",
    );
    let masq = counters
        .lines()
        .find(|l| l.contains("MASQUERADE"))
        .expect("MASQUERADE rule");
    let packets: u64 = masq.split_whitespace().next().unwrap().parse().unwrap();
    assert!(packets > 0, "nothing was masqueraded: {counters}");

    let out = lab.exec("inet", "ping -c1 -W1 192.168.178.10");
    assert!(
        !out.status.success(),
        "inet reached the gateway's LAN address"
    );
    // The home LAN host sees the gateway; the hub and inet talk IPv4 and IPv6; clients reach the hub.
    assert_success(
        &lab.exec("homepc", "ping -c1 -W3 192.168.178.10"),
        "homepc pings nas",
    );
    assert_success(
        &lab.ssh("vps", "ping -6 -c1 -W3 2001:db8:ff::200"),
        "vps pings inet over IPv6",
    );
    assert_success(
        &lab.ssh("laptop", "ping -c1 -W3 198.51.100.10"),
        "laptop pings the hub",
    );
}

#[test]
fn lab_down_removes_namespaces_and_wireguard_go_started_over_ssh() {
    let lab = TestLab::up("lab_down", Path::new(INVENTORY));
    let state = lab.state();
    let ns = state.hosts["vps"].namespace.clone();
    assert_success(
        &lab.ssh("vps", "wireguard-go wg0 </dev/null >/dev/null 2>&1"),
        "start wireguard-go on vps",
    );
    // `lab exec` finds wireguard-go's socket in the host's own /run/wireguard.
    assert_success(&lab.exec("vps", "wg show wg0"), "wg show on vps");
    let out = Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .unwrap();
    let wg_pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "wireguard-go")
        })
        .collect();
    assert_eq!(wg_pids.len(), 1, "one wireguard-go in {ns}");
    let sshd_pids: Vec<u32> = state.hosts.values().filter_map(|h| h.sshd_pid).collect();
    assert_eq!(sshd_pids.len(), 3);

    assert_success(&lab.down(), "lab down");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", state.prefix)))
        .collect();
    assert!(left.is_empty(), "namespaces left after lab down: {left:?}");
    for pid in wg_pids.iter().chain(&sshd_pids) {
        assert!(!process_alive(*pid), "process {pid} survived lab down");
    }
    assert_success(&lab.down(), "a second lab down");
}

#[test]
fn lab_up_rebuilds_a_running_lab_and_down_works_without_state() {
    let lab = TestLab::up("lab_rebuild", Path::new(INVENTORY));
    let old = lab.state();
    let out = lab.meshctl(&[
        "lab",
        "up",
        "-i",
        INVENTORY,
        "--dir",
        lab.dir.to_str().unwrap(),
    ]);
    assert_success(&out, "second lab up");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilding"));
    let new = lab.state();
    assert_eq!(new.prefix, old.prefix);
    assert!(
        !process_alive(old.hosts["vps"].sshd_pid.unwrap()),
        "old sshd still runs"
    );
    assert_success(&lab.ssh("vps", "true"), "ssh after rebuild");

    // A crashed run may leave no state behind: down finds the namespaces by prefix.
    std::fs::remove_file(lab.dir.join("lab.json")).unwrap();
    assert_success(&lab.down(), "lab down without lab.json");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", new.prefix)))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
