//! `meshctl lab up`: build the planned topology on the machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::config::{self, Layout, SshHost};
use super::state::{LabHost, LabState, STATE_FILE, STATE_VERSION};
use super::sys::{self, NEEDED_FOR_UP};
use super::topology::{self, NetHost, Topology};

/// How many hosts are worked on at once (mostly waiting on `ip` and `sshd`, not on the CPU).
const WORKERS: usize = 8;

/// Builds the lab of `inventory` in `dir`; a lab already up there is torn down and rebuilt.
pub fn up(inventory: &Path, dir: &Path) -> anyhow::Result<u8> {
    let started = Instant::now();
    sys::require_root()?;
    sys::require_tun()?;
    sys::require_programs(NEEDED_FOR_UP)?;
    let inv = crate::files::load_inventory(inventory)?;
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
                };
                (h.name.clone(), host)
            })
            .collect(),
    };
    // Recorded before anything exists, so that `lab down` after a crash knows what to remove.
    clean_files(&layout)?;
    state.save(&dir)?;

    match build(&topo, &layout, &mut state) {
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
    if let Some(first) = managed.first() {
        println!("  ssh -F {} {first} true", layout.ssh_config().display());
    }
    Ok(0)
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

fn build(topo: &Topology, layout: &Layout, state: &mut LabState) -> anyhow::Result<()> {
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
    for h in &managed {
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

    // Stage 2: links, addresses, routes; then each managed host's sshd.
    let pids = sys::parallel(&topo.hosts, WORKERS, |h| -> anyhow::Result<Option<u32>> {
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
            if h.sshd {
                start_sshd(layout, h, &sshd).map(Some)
            } else {
                Ok(None)
            }
        })()
        .with_context(|| format!("lab host {}", h.name))
    });
    for (h, pid) in topo.hosts.iter().zip(pids) {
        let pid = pid?;
        if let Some(entry) = state.hosts.get_mut(&h.name) {
            entry.sshd_pid = pid;
        }
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
        })
        .collect();
    std::fs::write(
        layout.ssh_config(),
        config::ssh_config(layout, &topo.prefix, &ssh_hosts),
    )
    .with_context(|| format!("cannot write {}", layout.ssh_config().display()))?;
    Ok(())
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
