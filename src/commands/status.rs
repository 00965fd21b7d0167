//! `meshctl status`: one remote execution per managed host (the status script), the pure
//! report, a table or JSON; `--watch` redraws.

use std::collections::BTreeMap;

use crate::cli::StatusArgs;
use crate::names::HostName;
use crate::scripts::status as script;
use crate::status::{self, StatusReport};

/// Runs `meshctl status`.
pub async fn run(args: StatusArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    let only = inputs
        .limit(&args.common.limit)
        .map_err(anyhow::Error::msg)?;
    let style = super::stdout_style(no_color);
    loop {
        let report = gather(&inputs, &args, only.as_deref(), verbose).await;
        let shown = if args.json {
            status::json(&report)
        } else {
            status::text(&report, style)
        };
        match args.watch {
            None => {
                print!("{shown}");
                return Ok(if report.hosts.iter().all(|h| h.reachable) {
                    super::EXIT_OK
                } else {
                    super::EXIT_ERROR
                });
            }
            Some(secs) => {
                use std::io::IsTerminal;
                if std::io::stdout().is_terminal() {
                    // Home the cursor and clear the screen, then draw.
                    print!("\x1b[H\x1b[2J");
                }
                print!("{shown}");
                tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))).await;
            }
        }
    }
}

async fn gather(
    inputs: &crate::planner::Inputs,
    args: &StatusArgs,
    only: Option<&[HostName]>,
    verbose: bool,
) -> StatusReport {
    let text = script::script(&inputs.inventory.network.interface);
    let scripts: BTreeMap<HostName, String> = inputs
        .inventory
        .hosts
        .values()
        .filter(|h| h.is_managed() && only.is_none_or(|o| o.contains(&h.name)))
        .map(|h| (h.name.clone(), text.clone()))
        .collect();
    let (engine, progress) = super::engine(
        inputs,
        &args.common,
        super::ssh_options(&args.common),
        verbose,
    );
    let seen = engine
        .run_each(scripts, "reading status")
        .await
        .into_iter()
        .map(|(h, r)| {
            let r = r
                .map_err(|e| e.to_string())
                .and_then(|o| script::parse(&o.stdout).map_err(|e| format!("{h}: {e}")));
            (h, r)
        })
        .collect();
    progress.clear();
    status::build(&inputs.inventory, &inputs.keys, &seen, args.online_within)
}
