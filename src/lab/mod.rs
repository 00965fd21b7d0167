//! `meshctl lab`: real hosts on one machine (network namespaces, sshd, wireguard-go).

use crate::cli::LabCommand;

/// Runs a lab subcommand; returns the process exit code.
pub fn run(_cmd: LabCommand) -> anyhow::Result<u8> {
    anyhow::bail!("meshctl lab: not yet implemented")
}
