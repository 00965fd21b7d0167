//! The diff: desired vs live state of one host, per resource kind, into plan changes.
//!
//! Each resource kind follows one shape, `fn(live: Option<&T>, desired: Option<&T>) ->
//! Option<Change>`: `None` means in sync, and removals are computed explicitly from what meshctl
//! owns (its interface's peers, routes with its proto, its chains and jumps, its NDP entries,
//! its files). What the kernel changes by itself is not drift: a roaming peer's endpoint,
//! handshakes, counters.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::keys::PinnedKeys;
use crate::names::{HostName, WgKey};
use crate::plan::{Action, Change, Op};
use crate::state::{HostState, LiveHost, ManagedFile, Peer, Psk, WgInterface};

/// The outcome of diffing one host.
#[derive(Debug, Clone, Default)]
pub struct HostDiff {
    /// The changes that bring the host to its desired state.
    pub changes: Vec<Change>,
    /// Things the user should know that do not change the exit code (e.g. a foreign rule shadowing meshctl's).
    pub warnings: Vec<String>,
    /// What is not done on this host and why (e.g. no systemd: nothing enabled at boot).
    pub skipped: Vec<String>,
    /// The host's live public key is not the pinned one (also in `warnings`, for people): a
    /// fact the planner acts on, so it is not left to the text.
    pub key_changed: bool,
    /// The host lacks something it needs and has no package manager to install it with: the
    /// host cannot be planned.
    pub unavailable: Option<crate::packages::Unavailable>,
}

/// Diffs `desired` against `live` for one host. `pinned` names live peers by their host.
pub fn diff_host(desired: &HostState, live: &LiveHost, pinned: &PinnedKeys) -> HostDiff {
    let mut d = HostDiff {
        warnings: live.warnings.clone(),
        ..Default::default()
    };
    let l = &live.state;
    // Packages first: everything after them needs them.
    match crate::packages::needed(desired, live) {
        Ok(Some((manager, packages))) => {
            for p in packages {
                d.changes.push(simple(
                    Action::Add,
                    "package",
                    format!("package {p} ({})", manager.name()),
                    Op::InstallPackages {
                        manager,
                        packages: vec![p],
                    },
                ));
            }
        }
        Ok(None) => {}
        Err(e) => d.unavailable = Some(e),
    }
    interface(
        l.interface.as_ref(),
        desired.interface.as_ref(),
        live,
        pinned,
        &mut d,
    );

    for (k, v) in &desired.sysctls {
        match l.sysctls.get(k) {
            Some(cur) if cur == v => {}
            cur => d.changes.push(Change {
                action: if cur.is_some() {
                    Action::Change
                } else {
                    Action::Add
                },
                kind: "sysctl".into(),
                resource: format!("sysctl {k}"),
                before: cur.cloned(),
                after: Some(v.clone()),
                diff: None,
                op: Op::SetSysctl {
                    key: k.clone(),
                    value: v.clone(),
                },
            }),
        }
    }

    set_changes(
        &mut d,
        &desired.routes,
        &l.routes,
        "route",
        route_text,
        |r| Op::ReplaceRoute { route: r.clone() },
        |r| Op::DelRoute { route: r.clone() },
    );
    set_changes(
        &mut d,
        &desired.rules,
        &l.rules,
        "rule",
        rule_text,
        |r| Op::AddRule { rule: r.clone() },
        |r| Op::DelRule { rule: r.clone() },
    );

    // Chains: a chain whose rules differ is replaced as a whole (atomically, by restore).
    for (id, rules) in &desired.firewall.chains {
        let name = format!("chain {} {}/{}", fam(id.family), id.table, id.chain);
        match l.firewall.chains.get(id) {
            Some(cur) if cur == rules => {}
            cur => d.changes.push(Change {
                action: if cur.is_some() {
                    Action::Change
                } else {
                    Action::Add
                },
                kind: "chain".into(),
                resource: name,
                before: cur.map(|c| c.join("\n")),
                after: Some(rules.join("\n")),
                diff: cur.map(|c| unified(&lines(c), &lines(rules))),
                op: Op::RestoreChains { chain: id.clone() },
            }),
        }
    }
    set_changes(
        &mut d,
        &desired.firewall.jumps,
        &l.firewall.jumps,
        "jump",
        jump_text,
        |j| Op::AddJump { jump: j.clone() },
        |j| Op::DelJump { jump: j.clone() },
    );
    for id in l
        .firewall
        .chains
        .keys()
        .filter(|id| !desired.firewall.chains.contains_key(*id))
    {
        d.changes.push(simple(
            Action::Remove,
            "chain",
            format!("chain {} {}/{}", fam(id.family), id.table, id.chain),
            Op::DeleteChain { chain: id.clone() },
        ));
    }

    set_changes(
        &mut d,
        &desired.ndp_proxies,
        &l.ndp_proxies,
        "ndp_proxy",
        |n| format!("ndp proxy {} dev {}", n.address, n.device),
        |n| Op::AddNdpProxy { entry: n.clone() },
        |n| Op::DelNdpProxy { entry: n.clone() },
    );

    for (path, want) in &desired.files {
        if let Some(c) = file(l.files.get(path), Some(want), path) {
            d.changes.push(c);
        }
    }
    for (path, have) in &l.files {
        if !desired.files.contains_key(path)
            && let Some(c) = file(Some(have), None, path)
        {
            d.changes.push(c);
        }
    }

    if live.system.systemd {
        services(desired, l, &mut d);
    } else if !desired.services.is_empty() {
        d.skipped.push(format!(
            "no systemd on this host: {} not enabled at boot (the files are written; run `wg-quick up` at boot by other means)",
            desired.services.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    d
}

/// Where systemd runs, `wg-quick@IF` owns the interface: it brings a new one up (instead of a
/// `wg-quick up` behind its back), takes over one that is up without it, and is enabled at
/// boot, when its PostUp restores the rest. A unit that is already active keeps the interface;
/// its changes are made live (`wg set`, `ip`) as everywhere.
/// What the boot script (the interface's `PostUp`) puts back at boot, for the enable line:
/// only what this host has.
fn boot_restores(desired: &HostState) -> String {
    let psks = desired
        .interface
        .as_ref()
        .is_some_and(|w| w.peers.values().any(|p| p.preshared_key.is_some()));
    let parts: Vec<&str> = [
        (psks, "the preshared keys"),
        (!desired.firewall.chains.is_empty(), "the firewall chains"),
        (!desired.sysctls.is_empty(), "the sysctls"),
        (
            !desired.routes.is_empty() || !desired.rules.is_empty(),
            "the routes",
        ),
        (!desired.ndp_proxies.is_empty(), "the NDP answers"),
    ]
    .into_iter()
    .filter_map(|(has, what)| has.then_some(what))
    .collect();
    match parts.split_last() {
        None => String::new(),
        Some((last, [])) => format!("; its PostUp restores {last}"),
        Some((last, rest)) => format!("; its PostUp restores {} and {last}", rest.join(", ")),
    }
}

fn services(desired: &HostState, l: &HostState, d: &mut HostDiff) {
    let wg = desired.interface.as_ref().map(|w| w.name.to_string());
    for (unit, want) in &desired.services {
        let have = l.services.get(unit);
        let owns = wg.as_ref().filter(|w| *unit == format!("wg-quick@{w}"));
        if let (Some(w), true) = (owns, want.active && !have.is_some_and(|s| s.active)) {
            let create = d
                .changes
                .iter_mut()
                .find(|c| matches!(&c.op, Op::CreateInterface { interface, .. } if interface == w));
            match create {
                Some(c) => {
                    c.resource = format!("interface {w} (started by {unit})");
                    c.op = Op::StartService {
                        unit: unit.clone(),
                        interface: w.clone(),
                    };
                }
                None if l.interface.is_some() => d.changes.push(simple(
                    Action::Change,
                    "service",
                    format!("{unit} takes over {w} (up without it: down, then started by it)"),
                    Op::TakeOverInterface {
                        unit: unit.clone(),
                        interface: w.clone(),
                    },
                )),
                None => {}
            }
        }
        if want.enabled && !have.is_some_and(|s| s.enabled) {
            let what = if let Some(w) = owns {
                format!(
                    "enable {unit} at boot (brings {w} up{})",
                    boot_restores(desired)
                )
            } else {
                format!("enable {unit} at boot")
            };
            d.changes.push(simple(
                Action::Add,
                "service",
                what,
                Op::EnableService { unit: unit.clone() },
            ));
        }
    }
}

fn fam(f: crate::state::Family) -> &'static str {
    match f {
        crate::state::Family::Ipv4 => "ipv4",
        crate::state::Family::Ipv6 => "ipv6",
    }
}

/// The changes for a set of things meshctl owns (routes, rules, jumps, NDP entries,
/// addresses): what only the desired state has is added, what only the live state has is
/// removed.
fn set_changes<T: Ord>(
    d: &mut HostDiff,
    desired: &BTreeSet<T>,
    live: &BTreeSet<T>,
    kind: &str,
    text: impl Fn(&T) -> String,
    add: impl Fn(&T) -> Op,
    remove: impl Fn(&T) -> Op,
) {
    for x in desired.difference(live) {
        d.changes.push(simple(Action::Add, kind, text(x), add(x)));
    }
    for x in live.difference(desired) {
        d.changes
            .push(simple(Action::Remove, kind, text(x), remove(x)));
    }
}

/// The addresses of interface `name`, as `set_changes` compares them.
fn address_changes(d: &mut HostDiff, name: &str, want: &BTreeSet<IpNet>, have: &BTreeSet<IpNet>) {
    set_changes(
        d,
        want,
        have,
        "address",
        |a| format!("address {a} on {name}"),
        |a| Op::AddAddress {
            interface: name.to_owned(),
            address: *a,
        },
        |a| Op::DelAddress {
            interface: name.to_owned(),
            address: *a,
        },
    );
}

/// A peer to add (`wg set IF peer ...`).
fn peer_added(interface: &str, peer_name: &str, p: &Peer) -> Change {
    Change {
        action: Action::Add,
        kind: "peer".into(),
        resource: format!("peer {peer_name}"),
        before: None,
        after: Some(peer_text(p)),
        diff: None,
        op: Op::SetPeer {
            interface: interface.to_owned(),
            name: peer_name.to_owned(),
            peer: p.clone(),
        },
    }
}

/// The preshared key of a peer that is otherwise in sync: loaded from its file, or taken off.
fn psk_load(interface: &str, peer_name: &str, want: &Peer, have: &Peer) -> Change {
    let (path, why) = match &want.preshared_key {
        Some(Psk::File(p)) => (Some(p.clone()), "set"),
        _ => (None, "remove"),
    };
    Change {
        action: Action::Change,
        kind: "psk".into(),
        resource: format!("preshared key for {peer_name} ({why})"),
        before: Some(psk_text(have.preshared_key.as_ref()).to_owned()),
        after: Some(psk_text(want.preshared_key.as_ref()).to_owned()),
        diff: None,
        op: Op::LoadPsk {
            interface: interface.to_owned(),
            name: peer_name.to_owned(),
            public_key: want.public_key.clone(),
            path,
        },
    }
}

/// A preshared key as the plan shows it: never its value.
fn psk_text(p: Option<&Psk>) -> &'static str {
    match p {
        None => "none",
        Some(Psk::File(_)) => "from its file",
        Some(Psk::Other) => "not its file's",
    }
}

fn simple(action: Action, kind: &str, resource: String, op: Op) -> Change {
    Change {
        action,
        kind: kind.into(),
        resource,
        before: None,
        after: None,
        diff: None,
        op,
    }
}

fn route_text(r: &crate::state::Route) -> String {
    let table = r.table.map(|t| format!(" table {t}")).unwrap_or_default();
    match r.via {
        Some(v) => format!("route {} via {v} dev {}{table}", r.destination, r.device),
        None => format!("route {} dev {}{table}", r.destination, r.device),
    }
}

fn rule_text(r: &crate::state::RoutingRule) -> String {
    format!("rule {} {}", r.family.ip_flag(), r.selector())
}

fn jump_text(j: &crate::state::Jump) -> String {
    format!("jump {} {}/{} -> {}", fam(j.family), j.table, j.from, j.to)
}

fn lines(rules: &[String]) -> String {
    rules.iter().map(|r| format!("{r}\n")).collect()
}

/// A unified diff of two texts.
pub fn unified(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}

fn file(live: Option<&ManagedFile>, desired: Option<&ManagedFile>, path: &str) -> Option<Change> {
    let (action, op) = match (live, desired) {
        (Some(l), Some(d)) if l == d => return None,
        (None, None) => return None,
        (None, Some(d)) => (
            Action::Add,
            Op::WriteFile {
                path: path.into(),
                content: d.content.clone(),
                mode: d.mode,
                pending_keys: vec![],
            },
        ),
        (Some(_), Some(d)) => (
            Action::Change,
            Op::WriteFile {
                path: path.into(),
                content: d.content.clone(),
                mode: d.mode,
                pending_keys: vec![],
            },
        ),
        (Some(_), None) => (Action::Remove, Op::RemoveFile { path: path.into() }),
    };
    let mode_changed = live.map(|f| f.mode) != desired.map(|f| f.mode);
    let mode = |f: Option<&ManagedFile>| {
        f.filter(|_| mode_changed)
            .map(|f| format!("{:04o}", f.mode))
    };
    let text = |f: Option<&ManagedFile>| f.map(|f| f.content.clone()).unwrap_or_default();
    let diff = unified(&text(live), &text(desired));
    Some(Change {
        action,
        kind: "file".into(),
        resource: format!("file {path}"),
        before: mode(live).map(|m| format!("mode {m}")),
        after: mode(desired).map(|m| format!("mode {m}")),
        diff: (!diff.is_empty()).then_some(diff),
        op,
    })
}

fn peer_text(p: &Peer) -> String {
    let mut s = format!(
        "key {} allowed-ips {}",
        p.public_key
            .as_ref()
            .map_or_else(|| "(known after apply)".to_owned(), |k| k.short()),
        p.allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if let Some(e) = &p.endpoint {
        s.push_str(&format!(" endpoint {e}"));
    }
    if let Some(k) = p.persistent_keepalive {
        s.push_str(&format!(" keepalive {k}"));
    }
    if p.preshared_key.is_some() {
        s.push_str(&format!(
            " preshared key ({})",
            psk_text(p.preshared_key.as_ref())
        ));
    }
    s
}

/// Whether a live endpoint matches the desired one, resolving a desired name with the
/// addresses the host itself resolved.
fn endpoint_matches(
    live: Option<&str>,
    desired: &str,
    resolved: &BTreeMap<String, Vec<std::net::IpAddr>>,
) -> bool {
    let Some(live) = live else { return false };
    if live == desired {
        return true;
    }
    if let (Ok(l), Ok(d)) = (
        live.parse::<std::net::SocketAddr>(),
        desired.parse::<std::net::SocketAddr>(),
    ) {
        return l == d;
    }
    let split = |s: &str| -> Option<(String, String)> {
        let (h, p) = s.rsplit_once(':')?;
        Some((
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            p.to_owned(),
        ))
    };
    match (split(live), split(desired)) {
        (Some((lh, lp)), Some((dh, dp))) if lp == dp => resolved
            .get(&dh)
            .is_some_and(|addrs| addrs.iter().any(|a| a.to_string() == lh)),
        _ => false,
    }
}

fn interface(
    live: Option<&WgInterface>,
    desired: Option<&WgInterface>,
    host: &LiveHost,
    pinned: &PinnedKeys,
    d: &mut HostDiff,
) {
    let Some(want) = desired else { return };
    let name = want.name.to_string();
    let Some(have) = live else {
        d.changes.push(simple(
            Action::Add,
            "interface",
            format!("interface {name}"),
            Op::CreateInterface {
                interface: name.clone(),
                key_file: Some(want.private_key_file.path.clone()),
                // the inventory's, set by the planner (`attach_mtu`)
                mtu: None,
            },
        ));
        key_file(host.key_file_mode, want, d);
        address_changes(d, &name, &want.addresses, &BTreeSet::new());
        if let Some(p) = want.listen_port {
            d.changes.push(simple(
                Action::Add,
                "listen_port",
                format!("listen port {p} on {name}"),
                Op::SetListenPort {
                    interface: name.clone(),
                    port: p,
                },
            ));
        }
        if let Some(m) = want.fwmark {
            d.changes.push(simple(
                Action::Add,
                "fwmark",
                format!("fwmark {m} on {name}"),
                Op::SetFwmark {
                    interface: name.clone(),
                    fwmark: Some(m),
                },
            ));
        }
        for (peer_name, p) in &want.peers {
            d.changes.push(peer_added(&name, peer_name, p));
        }
        return;
    };

    key_file(host.key_file_mode, want, d);
    if let (Some(pinned_key), Some(live_key)) = (&want.public_key, &have.public_key)
        && pinned_key != live_key
        && host.next_public_key.as_ref() == Some(pinned_key)
    {
        // A rotation: the pinned key is the next one step 1 made; switch to it.
        d.changes.push(Change {
            action: Action::Change,
            kind: "key".into(),
            resource: format!("private key of {name} (rotate)"),
            before: Some(format!("public key {}", live_key.short())),
            after: Some(format!("public key {}", pinned_key.short())),
            diff: None,
            op: Op::SwitchKey {
                interface: name.clone(),
                path: want.private_key_file.path.clone(),
            },
        });
    } else if let (Some(pinned_key), Some(live_key)) = (&want.public_key, &have.public_key)
        && pinned_key != live_key
    {
        d.key_changed = true;
        d.warnings.push(format!(
            "THE PUBLIC KEY OF THIS HOST CHANGED: pinned {}, live {} — a reinstall, or something worse; check the host, then accept it with `meshctl apply --accept-new-keys`",
            pinned_key.short(),
            live_key.short()
        ));
    }
    address_changes(d, &name, &want.addresses, &have.addresses);
    if let Some(p) = want.listen_port
        && have.listen_port != Some(p)
    {
        d.changes.push(Change {
            action: Action::Change,
            kind: "listen_port".into(),
            resource: format!("listen port on {name}"),
            before: have.listen_port.map(|p| p.to_string()),
            after: Some(p.to_string()),
            diff: None,
            op: Op::SetListenPort {
                interface: name.clone(),
                port: p,
            },
        });
    }

    if have.fwmark != want.fwmark {
        d.changes.push(Change {
            action: Action::Change,
            kind: "fwmark".into(),
            resource: format!("fwmark on {name}"),
            before: Some(have.fwmark.map_or("off".into(), |m| m.to_string())),
            after: Some(want.fwmark.map_or("off".into(), |m| m.to_string())),
            diff: None,
            op: Op::SetFwmark {
                interface: name.clone(),
                fwmark: want.fwmark,
            },
        });
    }

    // Live peers are keyed by public key; match desired peers by their pinned key.
    // One index of the live peers by key (not a search per peer: a hub may have thousands).
    let live_by_key: BTreeMap<&WgKey, (&String, &Peer)> = have
        .peers
        .iter()
        .filter_map(|(id, lp)| lp.public_key.as_ref().map(|k| (k, (id, lp))))
        .collect();
    let owners: BTreeMap<&str, &HostName> =
        pinned.keys.iter().map(|(h, k)| (k.as_str(), h)).collect();
    let mut matched: BTreeSet<&str> = BTreeSet::new();
    for (peer_name, p) in &want.peers {
        let live_peer = p
            .public_key
            .as_ref()
            .and_then(|k| live_by_key.get(k).copied());
        let Some((live_id, lp)) = live_peer else {
            d.changes.push(peer_added(&name, peer_name, p));
            continue;
        };
        matched.insert(live_id.as_str());
        let endpoint_ok = match &p.endpoint {
            None => true,
            Some(e) => endpoint_matches(lp.endpoint.as_deref(), e, &host.resolved),
        };
        let same_settings = lp.allowed_ips == p.allowed_ips
            && lp.persistent_keepalive == p.persistent_keepalive
            && endpoint_ok;
        if same_settings && lp.preshared_key != p.preshared_key {
            // Only the preshared key: load it, leaving the peer and its session alone.
            d.changes.push(psk_load(&name, peer_name, p, lp));
        } else if !same_settings {
            let shown = Peer {
                endpoint: if p.endpoint.is_some() {
                    lp.endpoint.clone()
                } else {
                    None
                },
                ..lp.clone()
            };
            d.changes.push(Change {
                action: Action::Change,
                kind: "peer".into(),
                resource: format!("peer {peer_name}"),
                before: Some(peer_text(&shown)),
                after: Some(peer_text(p)),
                diff: None,
                op: Op::SetPeer {
                    interface: name.clone(),
                    name: peer_name.clone(),
                    peer: p.clone(),
                },
            });
        }
    }
    for (live_id, lp) in &have.peers {
        if matched.contains(live_id.as_str()) {
            continue;
        }
        let Some(key) = &lp.public_key else { continue };
        let who = owners
            .get(key.as_str())
            .map_or_else(|| key.short(), |h| h.to_string());
        d.changes.push(Change {
            action: Action::Remove,
            kind: "peer".into(),
            resource: format!("peer {who}"),
            before: Some(peer_text(lp)),
            after: None,
            diff: None,
            op: Op::RemovePeer {
                interface: name.clone(),
                public_key: key.to_string(),
            },
        });
    }
}

fn key_file(live_mode: Option<u32>, want: &WgInterface, d: &mut HostDiff) {
    let path = want.private_key_file.path.clone();
    match live_mode {
        None => d.changes.push(simple(
            Action::Add,
            "key",
            format!("private key {path} (generated on the host, never leaves it)"),
            Op::GenerateKey { path },
        )),
        Some(m) if m & 0o077 != 0 => d.changes.push(Change {
            action: Action::Change,
            kind: "key".into(),
            resource: format!("mode of {path}"),
            before: Some(format!("{m:04o}")),
            after: Some("0600".into()),
            diff: None,
            op: Op::FixKeyMode { path },
        }),
        Some(_) => {}
    }
}
