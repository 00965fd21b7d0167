//! Lab machines: inventory hosts booted as Debian with systemd as PID 1 (systemd-nspawn) inside
//! their lab network namespace, instead of a namespace with an sshd of the controller's.
//!
//! Each machine runs on an overlay of the cached root file system (`rootfs`): only what it
//! changes is written, under `<dir>/machines/<host>/upper`. A supervisor (a small shell loop,
//! its own process group) runs systemd-nspawn and starts it again while it exits with 133, the
//! status a reboot from inside gives, so `systemctl reboot` really restarts the machine with only
//! what it enabled. `lab down` finds machines by the lab's state and by the process table (a
//! supervisor running this lab's script, an nspawn in a namespace of this lab's prefix), so a
//! crashed `lab up` or test leaves nothing running.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::config::Layout;
use super::rootfs::LOGIN_USER;
use super::{cache, sys};

/// How long a machine may take from start to `running` and an answering sshd (a loaded CI
/// machine boots several at once).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a machine may take to power off after its supervisor was told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The programs a lab with machines needs beyond a namespace lab's.
pub const NEEDED: &[sys::Needed] = &[
    sys::Needed {
        program: "systemd-nspawn",
        package: "systemd-container",
    },
    sys::Needed {
        program: "debootstrap",
        package: "debootstrap",
    },
    sys::Needed {
        program: "dpkg-scanpackages",
        package: "dpkg-dev",
    },
    sys::Needed {
        program: "python3",
        package: "python3",
    },
];

/// The overlay's merged tree of machine `host`: what the machine sees as `/`.
pub fn root(layout: &Layout, host: &str) -> PathBuf {
    layout.machine_dir(host).join("root")
}

fn supervisor_script_path(layout: &Layout, host: &str) -> PathBuf {
    layout.machine_dir(host).join("supervise")
}

/// The supervisor of machine `host` in namespace `ns`: boots it, forwards a TERM (an orderly
/// power-off: nspawn tells systemd), and boots it again after a reboot from inside (exit 133).
pub fn supervisor_script(layout: &Layout, host: &str, ns: &str) -> String {
    let mut s = format!(
        "# meshctl lab: the supervisor of machine {host} (generated)\n\
         trap 'kill -TERM \"$child\" 2>/dev/null; wait \"$child\"; exit 0' TERM INT\n\
         boot=0\n\
         while :; do\n  \
           boot=$((boot + 1))\n  \
           echo \"meshctl lab: boot $boot of {host}\"\n  "
    );
    // nspawn mounts /proc/sys read-only, also with a network namespace of its own; a rented
    // VPS lets root set its network sysctls (forwarding, proxy_ndp), so /proc/sys/net is
    // writable here too (only that: the machine shares the controller's kernel).
    let _ = write!(
        s,
        "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network systemd-nspawn --quiet --directory={root} --boot --register=no --keep-unit \
         --machine={ns} --hostname={host} --network-namespace-path=/run/netns/{ns} \
         --bind=/dev/net/tun --capability=CAP_NET_ADMIN --console=pipe \
         --resolv-conf=off --timezone=off --link-journal=no </dev/null &\n  ",
        root = root(layout, host).display(),
    );
    let _ = write!(
        s,
        "child=$!\n  \
         echo \"$child\" > {pidfile}\n  \
         wait \"$child\"\n  \
         rc=$?\n  \
         echo \"meshctl lab: boot $boot of {host} ended with exit status $rc\"\n  \
         [ \"$rc\" -eq 133 ] || exit \"$rc\"\n\
         done\n",
        pidfile = layout.nspawn_pidfile(host).display(),
    );
    s
}

/// `/etc/hosts` of machine `host` (sudo looks its own name up).
pub fn etc_hosts(host: &str) -> String {
    format!("127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

fn write(root: &Path, path: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let p = root.join(path.trim_start_matches('/'));
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A new machine id: 32 hex digits, from the kernel's random UUID.
fn machine_id() -> anyhow::Result<String> {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?;
    Ok(uuid.trim().replace('-', ""))
}

/// Makes machine `host`'s copy of `rootfs` (an overlay) and writes what is its own: host name,
/// machine id, sshd host key (the lab's, so known_hosts checks it), the lab's key for the login
/// user, and the apt source `sources`.
pub fn prepare(layout: &Layout, host: &str, rootfs: &Path, sources: &str) -> anyhow::Result<()> {
    let dir = layout.machine_dir(host);
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), root(layout, host));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.display(),
        upper.display(),
        work.display()
    );
    let merged_s = merged.to_str().context("lab path is not UTF-8")?;
    sys::run(&["mount", "-t", "overlay", "overlay", "-o", &opts, merged_s])?;

    write(&merged, "/etc/hostname", &format!("{host}\n"), 0o644)?;
    write(&merged, "/etc/hosts", &etc_hosts(host), 0o644)?;
    write(
        &merged,
        "/etc/machine-id",
        &format!("{}\n", machine_id()?),
        0o444,
    )?;
    write(&merged, "/etc/apt/sources.list", sources, 0o644)?;
    let key = layout.host_key(host);
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    write(
        &merged,
        "/etc/ssh/ssh_host_ed25519_key",
        &read(&key)?,
        0o600,
    )?;
    write(
        &merged,
        "/etc/ssh/ssh_host_ed25519_key.pub",
        &read(&key.with_extension("pub"))?,
        0o644,
    )?;
    let ssh_dir = format!("/home/{LOGIN_USER}/.ssh");
    write(
        &merged,
        &format!("{ssh_dir}/authorized_keys"),
        &read(&layout.client_pubkey())?,
        0o600,
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        merged.join(ssh_dir.trim_start_matches('/')),
        std::fs::Permissions::from_mode(0o700),
    )?;
    // The login user's uid is the tree's, not the controller's: let the tree's chown map it.
    sys::run(&[
        "chroot",
        merged_s,
        "chown",
        "-R",
        &format!("{LOGIN_USER}:{LOGIN_USER}"),
        &ssh_dir,
    ])?;
    Ok(())
}

/// Starts machine `host`'s supervisor (which boots it in namespace `ns`); returns its pid.
pub fn start(layout: &Layout, host: &str, ns: &str) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let script = supervisor_script_path(layout, host);
    std::fs::write(&script, supervisor_script(layout, host, ns))
        .with_context(|| format!("cannot write {}", script.display()))?;
    let _ = std::fs::remove_file(layout.nspawn_pidfile(host));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.console_log(host))
        .with_context(|| format!("cannot open {}", layout.console_log(host).display()))?;
    let child = Command::new("sh")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C at the terminal or a test's end is not meant for it.
        .process_group(0)
        .spawn()
        .context("cannot start a lab machine's supervisor (sh)")?;
    Ok(child.id())
}

/// The pid of the systemd-nspawn of machine `host`'s current boot.
pub fn nspawn_pid(layout: &Layout, host: &str) -> Option<u32> {
    std::fs::read_to_string(layout.nspawn_pidfile(host))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|p| sys::alive(*p))
}

/// The pid (seen from the controller) of machine `host`'s PID 1, its systemd: nspawn's child.
pub fn leader(layout: &Layout, host: &str) -> Option<u32> {
    let n = nspawn_pid(layout, host)?;
    std::fs::read_to_string(format!("/proc/{n}/task/{n}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `nsenter` into every namespace of machine `host` (its mounts, pids, network, host name).
pub fn nsenter_argv(leader: u32) -> Vec<String> {
    ["nsenter", "-t", &leader.to_string(), "-a", "--"]
        .map(str::to_owned)
        .to_vec()
}

/// What `systemctl is-system-running` says inside machine `host` right now.
pub fn system_state(layout: &Layout, host: &str) -> Option<String> {
    let leader = leader(layout, host)?;
    let mut argv = nsenter_argv(leader);
    argv.extend(["systemctl".into(), "is-system-running".into()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = sys::output(&argv, None).ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until machine `host` has booted (`running`, or `degraded`: a unit failed, which is the
/// machine's business) and its sshd answers through the lab's ssh_config; returns how long it
/// took since `started` (its supervisor's start). Fails with the end of its console when it does
/// not within [`BOOT_TIMEOUT`].
pub fn wait_booted(
    layout: &Layout,
    host: &str,
    supervisor: u32,
    started: Instant,
) -> anyhow::Result<Duration> {
    let deadline = started + BOOT_TIMEOUT;
    let console = || {
        let text = std::fs::read_to_string(layout.console_log(host)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    let mut state = None;
    loop {
        if !sys::alive(supervisor) {
            bail!(
                "lab machine {host} stopped while booting; its console ({}):\n{}",
                layout.console_log(host).display(),
                console()
            );
        }
        state = system_state(layout, host).or(state);
        if matches!(state.as_deref(), Some("running" | "degraded")) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "lab machine {host} did not finish booting within {}s (systemctl is-system-running: {}); its console ({}):\n{}",
                BOOT_TIMEOUT.as_secs(),
                state.as_deref().unwrap_or("no answer"),
                layout.console_log(host).display(),
                console()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let config = layout.ssh_config();
    let config = config.to_string_lossy();
    loop {
        let ok = sys::status_with_timeout(
            &["ssh", "-F", &config, "-o", "ConnectTimeout=5", host, "true"],
            Duration::from_secs(10),
        )?;
        if ok == Some(true) {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            // One more try, bounded, for ssh's own words: why it does not get in.
            let why = sys::output(
                &[
                    "timeout",
                    "10",
                    "ssh",
                    "-F",
                    &config,
                    "-o",
                    "ConnectTimeout=5",
                    "-o",
                    "BatchMode=yes",
                    host,
                    "true",
                ],
                None,
            )
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .unwrap_or_else(|e| e.to_string());
            bail!(
                "lab machine {host} booted but its sshd does not let {LOGIN_USER} in within {}s (ssh: {why}); its console ({}):\n{}",
                BOOT_TIMEOUT.as_secs(),
                layout.console_log(host).display(),
                console()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A process's command line, split at its NULs.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The supervisors and nspawns of the lab in `dir` (canonical) with namespace `prefix` that
/// run now, found in the process table whatever the lab's state says.
pub fn running(dir: &Path, prefix: &str) -> (Vec<u32>, Vec<u32>) {
    let machines = format!("{}/", dir.join("machines").display());
    let netns = format!("--network-namespace-path=/run/netns/{prefix}-");
    let (mut supervisors, mut nspawns) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (supervisors, nspawns);
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let args = cmdline(pid);
        let Some(prog) = args.first() else { continue };
        if prog == "sh" && args.get(1).is_some_and(|a| a.starts_with(&machines)) {
            supervisors.push(pid);
        } else if prog.ends_with("systemd-nspawn")
            && args
                .iter()
                .any(|a| a.starts_with(&netns) || a.starts_with(&format!("--directory={machines}")))
        {
            nspawns.push(pid);
        }
    }
    (supervisors, nspawns)
}

/// Stops every machine of the lab in `dir`: the supervisors are told to stop (an orderly
/// power-off), what is left after [`STOP_TIMEOUT`] is killed; then the overlays are unmounted
/// and the copies removed. `recorded` are supervisor pids from the lab's state. Returns the
/// number of processes stopped.
pub fn stop_all(dir: &Path, prefix: &str, recorded: &[u32]) -> anyhow::Result<usize> {
    let (mut supervisors, nspawns) = running(dir, prefix);
    for p in recorded {
        // A recorded pid counts only while it still runs this lab's script (pids are reused).
        if !supervisors.contains(p) && running_script_of(*p, dir) {
            supervisors.push(*p);
        }
    }
    let all: Vec<u32> = supervisors.iter().chain(&nspawns).copied().collect();
    if !all.is_empty() {
        super::down::kill("TERM", &supervisors);
        if supervisors.is_empty() {
            super::down::kill("TERM", &nspawns);
        }
        let left = super::down::wait_gone(&all, STOP_TIMEOUT);
        super::down::kill("KILL", &left);
        let left = super::down::wait_gone(&left, Duration::from_secs(5));
        if !left.is_empty() {
            bail!("lab machines' processes {left:?} did not stop");
        }
    }
    cache::remove_tree(&dir.join("machines"))?;
    Ok(all.len())
}

fn running_script_of(pid: u32, dir: &Path) -> bool {
    let machines = format!("{}/", dir.join("machines").display());
    cmdline(pid)
        .get(1)
        .is_some_and(|a| a.starts_with(&machines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisor_boots_again_only_after_a_reboot() {
        let s = supervisor_script(&Layout::new("/work/lab"), "vps", "m12345-vps");
        assert!(s.contains(
            "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network systemd-nspawn --quiet --directory=/work/lab/machines/vps/root --boot --register=no \
             --keep-unit --machine=m12345-vps --hostname=vps \
             --network-namespace-path=/run/netns/m12345-vps --bind=/dev/net/tun \
             --capability=CAP_NET_ADMIN --console=pipe"
        ));
        assert!(s.contains("echo \"$child\" > /work/lab/run/vps.nspawn.pid\n"));
        assert!(s.contains("[ \"$rc\" -eq 133 ] || exit \"$rc\"\n"));
        assert!(
            s.contains("trap 'kill -TERM \"$child\" 2>/dev/null; wait \"$child\"; exit 0' TERM")
        );
    }

    #[test]
    fn etc_hosts_names_the_machine() {
        assert!(etc_hosts("nas").contains("127.0.1.1\tnas\n"));
    }
}
