//! The edge on the controller's disk: reading the inventory, the roles directory, the pins
//! file and saved plans, and writing pins and plans. The pure core parses and renders; only
//! this module opens files. Every write goes to a temporary file created exclusively (a
//! random name beside the target, 0600 from its creation), is synced, and renamed over the
//! target, so a crash leaves the old file whole and no other process can slip in a file of
//! its own under a predictable name.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::inventory::{Inventory, InventoryError};
use crate::keys::{KeysError, PinnedKeys};
use crate::plan::Plan;
use crate::planner::Inputs;
use crate::roles::{RoleError, Roles};
use crate::saved_plan::SavedPlanError;

/// Why the inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The inventory could not be read or is invalid.
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    /// A role file (`--roles DIR`) could not be read or is invalid.
    #[error(transparent)]
    Roles(#[from] crate::roles::RoleError),
    /// The pinned keys file could not be read or is invalid.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeysError),
}

/// Reads and validates the inventory, roles and pinned keys. No host is contacted.
pub fn load_inputs(inventory: &Path, roles_dir: Option<&Path>) -> Result<Inputs, InputError> {
    let (inv, text) = read_inventory(inventory)?;
    let roles = load_roles(roles_dir)?;
    roles.check_policy(&inv)?;
    let keys = load_pins(&inv)?;
    Ok(Inputs::new(inv, &text, roles, keys))
}

/// The built-in roles, with any of them replaced by `DIR/<role>.yaml` when present.
pub fn load_roles(dir: Option<&Path>) -> Result<Roles, RoleError> {
    let mut overrides = std::collections::BTreeMap::new();
    if let Some(dir) = dir {
        for name in Roles::names() {
            let p = dir.join(format!("{name}.yaml"));
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    overrides.insert(name.to_owned(), (p.display().to_string(), text));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RoleError {
                        file: p.display().to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }
    Roles::with_overrides(&overrides)
}

/// Reads and validates the inventory at `path`.
pub fn load_inventory(path: &Path) -> Result<Inventory, InventoryError> {
    read_inventory(path).map(|(inv, _)| inv)
}

/// Reads and validates the inventory at `path`, also returning the bytes it was made from
/// (read once: what is validated is exactly what a digest covers).
pub fn read_inventory(path: &Path) -> Result<(Inventory, Vec<u8>), InventoryError> {
    let bytes = std::fs::read(path).map_err(|source| InventoryError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let inv = crate::inventory::parse_bytes(&bytes, &path.display().to_string(), path)?;
    Ok((inv, bytes))
}

/// The pins beside the inventory (an absent file is an empty set), with the keys the inventory
/// gives itself on top.
pub fn load_pins(inv: &Inventory) -> Result<PinnedKeys, KeysError> {
    Ok(read_pins(&inv.keys_path())?.with_inventory(inv))
}

/// Reads one keys file; an absent file is an empty set, any other failure an error.
pub fn read_pins(path: &Path) -> Result<PinnedKeys, KeysError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PinnedKeys::parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PinnedKeys::default()),
        Err(source) => Err(KeysError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the keys file atomically.
pub fn save_pins(pins: &PinnedKeys, path: &Path) -> Result<(), KeysError> {
    write_atomically(path, pins.render().as_bytes(), 0o644).map_err(|source| KeysError::Write {
        path: path.to_owned(),
        source,
    })
}

/// When and by what a rotation was made, for its record in the pins file (`PinnedKeys::rotate`):
/// `BY, unix time N`. Here, not in the pure core, because it reads the clock.
pub fn rotation_stamp(by: &str) -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{by}, unix time {since}")
}

/// Writes a saved plan (JSON, sealed with its checksum), 0600: it names the network's layout.
pub fn save_plan(plan: &Plan, path: &Path) -> std::io::Result<()> {
    write_atomically(path, crate::saved_plan::seal(plan).as_bytes(), 0o600)
}

/// Appends `text` to `path` (created 0644 if missing), as CI's job summary file expects: other
/// steps may have written to it before.
pub fn append_text(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.flush()
}

/// Reads a saved plan, with every check of [`crate::saved_plan::parse`].
pub fn load_plan(path: &Path) -> Result<Plan, SavedPlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| SavedPlanError::Read {
        path: path.display().to_string(),
        source,
    })?;
    crate::saved_plan::parse(&text, path)
}

/// Creates `path` with `content` and `mode`; an existing file (or symlink) there is an error,
/// never overwritten.
pub fn create_new(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

/// Writes `content` to `path` through an exclusively created temporary file in the same
/// directory, then gives it `mode` and renames it over `path`.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, mut f) = create_temp_beside(path)?;
    let written = f
        .write_all(content)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written
}

/// A new file beside `path` with a name nobody can predict, created 0600 and exclusively
/// (`O_EXCL`: an existing file or symlink of that name is never opened).
fn create_temp_beside(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for _ in 0..16 {
        let mut random = [0u8; 8];
        getrandom_bytes(&mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "could not create a temporary file beside it",
    ))
}

/// Random bytes from the kernel (the same source the key generator uses).
fn getrandom_bytes(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        f.read_exact(buf).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_file_whole_and_leave_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_planted_file_at_the_old_fixed_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("plan.json.tmp")).unwrap();
        write_atomically(&path, b"plan", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
