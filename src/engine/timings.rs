//! `--timings`: when each phase of a run took place on each host, measured on the controller
//! (connect, each remote execution, and inside an execution the steps its scripts announce
//! with marker lines as those lines arrive). The labels are phase names and the plan's own
//! change texts, which hold no secret; nothing of a script's output is kept.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::Remote;
use crate::names::HostName;
use crate::transport::{Mark, RemoteOutput, TransportError};

/// One phase on one host, in milliseconds since the run started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// What ran, e.g. `connect`, `prepare: gather`, `step 3: + interface wg0`.
    pub phase: String,
    /// When it started.
    pub start_ms: f64,
    /// How long it took.
    pub ms: f64,
}

/// The phases of one run, by host; shared by the hosts' tasks.
#[derive(Debug)]
pub struct Timings {
    start: Instant,
    hosts: Mutex<BTreeMap<String, Vec<Phase>>>,
}

impl Default for Timings {
    fn default() -> Self {
        Self::new()
    }
}

impl Timings {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            hosts: Mutex::new(BTreeMap::new()),
        }
    }

    fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64() * 1000.0
    }

    /// Records that `phase` ran on `host` from `start` to `end`.
    pub fn span(&self, host: &HostName, phase: impl Into<String>, start: Instant, end: Instant) {
        let p = Phase {
            phase: phase.into(),
            start_ms: self.ms(start),
            ms: end.saturating_duration_since(start).as_secs_f64() * 1000.0,
        };
        self.hosts
            .lock()
            .expect("timings lock")
            .entry(host.to_string())
            .or_default()
            .push(p);
    }

    /// Records the sections of one execution that began at `start` and ended at `end`: each
    /// marker `label` names starts a section that lasts until the next such marker (or `end`);
    /// the time before the first one is `before`.
    pub fn sections(
        &self,
        host: &HostName,
        before: &str,
        start: Instant,
        marks: &[Mark],
        end: Instant,
        label: impl Fn(&str) -> Option<String>,
    ) {
        let mut current = (before.to_owned(), start);
        for m in marks {
            if let Some(name) = label(&m.line) {
                let (prev, since) = std::mem::replace(&mut current, (name, m.at));
                self.span(host, prev, since, m.at);
            }
        }
        self.span(host, current.0, current.1, end);
    }

    /// The whole record as JSON: `{"version": 1, "unit": "ms", "total_ms": …, "hosts": {HOST:
    /// [PHASE...]}}`, each host's phases in the order they started; the total runs until now.
    pub fn to_json(&self) -> String {
        let total = self.ms(Instant::now());
        let mut hosts = self.hosts.lock().expect("timings lock").clone();
        for phases in hosts.values_mut() {
            phases.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        }
        let doc = serde_json::json!({
            "version": 1,
            "unit": "ms",
            "total_ms": total,
            "hosts": hosts,
        });
        serde_json::to_string_pretty(&doc).expect("timings serialise")
    }
}

/// Runs `script` on `remote`; with `timings`, records the execution's sections (see
/// [`Timings::sections`]) — without, it is a plain [`Remote::run`].
pub(crate) async fn run<R: Remote>(
    remote: &R,
    script: &str,
    timings: Option<&Timings>,
    host: &HostName,
    before: &str,
    label: impl Fn(&str) -> Option<String>,
) -> Result<RemoteOutput, TransportError> {
    let Some(t) = timings else {
        return remote.run(script).await;
    };
    let start = Instant::now();
    let r = remote.run_marked(script).await;
    let end = Instant::now();
    match r {
        Ok((out, marks)) => {
            t.sections(host, before, start, &marks, end, label);
            Ok(out)
        }
        Err(e) => {
            t.span(host, format!("{before} (failed)"), start, end);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sections_run_from_one_named_marker_to_the_next() {
        let t = Timings::new();
        let h = HostName::parse("vps").unwrap();
        let s = t.start + Duration::from_millis(10);
        let mark = |ms: u64, line: &str| Mark {
            at: s + Duration::from_millis(ms),
            line: line.into(),
        };
        let marks = [
            mark(5, "@@meshctl a@@"),
            mark(7, "@@meshctl x@@"),
            mark(20, "@@meshctl b@@"),
        ];
        let label = |l: &str| match l {
            "@@meshctl a@@" => Some("A".to_owned()),
            "@@meshctl b@@" => Some("B".to_owned()),
            _ => None,
        };
        t.sections(&h, "start", s, &marks, s + Duration::from_millis(50), label);
        let json: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        let phases = json["hosts"]["vps"].as_array().unwrap();
        let got: Vec<(&str, i64)> = phases
            .iter()
            .map(|p| {
                (
                    p["phase"].as_str().unwrap(),
                    p["ms"].as_f64().unwrap().round() as i64,
                )
            })
            .collect();
        assert_eq!(got, vec![("start", 5), ("A", 15), ("B", 30)]);
        assert_eq!(phases[0]["start_ms"].as_f64().unwrap().round() as i64, 10);
    }
}
