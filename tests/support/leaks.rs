//! Where a leaked key would show: the forms it could take and every file a test must search.

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The forms a leaked key could take: base64, its 8-character prefix (what `WgKey::short`
/// prints), and the hex of its bytes (lower and upper case, 16-digit prefixes).
pub fn forms(key: &str) -> Vec<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .expect("a base64 key");
    assert_eq!(bytes.len(), 32, "a WireGuard key");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        key.trim().to_owned(),
        key.trim()[..8].to_owned(),
        hex[..16].to_owned(),
        hex[..16].to_uppercase(),
    ]
}

/// Asserts that no form of `key` (called `name` in the message) occurs in `haystack`.
pub fn assert_without(what: &str, haystack: &str, name: &str, key: &str) {
    for f in forms(key) {
        assert!(
            !haystack.contains(&f),
            "{what} contains {name} (as {f:?}):\n{haystack}"
        );
    }
}

/// Every regular file under `dir`, with its content (lossy).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut queue = vec![dir.to_path_buf()];
    while let Some(d) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                queue.push(e.path());
            } else if t.is_file()
                && let Ok(bytes) = std::fs::read(e.path())
            {
                found.push((e.path(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    found
}
