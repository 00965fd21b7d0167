//! The lab's cache on the machine: things built once and shared by every lab (the machines'
//! root file system, the package mirror), outside any checkout.
//!
//! An entry is a directory `<cache>/<name>` that is either complete or absent: it is built in
//! `<name>.partial` and renamed when done, so a crash never leaves half an entry, and built under
//! an exclusive lock on `<name>.lock`, so parallel tests wait for one build instead of racing.
//! Names carry a stamp of their recipe: a changed recipe builds a new entry beside the old one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// Overrides the cache directory (e.g. for a CI cache mount).
pub const CACHE_ENV: &str = "MESHCTL_LAB_CACHE";

/// The cache directory when [`CACHE_ENV`] is not set.
pub const DEFAULT_CACHE: &str = "/var/cache/meshctl-lab";

/// The cache directory: `$MESHCTL_LAB_CACHE`, else `/var/cache/meshctl-lab`.
pub fn dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// Returns `<cache>/<name>`, building it with `build(partial_dir)` first when it is missing.
/// `what` names the entry in messages ("the machines' root file system").
pub fn ensure(
    name: &str,
    what: &str,
    build: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let cache = dir();
    let entry = cache.join(name);
    if entry.is_dir() {
        return Ok(entry);
    }
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create the lab cache {}", cache.display()))?;
    let lock_path = cache.join(format!("{name}.lock"));
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    // Someone else may have built it while we waited for the lock.
    if entry.is_dir() {
        return Ok(entry);
    }
    let partial = cache.join(format!("{name}.partial"));
    remove_tree(&partial)?;
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    eprintln!(
        "meshctl lab: building {what} once, in {} (later labs reuse it)",
        entry.display()
    );
    let started = Instant::now();
    if let Err(e) = build(&partial) {
        let _ = remove_tree(&partial);
        return Err(e.context(format!("cannot build {what} in {}", partial.display())));
    }
    std::fs::rename(&partial, &entry)
        .with_context(|| format!("cannot move {} to {}", partial.display(), entry.display()))?;
    eprintln!(
        "meshctl lab: built {what} in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(entry)
}

/// The mount points at or below `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything mounted at or below `dir`, deepest first (lazily when busy).
pub fn unmount_under(dir: &Path) -> anyhow::Result<()> {
    for m in mounts_under(dir) {
        let p = m.to_string_lossy();
        if super::sys::run(&["umount", &p]).is_err() {
            super::sys::run(&["umount", "-l", &p])
                .with_context(|| format!("cannot unmount {p}"))?;
        }
    }
    Ok(())
}

/// Removes `dir` and everything in it, never crossing into a file system mounted below it
/// (anything still mounted there is unmounted first).
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_under(dir)?;
    if !mounts_under(dir).is_empty() {
        bail!("{} still has file systems mounted below it", dir.display());
    }
    let p = dir.to_string_lossy();
    super::sys::run(&["rm", "-rf", "--one-file-system", &p])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c"), "/a b\tc");
        assert_eq!(unescape_mountinfo(r"/plain/path"), "/plain/path");
        assert_eq!(unescape_mountinfo(r"/end\"), r"/end\");
    }
}
