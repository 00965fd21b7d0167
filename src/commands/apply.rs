//! `meshctl apply`: wires the command line to the engine ([`crate::engine::apply::run`]) and
//! the terminal: the plan is shown and confirmed here, the summary rendered by `render`.

use std::io::IsTerminal;

use anyhow::{Context, bail};

use super::{EXIT_ERROR, EXIT_OK};
use crate::cli::ApplyArgs;
use crate::edge::terminal::Terminal;
use crate::engine::apply::{ApplyOptions, ApplyResult, PlanSource};
use crate::engine::{ExecuteSettings, HostOutcome, Lock};
use crate::render;

/// Runs `meshctl apply`.
pub async fn run(args: ApplyArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    run_rotating(args, None, no_color, verbose).await
}

/// Runs `meshctl apply`, rotating a key when `rotate` says so (`meshctl rotate`).
pub async fn run_rotating(
    args: ApplyArgs,
    rotate: Option<crate::engine::apply::Rotation>,
    no_color: bool,
    verbose: bool,
) -> anyhow::Result<u8> {
    let saved = match &args.plan_file {
        Some(p) => Some(crate::files::load_plan(p)?),
        None => None,
    };
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    let source = match (saved, &args.plan_file) {
        (Some(plan), Some(path)) => {
            // Refused before any host is contacted.
            crate::saved_plan::check_inputs(&plan, &inputs.digest, path)?;
            PlanSource::Saved {
                plan: Box::new(plan),
                path: path.clone(),
            }
        }
        _ => PlanSource::Fresh {
            only: inputs
                .limit(&args.common.limit)
                .map_err(anyhow::Error::msg)?,
        },
    };
    // Without a terminal there is nobody to ask: refuse before any host is locked.
    if !args.yes && !std::io::stdin().is_terminal() {
        bail!(
            "there is no terminal to confirm on: review `meshctl plan`, then run `meshctl apply --yes`"
        );
    }
    let mut ssh = super::ssh_options(&args.common);
    if !args.yes {
        // The connections wait while the user reads the plan and answers.
        ssh.master_idle_timeout = std::time::Duration::from_secs(900);
    } else {
        // No prompt to outlast a kept connection's idle time: one that `plan
        // --keep-connections` left open is used instead of a new one.
        ssh.reuse_kept = true;
    }
    let (engine, progress) = super::engine(&inputs, &args.common, ssh, verbose);
    let timings = args
        .timings
        .as_ref()
        .map(|_| std::sync::Arc::new(crate::engine::Timings::new()));
    let engine = match &timings {
        Some(t) => engine.with_timings(t.clone()),
        None => engine,
    };
    let opts = ApplyOptions {
        lock: Lock {
            holder: holder(),
            break_lock: args.break_lock,
        },
        accept_new_keys: args.accept_new_keys,
        execute: ExecuteSettings {
            run_id: run_id(),
            guard_timeout_secs: args.guard_timeout.max(5),
        },
        rotate: rotate.clone(),
        crossing: crate::edge::ssh_paths::crossing(&super::ssh_options(&args.common)),
    };
    let operator = Terminal {
        yes: args.yes,
        style: super::stdout_style(no_color),
        progress,
        keys_path: inputs.inventory.keys_path(),
    };
    let result = crate::engine::apply::run(&engine, &inputs, source, &opts, &operator).await;
    if let (Some(path), Some(t)) = (&args.timings, &timings) {
        std::fs::write(path, t.to_json())
            .with_context(|| format!("cannot write the timings to {}", path.display()))?;
    }
    match result? {
        ApplyResult::Cancelled => {
            println!(
                "Apply cancelled: nothing was changed, except that hosts without a private key got one in step 1 (it stays on the host; its public key is pinned)."
            );
            Ok(EXIT_ERROR)
        }
        ApplyResult::Applied {
            plan,
            outcomes,
            rotated,
        } => {
            let results = outcomes
                .iter()
                .map(|(h, o)| (h.clone(), o.result()))
                .collect();
            print!("{}", render::apply_summary(&plan, &results));
            if let Some((host, old, new)) = rotated.as_deref() {
                let psk = rotate.as_ref().is_some_and(|r| r.psk);
                print!(
                    "{}",
                    crate::psk::rotation_summary(
                        &inputs.inventory,
                        &inputs.keys,
                        host,
                        old,
                        new,
                        psk
                    )
                );
            }
            let all_converged = plan
                .hosts
                .iter()
                .all(|h| matches!(outcomes.get(&h.host), Some(HostOutcome::Converged { .. })));
            if !all_converged {
                return Ok(EXIT_ERROR);
            }
            if args.no_verify {
                return Ok(EXIT_OK);
            }
            verify_after(&args, no_color, verbose).await
        }
    }
}

/// After a converged apply: `meshctl verify` with a longer deadline per probe (see
/// [`VERIFY_DEADLINE_SECS`]), then
/// "applied and verified" or the paths that do not work.
async fn verify_after(args: &ApplyArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    // Read again: apply pinned the keys of hosts that had none, and verify names peers by key.
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    let report = super::verify::check(&inputs, &args.common, verbose, VERIFY_DEADLINE_SECS).await?;
    let style = super::stdout_style(no_color);
    println!("\nVerify:");
    print!("{}", crate::verify::text(&report, style));
    if report.ok() {
        println!("Applied and verified.");
        Ok(EXIT_OK)
    } else {
        println!(
            "Applied, but the network does not pass traffic on the paths above (run `meshctl verify` again, `meshctl status` to see the tunnels)."
        );
        Ok(EXIT_ERROR)
    }
}

/// How long each probe of the verify after apply waits for its answer, in seconds. A peer
/// apply re-added on one side (the hub) keeps a session the other side (a roaming laptop, whose
/// endpoint the hub cannot know) still believes in: that side starts a new handshake only after
/// WireGuard's keepalive timeout plus rekey timeout, 15 s of unanswered packets, so a working
/// path may take that long to answer right after apply.
const VERIFY_DEADLINE_SECS: u32 = 20;

/// A name for this apply run, unique enough to keep guards of different runs apart.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Who holds the lock: this process, on this machine, since now.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "meshctl pid {} on {} since unix time {since}",
        std::process::id(),
        host.trim()
    )
}
