//! The `system` facts: OS, init system, tools, iptables backend and whether we run as root.

use super::records::{Records, excerpt, malformed};
use super::script::{RC_NOT_FOUND, TOOLS};
use super::{FactError, failed, require};
use crate::state::SystemInfo;

pub(crate) fn parse(recs: &Records<'_>) -> Result<SystemInfo, FactError> {
    let mut info = SystemInfo::default();

    let os = require(recs, "os")?;
    if os.rc == 0 {
        info.os = os.first_line().map(unquote_os_release).unwrap_or_default();
    }

    info.systemd = require(recs, "systemd")?.rc == 0;

    let tools = require(recs, "tools")?;
    for (n, line) in tools.lines() {
        let t = line.trim();
        if !TOOLS.contains(&t) {
            return Err(malformed(
                "tools",
                n,
                format!("unknown tool {}", excerpt(t)),
            ));
        }
        info.tools.insert(t.to_owned());
    }

    if let Some(v) = recs.get("iptables-version") {
        if v.rc == 0 {
            info.iptables_backend = v.first_line().map(iptables_backend);
        } else if v.rc != RC_NOT_FOUND {
            return Err(failed(v, "iptables-version", "iptables -V"));
        }
    }

    info.kernel_wireguard = kernel_wireguard(recs)?;

    let uid = require(recs, "uid")?;
    if uid.rc != 0 {
        return Err(failed(uid, "uid", "id -u"));
    }
    let (n, line) = uid
        .lines()
        .next()
        .ok_or_else(|| malformed("uid", uid.line, "no output from `id -u`"))?;
    let uid: u32 = line
        .trim()
        .parse()
        .map_err(|_| malformed("uid", n, format!("not a user id: {}", excerpt(line))))?;
    info.root = uid == 0;
    Ok(info)
}

/// Whether the running kernel has WireGuard: `loaded` (the module is in, or built in), or a
/// `module RELEASE` line for the running release (the `kernel` record, from /proc).
fn kernel_wireguard(recs: &Records<'_>) -> Result<bool, FactError> {
    let rec = require(recs, "wg-kernel")?;
    if rec.rc != 0 {
        return Err(failed(rec, "wg-kernel", "m_wgmod"));
    }
    let release = recs
        .get("kernel")
        .filter(|k| k.rc == 0)
        .and_then(|k| k.first_line())
        .map(str::trim);
    for (n, line) in rec.lines() {
        match line.trim().split_once(' ') {
            None if line.trim() == "loaded" => return Ok(true),
            Some(("module", r)) => {
                if Some(r) == release {
                    return Ok(true);
                }
            }
            _ => {
                return Err(malformed(
                    "wg-kernel",
                    n,
                    format!("not `loaded` or `module RELEASE`: {}", excerpt(line)),
                ));
            }
        }
    }
    Ok(false)
}

/// `iptables v1.8.9 (nf_tables)` → `nf_tables`; `(legacy)` or no backend (iptables < 1.8,
/// always legacy) → `legacy`.
fn iptables_backend(line: &str) -> String {
    match line.rsplit_once('(') {
        Some((_, rest)) => rest.trim_end().trim_end_matches(')').to_owned(),
        None => "legacy".to_owned(),
    }
}

/// The value of an os-release assignment: shell-quoted with `"` or `'`, or bare.
fn unquote_os_release(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        inner.to_owned()
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_and_os_release_values() {
        assert_eq!(iptables_backend("iptables v1.8.9 (nf_tables)"), "nf_tables");
        assert_eq!(iptables_backend("iptables v1.8.9 (legacy)"), "legacy");
        assert_eq!(iptables_backend("iptables v1.6.1"), "legacy");
        assert_eq!(
            unquote_os_release("\"Debian GNU/Linux 12 (bookworm)\""),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(unquote_os_release("'Alpine \"x\"'"), "Alpine \"x\"");
        assert_eq!(unquote_os_release("Arch"), "Arch");
        assert_eq!(unquote_os_release(r#""a \"b\"""#), "a \"b\"");
    }
}
