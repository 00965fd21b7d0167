//! Apply's step 1 on every host: take the host's lock, make its key where there is none,
//! gather — one execution over the connection that the later steps reuse. And the way back
//! when apply stops before changing anything: release the locks.

use std::collections::BTreeMap;

use super::timings::{self, Timings};
use super::{Connector, Engine, HostError, Patience, Remote, parse_gathered};
use crate::facts::{self, GatherSpec};
use crate::names::{HostName, WgKey};
use crate::scripts::steps;
use crate::state::LiveHost;

/// Who takes the hosts' locks, and whether a dead run's lock may be broken.
#[derive(Debug, Clone)]
pub struct Lock {
    /// Written into the lock, shown to a second apply that finds it.
    pub holder: String,
    /// `--break-lock`: take the lock even when it is held (and disarm that run's guard).
    pub break_lock: bool,
}

/// One host after step 1: its connection (locked), its public key and its live state.
pub struct Prepared<R> {
    pub(crate) remote: R,
    /// The host's public key, as it reported it; `None`: it has no `wg` yet, the key is made
    /// after its packages are installed (see `provision`).
    pub public_key: Option<WgKey>,
    /// The live state gathered under the lock (apply moves it out to make the plan).
    pub live: LiveHost,
}

impl<C: Connector> Engine<C> {
    /// Step 1 on every host of `specs`, in parallel.
    pub async fn prepare(
        &self,
        specs: &BTreeMap<HostName, GatherSpec>,
        work: &BTreeMap<HostName, steps::KeyWork>,
        lock: &Lock,
    ) -> BTreeMap<HostName, Result<Prepared<C::Remote>, HostError>> {
        let connector = self.connector.clone();
        let progress = self.progress.clone();
        let timings = self.timings.clone();
        let items: BTreeMap<HostName, (GatherSpec, steps::KeyWork)> = specs
            .iter()
            .map(|(h, s)| {
                (
                    h.clone(),
                    (s.clone(), work.get(h).cloned().unwrap_or_default()),
                )
            })
            .collect();
        self.for_each_host(items, |h, (spec, work)| {
            let (connector, progress, lock, timings) = (
                connector.clone(),
                progress.clone(),
                lock.clone(),
                timings.clone(),
            );
            async move {
                progress.update(h.as_str(), "connecting");
                let started = std::time::Instant::now();
                let remote = connector.connect(&h, Patience::Normal).await;
                if let Some(t) = &timings {
                    t.span(&h, "connect", started, std::time::Instant::now());
                }
                let remote = remote?;
                progress.update(h.as_str(), "locking and gathering");
                let result =
                    prepare_one(&h, &remote, &spec, &work, &lock, timings.as_deref()).await;
                match result {
                    Ok((public_key, live)) => {
                        progress.finish(h.as_str(), "locked and gathered");
                        Ok(Prepared {
                            remote,
                            public_key,
                            live,
                        })
                    }
                    Err(e) => {
                        remote.close().await;
                        Err(e)
                    }
                }
            }
        })
        .await
    }

    /// Releases one host's lock taken in step 1 and closes its connection. When that
    /// connection is gone (Ctrl-C at the prompt reaches the ssh processes too), a new one
    /// releases the lock.
    pub async fn release(&self, host: &HostName, p: Prepared<C::Remote>) {
        let unlock = steps::unlock();
        if p.remote.run(&unlock).await.is_err()
            && let Ok(fresh) = self.connector.connect(host, Patience::Normal).await
        {
            fresh.run(&unlock).await.ok();
            fresh.close().await;
        }
        p.remote.close().await;
    }

    /// Between step 1 and step 2, once the plan is confirmed: on each host the plan carries
    /// preshared keys from (the hub), rotates the keys `rotate` names and reads the ones to
    /// carry, over its prepared connection. The keys are held in memory only; a host whose keys
    /// could not be read is named with why (never with what it sent).
    pub async fn carry(
        &self,
        prepared: &BTreeMap<HostName, Prepared<C::Remote>>,
        wanted: &BTreeMap<HostName, (Vec<String>, Vec<String>)>,
    ) -> (crate::psk::Carried, BTreeMap<HostName, String>) {
        use zeroize::Zeroize as _;
        let mut carried = crate::psk::Carried::default();
        let mut failed = BTreeMap::new();
        for (h, (rotate, read)) in wanted {
            let Some(p) = prepared.get(h) else {
                failed.insert(h.clone(), format!("{h} could not be prepared"));
                continue;
            };
            match p.remote.run(&steps::carry(rotate, read)).await {
                Ok(mut out) => {
                    let r = if out.success() {
                        carried.read(h, &out.stdout, read)
                    } else {
                        Err(format!(
                            "{h}: reading the preshared keys failed: {}",
                            out.stderr.lines().last().unwrap_or("no output")
                        ))
                    };
                    out.stdout.zeroize();
                    if let Err(e) = r {
                        failed.insert(h.clone(), e);
                    }
                }
                Err(e) => {
                    failed.insert(h.clone(), e.to_string());
                }
            }
        }
        (carried, failed)
    }

    /// Releases every lock taken in step 1 (apply stops before changing anything).
    pub async fn release_all(
        &self,
        prepared: BTreeMap<HostName, Result<Prepared<C::Remote>, HostError>>,
    ) {
        for (h, p) in prepared {
            if let Ok(p) = p {
                self.release(&h, p).await;
            }
        }
    }
}

/// Runs step 1's script on one host and reads its answer. On an error after the lock was
/// taken, the lock is given back before giving up.
async fn prepare_one<R: Remote>(
    host: &HostName,
    remote: &R,
    spec: &GatherSpec,
    work: &steps::KeyWork,
    lock: &Lock,
    timings: Option<&Timings>,
) -> Result<(Option<WgKey>, LiveHost), HostError> {
    let key_path = crate::desired::key_path(&spec.interface);
    let s = steps::prepare_with(
        &lock.holder,
        lock.break_lock,
        &key_path,
        spec.interface.as_str(),
        work,
        &facts::gather_script(spec),
    );
    let label = |line: &str| match line {
        steps::MARK_LOCK_TAKEN => Some("prepare: key".to_owned()),
        steps::MARK_PUBKEY => Some("prepare: gather".to_owned()),
        _ => None,
    };
    let out = timings::run(remote, &s, timings, host, "prepare: lock", label).await?;
    if out.status == Some(steps::EXIT_LOCKED) {
        let holder = out
            .stdout
            .lines()
            .skip_while(|l| *l != steps::MARK_LOCKED)
            .nth(1)
            .unwrap_or("unknown")
            .to_owned();
        return Err(HostError::Locked { holder });
    }
    let marker = format!("{}\n", steps::MARK_PUBKEY);
    let Some((_, rest)) = out.stdout.split_once(&marker) else {
        let detail = out
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .to_owned();
        return Err(HostError::Prepare { detail });
    };
    let (key_line, gathered) = rest.split_once('\n').unwrap_or((rest, ""));
    let key = match key_line {
        steps::NO_KEY => Ok(None),
        k => WgKey::parse(k).map(Some).map_err(|e| HostError::PublicKey {
            detail: e.to_string(),
        }),
    };
    let read = key.and_then(|k| parse_gathered(host, gathered, &out.stderr, spec).map(|l| (k, l)));
    if read.is_err() {
        remote.run(&steps::unlock()).await.ok();
    }
    read
}
