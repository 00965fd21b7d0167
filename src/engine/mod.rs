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
pub mod remote;
mod run;

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

use crate::facts::{self, GatherSpec};
use crate::names::HostName;
use crate::progress::Progress;
use crate::state::LiveHost;

/// The remote side of meshctl: a connector, how many hosts at once, and who shows progress.
pub struct Engine<C: Connector> {
    connector: Arc<C>,
    parallel: usize,
    progress: Arc<Progress>,
}

impl<C: Connector> Engine<C> {
    /// An engine working on at most `parallel` hosts at once.
    pub fn new(connector: C, parallel: usize, progress: Arc<Progress>) -> Self {
        Self {
            connector: Arc::new(connector),
            parallel: parallel.max(1),
            progress,
        }
    }

    /// Gathers every host of `specs`: one connection and one remote execution each.
    pub async fn gather(
        &self,
        specs: &BTreeMap<HostName, GatherSpec>,
    ) -> BTreeMap<HostName, Result<LiveHost, HostError>> {
        let connector = self.connector.clone();
        let progress = self.progress.clone();
        self.for_each_host(specs.keys().cloned().collect(), |h| {
            let (connector, progress, spec) =
                (connector.clone(), progress.clone(), specs[&h].clone());
            async move {
                progress.update(h.as_str(), "connecting");
                let remote = connector.connect(&h, Patience::Normal).await?;
                progress.update(h.as_str(), "gathering");
                let out = remote.run(&facts::gather_script(&spec)).await;
                remote.close().await;
                let out = out?;
                let live = parse_gathered(&h, &out.stdout, &out.stderr, &spec)?;
                progress.finish(h.as_str(), "gathered");
                Ok(live)
            }
        })
        .await
    }

    /// Runs `work` for every host, at most `parallel` at once, and collects the results by host.
    pub(crate) async fn for_each_host<T, F, Fut>(
        &self,
        hosts: Vec<HostName>,
        work: F,
    ) -> BTreeMap<HostName, T>
    where
        T: Send + 'static,
        F: Fn(HostName) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let limit = Arc::new(Semaphore::new(self.parallel));
        let mut tasks = Vec::new();
        for h in hosts {
            let fut = work(h.clone());
            let limit = limit.clone();
            tasks.push((
                h,
                tokio::spawn(async move {
                    let _permit = limit.acquire_owned().await.expect("semaphore open");
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
