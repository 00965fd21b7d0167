//! `meshctl apply`: at most three remote executions per host over one connection each —
//! prepare (lock, key, gather), changes (one generated script), finish (gather, unlock) — with
//! every host in parallel and a failing host never stopping the others.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, bail};

use super::{EXIT_ERROR, EXIT_OK};
use crate::apply::{guard, script};
use crate::cli::ApplyArgs;
use crate::desired::Desired;
use crate::facts::{self, GatherSpec};
use crate::keys::PinnedKeys;
use crate::names::{HostName, WgKey};
use crate::plan::HostStatus;
use crate::planner::{self, Gathered, Inputs};
use crate::progress::Progress;
use crate::remote;
use crate::render::{self, Style};
use crate::transport::Session;

/// One host's connection and what step 1 learnt.
struct Prepared {
    session: Session,
    public_key: WgKey,
    live: crate::state::LiveHost,
}

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
    let only = inputs
        .limit(&args.common.limit)
        .map_err(anyhow::Error::msg)?;
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

    // Pin the keys learnt; a changed key is refused unless accepted explicitly.
    let mut results: BTreeMap<HostName, Result<Prepared, String>> = BTreeMap::new();
    let mut new_keys = inputs.keys.clone();
    let mut hub_key_changed = false;
    for (h, r) in prepared {
        let r = r.and_then(|p| {
            match inputs.keys.get(&h) {
                Some(old) if *old != p.public_key && !args.accept_new_keys => {
                    return Err(format!(
                        "THE PUBLIC KEY OF {h} CHANGED (pinned {}, now {}): a reinstall, or something worse. Check the host; accept with --accept-new-keys",
                        old.short(),
                        p.public_key.short()
                    ));
                }
                Some(old) if *old != p.public_key => {
                    hub_key_changed |= matches!(inputs.inventory.hosts[&h].role, crate::inventory::Role::Hub(_));
                }
                _ => {}
            }
            new_keys.keys.insert(h.clone(), p.public_key.clone());
            Ok(p)
        });
        results.insert(h, r);
    }
    if new_keys != inputs.keys {
        let path = inputs.inventory.keys_path();
        let mut to_save = PinnedKeys::read(&path).unwrap_or_default();
        to_save.keys.extend(
            new_keys
                .keys
                .iter()
                .filter(|(h, _)| inputs.inventory.hosts[*h].public_key.is_none())
                .map(|(h, k)| (h.clone(), k.clone())),
        );
        to_save
            .save(&path)
            .with_context(|| format!("pinning public keys in {}", path.display()))?;
        inputs.keys = new_keys;
    }
    if hub_key_changed {
        let unmanaged: Vec<String> = inputs
            .inventory
            .hosts
            .values()
            .filter(|h| !h.is_managed())
            .map(|h| format!("meshctl client {}", h.name))
            .collect();
        eprintln!(
            "warning: the hub's key changed: hand out these client configs again: {}",
            unmanaged.join(", ")
        );
    }

    // The plan, with every reachable host's key known now.
    let desired: BTreeMap<HostName, Desired> =
        crate::desired::all(&inputs.inventory, &inputs.roles, &inputs.keys)
            .into_iter()
            .filter(|(h, _)| in_scope(h))
            .map(|(h, mut d)| {
                drop_unknown_peers(&mut d, &inputs);
                (h, d)
            })
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
            release_all(results, &specs).await;
            return Err(e.into());
        }
    }

    let style = Style::detect(std::io::stdout().is_terminal(), no_color);
    print!("{}", render::text(&plan, style));
    if plan.has_changes() && !confirm(args.yes)? {
        release_all(results, &specs).await;
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
        println!("  {}: {line}", hp.host);
    }
    println!(
        "{} host(s) converged, {failed} failed.",
        plan.hosts.len() - failed
    );
    Ok(if failed > 0 { EXIT_ERROR } else { EXIT_OK })
}

/// What steps 2 and 3 need to know about a host besides its plan.
struct HostJob {
    desired: Desired,
    keys: PinnedKeys,
    /// Set for a host reached through the network meshctl manages.
    guard: Option<Guard>,
}

struct Guard {
    run_id: String,
    timeout_secs: u64,
    target: crate::inventory::SshTarget,
    opts: crate::transport::SshOptions,
}

/// Describes a failed step 2 from the script's step markers.
fn step_failure(out: &crate::transport::RemoteOutput) -> String {
    let (started, failed) = script::progress(&out.stdout);
    let failed = failed
        .or_else(|| started.last().cloned())
        .unwrap_or_else(|| "before the first step".into());
    let done: Vec<&String> = started.iter().filter(|s| **s != failed).collect();
    let last = |text: &str| {
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("@@meshctl"))
            .map(str::to_owned)
    };
    let detail = last(&out.stderr)
        .or_else(|| last(&out.stdout))
        .unwrap_or_default();
    format!(
        "step `{failed}` failed ({detail}); applied before it: {}",
        if done.is_empty() {
            "nothing".to_owned()
        } else {
            done.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        }
    )
}

/// Steps 2 and 3 on one host; `Ok(n)`: n changes remain after apply (0 = converged).
async fn apply_host(
    prepared: Prepared,
    hp: crate::plan::HostPlan,
    spec: GatherSpec,
    job: HostJob,
) -> Result<usize, String> {
    let session = prepared.session;
    let gather = facts::gather_script(&spec);
    let guard = job.guard.filter(|_| !hp.changes.is_empty());
    let mut error = None;
    if !hp.changes.is_empty() {
        let mut s = String::new();
        if let Some(g) = &guard {
            let mut before = prepared.live.clone();
            planner::restrict_to_owned(&mut before, &job.desired);
            let rollback = guard::inverse(&before, &job.desired.state, &job.keys);
            let created = prepared
                .live
                .state
                .interface
                .is_none()
                .then_some(spec.interface.as_str());
            s.push_str(&guard::arm(
                &g.run_id,
                &hp.changes,
                &rollback,
                created,
                g.timeout_secs,
            ));
        }
        s.push_str(&script::changes(&hp.changes));
        // A guarded change may cut this very connection: don't wait for it past half the
        // guard's time, the confirmation over a new connection decides.
        let wait = guard
            .as_ref()
            .map_or(std::time::Duration::from_secs(24 * 3600), |g| {
                std::time::Duration::from_secs(g.timeout_secs / 2)
            });
        match tokio::time::timeout(wait, session.run_script(&s)).await {
            Ok(Ok(out)) if out.success() => {}
            Ok(Ok(out)) => error = Some(step_failure(&out)),
            Ok(Err(e)) => error = Some(format!("the connection failed while applying: {e}")),
            Err(_) => {
                error = Some(format!(
                    "no answer while applying within {}s",
                    wait.as_secs()
                ))
            }
        }
    }

    let finished = match &guard {
        // Confirm over a new connection: if the change cut meshctl off, the host rolls back.
        Some(g) => {
            let old = tokio::spawn(async move { session.close().await.ok() });
            let mut opts = g.opts.clone();
            opts.connect_timeout =
                std::time::Duration::from_secs((g.timeout_secs / 3).clamp(2, 10));
            let confirmed = match Session::connect(&g.target, &opts).await {
                Ok(fresh) => {
                    let r = fresh.run_script(&guard::confirm(&g.run_id, &gather)).await;
                    fresh.close().await.ok();
                    r.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            drop(old);
            match confirmed {
                Ok(out) if out.success() => Ok(out),
                other => {
                    let why = match other {
                        Ok(out) => out.stderr.trim().to_owned(),
                        Err(e) => e,
                    };
                    return Err(rolled_back(g, why, error).await);
                }
            }
        }
        // Step 3 runs even after a failure: it releases the lock.
        None => {
            let r = session.run_script(&script::finish(&gather)).await;
            session.close().await.ok();
            r.map_err(|e| format!("confirming: {e}"))
        }
    };
    if let Some(e) = error {
        return Err(e);
    }
    let out = finished?;
    let mut live = facts::parse(&out.stdout, &spec).map_err(|e| format!("confirming: {e}"))?;
    planner::restrict_to_owned(&mut live, &job.desired);
    Ok(crate::diff::diff_host(&job.desired.state, &live, &job.keys)
        .changes
        .len())
}

/// A guarded host could not be confirmed: wait for its timer, then check that it rolled back.
async fn rolled_back(g: &Guard, why: String, step_error: Option<String>) -> String {
    let mut msg = format!("NOT confirmed over a new connection ({why})");
    if let Some(e) = step_error {
        msg.push_str(&format!("; {e}"));
    }
    tokio::time::sleep(std::time::Duration::from_secs(g.timeout_secs + 3)).await;
    let checked = match Session::connect(&g.target, &g.opts).await {
        Ok(s) => {
            let r = s.run_script(&guard::status(&g.run_id)).await;
            s.close().await.ok();
            r.ok().map(|o| o.stdout)
        }
        Err(_) => None,
    };
    match checked
        .as_deref()
        .map(|o| o.lines().next().unwrap_or_default())
    {
        Some("rolled-back") => format!(
            "{msg}: the host restored its previous state by itself after {}s, and answers again",
            g.timeout_secs
        ),
        Some(other) => format!("{msg}: the guard on the host says `{other}`"),
        None => format!(
            "{msg}: the host restores its previous state by itself after {}s (it did not answer yet)",
            g.timeout_secs
        ),
    }
}

/// Step 1 on one host.
async fn prepare(
    host: HostName,
    target: crate::inventory::SshTarget,
    spec: GatherSpec,
    opts: crate::transport::SshOptions,
    progress: Arc<Progress>,
    holder: String,
    break_lock: bool,
) -> Result<Prepared, String> {
    progress.update(host.as_str(), "connecting");
    let session = Session::connect(&target, &opts)
        .await
        .map_err(|e| e.to_string())?;
    progress.update(host.as_str(), "locking and gathering");
    let key_path = crate::desired::key_path(&spec.interface);
    let s = script::prepare(
        &holder,
        break_lock,
        &key_path,
        spec.interface.as_str(),
        &facts::gather_script(&spec),
    );
    let out = match session.run_script(&s).await {
        Ok(o) => o,
        Err(e) => {
            session.close().await.ok();
            return Err(e.to_string());
        }
    };
    if out.status == Some(script::EXIT_LOCKED) {
        session.close().await.ok();
        let who = out
            .stdout
            .lines()
            .skip_while(|l| *l != script::MARK_LOCKED)
            .nth(1)
            .unwrap_or("unknown")
            .to_owned();
        return Err(format!(
            "locked by another apply: {who}; if that run is dead, run again with --break-lock"
        ));
    }
    let marker = format!("{}\n", script::MARK_PUBKEY);
    let Some((_, rest)) = out.stdout.split_once(&marker) else {
        session.close().await.ok();
        let err = out
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .to_owned();
        return Err(format!("preparing failed: {err}"));
    };
    let (key_line, gather_out) = rest.split_once('\n').unwrap_or((rest, ""));
    let public_key =
        WgKey::parse(key_line).map_err(|e| format!("reading the host's public key: {e}"))?;
    let mut live = facts::parse(gather_out, &spec).map_err(|e| format!("reading facts: {e}"))?;
    live.host = Some(host.clone());
    progress.finish(host.as_str(), "locked and gathered");
    Ok(Prepared {
        session,
        public_key,
        live,
    })
}

/// Releases the locks taken in step 1 (when apply stops before changing anything).
async fn release_all(
    results: BTreeMap<HostName, Result<Prepared, String>>,
    specs: &BTreeMap<HostName, GatherSpec>,
) {
    for (h, r) in results {
        if let Ok(p) = r {
            let _ = specs.get(&h);
            p.session
                .run_script(&format!("rm -rf {}\n", script::LOCK_DIR))
                .await
                .ok();
            p.session.close().await.ok();
        }
    }
}

/// Peers whose key is still unknown (a host that could not be reached) are left out for now.
fn drop_unknown_peers(d: &mut Desired, inputs: &Inputs) {
    if let Some(wg) = d.state.interface.as_mut() {
        let unknown: Vec<String> = wg
            .peers
            .iter()
            .filter(|(_, p)| p.public_key.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for n in unknown {
            wg.peers.remove(&n);
            d.notes.push(format!(
                "peer {n} left out: its key is not known (the host could not be prepared)"
            ));
        }
    }
    let files = crate::persist::files(&d.state, &inputs.inventory);
    d.state.files = files;
}

/// Asks for confirmation on a terminal; refuses without `--yes` when there is none.
fn confirm(yes: bool) -> anyhow::Result<bool> {
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
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
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
