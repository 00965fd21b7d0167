//! Preshared keys: one per pair of peers meshctl configures — the hub and each host whose pair
//! has one (`network.preshared_keys`, or the host's `preshared_key`).
//!
//! How a key travels: it is generated on the hub (`wg genpsk`, in apply's first step, only where
//! the hub's file is missing, or when it is rotated) into `/etc/wireguard/psk/<peer>.psk` (0600,
//! directory 0700). When the other end is a managed host, apply reads it from the hub once the
//! plan is confirmed, holds it in memory only (zeroized when dropped) and sends it inside that
//! host's change script, on stdin, which writes it atomically into
//! `/etc/wireguard/psk/<hub>.psk` (0600). No plan, JSON, log, error or file on the controller
//! holds it: the plan's `write_psk` op names only where it comes from. An unmanaged client (a
//! phone) gets it only inside its config, read from the hub by `meshctl client`. `wg0.conf`
//! never holds it: `PostUp = wg set %i peer KEY preshared-key FILE` loads it from the file.
//!
//! Drift, without the key leaving a host: the gather compares each peer's live preshared key
//! with its file on the host itself and sends a SHA-256 of each file. The diff sees a peer
//! whose live key is not its file's; [`pair_changes`] compares the hub's file with the other
//! end's (by hash) and plans the generation, the carry and the reloads.

use std::collections::BTreeMap;

use crate::desired::Desired;
use crate::inventory::{Inventory, Role};
use crate::names::HostName;
use crate::plan::{Action, Change, Op};
use crate::planner::Gathered;
use crate::state::PskFile;

/// The directory of preshared key files on every host.
pub const DIR: &str = "/etc/wireguard/psk";

/// The file on a host that holds its pair's preshared key with `other` (the peer's name on the
/// hub, the hub's name on the other end).
pub fn path(other: &HostName) -> String {
    format!("{DIR}/{other}.psk")
}

/// What to do about the preshared keys of one apply beyond the plain diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PskWork {
    /// Hosts whose pair(s) get a new preshared key (`meshctl rotate HOST --psk`; the hub: all).
    pub rotate: std::collections::BTreeSet<HostName>,
}

/// The hub's preshared key files its first step makes where they are missing: one per host
/// whose pair has one, also an unmanaged one whose key is not known yet (its config, made
/// before the hub knows its key, carries the preshared key too).
pub fn hub_files(inv: &Inventory) -> Vec<String> {
    inv.hosts
        .values()
        .filter(|h| inv.has_psk(h))
        .map(|h| path(&h.name))
        .collect()
}

/// Whether the pair of `peer` (not the hub) gets a new preshared key in this run.
fn rotated(work: &PskWork, hub: &HostName, peer: &HostName) -> bool {
    work.rotate.contains(hub) || work.rotate.contains(peer)
}

/// The changes of every pair that the per-host diff cannot see, by host: the hub's key file
/// to generate (missing) or rotate, the other end's file to write (missing, or its hash not the
/// hub's file's), the reloads that a new file needs, and file modes. Hosts that could not be
/// gathered get nothing, and neither does the other end of a pair whose hub was not gathered
/// (nothing can be carried from it).
pub fn pair_changes(
    inv: &Inventory,
    desired: &BTreeMap<HostName, Desired>,
    live: &BTreeMap<HostName, Gathered>,
    work: &PskWork,
) -> BTreeMap<HostName, Vec<Change>> {
    let mut out: BTreeMap<HostName, Vec<Change>> = BTreeMap::new();
    let (hub, _) = inv.hub();
    let Some(Ok(hub_live)) = live.get(&hub.name) else {
        return out;
    };
    let Some(hub_desired) = desired.get(&hub.name) else {
        return out;
    };
    let wg = inv.network.interface.to_string();
    // Pairs with a peer the hub is set up with: one left out (its key not known yet) gets
    // its file made by step 1 all the same (see `hub_files`), as nothing of the plan's.
    let peers_of_hub = hub_desired
        .state
        .interface
        .iter()
        .flat_map(|i| i.peers.keys());
    let peers_of_hub: std::collections::BTreeSet<&String> = peers_of_hub.collect();
    for peer in inv
        .hosts
        .values()
        .filter(|h| inv.has_psk(h) && peers_of_hub.contains(&h.name.to_string()))
    {
        let hub_path = path(&peer.name);
        let hub_file = hub_live.psk_files.get(&hub_path);
        let rotate = rotated(work, &hub.name, &peer.name);
        let hub_changes = out.entry(hub.name.clone()).or_default();
        if hub_file.is_none() {
            hub_changes.push(change(
                Action::Add,
                format!("preshared key for {} (set)", peer.name),
                Op::GeneratePsk {
                    path: hub_path.clone(),
                },
            ));
        } else if rotate {
            hub_changes.push(change(
                Action::Change,
                format!("preshared key for {} (rotate)", peer.name),
                Op::RotatePsk {
                    path: hub_path.clone(),
                },
            ));
        }
        if let Some(f) = hub_file.filter(|f| f.mode & 0o077 != 0) {
            hub_changes.push(mode_change(&hub_path, f));
        }
        if rotate && hub_file.is_some() {
            // The live key equals the old file: the diff sees nothing to reload.
            hub_changes.push(load(&wg, peer.name.as_str(), None, &hub_path, "rotate"));
        }
        if !peer.is_managed() {
            continue;
        }
        let (Some(Ok(peer_live)), true) = (live.get(&peer.name), desired.contains_key(&peer.name))
        else {
            continue;
        };
        let peer_path = path(&hub.name);
        let peer_file = peer_live.psk_files.get(&peer_path);
        let carry = rotate
            || match (hub_file, peer_file) {
                (Some(h), Some(p)) => h.sha256 != p.sha256,
                _ => true,
            };
        let peer_changes = out.entry(peer.name.clone()).or_default();
        if carry {
            peer_changes.push(change(
                if peer_file.is_some() {
                    Action::Change
                } else {
                    Action::Add
                },
                format!(
                    "preshared key file {peer_path} ({}, carried from {})",
                    if rotate { "rotate" } else { "set" },
                    hub.name
                ),
                Op::WritePsk {
                    path: peer_path.clone(),
                    from: hub.name.clone(),
                    source: hub_path.clone(),
                },
            ));
            peer_changes.push(load(
                &wg,
                hub.name.as_str(),
                None,
                &peer_path,
                if rotate { "rotate" } else { "set" },
            ));
        } else if let Some(f) = peer_file.filter(|f| f.mode & 0o077 != 0) {
            peer_changes.push(mode_change(&peer_path, f));
        }
    }
    out.retain(|_, v| !v.is_empty());
    out
}

/// Merges the pairs' changes into a host's diff: a reload the diff already has (the peer is
/// set or its key loaded anyway) is not added twice, and the public key of each reload is the
/// one the diff's own ops use for that peer.
pub fn merge(changes: &mut Vec<Change>, extra: Vec<Change>, keys: &crate::keys::PinnedKeys) {
    for mut c in extra {
        if let Op::LoadPsk {
            name, public_key, ..
        } = &mut c.op
        {
            let covered = changes.iter().any(|d| match &d.op {
                Op::SetPeer { name: n, .. } | Op::LoadPsk { name: n, .. } => n == name,
                _ => false,
            });
            if covered {
                continue;
            }
            *public_key = HostName::parse(name)
                .ok()
                .and_then(|h| keys.get(&h).cloned());
        }
        changes.push(c);
    }
}

/// The hosts the plan rotates a preshared key with that meshctl does not manage: their
/// configs must be handed out again.
pub fn unmanaged_rotated(inv: &Inventory, work: &PskWork) -> Vec<HostName> {
    let (hub, _) = inv.hub();
    inv.hosts
        .values()
        .filter(|h| !h.is_managed() && inv.has_psk(h) && rotated(work, &hub.name, &h.name))
        .map(|h| h.name.clone())
        .collect()
}

/// What `meshctl rotate` prints after the apply: the key's change, where it is recorded, and
/// every unmanaged client whose config must be handed out again (the hub's key, or a rotated
/// preshared key, is inside it) — worded like `meshctl client NAME --new-key`.
pub fn rotation_summary(
    inv: &Inventory,
    keys: &crate::keys::PinnedKeys,
    host: &HostName,
    old: &crate::names::WgKey,
    new: &crate::names::WgKey,
    psk: bool,
) -> String {
    let mut s = format!(
        "Rotated the key of {host}: public key {} → {} (pinned, and the rotation recorded, in {}).\n",
        old.short(),
        new.short(),
        inv.keys_path().display()
    );
    let work = PskWork {
        rotate: if psk {
            [host.clone()].into()
        } else {
            Default::default()
        },
    };
    let mut again: Vec<HostName> = if is_hub(inv, host) {
        inv.hosts
            .values()
            .filter(|h| !h.is_managed())
            .map(|h| h.name.clone())
            .collect()
    } else {
        vec![]
    };
    for h in unmanaged_rotated(inv, &work) {
        if !again.contains(&h) {
            again.push(h);
        }
    }
    let holds = if is_hub(inv, host) {
        "hub's key"
    } else {
        "preshared key"
    };
    for h in again {
        if let Some(how) = hand_out_again(inv, keys, &h) {
            s.push_str(&format!(
                "Hand out the config of {h} again (it holds the {holds} of its pair): {how}.\n"
            ));
        }
    }
    s
}

/// How an unmanaged client gets its config again once the hub's key or its pair's preshared
/// key changed: a key made on the device stays (`client NAME --qr`); one meshctl made was
/// handed out with its private half, of which meshctl keeps no copy, so that config comes
/// with a new key (`--new-key`, then apply). `None` for a client never handed out: there is
/// nothing out there to replace.
pub fn hand_out_again(
    inv: &Inventory,
    keys: &crate::keys::PinnedKeys,
    h: &HostName,
) -> Option<String> {
    let host = inv.hosts.get(h)?;
    if host.public_key.is_some() {
        Some(format!("`meshctl client {h} --qr`"))
    } else if keys.get(h).is_some() {
        Some(format!(
            "`meshctl client {h} --new-key --qr`, then `meshctl apply` (meshctl keeps no copy of the private key it handed out, so the config comes with a new one)"
        ))
    } else {
        None
    }
}

/// Whether `host` is the hub of `inv`.
pub fn is_hub(inv: &Inventory, host: &HostName) -> bool {
    inv.hosts
        .get(host)
        .is_some_and(|h| matches!(h.role, Role::Hub(_)))
}

/// The preshared keys apply carries, read from the hubs once the plan is confirmed: in memory
/// only, zeroized when dropped, never printed (`Debug` shows where each came from, not what).
#[derive(Default)]
pub struct Carried {
    keys: BTreeMap<(HostName, String), zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// Marks the start of one carried key in the output of [`crate::scripts::steps::carry`]: the
/// line holds the file's path, the next line the key.
pub const MARK_CARRIED: &str = "@@meshctl psk@@";

impl Carried {
    /// The key read from `source` on `from`.
    pub fn get(&self, from: &HostName, source: &str) -> Option<&str> {
        self.keys
            .get(&(from.clone(), source.to_owned()))
            .map(|k| k.as_str())
    }

    /// Reads the keys `from` printed (see [`crate::scripts::steps::carry`]); each must be one
    /// of `wanted` and a well-formed key. Errors name the file, never what was in it.
    pub fn read(&mut self, from: &HostName, stdout: &str, wanted: &[String]) -> Result<(), String> {
        let mut lines = stdout.lines();
        while let Some(l) = lines.next() {
            let Some(p) = l.strip_prefix(MARK_CARRIED) else {
                continue;
            };
            let p = p.trim();
            if !wanted.iter().any(|w| w == p) {
                return Err(format!(
                    "{from} sent a preshared key that was not asked for"
                ));
            }
            let key = zeroize::Zeroizing::new(lines.next().unwrap_or_default().trim().to_owned());
            if !well_formed(&key) {
                return Err(format!(
                    "{from}:{p} does not hold a preshared key (44 characters of base64, as `wg genpsk` makes)"
                ));
            }
            self.keys.insert((from.clone(), p.to_owned()), key);
        }
        match wanted.iter().find(|w| self.get(from, w).is_none()) {
            Some(w) => Err(format!("{from}:{w}: the preshared key could not be read")),
            None => Ok(()),
        }
    }
}

/// 32 bytes of standard base64 (a WireGuard key).
fn well_formed(k: &str) -> bool {
    k.len() == 44
        && k.ends_with('=')
        && k[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn load(
    interface: &str,
    peer: &str,
    key: Option<crate::names::WgKey>,
    path: &str,
    why: &str,
) -> Change {
    change(
        Action::Change,
        format!("preshared key for {peer} ({why})"),
        Op::LoadPsk {
            interface: interface.to_owned(),
            name: peer.to_owned(),
            public_key: key,
            path: Some(path.to_owned()),
        },
    )
}

fn mode_change(path: &str, f: &PskFile) -> Change {
    Change {
        action: Action::Change,
        kind: "psk".into(),
        resource: format!("mode of {path}"),
        before: Some(format!("{:04o}", f.mode)),
        after: Some("0600".into()),
        diff: None,
        op: Op::FixKeyMode {
            path: path.to_owned(),
        },
    }
}

fn change(action: Action, resource: String, op: Op) -> Change {
    Change {
        action,
        kind: "psk".into(),
        resource,
        before: None,
        after: None,
        diff: None,
        op,
    }
}
