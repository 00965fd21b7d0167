//! `meshctl client NAME`: the config of an unmanaged client (a phone), its QR code, and the one
//! place a private key is made off its host — only at the user's request, only in that output.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");
const HUB_KEY: &str = "gwSyaptQc4Ro7MuZHihtpjDj+3wfQfTgSECpjCXT1SM=";

fn setup(extra_keys: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/example.yaml"),
        dir.path().join("net.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("net.keys.yaml"),
        format!("vps: \"{HUB_KEY}\"\n{extra_keys}"),
    )
    .unwrap();
    dir
}

fn client(dir: &Path, args: &[&str]) -> Output {
    Command::new(MESHCTL)
        .arg("client")
        .args(args)
        .arg("-i")
        .arg(dir.join("net.yaml"))
        .output()
        .unwrap()
}

#[test]
fn a_phone_gets_a_complete_config_a_qr_code_and_a_pinned_key() {
    let dir = setup("");
    let conf = dir.path().join("phone.conf");
    let out = client(dir.path(), &["phone", "--qr", "-o", conf.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600,
        "the config holds a private key"
    );
    for line in [
        "Address = 10.8.0.11/24, 2001:db8:42:0:100::b/128",
        "DNS = 10.8.0.1",
        "MTU = 1420",
        &format!("PublicKey = {HUB_KEY}"),
        "AllowedIPs = 0.0.0.0/0, ::/0",
        "Endpoint = vps.example.net:51820",
        "PersistentKeepalive = 25",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let private = text
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .expect("a generated private key");
    assert_eq!(private.len(), 44);

    // The QR code is on stdout; the private key is nowhere but in the file.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains('█') || stdout.contains('▀'),
        "a QR code is printed"
    );
    assert!(!stdout.contains(private) && !String::from_utf8_lossy(&out.stderr).contains(private));

    // Only the public key is pinned, and it belongs to the private key in the config.
    let pinned = std::fs::read_to_string(dir.path().join("net.keys.yaml")).unwrap();
    assert!(!pinned.contains(private), "the private key is never pinned");
    let line = pinned
        .lines()
        .find(|l| l.starts_with("phone:"))
        .expect("the phone's key is pinned");
    let public = line.split('"').nth(1).unwrap();
    if let Ok(mut wg) = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        wg.stdin
            .take()
            .unwrap()
            .write_all(format!("{private}\n").as_bytes())
            .unwrap();
        let derived = wg.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&derived.stdout).trim(),
            public,
            "the pinned key matches the config's key"
        );
    }

    // -o never overwrites an existing file.
    let again = client(dir.path(), &["phone", "-o", conf.to_str().unwrap()]);
    assert!(!again.status.success());
}

#[test]
fn a_key_made_on_the_device_stays_there() {
    let dir = setup("");
    let yaml = std::fs::read_to_string(dir.path().join("net.yaml"))
        .unwrap()
        .replace(
            "    tunnel: full\n",
            "    tunnel: split\n    public_key: \"Wn2KkhGHkHL4Fxdu0Oz0VBJ98wQGXvo07frn1N4q42U=\"\n",
        );
    std::fs::write(dir.path().join("net.yaml"), yaml).unwrap();
    let out = client(dir.path(), &["phone"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.lines().any(|l| l.starts_with("PrivateKey")),
        "no private key when the device made its own:\n{text}"
    );
    assert!(
        text.contains("AllowedIPs = 10.8.0.0/24, 192.168.178.0/24, ::/0"),
        "split tunnel: VPN + home LAN:\n{text}"
    );
}

#[test]
fn managed_hosts_and_unknown_names_are_refused() {
    let dir = setup("");
    let out = client(dir.path(), &["laptop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("managed over SSH"));
    let out = client(dir.path(), &["tablet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host `tablet`"));
}

#[test]
fn without_the_hubs_key_there_is_nothing_to_hand_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/example.yaml"),
        dir.path().join("net.yaml"),
    )
    .unwrap();
    let out = client(dir.path(), &["phone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `meshctl apply` first"));
    assert!(
        !dir.path().join("net.keys.yaml").exists(),
        "nothing pinned when nothing was handed out"
    );
}

#[test]
fn a_key_meshctl_made_is_never_rotated_silently() {
    let dir = setup("");
    let first = client(dir.path(), &["phone"]);
    assert!(first.status.success());
    let keys = || std::fs::read_to_string(dir.path().join("net.keys.yaml")).unwrap();
    let pinned = keys();

    // Again: refused, nothing pinned anew (the phone's working config stays valid).
    let again = client(dir.path(), &["phone"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--new-key"));
    assert_eq!(keys(), pinned);

    // An output file that exists: refused before anything is pinned.
    let existing = dir.path().join("exists.conf");
    std::fs::write(&existing, "keep me").unwrap();
    let out = client(
        dir.path(),
        &["phone", "--new-key", "-o", existing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        keys(),
        pinned,
        "no key is pinned whose config was never written"
    );
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me");

    // Asked for: a new key, pinned, and the rotation recorded and told as `meshctl rotate`
    // tells it (old -> new).
    let phone_key = |pins: &str| {
        pins.lines()
            .find_map(|l| l.strip_prefix("phone: "))
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    let old = phone_key(&pinned);
    let rotated = client(dir.path(), &["phone", "--new-key"]);
    assert!(rotated.status.success());
    let now = keys();
    let new = phone_key(&now);
    assert_ne!(new, old);
    assert!(
        now.contains(&format!(
            "# rotated phone: \"{old}\" -> \"{new}\" (meshctl client --new-key"
        )),
        "{now}"
    );
    let told = String::from_utf8_lossy(&rotated.stderr);
    assert!(
        told.contains(&format!(
            "Rotated the key of phone: public key {}… → {}…",
            &old[..8],
            &new[..8]
        )),
        "{told}"
    );
}
