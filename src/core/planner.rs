//! Builds the plan from the inputs (inventory, roles, pinned keys), the desired states and the
//! live states gathered: pure, so planner cases are tested with facts fixtures and snapshots.
//! The plan holds everything apply executes: each host's ordered changes, the rollback of a
//! guarded host, and the lines a key known only after apply's first step goes into.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::Digest;

use crate::desired::{self, Desired};
use crate::diff;
use crate::facts::GatherSpec;
use crate::inventory::{Inventory, Role};
use crate::keys::PinnedKeys;
use crate::names::HostName;
use crate::persist;
use crate::plan::{GuardPlan, HostPlan, HostStatus, ManualStep, Op, PLAN_VERSION, Plan};
use crate::roles::Roles;
use crate::state::{ChainId, Family, HostState, LiveHost};

/// Everything a plan is computed from.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The checked inventory.
    pub inventory: Inventory,
    /// The roles: built-in, or overridden with `--roles`.
    pub roles: Roles,
    /// The pinned public keys beside the inventory.
    pub keys: PinnedKeys,
    /// SHA-256 over the inventory text, the roles and the pinned keys.
    pub digest: String,
    /// Preshared keys to rotate in this run (`meshctl rotate --psk`); none by default.
    pub psk: crate::psk::PskWork,
}

impl Inputs {
    /// The inputs from a checked inventory (and the bytes it was parsed from, which the digest
    /// covers), the roles and the pinned keys.
    pub fn new(inventory: Inventory, text: &[u8], roles: Roles, keys: PinnedKeys) -> Self {
        let digest = digest_of(text, &roles, &keys);
        Self {
            inventory,
            roles,
            keys,
            digest,
            psk: crate::psk::PskWork::default(),
        }
    }

    /// The desired state of every managed host.
    pub fn desired(&self) -> BTreeMap<HostName, Desired> {
        desired::all(&self.inventory, &self.roles, &self.keys)
    }

    /// Checks a `--limit` list against the inventory's managed hosts.
    pub fn limit(&self, names: &[String]) -> Result<Option<Vec<HostName>>, String> {
        if names.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for n in names {
            match HostName::parse(n)
                .ok()
                .and_then(|h| self.inventory.hosts.get(&h))
            {
                Some(h) if h.is_managed() => out.push(h.name.clone()),
                Some(h) => {
                    return Err(format!(
                        "--limit {}: the host has no `ssh:` target, meshctl does not manage it",
                        h.name
                    ));
                }
                None => {
                    return Err(format!(
                        "--limit {n}: no such host in {}",
                        self.inventory.path.display()
                    ));
                }
            }
        }
        Ok(Some(out))
    }
}

fn digest_of(inventory: &[u8], roles: &Roles, keys: &PinnedKeys) -> String {
    let mut h = sha2::Sha256::new();
    h.update(inventory);
    h.update(format!("{:?}", roles.by_name).as_bytes());
    h.update(keys.render().as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What to gather on a host: everything its desired state names, plus every chain and file
/// meshctl could own, so that one the inventory dropped is seen (and removed).
pub fn gather_spec(d: &Desired, roles: &Roles) -> GatherSpec {
    let mut spec = GatherSpec::from_desired(&d.state, d.resolve.clone(), d.ndp_range);
    spec.ndp_listed_in = Some(persist::up_script_path(spec.interface.as_str()));
    for role in roles.by_name.values() {
        for c in &role.chains {
            let id = ChainId {
                family: c.family,
                table: c.table.clone(),
                chain: c.chain.clone(),
            };
            if !spec.chains.contains(&id) {
                spec.chains.push(id);
            }
        }
    }
    // A family the desired state has no chains (or jumps) of is looked at for leftovers only,
    // which exist only beside meshctl's rules file (see `GatherSpec::chains_only_beside`).
    for family in [Family::Ipv4, Family::Ipv6] {
        let wanted = d.state.firewall.chains.keys().any(|c| c.family == family)
            || d.state.firewall.jumps.iter().any(|j| j.family == family);
        if !wanted && spec.chains.iter().any(|c| c.family == family) {
            spec.chains_only_beside
                .push((family, persist::rules_path(family)));
        }
    }
    for p in persist::candidate_paths(spec.interface.as_str()) {
        if !spec.files.contains(&p) {
            spec.files.push(p);
        }
    }
    spec
}

/// The live state restricted to what meshctl compares: roaming endpoints and a listen port it
/// does not set are dropped, so the fingerprint only moves when something meshctl owns moves.
/// (The key file's mode is not in the state at all: apply's first step makes a missing key
/// file, a change of its own in the plan, and that must not make a saved plan look stale.)
pub fn normalise(live: &HostState, desired: &HostState) -> HostState {
    let mut n = live.clone();
    if let (Some(l), Some(d)) = (n.interface.as_mut(), desired.interface.as_ref()) {
        if d.listen_port.is_none() {
            l.listen_port = None;
        }
        let roaming: Vec<_> = d
            .peers
            .values()
            .filter(|p| p.endpoint.is_none())
            .filter_map(|p| p.public_key.clone())
            .collect();
        for p in l.peers.values_mut() {
            if p.public_key.as_ref().is_some_and(|k| roaming.contains(k))
                || d.peers.values().all(|dp| dp.endpoint.is_none())
            {
                p.endpoint = None;
            }
        }
    }
    n
}

/// SHA-256 of the normalised live state.
pub fn fingerprint(live: &HostState, desired: &HostState) -> String {
    let json = serde_json::to_vec(&normalise(live, desired)).expect("state serialises");
    hex(&sha2::Sha256::digest(&json))
}

/// The result of gathering one host: its live state, or why it could not be gathered.
pub type Gathered = Result<LiveHost, String>;

/// Which of the given managed hosts are reached across the VPN, so that their changes run
/// under the guard (`edge::ssh_paths` asks ssh itself: a process per host).
#[derive(Clone)]
pub struct Crossing(Arc<CrossingFn>);

type CrossingFn = dyn Fn(&Inventory, &BTreeSet<HostName>) -> BTreeSet<HostName> + Send + Sync;

impl Crossing {
    /// The check `f`: of the hosts given, the ones reached across the VPN.
    pub fn new(
        f: impl Fn(&Inventory, &BTreeSet<HostName>) -> BTreeSet<HostName> + Send + Sync + 'static,
    ) -> Self {
        Crossing(Arc::new(f))
    }
}

impl std::fmt::Debug for Crossing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crossing")
    }
}

/// A [`Crossing`] that finds none (tests, and callers that decided the guard already).
pub fn crossing_none() -> Crossing {
    Crossing::new(|_, _| BTreeSet::new())
}

/// [`build`], with the guard decided only where it matters: `crossing` is asked about the
/// hosts that have changes, and only when there are any. A converged network's drift check
/// asks about none, so it costs no process beyond its one execution per host.
pub fn build_guarded(
    inputs: &Inputs,
    desired: &BTreeMap<HostName, Desired>,
    live: &BTreeMap<HostName, Gathered>,
    crossing: &Crossing,
) -> Plan {
    let mut plan = build(inputs, desired, live);
    let changed = plan.changed_hosts();
    if changed.is_empty() {
        return plan;
    }
    let crossing = (crossing.0)(&inputs.inventory, &changed);
    for hp in plan.hosts.iter_mut().filter(|h| crossing.contains(&h.host)) {
        if let (Some(Ok(l)), Some(d)) = (live.get(&hp.host), desired.get(&hp.host)) {
            guard_host(hp, l, &d.state, &inputs.keys);
        }
    }
    plan
}

/// Puts a host's changes under the guard: the rollback to `before`, preshared keys included.
/// A host without changes has nothing to guard.
fn guard_host(hp: &mut HostPlan, before: &LiveHost, after: &HostState, keys: &PinnedKeys) {
    if hp.changes.is_empty() {
        return;
    }
    let mut g = guard_plan(before, after, keys);
    psk_rollback(&mut g, &hp.changes, before);
    hp.guard = Some(g);
}

/// Builds the plan.
pub fn build(
    inputs: &Inputs,
    desired: &BTreeMap<HostName, Desired>,
    live: &BTreeMap<HostName, Gathered>,
) -> Plan {
    let inv = &inputs.inventory;
    let mut pairs = crate::psk::pair_changes(inv, desired, live, &inputs.psk);
    let mut hosts = Vec::new();
    for (name, d) in desired {
        let host = &inv.hosts[name];
        let target = host
            .ssh
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let mut hp = HostPlan {
            host: name.clone(),
            role: host.role.name().to_owned(),
            target,
            status: HostStatus::Planned,
            error: None,
            changes: vec![],
            warnings: vec![],
            skipped: vec![],
            notes: d.notes.clone(),
            fingerprint: None,
            guard: None,
        };
        match live.get(name) {
            Some(Ok(l)) => {
                let hd = diff::diff_host(&d.state, l, &inputs.keys);
                if let Some(e) = &hd.unavailable {
                    hp.status = HostStatus::Failed;
                    hp.error = Some(e.to_string());
                    hosts.push(hp);
                    continue;
                }
                hp.changes = hd.changes;
                if let Some(extra) = pairs.remove(name) {
                    crate::psk::merge(&mut hp.changes, extra, &inputs.keys);
                }
                hp.warnings = hd.warnings;
                if hd.key_changed
                    && matches!(host.role, Role::Hub(_))
                    && let Some(configs) = client_configs(inv)
                {
                    hp.warnings.push(format!(
                            "the hub's key is in every unmanaged client's config: once accepted, hand these out again: {configs}"
                        ));
                }
                hp.skipped = hd.skipped;
                attach_pending_keys(&mut hp.changes, &d.state, inv);
                attach_mtu(&mut hp.changes, inv.network.mtu);
                if host.guard {
                    guard_host(&mut hp, l, &d.state, &inputs.keys);
                }
                hp.fingerprint = Some(fingerprint(&l.state, &d.state));
            }
            Some(Err(e)) => {
                hp.status = HostStatus::Failed;
                hp.error = Some(e.clone());
            }
            None => {
                hp.status = HostStatus::Failed;
                hp.error = Some("not gathered".into());
            }
        }
        hosts.push(hp);
    }
    let mut manual_steps = manual_steps(inv, &inputs.keys);
    manual_steps.extend(psk_hand_outs(inv, &inputs.keys, &hosts));
    Plan {
        version: PLAN_VERSION,
        network: inv.network.name.clone(),
        inventory: inv.path.display().to_string(),
        inventory_digest: inputs.digest.clone(),
        hosts,
        manual_steps,
        checksum: None,
    }
}

/// An unmanaged client whose preshared key the hub sets, makes or rotates in this plan needs
/// its config again (the key is only in there).
fn psk_hand_outs(inv: &Inventory, keys: &PinnedKeys, hosts: &[HostPlan]) -> Vec<ManualStep> {
    let (hub, _) = inv.hub();
    let Some(hp) = hosts.iter().find(|h| h.host == hub.name) else {
        return vec![];
    };
    inv.hosts
        .values()
        .filter(|h| !h.is_managed() && inv.has_psk(h))
        .filter(|h| {
            let path = crate::psk::path(&h.name);
            hp.changes.iter().any(|c| match &c.op {
                Op::LoadPsk { name, .. } => name == h.name.as_str(),
                Op::GeneratePsk { path: p } | Op::RotatePsk { path: p } => *p == path,
                _ => false,
            })
        })
        .filter_map(|h| {
            let how = crate::psk::hand_out_again(inv, keys, &h.name)?;
            Some(ManualStep {
                subject: h.name.to_string(),
                text: format!(
                    "its preshared key is new: once applied, hand out its config again with {how}"
                ),
            })
        })
        .collect()
}

/// The interface's MTU on the step that brings it up (the inventory's; the diff sees only
/// the host's state, which has no MTU).
fn attach_mtu(changes: &mut [crate::plan::Change], inventory_mtu: Option<u16>) {
    for c in changes {
        if let Op::CreateInterface { mtu, .. } = &mut c.op {
            *mtu = inventory_mtu;
        }
    }
}

/// Marks the lines of the interface's config that hold a key known only after apply's first
/// step, so that apply — also of a saved plan — fills them in before running.
fn attach_pending_keys(changes: &mut [crate::plan::Change], desired: &HostState, inv: &Inventory) {
    let Some(wg) = &desired.interface else { return };
    if wg.peers.values().all(|p| p.public_key.is_some()) {
        return;
    }
    let name = wg.name.as_str();
    let (content, pending) =
        persist::wg_conf_and_pending(wg, inv.network.mtu, &persist::up_script_path(name));
    let conf = persist::conf_path(name);
    for c in changes {
        if let Op::WriteFile {
            path,
            content: c_content,
            pending_keys,
            ..
        } = &mut c.op
            && *path == conf
            && *c_content == content
        {
            *pending_keys = pending.clone();
        }
    }
}

/// A guarded host's way back: the inverse diff (from the desired state back to the live state
/// gathered), without files (the host restores its own copies of them), packages, keys and
/// services, and the interface to delete when this apply creates it.
pub fn guard_plan(before: &LiveHost, after: &HostState, keys: &PinnedKeys) -> GuardPlan {
    let as_live = LiveHost {
        state: after.clone(),
        system: before.system.clone(),
        resolved: before.resolved.clone(),
        key_file_mode: Some(0o600),
        ..LiveHost::default()
    };
    let rollback: Vec<crate::plan::Change> = diff::diff_host(&before.state, &as_live, keys)
        .changes
        .into_iter()
        .filter(|c| {
            !matches!(
                c.op,
                Op::WriteFile { .. }
                    | Op::RemoveFile { .. }
                    | Op::InstallPackages { .. }
                    | Op::LoadPsk { .. }
                    | Op::GeneratePsk { .. }
                    | Op::RotatePsk { .. }
                    | Op::WritePsk { .. }
                    | Op::SwitchKey { .. }
                    | Op::GenerateKey { .. }
                    | Op::FixKeyMode { .. }
                    | Op::EnableService { .. }
                    | Op::StartService { .. }
                    | Op::TakeOverInterface { .. }
            )
        })
        .collect();
    // The chains go back as they were gathered, not as the (restored) rules files say: a
    // chain edited by hand since the files were written comes back as it was.
    let mut restored = std::collections::BTreeSet::new();
    let rollback = rollback
        .into_iter()
        .filter_map(|c: crate::plan::Change| match &c.op {
            Op::RestoreChains { chain } => {
                let family = chain.family;
                if !restored.insert(family) {
                    return None;
                }
                let rules = persist::rules_file(&before.state, family)?;
                Some(crate::plan::Change {
                    op: Op::RestoreRules { family, rules },
                    ..c
                })
            }
            _ => Some(c),
        })
        .collect();
    let created_interface = match (&before.state.interface, &after.interface) {
        (None, Some(wg)) => Some(wg.name.to_string()),
        _ => None,
    };
    GuardPlan {
        rollback,
        created_interface,
    }
}

/// A guarded host's way back for its preshared keys: the guard restores the key files it
/// writes from its copies, and each peer whose key this apply loads gets its key reloaded from
/// the restored file (or taken off, when it had none). No key value is in the rollback.
pub fn psk_rollback(g: &mut GuardPlan, changes: &[crate::plan::Change], before: &LiveHost) {
    for c in changes {
        if let Op::LoadPsk {
            interface,
            name,
            public_key,
            path,
        } = &c.op
        {
            let had = before
                .state
                .interface
                .as_ref()
                .and_then(|i| {
                    i.peers
                        .values()
                        .find(|p| p.public_key.is_some() && p.public_key == *public_key)
                })
                .and_then(|p| p.preshared_key.as_ref());
            g.rollback.push(crate::plan::Change {
                op: Op::LoadPsk {
                    interface: interface.clone(),
                    name: name.clone(),
                    public_key: public_key.clone(),
                    path: had.and(path.clone()),
                },
                resource: format!("preshared key for {name} (restore)"),
                ..c.clone()
            });
        }
    }
}

/// The commands that hand out every unmanaged client's config (`meshctl client phone`, ...),
/// which all carry the hub's key; `None` when there are none.
pub fn client_configs(inv: &Inventory) -> Option<String> {
    let commands: Vec<String> = inv
        .hosts
        .values()
        .filter(|h| !h.is_managed())
        .map(|h| format!("`meshctl client {}`", h.name))
        .collect();
    (!commands.is_empty()).then(|| commands.join(", "))
}

/// Steps meshctl cannot do: the routers' static routes and the unmanaged clients' configs.
pub fn manual_steps(inv: &Inventory, keys: &PinnedKeys) -> Vec<ManualStep> {
    let mut steps = Vec::new();
    for r in inv.routers.values() {
        let gw = &inv.hosts[&r.gateway];
        if let Role::Gateway(g) = &gw.role {
            steps.push(ManualStep {
                subject: r.name.to_string(),
                text: format!(
                    "add the static IPv4 route {} via {} (the VPN through {})",
                    inv.network.ipv4, g.lan.address, gw.name
                ),
            });
            // The other sites' home LANs are reached through the same gateway.
            for (other, lan) in inv.lans() {
                if other.name != gw.name {
                    steps.push(ManualStep {
                        subject: r.name.to_string(),
                        text: format!(
                            "add the static IPv4 route {} via {} (the home LAN of {} through {})",
                            lan.subnet, g.lan.address, other.name, gw.name
                        ),
                    });
                }
            }
            if let (Some(_), Some(v6)) = (g.lan.ipv6_prefix, &inv.network.ipv6) {
                let via = g.lan.ipv6_address.map_or_else(
                    || {
                        format!(
                            "{}'s address on the LAN (e.g. its link-local fe80:: address on {})",
                            gw.name, g.lan.interface
                        )
                    },
                    |a| a.to_string(),
                );
                steps.push(ManualStep {
                    subject: r.name.to_string(),
                    text: format!("add the static IPv6 route {} via {via} (the clients' public addresses through {})", v6.clients, gw.name),
                });
            }
        }
    }
    // An unmanaged client whose key meshctl made earlier has its config already (the private
    // key is only there); one with a key made on the device, or without a key yet, needs one.
    for h in inv.hosts.values().filter(|h| !h.is_managed()) {
        let text = match (&h.public_key, keys.get(&h.name)) {
            (Some(_), _) => format!(
                "give it its config: `meshctl client {} --qr` (no private key inside: the device keeps its own)",
                h.name
            ),
            (None, Some(_)) => continue,
            (None, None) => format!(
                "run `meshctl client {} --qr` and scan the code with the WireGuard app (its key is made then; then apply again so the hub knows it)",
                h.name
            ),
        };
        steps.push(ManualStep {
            subject: h.name.to_string(),
            text,
        });
    }
    steps
}
