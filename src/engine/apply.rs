//! One `meshctl apply`, start to end: step 1 on every host, the keys vetted and pinned, the
//! plan chosen (made now from what step 1 gathered, or a saved one checked against it), shown
//! and confirmed, its ops executed, the result reported. What touches the controller (the
//! terminal, the pins file) goes through an [`Operator`], so all of it runs in unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;

use super::Prepared;
use super::execute::Check;
use super::provision::{self, Job};
use super::{Connector, Engine, ExecuteSettings, HostError, HostOutcome, Lock};
use crate::desired::{self, Desired};
use crate::inventory::Role;
use crate::keys::KeyVerdict;
use crate::names::{HostName, WgKey};
use crate::plan::{Plan, ResolveError};
use crate::planner::{self, Gathered, Inputs};
use crate::saved_plan::SavedPlanError;

/// Which plan apply executes.
#[derive(Debug, Clone)]
pub enum PlanSource {
    /// Made now, from the live state step 1 gathers (`meshctl apply`).
    Fresh {
        /// `--limit`: only these hosts; `None`: every managed host.
        only: Option<Vec<HostName>>,
    },
    /// Loaded from a file (`meshctl apply plan.json`): run when its hosts have not moved.
    Saved {
        /// The plan as loaded (checksum and version already checked).
        plan: Box<Plan>,
        /// Its path, for messages.
        path: PathBuf,
    },
}

/// What apply asks of the controller's side: show, ask, remember keys.
pub trait Operator: Send + Sync {
    /// Shows the plan about to be applied.
    fn show(&self, plan: &Plan);
    /// Asks whether to apply it; `false` (a "no", Ctrl-C) cancels.
    fn confirm(&self) -> impl Future<Output = anyhow::Result<bool>> + Send;
    /// Pins the public keys learnt in step 1 for hosts the inventory names no key for.
    fn pin(&self, learnt: &BTreeMap<HostName, WgKey>) -> anyhow::Result<()>;
    /// A warning for the person running apply.
    fn warn(&self, text: &str);
    /// Pins a rotated key and records the rotation (old → new) in the pins file, once the
    /// plan that switches to it is confirmed.
    fn record_rotation(&self, host: &HostName, old: &WgKey, new: &WgKey) -> anyhow::Result<()>;
}

/// `meshctl rotate HOST [--psk]`: a new private key for one managed host, every managed peer
/// learning it in the same apply; with `psk`, new preshared keys for its pair(s) too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The host whose key is replaced.
    pub host: HostName,
    /// Also replace the preshared keys of its pairs (the hub: every pair).
    pub psk: bool,
}

/// Options of one apply run.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The lock's holder and `--break-lock`.
    pub lock: Lock,
    /// `--accept-new-keys`.
    pub accept_new_keys: bool,
    /// The guard's name and timer.
    pub execute: ExecuteSettings,
    /// `meshctl rotate`: the key to replace in this run.
    pub rotate: Option<Rotation>,
    /// Which hosts with changes are reached across the VPN (their changes run guarded).
    pub crossing: crate::planner::Crossing,
}

/// Why apply stopped before changing anything.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The saved plan does not fit the hosts as they are now.
    #[error(transparent)]
    Saved(#[from] SavedPlanError),
    /// A saved plan's pending keys could not be filled in.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The controller side failed (pins file, terminal).
    #[error(transparent)]
    Operator(#[from] anyhow::Error),
    /// The host to rotate could not make its next key (or was not reached): nothing changed.
    #[error("rotating the key of {host}: {why}; nothing was changed")]
    Rotate {
        /// The host.
        host: HostName,
        /// Why, naming the step.
        why: String,
    },
}

/// How an apply ended.
#[derive(Debug)]
pub enum ApplyResult {
    /// The user said no: only step 1 ran (locks released).
    Cancelled,
    /// The plan ran; each host's outcome.
    Applied {
        /// The plan that ran (as shown).
        plan: Plan,
        /// The rotation of this run, as (host, old public key, new public key).
        rotated: Option<Box<(HostName, WgKey, WgKey)>>,
        /// Per host of the plan.
        outcomes: BTreeMap<HostName, HostOutcome>,
    },
}

/// Runs one apply.
pub async fn run<C: Connector, O: Operator>(
    engine: &Engine<C>,
    inputs: &Inputs,
    source: PlanSource,
    opts: &ApplyOptions,
    operator: &O,
) -> Result<ApplyResult, ApplyError> {
    let inv = &inputs.inventory;
    // A saved plan is applied to exactly the hosts it was made for.
    let scope: Option<Vec<HostName>> = match &source {
        PlanSource::Fresh { only } => only.clone(),
        PlanSource::Saved { plan, .. } => Some(plan.hosts.iter().map(|h| h.host.clone()).collect()),
    };
    let in_scope = |h: &HostName| scope.as_ref().is_none_or(|o| o.contains(h));
    let before: BTreeMap<HostName, Desired> = inputs
        .desired()
        .into_iter()
        .filter(|(h, _)| in_scope(h))
        .collect();
    let specs = before
        .iter()
        .map(|(h, d)| (h.clone(), planner::gather_spec(d, &inputs.roles)))
        .collect();
    // The hub makes the pairs' preshared keys it does not have yet.
    let work: BTreeMap<HostName, crate::scripts::steps::KeyWork> = before
        .iter()
        .filter(|(h, _)| crate::psk::is_hub(inv, h))
        .map(|(h, _)| {
            let w = crate::scripts::steps::KeyWork {
                psk_files: crate::psk::hub_files(inv),
                next_key: false,
            };
            (h.clone(), w)
        })
        .collect();
    // Only the specs and the key work were made of it; the plan is made of what step 1 learns.
    drop(before);
    // The host to rotate makes its next key beside the old one (which stays until the switch).
    let mut work = work;
    if let Some(r) = &opts.rotate {
        work.entry(r.host.clone()).or_default().next_key = true;
    }

    // Step 1: lock, key, gather — every host in parallel.
    let mut prepared = engine.prepare(&specs, &work, &opts.lock).await;
    drop(specs);

    // Vet the keys learnt: a changed key is refused unless accepted explicitly, a key another
    // host has is refused outright; a refused host's lock is released at once.
    let mut keys = inputs.keys.clone();
    // Hosts without `wg` yet: their key is made after their packages are installed.
    let mut later = BTreeSet::new();
    let learnt: BTreeMap<HostName, WgKey> = prepared
        .iter()
        .filter_map(|(h, p)| Some((h.clone(), p.as_ref().ok()?.public_key.clone()?)))
        .collect();
    for (h, p) in &prepared {
        if matches!(p, Ok(p) if p.public_key.is_none()) {
            later.insert(h.clone());
        }
    }
    if let Err(e) = learn_keys(
        engine,
        inv,
        opts,
        operator,
        &mut keys,
        &mut prepared,
        learnt,
    )
    .await
    {
        engine.release_all(prepared).await;
        return Err(e);
    }

    // A rotation: the plan is made with the host's next key (pinned only once it is confirmed).
    let rotated = match &opts.rotate {
        None => None,
        Some(r) => {
            let next = match prepared.get(&r.host) {
                Some(Ok(p)) => p
                    .public_key
                    .clone()
                    .zip(p.live.next_public_key.clone())
                    .ok_or_else(|| "step 1 made no next key".to_owned()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the host is not part of this apply".to_owned()),
            };
            let checked = next.and_then(|(old, new)| {
                let mut others = keys.clone();
                others.keys.remove(&r.host);
                others
                    .vet(&r.host, &new, inv, false)
                    .map(|_| (old, new))
                    .map_err(|e| e.to_string())
            });
            match checked {
                Ok((old, new)) => {
                    keys.keys.insert(r.host.clone(), new.clone());
                    Some((r.host.clone(), old, new))
                }
                Err(why) => {
                    engine.release_all(prepared).await;
                    return Err(ApplyError::Rotate {
                        host: r.host.clone(),
                        why,
                    });
                }
            }
        }
    };

    // The desired state with every reachable host's key known now (or, for a host without
    // `wg` yet, known after its install): what the plan made now is made of.
    let desired: BTreeMap<HostName, Desired> =
        desired::all_for_apply(inv, &inputs.roles, &keys, &later)
            .into_iter()
            .filter(|(h, _)| in_scope(h))
            .collect();
    // Moved, not copied: nothing after the plan reads a host's step-1 state from `prepared`.
    let live: BTreeMap<HostName, Gathered> = prepared
        .iter_mut()
        .map(|(h, r)| {
            let g = match r {
                Ok(p) => Ok(std::mem::take(&mut p.live)),
                Err(e) => Err(e.to_string()),
            };
            (h.clone(), g)
        })
        .collect();
    let mut psk_work = inputs.psk.clone();
    if let Some(r) = opts.rotate.as_ref().filter(|r| r.psk) {
        psk_work.rotate.insert(r.host.clone());
    }
    let with_keys = Inputs {
        keys: keys.clone(),
        psk: psk_work,
        ..inputs.clone()
    };
    let mut now = planner::build_guarded(&with_keys, &desired, &live, &opts.crossing);
    let mut plan = match source {
        PlanSource::Fresh { .. } => now,
        PlanSource::Saved { plan, path } => {
            let saved = *plan;
            // The inputs as the plan was made from them: before step 1 pinned new keys.
            now.inventory_digest = inputs.digest.clone();
            if let Err(e) = crate::saved_plan::check(&saved, &now, &path) {
                engine.release_all(prepared).await;
                return Err(e.into());
            }
            saved
        }
    };
    // The keys known now go in at once (a saved plan made before they existed); only those of
    // hosts without `wg` yet may still come, after provisioning.
    let resolved = plan.resolve_known_keys(&keys).and_then(|()| {
        match plan
            .pending_hosts()
            .into_iter()
            .find(|h| !later.contains(h))
        {
            Some(host) => Err(ResolveError::KeyUnknown { host }),
            None => Ok(()),
        }
    });
    if let Err(e) = resolved {
        engine.release_all(prepared).await;
        return Err(e.into());
    }

    operator.show(&plan);
    let confirmed = if plan.has_changes() {
        operator.confirm().await
    } else {
        Ok(true)
    };
    match confirmed {
        Ok(true) => {}
        Ok(false) => {
            engine.release_all(prepared).await;
            return Ok(ApplyResult::Cancelled);
        }
        Err(e) => {
            engine.release_all(prepared).await;
            return Err(e.into());
        }
    }

    if let Some((h, old, new)) = &rotated
        && let Err(e) = operator.record_rotation(h, old, new)
    {
        engine.release_all(prepared).await;
        return Err(e.into());
    }

    let mut outcomes = BTreeMap::new();
    let mut sessions = BTreeMap::new();
    for (h, r) in prepared {
        match r {
            Ok(p) => {
                sessions.insert(h, p);
            }
            Err(e) => {
                outcomes.insert(h, HostOutcome::Failed(e));
            }
        }
    }
    // A host the plan could not be made for (it lacks what it cannot get) is let go.
    for hp in plan.failed_hosts() {
        if let Some(p) = sessions.remove(&hp.host) {
            engine.release(&hp.host, p).await;
            let reason = hp.error.clone().unwrap_or_default();
            outcomes.insert(
                hp.host.clone(),
                HostOutcome::Failed(HostError::NotPlanned { reason }),
            );
        }
    }

    // Provisioning: packages first, then the keys still to come; a host that fails here
    // fails alone, and the others leave it out where its key was to go.
    let jobs: BTreeMap<HostName, Job<C::Remote>> = sessions
        .extract_if(.., |h, _| {
            later.contains(h)
                || plan
                    .hosts
                    .iter()
                    .any(|hp| &hp.host == h && !provision::installs(hp).is_empty())
        })
        .map(|(h, prepared)| {
            let hp = plan.hosts.iter().find(|hp| hp.host == h);
            let installs = hp.map(provision::installs).unwrap_or_default();
            let interface = inv.network.interface.clone();
            let job = Job {
                prepared,
                installs,
                key_path: desired::key_path(&interface),
                interface: interface.to_string(),
                work: work.get(&h).cloned().unwrap_or_default(),
            };
            (h, job)
        })
        .collect();
    let mut provisioned: BTreeMap<HostName, Result<Prepared<C::Remote>, HostError>> =
        BTreeMap::new();
    let mut made: BTreeMap<HostName, WgKey> = BTreeMap::new();
    for (h, (p, r)) in engine.provision(jobs).await {
        match r {
            Ok(k) => {
                made.insert(h.clone(), k);
                provisioned.insert(h, Ok(p));
            }
            Err(e) => {
                engine.release(&h, p).await;
                provisioned.insert(h, Err(e));
            }
        }
    }
    if let Err(e) = learn_keys(
        engine,
        inv,
        opts,
        operator,
        &mut keys,
        &mut provisioned,
        made,
    )
    .await
    {
        engine.release_all(provisioned).await;
        engine
            .release_all(sessions.into_iter().map(|(h, p)| (h, Ok(p))).collect())
            .await;
        return Err(e);
    }
    for (h, r) in provisioned {
        match r {
            Ok(p) => {
                sessions.insert(h, p);
            }
            Err(e) => {
                if keys.get(&h).is_none() {
                    plan.leave_out_pending(&h);
                }
                outcomes.insert(h, HostOutcome::Failed(e));
            }
        }
    }
    if let Err(e) = plan.resolve_pending_keys(&keys) {
        engine
            .release_all(sessions.into_iter().map(|(h, p)| (h, Ok(p))).collect())
            .await;
        return Err(e.into());
    }

    // The preshared keys the plan carries: rotated and read on the hub now, after the "yes"
    // (and after its provisioning, on a fresh hub).
    let (carried, not_carried) = engine.carry(&sessions, &carry_work(&plan)).await;
    for hp in &plan.hosts {
        let missing = hp.changes.iter().find_map(|c| match &c.op {
            crate::plan::Op::WritePsk { from, .. } => not_carried.get(from),
            _ => None,
        });
        if let Some(why) = missing
            && let Some(p) = sessions.remove(&hp.host)
        {
            engine.release(&hp.host, p).await;
            outcomes.insert(
                hp.host.clone(),
                HostOutcome::Failed(HostError::NotCarried(why.clone())),
            );
        }
    }

    // Steps 2 and 3: the plan's ops, per host, in parallel. The check after them compares
    // with the desired state of the keys known now.
    let checks = desired::all_with_known_keys(inv, &inputs.roles, &keys)
        .into_iter()
        .filter(|(h, _)| sessions.contains_key(h))
        .map(|(h, d)| {
            let spec = planner::gather_spec(&d, &inputs.roles);
            (
                h,
                Check {
                    spec,
                    desired: d.state,
                },
            )
        })
        .collect();
    let ran = engine
        .execute(
            &plan,
            sessions,
            checks,
            &keys,
            std::sync::Arc::new(carried),
            &opts.execute,
        )
        .await;
    // Every host of the plan has its outcome now: step 1 ran on exactly the plan's hosts, and
    // those it prepared were executed.
    outcomes.extend(ran);
    Ok(ApplyResult::Applied {
        plan,
        outcomes,
        rotated: rotated.map(Box::new),
    })
}

/// Per host the plan carries preshared keys from: the keys to rotate there first, and the
/// files to read.
fn carry_work(plan: &Plan) -> BTreeMap<HostName, (Vec<String>, Vec<String>)> {
    let mut out: BTreeMap<HostName, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for (from, source) in plan.carried_psks() {
        out.entry(from).or_default().1.push(source);
    }
    for hp in &plan.hosts {
        for c in &hp.changes {
            if let crate::plan::Op::RotatePsk { path } = &c.op {
                out.entry(hp.host.clone()).or_default().0.push(path.clone());
            }
        }
    }
    out
}

/// Vets the keys `learnt` from the hosts (step 1's, or those made in provisioning) and pins
/// the new ones: a changed key is refused unless accepted explicitly, a key another host has
/// is refused outright, and a refused host's lock is released at once.
async fn learn_keys<C: Connector, O: Operator>(
    engine: &Engine<C>,
    inv: &crate::inventory::Inventory,
    opts: &ApplyOptions,
    operator: &O,
    keys: &mut crate::keys::PinnedKeys,
    prepared: &mut BTreeMap<HostName, Result<super::Prepared<C::Remote>, HostError>>,
    learnt: BTreeMap<HostName, WgKey>,
) -> Result<(), ApplyError> {
    let before = keys.clone();
    let mut hub_key_changed = false;
    for (h, key) in learnt {
        match keys.vet(&h, &key, inv, opts.accept_new_keys) {
            Err(why) => {
                if let Some(Ok(p)) = prepared.remove(&h) {
                    engine.release(&h, p).await;
                }
                prepared.insert(h, Err(HostError::KeyRefused(why)));
            }
            Ok(verdict) => {
                hub_key_changed |=
                    verdict == KeyVerdict::Changed && matches!(inv.hosts[&h].role, Role::Hub(_));
                keys.keys.insert(h, key);
            }
        }
    }
    if *keys != before {
        let learnt: BTreeMap<HostName, WgKey> = keys
            .keys
            .iter()
            .filter(|(h, _)| inv.hosts.get(*h).is_some_and(|x| x.public_key.is_none()))
            .map(|(h, k)| (h.clone(), k.clone()))
            .collect();
        operator.pin(&learnt)?;
    }
    if hub_key_changed && let Some(configs) = planner::client_configs(inv) {
        operator.warn(&format!(
            "the hub's key changed: hand out these client configs again: {configs}"
        ));
    }
    Ok(())
}
