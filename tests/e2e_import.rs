//! `meshctl import` on the lab: the reference network built *by hand* on fresh lab hosts
//! (wg-quick configs with `PrivateKey` inline, a MASQUERADE and an ip6tables FORWARD rule as in
//! a blog post, `sysctl -w`, the route on the home router), imported, validated; the plan
//! removes no peer and changes no key; apply converges while a continuous ping between the
//! laptop and the NAS keeps going; no private key of the hand-made configs (a canary) appears
//! in any output or in any file on the controller.

mod support;

use std::process::Command;

use support::{MESHCTL, TestLab, ok, own_inventory, pings_within, text};

fn keypair(lab: &TestLab, host: &str) -> (String, String) {
    let private = ok(lab, host, "wg genkey").trim().to_owned();
    let public = ok(lab, host, &format!("printf '%s\\n' {private} | wg pubkey"))
        .trim()
        .to_owned();
    (private, public)
}

fn write_conf(lab: &TestLab, host: &str, conf: &str) {
    ok(
        lab,
        host,
        &format!(
            "umask 077; mkdir -p /etc/wireguard; cat > /etc/wireguard/wg0.conf <<'EOF'\n{conf}EOF"
        ),
    );
}

/// Every file under `dir`, read as bytes (lossy text).
fn files_under(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            files_under(&p, out);
        } else if ft.is_file()
            && let Ok(b) = std::fs::read(&p)
        {
            out.push((
                p.display().to_string(),
                String::from_utf8_lossy(&b).into_owned(),
            ));
        }
    }
}

/// `meshctl graph --plan -o FILE` (gathers like `plan`): the SVG, also rendered to
/// `<target>/tmp/import-<name>.png` with resvg so a broken picture fails.
fn graph_plan(lab: &TestLab, inventory: &str, svg: &std::path::Path) -> String {
    let out = lab.meshctl(&[
        "graph",
        "--plan",
        "-i",
        inventory,
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let body = std::fs::read_to_string(svg).unwrap();
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(&body, &opt).expect("the SVG parses");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "import-{}.png",
        svg.file_stem().unwrap().to_string_lossy()
    ));
    pixmap.save_png(&png).unwrap();
    body
}

#[test]
fn a_hand_made_network_is_imported_and_converges_without_a_new_key() {
    let (dir, inv) = own_inventory("import-seed");
    let lab = TestLab::up("import_seed", &inv);
    let (vps_priv, vps_pub) = keypair(&lab, "vps");
    let (nas_priv, nas_pub) = keypair(&lab, "nas");
    let (laptop_priv, laptop_pub) = keypair(&lab, "laptop");
    let (phone_priv, phone_pub) = keypair(&lab, "vps");
    let canaries = [&vps_priv, &nas_priv, &laptop_priv, &phone_priv];

    // The hub: wg-quick with the key inline, NAT and a forward rule typed in from a blog post.
    write_conf(
        &lab,
        "vps",
        &format!(
            "[Interface]\nAddress = 10.8.0.1/24\nListenPort = 51820\nPrivateKey = {vps_priv}\nMTU = 1420\n\
             PostUp = iptables -t nat -A POSTROUTING -s 10.8.0.0/24 -o eth0 -j MASQUERADE\n\
             PostUp = ip6tables -A FORWARD -i wg0 -j ACCEPT\n\n\
             # nas\n[Peer]\nPublicKey = {nas_pub}\nAllowedIPs = 10.8.0.2/32, 192.168.178.0/24\n\n\
             # laptop\n[Peer]\nPublicKey = {laptop_pub}\nAllowedIPs = 10.8.0.10/32\n\n\
             # phone\n[Peer]\nPublicKey = {phone_pub}\nAllowedIPs = 10.8.0.11/32\n"
        ),
    );
    write_conf(
        &lab,
        "nas",
        &format!(
            "[Interface]\nAddress = 10.8.0.2/24\nPrivateKey = {nas_priv}\nMTU = 1420\n\
             PostUp = iptables -A FORWARD -i wg0 -o eth0 -j ACCEPT\n\n\
             [Peer]\nPublicKey = {vps_pub}\nEndpoint = 198.51.100.10:51820\nAllowedIPs = 10.8.0.0/24\nPersistentKeepalive = 4\n"
        ),
    );
    write_conf(
        &lab,
        "laptop",
        &format!(
            "[Interface]\nAddress = 10.8.0.10/24\nPrivateKey = {laptop_priv}\nMTU = 1420\n\n\
             [Peer]\nPublicKey = {vps_pub}\nEndpoint = 198.51.100.10:51820\nAllowedIPs = 10.8.0.0/24, 192.168.178.0/24\nPersistentKeepalive = 25\n"
        ),
    );
    for h in ["vps", "nas"] {
        ok(&lab, h, "sysctl -w net.ipv4.ip_forward=1");
    }
    for h in ["vps", "nas", "laptop"] {
        ok(&lab, h, "wg-quick up wg0 2>&1");
    }
    ok(
        &lab,
        "fritzbox",
        "ip route replace 10.8.0.0/24 via 192.168.178.10",
    );
    assert!(
        pings_within(&lab, "laptop", "192.168.178.20", 30),
        "the hand-made network works: laptop → homepc"
    );

    // Import.
    let out_file = dir.path().join("imported.yaml");
    let out = lab.meshctl(&[
        "import",
        "--host",
        "root@vps",
        "--host",
        "root@nas",
        "--host",
        "root@laptop",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    let import_text = text(&out);
    assert!(out.status.success(), "{import_text}");
    eprintln!("{import_text}");
    let yaml = std::fs::read_to_string(&out_file).unwrap();
    eprintln!("{yaml}");
    assert!(
        yaml.contains("  phone:\n"),
        "the phone is named from its comment:\n{yaml}"
    );
    assert!(yaml.contains(&phone_pub), "with its public key");
    // A second import never overwrites it.
    let again = lab.meshctl(&[
        "import",
        "--host",
        "root@vps",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("never overwrites"),
        "{}",
        text(&again)
    );
    // What the user is told to check: the NAS's own LAN address is not gathered.
    let yaml = yaml.replace(
        "address: 192.168.178.1   # CHECK",
        "address: 192.168.178.10   # CHECKED",
    );
    std::fs::write(&out_file, &yaml).unwrap();

    let inv_arg = out_file.to_str().unwrap();
    let plan = lab.meshctl(&["plan", "-i", inv_arg, "--json"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let plan_text = lab.meshctl(&["plan", "-i", inv_arg]);
    eprintln!("{}", text(&plan_text));
    for h in json["hosts"].as_array().unwrap() {
        assert_eq!(h["status"], "planned", "{h}");
        for c in h["changes"].as_array().unwrap() {
            let (action, kind) = (c["action"].as_str().unwrap(), c["kind"].as_str().unwrap());
            let what = format!("{}: {action} {kind} {}", h["host"], c["resource"]);
            assert!(
                !(kind == "peer" && action != "add"),
                "a peer removed or changed: {what}"
            );
            if kind.contains("key") {
                assert_eq!(action, "add", "{what}");
            }
        }
    }

    // The picture of the plan: every managed host orange (changes pending), drawn by a real
    // SVG renderer; after apply, green.
    let before_svg = graph_plan(&lab, inv_arg, &dir.path().join("before.svg"));
    assert!(before_svg.contains("plan: +"), "{before_svg}");
    assert!(!before_svg.contains("plan: in sync"), "{before_svg}");

    // Apply, with a continuous ping between the laptop and the NAS.
    let ping = Command::new(MESHCTL)
        .args(["lab", "exec", "--dir"])
        .arg(&lab.dir)
        .args(["laptop", "--", "sh", "-c", "ping -n -i 0.2 -w 20 10.8.0.2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let apply = lab.meshctl(&["apply", "-i", inv_arg, "--yes"]);
    let apply_text = text(&apply);
    assert!(apply.status.success(), "{apply_text}");
    let ping = ping.wait_with_output().unwrap();
    let ping_text = String::from_utf8_lossy(&ping.stdout).into_owned();
    let stats = ping_text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping statistics:\n{ping_text}"));
    eprintln!("during apply: {stats}");
    let nums: Vec<u64> = stats
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (sent, received) = (nums[0], nums[1]);
    assert!(sent >= 50, "{stats}");
    assert!(
        sent - received <= 1,
        "the tunnel stays up during apply: {stats}\n{apply_text}"
    );

    // Converged, the keys unchanged, the hand-made rule untouched.
    let again = lab.meshctl(&["plan", "-i", inv_arg, "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    for (h, public) in [
        ("vps", &vps_pub),
        ("nas", &nas_pub),
        ("laptop", &laptop_pub),
    ] {
        assert_eq!(
            &ok(&lab, h, "wg show wg0 public-key").trim().to_owned(),
            public,
            "{h}"
        );
    }
    assert!(ok(&lab, "vps", "ip6tables -S FORWARD").contains("-A FORWARD -i wg0 -j ACCEPT"));
    assert!(
        pings_within(&lab, "laptop", "192.168.178.20", 20),
        "laptop → homepc"
    );
    let after_svg = graph_plan(&lab, inv_arg, &dir.path().join("after.svg"));
    assert_eq!(after_svg.matches("plan: in sync").count(), 3, "{after_svg}");

    // The canary: no private key in any output or any file on the controller.
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    files_under(&lab.dir, &mut files);
    let outputs = [
        ("import", import_text),
        (
            "plan --json",
            String::from_utf8_lossy(&plan.stdout).into_owned(),
        ),
        ("plan", text(&plan_text)),
        ("apply", apply_text),
        ("plan again", text(&again)),
    ];
    let all: Vec<(&str, &str)> = outputs
        .iter()
        .map(|(w, t)| (*w, t.as_str()))
        .chain(files.iter().map(|(p, t)| (p.as_str(), t.as_str())))
        .collect();
    assert!(
        all.len() > outputs.len(),
        "the controller's files were read"
    );
    for c in canaries {
        for (what, t) in &all {
            assert!(!t.contains(c.as_str()), "a private key in {what}");
        }
    }
}
