//! The subcommands that talk to hosts: each reads its inputs, drives the core and the edges,
//! prints through one place, and returns the process exit code.

pub mod apply;
pub mod client;
pub mod plan;

/// Exit code: success (and, with `--detailed-exitcode`, no changes).
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (bad input, a host that failed).
pub const EXIT_ERROR: u8 = 1;
/// Exit code with `--detailed-exitcode`: changes pending.
pub const EXIT_CHANGES: u8 = 2;
