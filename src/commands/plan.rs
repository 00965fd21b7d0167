//! `meshctl plan`: gather every managed host (one connection, one execution each, all in
//! parallel), diff against the desired state, and show the plan.

use std::collections::BTreeMap;

use anyhow::Context;

use super::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK};
use crate::cli::{PlanArgs, PlanFormat};
use crate::facts::GatherSpec;
use crate::names::HostName;
use crate::plan::Plan;
use crate::planner::{self, Gathered, Inputs};
use crate::render::{self};

/// Gathers the managed hosts (all, or `--limit`) and builds the plan; `keep`: leave the
/// connections open for that long (`--keep-connections`).
pub async fn make_plan(
    inputs: &Inputs,
    common: &crate::cli::Common,
    keep: Option<std::time::Duration>,
    verbose: bool,
) -> Plan {
    let mut desired = inputs.desired();
    if let Ok(Some(only)) = inputs.limit(&common.limit) {
        desired.retain(|h, _| only.contains(h));
    }
    let specs: BTreeMap<HostName, GatherSpec> = desired
        .iter()
        .map(|(h, d)| (h.clone(), planner::gather_spec(d, &inputs.roles)))
        .collect();
    let mut ssh = super::ssh_options(common);
    if let Some(keep) = keep {
        // A kept connection is reused by the next plan too, and kept again.
        ssh.keep = true;
        ssh.reuse_kept = true;
        ssh.master_idle_timeout = keep.min(crate::edge::kept::MAX_KEEP);
    }
    let (engine, progress) = super::engine(inputs, common, ssh, verbose);
    let live: BTreeMap<HostName, Gathered> = engine
        .gather(specs)
        .await
        .into_iter()
        .map(|(h, r)| (h, r.map_err(|e| e.to_string())))
        .collect();
    progress.clear();
    let crossing = crate::edge::ssh_paths::crossing(&super::ssh_options(common));
    planner::build_guarded(inputs, &desired, &live, &crossing)
}

/// Runs `meshctl plan`.
pub async fn run(args: PlanArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    inputs
        .limit(&args.common.limit)
        .map_err(anyhow::Error::msg)?;
    let keep = args.keep_connections.map(std::time::Duration::from_secs);
    if keep.is_some() && !crate::transport::keeping_possible() {
        eprintln!(
            "meshctl: --keep-connections: the directory for kept connections ($XDG_RUNTIME_DIR, else the temp directory) is not yours alone; the connections are closed as usual"
        );
    }
    let plan = make_plan(&inputs, &args.common, keep, verbose).await;
    if let Some(out) = &args.out {
        crate::files::save_plan(&plan, out)
            .with_context(|| format!("saving the plan to {}", out.display()))?;
    }
    if let Some(file) = &args.summary {
        crate::files::append_text(file, &crate::render_markdown::markdown(&plan))
            .with_context(|| format!("appending the summary to {}", file.display()))?;
    }
    let format = if args.json {
        PlanFormat::Json
    } else {
        args.format
    };
    if format == PlanFormat::Json {
        print!("{}", render::json(&plan));
    } else if format == PlanFormat::Markdown {
        print!("{}", crate::render_markdown::markdown(&plan));
    } else {
        let style = super::stdout_style(no_color);
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
