//! The scripts apply runs on a host: at most three remote executions per host (four on a host
//! that gets packages installed).
//!
//! 1. `prepare`: take the host's lock in /run/meshctl, generate the private key where there is
//!    none (umask 077, a 0600 file; only the public key is printed; not on a host without
//!    `wg` yet), then gather. After the prompt, a host whose plan installs packages gets one
//!    more execution first, `provision`: install them, then make its key.
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
    // Without `wg` (a fresh host) there is no key yet: the plan installs wireguard-tools,
    // and `provision` makes the key after the prompt.
    writeln!(
        s,
        "if command -v wg >/dev/null 2>&1; then\n{}echo {MARK_PUBKEY}\nwg pubkey < {} || exit 1\nelse\necho {MARK_PUBKEY}\necho {}\nfi",
        key_block(key_path, interface),
        quote(key_path),
        quote(NO_KEY)
    )
    .ok();
    s.push_str(gather);
    s.push_str("\ntrap - EXIT\n");
    s
}

/// Makes sure the private key file exists: a key that already lives on the interface (a
/// hand-made setup) is adopted, so the host keeps its identity; it goes to the 0600 file, never
/// to the output. With the interface down, a hand-made config's `PrivateKey =` is the only
/// copy of the host's identity: it is adopted too (into the 0600 file, checked with `wg
/// pubkey`, never printed), before a new key would overwrite the config that holds it.
/// Otherwise a new key is generated. Runs under `umask 077`.
fn key_block(key_path: &str, interface: &str) -> String {
    let key = quote(key_path);
    let iface = quote(interface);
    let conf = quote(&crate::persist::conf_path(interface));
    format!(
        "if [ ! -s {key} ]; then\n  mkdir -p \"$(dirname {key})\"\n  t={key}.meshctl-new\n  if ! {{ wg show {iface} private-key 2>/dev/null | grep -qv '^(none)$' && wg show {iface} private-key > \"$t\"; }} \\\n     && ! {{ [ -r {conf} ] && sed -n 's/^[[:space:]]*[Pp]rivate[Kk]ey[[:space:]]*=[[:space:]]*\\([A-Za-z0-9+/]\\{{43\\}}=\\)[[:space:]]*$/\\1/p' {conf} | head -n 1 > \"$t\" && [ -s \"$t\" ] && wg pubkey < \"$t\" >/dev/null 2>&1; }}; then\n    wg genkey > \"$t\" || {{ rm -f \"$t\"; echo 'cannot generate a key: is wireguard-tools installed?' >&2; exit 1; }}\n  fi\n  chmod 600 \"$t\" && mv -f \"$t\" {key} || exit 1\nfi\n"
    )
}

/// After the prompt, on a host whose plan installs packages or that has no key yet (it had
/// no `wg` in step 1), under the lock step 1 took: install the packages (non-interactively,
/// waiting for a package manager lock another process holds), then make the key and print
/// the public key, as step 1 does. An install that fails prints [`MARK_INSTALL_FAILED`] and
/// its index after the manager's own output and stops: nothing else is touched.
pub fn provision(
    installs: &[(crate::packages::Manager, Vec<String>)],
    key_path: &str,
    interface: &str,
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
    writeln!(
        s,
        "echo {MARK_PUBKEY}\nwg pubkey < {} || exit 1",
        quote(key_path)
    )
    .ok();
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
        Op::InstallPackages { .. } => 0,
        Op::WriteFile { .. } => 0,
        Op::GenerateKey { .. } | Op::FixKeyMode { .. } => 1,
        Op::RestoreChains { .. } | Op::RestoreRules { .. } => 2,
        Op::AddJump { .. } => 3,
        Op::SetSysctl { .. } => 4,
        Op::CreateInterface { .. } | Op::StartService { .. } | Op::TakeOverInterface { .. } => 5,
        Op::AddAddress { .. }
        | Op::DelAddress { .. }
        | Op::SetListenPort { .. }
        | Op::SetFwmark { .. } => 6,
        Op::SetPeer { .. } | Op::RemovePeer { .. } => 7,
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
        let Some(cmd) = command(&c.op, &mut restored) else {
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
fn command(op: &Op, restored: &mut BTreeSet<Family>) -> Option<String> {
    Some(match op {
        Op::GenerateKey { .. } => return None, // done by `prepare` or `provision`
        Op::InstallPackages { .. } => return None, // done by `provision`
        Op::FixKeyMode { path } => spell::key_chmod(path),
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
            started.push(i);
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
        );
        assert!(parses(&s), "{s}");
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
