//! The binary's edge: parse the command line, dispatch, print the whole error chain, set the
//! exit code. `anyhow` lives here only.

use std::process::ExitCode;

use clap::Parser;
use meshctl::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(args) => meshctl::lab::run(args.command),
        Command::Client(args) => meshctl::commands::client::run(args),
        Command::Plan(args) => runtime().block_on(meshctl::commands::plan::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
        Command::Apply(args) => runtime().block_on(meshctl::commands::apply::run(
            args,
            cli.no_color,
            cli.verbose,
        )),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}
