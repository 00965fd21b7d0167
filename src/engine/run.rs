//! Running one script per host and handing back what it printed: the engine's capability for
//! read-only commands (`status`, `verify`) whose scripts and parsers live in the core. One
//! connection and one remote execution per host, every host in parallel, a failing host never
//! stopping the others.

use std::collections::BTreeMap;

use super::{Connector, Engine, HostError, Patience, Remote};
use crate::names::HostName;
use crate::progress::Progress;
use crate::transport::RemoteOutput;

impl<C: Connector> Engine<C> {
    /// Runs `scripts[host]` on every host of `scripts`: one connection and one remote execution
    /// each. A host's result is its output (whatever its exit status: the caller's parser
    /// decides), or why it could not be reached or run.
    pub async fn run_each(
        &self,
        scripts: BTreeMap<HostName, String>,
        doing: &'static str,
    ) -> BTreeMap<HostName, Result<RemoteOutput, HostError>> {
        let (connector, progress) = (self.connector.clone(), self.progress.clone());
        self.for_each_host(scripts, |h, script| {
            let (connector, progress) = (connector.clone(), progress.clone());
            async move { run_one(&*connector, &progress, &h, doing, || script).await }
        })
        .await
    }
}

/// One host's connection and its one execution of the script `make_script` builds — once the
/// connection is up, so a host still connecting holds no script.
pub(super) async fn run_one<C: Connector>(
    connector: &C,
    progress: &Progress,
    h: &HostName,
    doing: &'static str,
    make_script: impl FnOnce() -> String,
) -> Result<RemoteOutput, HostError> {
    progress.update(h.as_str(), "connecting");
    let remote = connector.connect(h, Patience::Normal).await?;
    progress.update(h.as_str(), doing);
    let script = make_script();
    let out = remote.run(&script).await;
    drop(script);
    remote.close().await;
    let out = out?;
    progress.finish(h.as_str(), "done");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::super::fake::{self, Event, FakeConnector, FakeHost, Kind};
    use super::super::{Engine, HostError};
    use crate::names::HostName;
    use crate::progress::Progress;

    fn echo() -> FakeHost {
        FakeHost {
            refuse_connects: vec![],
            respond: Arc::new(|_, s, _| fake::ok(format!("ran: {s}"))),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_finishing_out_of_order_keep_their_own_results_and_parallel_bounds_them() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let engine = Engine::new(FakeConnector::default(), 2, Arc::new(Progress::quiet()));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // The first hosts take longest, so later ones finish first.
        let items: BTreeMap<HostName, u64> = (1..=6)
            .map(|i| (HostName::parse(&format!("h{i}")).unwrap(), 70 - 10 * i))
            .collect();
        let out = engine
            .for_each_host(items, |h, ms| {
                let (now, most) = (now.clone(), most.clone());
                async move {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(running, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    format!("{h} after {ms} ms")
                }
            })
            .await;
        assert_eq!(out.len(), 6);
        for i in 1..=6u64 {
            let h = HostName::parse(&format!("h{i}")).unwrap();
            assert_eq!(out[&h], format!("h{i} after {} ms", 70 - 10 * i));
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "at most --parallel hosts at once"
        );
    }

    #[tokio::test]
    async fn one_connection_and_one_execution_per_host_and_a_failing_host_stays_alone() {
        let c = FakeConnector::with([
            ("vps", echo()),
            (
                "nas",
                FakeHost {
                    refuse_connects: vec![0],
                    ..echo()
                },
            ),
            (
                "laptop",
                FakeHost {
                    refuse_connects: vec![],
                    respond: Arc::new(|_, _, _| fake::lost("laptop")),
                },
            ),
        ]);
        let engine = Engine::new(c.clone(), 2, Arc::new(Progress::quiet()));
        let scripts: BTreeMap<HostName, String> = ["vps", "nas", "laptop"]
            .into_iter()
            .map(|h| (HostName::parse(h).unwrap(), format!("echo {h}")))
            .collect();
        let out = engine.run_each(scripts, "checking").await;
        assert_eq!(out.len(), 3);
        let vps = out[&HostName::parse("vps").unwrap()].as_ref().unwrap();
        assert_eq!(vps.stdout, "ran: echo vps", "each host gets its own script");
        assert!(matches!(
            out[&HostName::parse("nas").unwrap()],
            Err(HostError::Transport(_))
        ));
        assert!(matches!(
            out[&HostName::parse("laptop").unwrap()],
            Err(HostError::Transport(_))
        ));
        for h in ["vps", "laptop"] {
            assert_eq!(c.connections(h), 1, "{h}");
            assert_eq!(c.kinds(h), vec![Kind::Gather], "{h}: one execution");
        }
        assert_eq!(c.connections("nas"), 0);
        assert!(
            !c.log()
                .contains(&Event::Run(HostName::parse("nas").unwrap(), Kind::Gather))
        );
    }
}
