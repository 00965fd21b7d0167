//! The hub's firewall fails closed, against a real lab: when meshctl's chains cannot be
//! loaded, nothing that opens a path has been applied yet — forwarding stays off, there is no
//! interface routing the clients' addresses — and the report names the firewall step.

mod support;

use support::{TestLab, ok, own_inventory, text};

#[test]
fn a_failing_ip6tables_restore_on_a_fresh_hub_leaves_forwarding_off() {
    let (dir, inv) = own_inventory("fail-closed");
    let lab = TestLab::up("fail_closed", &inv);
    // ip6tables-restore fails on the hub (a VPS without IPv6 conntrack, say), wherever it runs.
    let stand_in = dir.path().join("ip6tables-restore");
    std::fs::write(
        &stand_in,
        "#!/bin/sh\necho 'ip6tables-restore: line 3 failed (test fault)' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // /usr/local/sbin comes first in root's PATH: a tmpfs there, in the hub's own mount
    // namespace, holds the stand-in (the real binary is xtables' multi-call one).
    ok(
        &lab,
        "vps",
        &format!(
            "mount -t tmpfs tmpfs /usr/local/sbin && cp {} /usr/local/sbin/ && command -v ip6tables-restore",
            stand_in.display()
        ),
    );

    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with("vps: failed"))
        .unwrap_or_else(|| panic!("no failure line for vps:\n{t}"));
    assert!(
        line.contains("step `~ chain ipv6 filter/MESHCTL-FORWARD` failed")
            || line.contains("step `+ chain ipv6 filter/MESHCTL-FORWARD` failed")
            || line.contains("chain ipv6"),
        "the report names the IPv6 firewall step: {line}"
    );
    assert!(line.contains("test fault"), "and says why: {line}");
    for key in ["net.ipv6.conf.all.forwarding", "net.ipv4.ip_forward"] {
        assert_eq!(
            ok(&lab, "vps", &format!("sysctl -n {key}")).trim(),
            "0",
            "{key} stays off when the firewall could not be loaded:\n{t}"
        );
    }
    assert!(
        !lab.exec("vps", "ip link show wg0").status.success(),
        "no interface routes the clients' range into the tunnel"
    );
    // From the internet, the laptop's public address is not reachable through the hub.
    assert!(
        !lab.exec("inet", "ping -6 -c 1 -W 2 2001:db8:10:0:100::a")
            .status
            .success(),
        "the clients' range is not reachable from inet"
    );
}
