//! Finds the managed hosts whose SSH path crosses the VPN, the way ssh itself resolves it:
//! `ssh -G` (the user's ssh_config applied: aliases, `HostName`, `ProxyJump`, `ProxyCommand`)
//! and a bounded name lookup. `core::ssh_path` decides; this runs the commands. A host whose
//! inventory entry says `guard:` is left as it says. Only hosts with changes are looked at
//! (see `planner::build_guarded`).

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use ipnet::IpNet;

use crate::core::ssh_path::SshPath;
use crate::inventory::Inventory;
use crate::names::HostName;
use crate::transport::SshOptions;

/// How long a name lookup may take before the host counts as not crossing (a slow resolver
/// must not stall every plan).
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// The hosts among `among` whose path crosses the VPN, of those the guard is not set for
/// explicitly (the hub is never guarded by this): what [`crate::planner::Crossing`] asks.
pub fn crossing_hosts(
    inv: &Inventory,
    opts: &SshOptions,
    among: &BTreeSet<HostName>,
) -> BTreeSet<HostName> {
    let mut ranges: Vec<IpNet> = vec![IpNet::V4(inv.network.ipv4)];
    if let Some(v6) = &inv.network.ipv6 {
        ranges.push(IpNet::V6(v6.clients));
    }
    for (_, lan) in inv.lans() {
        ranges.push(IpNet::V4(lan.subnet));
        ranges.extend(lan.ipv6_prefix.map(IpNet::V6));
    }
    let (hub, hub_role) = inv.hub();
    let mut hub_names = vec![hub_role.endpoint.clone()];
    hub_names.extend(hub.ssh.as_ref().map(|t| t.host.clone()));
    let hub_name = hub.name.clone();
    let undecided: Vec<_> = inv
        .hosts
        .values()
        .filter(|h| among.contains(&h.name))
        .filter(|h| h.name != hub_name && !h.guard && !h.guard_explicit)
        .filter_map(|h| h.ssh.clone().map(|t| (h.name.clone(), t)))
        .collect();
    // One `ssh -G` (and lookup) per host, [`AT_ONCE`] at a time: a plan of many hosts must not
    // wait for them one after another, nor start a thread and a process for every host at once
    // (each thread's stack and allocator arena would stay in meshctl's peak memory).
    let workers = AT_ONCE.min(undecided.len());
    let queue = std::sync::Mutex::new(undecided.into_iter());
    let next = || queue.lock().ok().and_then(|mut q| q.next());
    std::thread::scope(|scope| {
        let found: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    std::iter::from_fn(next)
                        .filter(|(_, target)| crosses(target, opts, &ranges, &hub_names))
                        .map(|(name, _)| name)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        found
            .into_iter()
            .filter_map(|w| w.join().ok())
            .flatten()
            .collect()
    })
}

/// How many hosts' `ssh -G` and name lookup run at once.
const AT_ONCE: usize = 16;

/// Whether `target`'s path crosses the VPN: `ssh -G`, then where the name resolves here.
fn crosses(
    target: &crate::inventory::SshTarget,
    opts: &SshOptions,
    ranges: &[IpNet],
    hub_names: &[String],
) -> bool {
    let Some(path) = ssh_g(target, opts) else {
        return false;
    };
    // Behind a jump or a proxy command the name is resolved there, not here.
    let resolved = if path.hostname.parse::<IpAddr>().is_ok()
        || path.proxyjump.is_some()
        || path.proxycommand.is_some()
    {
        vec![]
    } else {
        lookup(&path.hostname)
    };
    path.crosses(&resolved, ranges, hub_names)
}

/// [`crossing_hosts`] as the planner asks it, with these ssh options.
pub fn crossing(opts: &SshOptions) -> crate::planner::Crossing {
    let opts = opts.clone();
    crate::planner::Crossing::new(move |inv, among| crossing_hosts(inv, &opts, among))
}

/// What `ssh -G` says about `target`, or `None` when ssh cannot say (then nothing changes).
fn ssh_g(target: &crate::inventory::SshTarget, opts: &SshOptions) -> Option<SshPath> {
    let mut cmd = Command::new("ssh");
    cmd.arg("-G");
    if let Some(f) = &opts.config_file {
        cmd.arg("-F").arg(f);
    }
    if let Some(u) = &target.user {
        cmd.arg("-l").arg(u);
    }
    if let Some(p) = target.port {
        cmd.arg("-p").arg(p.to_string());
    }
    cmd.arg("--").arg(&target.host);
    let out = cmd.stdin(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| SshPath::parse(&String::from_utf8_lossy(&out.stdout)))
}

/// The addresses `name` resolves to here, given up after [`LOOKUP_TIMEOUT`].
fn lookup(name: &str) -> Vec<IpAddr> {
    let (tx, rx) = mpsc::channel();
    let name = format!("{name}:22");
    std::thread::spawn(move || {
        let addrs: Vec<IpAddr> = name
            .to_socket_addrs()
            .map(|it| it.map(|sa| sa.ip()).collect())
            .unwrap_or_default();
        tx.send(addrs).ok();
    });
    rx.recv_timeout(LOOKUP_TIMEOUT).unwrap_or_default()
}
