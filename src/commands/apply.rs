//! `meshctl apply`: at most three remote executions per host over one connection each —
//! prepare (lock, key, gather), changes (one generated script), finish (gather, unlock) — with
//! every host in parallel and a failing host never stopping the others.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::bail;

use super::{EXIT_ERROR, EXIT_OK};
use crate::apply::host::{Guard, HostJob, Prepared, apply_host, prepare};
use crate::apply::script;
use crate::cli::ApplyArgs;
use crate::desired::Desired;
use crate::facts::GatherSpec;
use crate::inventory::Role;
use crate::keys::{KeyVerdict, PinnedKeys};
use crate::names::HostName;
use crate::plan::HostStatus;
use crate::planner::{self, Gathered, Inputs};
use crate::progress::Progress;
use crate::remote;
use crate::render::{self, Style};

/// Runs `meshctl apply`.
pub async fn run(args: ApplyArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    let saved = match &args.plan_file {
        Some(p) => Some(crate::saved_plan::load(p)?),
        None => None,
    };
    let mut inputs = Inputs::load(&args.common.inventory, args.common.roles.as_deref())?;
    if let (Some(saved), Some(path)) = (&saved, &args.plan_file) {
        crate::saved_plan::check_inputs(saved, &inputs.digest, path)?;
    }
    let digest_before = inputs.digest.clone();
    let mut only = inputs
        .limit(&args.common.limit)
        .map_err(anyhow::Error::msg)?;
    // A saved plan is applied to exactly the hosts it was made for.
    if let Some(saved) = &saved {
        only = Some(saved.hosts.iter().map(|h| h.host.clone()).collect());
    }
    let in_scope = |h: &HostName| only.as_ref().is_none_or(|o| o.contains(h));
    let mut desired = inputs.desired();
    desired.retain(|h, _| in_scope(h));
    let hosts: Vec<HostName> = desired.keys().cloned().collect();
    let progress = Arc::new(Progress::new(
        &hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        verbose,
    ));
    let mut opts = remote::ssh_options(&args.common);
    if !args.yes {
        // The connections wait while the user reads the plan and answers.
        opts.master_idle_timeout = std::time::Duration::from_secs(900);
    }
    let holder = holder();
    let run_id = run_id();
    let specs: BTreeMap<HostName, GatherSpec> = desired
        .iter()
        .map(|(h, d)| (h.clone(), planner::gather_spec(d, &inputs.roles)))
        .collect();

    // Without a terminal there is nobody to ask: refuse before any host is locked.
    if !args.yes && !std::io::stdin().is_terminal() {
        bail!(
            "there is no terminal to confirm on: review `meshctl plan`, then run `meshctl apply --yes`"
        );
    }

    // Step 1: lock, key, gather — every host in parallel.
    let prepared = remote::for_each_host(hosts.clone(), args.common.parallel, |h| {
        let target = inputs.inventory.hosts[&h]
            .ssh
            .clone()
            .expect("managed host");
        let spec = specs[&h].clone();
        let (opts, progress, holder, brk) = (
            opts.clone(),
            progress.clone(),
            holder.clone(),
            args.break_lock,
        );
        async move { prepare(h, target, spec, opts, progress, holder, brk).await }
    })
    .await;

    // Pin the keys learnt; a changed key is refused unless accepted explicitly, and a key that
    // another host already has (a copied key, or a host lying) is refused outright. A refused
    // host's lock is released at once.
    let mut results: BTreeMap<HostName, Result<Prepared, String>> = BTreeMap::new();
    let mut new_keys = inputs.keys.clone();
    let mut hub_key_changed = false;
    for (h, r) in prepared {
        let p = match r {
            Ok(p) => p,
            Err(e) => {
                results.insert(h, Err(e));
                continue;
            }
        };
        match new_keys.vet(&h, &p.public_key, &inputs.inventory, args.accept_new_keys) {
            Err(why) => {
                release(p).await;
                results.insert(h, Err(why));
            }
            Ok(verdict) => {
                hub_key_changed |= verdict == KeyVerdict::Changed
                    && matches!(inputs.inventory.hosts[&h].role, Role::Hub(_));
                new_keys.keys.insert(h.clone(), p.public_key.clone());
                results.insert(h, Ok(p));
            }
        }
    }
    if new_keys != inputs.keys {
        let path = inputs.inventory.keys_path();
        let mut to_save = PinnedKeys::read(&path).unwrap_or_default();
        to_save.keys.extend(
            new_keys
                .keys
                .iter()
                .filter(|(h, _)| {
                    inputs
                        .inventory
                        .hosts
                        .get(*h)
                        .is_some_and(|x| x.public_key.is_none())
                })
                .map(|(h, k)| (h.clone(), k.clone())),
        );
        if let Err(e) = to_save.save(&path) {
            release_all(results).await;
            return Err(
                anyhow::Error::new(e).context(format!("pinning public keys in {}", path.display()))
            );
        }
        inputs.keys = new_keys;
    }
    if hub_key_changed && let Some(configs) = planner::client_configs(&inputs.inventory) {
        eprintln!("warning: the hub's key changed: hand out these client configs again: {configs}");
    }

    // The plan, with every reachable host's key known now.
    let desired: BTreeMap<HostName, Desired> =
        crate::desired::all_with_known_keys(&inputs.inventory, &inputs.roles, &inputs.keys)
            .into_iter()
            .filter(|(h, _)| in_scope(h))
            .collect();
    let live: BTreeMap<HostName, Gathered> = results
        .iter()
        .map(|(h, r)| {
            (
                h.clone(),
                r.as_ref().map(|p| p.live.clone()).map_err(Clone::clone),
            )
        })
        .collect();
    let mut plan = planner::build(&inputs, &desired, &live);
    progress.clear();

    if let (Some(saved), Some(path)) = (&saved, &args.plan_file) {
        let mut now = plan.clone();
        now.inventory_digest = digest_before.clone();
        if let Err(e) = crate::saved_plan::check(saved, &now, path) {
            release_all(results).await;
            return Err(e.into());
        }
    }

    let style = Style::detect(std::io::stdout().is_terminal(), no_color);
    print!("{}", render::text(&plan, style));
    let confirmed = if plan.has_changes() {
        confirm(args.yes).await
    } else {
        Ok(true)
    };
    let confirmed = match confirmed {
        Ok(c) => c,
        Err(e) => {
            release_all(results).await;
            return Err(e);
        }
    };
    if !confirmed {
        release_all(results).await;
        println!(
            "Apply cancelled: nothing was changed, except that hosts without a private key got one in step 1 (it stays on the host; its public key is pinned)."
        );
        return Ok(EXIT_ERROR);
    }

    // Steps 2 and 3 per host, in parallel.
    let host_plans: BTreeMap<HostName, crate::plan::HostPlan> = plan
        .hosts
        .iter()
        .map(|h| (h.host.clone(), h.clone()))
        .collect();
    let mut sessions = BTreeMap::new();
    for (h, r) in results {
        match r {
            Ok(p) => {
                sessions.insert(h, p);
            }
            Err(e) => {
                if let Some(hp) = plan.hosts.iter_mut().find(|x| x.host == h) {
                    hp.status = HostStatus::Failed;
                    hp.error = Some(e);
                }
            }
        }
    }
    let sessions = Arc::new(tokio::sync::Mutex::new(sessions));
    let outcomes = remote::for_each_host(hosts, args.common.parallel, |h| {
        let sessions = sessions.clone();
        let hp = host_plans[&h].clone();
        let spec = specs[&h].clone();
        let job = HostJob {
            desired: desired[&h].clone(),
            keys: inputs.keys.clone(),
            guard: inputs.inventory.hosts[&h].guard.then(|| Guard {
                run_id: run_id.clone(),
                timeout_secs: args.guard_timeout.max(5),
                target: inputs.inventory.hosts[&h]
                    .ssh
                    .clone()
                    .expect("managed host"),
                opts: opts.clone(),
            }),
        };
        async move {
            let prepared = sessions.lock().await.remove(&h)?;
            Some(apply_host(prepared, hp, spec, job).await)
        }
    })
    .await;

    println!("\nApply:");
    let mut failed = 0;
    for hp in &plan.hosts {
        let line = match (&hp.status, outcomes.get(&hp.host).and_then(Option::as_ref)) {
            (HostStatus::Failed, _) | (_, None) => {
                failed += 1;
                format!(
                    "failed: {}",
                    hp.error.clone().unwrap_or_else(|| "not reached".into())
                )
            }
            (_, Some(Err(e))) => {
                failed += 1;
                format!("failed: {e}")
            }
            (_, Some(Ok(0))) => format!("converged ({} changes applied)", hp.changes.len()),
            (_, Some(Ok(left))) => {
                failed += 1;
                format!(
                    "NOT converged: {left} changes remain after apply (run `meshctl plan` to see them)"
                )
            }
        };
        println!("  {}: {}", hp.host, render::clean(&line));
    }
    println!(
        "{} host(s) converged, {failed} failed.",
        plan.hosts.len() - failed
    );
    Ok(if failed > 0 { EXIT_ERROR } else { EXIT_OK })
}

/// Releases one host's lock taken in step 1 and closes its connection. When that connection
/// is gone (Ctrl-C at the prompt reaches the ssh processes too), a new one releases the lock.
async fn release(p: Prepared) {
    let unlock = script::unlock();
    if p.session.run_script(&unlock).await.is_err()
        && let Ok(fresh) = crate::transport::Session::connect(&p.target, &p.opts).await
    {
        fresh.run_script(&unlock).await.ok();
        fresh.close().await.ok();
    }
    p.session.close().await.ok();
}

/// Releases the locks taken in step 1 (when apply stops before changing anything).
async fn release_all(results: BTreeMap<HostName, Result<Prepared, String>>) {
    for p in results.into_values().flatten() {
        release(p).await;
    }
}

/// Asks for confirmation on a terminal; refuses without `--yes` when there is none.
async fn confirm(yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "there is no terminal to confirm on: review the plan, then run `meshctl apply --yes`"
        );
    }
    print!("Apply these changes? Only 'yes' is accepted: ");
    std::io::stdout().flush().ok();
    let answer = tokio::task::spawn_blocking(|| {
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map(|_| answer)
    });
    // Ctrl-C at the prompt is a "no": the hosts' locks are released on the way out.
    tokio::select! {
        a = answer => Ok(a??.trim() == "yes"),
        _ = tokio::signal::ctrl_c() => {
            println!();
            Ok(false)
        }
    }
}

/// A name for this apply run, unique enough to keep guards of different runs apart.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Who holds the lock: this process, on this machine, since now.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "meshctl pid {} on {} since unix time {since}",
        std::process::id(),
        host.trim()
    )
}
