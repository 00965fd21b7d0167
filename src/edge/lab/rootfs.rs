//! The root file system every lab machine boots: Debian 12 (minbase) with systemd, sshd and sudo,
//! set up like a freshly rented cloud VPS, built once with debootstrap into the lab cache.
//!
//! Fresh means what such a host lacks too: no wireguard-tools, no wireguard-go, no iptables, no
//! package lists (apt must be updated first, from the lab's own mirror), no root login over SSH.
//! What differs per machine (host name, host key, the lab's login key, apt source, machine id)
//! is written into each machine's copy by `machine`, so one cached tree serves every lab.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use super::{cache, sys};

/// The Debian release the machines run.
pub const SUITE: &str = "bookworm";

/// Overrides the Debian mirror debootstrap and the lab mirror's fetch use.
pub const DEBIAN_MIRROR_ENV: &str = "MESHCTL_LAB_DEBIAN_MIRROR";

/// The Debian mirror when [`DEBIAN_MIRROR_ENV`] is not set.
pub const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// The packages debootstrap adds to minbase: an init system, a login over SSH, sudo, and the
/// tools any VPS image has. Deliberately not wireguard-tools, wireguard-go or iptables.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
];

/// The login user of every machine (as cloud images have `debian` or `admin`): passwordless
/// `sudo`, the lab's key in its authorized_keys; root cannot log in over SSH.
pub const LOGIN_USER: &str = "admin";

/// Bumped when [`customize`] changes, so that a new recipe builds a new cache entry.
const RECIPE_VERSION: u32 = 1;

/// sshd's drop-in: no root login at all, keys only, the lab's one host key, and a log line per
/// login and per session (the tests read who logged in from the journal).
pub const SSHD_DROP_IN: &str = "# meshctl lab machine: a cloud image's sshd
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
MaxSessions 128
MaxStartups 128
LogLevel VERBOSE
";

/// The cache entry's name: the suite and a stamp of the recipe (packages, customisation, mirror).
pub fn cache_name() -> String {
    let recipe = format!(
        "{RECIPE_VERSION} {SUITE} {} {}",
        PACKAGES.join(","),
        debian_mirror()
    );
    let digest = Sha256::digest(recipe.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("rootfs-{SUITE}-{hex}")
}

/// The Debian mirror: `$MESHCTL_LAB_DEBIAN_MIRROR`, else deb.debian.org.
pub fn debian_mirror() -> String {
    std::env::var(DEBIAN_MIRROR_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_DEBIAN_MIRROR.to_owned())
}

/// The cached root file system, built first when it is missing (about a minute and a half).
pub fn ensure() -> anyhow::Result<PathBuf> {
    sys::require_programs(&[
        sys::Needed {
            program: "debootstrap",
            package: "debootstrap",
        },
        sys::Needed {
            program: "systemd-nspawn",
            package: "systemd-container",
        },
    ])?;
    cache::ensure(
        &cache_name(),
        "the lab machines' root file system (debootstrap)",
        |partial| {
            let root = partial.to_str().context("cache path is not UTF-8")?;
            let include = format!("--include={}", PACKAGES.join(","));
            sys::run(&[
                "debootstrap",
                "--variant=minbase",
                &include,
                SUITE,
                root,
                &debian_mirror(),
            ])?;
            customize(partial)
        },
    )
}

/// Runs `argv` chrooted into `root`.
fn in_root(root: &Path, argv: &[&str]) -> anyhow::Result<String> {
    let root = root.to_str().context("root path is not UTF-8")?;
    let mut full = vec!["chroot", root];
    full.extend_from_slice(argv);
    sys::run(&full)
}

fn write(root: &Path, path: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let p = root.join(path.trim_start_matches('/'));
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Turns debootstrap's tree into a cloud image's: the login user with passwordless sudo, sshd's
/// drop-in, no host keys (each machine gets its own), no package lists, no sources, no DNS.
fn customize(root: &Path) -> anyhow::Result<()> {
    in_root(
        root,
        &[
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            LOGIN_USER,
        ],
    )?;
    write(
        root,
        &format!("/etc/sudoers.d/90-cloud-init-{LOGIN_USER}"),
        &format!("# as cloud images ship it\n{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n"),
        0o440,
    )?;
    write(
        root,
        "/etc/ssh/sshd_config.d/50-meshctl-lab.conf",
        SSHD_DROP_IN,
        0o644,
    )?;
    for entry in std::fs::read_dir(root.join("etc/ssh"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path())?;
        }
    }
    // apt knows nothing until `apt-get update` against the machine's source (the lab mirror).
    let lists = root.join("var/lib/apt/lists");
    for entry in std::fs::read_dir(&lists)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    for f in [
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
    ] {
        let _ = std::fs::remove_file(root.join(f));
    }
    let sources_d = root.join("etc/apt/sources.list.d");
    if sources_d.is_dir() {
        for entry in std::fs::read_dir(&sources_d)? {
            std::fs::remove_file(entry?.path())?;
        }
    }
    write(
        root,
        "/etc/apt/sources.list",
        "# written per machine by meshctl lab\n",
        0o644,
    )?;
    // Nothing in the lab resolves names; an empty file fails fast instead of waiting on a
    // nameserver outside the lab.
    write(root, "/etc/resolv.conf", "", 0o644)?;
    // Each machine gets its own id; the journal persists across reboots.
    write(root, "/etc/machine-id", "", 0o444)?;
    std::fs::create_dir_all(root.join("var/log/journal"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_vps_lacks_what_meshctl_must_install() {
        for p in ["wireguard-tools", "wireguard-go", "iptables"] {
            assert!(!PACKAGES.contains(&p), "{p}");
        }
        assert!(SSHD_DROP_IN.contains("PermitRootLogin no\n"));
    }

    #[test]
    fn cache_name_is_stamped() {
        let n = cache_name();
        assert!(n.starts_with("rootfs-bookworm-"), "{n}");
        assert_eq!(n.len(), "rootfs-bookworm-".len() + 8);
    }
}
