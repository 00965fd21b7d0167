//! `meshctl init` on the binary: the inventory it writes validates, plans (here: names what to
//! do next), and an existing file is never overwritten.

mod support;

use std::process::Command;

use support::MESHCTL;

fn init(args: &[&str]) -> std::process::Output {
    Command::new(MESHCTL)
        .arg("init")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_valid_inventory_once() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("meshctl.yaml");
    let out = out_path.to_str().unwrap();
    let args = [
        "-o",
        out,
        "--hub",
        "root@vps.example.net",
        "--gateway",
        "admin@nas.home.arpa",
        "--lan",
        "10.8.0.0/16",
        "--router",
        "fritzbox=10.8.0.1",
        "--client",
        "laptop=me@laptop.local",
        "--phone",
        "phone",
        "--ipv6-prefix",
        "2001:db8:42::/64",
    ];
    let o = init(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("meshctl client phone --qr"), "{stdout}");
    let inv = meshctl::files::load_inventory(&out_path).expect("the written inventory validates");
    assert_eq!(inv.hosts.len(), 4);
    // The VPN range stays clear of the home LAN it was told about (10.8.0.0/16 here).
    assert!(
        !inv.network.ipv4.to_string().starts_with("10.8."),
        "{}",
        inv.network.ipv4
    );
    let written = std::fs::read_to_string(&out_path).unwrap();

    let again = init(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("it must not exist yet"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap(),
        written,
        "never overwritten"
    );

    let bad = init(&["-o", "x.yaml", "--hub", "root@vps", "--client", "laptop"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected NAME=VALUE"));
}
