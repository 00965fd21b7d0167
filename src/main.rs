//! The binary's edge: parse the command line, dispatch, print the error chain (each message
//! once, see `meshctl::report`), set the exit code. `anyhow` lives here only.

use std::process::ExitCode;

use clap::Parser;
use meshctl::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(args) => meshctl::lab::run(args.command),
        Command::Client(args) => meshctl::commands::client::run(args),
        Command::Plan(args) => on_runtime(meshctl::commands::plan::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
        Command::Apply(args) => on_runtime(meshctl::commands::apply::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", meshctl::report::render(e.as_ref()));
            ExitCode::from(1)
        }
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
