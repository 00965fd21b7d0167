//! The plan: data, versioned and serialisable. Rendering reads it and decides nothing; apply
//! executes the `op` of each change and nothing else. `resource`, `before`, `after` and `diff`
//! are for humans only and never drive apply.
//!
//! No type in here can hold a private or preshared key: peers carry public keys, files carry
//! configs that point at the key file.
//!
//! JSON schema (version 1): `{ version, network, inventory, inventory_digest, hosts: [{ host,
//! role, target, status: "planned" | "failed", error?, changes: [{ action: "add" | "change" |
//! "remove", kind, resource, before?, after?, diff?, op }], warnings, skipped, notes,
//! fingerprint? }], manual_steps: [{ subject, text }] }`.

use serde::{Deserialize, Serialize};

use crate::names::HostName;
use crate::state::{ChainId, Jump, NdpProxy, Peer, Route};

/// The plan format's version; a saved plan of another version is refused.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub network: String,
    /// The inventory file the plan was made from.
    pub inventory: String,
    /// SHA-256 over the inventory, the roles and the pinned keys: a saved plan is only applied
    /// against the same inputs.
    pub inventory_digest: String,
    pub hosts: Vec<HostPlan>,
    pub manual_steps: Vec<ManualStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    pub host: HostName,
    pub role: String,
    /// The SSH target, e.g. `root@vps`.
    pub target: String,
    pub status: HostStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub changes: Vec<Change>,
    /// Foreign rules that shadow meshctl's, a changed key, ... (do not change the exit code).
    pub warnings: Vec<String>,
    /// What is not done on this host and why (e.g. no systemd: nothing enabled at boot).
    pub skipped: Vec<String>,
    pub notes: Vec<String>,
    /// SHA-256 of the normalised live state meshctl owns (stable while nothing it cares about
    /// moves); a saved plan is refused when it no longer matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Planned,
    Failed,
}

impl HostPlan {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for ch in &self.changes {
            match ch.action {
                Action::Add => c.add += 1,
                Action::Change => c.change += 1,
                Action::Remove => c.remove += 1,
            }
        }
        c
    }
}

/// Numbers of changes per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.add + self.change + self.remove
    }
}

impl Plan {
    pub fn counts(&self) -> Counts {
        self.hosts
            .iter()
            .map(HostPlan::counts)
            .fold(Counts::default(), |a, b| Counts {
                add: a.add + b.add,
                change: a.change + b.change,
                remove: a.remove + b.remove,
            })
    }

    pub fn has_changes(&self) -> bool {
        self.counts().total() > 0
    }

    pub fn failed_hosts(&self) -> impl Iterator<Item = &HostPlan> {
        self.hosts.iter().filter(|h| h.status == HostStatus::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Change,
    Remove,
}

impl Action {
    pub fn symbol(self) -> char {
        match self {
            Action::Add => '+',
            Action::Change => '~',
            Action::Remove => '-',
        }
    }
}

/// One change: what it is (for humans) and the instruction that applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    /// `interface`, `key`, `address`, `listen_port`, `peer`, `route`, `sysctl`, `chain`,
    /// `jump`, `ndp_proxy`, `file`, `service`.
    pub kind: String,
    /// e.g. `peer laptop`, `sysctl net.ipv4.ip_forward`.
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Unified diff, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    pub op: Op,
}

/// The instruction apply executes, each with the smallest command that does it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Generate the private key on the host (done in apply's first step, before anything else).
    GenerateKey {
        path: String,
    },
    /// `chmod 600` the key file.
    FixKeyMode {
        path: String,
    },
    /// `wg-quick up IF` from the written config.
    CreateInterface {
        interface: String,
    },
    SetListenPort {
        interface: String,
        port: u16,
    },
    /// `wg set IF fwmark MARK|off`
    SetFwmark {
        interface: String,
        fwmark: Option<u32>,
    },
    AddRule {
        rule: crate::state::RoutingRule,
    },
    DelRule {
        rule: crate::state::RoutingRule,
    },
    AddAddress {
        interface: String,
        address: ipnet::IpNet,
    },
    DelAddress {
        interface: String,
        address: ipnet::IpNet,
    },
    /// `wg set IF peer KEY allowed-ips ... [endpoint ...] persistent-keepalive ...`
    SetPeer {
        interface: String,
        name: String,
        peer: Peer,
    },
    /// `wg set IF peer KEY remove`
    RemovePeer {
        interface: String,
        public_key: String,
    },
    ReplaceRoute {
        route: Route,
    },
    DelRoute {
        route: Route,
    },
    SetSysctl {
        key: String,
        value: String,
    },
    /// `*tables-restore --noflush` of meshctl's chains of one family from the rules file.
    RestoreChains {
        chain: ChainId,
    },
    /// Flush and delete one of meshctl's chains (after its jump is gone).
    DeleteChain {
        chain: ChainId,
    },
    AddJump {
        jump: Jump,
    },
    DelJump {
        jump: Jump,
    },
    AddNdpProxy {
        entry: NdpProxy,
    },
    DelNdpProxy {
        entry: NdpProxy,
    },
    /// Atomic write (temp file, fsync, rename), content over stdin.
    WriteFile {
        path: String,
        content: String,
        mode: u32,
    },
    RemoveFile {
        path: String,
    },
    EnableService {
        unit: String,
    },
}

/// A step meshctl cannot do itself: an unmanaged router's static route, a phone's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualStep {
    pub subject: String,
    pub text: String,
}
