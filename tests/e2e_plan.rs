//! End to end: `meshctl plan` against freshly built lab hosts (real sshd, real tools).
//! Each test builds its own lab (needs root; never skips).

mod support;

use support::{TestLab, assert_success, own_inventory};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const MANAGED: [&str; 3] = ["vps", "nas", "laptop"];

#[test]
fn plan_on_fresh_hosts_lists_the_full_setup_with_one_session_per_host() {
    let (_keep, inv) = own_inventory("plan-fresh");
    let lab = TestLab::up("plan_fresh", &inv);
    let before: Vec<_> = MANAGED.iter().map(|h| lab.sshd_counts(h)).collect();

    let out = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "plan must exit 2 with changes pending:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for host in MANAGED {
        assert!(
            text.contains(&format!("{host} (")),
            "no section for {host}:\n{text}"
        );
    }
    assert_eq!(text.matches("+ interface wg0").count(), 3, "{text}");
    assert!(text.contains("+ peer nas"), "{text}");
    assert!(text.contains("+ peer laptop"), "{text}");
    assert!(
        text.contains("~ sysctl net.ipv4.ip_forward: 0 → 1"),
        "{text}"
    );
    assert!(
        text.contains("+ ndp proxy 2001:db8:10:0:100::a dev eth0"),
        "{text}"
    );
    assert!(
        text.contains("add the static IPv4 route 10.8.0.0/24 via 192.168.178.10"),
        "{text}"
    );
    assert!(text.contains("meshctl client phone --qr"), "{text}");
    assert!(text.contains("Plan: "), "{text}");

    // Counted on the servers' side: exactly one connection and one remote execution per host.
    for (i, host) in MANAGED.iter().enumerate() {
        let after = lab.sshd_counts(host);
        assert_eq!(
            (after.0 - before[i].0, after.1 - before[i].1),
            (1, 1),
            "{host}: plan must use one connection and one execution"
        );
    }

    // Gathering writes nothing: the hosts are still empty, and plan again says the same.
    let again = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        stdout(&again),
        text,
        "a second plan must be identical: gathering changed something"
    );
    let out = lab.exec("vps", "ls -A /etc/wireguard /etc/meshctl /run/meshctl");
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| !l.is_empty() && !l.ends_with(':'))
            .count(),
        0,
        "gather wrote files: {}",
        stdout(&out)
    );
}

#[test]
fn plan_json_is_versioned_and_has_no_private_keys() {
    let (_keep, inv) = own_inventory("plan-json");
    let lab = TestLab::up("plan_json", &inv);
    let out = lab.meshctl(&["plan", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "without --detailed-exitcode plan exits 0:\n{}",
        stderr(&out)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json is JSON");
    assert_eq!(plan["version"], 3);
    assert_eq!(plan["hosts"].as_array().unwrap().len(), 3);
    assert!(
        !stdout(&out).contains("PrivateKey ="),
        "a private key slot in JSON"
    );
}

#[test]
fn an_unreachable_host_fails_alone() {
    let (_keep, inv) = own_inventory("plan-unreach");
    let lab = TestLab::up("plan_unreachable", &inv);
    // Stop nas's sshd: the host is still there, but nobody answers on port 22.
    let pid = lab.state().hosts["nas"].sshd_pid.expect("nas has sshd");
    assert!(
        std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    let out = lab.meshctl(&["plan", "--detailed-exitcode"]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreachable host is an error:\n{text}"
    );
    assert!(
        text.contains("nas (gateway, root@nas)") && text.contains("error: cannot connect to nas"),
        "{text}"
    );
    assert!(
        text.contains("+ interface wg0"),
        "the other hosts are still planned:\n{text}"
    );
    assert!(text.contains("nas: failed"), "{text}");
}

#[test]
fn an_unknown_host_key_is_refused_unless_accepted() {
    let (_keep, inv) = own_inventory("plan-hostkey");
    let lab = TestLab::up("plan_host_key", &inv);
    // An ssh_config whose known_hosts file lacks every host.
    let config = std::fs::read_to_string(lab.ssh_config()).unwrap();
    let empty_known = lab.dir.join("known_hosts.empty");
    std::fs::write(&empty_known, "").unwrap();
    let known = lab.dir.join("known_hosts");
    let alt = lab.dir.join("ssh_config.unknown");
    std::fs::write(
        &alt,
        config.replace(
            &known.display().to_string(),
            &empty_known.display().to_string(),
        ),
    )
    .unwrap();
    assert_ne!(
        std::fs::read_to_string(&alt).unwrap(),
        config,
        "the known_hosts path must be in the ssh_config"
    );

    let out = lab.meshctl(&["plan", "--ssh-config", alt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("host key of vps is not known"),
        "{}",
        stdout(&out)
    );

    let out = lab.meshctl(&[
        "plan",
        "--ssh-config",
        alt.to_str().unwrap(),
        "--accept-new-host-keys",
    ]);
    assert_success(&out, "plan --accept-new-host-keys");
    assert!(
        std::fs::read_to_string(&empty_known)
            .unwrap()
            .lines()
            .count()
            >= 3,
        "accepted keys are recorded"
    );
}

#[test]
fn apply_yes_right_after_plan_keep_connections_logs_in_nowhere_again() {
    let (_keep, inv) = own_inventory("plan-keep");
    let lab = TestLab::up("plan_keep", &inv);
    // One fresh apply, then drift on the hub: the plan that finds it keeps its connections.
    let first = lab.meshctl(&["apply", "--yes", "--no-verify"]);
    assert_success(&first, "first apply");
    let drift = lab.exec("vps", "sysctl -qw net.ipv4.ip_forward=0");
    assert!(drift.status.success());
    let plan = lab.meshctl(&["plan", "--detailed-exitcode", "--keep-connections", "60"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{}{}",
        stdout(&plan),
        stderr(&plan)
    );
    let before: Vec<_> = MANAGED.iter().map(|h| lab.sshd_counts(h)).collect();
    let apply = lab.meshctl(&["apply", "--yes", "--no-verify"]);
    let text = assert_success(&apply, "apply over the kept connections");
    assert!(text.contains("3 host(s) converged, 0 failed."), "{text}");
    for (h, (conns, execs)) in MANAGED.iter().zip(&before) {
        let (c, e) = lab.sshd_counts(h);
        assert_eq!(c, *conns, "{h}: apply logged in again");
        assert!(
            e > *execs,
            "{h}: apply ran nothing over the kept connection"
        );
    }
    // Taken by that apply and closed by it: the next one logs in as usual.
    let again = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    for (h, (conns, _)) in MANAGED.iter().zip(&before) {
        assert_eq!(lab.sshd_counts(h).0, conns + 1, "{h}");
    }
}
