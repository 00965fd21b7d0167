//! Secrets never leak, against real lab hosts:
//!
//! - a canary private key live on a host's interface and inline (with a preshared key) in a
//!   hand-made wg0.conf appears in no output of plan / apply / their error paths and in no file
//!   meshctl wrote on the controller; apply adopts it into the 0600 key file;
//! - key files and configs holding secrets are created 0600 (traced with strace: no window in
//!   which they are readable by others);
//! - keys generated on a host never travel: no output and no controller file carries one, and
//!   the remote scripts themselves print none.
//!
//! Needs root and `strace` (ci/test must install it); never skips. Lab names start with
//! `secrets_`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use meshctl::scripts::steps;
use support::leaks::{assert_without, files_under};
use support::{TestLab, assert_success, ok, own_inventory, text};

/// Throw-away keys made for this test only (never used anywhere else).
const CANARY: &str = "+MEmSiaxZTxaRZskbM3vbPRgFZ3VmGJJBE0z3bMlV0k=";
const CANARY_PSK: &str = "2ODcZkRJa3zyls+96SOPp57RPz6Pf2WFRGmQoR6pSm8=";
/// A peer of the hand-made config (its public key only).
const FOREIGN_PEER: &str = "5oGyCrunmUJuPDmSvZDeSLDSEe5Ke5fRwfeoj2xhTk0=";

/// Asserts that no form of any of `keys` occurs in `haystack`.
fn assert_clean(what: &str, haystack: &str, keys: &[(&str, String)]) {
    for (name, key) in keys {
        assert_without(what, haystack, name, key);
    }
}

fn wg_pubkey(private: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run wg pubkey");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{private}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "wg pubkey").trim().to_owned()
}

#[test]
fn a_canary_key_appears_in_no_output_and_no_file_and_is_adopted() {
    let (dir, inv) = own_inventory("rel-secrets-canary");
    let lab = TestLab::up("secrets_canary", &inv);
    let canary_pub = wg_pubkey(CANARY);

    // A hand-made setup on nas: a live interface with the canary key and a peer with a
    // preshared key, and a config holding both inline.
    ok(
        &lab,
        "nas",
        &format!(
            "umask 077; printf '%s\\n' {CANARY} > /root/canary.key; printf '%s\\n' {CANARY_PSK} > /root/canary.psk"
        ),
    );
    ok(&lab, "nas", "wireguard-go wg0 2>/dev/null");
    ok(
        &lab,
        "nas",
        &format!(
            "wg set wg0 private-key /root/canary.key peer {FOREIGN_PEER} preshared-key /root/canary.psk allowed-ips 10.99.0.1/32 && ip link set wg0 up"
        ),
    );
    ok(
        &lab,
        "nas",
        &format!(
            "umask 077; cat > /etc/wireguard/wg0.conf <<'EOF'\n[Interface]\nPrivateKey = {CANARY}\nAddress = 10.8.0.2/24\nListenPort = 51820\n\n[Peer]\nPublicKey = {FOREIGN_PEER}\nPresharedKey = {CANARY_PSK}\nAllowedIPs = 10.99.0.1/32\nEOF"
        ),
    );
    assert_eq!(
        ok(&lab, "nas", "wg show wg0 public-key").trim(),
        canary_pub,
        "the canary is live"
    );

    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut run = |args: &[&str], want: Option<i32>| {
        let out = lab.meshctl(args);
        if let Some(code) = want {
            assert_eq!(out.status.code(), Some(code), "{args:?}:\n{}", text(&out));
        }
        outputs.push((format!("{args:?}"), text(&out)));
    };
    let saved = dir.path().join("saved.json");
    let saved = saved.to_str().unwrap();
    run(&["plan"], Some(0));
    run(&["plan", "--json"], Some(0));
    run(&["-v", "plan"], Some(0));
    run(&["plan", "--detailed-exitcode"], Some(2));
    run(&["plan", "-o", saved], Some(0));
    // Error paths: a broken inventory; a host whose writes fail (after its key was read);
    // a stale saved plan; a host that cannot be reached.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&inv)
            .unwrap()
            .replace("address: 10.8.0.2", "address: 10.8.0.2.7"),
    )
    .unwrap();
    run(&["apply", "--yes", "-i", broken.to_str().unwrap()], Some(1));
    run(&["plan", "-i", broken.to_str().unwrap()], Some(1));
    ok(&lab, "nas", "mount -o remount,ro /etc/meshctl");
    run(&["-v", "apply", "--yes"], Some(1));
    ok(&lab, "nas", "mount -o remount,rw /etc/meshctl");
    run(&["apply", saved, "--yes"], Some(1));
    let laptop_sshd = lab.state().hosts["laptop"]
        .sshd_pid
        .expect("laptop runs sshd");
    assert!(
        Command::new("kill")
            .arg(laptop_sshd.to_string())
            .status()
            .unwrap()
            .success()
    );
    run(&["-v", "apply", "--yes"], Some(1));
    run(&["apply", "--yes"], Some(1));
    run(&["plan", "--json"], Some(1));
    run(&["plan", "-o", saved], Some(1));

    let keys = [
        ("the canary private key", CANARY.to_owned()),
        ("the canary preshared key", CANARY_PSK.to_owned()),
    ];
    for (what, out) in &outputs {
        assert_clean(&format!("the output of meshctl {what}"), out, &keys);
    }
    let failed = outputs
        .iter()
        .find(|(w, _)| w == r#"["-v", "apply", "--yes"]"#)
        .map(|(_, o)| o.clone())
        .unwrap_or_default();
    assert!(
        failed.contains("nas: failed"),
        "the read-only apply failed on nas:\n{failed}"
    );
    // Files on the controller: the inventory's directory (keys file, saved plans) and the lab's.
    let files: Vec<(PathBuf, String)> = files_under(dir.path())
        .into_iter()
        .chain(files_under(&lab.dir))
        .collect();
    assert!(
        files.iter().any(|(p, _)| p.ends_with("lab.keys.yaml")),
        "the keys file was written"
    );
    assert!(
        files.iter().any(|(p, _)| p.ends_with("saved.json")),
        "the saved plan was written"
    );
    for (path, content) in &files {
        assert_clean(&format!("{}", path.display()), content, &keys);
    }

    // The host adopted the canary: its identity stays, the key sits in the 0600 file, and the
    // config no longer holds any secret.
    assert_eq!(
        ok(&lab, "nas", "wg show wg0 public-key").trim(),
        canary_pub,
        "the host kept its key"
    );
    assert_eq!(
        ok(&lab, "nas", "cat /etc/wireguard/wg0.key").trim(),
        CANARY,
        "the key file holds the adopted key"
    );
    assert_eq!(
        ok(&lab, "nas", "stat -c %a /etc/wireguard/wg0.key").trim(),
        "600"
    );
    assert_eq!(
        ok(&lab, "nas", "stat -c %a /etc/wireguard/wg0.conf").trim(),
        "600"
    );
    let conf = ok(&lab, "nas", "cat /etc/wireguard/wg0.conf");
    assert!(
        !conf.contains("PrivateKey") && !conf.contains("PresharedKey"),
        "wg0.conf still holds a secret:\n{conf}"
    );
    let pinned = std::fs::read_to_string(dir.path().join("lab.keys.yaml")).unwrap();
    assert!(
        pinned.contains(&format!("nas: \"{canary_pub}\"")),
        "the canary's public key is pinned:\n{pinned}"
    );
}

// ---- Files holding secrets are created 0600 ----

/// One syscall of a strace log (`-f -y`), unfinished/resumed halves joined.
struct Syscall {
    pid: u32,
    name: String,
    line: String,
}

fn syscalls(log: &str) -> Vec<Syscall> {
    let mut pending: BTreeMap<u32, String> = BTreeMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, head.to_owned());
            continue;
        }
        let full = if let Some(tail) = rest.strip_prefix("<... ") {
            let tail = tail.split_once("resumed>").map_or(tail, |(_, t)| t);
            format!("{}{}", pending.remove(&pid).unwrap_or_default(), tail)
        } else {
            rest.to_owned()
        };
        let Some(name) = full
            .split('(')
            .next()
            .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            continue;
        };
        calls.push(Syscall {
            pid,
            name: name.to_owned(),
            line: full.clone(),
        });
    }
    calls
}

/// The first quoted string of a syscall line (its path).
fn quoted(line: &str) -> Option<&str> {
    let start = line.find('"')? + 1;
    let end = start + line[start..].find('"')?;
    Some(&line[start..end])
}

/// The value after the last `= ` (a return value; with `-y` possibly `3</path>`).
fn returned(line: &str) -> &str {
    line.rsplit_once(") = ")
        .map_or("", |(_, r)| r.split_whitespace().next().unwrap_or(""))
}

fn octal_arg(line: &str) -> Option<u32> {
    let args = line[line.find('(')? + 1..line.rfind(") = ")?].to_owned();
    let last = args.rsplit(", ").next()?.trim();
    u32::from_str_radix(last.trim_start_matches('0'), 8)
        .ok()
        .or((last == "0" || last == "000").then_some(0))
}

/// Every file created under `dir` by the traced processes and every mode set on one there:
/// `(path, effective permission bits, how)`. Tracks each process's umask (inherited over
/// clone/fork, as the kernel does) and which paths exist already (made earlier in the trace).
fn created_modes(log: &str, dir: &str) -> Vec<(String, u32, String)> {
    let calls = syscalls(log);
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    for c in &calls {
        if matches!(c.name.as_str(), "clone" | "clone3" | "fork" | "vfork")
            && let Ok(child) = returned(&c.line).parse::<u32>()
        {
            parent.insert(child, c.pid);
        }
    }
    // Unknown at the start: assume the usual 022 (which would reveal a readable file).
    let mut umask: BTreeMap<u32, u32> = BTreeMap::new();
    let mut found = Vec::new();
    let mut exists: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for c in &calls {
        if !umask.contains_key(&c.pid) {
            let inherited = parent
                .get(&c.pid)
                .and_then(|p| umask.get(p))
                .copied()
                .unwrap_or(0o022);
            umask.insert(c.pid, inherited);
        }
        let mask = umask[&c.pid];
        match c.name.as_str() {
            "umask" => {
                let arg = &c.line[6..c.line.find(')').unwrap()];
                umask.insert(c.pid, u32::from_str_radix(arg, 8).expect("umask argument"));
            }
            "openat" | "open" | "creat" => {
                let Some(path) = quoted(&c.line) else {
                    continue;
                };
                let creates = c.line.contains("O_CREAT") || c.name == "creat";
                // Only the open that makes the file sets its mode (a later `> file` of a
                // file mktemp made keeps mktemp's 0600).
                if creates
                    && path.starts_with(dir)
                    && !returned(&c.line).starts_with('-')
                    && exists.insert(path.to_owned())
                {
                    let mode = octal_arg(&c.line).expect("a mode with O_CREAT");
                    found.push((path.to_owned(), mode & !mask, c.line.clone()));
                }
            }
            "rename" | "renameat" | "renameat2" => {
                let paths: Vec<&str> = c.line.split('"').skip(1).step_by(2).collect();
                if let [from, to, ..] = paths[..] {
                    exists.remove(from);
                    exists.insert(to.to_owned());
                }
            }
            "chmod" | "fchmodat" => {
                let Some(path) = quoted(&c.line) else {
                    continue;
                };
                if path.starts_with(dir) {
                    found.push((
                        path.to_owned(),
                        octal_arg(&c.line).expect("a chmod mode"),
                        c.line.clone(),
                    ));
                }
            }
            _ => {}
        }
    }
    found
}

/// Runs `script` with sh on `host` under strace; returns the trace.
fn traced(lab: &TestLab, host: &str, dir: &Path, name: &str, script: &str) -> String {
    let file = dir.join(format!("{name}.sh"));
    let trace = dir.join(format!("{name}.trace"));
    std::fs::write(&file, script).unwrap();
    let out = lab.exec(
        host,
        &format!(
            // No userspace WireGuard daemon (`true` stands in for it): it would outlive the
            // script, and strace -f waits for every process it follows.
            "WG_QUICK_USERSPACE_IMPLEMENTATION=true strace -f -qq -y -o {} -e trace=umask,open,openat,creat,chmod,fchmodat,rename,renameat,renameat2,clone,clone3,fork,vfork sh {}",
            trace.display(),
            file.display()
        ),
    );
    // (The script may fail later on, e.g. the interface without its daemon: the files count.)
    let log = std::fs::read_to_string(&trace)
        .unwrap_or_else(|e| panic!("no strace log ({e}):\n{}", text(&out)));
    assert!(!log.is_empty(), "empty strace log:\n{}", text(&out));
    log
}

#[test]
fn key_and_config_files_are_created_0600() {
    // The scripts say so ...
    let prepare = steps::prepare("test", false, "/etc/wireguard/wg0.key", "wg0", "");
    let umask_at = prepare.find("umask 077").expect("prepare sets umask 077");
    let genkey_at = prepare
        .find("wg genkey")
        .expect("prepare generates the key");
    assert!(
        umask_at < genkey_at,
        "umask 077 comes before the key is generated:\n{prepare}"
    );

    // ... and the kernel agrees: trace a real prepare and changes on a fresh host.
    let (dir, inv) = own_inventory("rel-secrets-modes");
    let lab = TestLab::up("secrets_modes", &inv);
    let out = lab.meshctl(&["plan", "--json"]);
    let plan: meshctl::plan::Plan = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --json: {e}\n{}", text(&out)));
    let nas = plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "nas")
        .expect("nas in the plan");

    let trace = traced(
        &lab,
        "nas",
        dir.path(),
        "prepare",
        &format!("{prepare}\n{}", steps::unlock()),
    );
    let made = created_modes(&trace, "/etc/wireguard/");
    assert!(
        made.iter()
            .any(|(p, ..)| p == "/etc/wireguard/wg0.key.meshctl-new"),
        "the trace shows the key being made:\n{trace}"
    );
    let trace2 = traced(
        &lab,
        "nas",
        dir.path(),
        "changes",
        &steps::changes(&nas.changes, steps::OnFailure::Stop),
    );
    let made2 = created_modes(&trace2, "/etc/wireguard/");
    assert!(
        made2
            .iter()
            .any(|(p, ..)| p.starts_with("/etc/wireguard/.meshctl."))
            && trace2.contains("\"/etc/wireguard/wg0.conf\""),
        "the trace shows wg0.conf being written through a temp file:\n{trace2}"
    );
    for (path, mode, line) in made.iter().chain(&made2) {
        assert_eq!(
            mode & 0o077,
            0,
            "{path} was created or chmod'ed readable by others ({mode:o}): {line}"
        );
    }
    for f in ["wg0.key", "wg0.conf"] {
        assert_eq!(
            ok(&lab, "nas", &format!("stat -c %a /etc/wireguard/{f}")).trim(),
            "600",
            "{f}"
        );
    }

    // After a real apply: every host's key and config are 0600, and so is a saved plan.
    let out = lab.meshctl(&["apply", "--yes", "--break-lock"]);
    assert!(out.status.success(), "{}", text(&out));
    for h in ["vps", "nas", "laptop"] {
        let modes = ok(
            &lab,
            h,
            "stat -c '%a %n' /etc/wireguard/wg0.key /etc/wireguard/wg0.conf",
        );
        assert!(
            modes.lines().count() == 2 && modes.lines().all(|l| l.starts_with("600 ")),
            "{h}: {modes}"
        );
    }
    let saved = dir.path().join("plan.json");
    assert_success(
        &lab.meshctl(&["plan", "-o", saved.to_str().unwrap()]),
        "plan -o",
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600,
        "a saved plan is 0600"
    );
}

#[test]
fn keys_generated_on_a_host_never_travel() {
    let (dir, inv) = own_inventory("rel-secrets-travel");
    let lab = TestLab::up("secrets_travel", &inv);
    let mut outputs: Vec<(String, String)> = Vec::new();
    for args in [
        &["-v", "apply", "--yes"][..],
        &["-v", "apply", "--yes"],
        &["-v", "plan"],
        &["plan", "--json"],
    ] {
        let out = lab.meshctl(args);
        assert!(out.status.success(), "{args:?}:\n{}", text(&out));
        outputs.push((format!("{args:?}"), text(&out)));
    }
    let saved = dir.path().join("plan.json");
    assert_success(
        &lab.meshctl(&["plan", "-o", saved.to_str().unwrap()]),
        "plan -o",
    );

    // What the remote scripts themselves print (prepare, gather, finish), run on each host.
    let inputs = meshctl::files::load_inputs(&inv, None).expect("inputs");
    let desired = inputs.desired();
    let mut keys: Vec<(String, String)> = Vec::new();
    for h in ["vps", "nas", "laptop"] {
        let key = ok(&lab, h, "cat /etc/wireguard/wg0.key").trim().to_owned();
        keys.push((format!("the private key of {h}"), key));
        let d = desired
            .iter()
            .find(|(n, _)| n.as_str() == h)
            .expect("host")
            .1;
        let spec = meshctl::planner::gather_spec(d, &inputs.roles);
        let gather = meshctl::facts::gather_script(&spec);
        let prepare = steps::prepare(
            "test",
            false,
            &spec.key_file,
            spec.interface.as_str(),
            &gather,
        );
        for (name, s) in [("prepare", prepare), ("finish", steps::finish(&gather))] {
            let file = dir.path().join(format!("{h}-{name}.sh"));
            std::fs::write(&file, s).unwrap();
            let out = lab.exec(h, &format!("sh {}", file.display()));
            assert_success(&out, &format!("{name} on {h}"));
            outputs.push((format!("{name} on {h}"), text(&out)));
        }
    }
    let keys: Vec<(&str, String)> = keys.iter().map(|(n, k)| (n.as_str(), k.clone())).collect();
    for (what, out) in &outputs {
        assert_clean(what, out, &keys);
    }
    let files: Vec<(PathBuf, String)> = files_under(dir.path())
        .into_iter()
        .chain(files_under(&lab.dir))
        .collect();
    assert!(
        files.iter().any(|(p, _)| p.ends_with("plan.json"))
            && files.iter().any(|(p, _)| p.ends_with("lab.keys.yaml"))
    );
    for (path, content) in &files {
        assert_clean(&format!("{}", path.display()), content, &keys);
    }
}
