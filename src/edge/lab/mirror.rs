//! The lab's own Debian package mirror: the .debs a fresh machine needs to become a WireGuard
//! host, fetched once on the controller into the lab cache, indexed as a flat repository and
//! served over HTTP from the lab's `inet` host, so `apt-get` inside a machine never leaves the lab.
//!
//! The set is exactly what `apt-get install` of [`PACKAGES`] pulls into the cached root file
//! system (resolved by apt itself, in a throwaway overlay of it), without recommends: apt skips
//! a recommended package the mirror lacks, so the same set serves either way of installing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use super::{cache, rootfs, sys};

/// What a fresh machine lacks and meshctl installs on it.
pub const PACKAGES: &[&str] = &["wireguard-tools", "wireguard-go", "iptables"];

/// The port the mirror listens on (on `inet`'s address).
pub const PORT: u16 = 80;

/// Bumped when [`fetch`] or [`index`] change, so that a new recipe builds a new cache entry.
const RECIPE_VERSION: u32 = 2;

/// The cache entry's name, stamped with the root file system it was resolved against.
pub fn cache_name(rootfs_name: &str) -> String {
    let digest =
        Sha256::digest(format!("{RECIPE_VERSION} {rootfs_name} {}", PACKAGES.join(",")).as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("mirror-{}-{hex}", rootfs::SUITE)
}

/// The machines' apt source for a mirror at `url`.
pub fn sources_list(url: &str) -> String {
    format!("# the lab's package mirror (meshctl lab)\ndeb [trusted=yes] {url} ./\n")
}

/// The cached mirror for the root file system at `rootfs`, fetched and indexed first when it is
/// missing.
pub fn ensure(rootfs_dir: &Path) -> anyhow::Result<PathBuf> {
    sys::require_programs(&[sys::Needed {
        program: "dpkg-scanpackages",
        package: "dpkg-dev",
    }])?;
    let rootfs_name = rootfs_dir
        .file_name()
        .context("root file system has no name")?
        .to_string_lossy()
        .into_owned();
    cache::ensure(
        &cache_name(&rootfs_name),
        "the lab's package mirror (apt-get --download-only)",
        |partial| fetch(rootfs_dir, partial).and_then(|()| index(partial)),
    )
}

/// Lets apt resolve and download [`PACKAGES`] inside a throwaway overlay of the root file system
/// (so the cached tree stays fresh), then keeps the .debs.
fn fetch(rootfs_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let scratch = out.join(".scratch");
    let (upper, work, merged) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("root"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d)?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs_dir.display(),
        upper.display(),
        work.display()
    );
    let merged_s = merged.to_str().context("cache path is not UTF-8")?;
    sys::run(&["mount", "-t", "overlay", "overlay", "-o", &opts, merged_s])?;
    let result = (|| {
        std::fs::write(
            merged.join("etc/apt/sources.list"),
            format!("deb {} {} main\n", rootfs::debian_mirror(), rootfs::SUITE),
        )?;
        let script = format!(
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; \
             apt-get install -y -q --download-only --no-install-recommends {}",
            PACKAGES.join(" ")
        );
        // Not a boot: one command in the tree, with the controller's network and DNS.
        sys::run(&[
            "systemd-nspawn",
            "-q",
            "-D",
            merged_s,
            "--register=no",
            "--keep-unit",
            "--resolv-conf=copy-host",
            "--timezone=off",
            "sh",
            "-c",
            &script,
        ])?;
        let archives = upper.join("var/cache/apt/archives");
        let mut n = 0;
        for entry in std::fs::read_dir(&archives)
            .with_context(|| format!("apt downloaded nothing into {}", archives.display()))?
        {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "deb") {
                std::fs::copy(&p, out.join(p.file_name().expect("a file")))?;
                n += 1;
            }
        }
        if n == 0 {
            bail!("apt downloaded no package for {}", PACKAGES.join(" "));
        }
        Ok(())
    })();
    let cleaned = cache::remove_tree(&scratch);
    result.and(cleaned)
}

/// Writes `Packages` (dpkg-scanpackages) and a `Release` with its hashes: a flat repository.
fn index(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new("dpkg-scanpackages")
        .args(["--multiversion", ".", "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run dpkg-scanpackages")?;
    if !out.status.success() {
        bail!(
            "dpkg-scanpackages failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(dir.join("Packages"), &out.stdout)?;
    // apt wants a Date in the C locale's RFC 1123 form.
    let date = Command::new("date")
        .args(["-u", "+%a, %d %b %Y %H:%M:%S UTC"])
        .env("LC_ALL", "C")
        .output()
        .context("cannot run date")?;
    let date = String::from_utf8_lossy(&date.stdout).trim().to_owned();
    let mut release = format!(
        "Origin: meshctl-lab\nLabel: meshctl-lab\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n\
         Architectures: all amd64 arm64\nDescription: the packages a fresh lab machine needs\n\
         SHA256:\n",
        suite = rootfs::SUITE
    );
    let hash: String = Sha256::digest(&out.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let _ = writeln!(release, " {hash} {} Packages", out.stdout.len());
    std::fs::write(dir.join("Release"), release)?;
    Ok(())
}

/// Serves `mirror` on `addr:PORT` from inside namespace `ns` (python3's http.server, logging to
/// `log`); returns its pid once it answers.
pub fn serve(mirror: &Path, ns: &str, addr: &str, log: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt as _;
    sys::require_programs(&[sys::Needed {
        program: "python3",
        package: "python3",
    }])?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let port = PORT.to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-m", "http.server"])
        .args(["--bind", addr, &port, "--directory"])
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: a Ctrl-C at the terminal is not meant for it.
        .process_group(0)
        .spawn()
        .context("cannot start the lab's package mirror (python3 -m http.server)")?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = sys::status_with_timeout(
            &[
                "ip", "netns", "exec", ns, "nc", "-z", "-w", "1", addr, &port,
            ],
            Duration::from_secs(3),
        )?;
        if probe == Some(true) {
            return Ok(pid);
        }
        if !sys::alive(pid) || Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "the lab's package mirror did not answer on {addr}:{port}: {}",
                text.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_point_only_at_the_mirror() {
        assert_eq!(
            sources_list("http://198.51.100.200:80"),
            "# the lab's package mirror (meshctl lab)\ndeb [trusted=yes] http://198.51.100.200:80 ./\n"
        );
    }
}
