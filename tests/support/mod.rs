//! The one support module of the integration tests: running against a lab of real hosts
//! (`meshctl lab`) here, and in [`core`] the fixed keys and helpers of the SSH-free core tests.
//!
//! ```ignore
//! mod support;
//! use support::TestLab;
//!
//! let lab = TestLab::up("plan_no_changes", Path::new("inventory/lab.yaml"));
//! let out = lab.meshctl(&["plan", "--detailed-exitcode"]);   // uses the lab's ssh_config
//! let (connections, sessions) = lab.sshd_counts("vps");
//! // dropping `lab` runs `meshctl lab down`
//! ```
//!
//! Each `TestLab` has its own directory under `target/test-labs/<name>` and therefore its own
//! namespace prefix, so tests run in parallel. Give every test its own name (test files may
//! share no lab). Lab tests need root; they never skip: without root `TestLab::up` panics, so a
//! CI run that cannot build the lab fails.
// Each test file uses a part of this module; the rest is dead code there.
#![allow(dead_code)]

pub mod core;
pub mod leaks;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use meshctl::lab::LabState;

/// The built `meshctl` binary.
pub const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

/// A lab built for one test; `Drop` tears it down.
pub struct TestLab {
    /// The lab directory (canonical): `lab.json`, `ssh_config`, keys, `logs/<host>.sshd.log`.
    pub dir: PathBuf,
    /// The inventory the lab was built from (absolute).
    pub inventory: PathBuf,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Panics with the command's output unless it succeeded; returns its stdout.
pub fn assert_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    meshctl::lab::sys::alive(pid)
}

impl TestLab {
    /// Builds a lab from `inventory` (relative paths are taken from the crate root) in
    /// `target/test-labs/<name>`, after removing whatever a previous run left there.
    /// Panics with a clear message when it cannot (not root, a package missing, ...).
    pub fn up(name: &str, inventory: &Path) -> TestLab {
        Self::up_with(name, inventory, &[])
    }

    /// [`TestLab::up`] with `machines` booted as Debian machines with systemd (`lab up
    /// --machine`): their login is `admin` (sudo), so the inventory must log in as `admin@`
    /// there (see [`machine_inventory`]). The first run on a machine builds the cached root file
    /// system and package mirror (minutes); later runs reuse them.
    pub fn up_machines(name: &str, inventory: &Path, machines: &[&str]) -> TestLab {
        let args: Vec<String> = machines.iter().map(|m| format!("--machine={m}")).collect();
        Self::up_with(name, inventory, &args)
    }

    fn up_with(name: &str, inventory: &Path, extra: &[String]) -> TestLab {
        assert!(
            is_root(),
            "lab test {name} needs root (it builds network namespaces): run the tests as root, e.g. `ci/test`"
        );
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = root.join(inventory);
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
            .to_path_buf();
        let dir = target.join("test-labs").join(name);
        if dir.exists() {
            let _ = Command::new(MESHCTL)
                .args(["lab", "down", "--dir"])
                .arg(&dir)
                .output();
            std::fs::remove_dir_all(&dir).expect("remove the previous test lab directory");
        }
        std::fs::create_dir_all(&dir).expect("create the test lab directory");
        let dir = dir.canonicalize().expect("canonical test lab directory");
        let lab = TestLab { dir, inventory };
        let out = Command::new(MESHCTL)
            .args(["lab", "up", "-i"])
            .arg(&lab.inventory)
            .arg("--dir")
            .arg(&lab.dir)
            .args(extra)
            .output()
            .expect("run meshctl lab up");
        assert_success(&out, &format!("meshctl lab up for test {name}"));
        lab
    }

    /// The lab's ssh_config (`ssh -F <it> root@vps`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// The lab's state (`lab.json`): prefix, namespaces, kinds, addresses, sshd pids.
    pub fn state(&self) -> LabState {
        meshctl::lab::load(&self.dir).expect("read lab.json")
    }

    /// The namespace prefix of this lab (`<prefix>-<host>`).
    pub fn prefix(&self) -> String {
        self.state().prefix
    }

    /// Runs `sh -c sh_cmd` in lab host `host` (`meshctl lab exec`: network and mount namespace).
    pub fn exec(&self, host: &str, sh_cmd: &str) -> Output {
        Command::new(MESHCTL)
            .args(["lab", "exec", "--dir"])
            .arg(&self.dir)
            .args([host, "--", "sh", "-c", sh_cmd])
            .output()
            .expect("run meshctl lab exec")
    }

    /// Runs `sh_cmd` on `host` over SSH with the lab's ssh_config (strict host key checking).
    pub fn ssh(&self, host: &str, sh_cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .args([host, sh_cmd])
            .output()
            .expect("run ssh")
    }

    /// Runs the meshctl binary with `args`, from the crate root, with `MESHCTL_SSH_CONFIG` set
    /// to the lab's ssh_config and `MESHCTL_INVENTORY` to the lab's inventory.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        Command::new(MESHCTL)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("MESHCTL_SSH_CONFIG", self.ssh_config())
            .env("MESHCTL_INVENTORY", &self.inventory)
            .env("NO_COLOR", "1")
            .output()
            .expect("run meshctl")
    }

    /// `(connections, sessions)` that `host`'s sshd has logged so far: `Accepted publickey` and
    /// `Starting session:` lines (one per remote command). Compare before and after an action.
    pub fn sshd_counts(&self, host: &str) -> (usize, usize) {
        meshctl::lab::sshd_counts(&self.dir, host)
    }

    /// Runs `meshctl lab down` (idempotent; `Drop` calls it too) and returns its output.
    pub fn down(&self) -> Output {
        Command::new(MESHCTL)
            .args(["lab", "down", "--dir"])
            .arg(&self.dir)
            .output()
            .expect("run meshctl lab down")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let out = self.down();
        if !out.status.success() {
            eprintln!(
                "meshctl lab down --dir {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Copies `inventory/lab.yaml` into a temporary directory of the test's own, so the public keys
/// meshctl pins beside an inventory belong to that test alone. Keep the `TempDir` alive.
pub fn own_inventory(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir()
        .expect("temp dir");
    let inv = dir.path().join("lab.yaml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/lab.yaml"),
        &inv,
    )
    .expect("copy inventory/lab.yaml");
    (dir, inv)
}

/// [`own_inventory`] for a lab whose `machines` are booted machines: their ssh targets log in
/// as the machines' `admin` (root cannot log in there).
pub fn machine_inventory(name: &str, machines: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let (dir, inv) = own_inventory(name);
    let mut text = std::fs::read_to_string(&inv).expect("read the inventory copy");
    for m in machines {
        let (from, to) = (format!("ssh: root@{m}\n"), format!("ssh: admin@{m}\n"));
        assert!(text.contains(&from), "inventory/lab.yaml has no `{from}`");
        text = text.replace(&from, &to);
    }
    std::fs::write(&inv, text).expect("write the inventory copy");
    (dir, inv)
}

impl TestLab {
    /// The pid of the systemd-nspawn of machine `host`'s current boot.
    pub fn nspawn_pid(&self, host: &str) -> Option<u32> {
        meshctl::lab::machine::nspawn_pid(&meshctl::lab::Layout::new(&self.dir), host)
    }

    /// Reboots machine `host` from inside (`sudo -n systemctl reboot` over SSH, as a user
    /// would) and waits until it is back: a new boot, systemd running, sshd letting admin in.
    pub fn reboot(&self, host: &str) {
        let before = self.nspawn_pid(host).expect("the machine runs");
        // ssh may or may not see the exit status before the connection drops.
        let _ = self.ssh(host, "sudo -n systemctl reboot");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "machine {host} did not come back within 180s after a reboot"
            );
            if let Some(now) = self.nspawn_pid(host)
                && now != before
                && self
                    .ssh(
                        host,
                        "systemctl is-system-running | grep -qx -e running -e degraded",
                    )
                    .status
                    .success()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// A command's stdout and stderr together, for assertion messages and searches.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` in lab host `host` and returns its stdout; panics (with its output) on failure.
pub fn ok(lab: &TestLab, host: &str, cmd: &str) -> String {
    assert_success(&lab.exec(host, cmd), &format!("{host}: {cmd}"))
}

/// The manual step meshctl printed for the router, carried out the way a user would.
pub fn add_router_route(lab: &TestLab, apply_output: &str) {
    let line = apply_output
        .lines()
        .find(|l| l.contains("fritzbox: add the static IPv4 route"))
        .unwrap_or_else(|| panic!("no manual step for fritzbox in:\n{apply_output}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let route = words[words.iter().position(|w| *w == "route").unwrap() + 1];
    let via = words[words.iter().position(|w| *w == "via").unwrap() + 1];
    ok(
        lab,
        "fritzbox",
        &format!("ip route replace {route} via {via}"),
    );
}

/// `host`'s live preshared key for its peer with public key `peer` (read on the host by the
/// test, never by meshctl).
pub fn live_psk(lab: &TestLab, host: &str, peer: &str) -> String {
    let out = ok(lab, host, "wg show wg0 preshared-keys");
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{peer}\t")))
        .unwrap_or_else(|| panic!("{host}: no peer {peer}:\n{out}"))
        .trim()
        .to_owned()
}

/// `host`'s public key, from its live interface.
pub fn pubkey(lab: &TestLab, host: &str) -> String {
    ok(lab, host, "wg show wg0 public-key").trim().to_owned()
}

/// Pings `addr` from `host` until it answers or `secs` have passed: right after an apply, the
/// NAS (behind NAT) joins when its keepalive makes it handshake, which a loaded machine delays.
pub fn pings_within(lab: &TestLab, host: &str, addr: &str, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if lab
            .exec(host, &format!("ping -c 1 -W 1 {addr}"))
            .status
            .success()
        {
            return true;
        }
    }
    false
}

/// The packet counter of the one rule of `chain` (as `<tool> -w -t <table> -L <chain> -v -n -x`
/// lists it on `host`) whose line has every one of `needles` as a word; panics when no rule or
/// more than one matches, so a test never reads the wrong counter.
pub fn rule_packets(
    lab: &TestLab,
    host: &str,
    tool: &str,
    table: &str,
    chain: &str,
    needles: &[&str],
) -> u64 {
    try_rule_packets(lab, host, tool, table, chain, needles).unwrap_or_else(|out| {
        panic!("{host}: exactly one rule of {tool} {table}/{chain} with {needles:?}:\n{out}")
    })
}

/// [`rule_packets`], or the chain's listing when not exactly one rule matches (for a counter
/// taken before a step, on a hub whose rules may not have it).
pub fn try_rule_packets(
    lab: &TestLab,
    host: &str,
    tool: &str,
    table: &str,
    chain: &str,
    needles: &[&str],
) -> Result<u64, String> {
    let out = ok(
        lab,
        host,
        &format!("{tool} -w -t {table} -L {chain} -v -n -x"),
    );
    let lines: Vec<&str> = out
        .lines()
        .skip(2)
        .filter(|l| {
            needles
                .iter()
                .all(|n| l.split_whitespace().any(|w| w == *n))
        })
        .collect();
    match lines[..] {
        [line] => Ok(line
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no packet counter in {line:?}"))),
        _ => Err(out),
    }
}
