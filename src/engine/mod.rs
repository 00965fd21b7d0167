//! The engine: all remote work, over the [`Connector`]/[`Remote`] seam. It gathers (one
//! connection, one execution per host), prepares (lock, key, gather), executes a plan's ops
//! (under the guard where the plan says so), confirms, and unlocks — every host in parallel,
//! a failing host never stopping the others. It prints nothing: commands render its results.
//!
//! The same code runs a plan that was just made and one loaded from a file: [`apply::run`]
//! takes a [`apply::PlanSource`] and executes the chosen plan's ops, nothing else.

pub mod apply;
pub mod error;
mod execute;
mod prepare;
mod provision;
pub mod remote;
mod run;
pub mod timings;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

pub use error::{HostError, RollbackSeen};
pub use execute::{ExecuteSettings, HostOutcome};
pub use prepare::{Lock, Prepared};
pub use remote::{Connector, Patience, Remote, SshConnector};
pub use timings::Timings;

use crate::facts::{self, GatherSpec};
use crate::names::HostName;
use crate::progress::Progress;
use crate::state::LiveHost;

/// The remote side of meshctl: a connector, how many hosts at once, and who shows progress.
pub struct Engine<C: Connector> {
    connector: Arc<C>,
    parallel: usize,
    progress: Arc<Progress>,
    timings: Option<Arc<Timings>>,
}

impl<C: Connector> Engine<C> {
    /// An engine working on at most `parallel` hosts at once.
    pub fn new(connector: C, parallel: usize, progress: Arc<Progress>) -> Self {
        Self {
            connector: Arc::new(connector),
            parallel: parallel.max(1),
            progress,
            timings: None,
        }
    }

    /// Records when each phase of each host took place into `timings` (`--timings`).
    pub fn with_timings(mut self, timings: Arc<Timings>) -> Self {
        self.timings = Some(timings);
        self
    }

    /// Gathers every host of `specs`: one connection and one remote execution each.
    pub async fn gather(
        &self,
        specs: &BTreeMap<HostName, GatherSpec>,
    ) -> BTreeMap<HostName, Result<LiveHost, HostError>> {
        let scripts = specs
            .iter()
            .map(|(h, spec)| (h.clone(), facts::gather_script(spec)))
            .collect();
        self.run_each(&scripts, "gathering")
            .await
            .into_iter()
            .map(|(h, out)| {
                let live =
                    out.and_then(|out| parse_gathered(&h, &out.stdout, &out.stderr, &specs[&h]));
                (h, live)
            })
            .collect()
    }

    /// Runs `work` on every host's item, at most `parallel` at once, and collects the results
    /// by host. Each item moves into its host's task (a prepared connection, a script).
    pub(crate) async fn for_each_host<I, T, F, Fut>(
        &self,
        items: BTreeMap<HostName, I>,
        work: F,
    ) -> BTreeMap<HostName, T>
    where
        T: Send + 'static,
        F: Fn(HostName, I) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let limit = Arc::new(Semaphore::new(self.parallel));
        let mut tasks = Vec::new();
        for (h, item) in items {
            // A host's work is made only once a slot is free (in the hosts' order, as the
            // semaphore is fair): made all at once, every host's future would be held from the
            // start, so `--parallel` would not bound the memory.
            let permit = limit.clone().acquire_owned().await.expect("semaphore open");
            let fut = work(h.clone(), item);
            tasks.push((
                h,
                tokio::spawn(async move {
                    let _permit = permit;
                    fut.await
                }),
            ));
        }
        let mut out = BTreeMap::new();
        for (h, t) in tasks {
            out.insert(h, t.await.expect("host task does not panic"));
        }
        out
    }
}

/// Parses a gather's output into the host's live state (the one place that does, for plan,
/// prepare and the check after apply).
pub(crate) fn parse_gathered(
    host: &HostName,
    stdout: &str,
    stderr: &str,
    spec: &GatherSpec,
) -> Result<LiveHost, HostError> {
    let mut live = facts::parse(stdout, spec).map_err(|source| HostError::Facts {
        source,
        stderr: stderr
            .lines()
            .last()
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
    })?;
    live.host = Some(host.clone());
    Ok(live)
}
