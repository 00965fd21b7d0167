//! `meshctl verify`: every managed host pings its targets (one remote execution per host, all
//! in parallel), then the matrix or JSON; exit 1 naming the failing pairs.

use std::collections::BTreeMap;

use crate::cli::VerifyArgs;
use crate::names::HostName;
use crate::planner::Inputs;
use crate::scripts::verify as script;
use crate::verify::{self, VerifyReport};

/// Runs `meshctl verify`.
pub async fn run(args: VerifyArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    let report = check(&inputs, &args.common, verbose, script::DEADLINE_SECS).await?;
    if args.json {
        print!("{}", verify::json(&report));
    } else {
        print!("{}", verify::text(&report, super::stdout_style(no_color)));
    }
    Ok(if report.ok() {
        super::EXIT_OK
    } else {
        super::EXIT_ERROR
    })
}

/// Runs the check on the managed hosts (all, or `--limit`): one execution per host, each probe
/// waiting up to `deadline` seconds for its answer.
pub async fn check(
    inputs: &Inputs,
    common: &crate::cli::Common,
    verbose: bool,
    deadline: u32,
) -> anyhow::Result<VerifyReport> {
    let only = inputs.limit(&common.limit).map_err(anyhow::Error::msg)?;
    let mut targets = verify::targets(&inputs.inventory, &inputs.desired());
    if let Some(only) = &only {
        targets.retain(|h, _| only.contains(h));
    }
    let interface = &inputs.inventory.network.interface;
    let scripts: BTreeMap<HostName, String> = targets
        .iter()
        .map(|(h, t)| {
            (
                h.clone(),
                script::script(&verify::probes(t), interface, deadline),
            )
        })
        .collect();
    let (engine, progress) = super::engine(inputs, common, super::ssh_options(common), verbose);
    let outcomes = engine
        .run_each(scripts, "pinging")
        .await
        .into_iter()
        .map(|(h, r)| {
            let count = targets[&h].len();
            let r = r
                .map_err(|e| e.to_string())
                .and_then(|o| script::parse(&o.stdout, count).map_err(|e| format!("{h}: {e}")));
            (h, r)
        })
        .collect();
    progress.clear();
    Ok(verify::build(
        &inputs.inventory,
        &inputs.keys,
        &targets,
        &outcomes,
    ))
}
