//! The subcommands that talk to hosts: each reads its inputs, hands them to the engine, prints
//! through one place, and returns the process exit code.

pub mod apply;
pub mod client;
pub mod graph;
pub mod import;
pub mod init;
pub mod plan;
pub mod rotate;
pub mod status;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cli::Common;
use crate::engine::{Engine, SshConnector};
use crate::names::HostName;
use crate::planner::Inputs;
use crate::progress::Progress;
use crate::transport::SshOptions;

/// Exit code: success (and, with `--detailed-exitcode`, no changes).
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (bad input, a host that failed).
pub const EXIT_ERROR: u8 = 1;
/// Exit code with `--detailed-exitcode`: changes pending.
pub const EXIT_CHANGES: u8 = 2;

/// How to draw on stdout: colours on a terminal, never with `--no-color` or NO_COLOR.
pub fn stdout_style(no_color: bool) -> crate::render::Style {
    use std::io::IsTerminal;
    let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    crate::render::Style::new(std::io::stdout().is_terminal(), no_color || env_off)
}

/// The ssh options the command line asks for.
pub fn ssh_options(c: &Common) -> SshOptions {
    SshOptions {
        config_file: c.ssh_config.clone(),
        accept_new_host_keys: c.accept_new_host_keys,
        ..SshOptions::default()
    }
}

/// The engine over SSH for the inventory's managed hosts, with progress on stderr.
pub fn engine(
    inputs: &Inputs,
    common: &Common,
    ssh: SshOptions,
    verbose: bool,
) -> (Engine<SshConnector>, Arc<Progress>) {
    let targets: BTreeMap<HostName, crate::inventory::SshTarget> = inputs
        .inventory
        .hosts
        .values()
        .filter_map(|h| h.ssh.clone().map(|t| (h.name.clone(), t)))
        .collect();
    // Spinners appear for the hosts the command works on, not every host of the inventory.
    let progress = Arc::new(Progress::new(&[], verbose));
    let engine = Engine::new(
        SshConnector::new(targets, ssh),
        common.parallel,
        progress.clone(),
    );
    (engine, progress)
}
