//! A hand-made host's key is never lost: with its interface down, the `PrivateKey =` of its
//! own `/etc/wireguard/wg0.conf` is the host's identity, and apply adopts it (into the 0600
//! key file, on the host) instead of generating a new key and overwriting the only copy.

mod support;

use support::{TestLab, ok, own_inventory, text};

/// A canary private key: it must end up in the host's key file and in no output.
const CANARY: &str = "qHTAYwSnLMjmF3Ow2qDrTN9A5RkYK4xQ8WGNHVQyj2s=";

#[test]
fn a_stopped_hand_made_setup_keeps_its_key() {
    let (_keep, inv) = own_inventory("key-adoption");
    let lab = TestLab::up("key_adoption", &inv);
    ok(
        &lab,
        "nas",
        &format!(
            "umask 077; mkdir -p /etc/wireguard; printf '[Interface]\\nPrivateKey = {CANARY}\\nAddress = 10.8.0.2/24\\n\\n[Peer]\\nPublicKey = x/mx1BYRsLAiujkK0jxj1w7VcUqhmtKsX+NjQA+VdV0=\\nAllowedIPs = 10.8.0.0/24\\n' > /etc/wireguard/wg0.conf"
        ),
    );
    let want = ok(&lab, "nas", &format!("echo {CANARY} | wg pubkey"));
    let plan = lab.meshctl(&["plan"]);
    let out = lab.meshctl(&["apply", "--yes"]);
    let t = format!("{}{}", text(&plan), text(&out));
    assert!(out.status.success(), "{t}");
    assert!(
        !t.contains(CANARY),
        "the canary private key appears in meshctl's output"
    );
    assert_eq!(
        ok(&lab, "nas", "wg show wg0 public-key").trim(),
        want.trim(),
        "the host kept the identity of its hand-made config"
    );
    assert_eq!(ok(&lab, "nas", "cat /etc/wireguard/wg0.key").trim(), CANARY);
    assert_eq!(
        ok(&lab, "nas", "stat -c %a /etc/wireguard/wg0.key").trim(),
        "600"
    );
    assert!(
        !ok(&lab, "nas", "cat /etc/wireguard/wg0.conf").contains(CANARY),
        "meshctl's own config has no private key inside"
    );
    let pins = std::fs::read_to_string(inv.with_extension("keys.yaml")).unwrap();
    assert!(
        pins.contains(want.trim()),
        "the adopted key is pinned:\n{pins}"
    );
    assert!(!pins.contains(CANARY));
}
