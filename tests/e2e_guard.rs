//! End to end: confirm or roll back. The NAS is managed *through the tunnel* (the SSH path goes
//! from the laptop's namespace across the hub and both tunnels to the NAS's VPN address); an
//! inventory change that breaks that path is applied under the guard, and the NAS must come
//! back by itself, with the same path working again.

mod support;

use support::{TestLab, assert_success, own_inventory};

#[test]
fn a_change_that_cuts_meshctl_off_is_rolled_back_by_the_host() {
    let (keep, inv) = own_inventory("guard");
    let lab = TestLab::up("guard_rollback", &inv);
    let out = lab.meshctl(&["apply", "--yes"]);
    assert_success(&out, "the first apply");

    // Reach the NAS over the VPN: its sshd listens on loopback, so forward its VPN address.
    assert_success(
        &lab.exec(
            "nas",
            "iptables -w -t nat -A PREROUTING -d 10.8.0.2 -p tcp --dport 22 -j DNAT --to-destination 127.0.0.1:22 \
             && sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.wg0.route_localnet=1",
        ),
        "forward the NAS's VPN address to its sshd",
    );
    let prefix = lab.prefix();
    let config = std::fs::read_to_string(lab.ssh_config()).unwrap();
    let direct = format!("ip netns exec {prefix}-nas nc 127.0.0.1 22");
    assert!(
        config.contains(&direct),
        "the lab's ssh_config reaches nas with `{direct}`"
    );
    let via_vpn = keep.path().join("ssh_config.vpn");
    std::fs::write(
        &via_vpn,
        config.replace(
            &direct,
            &format!("ip netns exec {prefix}-laptop nc 10.8.0.2 22"),
        ),
    )
    .unwrap();
    let ssh_vpn = |cmd: &str| {
        std::process::Command::new("ssh")
            .arg("-F")
            .arg(&via_vpn)
            .args(["-o", "ConnectTimeout=5", "nas", cmd])
            .output()
            .unwrap()
    };
    // The NAS joins the VPN when its keepalive makes it handshake: wait for the path.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ssh_vpn("true").status.success() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_success(&ssh_vpn("true"), "ssh to the NAS through the tunnel");

    // Renumber the VPN, applied to the NAS first: its peer (the hub) gets AllowedIPs that no
    // longer cover the laptop, so the very path meshctl uses is cut.
    let yaml = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("10.8.0.", "10.9.0.")
        .replace("    keepalive: 4\n", "    keepalive: 4\n    guard: true\n");
    let broken = keep.path().join("broken.yaml");
    std::fs::write(&broken, yaml).unwrap();
    std::fs::copy(
        keep.path().join("lab.keys.yaml"),
        keep.path().join("broken.keys.yaml"),
    )
    .unwrap();
    // Without `guard: true`, the guard follows the path ssh takes: for a change (a keepalive)
    // to a NAS reached through the tunnel (the ssh_config's ProxyCommand dials its VPN
    // address) the plan carries the rollback; reached directly, it does not.
    let unguarded = keep.path().join("unguarded.yaml");
    std::fs::write(
        &unguarded,
        std::fs::read_to_string(&inv)
            .unwrap()
            .replace("    keepalive: 4\n", "    keepalive: 6\n"),
    )
    .unwrap();
    std::fs::copy(
        keep.path().join("lab.keys.yaml"),
        keep.path().join("unguarded.keys.yaml"),
    )
    .unwrap();
    let guard_of = |ssh_config: &std::path::Path| -> bool {
        let out = lab.meshctl(&[
            "plan",
            "--json",
            "-i",
            unguarded.to_str().unwrap(),
            "--ssh-config",
            ssh_config.to_str().unwrap(),
            "--limit",
            "nas",
        ]);
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        plan["hosts"][0]["guard"].is_object()
    };
    assert!(
        guard_of(&via_vpn),
        "a NAS reached through the tunnel is guarded"
    );
    assert!(
        !guard_of(&lab.ssh_config()),
        "a NAS reached directly is not"
    );

    let started = std::time::Instant::now();
    let out = lab.meshctl(&[
        "apply",
        "-i",
        broken.to_str().unwrap(),
        "--ssh-config",
        via_vpn.to_str().unwrap(),
        "--limit",
        "nas",
        "--guard-timeout",
        "8",
        "--yes",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unconfirmed apply is a failure:\n{text}"
    );
    assert!(
        text.contains("NOT confirmed over a new connection"),
        "{text}"
    );
    assert!(
        text.contains("restored its previous state by itself"),
        "meshctl reports the rollback:\n{text}"
    );
    assert!(
        started.elapsed().as_secs() >= 8,
        "the host waited for its guard's time"
    );

    // The NAS came back by itself: the same path works, its state is the old one, and the
    // lock was released so a normal plan against the old inventory is empty.
    assert_success(
        &ssh_vpn("true"),
        "ssh to the NAS through the tunnel after the rollback",
    );
    let allowed = String::from_utf8_lossy(&ssh_vpn("wg show wg0 allowed-ips").stdout).into_owned();
    assert!(
        allowed.contains("10.8.0.0/24"),
        "the hub's AllowedIPs on the NAS are the old ones: {allowed}"
    );
    let out = lab.meshctl(&[
        "plan",
        "--detailed-exitcode",
        "--ssh-config",
        via_vpn.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A change that keeps the path is confirmed and stays.
    let yaml = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("    keepalive: 4\n", "    keepalive: 5\n    guard: true\n");
    std::fs::write(&inv, yaml).unwrap();
    let out = lab.meshctl(&[
        "apply",
        "--ssh-config",
        via_vpn.to_str().unwrap(),
        "--guard-timeout",
        "8",
        "--yes",
    ]);
    assert_success(&out, "a guarded change that keeps the path");
    std::thread::sleep(std::time::Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&ssh_vpn("wg show wg0 persistent-keepalive").stdout).contains('5'),
        "the confirmed change stays after the guard's time"
    );
}
