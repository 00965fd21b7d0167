//! `meshctl plan`: gather every managed host (one connection, one execution each, all in
//! parallel), diff against the desired state, and show the plan.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;

use super::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK};
use crate::cli::PlanArgs;
use crate::desired::Desired;
use crate::names::HostName;
use crate::plan::Plan;
use crate::planner::{self, Gathered, Inputs};
use crate::progress::Progress;
use crate::remote;
use crate::render::{self, Style};

/// Gathers all managed hosts and builds the plan.
pub async fn make_plan(
    inputs: &Inputs,
    common: &crate::cli::Common,
    verbose: bool,
) -> (
    Plan,
    BTreeMap<HostName, Desired>,
    BTreeMap<HostName, Gathered>,
) {
    let mut desired = inputs.desired();
    if let Ok(Some(only)) = inputs.limit(&common.limit) {
        desired.retain(|h, _| only.contains(h));
    }
    let hosts: Vec<HostName> = desired.keys().cloned().collect();
    let progress = Arc::new(Progress::new(
        &hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        verbose,
    ));
    let opts = remote::ssh_options(common);
    let live = remote::for_each_host(hosts, common.parallel, |h| {
        let target = inputs.inventory.hosts[&h]
            .ssh
            .clone()
            .expect("managed host");
        let spec = planner::gather_spec(&desired[&h], &inputs.roles);
        remote::gather(h, target, spec, opts.clone(), progress.clone())
    })
    .await;
    progress.clear();
    let plan = planner::build(inputs, &desired, &live);
    (plan, desired, live)
}

/// Runs `meshctl plan`.
pub async fn run(args: PlanArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    let inputs = Inputs::load(&args.common.inventory, args.common.roles.as_deref())?;
    inputs
        .limit(&args.common.limit)
        .map_err(anyhow::Error::msg)?;
    let (plan, _, _) = make_plan(&inputs, &args.common, verbose).await;
    if let Some(out) = &args.out {
        crate::saved_plan::save(&plan, out)
            .with_context(|| format!("saving the plan to {}", out.display()))?;
    }
    if args.json {
        print!("{}", render::json(&plan));
    } else {
        let style = Style::detect(std::io::stdout().is_terminal(), no_color);
        print!("{}", render::text(&plan, style));
        if let Some(out) = &args.out {
            println!(
                "Saved the plan to {}: apply it exactly with `meshctl apply {}`.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if plan.failed_hosts().next().is_some() {
        EXIT_ERROR
    } else if args.detailed_exitcode && plan.has_changes() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}
