//! The binary's edge: parse the command line, dispatch, print the whole error chain, set the
//! exit code. `anyhow` lives here only.

use std::process::ExitCode;

use clap::Parser;
use meshctl::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(args) => meshctl::lab::run(args.command),
        Command::Plan(_) | Command::Apply(_) | Command::Client(_) => {
            eprintln!("meshctl: not yet implemented");
            return ExitCode::from(1);
        }
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
