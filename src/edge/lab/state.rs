//! The lab's record of itself: `<dir>/lab.json`.
//!
//! `lab up` writes it twice: once before it creates anything (the prefix and the namespaces it is
//! about to make, so that `lab down` after a crash knows them) and once at the end (with the sshd
//! pids). `lab down`, `lab exec`, `lab status`, the tests and the benchmark read it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file name of the state inside a lab directory.
pub const STATE_FILE: &str = "lab.json";

/// Version of the `lab.json` layout; bumped when a field changes meaning.
pub const STATE_VERSION: u32 = 2;

/// What one lab directory made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// [`STATE_VERSION`] of the writer.
    pub version: u32,
    /// Namespace prefix: every namespace of this lab is named `<prefix>-<host>`.
    pub prefix: String,
    /// The canonical lab directory.
    pub dir: PathBuf,
    /// The inventory the lab was built from.
    pub inventory: PathBuf,
    /// `false` while `lab up` is still building (a crash leaves it so).
    pub complete: bool,
    /// Every lab host by name: inventory hosts and routers, plus `internet`, `inet`, `homepc`.
    pub hosts: BTreeMap<String, LabHost>,
    /// The package mirror on `inet`, when the lab has machines.
    #[serde(default)]
    pub mirror: Option<MirrorState>,
}

/// The lab's package mirror (see `mirror`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorState {
    /// What the machines' apt source points at, e.g. `http://198.51.100.200:80`.
    pub url: String,
    /// The cached repository it serves.
    pub dir: PathBuf,
    /// The HTTP server's pid (in `inet`'s namespace).
    pub pid: Option<u32>,
}

/// A lab host that is a machine (see `machine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    /// The root file system it boots (the overlay's merged tree).
    pub root: PathBuf,
    /// The supervisor's pid: it runs systemd-nspawn again after a reboot from inside.
    pub supervisor_pid: Option<u32>,
    /// systemd-nspawn's pid at the first boot (each reboot starts a new one: the current one
    /// is in `run/<host>.nspawn.pid`).
    pub nspawn_pid: Option<u32>,
    /// From start to systemd `running` and sshd answering, first boot.
    pub boot_ms: Option<u64>,
}

/// One host of the lab (one network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabHost {
    /// What the host stands for.
    pub kind: HostKind,
    /// The network namespace (`ip netns exec <namespace> ...`).
    pub namespace: String,
    /// Addresses with prefix length, e.g. `198.51.100.10/24`, `2001:db8:10::1/64`.
    pub addresses: Vec<String>,
    /// Whether the host runs its own sshd (inventory hosts with an `ssh:` target).
    pub ssh: bool,
    /// The sshd's pid once started; `lab exec` enters its network and mount namespace.
    pub sshd_pid: Option<u32>,
    /// Set when the host is a booted machine (its sshd is the machine's own; no `sshd_pid`).
    #[serde(default)]
    pub machine: Option<MachineState>,
}

/// What a lab host stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    /// The internet segment (bridge `br0`), also the provider's router.
    Internet,
    /// The inventory's hub.
    Hub,
    /// An inventory gateway (on a router's LAN).
    Gateway,
    /// A roaming inventory client on the internet segment.
    Client,
    /// An inventory router doing NAT between the internet and its LAN.
    Router,
    /// `inet`: somewhere on the internet, for reachability tests.
    Inet,
    /// `homepc`: a plain host on a router's LAN.
    LanHost,
}

impl HostKind {
    /// The kind as `lab status` and `lab.json` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Internet => "internet",
            HostKind::Hub => "hub",
            HostKind::Gateway => "gateway",
            HostKind::Client => "client",
            HostKind::Router => "router",
            HostKind::Inet => "inet",
            HostKind::LanHost => "lan-host",
        }
    }
}

impl LabState {
    /// The lab host called `name`, or an error listing the hosts there are.
    pub fn host(&self, name: &str) -> anyhow::Result<&LabHost> {
        self.hosts.get(name).with_context(|| {
            format!(
                "{name} is not a host of the lab in {} (hosts: {}; unmanaged clients have no namespace)",
                self.dir.display(),
                self.hosts.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Writes `<dir>/lab.json` (atomically: a crash never leaves half a file).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Reads `<dir>/lab.json`.
pub fn load(dir: &Path) -> anyhow::Result<LabState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no lab in {} (cannot read {}): run `meshctl lab up --dir {}` first",
            dir.display(),
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a lab state file", path.display()))
}
