//! `meshctl graph`: the inventory drawn as SVG, DOT or mermaid; with `--plan`, gathered like
//! `meshctl plan` and coloured by what the plan would change. Drawing is `crate::graph`'s.

use anyhow::Context;

use super::{EXIT_ERROR, EXIT_OK};
use crate::cli::{GraphArgs, GraphFormat};

/// The format `--format` names, else the one the output file's extension names, else SVG.
pub fn format_for(args: &GraphArgs) -> GraphFormat {
    if let Some(f) = args.format {
        return f;
    }
    let ext = args
        .out
        .as_ref()
        .and_then(|p| p.extension())
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("dot" | "gv") => GraphFormat::Dot,
        Some("mmd" | "mermaid") => GraphFormat::Mermaid,
        _ => GraphFormat::Svg,
    }
}

/// Runs `meshctl graph`.
pub async fn run(args: GraphArgs, verbose: bool) -> anyhow::Result<u8> {
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    let plan = if args.plan {
        inputs
            .limit(&args.common.limit)
            .map_err(anyhow::Error::msg)?;
        Some(super::plan::make_plan(&inputs, &args.common, None, verbose).await)
    } else {
        None
    };
    let model = crate::graph::model(&inputs.inventory, plan.as_ref());
    let text = match format_for(&args) {
        GraphFormat::Svg => crate::graph::svg(&model),
        GraphFormat::Dot => crate::graph::dot(&model),
        GraphFormat::Mermaid => crate::graph::mermaid(&model),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("writing the picture to {}", path.display()))?;
            eprintln!("Wrote {}.", path.display());
        }
        None => print!("{text}"),
    }
    // A host that could not be gathered is drawn red and named here; the exit code says so.
    let mut code = EXIT_OK;
    for h in plan.iter().flat_map(|p| p.failed_hosts()) {
        eprintln!(
            "{}: not gathered: {}",
            h.host,
            h.error.as_deref().unwrap_or("unknown error")
        );
        code = EXIT_ERROR;
    }
    Ok(code)
}
