//! `meshctl lab down`: remove every namespace of a lab and every process in them.
//!
//! What to remove comes from `lab.json` *and* from the machine (every namespace named with the
//! lab's prefix), so that a crashed `lab up` with a partial state is cleaned up too. Idempotent.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::state::{self, STATE_FILE};
use super::sys;

/// The lab directory as `lab up` saw it (canonical), if it exists.
fn canonical(dir: &Path) -> Option<PathBuf> {
    dir.canonicalize().ok()
}

/// The prefix of the lab in `dir`: from its state, or derived from the directory.
fn prefix(dir: &Path) -> Option<String> {
    state::load(dir)
        .ok()
        .map(|s| s.prefix)
        .or_else(|| canonical(dir).map(|d| super::prefix_for(&d)))
}

/// The namespaces of the lab in `dir` that exist on the machine now.
pub fn lab_namespaces(dir: &Path) -> anyhow::Result<Vec<String>> {
    let existing = sys::list_namespaces()?;
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    if let Ok(s) = state::load(dir) {
        wanted.extend(s.hosts.values().map(|h| h.namespace.clone()));
    }
    if let Some(p) = prefix(dir) {
        let p = format!("{p}-");
        wanted.extend(existing.iter().filter(|n| n.starts_with(&p)).cloned());
    }
    Ok(existing
        .into_iter()
        .filter(|n| wanted.contains(n))
        .collect())
}

/// Sends `signal` to `pids` (the `kill` program: no libc here).
pub(super) fn kill(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let mut argv = vec!["kill".to_owned(), format!("-{signal}")];
    argv.extend(pids.iter().map(u32::to_string));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let _ = sys::output(&argv, None);
}

/// Waits until none of `pids` is alive; returns those still alive after `timeout`.
pub(super) fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| sys::alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `pids` (TERM, then KILL); returns how many there were.
fn stop(pids: &[u32]) -> usize {
    kill("TERM", pids);
    let left = wait_gone(pids, Duration::from_secs(2));
    kill("KILL", &left);
    wait_gone(&left, Duration::from_secs(2));
    pids.len()
}

/// Kills every process in `ns`, then deletes it; returns the number of processes stopped.
fn remove_namespace(ns: &str) -> anyhow::Result<usize> {
    let mut stopped = 0;
    // A process may fork while we kill its parent: look again until the namespace is empty.
    for _ in 0..5 {
        let pids = sys::namespace_pids(ns);
        if pids.is_empty() {
            break;
        }
        stopped += stop(&pids);
    }
    sys::run(&["ip", "netns", "del", ns])?;
    Ok(stopped)
}

/// Removes the lab in `dir`; `quiet` leaves the talking to the caller. Returns
/// `(namespaces removed, processes stopped)`.
pub fn teardown(dir: &Path, quiet: bool) -> anyhow::Result<(usize, usize)> {
    let namespaces = lab_namespaces(dir)?;
    let mut stopped = 0;
    let mut errors = Vec::new();
    // Machines first: told to power off, they stop their own services; killed from outside
    // with their namespace, they would not unmount their copies.
    if let (Some(prefix), Some(cdir)) = (prefix(dir), canonical(dir)) {
        let recorded: Vec<u32> = state::load(dir)
            .map(|s| {
                s.hosts
                    .values()
                    .filter_map(|h| h.machine.as_ref().and_then(|m| m.supervisor_pid))
                    .collect()
            })
            .unwrap_or_default();
        match super::machine::stop_all(&cdir, &prefix, &recorded) {
            Ok(n) => stopped += n,
            Err(e) => errors.push(format!("machines: {e:#}")),
        }
    }
    let results = sys::parallel(&namespaces, 8, |ns| remove_namespace(ns));
    for (ns, r) in namespaces.iter().zip(results) {
        match r {
            Ok(n) => stopped += n,
            Err(e) => errors.push(format!("{ns}: {e:#}")),
        }
    }
    // An sshd (or the mirror) whose namespace is gone already (deleted by hand) still holds it:
    // stop it too, when its command line shows it is this lab's.
    if let Ok(s) = state::load(dir) {
        let pids: Vec<u32> = s
            .hosts
            .values()
            .filter_map(|h| h.sshd_pid)
            .map(|p| (p, s.dir.clone()))
            .chain(
                s.mirror
                    .as_ref()
                    .and_then(|m| m.pid.map(|p| (p, m.dir.clone()))),
            )
            .filter(|(p, dir)| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
                    .unwrap_or(false)
            })
            .map(|(p, _)| p)
            .collect();
        stopped += stop(&pids);
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "lab down in {} left namespaces behind: {}",
            dir.display(),
            errors.join("; ")
        );
    }
    let state_file = dir.join(STATE_FILE);
    if state_file.exists() {
        std::fs::remove_file(&state_file)?;
    }
    if !quiet {
        let dir = canonical(dir).unwrap_or_else(|| dir.to_path_buf());
        if namespaces.is_empty() {
            println!("no lab is up in {} (nothing to remove)", dir.display());
        } else {
            println!(
                "lab in {} is down: removed {} namespaces, stopped {} processes",
                dir.display(),
                namespaces.len(),
                stopped
            );
        }
    }
    Ok((namespaces.len(), stopped))
}

/// `meshctl lab down`.
pub fn down(dir: &Path) -> anyhow::Result<u8> {
    sys::require_root()?;
    sys::require_programs(&[sys::Needed {
        program: "ip",
        package: "iproute2",
    }])?;
    teardown(dir, false)?;
    Ok(0)
}
