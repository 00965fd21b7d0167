//! Remote work on many hosts at once: every host in parallel (bounded), one SSH connection per
//! host, and a failing host never stops the others — its error is its result.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::cli::Common;
use crate::facts::{self, GatherSpec};
use crate::inventory::SshTarget;
use crate::names::HostName;
use crate::planner::Gathered;
use crate::progress::Progress;
use crate::transport::{Session, SshOptions};

/// The ssh options the command line asks for.
pub fn ssh_options(c: &Common) -> SshOptions {
    SshOptions {
        config_file: c.ssh_config.clone(),
        accept_new_host_keys: c.accept_new_host_keys,
        ..SshOptions::default()
    }
}

/// Runs `work` for every host, at most `parallel` at once, and collects the results by host.
pub async fn for_each_host<T, F, Fut>(
    hosts: Vec<HostName>,
    parallel: usize,
    work: F,
) -> BTreeMap<HostName, T>
where
    T: Send + 'static,
    F: Fn(HostName) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
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

/// Gathers one host: one connection, one remote execution, then parse.
pub async fn gather(
    host: HostName,
    target: SshTarget,
    spec: GatherSpec,
    opts: SshOptions,
    progress: Arc<Progress>,
) -> Gathered {
    progress.update(host.as_str(), "connecting");
    let session = Session::connect(&target, &opts)
        .await
        .map_err(|e| e.to_string())?;
    progress.update(host.as_str(), "gathering");
    let result = session.run_script(&facts::gather_script(&spec)).await;
    session.close().await.ok();
    let out = result.map_err(|e| e.to_string())?;
    let mut live = facts::parse(&out.stdout, &spec).map_err(|e| {
        let stderr = out.stderr.lines().last().unwrap_or_default().to_owned();
        if stderr.is_empty() {
            format!("reading facts: {e}")
        } else {
            format!("reading facts: {e} ({stderr})")
        }
    })?;
    live.host = Some(host.clone());
    progress.finish(host.as_str(), "gathered");
    Ok(live)
}
