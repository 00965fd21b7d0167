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

    /// Gathers every host of `specs`: one connection and one remote execution each. A host's
    /// script is built in its own task once it has a slot, and its output is parsed there, so
    /// only the hosts being worked on hold a script or raw output: the memory a gather needs
    /// does not grow with the number of hosts beyond `--parallel` of them.
    pub async fn gather(
        &self,
        specs: BTreeMap<HostName, GatherSpec>,
    ) -> BTreeMap<HostName, Result<LiveHost, HostError>> {
        let (connector, progress) = (self.connector.clone(), self.progress.clone());
        self.for_each_host(specs, |h, spec| {
            let (connector, progress) = (connector.clone(), progress.clone());
            async move {
                let out = run::run_one(&*connector, &progress, &h, "gathering", || {
                    facts::gather_script(&spec)
                })
                .await?;
                parse_gathered(&h, &out.stdout, &out.stderr, &spec)
            }
        })
        .await
    }

    /// Runs `work` on every host's item, at most `parallel` at once, and collects the results
    /// by host. Each item moves into its host's task (a prepared connection, a script).
    ///
    /// A finished host's task is collected as soon as the next one is started (and the rest
    /// as they finish), not in the hosts' order at the end: a finished task's memory (its
    /// future's state, as large as the largest await point) is held until it is collected.
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
        let mut tasks = tokio::task::JoinSet::new();
        let mut out = BTreeMap::new();
        for (h, item) in items {
            // A host's work is made only once a slot is free (in the hosts' order, as the
            // semaphore is fair): made all at once, every host's future would be held from the
            // start, so `--parallel` would not bound the memory.
            let permit = limit.clone().acquire_owned().await.expect("semaphore open");
            while let Some(done) = tasks.try_join_next() {
                collect(&mut out, done);
            }
            let fut = work(h.clone(), item);
            tasks.spawn(async move {
                let _permit = permit;
                (h, fut.await)
            });
        }
        while let Some(done) = tasks.join_next().await {
            collect(&mut out, done);
        }
        out
    }
}

/// Files a finished host task's result under its host.
fn collect<T>(
    out: &mut BTreeMap<HostName, T>,
    done: Result<(HostName, T), tokio::task::JoinError>,
) {
    let (h, t) = done.expect("host task does not panic");
    out.insert(h, t);
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
