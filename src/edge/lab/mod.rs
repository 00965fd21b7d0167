//! `meshctl lab`: real hosts on one machine (network namespaces, sshd, wireguard-go).
//!
//! A lab is built from an inventory (see `topology`): one network namespace per host, named
//! `<prefix>-<host>`, where the prefix is derived from the lab directory so that several labs
//! coexist (parallel tests, a demo during a test run). Hosts with an `ssh:` target run their own
//! sshd inside a private mount namespace (`config::PRIVATE_DIRS` are tmpfs) and are reached
//! through the generated `<dir>/ssh_config`. Everything the lab made is recorded in
//! `<dir>/lab.json` (`state`), which `down`, `exec`, `status` and the tests read.

pub mod cache;
pub mod config;
pub mod down;
pub mod exec;
pub mod machine;
pub mod mirror;
pub mod rootfs;
pub mod state;
pub mod sys;
pub mod topology;
pub mod up;

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::cli::LabCommand;

pub use config::{Layout, count_sshd_log};
pub use state::{HostKind, LabHost, LabState, load};

/// Runs a lab subcommand; returns the process exit code.
pub fn run(cmd: LabCommand) -> anyhow::Result<u8> {
    match cmd {
        LabCommand::Up {
            inventory,
            dir,
            machines,
        } => up::up(&inventory, &dir, &machines),
        LabCommand::Down { dir } => down::down(&dir),
        LabCommand::Status { dir } => exec::status(&dir),
        LabCommand::Exec { dir, host, command } => exec::exec(&dir, &host, &command),
    }
}

/// The namespace prefix of the lab in `canonical_dir`: `m` and 5 hex digits of a hash of the
/// path, short enough to leave room in names and unique enough for labs that coexist.
pub fn prefix_for(canonical_dir: &Path) -> String {
    let digest = Sha256::digest(canonical_dir.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    format!("m{}", &hex[..5])
}

/// `(connections, sessions)` sshd logged for `host` of the lab in `dir` (`Accepted publickey`
/// and `Starting session:` lines); `(0, 0)` when it has no log yet.
pub fn sshd_counts(dir: &Path, host: &str) -> (usize, usize) {
    std::fs::read_to_string(Layout::new(dir).sshd_log(host))
        .map(|t| count_sshd_log(&t))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_and_differ_per_dir() {
        let a = prefix_for(Path::new("/work/a/.meshctl-lab"));
        let b = prefix_for(Path::new("/work/b/.meshctl-lab"));
        assert_eq!(a.len(), 6);
        assert!(a.starts_with('m'));
        assert_ne!(a, b);
        assert_eq!(a, prefix_for(Path::new("/work/a/.meshctl-lab")));
    }
}
