//! An in-memory [`Connector`] for the engine's unit tests: every host answers the scripts it
//! is sent as a test scripts it to, and every connection and script is logged, so a test sees
//! exactly what the engine did on which host.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use super::{Connector, Patience, Remote};
use crate::names::HostName;
use crate::scripts::{guard, steps};
use crate::transport::{RemoteOutput, TransportError};

/// Which of the engine's scripts a host was sent (told apart by what each one must contain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Gather,
    Prepare,
    Provision,
    Changes,
    Finish,
    Unlock,
    Confirm,
    GuardStatus,
}

impl Kind {
    fn of(s: &str) -> Kind {
        if s == steps::unlock() {
            Kind::Unlock
        } else if s.contains(steps::MARK_INSTALL) {
            Kind::Provision
        } else if s.contains(steps::MARK_PUBKEY) {
            Kind::Prepare
        } else if s.contains("write_file() {") {
            Kind::Changes
        } else if s.contains("rollback.confirmed") {
            Kind::Confirm
        } else if s.contains(guard::STATUS_ROLLED_BACK) {
            Kind::GuardStatus
        } else if s.contains(steps::LOCK_DIR) {
            Kind::Finish
        } else {
            Kind::Gather
        }
    }
}

/// A host's answer to one script.
pub type Answer = Result<RemoteOutput, TransportError>;
/// How a host answers: (kind, the script, how many of this kind it was sent before).
pub type Responder = Arc<dyn Fn(Kind, &str, usize) -> Answer + Send + Sync>;

/// One host's behaviour.
#[derive(Clone)]
pub struct FakeHost {
    /// Connection attempts that fail (by 0-based attempt number).
    pub refuse_connects: Vec<usize>,
    /// How it answers.
    pub respond: Responder,
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connect(HostName),
    Run(HostName, Kind),
}

/// The fake connector.
#[derive(Clone, Default)]
pub struct FakeConnector {
    hosts: Arc<Mutex<BTreeMap<HostName, FakeHost>>>,
    log: Arc<Mutex<Vec<Event>>>,
    scripts: Arc<Mutex<Vec<(HostName, Kind, String)>>>,
    connects: Arc<Mutex<BTreeMap<HostName, usize>>>,
    executions: Arc<Mutex<BTreeMap<HostName, usize>>>,
}

impl FakeConnector {
    pub fn with(hosts: impl IntoIterator<Item = (&'static str, FakeHost)>) -> Self {
        let c = Self::default();
        for (h, f) in hosts {
            c.hosts
                .lock()
                .unwrap()
                .insert(HostName::parse(h).unwrap(), f);
        }
        c
    }

    /// Everything that happened, in order.
    pub fn log(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }

    /// The kinds of scripts `host` ran, in order.
    pub fn kinds(&self, host: &str) -> Vec<Kind> {
        self.log()
            .into_iter()
            .filter_map(|e| match e {
                Event::Run(h, k) if h.as_str() == host => Some(k),
                _ => None,
            })
            .collect()
    }

    /// The scripts of one kind `host` ran.
    pub fn scripts(&self, host: &str, kind: Kind) -> Vec<String> {
        self.scripts
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, k, _)| h.as_str() == host && *k == kind)
            .map(|(_, _, s)| s.clone())
            .collect()
    }

    /// How many remote executions `host` got (a script that holds two of the engine's
    /// scripts, e.g. the changes and the finish, is one).
    pub fn executions(&self, host: &str) -> usize {
        self.executions
            .lock()
            .unwrap()
            .get(&HostName::parse(host).unwrap())
            .copied()
            .unwrap_or_default()
    }

    /// How many connections `host` got.
    pub fn connections(&self, host: &str) -> usize {
        self.log()
            .iter()
            .filter(|e| matches!(e, Event::Connect(h) if h.as_str() == host))
            .count()
    }
}

/// A connection of the fake.
pub struct FakeRemote {
    host: HostName,
    conn: FakeConnector,
}

impl Connector for FakeConnector {
    type Remote = FakeRemote;

    async fn connect(&self, host: &HostName, _: Patience) -> Result<FakeRemote, TransportError> {
        let attempt = {
            let mut c = self.connects.lock().unwrap();
            let n = c.entry(host.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let refused = self
            .hosts
            .lock()
            .unwrap()
            .get(host)
            .is_none_or(|f| f.refuse_connects.contains(&attempt));
        if refused {
            return Err(TransportError::Connect {
                host: host.to_string(),
                reason: "Connection refused".into(),
            });
        }
        self.log.lock().unwrap().push(Event::Connect(host.clone()));
        Ok(FakeRemote {
            host: host.clone(),
            conn: self.clone(),
        })
    }
}

impl FakeRemote {
    /// One script of the engine's, as the host answers it.
    fn run_one(&self, s: &str) -> Answer {
        let kind = Kind::of(s);
        let before = self
            .conn
            .kinds(self.host.as_str())
            .iter()
            .filter(|k| **k == kind)
            .count();
        self.conn
            .log
            .lock()
            .unwrap()
            .push(Event::Run(self.host.clone(), kind));
        self.conn
            .scripts
            .lock()
            .unwrap()
            .push((self.host.clone(), kind, s.to_owned()));
        let respond = self.conn.hosts.lock().unwrap()[&self.host].respond.clone();
        respond(kind, s, before)
    }
}

impl Remote for FakeRemote {
    async fn run(&self, s: &str) -> Answer {
        *self
            .conn
            .executions
            .lock()
            .unwrap()
            .entry(self.host.clone())
            .or_default() += 1;
        // `steps::changes_then_finish`: the change script, then the finish whatever it did,
        // the changes' status; answered as the two scripts it holds (a lost connection ends it).
        let between = format!("\n)\nm_crc=$?\necho '{}' >&2\n", steps::MARK_FINISH);
        let parts = s
            .strip_prefix("(\n")
            .and_then(|r| r.split_once(between.as_str()))
            .and_then(|(c, r)| Some((c, r.strip_suffix("\nexit $m_crc\n")?)));
        let Some((changes, finish)) = parts else {
            return self.run_one(s);
        };
        let changed = self.run_one(changes)?;
        let finished = self.run_one(finish)?;
        Ok(RemoteOutput {
            status: changed.status,
            stdout: changed.stdout + &finished.stdout,
            stderr: format!(
                "{}{}\n{}",
                changed.stderr,
                steps::MARK_FINISH,
                finished.stderr
            ),
        })
    }

    async fn close(self) {}
}

/// A successful answer.
pub fn ok(stdout: String) -> Answer {
    Ok(RemoteOutput {
        status: Some(0),
        stdout,
        stderr: String::new(),
    })
}

/// A failed answer with `status` and `stderr`.
pub fn fail(status: i32, stdout: String, stderr: &str) -> Answer {
    Ok(RemoteOutput {
        status: Some(status),
        stdout,
        stderr: stderr.to_owned(),
    })
}

/// The connection died.
pub fn lost(host: &str) -> Answer {
    Err(TransportError::Exec {
        host: host.to_owned(),
        reason: "the SSH connection was lost".into(),
    })
}

/// What a fresh Debian host (no WireGuard yet, key file made by step 1) prints for the gather
/// part of `script`: one record per record the script asks for (`r ID ...`, and the records
/// its batch helpers `m_ipb`, `m_legacy`, `m_getent` and `m_files` print).
pub fn fresh_gather(s: &str) -> String {
    gather_lacking(s, &[])
}

/// The tools a fake host has.
const TOOLS: &str = "wg\nwg-quick\nip\niptables\nip6tables\niptables-save\nip6tables-save\niptables-restore\nip6tables-restore\nsysctl\nsystemctl\nwireguard-go\napt-get\n";

/// [`fresh_gather`] of a host that lacks the tools `lacking` (e.g. a fresh VPS: `wg`, ...).
pub fn gather_lacking(s: &str, lacking: &[&str]) -> String {
    let tools: String = TOOLS
        .lines()
        .filter(|t| !lacking.contains(t))
        .map(|t| format!("{t}\n"))
        .collect();
    let mut out = String::from("@@meshctl facts 1@@\n");
    let mut record = |id: &str, body: &str, rc: i32| {
        write!(
            out,
            "@@meshctl begin {id}@@\n{body}@@meshctl end {id} rc={rc}@@\n"
        )
        .ok();
    };
    let words = |rest: &str| -> Vec<String> {
        rest.split_whitespace()
            .map(|w| w.trim_matches('\'').to_owned())
            .collect()
    };
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("r ") {
            let id = rest.split_whitespace().next().unwrap_or_default();
            let (body, rc) = match id {
                "os" => ("\"Debian GNU/Linux 12 (bookworm)\"\n", 0),
                "systemd" => ("", 1),
                "tools" => (tools.as_str(), 0),
                "iptables-version" => ("iptables v1.8.9 (nf_tables)\n", 0),
                "uid" => ("0\n", 0),
                "link" => ("", 1),
                "keyfile" => ("600\n", 0),
                "fw4" | "fw6" => (
                    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n",
                    0,
                ),
                id if id.starts_with("sysctl.") => ("0\n", 0),
                id if id.starts_with("file.") => ("", 3),
                id if id.starts_with("resolve.") => ("", 2),
                _ => ("", 0),
            };
            record(id, body, rc);
        } else if let Some(rest) = line
            .strip_prefix("if [ -e ")
            .and_then(|l| l.split_once("; else m_rec "))
            .map(|(_, rest)| rest)
        {
            // A leftover-only `*-save` beside its rules file: a fresh host has no such file.
            let w = words(rest.trim_end_matches("; fi"));
            record(&w[0], "", w[1].parse().unwrap_or(1));
        } else if let Some(rest) = line.strip_prefix("m_ipb ") {
            // m_ipb FAMILY 'ID ID ...' 'COMMANDS...': the interface (`link`) is absent.
            let ids = rest
                .split('\'')
                .nth(if rest.starts_with("''") { 3 } else { 1 });
            for id in words(ids.unwrap_or_default()) {
                match id.as_str() {
                    "link" => record("link", "", 1),
                    _ => record(&id, "[]\n", 0),
                }
            }
        } else if let Some(rest) = line.strip_prefix("m_legacy ") {
            for pair in words(rest).chunks(2) {
                record(&pair[0], "", 0);
            }
        } else if let Some(rest) = line.strip_prefix("m_getent ") {
            for pair in words(rest).chunks(2) {
                record(&format!("resolve.{}", pair[0]), "", 2);
            }
        } else if let Some(rest) = line.strip_prefix("m_files ") {
            let w = words(rest);
            if w.first().is_some_and(|k| !k.is_empty()) {
                record("keyfile", "600\n", 0);
            }
            for pair in w[1..].chunks(2) {
                if pair[0].starts_with("sysctl.") {
                    record(&pair[0], "0\n", 0);
                } else {
                    record(&format!("file.{}", pair[0]), "", 3);
                }
            }
            record("content", "files\n", 0);
        }
    }
    out.push_str("@@meshctl done@@\n");
    out
}

/// Step 1's answer of a fresh host whose key is `key`.
pub fn prepared(key: &str, s: &str) -> String {
    format!("{}\n{key}\n{}", steps::MARK_PUBKEY, fresh_gather(s))
}

/// The tools a freshly rented VPS lacks.
pub const FRESH_VPS_LACKS: &[&str] = &[
    "wg",
    "wg-quick",
    "wireguard-go",
    "iptables",
    "ip6tables",
    "iptables-save",
    "ip6tables-save",
    "iptables-restore",
    "ip6tables-restore",
];

/// A successful provisioning's answer: the install's output, then the key made.
pub fn provisioned(key: &str) -> String {
    format!(
        "{} 0\nSetting up wireguard-tools ...\n{}\n{key}\n",
        steps::MARK_INSTALL,
        steps::MARK_PUBKEY
    )
}

/// A freshly rented VPS (apt, no `wg`, no iptables): step 1 finds no key and lacks the tools;
/// provisioning answers with `provision`; afterwards it has every tool (and the key `key`
/// when `provision` succeeded).
pub fn fresh_vps(
    key: &'static str,
    provision: impl Fn(&str) -> Answer + Send + Sync + 'static,
) -> FakeHost {
    FakeHost {
        refuse_connects: vec![],
        respond: Arc::new(move |kind, s, _| match kind {
            Kind::Prepare => ok(format!(
                "{}\n{}\n{}",
                steps::MARK_PUBKEY,
                steps::NO_KEY,
                gather_lacking(s, FRESH_VPS_LACKS)
            )),
            Kind::Provision => provision(key),
            Kind::Gather => ok(gather_lacking(s, FRESH_VPS_LACKS)),
            Kind::Finish | Kind::Confirm => ok(fresh_gather(s)),
            Kind::Changes => ok(format!("{}\n", steps::MARK_DONE)),
            Kind::Unlock => ok(String::new()),
            Kind::GuardStatus => ok(format!("{}\n", guard::STATUS_ROLLED_BACK)),
        }),
    }
}

/// A fresh host with public key `key` whose step 1 succeeds, and which answers every other
/// script with `rest`.
pub fn prepared_then(
    key: &'static str,
    rest: impl Fn(Kind, &str, usize) -> Answer + Send + Sync + 'static,
) -> FakeHost {
    FakeHost {
        refuse_connects: vec![],
        respond: Arc::new(move |kind, s, n| match kind {
            Kind::Prepare => ok(prepared(key, s)),
            _ => rest(kind, s, n),
        }),
    }
}

/// A healthy fresh host with public key `key`: every script succeeds.
pub fn healthy(key: &'static str) -> FakeHost {
    FakeHost {
        refuse_connects: vec![],
        respond: Arc::new(move |kind, s, _| match kind {
            Kind::Prepare => ok(prepared(key, s)),
            Kind::Provision => ok(provisioned(key)),
            Kind::Gather | Kind::Finish | Kind::Confirm => ok(fresh_gather(s)),
            Kind::Changes => ok(format!("{}\n", steps::MARK_DONE)),
            Kind::Unlock => ok(String::new()),
            Kind::GuardStatus => ok(format!("{}\n", guard::STATUS_ROLLED_BACK)),
        }),
    }
}
