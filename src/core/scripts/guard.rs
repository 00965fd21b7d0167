//! Confirm or roll back: for a host meshctl reaches through the network it manages (a NAS over
//! the VPN), one wrong change would cut meshctl off. Its changes are applied under a guard:
//!
//! 1. before changing anything, the host saves what it needs to go back — copies of the files
//!    about to change, and a rollback script made of the plan's rollback ops (the planner's
//!    *inverse diff*, from the desired state back to the live state it gathered);
//! 2. it arms a timer, in its own session (`setsid`) so it survives the SSH connection dying;
//! 3. meshctl applies the changes, then confirms over a **new** connection;
//! 4. no confirmation in time: the host restores its previous state by itself and releases the
//!    lock.
//!
//! Each guard has its own directory under /run/meshctl, so a timer never acts on a later apply.

use std::fmt::Write;

use crate::plan::{Change, GuardPlan, Op};
use crate::shell::quote;

use super::steps;

/// Exit status of [`confirm`] when the guard was never armed (the change script never ran).
pub const EXIT_NEVER_ARMED: i32 = 5;
/// First line of [`status`] when the host rolled back by itself.
pub const STATUS_ROLLED_BACK: &str = "rolled-back";

/// The guard directory of one apply on a host.
pub fn dir(run_id: &str) -> String {
    format!("{}/guard-{run_id}", steps::RUN_DIR)
}

/// The commands that arm the guard: put before a guarded host's changes script.
pub fn arm(run_id: &str, changes: &[Change], plan: &GuardPlan, timeout_secs: u64) -> String {
    let g = dir(run_id);
    let gq = quote(&g);
    let mut s = format!(
        "guard_fail() {{ echo \"cannot arm the rollback guard: $1\" >&2; rm -rf {gq} {lock}; exit 1; }}\n\
         rm -rf {gq} && mkdir -p {gq}/files || guard_fail 'cannot make its directory'\n",
        lock = steps::LOCK_DIR
    );
    let paths: Vec<&str> = changes
        .iter()
        .filter_map(|c| match &c.op {
            Op::WriteFile { path, .. } | Op::RemoveFile { path } | Op::WritePsk { path, .. } => {
                Some(path.as_str())
            }
            _ => None,
        })
        .collect();

    let mut rb = String::from(
        "set -u\n# Written by meshctl: restores the state before an unconfirmed apply.\n",
    );
    for (i, p) in paths.iter().enumerate() {
        let (p, saved) = (quote(p), quote(&format!("{g}/files/{i}")));
        writeln!(
            s,
            "if [ -e {p} ]; then cp -p {p} {saved} || guard_fail 'cannot copy a file'; fi"
        )
        .ok();
        writeln!(
            rb,
            "if [ -e {saved} ]; then cp -p {saved} {p}; else rm -f {p}; fi"
        )
        .ok();
    }
    if let Some(wg) = &plan.created_interface {
        // An interface its unit brought up is stopped by the unit, so systemd's state stays
        // true; the link is deleted in any case.
        for c in changes {
            if let Op::StartService { unit, interface } = &c.op
                && interface == wg
            {
                writeln!(rb, "{}", crate::spell::service_stop(unit)).ok();
            }
        }
        writeln!(rb, "ip link del {} 2>/dev/null", quote(wg)).ok();
    }
    // Best effort: a rollback step that fails does not stop the others.
    rb.push_str(&steps::changes(&plan.rollback, steps::OnFailure::Continue));
    rb.push_str(&steps::unlock());

    let delim = format!(
        "MESHCTL_ROLLBACK_{}",
        run_id.replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    // Written aside and renamed: a rollback script that exists is a whole one.
    writeln!(
        s,
        "cat > {gq}/rollback.new <<'{delim}' || guard_fail 'cannot write its script'\n{rb}{delim}\nmv {gq}/rollback.new {gq}/rollback.sh || guard_fail 'cannot write its script'"
    )
    .ok();
    // Timer and change script are serialised on the host: the change script (this shell)
    // holds `serial` from here to its end (its steps do not inherit the descriptor), and a
    // timer that claims the rollback first stops this shell — its running step first — and
    // then waits for `serial`, so a rollback never runs beside a change still in progress, and
    // the lock is released (by the rollback's last line) only after both are done.
    writeln!(
        s,
        "echo $$ > {gq}/changes.pid && exec 9> {gq}/serial && flock -x 9 || guard_fail 'cannot take its lock'"
    )
    .ok();
    let stop_changes = format!(
        "p=$(cat {gq}/changes.pid 2>/dev/null); \
         if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then \
         kill -STOP \"$p\"; \
         for f in /proc/[0-9]*/status; do grep -q \"^PPid:[[:space:]]*$p$\" \"$f\" 2>/dev/null && {{ c=${{f#/proc/}}; c=${{c%/status}}; [ \"$c\" = $$ ] || kill -KILL \"$c\" 2>/dev/null; }}; done; \
         kill -KILL \"$p\"; fi"
    );
    writeln!(
        s,
        "setsid sh -c {} </dev/null >/dev/null 2>&1 9>&- &",
        quote(&format!(
            "sleep {timeout_secs}; if mv {gq}/rollback.sh {gq}/rollback.claimed 2>/dev/null; then {stop_changes}; flock -x {gq}/serial sh {gq}/rollback.claimed > {gq}/rollback.log 2>&1; touch {gq}/rolled-back; fi"
        ))
    )
    .ok();
    writeln!(s, "echo guard armed for {timeout_secs}s").ok();
    s
}

/// Put after a guarded host's changes script: only a script that got to its end marks the
/// changes as applied, and only applied changes can be confirmed.
pub fn applied(run_id: &str) -> String {
    format!("touch {}/applied\n", quote(&dir(run_id)))
}

/// Confirms over a new connection, then gathers and releases the lock (step 3). The timer and
/// the confirmation both claim the rollback script with one atomic `mv`: exactly one of them
/// wins, so a host never rolls back after meshctl reported it confirmed. Changes that did not
/// get to their end (a failed step, a script cut off) are not confirmed: the timer rolls them
/// back.
pub fn confirm(run_id: &str, gather: &str) -> String {
    let g = quote(&dir(run_id));
    format!(
        "if [ -e {g}/rolled-back ] || [ -e {g}/rollback.claimed ]; then echo 'the guard already rolled back' >&2; exit 3; fi\n\
         if [ ! -e {g}/rollback.sh ]; then echo 'the guard was never armed' >&2; exit {never}; fi\n\
         if [ ! -e {g}/applied ]; then echo 'the changes did not finish on the host' >&2; exit 4; fi\n\
         mv {g}/rollback.sh {g}/rollback.confirmed 2>/dev/null || {{ echo 'the guard already rolled back' >&2; exit 3; }}\n\
         rm -rf {g}\n{}",
        steps::finish(gather),
        never = EXIT_NEVER_ARMED,
    )
}

/// Asks a host, after its guard expired, whether it rolled back.
pub fn status(run_id: &str) -> String {
    let g = quote(&dir(run_id));
    format!(
        "if [ -e {g}/rolled-back ]; then echo {STATUS_ROLLED_BACK}; cat {g}/rollback.log 2>/dev/null; elif [ -e {g}/rollback.claimed ]; then echo rolling-back; elif [ ! -e {g} ]; then echo confirmed; else echo pending; fi\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    #[test]
    fn an_interface_its_unit_started_is_stopped_by_the_unit_on_rollback() {
        let start = Change {
            action: Action::Add,
            kind: "interface".into(),
            resource: "interface wg0".into(),
            before: None,
            after: None,
            diff: None,
            op: Op::StartService {
                unit: "wg-quick@wg0".into(),
                interface: "wg0".into(),
            },
        };
        let plan = GuardPlan {
            rollback: vec![],
            created_interface: Some("wg0".into()),
        };
        let s = arm("run-1", std::slice::from_ref(&start), &plan, 30);
        let stop = s.find("systemctl stop wg-quick@wg0 2>/dev/null").expect(&s);
        assert!(stop < s.find("ip link del wg0").unwrap());
        // Brought up by the change script or `wg-quick up` (no systemd): no unit to stop.
        let up = Change {
            op: Op::CreateInterface {
                interface: "wg0".into(),
                key_file: None,
                mtu: None,
            },
            ..start
        };
        assert!(!arm("run-1", &[up], &plan, 30).contains("systemctl"));
    }
}
