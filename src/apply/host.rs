//! One host's part of an apply: step 1 (`prepare`: lock, key, gather) and steps 2 and 3
//! (`apply_host`: the change script — under the confirm-or-roll-back guard where the host is
//! reached through the VPN — then gather and unlock). `commands::apply` runs these for every
//! host in parallel and decides nothing per host itself.

use std::sync::Arc;

use super::{guard, script};
use crate::desired::Desired;
use crate::facts::{self, GatherSpec};
use crate::keys::PinnedKeys;
use crate::names::{HostName, WgKey};
use crate::progress::Progress;
use crate::transport::Session;

/// One host's connection and what step 1 learnt.
pub(crate) struct Prepared {
    pub(crate) session: Session,
    pub(crate) public_key: WgKey,
    pub(crate) live: crate::state::LiveHost,
    /// Where the host is, to reach it again when this connection is gone.
    pub(crate) target: crate::inventory::SshTarget,
    /// How to connect.
    pub(crate) opts: crate::transport::SshOptions,
}

/// What steps 2 and 3 need to know about a host besides its plan.
pub(crate) struct HostJob {
    pub(crate) desired: Desired,
    pub(crate) keys: PinnedKeys,
    /// Set for a host reached through the network meshctl manages.
    pub(crate) guard: Option<Guard>,
}

pub(crate) struct Guard {
    pub(crate) run_id: String,
    pub(crate) timeout_secs: u64,
    pub(crate) target: crate::inventory::SshTarget,
    pub(crate) opts: crate::transport::SshOptions,
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
pub(crate) async fn apply_host(
    prepared: Prepared,
    hp: crate::plan::HostPlan,
    spec: GatherSpec,
    job: HostJob,
) -> Result<usize, String> {
    let session = prepared.session;
    let gather = facts::gather_script(&spec);
    let guard = job.guard.filter(|_| !hp.changes.is_empty());
    let mut error = None;
    // Whether the connection itself failed (not a step): then a new one releases the lock.
    let mut connection_lost = false;
    if !hp.changes.is_empty() {
        let mut s = String::new();
        if let Some(g) = &guard {
            let rollback = guard::inverse(&prepared.live, &job.desired.state, &job.keys);
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
        s.push_str(&script::changes(&hp.changes, script::OnFailure::Stop));
        if let Some(g) = &guard {
            s.push_str(&guard::applied(&g.run_id));
        }
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
            Ok(Err(e)) => {
                connection_lost = true;
                error = Some(format!("the connection failed while applying: {e}"));
            }
            Err(_) => {
                connection_lost = true;
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
            // The old connection is closed in the background: a cut one may take a while.
            tokio::spawn(async move { session.close().await.ok() });
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
            match confirmed {
                // Confirmed: the changes ran to their end, whatever this connection saw.
                Ok(out) if out.success() => {
                    if connection_lost {
                        error = None;
                    }
                    Ok(out)
                }
                other => {
                    let why = match other {
                        Ok(out) => out.stderr.trim().to_owned(),
                        Err(e) => e,
                    };
                    return Err(rolled_back(g, why, error).await);
                }
            }
        }
        // The connection died while the change script ran: the script may still be running
        // on the host, so its lock stays (a new apply must not run beside it).
        None if connection_lost => {
            tokio::spawn(async move { session.close().await.ok() });
            let e = error.take().unwrap_or_default();
            return Err(format!(
                "{e}; the host may still be applying, so its lock stays: once it is done, run again with --break-lock"
            ));
        }
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
    let live = facts::parse(&out.stdout, &spec).map_err(|e| format!("confirming: {e}"))?;
    Ok(crate::diff::diff_host(&job.desired.state, &live, &job.keys)
        .changes
        .len())
}

/// A guarded host could not be confirmed: wait for its timer, then check that it rolled back.
async fn rolled_back(g: &Guard, why: String, step_error: Option<String>) -> String {
    if why.contains("never armed") {
        return format!(
            "the rollback guard could not be armed, so nothing was changed ({})",
            step_error.unwrap_or(why)
        );
    }
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
pub(crate) async fn prepare(
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
    let read = WgKey::parse(key_line)
        .map_err(|e| format!("reading the host's public key: {e}"))
        .and_then(|k| {
            facts::parse(gather_out, &spec)
                .map(|l| (k, l))
                .map_err(|e| format!("reading facts: {e}"))
        });
    let (public_key, mut live) = match read {
        Ok(r) => r,
        Err(e) => {
            // The lock was taken: give it back before giving up on the host.
            session.run_script(&script::unlock()).await.ok();
            session.close().await.ok();
            return Err(e);
        }
    };
    live.host = Some(host.clone());
    progress.finish(host.as_str(), "locked and gathered");
    Ok(Prepared {
        session,
        public_key,
        live,
        target,
        opts,
    })
}
