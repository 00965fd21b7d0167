//! The scripts apply runs on a host: at most three remote executions per host (four on a host
//! that gets packages installed).
//!
//! 1. `prepare`: take the host's lock in /run/meshctl, generate the private key where there is
//!    none (umask 077, a 0600 file; only the public key is printed; not on a host without
//!    `wg` yet), then gather. After the prompt, a host whose plan installs packages gets one
//!    more execution first, `provision`: install them, then make its key.
//! 2. `changes`: one script applying the host's changes, each with the smallest command that
//!    does it, announcing every step so a failure says what was applied before it.
//! 3. `finish`: gather again (to confirm convergence) and release the lock — in the same
//!    execution as 2 on a host without a guard ([`changes_then_finish`]: two executions for
//!    the whole apply), on its own only where the guard confirms over a new connection.
//!
//! Every value is shell-quoted; file contents travel inside the script on stdin, never on a
//! command line; files are written atomically (temp file created 0600 in the same directory,
//! fsync, chmod, rename), so a failure — a full disk, a dropped connection — leaves the old file.

use std::collections::BTreeSet;
use std::fmt::Write;

use sha2::Digest;

use crate::persist;
use crate::plan::{Change, Op};
use crate::shell::quote;
use crate::spell;
use crate::state::Family;

/// Where the lock and the state of an apply in progress live on the host.
pub const RUN_DIR: &str = "/run/meshctl";
/// The lock: a file holding its holder's name, created only where there is none (the shell's
/// `set -C`: an exclusive open, no process). A directory there (an older meshctl's lock, also
/// holding the holder's name in `holder`) is a held lock too, so the two exclude each other.
pub const LOCK_DIR: &str = "/run/meshctl/lock";

/// What every marker line the scripts print for the controller starts with.
pub const MARK_PREFIX: &str = "@@meshctl";

// Marker lines the scripts print for the controller.
/// `prepare`: the lock is held by another apply; the next line names the holder.
pub const MARK_LOCKED: &str = "@@meshctl locked@@";
/// `prepare`: the lock is taken (what follows makes the key, then gathers).
pub const MARK_LOCK_TAKEN: &str = "@@meshctl lock taken@@";
/// `prepare`: the next line is the host's public key.
pub const MARK_PUBKEY: &str = "@@meshctl pubkey@@";
/// `prepare`: the line after [`MARK_PUBKEY`] when the host has no `wg` (no key yet).
pub const NO_KEY: &str = "(none)";
/// `provision`: install N (an index into its installs) starts; the package manager's output
/// follows.
pub const MARK_INSTALL: &str = "@@meshctl install@@";
/// `provision`: install N failed (the lines since its start are the package manager's output).
pub const MARK_INSTALL_FAILED: &str = "@@meshctl install failed@@";
/// `changes`: a step starts (`MARK N`, N the change's index in the plan).
pub const MARK_STEP: &str = "@@meshctl step@@";
/// `changes`: step N failed (the script stops there unless it runs with [`OnFailure::Continue`]).
pub const MARK_FAILED: &str = "@@meshctl failed@@";
/// `changes`: every step succeeded.
pub const MARK_DONE: &str = "@@meshctl done@@";

/// Set for the `wg-quick up` of a change script: meshctl's boot script (the interface's
/// `PostUp`) then leaves its work to the script's own steps, which do each piece of it.
pub const APPLYING_ENV: &str = "MESHCTL_APPLYING";

/// Exit status of `prepare` when another apply holds the lock.
pub const EXIT_LOCKED: i32 = 75;

/// Step 1: lock, make sure the key exists, print the public key, then run `gather`. Breaking
/// a dead run's lock also disarms that run's pending rollback guard, so its timer cannot undo
/// (or unlock) the new run.
pub fn prepare(
    holder: &str,
    break_lock: bool,
    key_path: &str,
    interface: &str,
    gather: &str,
) -> String {
    prepare_with(
        holder,
        break_lock,
        key_path,
        interface,
        &KeyWork::default(),
        gather,
    )
}

/// What step 1 makes besides the host's own key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyWork {
    /// Preshared key files to generate where they are missing (on the hub).
    pub psk_files: Vec<String>,
    /// `meshctl rotate`: make the next private key beside the key file (kept when a rotation
    /// that did not finish left one), whose public key the gather then reports.
    pub next_key: bool,
}

/// [`prepare`], also making what `work` names before the gather sees it.
pub fn prepare_with(
    holder: &str,
    break_lock: bool,
    key_path: &str,
    interface: &str,
    work: &KeyWork,
    gather: &str,
) -> String {
    let mut s = String::from("set -u\numask 077\n");
    // The shell's tests first: a process less on every host where the directory exists.
    writeln!(s, "[ -d {RUN_DIR} ] || mkdir -p {RUN_DIR}").ok();
    let take = format!(
        "{{ set -C; printf '%s\\n' {} > {LOCK_DIR}; }} 2>/dev/null",
        quote(holder)
    );
    writeln!(
        s,
        "if ! {take}; then\n  set +C\n  if [ {} = 1 ]; then\n    for f in {RUN_DIR}/guard-*/rollback.sh; do [ -e \"$f\" ] && mv \"$f\" \"$f.discarded\"; done\n    rm -rf {LOCK_DIR}; {take} || exit 1\n  else echo {MARK_LOCKED}; cat {LOCK_DIR} 2>/dev/null || cat {LOCK_DIR}/holder 2>/dev/null; exit {EXIT_LOCKED}; fi\nfi\nset +C",
        u8::from(break_lock)
    )
    .ok();
    writeln!(s, "echo {MARK_LOCK_TAKEN}").ok();
    // Until the host is prepared, a failure gives the lock back.
    writeln!(s, "trap 'rm -rf {LOCK_DIR}' EXIT").ok();
    // Without `wg` (a fresh host) there is no key yet: the plan installs wireguard-tools,
    // and `provision` makes the key after the prompt.
    writeln!(
        s,
        "if command -v wg >/dev/null 2>&1; then\n{}{}echo {MARK_PUBKEY}\nwg pubkey < {} || exit 1\nelse\necho {MARK_PUBKEY}\necho {}\nfi",
        key_block(key_path, interface),
        key_work(key_path, work),
        quote(key_path),
        quote(NO_KEY)
    )
    .ok();
    s.push_str(gather);
    s.push_str("\ntrap - EXIT\n");
    s
}

/// What step 1 makes besides the host's own key (`work`): the next key of a rotation, the
/// pairs' preshared keys where missing. Needs `wg`; never prints a key.
fn key_work(key_path: &str, work: &KeyWork) -> String {
    let mut s = String::new();
    if work.next_key {
        let next = quote(&crate::desired::next_key_path(key_path));
        writeln!(
            s,
            "if [ ! -s {next} ]; then\n  wg genkey > {next}.meshctl-new && chmod 600 {next}.meshctl-new && mv -f {next}.meshctl-new {next} || {{ rm -f {next}.meshctl-new; echo 'cannot generate the next key' >&2; exit 1; }}\nfi"
        )
        .ok();
    }
    // The pairs' preshared keys, only where missing: never printed here.
    for p in &work.psk_files {
        writeln!(
            s,
            "[ -s {} ] || {{ {}; }} || {{ echo 'cannot generate a preshared key: is wireguard-tools installed?' >&2; exit 1; }}",
            quote(p),
            spell::psk_generate(p)
        )
        .ok();
    }
    s
}

/// Makes sure the private key file exists: a key that already lives on the interface (a
/// hand-made setup) is adopted, so the host keeps its identity; it goes to the 0600 file, never
/// to the output. With the interface down, a hand-made config's `PrivateKey =` is the only
/// copy of the host's identity: it is adopted too (into the 0600 file, checked with `wg
/// pubkey`, never printed), before a new key would overwrite the config that holds it.
/// Otherwise a new key is generated. Runs under `umask 077`, which alone makes the temp file
/// 0600: a leftover temp file (from a run that died here) is removed first, so the file is
/// always created here, never reused with its old mode — and no `chmod` runs. The interface's
/// key is read once into the shell (no `grep`, no second `wg show`: three processes fewer on
/// a fresh host), and only where the interface exists (the shell's test of /sys/class/net:
/// no `wg` at all on a fresh host); it goes only into the 0600 file.
fn key_block(key_path: &str, interface: &str) -> String {
    let key = quote(key_path);
    let iface = quote(interface);
    let conf = quote(&crate::persist::conf_path(interface));
    let sysnet = quote(&format!("/sys/class/net/{interface}"));
    format!(
        "if [ ! -s {key} ]; then\n  k={key}; [ -d \"${{k%/*}}\" ] || mkdir -p \"${{k%/*}}\"\n  t={key}.meshctl-new\n  if [ -e \"$t\" ] || [ -L \"$t\" ]; then rm -f \"$t\" || exit 1; fi\n  if ! {{ {{ [ ! -d /sys/class/net ] || [ -e {sysnet} ]; }} && m_key=$(wg show {iface} private-key 2>/dev/null) && [ -n \"$m_key\" ] && [ \"$m_key\" != '(none)' ] && printf '%s\\n' \"$m_key\" > \"$t\"; }} \\\n     && ! {{ [ -r {conf} ] && sed -n 's/^[[:space:]]*[Pp]rivate[Kk]ey[[:space:]]*=[[:space:]]*\\([A-Za-z0-9+/]\\{{43\\}}=\\)[[:space:]]*$/\\1/p' {conf} | head -n 1 > \"$t\" && [ -s \"$t\" ] && wg pubkey < \"$t\" >/dev/null 2>&1; }}; then\n    wg genkey > \"$t\" || {{ rm -f \"$t\"; echo 'cannot generate a key: is wireguard-tools installed?' >&2; exit 1; }}\n  fi\n  m_key=\n  mv -f \"$t\" {key} || exit 1\nfi\n"
    )
}

/// After the prompt, on a host whose plan installs packages or that has no key yet (it had
/// no `wg` in step 1), under the lock step 1 took: install the packages (non-interactively,
/// waiting for a package manager lock another process holds), then make the key and print
/// the public key, as step 1 does (and what `work` names, which step 1 made nowhere without `wg`). An install that fails prints [`MARK_INSTALL_FAILED`] and
/// its index after the manager's own output and stops: nothing else is touched.
pub fn provision(
    installs: &[(crate::packages::Manager, Vec<String>)],
    key_path: &str,
    interface: &str,
    work: &KeyWork,
) -> String {
    let mut s = String::from("set -u\numask 022\n");
    for (i, (manager, packages)) in installs.iter().enumerate() {
        // stdin from /dev/null: the script itself may be read from stdin (`sh -s`), and a
        // maintainer script must not eat it.
        writeln!(
            s,
            "echo {MARK_INSTALL} {i}\n{{ {}\n}} </dev/null 2>&1 || {{ echo {MARK_INSTALL_FAILED} {i}; exit 1; }}",
            spell::install_packages(*manager, packages)
        )
        .ok();
    }
    s.push_str("umask 077\n");
    s.push_str(&key_block(key_path, interface));
    // What step 1 could not make without `wg` (a fresh hub's preshared keys).
    s.push_str(&key_work(key_path, work));
    writeln!(
        s,
        "echo {MARK_PUBKEY}\nwg pubkey < {} || exit 1",
        quote(key_path)
    )
    .ok();
    s
}

/// Between step 1 and step 2 on a hub, once the plan is confirmed: replaces the preshared keys
/// to rotate (`rotate`), then prints each key of `read` after a [`crate::psk::MARK_CARRIED`]
/// line naming its file, for apply to carry to the other end of its pair. The only script
/// whose output holds a secret: the engine reads it into memory and zeroizes the output.
pub fn carry(rotate: &[String], read: &[String]) -> String {
    let mut s = String::from("set -u\numask 077\n");
    for p in rotate {
        writeln!(s, "{} || exit 1", spell::psk_generate(p)).ok();
    }
    for p in read {
        writeln!(
            s,
            "echo {} {}\ncat {} || exit 1",
            crate::psk::MARK_CARRIED,
            quote(p),
            quote(p)
        )
        .ok();
    }
    s
}

/// Releases the host's lock.
pub fn unlock() -> String {
    format!("rm -rf {LOCK_DIR}\n")
}

/// Step 3: gather, then release the lock.
pub fn finish(gather: &str) -> String {
    format!("{gather}\n{}", unlock())
}

/// Steps 2 and 3 as one execution (a host without a guard, whose confirmation needs no new
/// connection): the change script `changes` in a subshell, so that a failed step's `exit`
/// ends only it, then [`finish`] whatever it did; the script exits with the changes' status.
/// One session less per host: on a real link a round trip, and sshd's session setup, saved.
/// [`MARK_FINISH`] on stderr tells the steps' errors from the gather's.
pub fn changes_then_finish(changes: &str, gather: &str) -> String {
    format!(
        "(\n{changes}\n)\nm_crc=$?\necho '{MARK_FINISH}' >&2\n{}\nexit $m_crc\n",
        finish(gather)
    )
}

/// [`changes_then_finish`]: the stderr line before the gather's stderr.
pub const MARK_FINISH: &str = "@@meshctl finish@@";

/// The order changes are applied in. Files first (the interface's config, the rules files the
/// restores read); then meshctl's firewall chains and their jumps, *before anything that opens
/// a path* — forwarding sysctls, the interface, addresses, peers, routes, NDP answers — so a
/// failing restore (the script stops there) leaves forwarding as closed as it was: it fails
/// closed. Rules that name the interface load fine before it exists. Removals of firewall
/// pieces come last, after whatever they protected is gone or changed.
fn rank(op: &Op) -> u8 {
    match op {
        Op::InstallPackages { .. } => 0,
        Op::WriteFile { .. } => 0,
        Op::GenerateKey { .. } | Op::FixKeyMode { .. } => 1,
        // A pair's key file is in place before the peer that loads it is set.
        Op::GeneratePsk { .. } | Op::RotatePsk { .. } | Op::WritePsk { .. } => 1,
        Op::RestoreChains { .. } | Op::RestoreRules { .. } => 2,
        Op::AddJump { .. } => 3,
        Op::SetSysctl { .. } => 4,
        Op::CreateInterface { .. } | Op::StartService { .. } | Op::TakeOverInterface { .. } => 5,
        Op::AddAddress { .. }
        | Op::DelAddress { .. }
        | Op::SwitchKey { .. }
        | Op::SetListenPort { .. }
        | Op::SetFwmark { .. } => 6,
        Op::SetPeer { .. } | Op::RemovePeer { .. } | Op::LoadPsk { .. } => 7,
        Op::ReplaceRoute { .. } | Op::DelRoute { .. } => 8,
        // After the routes: a rule sending traffic to the tunnel's table finds its route there.
        Op::AddRule { .. } | Op::DelRule { .. } => 8,
        Op::AddNdpProxy { .. } | Op::DelNdpProxy { .. } => 9,
        Op::DelJump { .. } => 10,
        Op::DeleteChain { .. } => 11,
        Op::RemoveFile { .. } => 12,
        Op::EnableService { .. } => 13,
    }
}

/// What a `changes` script does when a step fails (it always reports the step first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Exit at once: apply must not build on a step that did not happen.
    Stop,
    /// Go on with the next step: a rollback undoes as much as it can.
    Continue,
}

/// Step 2: the script that applies `changes`, in a safe order, saying which step failed and
/// then stopping or going on as `on_failure` says.
pub fn changes(changes: &[Change], on_failure: OnFailure) -> String {
    changes_carrying(changes, on_failure, &crate::psk::Carried::default())
}

/// [`changes`], with the preshared keys its `write_psk` ops carry (here, inside the script on
/// stdin, is the only place a carried key travels to its host).
pub fn changes_carrying(
    changes: &[Change],
    on_failure: OnFailure,
    carried: &crate::psk::Carried,
) -> String {
    // Steps are announced by their index in `changes`: the script holds only what the ops
    // say, and the caller names a failed step from its own plan.
    let mut ordered: Vec<(usize, &Change)> = changes.iter().enumerate().collect();
    // Within a rank, the routing steps of one family side by side, and an interface's
    // settings after its addresses (their plan order kept): each run is one process.
    ordered.sort_by_key(|(_, c)| {
        (
            rank(&c.op),
            wg_setting_of(&c.op).is_some(),
            routing_family(&c.op),
        )
    });
    // A run that died mid-write (a crash, a killed session) leaves its half-written temp file;
    // under the lock no other run writes there, so write_file removes such leftovers first
    // (`.meshctl.??????`: mktemp's names of earlier versions). Few processes: the directory
    // and the leftovers are looked at by the shell, and one `dd` creates the temp file
    // exclusively (`excl`: no symlink or old file is followed) with its final mode (the umask,
    // `$3`; `chmod` only for a mode a umask cannot give, `$2`), copies the content and
    // fsyncs it; `mv` renames it over the old file.
    let mut s = String::from(
        "set -u\n\
         write_file() { d=${1%/*}; d=${d:-/}; [ -d \"$d\" ] || mkdir -p \"$d\" || return 1; \
         for o in \"$d\"/.meshctl.?????? \"$d\"/.meshctl.w*; do if [ -e \"$o\" ]; then rm -f \"$o\"; fi; done; \
         t=$d/.meshctl.w$$; \
         if (umask \"$3\"; exec dd of=\"$t\" conv=excl,fsync status=none) && { [ -z \"$2\" ] || chmod \"$2\" \"$t\"; } && mv -f \"$t\" \"$1\"; then return 0; fi; \
         rm -f \"$t\"; return 1; }\n",
    );
    // A fresh interface is brought up by the steps themselves (`spell::interface_up`, then
    // its addresses, settings and peers in one process each). Only where wg-quick has to work
    // out the MTU does `wg-quick up` run: it runs the boot script (its PostUp) too, every piece
    // of which is a step here already, so it is told to leave them to the steps
    // ([`APPLYING_ENV`]); and what it sets up from the config (addresses, port, fwmark,
    // peers) is not set again.
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut restored: BTreeSet<Family> = BTreeSet::new();
    let stop = match on_failure {
        OnFailure::Stop => " exit 1;",
        OnFailure::Continue => "",
    };
    let mut steps: Vec<(usize, &Op, String)> = Vec::new();
    for (i, c) in ordered {
        if let Some(cmd) = command(&c.op, &mut restored, &mut created, carried) {
            steps.push((i, &c.op, cmd));
        }
    }
    // What `wg-quick up` set is not set again: those steps run nothing, alone.
    let kind_of = |op: &Op| {
        batch_kind(op).filter(|_| !set_by_wg_quick(op).is_some_and(|w| created.contains(w)))
    };
    let mut k = 0;
    while k < steps.len() {
        // A run of steps of one kind that a single process can do: NDP answers (one per
        // client with a public IPv6 address, all on the hub) in one `ip -batch`, a family's
        // added routes and rules in one `ip -4|-6 -batch` (a full-tunnel client's route and
        // two rules), added addresses in one `ip -batch`, an interface's port, fwmark and
        // peers in one `wg set`, sysctls in one `sysctl -w`, jumps in one `*-restore` per
        // family. Should the batch fail, each runs
        // again as a step of its own (`ip neigh replace`, `ip route replace`, `ip address
        // replace`, `wg set`, `sysctl -w`, the rules' `del; add` and the jumps' `-C || -I` are
        // idempotent), so the step that fails is still the
        // one reported.
        let kind = kind_of(steps[k].1);
        let run = steps[k..]
            .iter()
            .take_while(|(_, op, _)| kind.is_some() && kind_of(op) == kind)
            .count();
        if let Some(kind) = kind.filter(|_| run >= 2) {
            let group = &steps[k..k + run];
            let ops: Vec<&Op> = group.iter().map(|(_, op, _)| *op).collect();
            // The first is announced before the batch (its section holds the batch's time),
            // the others once it succeeded; so a failure never lists a step that did not run.
            writeln!(s, "echo {MARK_STEP} {}", group[0].0).ok();
            writeln!(s, "if {{ {}\n}} 9>&- 2>/dev/null; then", batch(&kind, &ops)).ok();
            for (i, _, _) in &group[1..] {
                writeln!(s, "echo {MARK_STEP} {i}").ok();
            }
            s.push_str("else\n");
            for (i, _, cmd) in group {
                step(&mut s, *i, cmd, stop);
            }
            s.push_str("fi\n");
            k += run;
            continue;
        }
        let (i, _, cmd) = &steps[k];
        step(&mut s, *i, cmd, stop);
        k += 1;
    }
    writeln!(s, "echo {MARK_DONE}").ok();
    s
}

/// Which steps can share one process (see [`changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchKind {
    Ndp,
    Jump,
    /// Added routes and rules of one family. Deletions stay steps of their own: rerun after
    /// a batch that failed past them, a delete would fail on what the batch already removed.
    Routing(Family),
    /// Added addresses (a batch line names its interface; `ip` takes the family from the
    /// address).
    Address,
    /// The settings of one WireGuard interface: port, fwmark, peers set, removed or given
    /// their preshared key, in one `wg set` (each setting is idempotent).
    Wg(String),
    /// Sysctls set, in one `sysctl -w`.
    Sysctl,
}

fn batch_kind(op: &Op) -> Option<BatchKind> {
    if let Some((interface, _)) = wg_setting_of(op) {
        return Some(BatchKind::Wg(interface.to_owned()));
    }
    match op {
        Op::AddNdpProxy { .. } => Some(BatchKind::Ndp),
        Op::AddJump { .. } => Some(BatchKind::Jump),
        Op::ReplaceRoute { route } => Some(BatchKind::Routing(spell::route_family(route))),
        Op::AddRule { rule } => Some(BatchKind::Routing(rule.family)),
        Op::AddAddress { .. } => Some(BatchKind::Address),
        Op::SetSysctl { .. } => Some(BatchKind::Sysctl),
        _ => None,
    }
}

/// The interface of an op that `wg-quick up` does from the config (its address, port, fwmark
/// and peers), where one brought the interface up.
fn set_by_wg_quick(op: &Op) -> Option<&str> {
    match op {
        Op::SetListenPort { interface, .. }
        | Op::AddAddress { interface, .. }
        | Op::SetFwmark { interface, .. }
        | Op::SetPeer { interface, .. } => Some(interface),
        _ => None,
    }
}

/// The interface and the `wg set` setting of an op that is one (`None` for any other op, and
/// for a peer whose key is not known: it cannot be set).
fn wg_setting_of(op: &Op) -> Option<(&str, String)> {
    match op {
        Op::SetListenPort { interface, port } => {
            Some((interface, spell::wg_listen_port_setting(*port)))
        }
        Op::SetFwmark { interface, fwmark } => Some((interface, spell::wg_fwmark_setting(*fwmark))),
        Op::SetPeer {
            interface, peer, ..
        } => Some((
            interface,
            spell::wg_peer_setting(peer.public_key.as_ref()?.as_str(), peer),
        )),
        Op::RemovePeer {
            interface,
            public_key,
        } => Some((interface, spell::wg_remove_peer_setting(public_key))),
        Op::LoadPsk {
            interface,
            public_key,
            path,
            ..
        } => Some((
            interface,
            spell::wg_psk_setting(public_key.as_ref()?.as_str(), path.as_deref()),
        )),
        _ => None,
    }
}

/// The family of a routing step (routes and rules, added or deleted); `None` for any other.
fn routing_family(op: &Op) -> Option<Family> {
    match op {
        Op::ReplaceRoute { route } | Op::DelRoute { route } => Some(spell::route_family(route)),
        Op::AddRule { rule } | Op::DelRule { rule } => Some(rule.family),
        _ => None,
    }
}

/// The one command that does every op of `ops` (all of `kind`).
fn batch(kind: &BatchKind, ops: &[&Op]) -> String {
    let family = match kind {
        BatchKind::Jump => return jumps_restore(ops),
        BatchKind::Wg(interface) => {
            let settings: Vec<String> = ops
                .iter()
                .filter_map(|op| wg_setting_of(op).map(|(_, setting)| setting))
                .collect();
            // One try for a name in an endpoint: `wg` retries a name that does not resolve for
            // ~150 s, and the fallback below (each setting alone, with wg's retries) would wait
            // all over again.
            return format!(
                "WG_ENDPOINT_RESOLUTION_RETRIES=0 {}",
                spell::wg_set(interface, &settings)
            );
        }
        BatchKind::Sysctl => {
            let settings: Vec<(&str, &str)> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::SetSysctl { key, value } => Some((key.as_str(), value.as_str())),
                    _ => None,
                })
                .collect();
            return spell::sysctls_set(&settings);
        }
        BatchKind::Ndp => Some(Family::Ipv6),
        BatchKind::Routing(family) => Some(*family),
        BatchKind::Address => None,
    };
    let mut lines = String::new();
    for op in ops {
        let line = match op {
            Op::AddNdpProxy { entry } => spell::ndp_proxy_replace_batch(entry),
            Op::ReplaceRoute { route } => spell::route_replace_batch(route),
            Op::AddRule { rule } => spell::rule_add_batch(rule),
            Op::AddAddress { interface, address } => {
                spell::address_replace_batch(interface, address)
            }
            _ => continue,
        };
        lines.push_str(&line);
        lines.push('\n');
    }
    let flag = family
        .map(|f| format!("{} ", f.ip_flag()))
        .unwrap_or_default();
    format!("ip {flag}-batch - <<'MESHCTL_EOF_BATCH'\n{lines}MESHCTL_EOF_BATCH")
}

/// Jumps inserted with one `*-restore --noflush` per family (the checked form is the fallback).
fn jumps_restore(ops: &[&Op]) -> String {
    let jumps: Vec<&crate::state::Jump> = ops
        .iter()
        .filter_map(|op| match op {
            Op::AddJump { jump } => Some(jump),
            _ => None,
        })
        .collect();
    let mut parts = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        let mine: Vec<&&crate::state::Jump> = jumps.iter().filter(|j| j.family == family).collect();
        if mine.is_empty() {
            continue;
        }
        let mut tables: Vec<&str> = Vec::new();
        for j in &mine {
            if !tables.contains(&j.table.as_str()) {
                tables.push(&j.table);
            }
        }
        let mut input = String::new();
        for t in tables {
            writeln!(input, "*{t}").ok();
            for j in mine.iter().filter(|j| j.table == t) {
                writeln!(input, "{}", spell::jump_insert_restore_line(j)).ok();
            }
            input.push_str("COMMIT\n");
        }
        parts.push(format!(
            "{{ {} <<'MESHCTL_EOF_BATCH'\n{input}MESHCTL_EOF_BATCH\n}}",
            spell::chains_restore_stdin(family)
        ));
    }
    parts.join(" && ")
}

/// One step of a change script: announced, run, and reported when it fails.
fn step(s: &mut String, i: usize, cmd: &str, stop: &str) {
    writeln!(s, "echo {MARK_STEP} {i}").ok();
    // `9>&-`: no step inherits the guard's serialising descriptor (a daemon a step starts
    // must not hold it).
    writeln!(
        s,
        "{{ {cmd}\n}} 9>&- || {{ echo {MARK_FAILED} {i};{stop} }}"
    )
    .ok();
}

/// `text` ending in a newline (a here-document's last line needs one), unless empty.
fn with_newline(text: &str) -> String {
    if text.ends_with('\n') || text.is_empty() {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// A here-document delimiter that does not occur in `content`.
fn delimiter(content: &str) -> String {
    let digest = sha2::Sha256::digest(content.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut d = format!("MESHCTL_EOF_{hex}");
    while content.lines().any(|l| l == d) {
        d.push('X');
    }
    d
}

/// The shell command for one op; `None` when another op already covers it. Every command
/// of the kernel's state is spelled by [`spell`], the same as in the boot script.
fn command(
    op: &Op,
    restored: &mut BTreeSet<Family>,
    created: &mut BTreeSet<String>,
    carried: &crate::psk::Carried,
) -> Option<String> {
    // Set by the `wg-quick up` of this script from the config just written (or in sync).
    if let Some(w) = set_by_wg_quick(op).filter(|w| created.contains(*w)) {
        // Still announced (a failure report lists it as applied), but nothing to run.
        return Some(format!(": done by wg-quick up {}", quote(w)));
    }
    Some(match op {
        Op::GenerateKey { .. } => return None, // done by `prepare` or `provision`
        Op::InstallPackages { .. } => return None, // done by `provision`
        Op::GeneratePsk { .. } => return None, // done by `prepare` (or `carry` on a fresh hub)
        Op::RotatePsk { .. } => return None,   // done by `carry`, before this script
        Op::WritePsk { path, from, source } => match carried.get(from, source) {
            // A fixed delimiter: one made from the content would say something about it.
            Some(key) => format!(
                "{} && write_file {} '' 077 <<'MESHCTL_PSK_EOF'\n{key}\nMESHCTL_PSK_EOF",
                spell::psk_dir(path),
                quote(path)
            ),
            None => format!(
                "echo {} >&2; false",
                quote(&format!("the preshared key from {from} was not carried"))
            ),
        },
        // One setting of the interface: the batch's spelling, alone (a peer whose key is
        // not known yet cannot be set).
        Op::SetListenPort { .. }
        | Op::SetFwmark { .. }
        | Op::SetPeer { .. }
        | Op::RemovePeer { .. }
        | Op::LoadPsk { .. } => {
            let (interface, setting) = wg_setting_of(op)?;
            spell::wg_set(interface, &[setting])
        }
        Op::FixKeyMode { path } => spell::key_chmod(path),
        Op::SwitchKey { interface, path } => spell::key_switch(interface, path),
        Op::CreateInterface {
            interface,
            key_file: Some(key_file),
            mtu: Some(mtu),
        } => spell::interface_up(interface, key_file, *mtu),
        Op::CreateInterface { interface, .. } => {
            created.insert(interface.clone());
            format!("{APPLYING_ENV}=1 {}", spell::wg_quick_up(interface))
        }
        Op::AddAddress { interface, address } => spell::address_replace(interface, address),
        Op::DelAddress { interface, address } => spell::address_del(interface, address),
        Op::AddRule { rule } => spell::rule_add(rule),
        Op::DelRule { rule } => spell::rule_del(rule),
        Op::ReplaceRoute { route } => spell::route_replace(route),
        Op::DelRoute { route } => spell::route_del(route),
        Op::SetSysctl { key, value } => spell::sysctl_set(key, value),
        Op::RestoreChains { chain } => {
            // One restore loads every chain of the family from its file.
            if !restored.insert(chain.family) {
                return None;
            }
            spell::chains_restore_checked(chain.family, &persist::rules_path(chain.family))
        }
        Op::RestoreRules { family, rules } => {
            restored.insert(*family);
            let d = delimiter(rules);
            format!(
                "{} <<'{d}'\n{}{d}",
                spell::chains_restore_stdin(*family),
                with_newline(rules)
            )
        }
        Op::DeleteChain { chain } => spell::chain_delete(chain.family, &chain.table, &chain.chain),
        Op::AddJump { jump } => spell::jump_ensure(jump),
        Op::DelJump { jump } => spell::jump_del(jump),
        Op::AddNdpProxy { entry } => spell::ndp_proxy_replace(entry),
        Op::DelNdpProxy { entry } => spell::ndp_proxy_del(entry),
        Op::WriteFile {
            path,
            content,
            mode,
            ..
        } => {
            let d = delimiter(content);
            let body = with_newline(content);
            // A umask gives any mode without execute or special bits (files are created
            // 0666 & ~umask); others get a chmod after.
            let (chmod, umask) = if mode & !0o666 == 0 {
                (String::new(), 0o777 & !mode)
            } else {
                (format!("{mode:o}"), 0o077)
            };
            format!(
                "write_file {} '{chmod}' {umask:03o} <<'{d}'\n{body}{d}",
                quote(path)
            )
        }
        Op::RemoveFile { path } => spell::file_remove(path),
        Op::EnableService { unit } => spell::service_enable(unit),
        Op::StartService { unit, .. } => spell::service_start(unit),
        Op::TakeOverInterface { unit, interface } => spell::service_take_over(unit, interface),
    })
}

/// Which steps a `changes` run reported, as indices into its changes: (steps started, the
/// failed step if any).
pub fn progress(stdout: &str) -> (Vec<usize>, Option<usize>) {
    let index = |rest: &str| rest.trim().parse::<usize>().ok();
    let mut started = Vec::new();
    let mut failed = None;
    for line in stdout.lines() {
        if let Some(i) = line.strip_prefix(MARK_STEP).and_then(index) {
            // The first step of a batch that failed as a whole is announced again when it
            // runs alone.
            if !started.contains(&i) {
                started.push(i);
            }
        } else if let Some(i) = line.strip_prefix(MARK_FAILED).and_then(index) {
            failed = Some(i);
        }
    }
    (started, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::Manager;
    use crate::plan::Action;
    use crate::state::NdpProxy;

    fn ndp(addr: &str) -> Change {
        Change {
            action: Action::Add,
            kind: "ndp_proxy".into(),
            resource: format!("ndp proxy {addr} dev eth0"),
            before: None,
            after: None,
            diff: None,
            op: Op::AddNdpProxy {
                entry: NdpProxy {
                    address: addr.parse().unwrap(),
                    device: crate::names::InterfaceName::parse("eth0").unwrap(),
                },
            },
        }
    }

    /// Runs `changes` through the real `sh` with `ip` replaced by a shell function that logs
    /// its arguments (and reads a batch), failing for `fail` (the whole batch, and that entry).
    fn run(changes: &[Change], fail: Option<&str>) -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let fail = fail.unwrap_or("none");
        let prelude = format!(
            "ip() {{ if [ \"$*\" = '-6 -batch -' ]; then b=$(cat); echo \"batch $(printf '%s' \"$b\" | grep -c .)\" >> log; case $b in *'{fail} '*) return 1 ;; esac; return 0; fi; echo \"$*\" >> log; case \"$*\" in *'{fail} '*) echo 'RTNETLINK answers: test fault' >&2; return 2 ;; esac; }}\n"
        );
        let script = format!("{prelude}{}", super::changes(changes, OnFailure::Stop));
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        (
            String::from_utf8(out.stdout).unwrap(),
            log.lines().map(str::to_owned).collect(),
        )
    }

    #[test]
    fn ndp_answers_go_in_one_batch_and_a_failure_still_names_its_step() {
        let changes = [ndp("2001:db8::1"), ndp("2001:db8::2"), ndp("2001:db8::3")];
        // All in one `ip` process, every step announced.
        let (out, log) = run(&changes, None);
        assert_eq!(log, vec!["batch 3"]);
        assert_eq!(progress(&out), (vec![0, 1, 2], None));
        assert!(out.contains(MARK_DONE));

        // The batch fails: each runs alone, the failing one is reported, what ran before it is
        // applied, what comes after it neither ran nor is listed.
        let (out, log) = run(&changes, Some("2001:db8::2"));
        assert_eq!(
            log,
            vec![
                "batch 3",
                "-6 neigh replace proxy 2001:db8::1 dev eth0",
                "-6 neigh replace proxy 2001:db8::2 dev eth0",
            ]
        );
        assert_eq!(progress(&out), (vec![0, 1], Some(1)));
        assert!(!out.contains(MARK_DONE));
    }

    #[test]
    fn a_familys_added_routes_and_rules_go_in_one_batch_with_the_idempotent_form_as_fallback() {
        use crate::state::{Route, RoutingRule, RuleKind};
        let change = |op: Op| Change {
            action: Action::Add,
            kind: "route".into(),
            resource: "r".into(),
            before: None,
            after: None,
            diff: None,
            op,
        };
        let wg0 = crate::names::InterfaceName::parse("wg0").unwrap();
        let route = |dest: &str| Op::ReplaceRoute {
            route: Route {
                destination: dest.parse().unwrap(),
                device: wg0.clone(),
                via: None,
                table: Some(51820),
            },
        };
        let rule = |priority, kind| Op::AddRule {
            rule: RoutingRule {
                family: Family::Ipv6,
                priority,
                kind,
            },
        };
        // A full IPv6 tunnel's route and rules, with an IPv4 route between them in the plan.
        let changes = [
            change(route("::/0")),
            change(route("10.9.0.0/24")),
            change(rule(32760, RuleKind::MainWithoutDefault)),
            change(rule(
                32761,
                RuleKind::TunnelUnlessMarked {
                    fwmark: 51820,
                    table: 51820,
                },
            )),
        ];
        // The IPv6 three in one `ip -6 -batch` (the IPv4 route alone: a run of one is a step).
        let (out, log) = run(&changes, None);
        assert_eq!(
            log,
            vec![
                "-4 route replace 10.9.0.0/24 dev wg0 table 51820 proto 157",
                "batch 3"
            ]
        );
        assert_eq!(progress(&out), (vec![1, 0, 2, 3], None));
        assert!(out.contains(MARK_DONE));

        // The batch fails at the last rule: each runs alone in the form the boot script uses
        // (a rule's `del` first), so what the batch already added is not added twice, and the
        // step that fails is the one reported.
        let (out, log) = run(&changes, Some("priority 32761"));
        assert_eq!(
            log,
            vec![
                "-4 route replace 10.9.0.0/24 dev wg0 table 51820 proto 157",
                "batch 3",
                "-6 route replace ::/0 dev wg0 table 51820 proto 157",
                "-6 rule del table main suppress_prefixlength 0 priority 32760 protocol 157",
                "-6 rule add table main suppress_prefixlength 0 priority 32760 protocol 157",
                "-6 rule del not fwmark 51820 table 51820 priority 32761 protocol 157",
                "-6 rule add not fwmark 51820 table 51820 priority 32761 protocol 157",
            ]
        );
        assert_eq!(progress(&out), (vec![1, 0, 2, 3], Some(3)));
        assert!(!out.contains(MARK_DONE));
    }

    #[test]
    fn a_fresh_interface_is_brought_up_by_the_steps_in_four_processes_without_wg_quick() {
        let change = |op: Op| Change {
            action: Action::Add,
            kind: "interface".into(),
            resource: "r".into(),
            before: None,
            after: None,
            diff: None,
            op,
        };
        let w = || "wg0".to_owned();
        let key = "UvNv3YIwrBU+TEdurjDr1kjvcowHNb8l9ADrFvqvnFs=";
        let peer = crate::state::Peer {
            public_key: Some(crate::names::WgKey::parse(key).unwrap()),
            allowed_ips: ["10.8.0.0/24".parse().unwrap()].into(),
            endpoint: Some("198.51.100.10:51820".into()),
            persistent_keepalive: Some(25),
            preshared_key: None,
        };
        let fresh = |mtu| {
            [
                change(Op::CreateInterface {
                    interface: w(),
                    key_file: Some("/etc/wireguard/wg0.key".into()),
                    mtu,
                }),
                change(Op::AddAddress {
                    interface: w(),
                    address: "10.8.0.11/24".parse().unwrap(),
                }),
                change(Op::AddAddress {
                    interface: w(),
                    address: "2001:db8:10::b/128".parse().unwrap(),
                }),
                change(Op::SetFwmark {
                    interface: w(),
                    fwmark: Some(51820),
                }),
                change(Op::SetPeer {
                    interface: w(),
                    name: "vps".into(),
                    peer: peer.clone(),
                }),
            ]
        };
        // `ip`, `wg` and the userspace implementation as shell functions that log (no kernel
        // module here: the link's `ip link add` fails, as on the lab's hosts).
        let dir = tempfile::tempdir().unwrap();
        let prelude = "WG_QUICK_USERSPACE_IMPLEMENTATION=userspace_wg
             ip() { if [ \"$1\" = -batch ]; then echo \"ip -batch $(tr '\\n' ';')\" >> log; return 0; fi; echo \"ip $*\" >> log; [ \"$*\" != 'link add dev wg0 type wireguard' ]; }
             wg() { echo \"wg $*\" >> log; }
             userspace_wg() { echo \"userspace $*\" >> log; }
";
        let script = format!(
            "{prelude}{}",
            super::changes(&fresh(Some(1420)), OnFailure::Stop)
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let expected = [
            "ip link add dev wg0 type wireguard".to_owned(),
            "userspace wg0".to_owned(),
            "wg set wg0 private-key /etc/wireguard/wg0.key".to_owned(),
            "ip link set dev wg0 mtu 1420 up".to_owned(),
            "ip -batch address replace 10.8.0.11/24 dev wg0;address replace 2001:db8:10::b/128 dev wg0;".to_owned(),
            format!("wg set wg0 fwmark 51820 peer {key} allowed-ips 10.8.0.0/24 endpoint 198.51.100.10:51820 persistent-keepalive 25 preshared-key /dev/null"),
        ];
        assert_eq!(log.lines().collect::<Vec<_>>(), expected, "{stdout}");
        assert_eq!(progress(&stdout), (vec![0, 1, 2, 3, 4], None));
        assert!(!script.contains("wg-quick"));

        // Without an MTU in the inventory wg-quick works it out: `wg-quick up`, which sets
        // the addresses, the fwmark and the peer from the config; their steps run nothing.
        let script = super::changes(&fresh(None), OnFailure::Stop);
        assert!(
            script.contains("MESHCTL_APPLYING=1 wg-quick up wg0"),
            "{script}"
        );
        assert!(
            !script.contains("wg set") && !script.contains("-batch"),
            "{script}"
        );
    }

    #[test]
    fn jumps_go_in_one_restore_per_family_with_the_checked_form_as_fallback() {
        let jump = |family, from: &str| Change {
            action: Action::Add,
            kind: "jump".into(),
            resource: format!("jump {from}"),
            before: None,
            after: None,
            diff: None,
            op: Op::AddJump {
                jump: crate::state::Jump {
                    family,
                    table: "filter".into(),
                    from: from.into(),
                    to: format!("MESHCTL-{from}"),
                },
            },
        };
        let script = changes(
            &[
                jump(Family::Ipv4, "FORWARD"),
                jump(Family::Ipv4, "INPUT"),
                jump(Family::Ipv6, "FORWARD"),
            ],
            OnFailure::Stop,
        );
        let batch = script.split("\nelse\n").next().unwrap();
        assert_eq!(batch.matches("tables-restore -w --noflush <<").count(), 2);
        assert!(batch.contains(
            "*filter\n-I FORWARD 1 -m comment --comment meshctl -j MESHCTL-FORWARD\n\
             -I INPUT 1 -m comment --comment meshctl -j MESHCTL-INPUT\nCOMMIT\n"
        ));
        assert!(!batch.contains(" -C "));
        // Each alone, checked first, should the batch fail.
        let fallback = script.split("\nelse\n").nth(1).unwrap();
        assert_eq!(fallback.matches(" -C ").count(), 3);
        assert!(parses(&script), "{script}");
    }

    /// `sh -n` (parse only) of a script.
    fn parses(script: &str) -> bool {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sh")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait().unwrap().success()
    }

    #[test]
    fn provision_installs_before_the_key_and_marks_a_failed_install() {
        let s = provision(
            &[
                (Manager::Apt, vec!["wireguard-tools".into()]),
                (Manager::Apk, vec!["ip6tables".into()]),
            ],
            "/etc/wireguard/wg0.key",
            "wg0",
            &KeyWork {
                psk_files: vec!["/etc/wireguard/psk/laptop.psk".into()],
                next_key: false,
            },
        );
        assert!(parses(&s), "{s}");
        // A fresh hub's preshared keys are made after the install, with the key.
        let psk = s.find("/etc/wireguard/psk/laptop.psk").unwrap();
        assert!(psk > s.find("wg genkey").unwrap(), "{s}");
        let apt = s.find("apt-get").unwrap();
        let apk = s.find("apk add").unwrap();
        let key = s.find("wg genkey").unwrap();
        assert!(apt < apk && apk < key, "{s}");
        assert!(s.contains(&format!("|| {{ echo {MARK_INSTALL_FAILED} 1; exit 1; }}")));
        // The key is made under umask 077, the packages are installed under 022.
        assert!(s.starts_with("set -u\numask 022\n"));
        assert!(s[..key].contains("umask 077\n"));
        // The prepare script still parses with its wg-less branch.
        let p = prepare("me", false, "/etc/wireguard/wg0.key", "wg0", "true");
        assert!(parses(&p), "{p}");
        assert!(p.contains(&format!("echo {MARK_PUBKEY}\necho '{NO_KEY}'\n")));
    }
}
