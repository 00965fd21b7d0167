//! The plan: data, versioned and serialisable. Rendering reads it and decides nothing; apply
//! executes the `op` of each change and nothing else. `resource`, `before`, `after` and `diff`
//! are for humans only and never drive apply.
//!
//! No type in here can hold a private or preshared key: peers carry public keys, files carry
//! configs that point at the key file.
//!
//! JSON schema (version 3): `{ version, network, inventory, inventory_digest, hosts: [{ host,
//! role, target, status: "planned" | "failed", error?, changes: [{ action: "add" | "change" |
//! "remove", kind, resource, before?, after?, diff?, op }], warnings, skipped, notes, guard?: {
//! rollback: [change], created_interface? }, fingerprint? }], manual_steps: [{ subject, text }],
//! checksum? }` (`checksum` in saved plans). Plans of other versions are refused: apply executes a
//! plan's ops, and version 1 carries no guard rollback, version 2 no packages to install.

use serde::{Deserialize, Serialize};

use crate::names::HostName;
use crate::state::{ChainId, Jump, NdpProxy, Peer, Route};

/// The plan format's version; a saved plan of another version is refused.
pub const PLAN_VERSION: u32 = 3;

/// What `meshctl plan` computes and `meshctl apply` executes: every managed host's changes plus the steps left to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The plan format's version ([`PLAN_VERSION`]); checked when a saved plan is loaded.
    pub version: u32,
    /// The inventory's `network.name`, shown in the header of the rendered plan.
    pub network: String,
    /// The inventory file the plan was made from.
    pub inventory: String,
    /// SHA-256 over the inventory, the roles and the pinned keys: a saved plan is only applied
    /// against the same inputs.
    pub inventory_digest: String,
    /// One entry per managed host, in host-name order.
    pub hosts: Vec<HostPlan>,
    /// Steps meshctl cannot do itself (routers, unmanaged clients); printed, never applied.
    pub manual_steps: Vec<ManualStep>,
    /// In a saved plan: SHA-256 over the rest of the plan, so a hand-edited file is refused
    /// rather than silently replaced by a fresh plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The plan for one managed host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    /// The host's name in the inventory.
    pub host: HostName,
    /// The host's role: `hub`, `gateway` or `client`.
    pub role: String,
    /// The SSH target, e.g. `root@vps`.
    pub target: String,
    /// Whether the host could be gathered; a failed host has no changes and makes the run fail.
    pub status: HostStatus,
    /// Why gathering failed (`status: failed` only), naming the host and the cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What apply changes on this host, to bring its live state to the desired one.
    pub changes: Vec<Change>,
    /// Foreign rules that shadow meshctl's, a changed key, ... (do not change the exit code).
    pub warnings: Vec<String>,
    /// What is not done on this host and why (e.g. no systemd: nothing enabled at boot).
    pub skipped: Vec<String>,
    /// Informational remarks, e.g. an unmanaged client left out until its key is known.
    pub notes: Vec<String>,
    /// For a host reached through the network meshctl manages: how it goes back by itself when
    /// the apply is not confirmed over a new connection. Part of the plan, so a saved plan
    /// carries its own rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardPlan>,
    /// SHA-256 of the normalised live state meshctl owns (stable while nothing it cares about
    /// moves); a saved plan is refused when it no longer matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// A guarded host's way back, computed by the planner from the live state it gathered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardPlan {
    /// The changes that take the host from the desired state back to the gathered one (files
    /// are not among them: the host restores its own copies of them).
    pub rollback: Vec<Change>,
    /// The interface this apply creates (absent when gathered), deleted on rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_interface: Option<String>,
}

/// What stands in a line of a file for a public key known only after apply's first step;
/// apply puts the key in its place.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

/// A public key that is only known after apply's first step (the host has no key yet when the
/// plan is made): a line of a file the plan writes that apply fills in before running (the
/// [`KNOWN_AFTER_APPLY`] in it becomes the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingKey {
    /// The 0-based line of the file's content that holds the key.
    pub line: usize,
    /// The host whose public key goes there.
    pub host: HostName,
}

/// Why a plan's pending keys could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A host's key is still not known (the host was not part of this apply).
    #[error(
        "the plan needs the public key of {host}, which is not known yet: apply {host} first (or without --limit), then make a new plan"
    )]
    KeyUnknown {
        /// The host whose key is missing.
        host: HostName,
    },
    /// A peer without a key that is not named by a host (not a plan meshctl wrote).
    #[error("the plan sets a peer `{name}` without a key and without a host to take it from")]
    NotAHost {
        /// The peer's name in the plan.
        name: String,
    },
    /// A pending key points past the end of its file, or at a line without a slot for it
    /// (not a plan meshctl wrote).
    #[error("the plan's pending key for {host} points at no key slot of {path}")]
    BadLine {
        /// The host whose key was to be filled in.
        host: HostName,
        /// The file.
        path: String,
    },
}

/// How applying one host's part of the plan ended, as the summary shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostResult {
    /// Every change applied and the host gathered in sync.
    Converged {
        /// How many changes the plan had for it.
        applied: usize,
    },
    /// The script ran to its end, but the gather after it still sees changes.
    NotConverged {
        /// How many.
        left: usize,
    },
    /// It failed; why, for people.
    Failed {
        /// The error, naming the host's step and cause.
        error: String,
    },
}

/// Whether a host's part of the plan could be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Gathered and diffed: `changes` is complete (possibly empty).
    Planned,
    /// Gathering failed (unreachable, no permission, bad facts): see `error`.
    Failed,
}

impl HostPlan {
    /// How many changes of each action this host has.
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
    /// Resources to create.
    pub add: usize,
    /// Resources to modify in place.
    pub change: usize,
    /// Resources to delete.
    pub remove: usize,
}

impl Counts {
    /// All changes together; 0 means in sync.
    pub fn total(&self) -> usize {
        self.add + self.change + self.remove
    }
}

impl Plan {
    /// Fills in the public keys the plan could only name when it was made (hosts without a key
    /// yet): peers set by host name, and the lines of files that hold them. After this, every
    /// op is complete.
    pub fn resolve_pending_keys(
        &mut self,
        keys: &crate::keys::PinnedKeys,
    ) -> Result<(), ResolveError> {
        self.resolve_keys(keys, true)
    }

    /// [`Plan::resolve_pending_keys`] for the keys `keys` knows; the others stay pending (see
    /// [`Plan::pending_hosts`]).
    pub fn resolve_known_keys(
        &mut self,
        keys: &crate::keys::PinnedKeys,
    ) -> Result<(), ResolveError> {
        self.resolve_keys(keys, false)
    }

    fn resolve_keys(
        &mut self,
        keys: &crate::keys::PinnedKeys,
        strict: bool,
    ) -> Result<(), ResolveError> {
        for hp in &mut self.hosts {
            let guard_ops = hp.guard.iter_mut().flat_map(|g| g.rollback.iter_mut());
            for c in hp.changes.iter_mut().chain(guard_ops) {
                resolve_op(&mut c.op, keys, strict)?;
            }
        }
        Ok(())
    }

    /// The hosts whose keys the plan still waits for (peers set by host name, file lines).
    pub fn pending_hosts(&self) -> std::collections::BTreeSet<HostName> {
        let mut out = std::collections::BTreeSet::new();
        for hp in &self.hosts {
            let guard_ops = hp.guard.iter().flat_map(|g| g.rollback.iter());
            for c in hp.changes.iter().chain(guard_ops) {
                match &c.op {
                    Op::SetPeer { name, peer, .. } if peer.public_key.is_none() => {
                        out.extend(HostName::parse(name).ok());
                    }
                    Op::WriteFile { pending_keys, .. } => {
                        out.extend(pending_keys.iter().map(|p| p.host.clone()));
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Leaves `host` out of the other hosts' changes where its key was still to come (it had no
    /// `wg` when the plan was made, and its install failed): its peer is not set, and its block
    /// is cut out of the configs that were to hold its key. Everything else stays as planned.
    pub fn leave_out_pending(&mut self, host: &HostName) {
        let pending_peer = |op: &Op| match op {
            Op::SetPeer { name, peer, .. } => peer.public_key.is_none() && name == host.as_str(),
            Op::LoadPsk {
                name, public_key, ..
            } => public_key.is_none() && name == host.as_str(),
            _ => false,
        };
        for hp in &mut self.hosts {
            hp.changes.retain(|c| !pending_peer(&c.op));
            if let Some(g) = hp.guard.as_mut() {
                g.rollback.retain(|c| !pending_peer(&c.op));
            }
            let guard_ops = hp.guard.iter_mut().flat_map(|g| g.rollback.iter_mut());
            for c in hp.changes.iter_mut().chain(guard_ops) {
                if let Op::WriteFile {
                    content,
                    pending_keys,
                    ..
                } = &mut c.op
                {
                    // A line that is not of meshctl's layout keeps its pending key, so that
                    // filling in the keys refuses the plan instead of writing a broken config.
                    while let Some(i) = pending_keys.iter().position(|p| &p.host == host) {
                        let line = pending_keys[i].line;
                        let Some((cut, n)) = crate::persist::without_pending_peer(content, line)
                        else {
                            break;
                        };
                        pending_keys.remove(i);
                        *content = cut;
                        for p in pending_keys.iter_mut().filter(|p| p.line > line) {
                            p.line -= n;
                        }
                    }
                }
            }
        }
    }

    /// The preshared keys apply must carry: every `write_psk` op of the plan, as (the host
    /// that holds the key, the file it is read from there).
    pub fn carried_psks(&self) -> std::collections::BTreeSet<(HostName, String)> {
        self.hosts
            .iter()
            .flat_map(|h| &h.changes)
            .filter_map(|c| match &c.op {
                Op::WritePsk { from, source, .. } => Some((from.clone(), source.clone())),
                _ => None,
            })
            .collect()
    }

    /// The change counts over all hosts, for the summary line.
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

    /// Whether anything would change (exit status 2 under `--detailed-exitcode`).
    pub fn has_changes(&self) -> bool {
        self.counts().total() > 0
    }

    /// The hosts that have changes.
    pub fn changed_hosts(&self) -> std::collections::BTreeSet<HostName> {
        self.hosts
            .iter()
            .filter(|h| !h.changes.is_empty())
            .map(|h| h.host.clone())
            .collect()
    }

    /// Hosts that could not be gathered; any makes the command exit 1.
    pub fn failed_hosts(&self) -> impl Iterator<Item = &HostPlan> {
        self.hosts.iter().filter(|h| h.status == HostStatus::Failed)
    }
}

/// What a change does to a resource, rendered as `+`, `~` or `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Create a resource that is missing.
    Add,
    /// Modify a resource that exists with other values.
    Change,
    /// Delete a resource meshctl owns that the inventory no longer wants.
    Remove,
}

impl Action {
    /// The prefix shown in the rendered plan: `+`, `~` or `-`.
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
    /// Add, change or remove.
    pub action: Action,
    /// `interface`, `key`, `address`, `listen_port`, `peer`, `route`, `sysctl`, `chain`,
    /// `jump`, `ndp_proxy`, `file`, `service`, `package`.
    pub kind: String,
    /// e.g. `peer laptop`, `sysctl net.ipv4.ip_forward`.
    pub resource: String,
    /// The live value, for display (`None` when adding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// The desired value, for display (`None` when removing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Unified diff, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The instruction apply runs; the only field of a change that drives apply.
    pub op: Op,
}

/// The instruction apply executes, each with the smallest command that does it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Install packages the host lacks (done after the prompt, before the key is made and
    /// before any other change; one install per host covers all of its `InstallPackages`).
    InstallPackages {
        /// The host's package manager.
        manager: crate::packages::Manager,
        /// The packages, e.g. `wireguard-tools`.
        packages: Vec<String>,
    },
    /// Generate the private key on the host (done in apply's first step, before anything else).
    GenerateKey {
        /// Path of the key file, e.g. `/etc/wireguard/wg0.key`.
        path: String,
    },
    /// A key rotation's switch: the next private key (made by step 1 beside the key file)
    /// replaces the old one, and the interface takes it at once.
    SwitchKey {
        /// The WireGuard interface.
        interface: String,
        /// The key file; the next key is beside it (`desired::next_key_path`).
        path: String,
    },
    /// `chmod 600` the key file.
    FixKeyMode {
        /// Path of the key file.
        path: String,
    },
    /// Brings the interface up (a host without systemd; with it, `StartService` does). Where
    /// `key_file` and `mtu` are known, by the script's own steps, as the boot path would set it
    /// up: the link (kernel WireGuard, else the userspace implementation wg-quick would pick),
    /// its private key from the file, the MTU, up; the addresses, port, fwmark and peers are
    /// the changes after it. Otherwise (no `mtu` in the inventory: wg-quick works it out from
    /// the route to the endpoints) `wg-quick up IF` from the written config.
    CreateInterface {
        /// The interface, e.g. `wg0`; its config file is written before this runs.
        interface: String,
        /// The private key file the interface loads (`None`: `wg-quick up`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_file: Option<String>,
        /// The interface's MTU (`network.mtu`; `None`: `wg-quick up`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtu: Option<u16>,
    },
    /// `wg set IF listen-port PORT`.
    SetListenPort {
        /// The WireGuard interface.
        interface: String,
        /// The UDP port to listen on (`network.listen_port`).
        port: u16,
    },
    /// `wg set IF fwmark MARK|off`
    SetFwmark {
        /// The WireGuard interface.
        interface: String,
        /// The mark to set; `None` turns it off.
        fwmark: Option<u32>,
    },
    /// `ip rule add ...`: a policy rule for a default route through the tunnel (full tunnel).
    AddRule {
        /// The rule to add.
        rule: crate::state::RoutingRule,
    },
    /// `ip rule del ...`: a rule of meshctl's that is no longer wanted.
    DelRule {
        /// The rule to delete.
        rule: crate::state::RoutingRule,
    },
    /// `ip address replace ADDR dev IF`.
    AddAddress {
        /// The WireGuard interface.
        interface: String,
        /// The address with its prefix length, e.g. `10.8.0.1/24`.
        address: ipnet::IpNet,
    },
    /// `ip address del ADDR dev IF`.
    DelAddress {
        /// The WireGuard interface.
        interface: String,
        /// The address with its prefix length.
        address: ipnet::IpNet,
    },
    /// `wg set IF peer KEY allowed-ips ... [endpoint ...] persistent-keepalive ...`
    SetPeer {
        /// The WireGuard interface.
        interface: String,
        /// The peer's host name (or its public key when no host is pinned to it), for messages.
        name: String,
        /// The peer's public key, allowed IPs, endpoint and keepalive.
        peer: Peer,
    },
    /// Generate the pair's preshared key on the hub (`wg genpsk` into a 0600 file in a 0700
    /// directory): done in apply's first step, like the private key, and only where the file
    /// is missing (or the key is being rotated).
    GeneratePsk {
        /// The file, e.g. `/etc/wireguard/psk/laptop.psk`.
        path: String,
    },
    /// Replace the pair's preshared key on the hub with a new one (`wg genpsk`, atomically):
    /// done once the plan is confirmed, just before the new key is carried, so a cancelled
    /// apply leaves the old key in place.
    RotatePsk {
        /// The file, e.g. `/etc/wireguard/psk/laptop.psk`.
        path: String,
    },
    /// Write the pair's preshared key into this host's 0600 file, atomically. The key is a slot:
    /// apply reads it from `from`'s `source` file once the plan is confirmed, holds it in memory
    /// only and sends it inside this host's change script. Never in the plan.
    WritePsk {
        /// The file on this host, e.g. `/etc/wireguard/psk/vps.psk`.
        path: String,
        /// The host the key is read from (the hub, where it was generated).
        from: HostName,
        /// The file on `from`.
        source: String,
    },
    /// `wg set IF peer KEY preshared-key FILE` (`/dev/null` when `path` is `None`: no
    /// preshared key).
    LoadPsk {
        /// The WireGuard interface.
        interface: String,
        /// The peer's host name (or its public key when no host is pinned to it).
        name: String,
        /// The peer's public key (`None` in a saved plan until its host has a key: filled by
        /// host name like a peer's).
        public_key: Option<crate::names::WgKey>,
        /// The file to load it from; `None`: take the preshared key off the peer.
        path: Option<String>,
    },
    /// `wg set IF peer KEY remove`
    RemovePeer {
        /// The WireGuard interface.
        interface: String,
        /// The public key of the peer to remove.
        public_key: String,
    },
    /// `ip route replace ... proto 157`: add or update a route meshctl owns.
    ReplaceRoute {
        /// The route to set.
        route: Route,
    },
    /// `ip route del ...`: a route of meshctl's that is no longer wanted.
    DelRoute {
        /// The route to delete.
        route: Route,
    },
    /// `sysctl -w KEY=VALUE` (the drop-in file that persists it is a separate `WriteFile`).
    SetSysctl {
        /// Dotted sysctl key, e.g. `net.ipv4.ip_forward`.
        key: String,
        /// The value to set, e.g. `1`.
        value: String,
    },
    /// `*tables-restore --noflush` of meshctl's chains of one family from the rules file.
    RestoreChains {
        /// A chain of the family to restore; one restore covers all chains of that family.
        chain: ChainId,
    },
    /// `*tables-restore --noflush` of meshctl's chains of one family from the rules given here,
    /// not from a file: a guarded host's rollback puts back the chains as they were gathered.
    RestoreRules {
        /// The family (`iptables` or `ip6tables`).
        family: crate::state::Family,
        /// The rules, in `*tables-restore` format, meshctl's chains only.
        rules: String,
    },
    /// Flush and delete one of meshctl's chains (after its jump is gone).
    DeleteChain {
        /// The chain to delete.
        chain: ChainId,
    },
    /// Insert the tagged jump from a built-in chain into meshctl's chain (unless already there).
    AddJump {
        /// The jump to insert.
        jump: Jump,
    },
    /// `iptables -D ...` of a tagged jump meshctl no longer wants.
    DelJump {
        /// The jump to delete.
        jump: Jump,
    },
    /// `ip -6 neigh replace proxy ADDR dev IF`, so the provider's router can reach a client's address.
    AddNdpProxy {
        /// The address and the device to answer on.
        entry: NdpProxy,
    },
    /// `ip -6 neigh del proxy ADDR dev IF`.
    DelNdpProxy {
        /// The entry to delete.
        entry: NdpProxy,
    },
    /// Atomic write (temp file, fsync, rename), content over stdin.
    WriteFile {
        /// Absolute path on the host.
        path: String,
        /// The whole new content (never holds a private key).
        content: String,
        /// Unix permission bits, e.g. 0o600.
        mode: u32,
        /// Lines of `content` that get a public key known only after apply's first step.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pending_keys: Vec<PendingKey>,
    },
    /// `rm -f PATH`: a managed file the inventory no longer needs.
    RemoveFile {
        /// Absolute path on the host.
        path: String,
    },
    /// `systemctl enable UNIT`, so the interface comes up at boot.
    EnableService {
        /// The unit, e.g. `wg-quick@wg0`.
        unit: String,
    },
    /// `systemctl start UNIT`: where systemd runs, the interface is brought up by its unit
    /// (not by a `wg-quick up` behind systemd's back), so the unit's state is true and a later
    /// restart or boot does not fight the live interface.
    StartService {
        /// The unit, e.g. `wg-quick@wg0`.
        unit: String,
        /// The interface it brings up.
        interface: String,
    },
    /// The interface is up but not under its unit (a hand-made `wg-quick up`): it is taken
    /// down and started by the unit, which owns it from then on (a moment without the tunnel).
    TakeOverInterface {
        /// The unit, e.g. `wg-quick@wg0`.
        unit: String,
        /// The interface.
        interface: String,
    },
}

/// A step meshctl cannot do itself: an unmanaged router's static route, a phone's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualStep {
    /// What the step is about: a router's or an unmanaged client's name.
    pub subject: String,
    /// What the user must do, in one sentence.
    pub text: String,
}

/// Fills in the keys of `op` that `keys` knows; an unknown one is an error when `strict`,
/// otherwise it stays pending.
fn resolve_op(
    op: &mut Op,
    keys: &crate::keys::PinnedKeys,
    strict: bool,
) -> Result<(), ResolveError> {
    let known = |host: &HostName| match keys.get(host) {
        Some(k) => Ok(Some(k.clone())),
        None if strict => Err(ResolveError::KeyUnknown { host: host.clone() }),
        None => Ok(None),
    };
    match op {
        Op::SetPeer { name, peer, .. } if peer.public_key.is_none() => {
            // A peer is named by its host when its key was not known (see `diff`).
            let host =
                HostName::parse(name).map_err(|_| ResolveError::NotAHost { name: name.clone() })?;
            peer.public_key = known(&host)?;
        }
        Op::LoadPsk {
            name, public_key, ..
        } if public_key.is_none() => {
            let host =
                HostName::parse(name).map_err(|_| ResolveError::NotAHost { name: name.clone() })?;
            *public_key = known(&host)?;
        }
        Op::WriteFile {
            path,
            content,
            pending_keys,
            ..
        } if !pending_keys.is_empty() => {
            let mut lines: Vec<String> = content.split('\n').map(str::to_owned).collect();
            let mut still = Vec::new();
            for p in pending_keys.drain(..) {
                let Some(key) = known(&p.host)? else {
                    still.push(p);
                    continue;
                };
                let slot = lines
                    .get_mut(p.line)
                    .filter(|l| l.contains(KNOWN_AFTER_APPLY))
                    .ok_or_else(|| ResolveError::BadLine {
                        host: p.host.clone(),
                        path: path.clone(),
                    })?;
                *slot = slot.replacen(KNOWN_AFTER_APPLY, key.as_str(), 1);
            }
            *pending_keys = still;
            *content = lines.join("\n");
        }
        _ => {}
    }
    Ok(())
}
