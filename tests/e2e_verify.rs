//! End to end: `meshctl verify` on a lab, from the hosts themselves. On the converged lab every
//! cell is ✓ at one connection and one remote execution per host (counted from sshd's logs);
//! with the NAS's route into the VPN deleted by hand, exactly the paths through the NAS fail,
//! they are named, and the exit code is 1.

mod support;

use std::collections::BTreeSet;

use support::{TestLab, assert_success, ok, own_inventory, pings_within, text};

const MANAGED: [&str; 3] = ["vps", "nas", "laptop"];

fn verify(lab: &TestLab) -> (Option<i32>, serde_json::Value) {
    let out = lab.meshctl(&["verify", "--json"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json is JSON ({e}):\n{}", text(&out)));
    (out.status.code(), v)
}

/// `from → label` of every path, split into (working, failing).
fn paths(v: &serde_json::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut good = BTreeSet::new();
    let mut bad = BTreeSet::new();
    for r in v["results"].as_array().unwrap() {
        let p = format!(
            "{} → {}",
            r["from"].as_str().unwrap(),
            r["to"]["label"].as_str().unwrap()
        );
        if r["ok"] == true {
            good.insert(p);
        } else {
            bad.insert(p);
        }
    }
    (good, bad)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn verify_proves_every_path_and_names_exactly_the_broken_ones() {
    let (_keep, inv) = own_inventory("verify");
    let lab = TestLab::up("verify", &inv);
    assert_success(&lab.meshctl(&["apply", "--yes"]), "apply");
    // The NAS joins when its keepalive reaches the hub (it is behind NAT).
    assert!(pings_within(&lab, "vps", "10.8.0.2", 20), "nas joined");

    let before: Vec<_> = MANAGED.iter().map(|h| lab.sshd_counts(h)).collect();
    let (code, v) = verify(&lab);
    for (i, h) in MANAGED.iter().enumerate() {
        let after = lab.sshd_counts(h);
        assert_eq!(
            (after.0 - before[i].0, after.1 - before[i].1),
            (1, 1),
            "{h}: verify uses one connection and one execution"
        );
    }
    assert_eq!(code, Some(0), "{v:#}");
    let (good, bad) = paths(&v);
    let all = set(&[
        "laptop → nas",
        "laptop → vps",
        "laptop → vps v6",
        "laptop → nas LAN",
        "nas → laptop",
        "nas → vps",
        "vps → laptop",
        "vps → laptop v6",
        "vps → nas",
    ]);
    assert_eq!(good, all, "{v:#}");
    assert!(bad.is_empty());
    assert_eq!(v["ok"], true);
    for r in v["results"].as_array().unwrap() {
        let rtt = r["rtt_ms"].as_f64().expect("a round-trip time");
        assert!(rtt > 0.0 && rtt < 1000.0, "{r}");
    }
    for h in v["handshakes"].as_array().unwrap() {
        assert_eq!(h["ok"], true, "{h}");
    }

    let out = lab.meshctl(&["verify"]);
    let shown = assert_success(&out, "verify");
    assert!(shown.contains("✓") && !shown.contains("✗"), "{shown}");
    assert!(shown.contains("Verified: all 9 paths work"), "{shown}");

    // The NAS loses its route into the VPN: everything to and from it fails, nothing else.
    ok(&lab, "nas", "ip route del 10.8.0.0/24 dev wg0");
    let (code, v) = verify(&lab);
    assert_eq!(code, Some(1), "{v:#}");
    let (good, bad) = paths(&v);
    let through_nas = set(&[
        "laptop → nas",
        "laptop → nas LAN",
        "nas → laptop",
        "nas → vps",
        "vps → nas",
    ]);
    assert_eq!(bad, through_nas, "{v:#}");
    assert_eq!(good, &all - &through_nas);
    let out = lab.meshctl(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&out.stdout);
    for p in [
        "laptop → nas (10.8.0.2)",
        "laptop → nas LAN (192.168.178.10)",
        "nas → laptop (10.8.0.10)",
        "nas → vps (10.8.0.1)",
        "vps → nas (10.8.0.2)",
    ] {
        assert!(shown.contains(&format!("✗ {p}")), "{p} named:\n{shown}");
    }
    assert!(shown.contains("4 of 9 paths work."), "{shown}");
}

#[test]
fn apply_verifies_by_default_and_names_the_paths_that_do_not_work() {
    let (_keep, inv) = own_inventory("apply-verify");
    let lab = TestLab::up("apply_verify", &inv);
    let out = lab.meshctl(&["apply", "--yes"]);
    let shown = assert_success(&out, "apply");
    assert!(
        shown.contains("\nVerify:\n") && shown.contains("Applied and verified."),
        "{shown}"
    );

    // Converged, but the NAS lost its route into the VPN (not one of meshctl's: apply leaves it).
    ok(&lab, "nas", "ip route del 10.8.0.0/24 dev wg0");
    let out = lab.meshctl(&["apply", "--yes"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("3 host(s) converged, 0 failed."), "{shown}");
    assert!(shown.contains("✗ vps → nas (10.8.0.2)"), "{shown}");
    assert!(
        shown.contains("Applied, but the network does not pass traffic"),
        "{shown}"
    );

    // --no-verify: the apply alone, and its exit code.
    let out = lab.meshctl(&["apply", "--yes", "--no-verify"]);
    let shown = assert_success(&out, "apply --no-verify");
    assert!(!shown.contains("Verify:"), "{shown}");
}
