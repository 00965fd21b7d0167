//! Connections a `plan --keep-connections SECONDS` leaves open for the `apply --yes` that
//! follows it (like Ansible's ControlPersist): the apply then opens no SSH connection of its
//! own to those hosts — no key exchange, no login — and runs its executions over the plan's.
//!
//! Off by default, and bounded: a kept connection's control master exits on its own once it
//! has had no client for SECONDS (at most [`MAX_KEEP`]), and a kept connection is taken by
//! exactly one later run (its record is removed when read). While it is open, any process of
//! the same local user that reaches its socket can run commands on the host as the login user
//! without the key or the agent — which is why the records live in a directory of this user's
//! alone (mode 0700, checked on every use, refused otherwise), beside the control sockets the
//! transport makes in the same private place.
//!
//! A record names the connection's control socket and the master's log; it is found by the
//! destination as written (user, host, port) and the ssh_config in use — its resolved path and
//! its content (`~/.ssh/config` and `/etc/ssh/ssh_config` where none is given) — so a
//! different inventory entry, `--ssh-config` or an edited config never gets another's
//! connection. The run that takes a connection holds it open until it closes it
//! (`transport::Session`), whatever idle time the keeping run gave it.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use crate::inventory::model::SshTarget;

/// The longest a connection may be kept idle (`plan --keep-connections` accepts 1 to this).
pub const MAX_KEEP: Duration = Duration::from_secs(600);

/// The record of a kept connection to `target` (through `config`, the ssh_config file used),
/// under `control_dir`; `None` where the records' directory is not this user's alone.
pub fn record_path(
    control_dir: &Path,
    target: &SshTarget,
    config: Option<&Path>,
) -> Option<PathBuf> {
    let dir = private_dir(control_dir)?;
    let mut h = sha2::Sha256::new();
    h.update(target.user.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(target.host.as_bytes());
    h.update([0]);
    h.update(
        target
            .port
            .map(|p| p.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    let configs: Vec<PathBuf> = match config {
        Some(c) => vec![std::fs::canonicalize(c).unwrap_or_else(|_| c.to_path_buf())],
        None => {
            let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".ssh/config"));
            home.into_iter()
                .chain([PathBuf::from("/etc/ssh/ssh_config")])
                .collect()
        }
    };
    for c in configs {
        h.update([0]);
        h.update(c.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&c).unwrap_or_default());
    }
    let name: String = h
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(dir.join(name))
}

/// Records a connection to keep: its control socket and master log. Records of connections
/// whose master has exited meanwhile (kept, never taken) are removed first, with their
/// private directories.
pub fn record(path: &Path, socket: &Path, log: Option<&Path>) -> std::io::Result<()> {
    if let (Some(dir), Some(control)) = (path.parent(), socket.parent().and_then(Path::parent)) {
        sweep(dir, control);
    }
    let text = format!(
        "{}\n{}\n",
        socket.display(),
        log.map(|l| l.display().to_string()).unwrap_or_default()
    );
    if text.lines().count() != 2 {
        return Err(std::io::Error::other("a path with a line break"));
    }
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))?;
    std::fs::rename(&tmp, path)
}

/// Takes the kept connection recorded at `path`, if any: the record is removed (no other run
/// gets it) and its socket and log returned when the socket is still there, inside
/// `control_dir`. A connection whose master has exited (its socket gone) leaves nothing.
pub fn take(path: &Path, control_dir: &Path) -> Option<(PathBuf, Option<PathBuf>)> {
    let text = std::fs::read_to_string(path).ok();
    let _ = std::fs::remove_file(path);
    let text = text?;
    let mut lines = text.lines();
    let socket = PathBuf::from(lines.next()?);
    let log = lines.next().filter(|l| !l.is_empty()).map(PathBuf::from);
    // The socket of a connection's own directory right inside the control directory.
    let dir = socket.parent()?;
    if !(socket.file_name().is_some_and(|n| n == "master") && is_connection_dir(dir, control_dir)) {
        return None;
    }
    let uid = effective_uid()?;
    let alive = std::fs::symlink_metadata(&socket).is_ok_and(|m| !m.file_type().is_symlink());
    if !alive {
        remove_connection_dir(Some(dir), control_dir);
        return None;
    }
    // This user's alone: the directory and the socket are ours and nobody else can write the
    // directory (a socket planted by another user would get the scripts).
    let ours = |p: &Path, others_may_write: bool| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            m.uid() == uid
                && !m.file_type().is_symlink()
                && (others_may_write || m.permissions().mode() & 0o022 == 0)
        })
    };
    (ours(dir, false) && ours(&socket, true)).then_some((socket, log))
}

/// Removes the private directory of a connection the transport did not make in this process
/// (kept by an earlier run): only a `.ssh-connection*` directory right inside `control_dir`.
pub fn remove_connection_dir(dir: Option<&Path>, control_dir: &Path) {
    if let Some(dir) = dir.filter(|d| is_connection_dir(d, control_dir)) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Whether `dir` is a connection's private directory: a `.ssh-connection*` directory right
/// inside `control_dir` (an absolute path without `..` in between).
fn is_connection_dir(dir: &Path, control_dir: &Path) -> bool {
    dir.is_absolute()
        && dir.parent() == Some(control_dir)
        && dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".ssh-connection"))
}

/// Removes the records (and directories) of kept connections whose master has exited.
fn sweep(records: &Path, control_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(records) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        // Another host's record being written (the hosts of a run close in parallel).
        if path.extension().is_some_and(|x| x == "new") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let socket = PathBuf::from(text.lines().next().unwrap_or_default());
        if std::fs::symlink_metadata(&socket).is_err() {
            let _ = std::fs::remove_file(&path);
            remove_connection_dir(socket.parent(), control_dir);
        }
    }
}

/// Whether connections can be kept under `control_dir` (its records' directory is, or can be
/// made, this user's alone).
pub fn possible(control_dir: &Path) -> bool {
    private_dir(control_dir).is_some()
}

/// The effective user (the owner of this process's /proc entry).
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The records' directory under `control_dir`, made where missing: this user's alone (owned
/// by the effective user, mode 0700, not a symlink) inside a control directory that is this
/// user's or root's and sticky (so nobody else can move what is in it), or `None`.
fn private_dir(control_dir: &Path) -> Option<PathBuf> {
    let uid = effective_uid()?;
    let c = std::fs::metadata(control_dir).ok()?;
    let sticky = c.permissions().mode() & 0o1000 != 0;
    if !(c.uid() == uid || (sticky && c.uid() == 0)) {
        return None;
    }
    let dir = control_dir.join(format!("meshctl-kept-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let m = std::fs::symlink_metadata(&dir).ok()?;
    let ok = m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0;
    ok.then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str) -> SshTarget {
        SshTarget {
            user: Some("root".into()),
            host: host.into(),
            port: None,
        }
    }

    #[test]
    fn a_record_is_taken_once_and_only_for_its_destination_and_config() {
        let control = tempfile::tempdir().unwrap();
        let c = control.path();
        let config = Path::new("/etc/lab/ssh_config");
        let a = record_path(c, &target("vps"), Some(config)).unwrap();
        assert_ne!(a, record_path(c, &target("nas"), Some(config)).unwrap());
        assert_ne!(a, record_path(c, &target("vps"), None).unwrap());
        let socket = c.join(".ssh-connection1/master");
        std::fs::create_dir(socket.parent().unwrap()).unwrap();
        std::fs::write(&socket, "").unwrap();
        record(&a, &socket, Some(&c.join(".ssh-connection1/log"))).unwrap();
        let mode = std::fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(a.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(
            take(&a, c),
            Some((socket.clone(), Some(c.join(".ssh-connection1/log"))))
        );
        assert_eq!(take(&a, c), None, "a kept connection is taken once");
        // A record pointing outside the control directory is not followed.
        record(&a, Path::new("/tmp/elsewhere/master"), None).unwrap();
        assert_eq!(take(&a, c), None);
    }

    #[test]
    fn an_edited_config_or_a_socket_others_could_have_planted_is_not_taken() {
        let control = tempfile::tempdir().unwrap();
        let c = control.path();
        let config = c.join("ssh_config");
        std::fs::write(&config, "Host vps\n  HostName 192.0.2.1\n").unwrap();
        let before = record_path(c, &target("vps"), Some(&config)).unwrap();
        std::fs::write(&config, "Host vps\n  HostName 192.0.2.2\n").unwrap();
        assert_ne!(
            before,
            record_path(c, &target("vps"), Some(&config)).unwrap()
        );
        // The same file named another way is the same config.
        let dotted = c.join(".").join("ssh_config");
        assert_eq!(
            record_path(c, &target("vps"), Some(&config)),
            record_path(c, &target("vps"), Some(&dotted))
        );
        let dir = c.join(".ssh-connection2");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("master"), "").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        record(&before, &dir.join("master"), None).unwrap();
        assert_eq!(take(&before, c), None, "a directory others can write");
    }

    #[test]
    fn a_records_directory_others_can_enter_is_refused() {
        let control = tempfile::tempdir().unwrap();
        let a = record_path(control.path(), &target("vps"), None).unwrap();
        std::fs::set_permissions(a.parent().unwrap(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_eq!(record_path(control.path(), &target("vps"), None), None);
    }
}
