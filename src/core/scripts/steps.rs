//! The scripts apply runs on a host: at most three remote executions per host.
//!
//! 1. `prepare`: take the host's lock in /run/meshctl, generate the private key where there is
//!    none (umask 077, a 0600 file; only the public key is printed), then gather.
//! 2. `changes`: one script applying the host's changes, each with the smallest command that
//!    does it, announcing every step so a failure says what was applied before it.
//! 3. `finish`: gather again (to confirm convergence) and release the lock.
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
/// The lock directory (mkdir is atomic).
pub const LOCK_DIR: &str = "/run/meshctl/lock";

/// What every marker line the scripts print for the controller starts with.
pub const MARK_PREFIX: &str = "@@meshctl";

// Marker lines the scripts print for the controller.
/// `prepare`: the lock is held by another apply; the next line names the holder.
pub const MARK_LOCKED: &str = "@@meshctl locked@@";
/// `prepare`: the next line is the host's public key.
pub const MARK_PUBKEY: &str = "@@meshctl pubkey@@";
/// `changes`: a step starts (`MARK N`, N the change's index in the plan).
pub const MARK_STEP: &str = "@@meshctl step@@";
/// `changes`: step N failed (the script stops there unless it runs with [`OnFailure::Continue`]).
pub const MARK_FAILED: &str = "@@meshctl failed@@";
/// `changes`: every step succeeded.
pub const MARK_DONE: &str = "@@meshctl done@@";

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
    writeln!(s, "mkdir -p {RUN_DIR}").ok();
    writeln!(
        s,
        "if ! mkdir {LOCK_DIR} 2>/dev/null; then\n  if [ {} = 1 ]; then\n    for f in {RUN_DIR}/guard-*/rollback.sh; do [ -e \"$f\" ] && mv \"$f\" \"$f.discarded\"; done\n    rm -rf {LOCK_DIR}; mkdir {LOCK_DIR} || exit 1\n  else echo {MARK_LOCKED}; cat {LOCK_DIR}/holder 2>/dev/null; exit {EXIT_LOCKED}; fi\nfi",
        u8::from(break_lock)
    )
    .ok();
    writeln!(s, "printf '%s\\n' {} > {LOCK_DIR}/holder", quote(holder)).ok();
    // Until the host is prepared, a failure gives the lock back.
    writeln!(s, "trap 'rm -rf {LOCK_DIR}' EXIT").ok();
    let key = quote(key_path);
    let iface = quote(interface);
    // A key that already lives on the interface (a hand-made setup) is adopted, so the host
    // keeps its identity; it goes to the 0600 file, never to the output.
    // With the interface down, a hand-made config's `PrivateKey =` is the only copy of the
    // host's identity: it is adopted too (into the 0600 file, checked with `wg pubkey`, never
    // printed), before a new key would overwrite the config that holds it.
    let conf = quote(&crate::persist::conf_path(interface));
    writeln!(
        s,
        "if [ ! -s {key} ]; then\n  mkdir -p \"$(dirname {key})\"\n  t={key}.meshctl-new\n  if ! {{ wg show {iface} private-key 2>/dev/null | grep -qv '^(none)$' && wg show {iface} private-key > \"$t\"; }} \\\n     && ! {{ [ -r {conf} ] && sed -n 's/^[[:space:]]*[Pp]rivate[Kk]ey[[:space:]]*=[[:space:]]*\\([A-Za-z0-9+/]\\{{43\\}}=\\)[[:space:]]*$/\\1/p' {conf} | head -n 1 > \"$t\" && [ -s \"$t\" ] && wg pubkey < \"$t\" >/dev/null 2>&1; }}; then\n    wg genkey > \"$t\" || {{ rm -f \"$t\"; echo 'cannot generate a key: is wireguard-tools installed?' >&2; exit 1; }}\n  fi\n  chmod 600 \"$t\" && mv -f \"$t\" {key} || exit 1\nfi"
    )
    .ok();
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
    writeln!(s, "echo {MARK_PUBKEY}\nwg pubkey < {key} || exit 1").ok();
    s.push_str(gather);
    s.push_str("\ntrap - EXIT\n");
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

/// The order changes are applied in. Files first (the interface's config, the rules files the
/// restores read); then meshctl's firewall chains and their jumps, *before anything that opens
/// a path* — forwarding sysctls, the interface, addresses, peers, routes, NDP answers — so a
/// failing restore (the script stops there) leaves forwarding as closed as it was: it fails
/// closed. Rules that name the interface load fine before it exists. Removals of firewall
/// pieces come last, after whatever they protected is gone or changed.
fn rank(op: &Op) -> u8 {
    match op {
        Op::WriteFile { .. } => 0,
        Op::GenerateKey { .. } | Op::FixKeyMode { .. } => 1,
        // A pair's key file is in place before the peer that loads it is set.
        Op::GeneratePsk { .. } | Op::RotatePsk { .. } | Op::WritePsk { .. } => 1,
        Op::RestoreChains { .. } | Op::RestoreRules { .. } => 2,
        Op::AddJump { .. } => 3,
        Op::SetSysctl { .. } => 4,
        Op::CreateInterface { .. } => 5,
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
    ordered.sort_by_key(|(_, c)| rank(&c.op));
    // A run that died mid-write (a crash, a killed session) leaves its half-written temp file;
    // under the lock no other run writes there, so write_file removes such leftovers first.
    let mut s = String::from(
        "set -u\n\
         write_file() { d=$(dirname \"$1\"); mkdir -p \"$d\" || return 1; rm -f \"$d\"/.meshctl.??????; t=$(mktemp \"$d/.meshctl.XXXXXX\") || return 1; \
         if cat > \"$t\" && sync \"$t\" && chmod \"$2\" \"$t\" && mv -f \"$t\" \"$1\"; then return 0; fi; rm -f \"$t\"; return 1; }\n",
    );
    let mut restored: BTreeSet<Family> = BTreeSet::new();
    for (i, c) in ordered {
        let Some(cmd) = command(&c.op, &mut restored, carried) else {
            continue;
        };
        writeln!(s, "echo {MARK_STEP} {i}").ok();
        let stop = match on_failure {
            OnFailure::Stop => " exit 1;",
            OnFailure::Continue => "",
        };
        // `9>&-`: no step inherits the guard's serialising descriptor (a daemon a step starts
        // must not hold it).
        writeln!(
            s,
            "{{ {cmd}\n}} 9>&- || {{ echo {MARK_FAILED} {i};{stop} }}"
        )
        .ok();
    }
    writeln!(s, "echo {MARK_DONE}").ok();
    s
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
    carried: &crate::psk::Carried,
) -> Option<String> {
    Some(match op {
        Op::GenerateKey { .. } => return None, // done by `prepare`
        Op::GeneratePsk { .. } => return None, // done by `prepare`
        Op::RotatePsk { .. } => return None,   // done by `carry`, before this script
        Op::WritePsk { path, from, source } => match carried.get(from, source) {
            // A fixed delimiter: one made from the content would say something about it.
            Some(key) => format!(
                "{} && write_file {} 600 <<'MESHCTL_PSK_EOF'\n{key}\nMESHCTL_PSK_EOF",
                spell::psk_dir(path),
                quote(path)
            ),
            None => format!(
                "echo {} >&2; false",
                quote(&format!("the preshared key from {from} was not carried"))
            ),
        },
        Op::LoadPsk {
            interface,
            public_key,
            path,
            ..
        } => spell::wg_psk_load(interface, public_key.as_ref()?.as_str(), path.as_deref()),
        Op::FixKeyMode { path } => spell::key_chmod(path),
        Op::SwitchKey { interface, path } => spell::key_switch(interface, path),
        Op::CreateInterface { interface } => spell::wg_quick_up(interface),
        Op::SetListenPort { interface, port } => spell::wg_listen_port(interface, *port),
        Op::AddAddress { interface, address } => spell::address_replace(interface, address),
        Op::DelAddress { interface, address } => spell::address_del(interface, address),
        Op::SetPeer {
            interface, peer, ..
        } => spell::wg_set_peer(interface, peer.public_key.as_ref()?.as_str(), peer),
        Op::RemovePeer {
            interface,
            public_key,
        } => spell::wg_remove_peer(interface, public_key),
        Op::SetFwmark { interface, fwmark } => spell::wg_fwmark(interface, *fwmark),
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
            format!("write_file {} {:o} <<'{d}'\n{body}{d}", quote(path), mode)
        }
        Op::RemoveFile { path } => spell::file_remove(path),
        Op::EnableService { unit } => spell::service_enable(unit),
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
            started.push(i);
        } else if let Some(i) = line.strip_prefix(MARK_FAILED).and_then(index) {
            failed = Some(i);
        }
    }
    (started, failed)
}
