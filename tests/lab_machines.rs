//! End-to-end tests of lab machines (`meshctl lab up --machine`): hosts booted as Debian with
//! systemd as PID 1 in their lab namespace, fresh like a rented VPS, with the lab's own package
//! mirror. Root required; they never skip. The first run on a machine builds the cached root
//! file system and mirror (see README "Lab machines").

mod support;

use std::path::Path;

use support::{TestLab, assert_success, machine_inventory, process_alive, text};

/// Runs `cmd` on `host` over SSH (as the inventory's user) and returns its trimmed stdout.
fn ssh_ok(lab: &TestLab, host: &str, cmd: &str) -> String {
    assert_success(&lab.ssh(host, cmd), &format!("ssh {host} {cmd}"))
        .trim()
        .to_owned()
}

/// Whether anything is mounted at or below `dir`.
fn mounted_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_machine_boots_systemd_lets_only_admin_in_and_reboots_for_real() {
    let (_tmp, inv) = machine_inventory("lab_machines_boot", &["vps", "nas"]);
    let lab = TestLab::up_machines("lab_machines_boot", &inv, &["vps", "nas"]);
    let state = lab.state();
    let mut pids = Vec::new();
    for host in ["vps", "nas"] {
        let h = &state.hosts[host];
        let m = h.machine.as_ref().expect("a machine");
        assert!(h.sshd_pid.is_none(), "{host}: no sshd of the controller's");
        let (sup, nspawn) = (m.supervisor_pid.unwrap(), m.nspawn_pid.unwrap());
        assert!(process_alive(sup) && process_alive(nspawn), "{host}: {m:?}");
        pids.extend([sup, nspawn]);
    }
    assert!(state.hosts["laptop"].machine.is_none());
    assert!(
        state.hosts["laptop"].sshd_pid.is_some(),
        "laptop stays a namespace host"
    );
    let mirror = state
        .mirror
        .as_ref()
        .expect("a lab with machines has a mirror");
    assert_eq!(mirror.url, "http://198.51.100.200");
    pids.push(mirror.pid.unwrap());

    for host in ["vps", "nas"] {
        // systemd is PID 1, the login is admin, sudo needs no password.
        assert_eq!(ssh_ok(&lab, host, "cat /proc/1/comm"), "systemd", "{host}");
        assert_eq!(ssh_ok(&lab, host, "hostname"), host);
        assert_eq!(ssh_ok(&lab, host, "id -un"), "admin", "{host}");
        assert_eq!(ssh_ok(&lab, host, "sudo -n id -u"), "0", "{host}");
        let running = ssh_ok(&lab, host, "systemctl is-system-running || true");
        assert!(
            ["running", "degraded"].contains(&running.as_str()),
            "{host}: {running}"
        );
        assert_success(
            &lab.ssh(host, "test -d /run/systemd/system"),
            "systemd detected",
        );
        // Root cannot log in at all.
        let root = lab.ssh(&format!("root@{host}"), "true");
        assert!(
            !root.status.success(),
            "{host}: root logged in: {}",
            text(&root)
        );
        // Fresh like a rented VPS: nothing of WireGuard, no iptables, apt knows only the mirror.
        assert_eq!(
            ssh_ok(
                &lab,
                host,
                "for p in wg wg-quick wireguard-go iptables ip6tables; do \
                   PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v $p || echo no-$p; done"
            ),
            "no-wg\nno-wg-quick\nno-wireguard-go\nno-iptables\nno-ip6tables",
            "{host}"
        );
        assert_eq!(
            ssh_ok(
                &lab,
                host,
                "grep -rh '^deb' /etc/apt/sources.list /etc/apt/sources.list.d/ || true"
            ),
            "deb [trusted=yes] http://198.51.100.200 ./",
            "{host}"
        );
    }

    // The NAS, behind the home router's NAT, gets the packages from the lab's mirror.
    ssh_ok(&lab, "nas", "sudo -n apt-get update -q");
    let policy = ssh_ok(
        &lab,
        "nas",
        "apt-cache policy wireguard-tools wireguard-go iptables",
    );
    assert_eq!(policy.matches("198.51.100.200").count(), 3, "{policy}");
    let log = std::fs::read_to_string(lab.dir.join("logs/mirror.log")).unwrap();
    assert!(log.contains("/Packages HTTP/1.1\" 200"), "{log}");

    // A reboot from inside restarts the machine: a new boot in its journal, the same copy.
    ssh_ok(&lab, "nas", "sudo -n touch /var/lib/kept-over-reboot");
    let before = lab.nspawn_pid("nas").unwrap();
    lab.reboot("nas");
    assert_ne!(lab.nspawn_pid("nas").unwrap(), before);
    assert_eq!(
        ssh_ok(
            &lab,
            "nas",
            "sudo -n journalctl --list-boots --no-pager -q | wc -l"
        ),
        "2"
    );
    ssh_ok(&lab, "nas", "test -e /var/lib/kept-over-reboot");
    // `lab exec` runs inside the machine (its own programs, as root).
    let out = lab.exec("nas", "cat /proc/1/comm; id -u");
    assert_eq!(assert_success(&out, "lab exec nas"), "systemd\n0\n");

    // `lab down` stops every machine and the mirror and removes the copies.
    pids.push(lab.nspawn_pid("nas").unwrap());
    assert_success(&lab.down(), "lab down");
    for p in pids {
        assert!(!process_alive(p), "pid {p} still runs after lab down");
    }
    assert!(!lab.dir.join("machines").exists());
    assert_eq!(mounted_under(&lab.dir), Vec::<String>::new());
}

#[test]
fn lab_down_stops_machines_a_crashed_run_left_without_state() {
    let (_tmp, inv) = machine_inventory("lab_machines_crash", &["vps"]);
    let lab = TestLab::up_machines("lab_machines_crash", &inv, &["vps"]);
    let state = lab.state();
    let m = state.hosts["vps"].machine.clone().unwrap();
    let (sup, nspawn) = (m.supervisor_pid.unwrap(), m.nspawn_pid.unwrap());
    // As if `lab up` or the test had crashed before it recorded anything.
    std::fs::remove_file(lab.dir.join("lab.json")).unwrap();
    assert_success(&lab.down(), "lab down without lab.json");
    assert!(!process_alive(sup) && !process_alive(nspawn));
    assert!(!lab.dir.join("machines").exists());
    assert_eq!(mounted_under(&lab.dir), Vec::<String>::new());
    let prefix = format!("{}-", state.prefix);
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ns.stdout).contains(&prefix));
}

#[test]
fn a_machine_must_be_logged_into_as_admin() {
    // inventory/lab.yaml logs in as root@vps: a machine would refuse every command, so lab up
    // says so and builds nothing.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab_machines_root_login");
    let out = std::process::Command::new(support::MESHCTL)
        .args([
            "lab",
            "up",
            "-i",
            "inventory/lab.yaml",
            "--machine",
            "vps",
            "--dir",
        ])
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("host vps is a lab machine, which lets only admin log in")
            && t.contains("use `ssh: admin@vps`"),
        "{t}"
    );
    let out = std::process::Command::new(support::MESHCTL)
        .args([
            "lab",
            "up",
            "-i",
            "inventory/lab.yaml",
            "--machine",
            "vsp",
            "--dir",
        ])
        .arg(&dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        text(&out).contains("--machine vsp: no such host"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("lab.json").exists());
}
