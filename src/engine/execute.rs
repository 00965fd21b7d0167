//! Apply's steps 2 and 3 on every host: the plan's ops as one change script — under the
//! confirm-or-roll-back guard where the plan carries a rollback — then a gather that checks
//! convergence, and the unlock. What runs is exactly the plan's ops.

use std::collections::BTreeMap;
use std::time::Duration;

use super::timings::{self, Timings};
use super::{
    Connector, Engine, HostError, Patience, Prepared, Remote, RollbackSeen, parse_gathered,
};
use crate::facts::{self, GatherSpec};
use crate::keys::PinnedKeys;
use crate::names::HostName;
use crate::plan::{HostPlan, Plan};
use crate::scripts::{guard, steps};
use crate::state::HostState;
use crate::transport::RemoteOutput;

/// What the run needs besides the plan: the guard's name and timer, and what to check after.
#[derive(Debug, Clone)]
pub struct ExecuteSettings {
    /// Keeps this run's guards apart from other runs' on the same host.
    pub run_id: String,
    /// How long a guarded host waits for its confirmation before it rolls back.
    pub guard_timeout_secs: u64,
}

/// How one host's apply ended.
#[derive(Debug)]
pub enum HostOutcome {
    /// Every change applied and the host gathered in sync.
    Converged {
        /// How many changes the plan had for it.
        applied: usize,
    },
    /// The script ran to its end, but the gather after it still sees changes.
    NotConverged {
        /// How many.
        left: usize,
    },
    /// It failed (in step 1, or here).
    Failed(HostError),
}

impl HostOutcome {
    /// The outcome as the summary shows it.
    pub fn result(&self) -> crate::plan::HostResult {
        use crate::plan::HostResult;
        match self {
            HostOutcome::Converged { applied } => HostResult::Converged { applied: *applied },
            HostOutcome::NotConverged { left } => HostResult::NotConverged { left: *left },
            HostOutcome::Failed(e) => HostResult::Failed {
                error: e.to_string(),
            },
        }
    }
}

/// What the check after apply compares with: a host's gather spec and desired state.
pub struct Check {
    /// What to gather.
    pub spec: GatherSpec,
    /// What it should be now.
    pub desired: HostState,
}

impl<C: Connector> Engine<C> {
    /// Steps 2 and 3 on every prepared host of `plan`, in parallel. Hosts not in `prepared`
    /// are not touched.
    pub async fn execute(
        &self,
        plan: &Plan,
        prepared: BTreeMap<HostName, Prepared<C::Remote>>,
        mut checks: BTreeMap<HostName, Check>,
        keys: &PinnedKeys,
        carried: std::sync::Arc<crate::psk::Carried>,
        settings: &ExecuteSettings,
    ) -> BTreeMap<HostName, HostOutcome> {
        let by_host: BTreeMap<HostName, HostPlan> = plan
            .hosts
            .iter()
            .map(|h| (h.host.clone(), h.clone()))
            .collect();
        let mut jobs: BTreeMap<HostName, (Prepared<C::Remote>, HostPlan, Check)> = BTreeMap::new();
        for (h, p) in prepared {
            if let (Some(hp), Some(check)) = (by_host.get(&h), checks.remove(&h)) {
                jobs.insert(h, (p, hp.clone(), check));
            }
        }
        // A key rotation: the hub's change script first, the others the moment it is done
        // (a peer offering a key the hub does not hold yet, or the hub's new key to a peer
        // that does not know it, waits WireGuard's 5 s before the next handshake attempt).
        let rotating = plan
            .hosts
            .iter()
            .flat_map(|h| &h.changes)
            .any(|c| matches!(c.op, crate::plan::Op::SwitchKey { .. }));
        let (first, rest): (BTreeMap<_, _>, BTreeMap<_, _>) = jobs
            .into_iter()
            .partition(|(_, (_, hp, _))| rotating && hp.role == "hub");
        let (open, gate) = tokio::sync::watch::channel(first.is_empty());
        let open = std::sync::Arc::new(open);
        // Shared, not copied into every host's task: the pins name every host.
        let run = std::sync::Arc::new(Run {
            keys: keys.clone(),
            carried,
            settings: settings.clone(),
        });
        let (a, b) = tokio::join!(
            self.apply_jobs(first, &run, Gate::Opens(open)),
            self.apply_jobs(rest, &run, Gate::Waits(gate)),
        );
        a.into_iter().chain(b).collect()
    }

    /// Steps 2 and 3 on each of `jobs`, in parallel, behind or in front of `gate`.
    async fn apply_jobs(
        &self,
        jobs: BTreeMap<HostName, (Prepared<C::Remote>, HostPlan, Check)>,
        run: &std::sync::Arc<Run>,
        gate: Gate,
    ) -> BTreeMap<HostName, HostOutcome> {
        let connector = self.connector.clone();
        let progress = self.progress.clone();
        let timings = self.timings.clone();
        self.for_each_host(jobs, |h, (p, hp, check)| {
            let (connector, progress, run, gate, timings) = (
                connector.clone(),
                progress.clone(),
                run.clone(),
                gate.clone(),
                timings.clone(),
            );
            async move {
                progress.update(h.as_str(), "applying");
                let ctx = HostRun {
                    host: &h,
                    run: &run,
                    timings: timings.as_deref(),
                };
                let r = apply_host(&*connector, &ctx, p, &hp, &check, &gate).await;
                let outcome = match r {
                    Ok(0) => HostOutcome::Converged {
                        applied: hp.changes.len(),
                    },
                    Ok(left) => HostOutcome::NotConverged { left },
                    Err(e) => HostOutcome::Failed(e),
                };
                progress.finish(h.as_str(), "done");
                outcome
            }
        })
        .await
    }
}

/// What every host's steps 2 and 3 share: the pins (to name peers in the check after apply),
/// the preshared keys the changes carry, and the settings.
struct Run {
    keys: PinnedKeys,
    carried: std::sync::Arc<crate::psk::Carried>,
    settings: ExecuteSettings,
}

/// The order of a rotation's change scripts: the hub's opens the gate when it is done, the
/// others wait for it (an open gate for everybody otherwise).
#[derive(Clone)]
enum Gate {
    Opens(std::sync::Arc<tokio::sync::watch::Sender<bool>>),
    Waits(tokio::sync::watch::Receiver<bool>),
}

impl Gate {
    async fn pass(&self) {
        if let Gate::Waits(w) = self {
            let mut w = w.clone();
            // A dropped sender (the hub's task ended) opens it too.
            let _ = w.wait_for(|open| *open).await;
        }
    }

    fn open(&self) {
        if let Gate::Opens(o) = self {
            o.send_replace(true);
        }
    }
}

/// Describes a failed change script from its step markers, naming the steps by the plan's
/// display text (only for the message).
fn step_failure(out: &RemoteOutput, hp: &HostPlan) -> HostError {
    let label = |i: usize| {
        hp.changes
            .get(i)
            .map(|c| format!("{} {}", c.action.symbol(), c.resource))
            .unwrap_or_else(|| format!("step {i}"))
    };
    let (started, failed) = steps::progress(&out.stdout);
    let failed = failed.or_else(|| started.last().copied());
    let applied = started
        .iter()
        .filter(|i| Some(**i) != failed)
        .map(|i| label(*i))
        .collect();
    let last = |text: &str| {
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with(steps::MARK_PREFIX))
            .map(str::to_owned)
    };
    let detail = last(&out.stderr)
        .or_else(|| last(&out.stdout))
        .unwrap_or_default();
    HostError::Step {
        failed: failed.map_or_else(|| "before the first step".into(), label),
        detail,
        applied,
    }
}

/// Splits the output of [`steps::changes_then_finish`] into the change script's part and the
/// gather's. On stdout the gather starts at the last line that is its header (a step's own
/// output comes before it; the gather frames what it reads, so no line of its own can be
/// that), on stderr after the last [`steps::MARK_FINISH`]. `None`: the gather did not start.
fn split_finished(out: &RemoteOutput) -> (RemoteOutput, Option<RemoteOutput>) {
    let at_line = |text: &str, line: &str| -> Option<usize> {
        if let Some(i) = text.rfind(&format!("\n{line}\n")) {
            return Some(i + 1);
        }
        (text.starts_with(line) && text[line.len()..].starts_with('\n')).then_some(0)
    };
    let (stderr, gather_stderr) = match at_line(&out.stderr, steps::MARK_FINISH) {
        Some(i) => (
            out.stderr[..i].to_owned(),
            out.stderr[i + steps::MARK_FINISH.len() + 1..].to_owned(),
        ),
        None => (out.stderr.clone(), String::new()),
    };
    let (stdout, gathered) = match at_line(&out.stdout, crate::facts::HEADER) {
        Some(i) => (out.stdout[..i].to_owned(), Some(out.stdout[i..].to_owned())),
        None => (out.stdout.clone(), None),
    };
    let gathered = gathered.map(|stdout| RemoteOutput {
        status: out.status,
        stdout,
        stderr: gather_stderr,
    });
    (
        RemoteOutput {
            status: out.status,
            stdout,
            stderr,
        },
        gathered,
    )
}

/// Who steps 2 and 3 run on, with which settings, timed where.
struct HostRun<'a> {
    host: &'a HostName,
    run: &'a Run,
    timings: Option<&'a Timings>,
}

/// The `--timings` name of the change script's section that a marker line starts: a step (by
/// the plan's own text for it) or the script's end.
fn step_label(hp: &HostPlan, line: &str) -> Option<String> {
    if line == steps::MARK_DONE {
        return Some("changes: end".to_owned());
    }
    let i: usize = line.strip_prefix(steps::MARK_STEP)?.trim().parse().ok()?;
    let what = hp
        .changes
        .get(i)
        .map(|c| format!("{} {}", c.action.symbol(), c.resource))
        .unwrap_or_default();
    Some(format!("step {i}: {what}"))
}

/// Steps 2 and 3 on one host; `Ok(n)`: n changes remain after apply (0 = converged).
async fn apply_host<C: Connector>(
    connector: &C,
    ctx: &HostRun<'_>,
    prepared: Prepared<C::Remote>,
    hp: &HostPlan,
    check: &Check,
    gate: &Gate,
) -> Result<usize, HostError> {
    let (host, timings) = (ctx.host, ctx.timings);
    let (keys, carried, settings) = (&ctx.run.keys, &*ctx.run.carried, &ctx.run.settings);
    gate.pass().await;
    let remote = prepared.remote;
    // Built where it is used, not held for the whole run: every host in flight would carry a
    // second copy of it beside its change script (which has one inside).
    let gather = || facts::gather_script(&check.spec);
    let guard = hp.guard.as_ref().filter(|_| !hp.changes.is_empty());
    let timeout = settings.guard_timeout_secs.max(5);
    let mut error = None;
    // Whether the connection itself failed (not a step).
    let mut connection_lost = false;
    // An unguarded host gathers and unlocks in the change script's own execution.
    let mut finished_with_changes = None;
    if !hp.changes.is_empty() {
        let mut s = String::new();
        if let Some(g) = guard {
            s.push_str(&guard::arm(&settings.run_id, &hp.changes, g, timeout));
        }
        s.push_str(&steps::changes_carrying(
            &hp.changes,
            steps::OnFailure::Stop,
            carried,
        ));
        if guard.is_some() {
            s.push_str(&guard::applied(&settings.run_id));
        } else {
            s = steps::changes_then_finish(&s, &gather());
        }
        // A guarded change may cut this very connection: don't wait for it past half the
        // guard's time, the confirmation over a new connection decides.
        let wait = match guard {
            Some(_) => Duration::from_secs(timeout / 2),
            None => Duration::from_secs(24 * 3600),
        };
        // The gather's own end marker is the change script's too: after its header, none
        // is a step's.
        let gathering = std::sync::atomic::AtomicBool::new(false);
        let run = timings::run(&remote, &s, timings, host, "changes: start", |l| {
            if l == crate::facts::HEADER {
                gathering.store(true, std::sync::atomic::Ordering::Relaxed);
                return Some("final gather".to_owned());
            }
            if gathering.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            step_label(hp, l)
        });
        let ran = tokio::time::timeout(wait, run).await;
        gate.open();
        match ran {
            Ok(Ok(out)) if guard.is_none() => {
                let (changed, gathered) = split_finished(&out);
                if !out.success() {
                    error = Some(step_failure(&changed, hp));
                }
                finished_with_changes = Some(gathered.unwrap_or(RemoteOutput {
                    stdout: String::new(),
                    ..changed
                }));
            }
            Ok(Ok(out)) if out.success() => {}
            Ok(Ok(out)) => error = Some(step_failure(&out, hp)),
            Ok(Err(source)) => {
                connection_lost = true;
                error = Some(HostError::LostWhileApplying { source });
            }
            Err(_) => {
                connection_lost = true;
                error = Some(HostError::NoAnswer {
                    secs: wait.as_secs(),
                });
            }
        }
    }

    gate.open();

    let finished = match guard {
        // Confirm over a new connection: if the change cut meshctl off, the host rolls back.
        Some(_) => {
            // The old connection is closed in the background: a cut one may take a while.
            tokio::spawn(remote.close());
            let patience = Patience::AtMost(Duration::from_secs((timeout / 3).clamp(2, 10)));
            let confirmed = match connector.connect(host, patience).await {
                Ok(fresh) => {
                    let confirm = guard::confirm(&settings.run_id, &gather());
                    let r =
                        timings::run(&fresh, &confirm, timings, host, "confirm", |_| None).await;
                    fresh.close().await;
                    r.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match confirmed {
                // Confirmed: the changes ran to their end, whatever this connection saw.
                Ok(out) if out.success() => {
                    if connection_lost {
                        error = None;
                    }
                    out
                }
                Ok(out) if out.status == Some(guard::EXIT_NEVER_ARMED) => {
                    let detail = match error {
                        Some(e) => e.to_string(),
                        None => out.stderr.trim().to_owned(),
                    };
                    return Err(HostError::GuardNotArmed { detail });
                }
                other => {
                    let why = match other {
                        Ok(out) => out.stderr.trim().to_owned(),
                        Err(e) => e,
                    };
                    let after = rolled_back(connector, host, &settings.run_id, timeout).await;
                    // Under the guard a cut connection is no reason to keep the lock: the
                    // rollback releases it.
                    let step = error.map(|e| match e {
                        HostError::LostWhileApplying { source } => Box::new(HostError::CutOff(
                            format!("the connection failed while applying: {source}"),
                        )),
                        HostError::NoAnswer { secs } => Box::new(HostError::CutOff(format!(
                            "no answer while applying within {secs}s"
                        ))),
                        e => Box::new(e),
                    });
                    return Err(HostError::NotConfirmed { why, step, after });
                }
            }
        }
        // The connection died while the change script ran: the script may still be running
        // on the host, so its lock stays (a new apply must not run beside it).
        None if connection_lost => {
            tokio::spawn(remote.close());
            return Err(error.expect("a lost connection is an error"));
        }
        None if finished_with_changes.is_some() => {
            remote.close().await;
            finished_with_changes.expect("checked: the change script gathered")
        }
        None => {
            let finish = steps::finish(&gather());
            let r = timings::run(&remote, &finish, timings, host, "final gather", |_| None).await;
            remote.close().await;
            r.map_err(|e| HostError::Confirming(Box::new(e.into())))?
        }
    };
    if let Some(e) = error {
        return Err(e);
    }
    let live = parse_gathered(host, &finished.stdout, &finished.stderr, &check.spec)
        .map_err(|e| HostError::Confirming(Box::new(e)))?;
    Ok(crate::diff::diff_host(&check.desired, &live, keys)
        .changes
        .len())
}

/// A guarded host could not be confirmed: wait for its timer, then ask whether it rolled back.
async fn rolled_back<C: Connector>(
    connector: &C,
    host: &HostName,
    run_id: &str,
    timeout_secs: u64,
) -> RollbackSeen {
    tokio::time::sleep(Duration::from_secs(timeout_secs + 3)).await;
    let answer = match connector.connect(host, Patience::Normal).await {
        Ok(s) => {
            let r = s.run(&guard::status(run_id)).await;
            s.close().await;
            r.ok().map(|o| o.stdout)
        }
        Err(_) => None,
    };
    match answer
        .as_deref()
        .map(|o| o.lines().next().unwrap_or_default())
    {
        Some(guard::STATUS_ROLLED_BACK) => RollbackSeen::RolledBack { secs: timeout_secs },
        Some(other) => RollbackSeen::Other(other.to_owned()),
        None => RollbackSeen::NoAnswer { secs: timeout_secs },
    }
}
