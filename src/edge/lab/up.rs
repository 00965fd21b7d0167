//! `meshctl lab up`: build the planned topology on the machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::config::{self, Layout, SshHost};
use super::rootfs::LOGIN_USER;
use super::state::{
    HostKind, LabHost, LabState, MachineState, MirrorState, STATE_FILE, STATE_VERSION,
};
use super::sys::{self, NEEDED_FOR_UP};
use super::topology::{self, NetHost, Topology};
use super::{machine, mirror, rootfs};
use crate::inventory::Inventory;
use crate::names::HostName;

/// How many hosts are worked on at once (mostly waiting on `ip` and `sshd`, not on the CPU).
const WORKERS: usize = 8;

/// Builds the lab of `inventory` in `dir`, with the hosts of `lab.machines` and `machines` as
/// booted machines; a lab already up there is torn down and rebuilt.
pub fn up(inventory: &Path, dir: &Path, machines: &[String]) -> anyhow::Result<u8> {
    let started = Instant::now();
    sys::require_root()?;
    sys::require_tun()?;
    sys::require_programs(NEEDED_FOR_UP)?;
    let mut inv = crate::files::load_inventory(inventory)?;
    add_machines(&mut inv, machines)?;
    check_machine_logins(&inv)?;
    // Built (once, cached) before anything of the lab exists: the first time takes minutes.
    let machine_files = if inv.lab.machines.is_empty() {
        None
    } else {
        sys::require_programs(machine::NEEDED)?;
        let root = rootfs::ensure()?;
        let repo = mirror::ensure(&root)?;
        Some((root, repo))
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create lab directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve lab directory {}", dir.display()))?;
    check_path(&dir)?;
    let prefix = super::prefix_for(&dir);
    let topo = topology::plan(&inv, &prefix)
        .with_context(|| format!("cannot build a lab from {}", inventory.display()))?;

    let running = super::down::lab_namespaces(&dir)?;
    if !running.is_empty() {
        eprintln!(
            "meshctl lab: a lab is already up in {} ({} namespaces): tearing it down and rebuilding",
            dir.display(),
            running.len()
        );
    }
    if !running.is_empty() || dir.join(STATE_FILE).exists() {
        super::down::teardown(&dir, true)?;
    }

    let layout = Layout::new(&dir);
    let mirror = match (
        &machine_files,
        topo.hosts.iter().find(|h| h.kind == HostKind::Inet),
    ) {
        (Some((_, repo)), Some(inet)) => {
            let addr = inet.addresses[0].split('/').next().unwrap_or_default();
            Some(MirrorState {
                url: format!("http://{addr}"),
                dir: repo.clone(),
                pid: None,
            })
        }
        _ => None,
    };
    let mut state = LabState {
        version: STATE_VERSION,
        prefix: prefix.clone(),
        dir: dir.clone(),
        inventory: inventory
            .canonicalize()
            .unwrap_or_else(|_| inventory.to_path_buf()),
        complete: false,
        hosts: topo
            .hosts
            .iter()
            .map(|h| {
                let host = LabHost {
                    kind: h.kind,
                    namespace: h.namespace.clone(),
                    addresses: h.addresses.clone(),
                    ssh: h.sshd,
                    sshd_pid: None,
                    machine: h.machine.then(|| MachineState {
                        root: machine::root(&layout, &h.name),
                        supervisor_pid: None,
                        nspawn_pid: None,
                        boot_ms: None,
                    }),
                };
                (h.name.clone(), host)
            })
            .collect(),
        mirror,
    };
    // Recorded before anything exists, so that `lab down` after a crash knows what to remove.
    clean_files(&layout)?;
    state.save(&dir)?;

    let rootfs_dir = machine_files.as_ref().map(|(r, _)| r.as_path());
    match build(&topo, &layout, &mut state, rootfs_dir) {
        Ok(()) => {}
        Err(e) => {
            let _ = super::down::teardown(&dir, true);
            return Err(e.context(format!(
                "lab up failed in {}; removed the partial lab",
                dir.display()
            )));
        }
    }
    state.complete = true;
    state.save(&dir)?;

    let managed: Vec<&str> = topo
        .hosts
        .iter()
        .filter(|h| h.sshd)
        .map(|h| h.name.as_str())
        .collect();
    let sshd_on = match managed.len() {
        0 => "none".to_owned(),
        n if n <= 8 => managed.join(", "),
        n => format!("{n} hosts"),
    };
    println!(
        "lab {prefix} is up in {} ({} hosts, sshd on {sshd_on}) in {:.1}s",
        dir.display(),
        topo.hosts.len(),
        started.elapsed().as_secs_f64()
    );
    for (name, h) in &state.hosts {
        if let Some(m) = &h.machine {
            println!(
                "  machine {name}: Debian {} with systemd, booted in {:.1}s, login {LOGIN_USER} (sudo)",
                rootfs::SUITE,
                m.boot_ms.unwrap_or(0) as f64 / 1000.0
            );
        }
    }
    if let Some(m) = &state.mirror {
        println!("  package mirror: {} (from {})", m.url, m.dir.display());
    }
    if let Some(first) = managed.first() {
        println!("  ssh -F {} {first} true", layout.ssh_config().display());
    }
    Ok(0)
}

/// Adds the hosts named by `lab up --machine` to the inventory's `lab.machines`.
fn add_machines(inv: &mut Inventory, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        let host = HostName::parse(name)
            .ok()
            .and_then(|n| inv.hosts.get(&n))
            .with_context(|| {
                format!(
                    "--machine {name}: no such host in {} (hosts: {})",
                    inv.path.display(),
                    inv.hosts
                        .keys()
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if !host.is_managed() {
            bail!(
                "--machine {name}: the host has no `ssh:` target in {}; a lab machine is managed over SSH",
                inv.path.display()
            );
        }
        let n = host.name.clone();
        inv.lab.machines.insert(n);
    }
    Ok(())
}

/// A machine lets only its login user in: an inventory that logs in as someone else would fail
/// at every command, so say it now.
fn check_machine_logins(inv: &Inventory) -> anyhow::Result<()> {
    for name in &inv.lab.machines {
        let Some(target) = inv.hosts.get(name).and_then(|h| h.ssh.as_ref()) else {
            continue;
        };
        if let Some(user) = target.user.as_deref()
            && user != LOGIN_USER
        {
            bail!(
                "host {name} is a lab machine, which lets only {LOGIN_USER} log in (root cannot, as on a \
                 cloud image), but its ssh target in {} is {target}: use `ssh: {LOGIN_USER}@{}`",
                inv.path.display(),
                target.host
            );
        }
    }
    Ok(())
}

/// The lab directory ends up in configs and shell lines unquoted: allow plain path characters.
fn check_path(dir: &Path) -> anyhow::Result<()> {
    let s = dir.to_str().unwrap_or("\u{0}");
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@,:".contains(&b))
    {
        bail!(
            "lab directory {} has characters the lab cannot use in sshd and ssh configs; \
             pick a path of letters, digits and /._-+@,:",
            dir.display()
        );
    }
    Ok(())
}

/// Removes the files of a previous lab in the directory (keys are made anew each time).
fn clean_files(layout: &Layout) -> anyhow::Result<()> {
    for sub in ["keys", "sshd", "run", "logs"] {
        let p = layout.dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("cannot remove {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    for f in [
        layout.client_key(),
        layout.client_pubkey(),
        layout.known_hosts(),
        layout.ssh_config(),
    ] {
        if f.exists() {
            std::fs::remove_file(&f).with_context(|| format!("cannot remove {}", f.display()))?;
        }
    }
    Ok(())
}

fn keygen(path: &Path, comment: &str) -> anyhow::Result<()> {
    let p = path.to_str().context("key path is not UTF-8")?;
    sys::run(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        comment,
        "-f",
        p,
    ])?;
    Ok(())
}

fn first_error(results: Vec<anyhow::Result<()>>) -> anyhow::Result<()> {
    results
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()
        .map(|_| ())
}

fn build(
    topo: &Topology,
    layout: &Layout,
    state: &mut LabState,
    rootfs_dir: Option<&Path>,
) -> anyhow::Result<()> {
    let sshd = sys::which("sshd").context("sshd not found")?;
    std::fs::create_dir_all("/run/sshd")
        .context("cannot create /run/sshd (sshd's privilege separation directory)")?;

    // Keys: the client's, and one host key per sshd.
    let managed: Vec<&NetHost> = topo.hosts.iter().filter(|h| h.sshd).collect();
    let mut keys: Vec<(std::path::PathBuf, String)> =
        vec![(layout.client_key(), format!("meshctl-lab-{}", topo.prefix))];
    keys.extend(managed.iter().map(|h| {
        (
            layout.host_key(&h.name),
            format!("{}@{}", h.name, topo.prefix),
        )
    }));
    first_error(sys::parallel(&keys, WORKERS, |(path, comment)| {
        keygen(path, comment)
    }))?;
    for h in managed.iter().filter(|h| !h.machine) {
        let path = layout.sshd_config(&h.name);
        std::fs::write(&path, config::sshd_config(layout, &h.name))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    // Stage 1: every namespace, with its bridges (the internet's br0, the routers' br-lan).
    first_error(sys::parallel(&topo.hosts, WORKERS, |h| {
        sys::run(&["ip", "netns", "add", &h.namespace])?;
        let mut script = vec![
            "set -e".to_owned(),
            "ip link set lo up".to_owned(),
            // Addresses are usable at once (no duplicate address detection between namespaces
            // that cannot collide).
            "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
                .to_owned(),
        ];
        script.extend(h.init.iter().cloned());
        run_in(&h.namespace, &script).with_context(|| format!("lab host {}", h.name))
    }))?;

    // Stage 2: links, addresses, routes; then each managed host's sshd, or its machine.
    let sources = state
        .mirror
        .as_ref()
        .map(|m| mirror::sources_list(&m.url))
        .unwrap_or_default();
    let pids = sys::parallel(&topo.hosts, WORKERS, |h| -> anyhow::Result<Started> {
        (|| {
            if let Some(u) = &h.uplink {
                sys::run(&[
                    "ip",
                    "link",
                    "add",
                    &u.interface,
                    "netns",
                    &h.namespace,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &u.peer,
                    "netns",
                    &u.peer_namespace,
                ])?;
                sys::run(&[
                    "ip",
                    "-n",
                    &u.peer_namespace,
                    "link",
                    "set",
                    &u.peer,
                    "master",
                    &u.bridge,
                    "up",
                ])?;
                let mut script = vec!["set -e".to_owned()];
                script.extend(h.setup.iter().cloned());
                run_in(&h.namespace, &script)?;
            }
            if h.machine {
                let rootfs = rootfs_dir.context("a machine without a root file system")?;
                machine::prepare(layout, &h.name, rootfs, &sources)?;
                let since = Instant::now();
                let supervisor = machine::start(layout, &h.name, &h.namespace)?;
                Ok(Started::Machine(supervisor, since))
            } else if h.sshd {
                start_sshd(layout, h, &sshd).map(Started::Sshd)
            } else {
                Ok(Started::Nothing)
            }
        })()
        .with_context(|| format!("lab host {}", h.name))
    });
    let mut first_error = None;
    let mut boot_started = std::collections::BTreeMap::new();
    for (h, pid) in topo.hosts.iter().zip(pids) {
        let Some(entry) = state.hosts.get_mut(&h.name) else {
            continue;
        };
        match pid {
            Ok(Started::Sshd(pid)) => entry.sshd_pid = Some(pid),
            Ok(Started::Machine(pid, since)) => {
                if let Some(m) = entry.machine.as_mut() {
                    m.supervisor_pid = Some(pid);
                }
                boot_started.insert(h.name.clone(), since);
            }
            Ok(Started::Nothing) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Saved before waiting for anything: `lab down` finds every supervisor started so far.
    state.save(&layout.dir)?;
    if let Some(e) = first_error {
        return Err(e);
    }

    // The client side: known_hosts with every host key, ssh_config with every managed host.
    let mut pubkeys = Vec::new();
    for h in &managed {
        let path = layout.host_key(&h.name).with_extension("pub");
        let key = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        pubkeys.push((h.name.clone(), key));
    }
    std::fs::write(layout.known_hosts(), config::known_hosts(&pubkeys))
        .with_context(|| format!("cannot write {}", layout.known_hosts().display()))?;
    let ssh_hosts: Vec<SshHost> = managed
        .iter()
        .map(|h| SshHost {
            name: h.name.clone(),
            aliases: h.ssh_aliases.clone(),
            namespace: h.namespace.clone(),
            user: if h.machine { LOGIN_USER } else { "root" }.to_owned(),
        })
        .collect();
    std::fs::write(
        layout.ssh_config(),
        config::ssh_config(layout, &topo.prefix, &ssh_hosts),
    )
    .with_context(|| format!("cannot write {}", layout.ssh_config().display()))?;

    // The machines' package mirror on inet, then every machine booted (they boot meanwhile).
    if let Some(m) = state.mirror.as_mut() {
        let inet = topo
            .hosts
            .iter()
            .find(|h| h.kind == HostKind::Inet)
            .context("the lab has no inet host for its package mirror")?;
        let addr = m.url.trim_start_matches("http://").to_owned();
        m.pid = Some(
            mirror::serve(&m.dir, &inet.namespace, &addr, &layout.mirror_log())
                .context("lab host inet: the package mirror")?,
        );
        state.save(&layout.dir)?;
    }
    let machines: Vec<(String, u32, Instant)> = state
        .hosts
        .iter()
        .filter_map(|(n, h)| {
            let pid = h.machine.as_ref()?.supervisor_pid?;
            Some((n.clone(), pid, *boot_started.get(n)?))
        })
        .collect();
    let booted = sys::parallel(&machines, WORKERS, |(name, supervisor, since)| {
        machine::wait_booted(layout, name, *supervisor, *since)
    });
    for ((name, _, _), took) in machines.iter().zip(booted) {
        let took = took?;
        if let Some(m) = state.hosts.get_mut(name).and_then(|h| h.machine.as_mut()) {
            m.boot_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
            m.nspawn_pid = machine::nspawn_pid(layout, name);
        }
    }
    Ok(())
}

/// What stage 2 started on a host.
enum Started {
    /// A namespace host's sshd (its pid).
    Sshd(u32),
    /// A machine's supervisor (its pid) and when it was started.
    Machine(u32, Instant),
    /// Nothing: a host not managed over SSH.
    Nothing,
}

/// Runs shell lines inside a namespace (the values in them were validated by the inventory).
fn run_in(ns: &str, script: &[String]) -> anyhow::Result<()> {
    let script = script.join("\n");
    sys::run(&["ip", "netns", "exec", ns, "sh", "-c", &script])?;
    Ok(())
}

/// Starts a host's sshd in its namespace and a private mount namespace; returns its pid once it
/// listens (sshd writes its PidFile after binding, then daemonizes).
fn start_sshd(layout: &Layout, h: &NetHost, sshd: &Path) -> anyhow::Result<u32> {
    let script = config::sshd_launch_script(layout, &h.name, sshd);
    let pidfile = layout.sshd_pidfile(&h.name);
    let out = sys::output(
        &[
            "ip",
            "netns",
            "exec",
            &h.namespace,
            "unshare",
            "-m",
            "-u",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        None,
    )?;
    if !out.status.success() {
        let log = std::fs::read_to_string(layout.sshd_log(&h.name)).unwrap_or_default();
        bail!(
            "sshd did not start ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            log.trim()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            && sys::alive(pid)
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(layout.sshd_log(&h.name)).unwrap_or_default();
            bail!(
                "sshd wrote no pid to {} within 5s: {}",
                pidfile.display(),
                log.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
