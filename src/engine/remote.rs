//! The one seam between the engine and the hosts: a [`Connector`] opens a [`Remote`] per host,
//! a `Remote` runs one POSIX sh script per call. Production uses SSH ([`SshConnector`]); the
//! engine's unit tests use an in-memory fake that answers scripted outputs, so every failure
//! path of the orchestration is tested without root, SSH or a lab.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::inventory::SshTarget;
use crate::names::HostName;
use crate::transport::{Mark, RemoteOutput, Session, SshOptions, TransportError};

/// One open connection to one host.
pub trait Remote: Send + Sync + 'static {
    /// Runs `script` as root on the host: one remote execution, the script on stdin.
    fn run(
        &self,
        script: &str,
    ) -> impl Future<Output = Result<RemoteOutput, TransportError>> + Send;
    /// [`Remote::run`], and when each marker line (`@@meshctl …`) of its stdout arrived, for
    /// `--timings`. By default every marker is stamped with the moment the output was complete.
    fn run_marked(
        &self,
        script: &str,
    ) -> impl Future<Output = Result<(RemoteOutput, Vec<Mark>), TransportError>> + Send {
        async move {
            let out = self.run(script).await?;
            let at = std::time::Instant::now();
            let marks = out
                .stdout
                .lines()
                .filter(|l| l.starts_with(crate::scripts::steps::MARK_PREFIX))
                .map(|l| Mark {
                    at,
                    line: l.to_owned(),
                })
                .collect();
            Ok((out, marks))
        }
    }
    /// Closes the connection; errors are of no interest (the work is done or given up).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// How long a connection attempt may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// The configured connect timeout.
    Normal,
    /// A bounded attempt: the guard's confirmation must come well inside its timer.
    AtMost(Duration),
}

/// Opens connections to hosts by their inventory name.
pub trait Connector: Send + Sync + 'static {
    /// The connection type.
    type Remote: Remote;
    /// Opens one connection to `host`.
    fn connect(
        &self,
        host: &HostName,
        patience: Patience,
    ) -> impl Future<Output = Result<Self::Remote, TransportError>> + Send;
}

/// The production connector: the system's `ssh`, one control master per host.
#[derive(Debug, Clone)]
pub struct SshConnector {
    targets: BTreeMap<HostName, SshTarget>,
    opts: SshOptions,
}

impl SshConnector {
    /// A connector for the given hosts' SSH targets.
    pub fn new(targets: BTreeMap<HostName, SshTarget>, opts: SshOptions) -> Self {
        Self { targets, opts }
    }
}

impl Connector for SshConnector {
    type Remote = Session;

    async fn connect(
        &self,
        host: &HostName,
        patience: Patience,
    ) -> Result<Session, TransportError> {
        let Some(target) = self.targets.get(host) else {
            return Err(TransportError::Connect {
                host: host.to_string(),
                reason: "the host has no `ssh:` target".into(),
            });
        };
        let mut opts = self.opts.clone();
        if let Patience::AtMost(d) = patience {
            opts.connect_timeout = d;
        }
        Session::connect(target, &opts).await
    }
}

impl Remote for Session {
    async fn run(&self, script: &str) -> Result<RemoteOutput, TransportError> {
        self.run_script(script).await
    }

    async fn run_marked(&self, script: &str) -> Result<(RemoteOutput, Vec<Mark>), TransportError> {
        self.run_script_marked(script).await
    }

    async fn close(self) {
        Session::close(self).await.ok();
    }
}
