//! The binary's edge: parse the command line, dispatch, print the error chain (each message
//! once, see `meshctl::report`), set the exit code. `anyhow` lives here only.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use meshctl::cli::{Cli, Command, DEFAULT_INVENTORY, INVENTORY_ENV};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match missing_inventory(&matches) {
        Some(e) => Err(e),
        None => dispatch(cli),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", meshctl::report::render(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// When the inventory was not given with `-i` and the file it fell back to does not exist, the
/// error that says how meshctl looks for one and what to do. Only the command line knows where a
/// value came from, so this is decided here and not where the file is read.
fn missing_inventory(matches: &ArgMatches) -> Option<anyhow::Error> {
    // The innermost subcommand's arguments (`lab up` is two levels down).
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    let path = m.try_get_one::<std::path::PathBuf>("inventory").ok()??;
    if path.exists() {
        return None;
    }
    match m.value_source("inventory")? {
        ValueSource::DefaultValue => Some(anyhow::anyhow!(
            "no inventory: none was given with -i FILE, ${INVENTORY_ENV} is not set, and ./{DEFAULT_INVENTORY} does not exist\n  \
             help: pass -i FILE, set {INVENTORY_ENV}=FILE, or start ./{DEFAULT_INVENTORY} by copying \
             inventory/example.yaml from meshctl's source and editing it"
        )),
        ValueSource::EnvVariable => Some(anyhow::anyhow!(
            "the inventory {} named by ${INVENTORY_ENV} does not exist\n  \
             help: set {INVENTORY_ENV} to an existing file, unset it to use ./{DEFAULT_INVENTORY}, or pass -i FILE",
            path.display()
        )),
        // Given with -i: reading it reports the path and the I/O error.
        _ => None,
    }
}

/// Runs the subcommand; its `Ok` value is the process exit code.
fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Lab(args) => meshctl::lab::run(args.command),
        Command::Client(args) => on_runtime(meshctl::commands::client::run(args, cli.verbose)),
        Command::Init(args) => meshctl::commands::init::run(args),
        Command::Import(args) => on_runtime(meshctl::commands::import::run(args, cli.verbose)),
        Command::Graph(args) => on_runtime(meshctl::commands::graph::run(args, cli.verbose)),
        Command::Plan(args) => on_runtime(meshctl::commands::plan::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
        Command::Status(args) => on_runtime(meshctl::commands::status::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
        Command::Verify(args) => on_runtime(meshctl::commands::verify::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
        Command::Rotate(args) => on_runtime(meshctl::commands::rotate::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
        Command::Apply(args) => on_runtime(meshctl::commands::apply::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
    }
}

/// Runs a command on a tokio runtime, then shuts it down without waiting for a prompt that is
/// still reading the terminal (after Ctrl-C).
fn on_runtime<F: std::future::Future<Output = anyhow::Result<u8>>>(f: F) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let result = rt.block_on(f);
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}
