//! End to end on lab machines (booted Debian with systemd, fresh like a rented VPS: no
//! WireGuard tools, no iptables, login `admin` with sudo, no root login): the one-shot
//! provisioning of a friend's setup. An inventory from `meshctl init`, one `apply`, a network
//! that works; reboots from inside that bring all of it back by themselves; a drift made by
//! hand in a persisted file that the plan shows after a reboot; every remote command run
//! through `sudo -n`, and a host whose login lost sudo failing alone. Needs root; never skips.

mod support;

use std::path::{Path, PathBuf};

use support::{TestLab, add_router_route, live_psk, ok, pings_within, pubkey, text};

/// Writes the starting inventory the way a user would, with `meshctl init` flags for the lab's
/// topology (the hub's public address and /64, the NAS's LAN and router, the laptop, a phone),
/// then adds preshared keys and what only the lab reads: its `lab:` section, copied from
/// `inventory/lab.yaml`.
fn init_inventory(dir: &Path) -> PathBuf {
    let inv = dir.join("meshctl.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["init", "-o"])
        .arg(&inv)
        .args([
            "--name",
            "lab",
            "--hub",
            "admin@vps",
            "--endpoint",
            "198.51.100.10",
            "--ipv6-prefix",
            "2001:db8:10::/64",
            "--gateway",
            "admin@nas",
            "--lan",
            "192.168.178.0/24",
            "--router",
            "fritzbox=192.168.178.1",
            "--client",
            "laptop=root@laptop",
            "--phone",
            "phone",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run meshctl init");
    assert!(out.status.success(), "meshctl init: {}", text(&out));
    let reference =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/lab.yaml"))
            .unwrap();
    let lab_section = &reference[reference.find("\nlab:\n").expect("a lab: section")..];
    // Preshared keys too: a fresh hub has no `wg` in step 1, so it makes them after its install.
    let mut yaml = std::fs::read_to_string(&inv).unwrap().replacen(
        "network:\n",
        "network:\n  preshared_keys: true\n",
        1,
    );
    yaml.push_str(lab_section);
    std::fs::write(&inv, yaml).unwrap();
    inv
}

/// ci/demo's reachability checks: over the tunnels, into the home LAN and back, out to the
/// internet from the laptop's public IPv6 address, and nothing from the internet in.
fn assert_network_works(lab: &TestLab, when: &str) {
    for (to, what) in [
        ("10.8.0.1", "laptop → hub over the VPN"),
        ("10.8.0.2", "laptop → NAS over the VPN"),
        ("192.168.178.20", "laptop → homepc through the NAS"),
    ] {
        assert!(pings_within(lab, "laptop", to, 30), "{when}: {what}");
    }
    assert!(
        pings_within(lab, "homepc", "10.8.0.10", 10),
        "{when}: homepc → laptop (router's static route, NAS, tunnels)"
    );
    ok(
        lab,
        "inet",
        "(nc -6 -l -p 7070 >/dev/null 2>&1 </dev/null &); sleep 0.3",
    );
    assert!(
        lab.exec("laptop", "nc -6 -z -w 3 2001:db8:ff::200 7070")
            .status
            .success(),
        "{when}: laptop → inet over IPv6 from its public address (TCP)"
    );
    ok(
        lab,
        "laptop",
        "(nc -6 -l -p 8080 >/dev/null 2>&1 </dev/null &); sleep 0.3",
    );
    assert!(
        !lab.exec("inet", "nc -6 -z -w 3 2001:db8:10:0:100::a 8080")
            .status
            .success(),
        "{when}: inet → the laptop's public IPv6 address must be refused by the hub"
    );
    ok(lab, "laptop", "pkill -f 'nc -6 -l -p 808[0]' || true");
}

fn plan(lab: &TestLab) -> (Option<i32>, String) {
    let out = lab.meshctl(&["plan", "--detailed-exitcode"]);
    (out.status.code(), text(&out))
}

/// What the machine's journal (this boot) says about logins and sudo, read from outside
/// (`lab exec`: no SSH session of the test's own): (logins as admin, logins as root, commands
/// meshctl's transport ran through sudo).
fn login_audit(lab: &TestLab, host: &str) -> (usize, usize, usize) {
    let sshd = ok(lab, host, "journalctl --no-pager -q -b -u ssh.service");
    let sudo = ok(lab, host, "journalctl --no-pager -q -b _COMM=sudo");
    let count = |t: &str, needle: &str| t.lines().filter(|l| l.contains(needle)).count();
    (
        count(&sshd, "Accepted publickey for admin "),
        count(&sshd, "for root "),
        sudo.lines()
            .filter(|l| l.contains("admin : ") && l.contains("USER=root ; COMMAND=/usr/bin/sh -c"))
            .filter(|l| l.contains("meshctl-transport: sudo ok"))
            .count(),
    )
}

#[test]
fn a_fresh_vps_and_nas_in_one_apply_survive_reboots_through_sudo() {
    let dir = tempfile::Builder::new()
        .prefix("e2e-machines")
        .tempdir()
        .unwrap();
    let inv = init_inventory(dir.path());
    let lab = TestLab::up_machines("e2e_machines", &inv, &["vps", "nas"]);
    for host in ["vps", "nas"] {
        let fresh = lab.exec(host, "command -v wg || command -v iptables || true");
        assert_eq!(text(&fresh).trim(), "", "{host} is not fresh");
    }

    // 1. The plan lists the packages (and everything else); ONE apply builds it all.
    let (code, shown) = plan(&lab);
    assert_eq!(code, Some(2), "{shown}");
    for host in ["vps", "nas"] {
        let section = shown
            .split("\n\n")
            .find(|s| s.starts_with(&format!("{host} (")))
            .unwrap_or_else(|| panic!("no section for {host}:\n{shown}"));
        for pkg in ["wireguard-tools", "wireguard-go", "iptables"] {
            assert!(
                section.contains(&format!("+ package {pkg} (apt)")),
                "{host} lacks {pkg}:\n{section}"
            );
        }
        assert!(
            section.contains("+ interface wg0 (started by wg-quick@wg0)"),
            "{section}"
        );
    }
    let timings = dir.path().join("timings.json");
    let out = lab.meshctl(&["apply", "--yes", "--timings", timings.to_str().unwrap()]);
    let applied = text(&out);
    assert!(out.status.success(), "apply failed:\n{applied}");
    assert!(
        applied.contains("3 host(s) converged, 0 failed."),
        "{applied}"
    );
    // `--timings` shows where a fresh host's time goes: its install among the phases.
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&timings).unwrap()).unwrap();
    for host in ["vps", "nas"] {
        let phases: Vec<&str> = timings["hosts"][host]
            .as_array()
            .unwrap_or_else(|| panic!("no phases of {host}: {timings}"))
            .iter()
            .filter_map(|p| p["phase"].as_str())
            .collect();
        assert!(
            phases.contains(&"provision: install wireguard-tools wireguard-go iptables (apt)")
                && phases.contains(&"provision: key"),
            "{host}: {phases:?}"
        );
    }
    add_router_route(&lab, &applied);
    // The pairs' preshared keys: made on the hub after its install, the same on both ends.
    let (hub_key, nas_key) = (pubkey(&lab, "vps"), pubkey(&lab, "nas"));
    let pair = live_psk(&lab, "vps", &nas_key);
    assert_ne!(pair, "(none)");
    assert_eq!(live_psk(&lab, "nas", &hub_key), pair);
    assert_network_works(&lab, "after the apply");
    let (code, shown) = plan(&lab);
    assert_eq!(code, Some(0), "converged after one apply:\n{shown}");

    // 3. Every remote command ran as admin through `sudo -n`; root never logged in.
    for host in ["vps", "nas"] {
        let (admin, root, via_sudo) = login_audit(&lab, host);
        assert!(
            admin >= 3,
            "{host}: plan, apply and verify log in as admin ({admin})"
        );
        assert_eq!(root, 0, "{host}: nobody logs in as root");
        // The plan's gather, apply's step 1, provisioning, changes and final gather, the
        // verify and the last plan: each an execution through sudo.
        assert!(
            via_sudo >= admin,
            "{host}: {via_sudo} executions through sudo for {admin} logins"
        );
    }
    for host in ["vps", "nas"] {
        let unit = ok(
            &lab,
            host,
            "systemctl is-enabled wg-quick@wg0; systemctl is-active wg-quick@wg0",
        );
        assert_eq!(
            unit.split_whitespace().collect::<Vec<_>>(),
            ["enabled", "active"]
        );
    }

    // 2. Reboots from inside: everything comes back by itself.
    lab.reboot("vps");
    lab.reboot("nas");
    assert_network_works(&lab, "after rebooting the hub and the NAS");
    for (host, needle) in [
        ("vps", "MESHCTL-FORWARD"),
        ("vps", "2001:db8:10:0:100::a dev eth0 proxy"),
        ("nas", "MESHCTL-FORWARD"),
    ] {
        let live = ok(
            &lab,
            host,
            "iptables-save; ip6tables-save; ip -6 neigh show proxy",
        );
        assert!(
            live.contains(needle),
            "{host} after its reboot lacks {needle}:\n{live}"
        );
    }
    let (code, shown) = plan(&lab);
    assert_eq!(code, Some(0), "nothing to do after the reboots:\n{shown}");

    // A drift made by hand in a persisted file, then a reboot: the plan shows it.
    ok(&lab, "vps", "sed -i '/MASQUERADE/d' /etc/meshctl/rules.v4");
    lab.reboot("vps");
    let (code, shown) = plan(&lab);
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("~ chain ipv4 nat/MESHCTL-POSTROUTING")
            && shown.contains("~ file /etc/meshctl/rules.v4")
            && shown.contains("+-A MESHCTL-POSTROUTING -s 10.8.0.0/24 -o eth0 -j MASQUERADE"),
        "{shown}"
    );

    // The NAS's interface brought up by hand, without its unit: the plan says the unit takes it
    // over, and after the apply the unit owns it (one owner, not two fighting).
    ok(
        &lab,
        "nas",
        "systemctl stop wg-quick@wg0 && wg-quick up wg0 >/dev/null 2>&1",
    );
    let (code, shown) = plan(&lab);
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("~ wg-quick@wg0 takes over wg0 (up without it: down, then started by it)"),
        "{shown}"
    );
    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert!(t.contains("3 host(s) converged, 0 failed."), "{t}");
    assert_eq!(
        ok(&lab, "nas", "systemctl is-active wg-quick@wg0").trim(),
        "active"
    );
    assert_network_works(&lab, "after the take-over");
    let (code, shown) = plan(&lab);
    assert_eq!(code, Some(0), "{shown}");

    // A login that lost sudo fails clearly, for that host alone.
    ok(&lab, "nas", "rm -f /etc/sudoers.d/*");
    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("nas: failed: user admin on nas cannot run sudo without a password (sudo -n)"),
        "{t}"
    );
    assert!(t.contains("vps: converged"), "the hub still applies:\n{t}");
    let (code, shown) = plan(&lab);
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("No changes: laptop, vps"), "{shown}");
}
