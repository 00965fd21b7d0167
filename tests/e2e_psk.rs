//! End to end: preshared keys on real lab hosts (wireguard-go). With `network.preshared_keys:
//! true`, apply gives every pair a key: made on the hub, carried to the laptop and the NAS,
//! 0600 files in a 0700 directory on both ends, the same key live on both sides, none in any
//! `wg0.conf`. A key removed by hand from the hub's interface is planned and loaded again; a
//! stale key on the laptop's side (live and in its file) really breaks the handshake — so the
//! key is in use — until apply carries the hub's key back. A canary key put into the hub's
//! file travels to the laptop and appears in no output of meshctl and in no file on the
//! controller. `meshctl rotate vps --psk` while the laptop pings the NAS through the hub: the
//! pings go on (within 1 s of loss), every managed peer has the hub's new key, the pins file
//! records old → new, the pairs' keys are new on both ends, and neither the old nor the new
//! keys appear in any output or controller file. Each test builds its own lab (needs root;
//! never skips).

mod support;

use std::path::PathBuf;

use support::leaks::{assert_without, files_under};
use support::{TestLab, live_psk, ok, own_inventory, pings_within, pubkey, text};

/// A throw-away preshared key made for this test only.
const CANARY_PSK: &str = "6SE6nmZzSxJQG7A9G9zCnTq7vzjaA4/3XRpoVVZU2cY=";
const NAS: &str = "10.8.0.2";
const HUB: &str = "10.8.0.1";

/// The lab's inventory with preshared keys on, in a directory of the test's own.
pub fn psk_inventory(name: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, inv) = own_inventory(name);
    let text = std::fs::read_to_string(&inv).unwrap();
    assert_eq!(text.matches("  mtu: 1420\n").count(), 1);
    std::fs::write(
        &inv,
        text.replace("  mtu: 1420\n", "  mtu: 1420\n  preshared_keys: true\n"),
    )
    .unwrap();
    (dir, inv)
}

fn assert_clean(what: &str, haystack: &str) {
    assert_without(what, haystack, "the canary preshared key", CANARY_PSK);
}

fn apply(lab: &TestLab, outputs: &mut Vec<(String, String)>, args: &[&str]) -> String {
    let out = lab.meshctl(args);
    let t = text(&out);
    assert!(out.status.success(), "{args:?}:\n{t}");
    outputs.push((format!("{args:?}"), t.clone()));
    t
}

/// The first apply, and the home router's static route (its manual step).
fn first_apply(lab: &TestLab, outputs: &mut Vec<(String, String)>) {
    apply(lab, outputs, &["apply", "--yes", "--no-verify"]);
    ok(
        lab,
        "fritzbox",
        "ip route replace 10.8.0.0/24 via 192.168.178.10",
    );
}

#[test]
fn preshared_keys_are_made_carried_in_use_repaired_and_never_leave_in_any_output() {
    let (dir, inv) = psk_inventory("psk-e2e");
    let lab = TestLab::up("e2e_psk", &inv);
    let mut outputs = Vec::new();

    first_apply(&lab, &mut outputs);
    let (vps, laptop, nas) = (
        pubkey(&lab, "vps"),
        pubkey(&lab, "laptop"),
        pubkey(&lab, "nas"),
    );
    // Both ends hold the same key, live and in their 0600 files; the configs hold none.
    for (peer, key, file) in [("laptop", &laptop, "laptop"), ("nas", &nas, "nas")] {
        let hub_side = live_psk(&lab, "vps", key);
        assert_ne!(hub_side, "(none)", "the hub's pair with {peer} has a key");
        assert_eq!(
            live_psk(&lab, peer, &vps),
            hub_side,
            "{peer}: both ends agree"
        );
        assert_eq!(
            ok(&lab, "vps", &format!("cat /etc/wireguard/psk/{file}.psk")).trim(),
            hub_side
        );
        assert_eq!(
            ok(&lab, peer, "cat /etc/wireguard/psk/vps.psk").trim(),
            hub_side
        );
        for h in ["vps", peer] {
            let modes = ok(
                &lab,
                h,
                "stat -c '%a %n' /etc/wireguard/psk /etc/wireguard/psk/*.psk",
            );
            assert!(
                modes.starts_with("700 /etc/wireguard/psk\n"),
                "{h}: {modes}"
            );
            assert!(
                modes.lines().skip(1).all(|l| l.starts_with("600 ")),
                "{h}: {modes}"
            );
            let conf = ok(&lab, h, "cat /etc/wireguard/wg0.conf");
            assert!(!conf.contains(&hub_side), "{h}: wg0.conf holds the key");
            assert!(!conf.contains("PresharedKey"), "{h}: {conf}");
        }
    }
    assert!(pings_within(&lab, "laptop", NAS, 30), "laptop → nas");
    let second = apply(&lab, &mut outputs, &["apply", "--yes", "--no-verify"]);
    assert!(
        second.contains("Plan: 0 to add, 0 to change, 0 to remove"),
        "{second}"
    );

    // Removed by hand from the hub's interface: the plan sees it, apply loads it again.
    ok(
        &lab,
        "vps",
        &format!("wg set wg0 peer {laptop} preshared-key /dev/null"),
    );
    let plan = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        text(&plan).contains("~ preshared key for laptop (set): none → from its file"),
        "{}",
        text(&plan)
    );
    outputs.push(("plan".into(), text(&plan)));
    apply(&lab, &mut outputs, &["apply", "--yes", "--no-verify"]);
    assert_eq!(
        live_psk(&lab, "vps", &laptop),
        live_psk(&lab, "laptop", &vps)
    );

    // A stale key on the laptop's side, live and in its file, with its session gone: the
    // handshake fails, so the key is really in use ...
    ok(
        &lab,
        "laptop",
        "umask 077; s=$(wg genpsk); printf '%s\\n' \"$s\" > /etc/wireguard/psk/vps.psk; \
         wg showconf wg0 | sed \"s|^PresharedKey = .*|PresharedKey = $s|\" > /root/stale.conf \
         && wg setconf wg0 /root/stale.conf && rm /root/stale.conf",
    );
    assert!(
        !lab.exec("laptop", &format!("ping -c 4 -W 2 {HUB}"))
            .status
            .success(),
        "a stale preshared key still passes traffic"
    );
    let handshake = ok(&lab, "laptop", "wg show wg0 latest-handshakes");
    assert!(
        handshake.contains(&format!("{vps}\t0")),
        "no handshake with a stale key: {handshake}"
    );
    // ... and apply carries the hub's key back.
    let plan = lab.meshctl(&["plan"]);
    assert!(
        text(&plan)
            .contains("preshared key file /etc/wireguard/psk/vps.psk (set, carried from vps)"),
        "{}",
        text(&plan)
    );
    apply(&lab, &mut outputs, &["-v", "apply", "--yes", "--no-verify"]);
    assert!(pings_within(&lab, "laptop", HUB, 30), "repaired");

    // A canary key in the hub's file travels to the laptop and nowhere else.
    ok(
        &lab,
        "vps",
        &format!("umask 077; printf '%s\\n' {CANARY_PSK} > /etc/wireguard/psk/laptop.psk"),
    );
    let saved = dir.path().join("saved.json");
    let saved = saved.to_str().unwrap();
    for args in [
        &["plan"][..],
        &["plan", "--json"],
        &["plan", "--format", "markdown"],
        &["-v", "plan", "-o", saved],
        &["status"],
    ] {
        let out = lab.meshctl(args);
        outputs.push((format!("{args:?}"), text(&out)));
    }
    apply(&lab, &mut outputs, &["-v", "apply", saved, "--yes"]);
    assert_eq!(live_psk(&lab, "laptop", &vps), CANARY_PSK, "carried");
    assert_eq!(live_psk(&lab, "vps", &laptop), CANARY_PSK, "loaded");
    assert_eq!(
        ok(&lab, "laptop", "cat /etc/wireguard/psk/vps.psk").trim(),
        CANARY_PSK
    );
    let after = apply(&lab, &mut outputs, &["apply", "--yes"]);
    assert!(
        after.contains("Plan: 0 to add, 0 to change, 0 to remove")
            && after.contains("Applied and verified."),
        "{after}"
    );
    for (what, out) in &outputs {
        assert_clean(&format!("the output of meshctl {what}"), out);
    }
    let files: Vec<(PathBuf, String)> = files_under(dir.path())
        .into_iter()
        .chain(files_under(&lab.dir))
        .collect();
    assert!(files.iter().any(|(p, _)| p.ends_with("saved.json")));
    assert!(files.iter().any(|(p, _)| p.ends_with("lab.keys.yaml")));
    for (path, content) in &files {
        assert_clean(&path.display().to_string(), content);
    }
}

/// `N packets transmitted, M received` of a finished `ping`'s summary, as (N, M).
fn ping_counts(summary: &str) -> Option<(u32, u32)> {
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))?;
    let mut nums = line.split([' ', ',']).filter_map(|w| w.parse::<u32>().ok());
    Some((nums.next()?, nums.next()?))
}

#[test]
fn rotating_the_hub_with_its_preshared_keys_keeps_the_pings_flowing() {
    let (dir, inv) = psk_inventory("psk-rotate");
    let lab = TestLab::up("e2e_psk_rotate", &inv);
    let mut outputs = Vec::new();
    first_apply(&lab, &mut outputs);
    let (old_hub, laptop, nas) = (
        pubkey(&lab, "vps"),
        pubkey(&lab, "laptop"),
        pubkey(&lab, "nas"),
    );
    let old_psks = [live_psk(&lab, "vps", &laptop), live_psk(&lab, "vps", &nas)];
    assert!(pings_within(&lab, "laptop", NAS, 30), "laptop → nas");
    // The phone gets its config (meshctl makes its key), and the hub learns it.
    let phone_conf = |name: &str| {
        let path = dir.path().join(name);
        let out = lab.meshctl(&["client", "phone", "--new-key", "-o", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        std::fs::read_to_string(path).unwrap()
    };
    let handed_out = phone_conf("phone-1.conf");
    assert!(
        handed_out.contains(&format!("PublicKey = {old_hub}")),
        "{handed_out}"
    );
    apply(&lab, &mut outputs, &["apply", "--yes", "--no-verify"]);

    // The laptop pings the NAS through the hub every 100 ms while the hub's key and all three
    // pairs' preshared keys are replaced.
    ok(
        &lab,
        "laptop",
        &format!("(ping -i 0.1 -W 1 -c 150 {NAS} > /tmp/rotate-pings 2>&1 </dev/null &)"),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let rotated = apply(
        &lab,
        &mut outputs,
        &["rotate", "vps", "--psk", "--yes", "--no-verify"],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let counts = loop {
        let summary = ok(&lab, "laptop", "cat /tmp/rotate-pings");
        if let Some(c) = ping_counts(&summary) {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ping never finished:\n{summary}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let (sent, received) = counts;
    eprintln!(
        "rotation of the hub: {} of {sent} pings (100 ms apart) lost",
        sent - received
    );
    assert_eq!(sent, 150);
    assert!(
        sent - received <= 10,
        "{} of {sent} pings lost across the rotation (more than 1 s)",
        sent - received
    );

    // Every managed peer has the hub's new key, and only it.
    let new_hub = pubkey(&lab, "vps");
    assert_ne!(new_hub, old_hub);
    for peer in ["laptop", "nas"] {
        let peers = ok(&lab, peer, "wg show wg0 peers");
        assert!(
            peers.contains(&new_hub) && !peers.contains(&old_hub),
            "{peer}: {peers}"
        );
    }
    // The pins file says what changed, for a reviewer of the commit.
    let pins = std::fs::read_to_string(dir.path().join("lab.keys.yaml")).unwrap();
    assert!(
        pins.contains(&format!("# rotated vps: \"{old_hub}\" -> \"{new_hub}\"")),
        "{pins}"
    );
    assert!(pins.contains(&format!("vps: \"{new_hub}\"")), "{pins}");
    // The phone's config holds the hub's key: it must be handed out again, with a new key of
    // its own (meshctl kept no copy of the old one). Done as told, the phone's new config has
    // the hub's new key, and the hub learns the phone's.
    assert!(
        rotated.contains(
            "Hand out the config of phone again (it holds the hub's key of its pair): `meshctl client phone --new-key --qr`, then `meshctl apply`"
        ),
        "{rotated}"
    );
    let again = phone_conf("phone-2.conf");
    assert!(again.contains(&format!("PublicKey = {new_hub}")), "{again}");
    let private = |conf: &str| {
        conf.lines()
            .find(|l| l.starts_with("PrivateKey = "))
            .unwrap()
            .to_owned()
    };
    assert_ne!(private(&again), private(&handed_out));
    apply(&lab, &mut outputs, &["apply", "--yes", "--no-verify"]);
    // The pairs' preshared keys are new, the same on both ends, and in use.
    let new_psks = [live_psk(&lab, "vps", &laptop), live_psk(&lab, "vps", &nas)];
    for (i, peer) in ["laptop", "nas"].iter().enumerate() {
        assert_ne!(
            new_psks[i], old_psks[i],
            "{peer}: the pair's key was replaced"
        );
        assert_eq!(
            live_psk(&lab, peer, &new_hub),
            new_psks[i],
            "{peer}: both ends agree"
        );
    }
    assert!(
        pings_within(&lab, "laptop", NAS, 10),
        "still passes traffic"
    );
    let plan = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    outputs.push(("plan".into(), text(&plan)));

    // No preshared key, old or new, in any output or controller file.
    let files: Vec<(PathBuf, String)> = files_under(dir.path())
        .into_iter()
        .chain(files_under(&lab.dir))
        .collect();
    for key in old_psks.iter().chain(&new_psks) {
        for (what, out) in &outputs {
            assert_without(
                &format!("the output of meshctl {what}"),
                out,
                "a preshared key",
                key,
            );
        }
        for (path, content) in &files {
            assert_without(&path.display().to_string(), content, "a preshared key", key);
        }
    }
}
