//! Faults during apply, against real lab hosts: a connection that dies in the middle
//! of an apply, an unreachable host, a changed host key, a step that fails half way, a full
//! disk, and two applies at once. Each leaves every file whole (old or new, never partial),
//! names the host and what happened, and a re-run converges.
//!
//! Faults are injected inside one lab host's own mount namespace (private propagation), so no
//! other host and nothing on the machine sees them: a "gate" bind-mounted over `cat` stalls the
//! first atomic file write half way, a wrapper over `ip` makes one route fail, a tiny tmpfs
//! fills up. Each test builds its own lab (needs root; never skips); lab names start with
//! `faults_`.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{MESHCTL, TestLab, assert_success, ok, own_inventory, process_alive, text};

fn apply_converges(lab: &TestLab, extra: &[&str]) -> String {
    let mut args = vec!["apply", "--yes"];
    args.extend_from_slice(extra);
    let out = lab.meshctl(&args);
    let t = text(&out);
    assert!(out.status.success(), "apply {extra:?} failed:\n{t}");
    assert!(t.contains("3 host(s) converged, 0 failed."), "{t}");
    t
}

fn plan_is_empty(lab: &TestLab) {
    let out = lab.meshctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "plan after the re-run must be empty:\n{}",
        text(&out)
    );
}

/// The inventory beside `inv` with `from` replaced by `to`.
fn change_inventory(inv: &Path, from: &str, to: &str) {
    let yaml = std::fs::read_to_string(inv).unwrap();
    assert!(yaml.contains(from), "{from:?} not in the inventory");
    std::fs::write(inv, yaml.replacen(from, to, 1)).unwrap();
}

/// Waits up to `secs` for `cond`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `meshctl args` in the background (its own process group, so that killing the group
/// takes its ssh clients with it), with the lab's ssh_config and inventory. Its SSH control
/// directories go in `runtime` (`XDG_RUNTIME_DIR`), a temp dir of the test's: a run the test
/// kills cannot remove its own, which would otherwise stay behind in /tmp.
fn spawn_meshctl(lab: &TestLab, runtime: &Path, args: &[&str]) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(MESHCTL)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_RUNTIME_DIR", runtime)
        .env("MESHCTL_SSH_CONFIG", lab.ssh_config())
        .env("MESHCTL_INVENTORY", &lab.inventory)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start meshctl")
}

/// Waits for `child` (at most `secs`) and returns its output.
fn finish(child: Child, secs: u64) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for meshctl"),
        Err(_) => {
            kill(pid, "KILL");
            panic!("meshctl (pid {pid}) did not finish within {secs}s");
        }
    }
}

/// Sends `signal` (e.g. `KILL`) to process `pid`.
fn kill(pid: u32, signal: &str) {
    signal_target(&pid.to_string(), signal);
}

/// `kill -s SIGNAL -- TARGET`: always with `-s` and `--`, since procps' `kill -9 -PGID` reads
/// `-9` as the target (process group 9!) rather than as the signal.
fn signal_target(target: &str, signal: &str) {
    assert!(
        !matches!(target, "0" | "-0" | "1" | "-1"),
        "refusing to signal {target}"
    );
    let _ = Command::new("kill")
        .args(["-s", signal, "--", target])
        .status();
}

/// `(pid, parent pid, comm)` of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        all.push((pid, ppid, comm));
    }
    all
}

/// Every descendant of `root`: `(pid, comm)`.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let all = processes();
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for (pid, ppid, comm) in &all {
            if *ppid == p {
                found.push((*pid, comm.clone()));
                queue.push(*pid);
            }
        }
    }
    found
}

/// Kills `host`'s SSH connections: every sshd process under the host's listening sshd (the
/// connection dies; the remote script lives on, as after a real network failure). Returns the
/// remote processes that outlive it (the script and its children).
fn kill_connections(lab: &TestLab, host: &str) -> Vec<u32> {
    let sshd = lab.state().hosts[host]
        .sshd_pid
        .expect("the host runs sshd");
    let tree = descendants(sshd);
    let sshds: Vec<u32> = tree
        .iter()
        .filter(|(_, c)| c.starts_with("sshd"))
        .map(|(p, _)| *p)
        .collect();
    assert!(!sshds.is_empty(), "{host}: no SSH connection to kill");
    for p in &sshds {
        kill(*p, "KILL");
    }
    tree.iter()
        .filter(|(p, _)| !sshds.contains(p))
        .map(|(p, _)| *p)
        .collect()
}

/// A fault injected into one host: the first atomic file write (`dd of=….meshctl.w…` in
/// `write_file`) copies 40 bytes, reports the temp file's path, then waits for `release()`.
struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    fn install(lab: &TestLab, host: &str) -> Gate {
        let dir = tempfile::Builder::new()
            .prefix("rel-gate")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        std::fs::copy("/usr/bin/dd", dir.path().join("real-dd")).unwrap();
        let gate = format!(
            "#!/bin/sh\n\
             # test fault: stall the first write_file of an apply half way\n\
             out=\n\
             for a do case $a in of=*/.meshctl.*) out=${{a#of=}} ;; esac; done\n\
             if [ -n \"$out\" ] && [ ! -e {d}/mark ]; then\n\
               {d}/real-dd of=\"$out\" bs=1 count=40 conv=excl status=none\n\
               printf '%s\\n' \"$out\" > {d}/mark.new && mv {d}/mark.new {d}/mark\n\
               while [ ! -e {d}/release ]; do sleep 0.1; done\n\
               exec {d}/real-dd of=\"$out\" oflag=append conv=notrunc,fsync status=none\n\
             fi\n\
             exec {d}/real-dd \"$@\"\n"
        );
        let path = dir.path().join("gate");
        std::fs::write(&path, gate).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        ok(
            lab,
            host,
            &format!("mount --bind {} /usr/bin/dd", path.display()),
        );
        Gate { dir }
    }

    /// Waits until a write is stalled; returns the temp file's path on the host.
    fn wait_stalled(&self) -> String {
        let mark = self.dir.path().join("mark");
        wait_for(60, "the gated write", || mark.exists());
        std::fs::read_to_string(mark).unwrap().trim().to_owned()
    }

    fn release(&self) {
        std::fs::write(self.dir.path().join("release"), "").unwrap();
    }
}

/// `(path, content)` of every file meshctl manages on `host`, `None` when absent.
fn managed_files(lab: &TestLab, host: &str) -> Vec<(String, Option<String>)> {
    [
        "/etc/wireguard/wg0.conf",
        "/etc/sysctl.d/90-meshctl.conf",
        "/etc/meshctl/rules.v4",
        "/etc/meshctl/rules.v6",
        "/etc/meshctl/wg0-up.sh",
    ]
    .iter()
    .map(|p| {
        let out = lab.exec(host, &format!("test -f {p} && cat {p}"));
        (
            p.to_string(),
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned()),
        )
    })
    .collect()
}

/// The content a successful apply writes to each file of `host` (from `plan --json`).
fn desired_files(lab: &TestLab, host: &str) -> Vec<(String, String)> {
    let out = lab.meshctl(&["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --json: {e}\n{}", text(&out)));
    let hp = plan["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .expect("host in plan")
        .clone();
    hp["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["op"]["op"] == "write_file")
        .map(|c| {
            let mut content = c["op"]["content"].as_str().unwrap().to_owned();
            if !content.is_empty() && !content.ends_with('\n') {
                content.push('\n');
            }
            (c["op"]["path"].as_str().unwrap().to_owned(), content)
        })
        .collect()
}

/// Temp files of meshctl's atomic writes left in the managed directories of `host`.
fn temp_files(lab: &TestLab, host: &str) -> Vec<String> {
    let out = lab.exec(host, "ls -A /etc/wireguard /etc/meshctl /etc/sysctl.d");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(".meshctl"))
        .map(str::to_owned)
        .collect()
}

/// Every managed file is as before or exactly as desired, never anything else.
fn files_whole(
    before: &[(String, Option<String>)],
    desired: &[(String, String)],
    now: &[(String, Option<String>)],
) -> usize {
    let mut written = 0;
    for (path, content) in now {
        let old = &before.iter().find(|(p, _)| p == path).unwrap().1;
        let new = desired.iter().find(|(p, _)| p == path).map(|(_, c)| c);
        if content == old {
            continue;
        }
        assert!(
            content.as_ref() == new,
            "{path} is neither its old nor its desired content (a partial write?):\n--- now\n{content:?}\n--- old\n{old:?}\n--- desired\n{new:?}"
        );
        written += 1;
    }
    written
}

#[test]
fn connection_dies_mid_write_files_stay_whole_and_a_rerun_converges() {
    let (keep, inv) = own_inventory("rel-faults-conn");
    let lab = TestLab::up("faults_conn", &inv);
    apply_converges(&lab, &[]);
    // A new listen port: the hub rewrites wg0.conf and both rules files.
    change_inventory(&inv, "listen_port: 51820", "listen_port: 51821");
    let before = managed_files(&lab, "vps");
    let desired = desired_files(&lab, "vps");
    assert!(
        desired.len() >= 3,
        "the change rewrites several files: {desired:?}"
    );

    let gate = Gate::install(&lab, "vps");
    let run = spawn_meshctl(&lab, keep.path(), &["apply", "--yes"]);
    let pid = run.id();
    let temp = gate.wait_stalled();
    let partial = ok(&lab, "vps", &format!("wc -c < {temp}"));
    assert_eq!(partial.trim(), "40", "the write is stalled half way");

    // The connection dies; the remote script goes on, then the write is let through.
    let remote = kill_connections(&lab, "vps");
    let out = finish(run, 60);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an apply whose connection died fails:\n{t}"
    );
    assert!(
        t.contains("vps: failed"),
        "the summary names the host:\n{t}"
    );
    assert!(
        t.contains("laptop: converged") && t.contains("nas: converged"),
        "the other hosts apply:\n{t}"
    );
    gate.release();
    wait_for(30, "the orphaned remote script to end", || {
        remote.iter().all(|p| !process_alive(*p))
    });

    let now = managed_files(&lab, "vps");
    files_whole(&before, &desired, &now);
    assert_eq!(
        temp_files(&lab, "vps"),
        Vec::<String>::new(),
        "temp files left behind"
    );
    assert!(
        !desired
            .iter()
            .all(|(p, c)| now.iter().any(|(q, n)| q == p && n.as_ref() == Some(c))),
        "the dead run did not finish the host"
    );

    // The dead run's lock is still held: a re-run is refused and names it.
    let holder = ok(&lab, "vps", "cat /run/meshctl/lock");
    assert!(
        holder.starts_with(&format!("meshctl pid {pid} on ")),
        "{holder}"
    );
    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "vps: failed: locked by another apply: meshctl pid {pid} on "
        )) && t.contains(" since "),
        "{t}"
    );
    assert!(
        t.contains("--break-lock"),
        "the message says how to go on:\n{t}"
    );

    apply_converges(&lab, &["--break-lock"]);
    plan_is_empty(&lab);
    assert!(
        !lab.exec("vps", "test -e /run/meshctl/lock")
            .status
            .success(),
        "the lock is released"
    );
}

#[test]
fn a_killed_remote_script_leaves_the_old_file_and_a_rerun_cleans_up() {
    let (keep, inv) = own_inventory("rel-faults-kill");
    let lab = TestLab::up("faults_kill", &inv);
    apply_converges(&lab, &[]);
    change_inventory(&inv, "listen_port: 51820", "listen_port: 51821");
    let before = managed_files(&lab, "vps");
    let desired = desired_files(&lab, "vps");

    let gate = Gate::install(&lab, "vps");
    let run = spawn_meshctl(&lab, keep.path(), &["apply", "--yes"]);
    let temp = gate.wait_stalled();
    // The session dies with everything it runs (a crash, an OOM kill): the temp file is
    // half written and never renamed.
    let remote = kill_connections(&lab, "vps");
    for p in &remote {
        kill(*p, "KILL");
    }
    let out = finish(run, 60);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    wait_for(30, "the remote script to die", || {
        remote.iter().all(|p| !process_alive(*p))
    });
    gate.release();

    let now = managed_files(&lab, "vps");
    assert_eq!(
        files_whole(&before, &desired, &now),
        0,
        "no file was replaced"
    );
    assert_eq!(now, before, "every file is exactly as before");
    let left = temp_files(&lab, "vps");
    assert_eq!(left.len(), 1, "the interrupted write's temp file: {left:?}");
    assert!(temp.ends_with(&left[0]), "{temp} vs {left:?}");
    // A temp file has its file's final mode from its creation (and never more): in
    // /etc/wireguard that is the config's 0600, beside the rules files 0644.
    let mode = ok(&lab, "vps", &format!("stat -c %a {temp}"));
    if temp.starts_with("/etc/wireguard/") {
        assert_eq!(mode.trim(), "600", "{temp}");
    } else {
        assert!(["600", "644"].contains(&mode.trim()), "{temp}: {mode}");
    }

    ok(&lab, "vps", "umount /usr/bin/dd");
    apply_converges(&lab, &["--break-lock"]);
    plan_is_empty(&lab);
    assert_eq!(
        temp_files(&lab, "vps"),
        Vec::<String>::new(),
        "the re-run removes the dead run's temp file"
    );
}

#[test]
fn an_unreachable_host_fails_alone() {
    let (_keep, inv) = own_inventory("rel-faults-unreach");
    let lab = TestLab::up("faults_unreach", &inv);
    let pid = lab.state().hosts["nas"].sshd_pid.expect("nas runs sshd");
    kill(pid, "TERM");
    wait_for(10, "nas's sshd to stop", || !process_alive(pid));

    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreachable host is an error:\n{t}"
    );
    assert!(
        t.contains("nas: failed: cannot connect to nas"),
        "the summary names the host and why:\n{t}"
    );
    assert!(
        t.contains("vps: converged") && t.contains("laptop: converged"),
        "{t}"
    );
    assert!(t.contains("2 host(s) converged, 1 failed."), "{t}");
    assert!(
        lab.exec("laptop", "ip link show wg0").status.success(),
        "the laptop was set up"
    );
    assert!(
        !lab.exec("vps", "test -e /run/meshctl/lock")
            .status
            .success(),
        "no lock left on vps"
    );
}

#[test]
fn a_changed_host_key_is_refused_and_the_others_apply() {
    let (dir, inv) = own_inventory("rel-faults-hostkey");
    let lab = TestLab::up("faults_hostkey", &inv);
    // Another key for laptop in known_hosts: what a man in the middle would present.
    let other = dir.path().join("other_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .expect("ssh-keygen");
    assert_success(&keygen, "ssh-keygen");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_pub: Vec<&str> = other_pub.split_whitespace().collect();
    let known = lab.dir.join("known_hosts");
    let lines = std::fs::read_to_string(&known).unwrap();
    let replaced: String = lines
        .lines()
        .map(|l| {
            if l.starts_with("laptop ") {
                format!("laptop {} {}\n", other_pub[0], other_pub[1])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(replaced, lines, "known_hosts has a laptop line");
    std::fs::write(&known, &replaced).unwrap();
    let laptop_before = lab.sshd_counts("laptop");

    for extra in [&[][..], &["--accept-new-host-keys"][..]] {
        let mut args = vec!["apply", "--yes"];
        args.extend_from_slice(extra);
        let out = lab.meshctl(&args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}:\n{t}");
        assert!(
            t.contains("laptop: failed: the host key of laptop changed"),
            "{extra:?}: the summary names the host:\n{t}"
        );
        assert!(
            t.contains("vps: converged") && t.contains("nas: converged"),
            "{extra:?}: the others apply:\n{t}"
        );
        assert!(t.contains("2 host(s) converged, 1 failed."), "{t}");
        assert_eq!(
            std::fs::read_to_string(&known).unwrap(),
            replaced,
            "{extra:?}: known_hosts was changed: a changed key was accepted"
        );
        assert_eq!(
            lab.sshd_counts("laptop").0,
            laptop_before.0,
            "{extra:?}: meshctl logged in to a host whose key changed"
        );
        assert!(
            !lab.exec("laptop", "ip link show wg0").status.success(),
            "{extra:?}: laptop was changed"
        );
    }
}

#[test]
fn a_failing_step_reports_what_was_applied_before_it_and_a_rerun_converges() {
    let (dir, inv) = own_inventory("rel-faults-step");
    let lab = TestLab::up("faults_step", &inv);
    // `ip -4 route replace` fails on vps, except inside wg-quick's PostUp script.
    std::fs::copy("/usr/bin/ip", dir.path().join("real-ip")).unwrap();
    let d = dir.path().display();
    let wrapper = format!(
        "#!/bin/sh\n\
         case \"$(tr '\\0' ' ' < /proc/$PPID/cmdline)\" in *-up.sh*) exec {d}/real-ip \"$@\" ;; esac\n\
         if [ \"$1 $2 $3\" = '-4 route replace' ]; then echo 'RTNETLINK answers: test fault' >&2; exit 2; fi\n\
         exec {d}/real-ip \"$@\"\n"
    );
    let path = dir.path().join("ip");
    std::fs::write(&path, wrapper).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok(
        &lab,
        "vps",
        &format!("mount --bind {} /usr/bin/ip", path.display()),
    );

    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with("vps: failed"))
        .unwrap_or_else(|| panic!("no failure line for vps:\n{t}"));
    assert!(
        line.contains(
            "step `+ route 192.168.178.0/24 dev wg0` failed (RTNETLINK answers: test fault)"
        ),
        "{line}"
    );
    let (_, done) = line
        .split_once("applied before it: ")
        .unwrap_or_else(|| panic!("{line}"));
    for step in [
        "+ file /etc/wireguard/wg0.conf",
        "+ interface wg0",
        "~ sysctl net.ipv4.ip_forward",
        "+ peer ",
    ] {
        assert!(
            done.contains(step),
            "`{step}` was applied before the route:\n{line}"
        );
    }
    // The firewall goes in before anything that opens a path (it fails closed), so the
    // chains are among what was applied before the route; the NDP answers come after it.
    assert!(
        done.contains("chain") && !done.contains("ndp proxy"),
        "the chains come before the route, the NDP entries after it:\n{line}"
    );
    assert!(
        t.contains("nas: converged") && t.contains("laptop: converged"),
        "{t}"
    );
    // What the report says is what the host has: the steps before are there, the later not.
    // (Later steps cannot be told apart here: wg-quick's PostUp restores the same state.)
    assert!(
        lab.exec("vps", "ip link show wg0").status.success(),
        "the interface exists"
    );
    assert_eq!(
        ok(&lab, "vps", "wg show wg0 peers").lines().count(),
        2,
        "the peers were set"
    );
    assert_eq!(
        ok(&lab, "vps", "sysctl -n net.ipv4.ip_forward").trim(),
        "1",
        "the sysctl was set"
    );
    assert!(
        !lab.exec("vps", "test -e /run/meshctl/lock")
            .status
            .success(),
        "the lock is released after a failed step"
    );

    ok(&lab, "vps", "umount /usr/bin/ip");
    apply_converges(&lab, &[]);
    plan_is_empty(&lab);
}

#[test]
fn a_full_disk_keeps_the_old_file_whole() {
    let (_keep, inv) = own_inventory("rel-faults-disk");
    let lab = TestLab::up("faults_disk", &inv);
    apply_converges(&lab, &[]);
    // /etc/meshctl becomes a small filesystem holding the same files, then fills up.
    ok(
        &lab,
        "vps",
        "mkdir -p /root/save && cp -a /etc/meshctl/. /root/save/ && mount -t tmpfs -o size=64k tmpfs /etc/meshctl && cp -a /root/save/. /etc/meshctl/",
    );
    let _ = lab.exec(
        "vps",
        "dd if=/dev/zero of=/etc/meshctl/filler bs=1k 2>/dev/null",
    );
    assert!(
        !lab.exec("vps", "echo x > /etc/meshctl/probe")
            .status
            .success(),
        "the disk is full"
    );
    ok(&lab, "vps", "rm -f /etc/meshctl/probe");
    change_inventory(&inv, "listen_port: 51820", "listen_port: 51821");
    let before = managed_files(&lab, "vps");

    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with("vps: failed"))
        .unwrap_or_else(|| panic!("no failure line for vps:\n{t}"));
    assert!(
        line.contains("file /etc/meshctl/rules.v4` failed")
            && line.contains("No space left on device"),
        "{line}"
    );
    let now = managed_files(&lab, "vps");
    for ((p, old), (_, new)) in before.iter().zip(&now) {
        if p.starts_with("/etc/meshctl/") {
            assert_eq!(new, old, "{p} must stay intact");
        }
    }
    assert_eq!(
        temp_files(&lab, "vps"),
        Vec::<String>::new(),
        "no temp file is left on the full disk"
    );

    ok(&lab, "vps", "rm -f /etc/meshctl/filler");
    apply_converges(&lab, &[]);
    plan_is_empty(&lab);
}

#[test]
fn a_second_apply_is_refused_and_names_the_holder() {
    let (keep, inv) = own_inventory("rel-faults-twice");
    let lab = TestLab::up("faults_twice", &inv);
    let gate = Gate::install(&lab, "nas");
    let first = spawn_meshctl(&lab, keep.path(), &["apply", "--yes"]);
    let pid = first.id();
    gate.wait_stalled();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();

    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let want = format!(
        "nas: failed: locked by another apply: meshctl pid {pid} on {hostname} since unix time "
    );
    assert!(
        t.contains(&want),
        "the second apply names the holder ({want}):\n{t}"
    );

    // The first run's connection is dropped and the run killed (with its ssh clients): its lock
    // stays. The connection goes first: once its ssh client is gone, sshd may close it itself.
    let remote = kill_connections(&lab, "nas");
    kill(pid, "KILL");
    signal_target(&format!("-{pid}"), "KILL");
    let _ = finish(first, 30);
    gate.release();
    wait_for(30, "the orphaned remote script to end", || {
        remote.iter().all(|p| !process_alive(*p))
    });
    assert!(
        ok(&lab, "nas", "cat /run/meshctl/lock").starts_with(&format!("meshctl pid {pid} on "))
    );

    let out = lab.meshctl(&["apply", "--yes"]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a dead run's lock is not broken silently:\n{t}"
    );
    assert!(
        t.contains(&format!("locked by another apply: meshctl pid {pid} on ")),
        "{t}"
    );
    assert!(t.contains("run again with --break-lock"), "{t}");

    ok(&lab, "nas", "umount /usr/bin/dd");
    apply_converges(&lab, &["--break-lock"]);
    plan_is_empty(&lab);
}
