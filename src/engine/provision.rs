//! Apply's provisioning, after the prompt and before any host's changes: on every host whose
//! plan installs packages (or that had no `wg` in step 1, hence no key yet), install them and
//! make the key, over step 1's connection and under its lock. What is installed is exactly
//! the plan's `InstallPackages` ops. A host whose install fails fails alone.

use std::collections::BTreeMap;

use super::{Connector, Engine, HostError, Prepared};
use crate::names::{HostName, WgKey};
use crate::packages::Manager;
use crate::plan::{HostPlan, Op};
use crate::scripts::steps;
use crate::transport::RemoteOutput;

/// How many of the package manager's last lines a failed install reports.
const OUTPUT_LINES: usize = 5;

/// What one host's provisioning runs: the plan's installs, grouped by manager in plan order.
pub(crate) fn installs(hp: &HostPlan) -> Vec<(Manager, Vec<String>)> {
    let mut out: Vec<(Manager, Vec<String>)> = Vec::new();
    for c in &hp.changes {
        if let Op::InstallPackages { manager, packages } = &c.op {
            match out.iter_mut().find(|(m, _)| m == manager) {
                Some((_, all)) => all.extend(packages.iter().cloned()),
                None => out.push((*manager, packages.clone())),
            }
        }
    }
    out
}

/// One host to provision: its session, the installs, and its key file and interface.
pub(crate) struct Job<R> {
    pub prepared: Prepared<R>,
    pub installs: Vec<(Manager, Vec<String>)>,
    pub key_path: String,
    pub interface: String,
    /// What step 1 would have made with `wg` besides the key (a fresh hub's preshared keys).
    pub work: steps::KeyWork,
}

impl<C: Connector> Engine<C> {
    /// Provisions every host of `jobs` in parallel; each session comes back with the host's
    /// public key, or why it could not be provisioned.
    pub(crate) async fn provision(
        &self,
        jobs: BTreeMap<HostName, Job<C::Remote>>,
    ) -> BTreeMap<HostName, (Prepared<C::Remote>, Result<WgKey, HostError>)> {
        let progress = self.progress.clone();
        let timings = self.timings.clone();
        self.for_each_host(jobs, |h, job| {
            let (progress, timings) = (progress.clone(), timings.clone());
            async move {
                progress.update(h.as_str(), "installing packages");
                let script =
                    steps::provision(&job.installs, &job.key_path, &job.interface, &job.work);
                // `--timings`: each install by its manager, then the key.
                let label = |line: &str| {
                    let i: usize = line
                        .strip_prefix(steps::MARK_INSTALL)?
                        .trim()
                        .parse()
                        .ok()?;
                    let (manager, packages) = job.installs.get(i)?;
                    Some(format!(
                        "provision: install {} ({})",
                        packages.join(" "),
                        manager.name()
                    ))
                };
                let label = |line: &str| match line {
                    steps::MARK_PUBKEY => Some("provision: key".to_owned()),
                    l => label(l),
                };
                let run = super::timings::run(
                    &job.prepared.remote,
                    &script,
                    timings.as_deref(),
                    &h,
                    "provision: start",
                    label,
                );
                let r = match run.await {
                    Ok(out) => read(&out, &job.installs),
                    Err(e) => Err(HostError::Transport(e)),
                };
                (job.prepared, r)
            }
        })
        .await
    }
}

/// Reads a provisioning run's answer: the public key, or the install's failure with the
/// package manager's last lines, or step 1's kind of failure for the key.
fn read(out: &RemoteOutput, installs: &[(Manager, Vec<String>)]) -> Result<WgKey, HostError> {
    let lines: Vec<&str> = out.stdout.lines().collect();
    let index =
        |l: &str, mark: &str| -> Option<usize> { l.strip_prefix(mark)?.trim().parse().ok() };
    let failed = lines
        .iter()
        .enumerate()
        .find_map(|(at, l)| Some((at, index(l, steps::MARK_INSTALL_FAILED)?)));
    if let Some((at, i)) = failed {
        let start = lines[..at]
            .iter()
            .rposition(|l| index(l, steps::MARK_INSTALL) == Some(i))
            .map_or(0, |s| s + 1);
        let said: Vec<String> = lines[start..at]
            .iter()
            .copied()
            .chain(out.stderr.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let output = said[said.len().saturating_sub(OUTPUT_LINES)..].to_vec();
        let (manager, packages) = installs.get(i).cloned().unwrap_or((Manager::Apt, vec![]));
        return Err(HostError::Install {
            manager,
            packages,
            output,
        });
    }
    let key = lines
        .iter()
        .position(|l| *l == steps::MARK_PUBKEY)
        .and_then(|i| lines.get(i + 1));
    match key {
        Some(k) if out.success() => WgKey::parse(k).map_err(|e| HostError::PublicKey {
            detail: e.to_string(),
        }),
        _ => Err(HostError::Prepare {
            detail: out
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .to_owned(),
        }),
    }
}
