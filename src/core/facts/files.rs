//! Sysctls, managed files, services and resolved endpoint names: the per-item records
//! (`sysctl.N`, `file.N`, `service.N`, `resolve.N`, N indexing the spec's lists), and the
//! `content` record that carries the managed files' contents and the sysctl values.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::records::{Record, Records, excerpt, malformed};
use super::script::{RC_ABSENT, RC_INVALID, RC_NOT_FILE, RC_UNREADABLE};
use super::wireguard::parse_mode;
use super::{FactError, GatherSpec, failed, require};
use crate::state::{ManagedFile, ServiceState};

/// The parts of the `content` record by their id (a managed file's index, or `sysctl.N`);
/// empty when the output has no such record (nothing to read).
pub(crate) type Contents = BTreeMap<String, Vec<u8>>;

/// Reads the `content` record (see [`parse_contents`]), if there is one.
pub(crate) fn contents(recs: &Records<'_>) -> Result<Contents, FactError> {
    match recs.get("content") {
        Some(rec) => parse_contents(rec),
        None => Ok(BTreeMap::new()),
    }
}

/// Sysctl values by dotted key; a key whose `/proc/sys` entry does not exist (an absent
/// interface) is left out, not an error. The value is the record's body, or (the current
/// gather: one `sed` reads every value whole) its part of the `content` record.
pub(crate) fn parse_sysctls(
    recs: &Records<'_>,
    spec: &GatherSpec,
    contents: &Contents,
) -> Result<BTreeMap<String, String>, FactError> {
    let mut out = BTreeMap::new();
    for (i, key) in spec.sysctls.iter().enumerate() {
        let id = format!("sysctl.{i}");
        let rec = require(recs, &id)?;
        match rec.rc {
            0 if !rec.body.is_empty() => {
                out.insert(key.clone(), rec.text().trim().to_owned());
            }
            0 => {
                let bytes = contents.get(&id).ok_or_else(|| {
                    malformed(&id, rec.line, "the value is missing from `content`")
                })?;
                let value = std::str::from_utf8(bytes)
                    .map_err(|_| malformed(&id, rec.line, "the value is not UTF-8 text"))?;
                out.insert(key.clone(), value.trim().to_owned());
            }
            RC_ABSENT => {}
            RC_INVALID => {
                return Err(FactError::InvalidSpec {
                    what: format!("sysctl {key:?}"),
                });
            }
            _ => return Err(failed(rec, &format!("sysctl {key}"), "read /proc/sys")),
        }
    }
    Ok(out)
}

/// Managed files: absent files are left out; an unreadable one (or a directory in its place)
/// is a [`FactError::Unreadable`] for that path. Content arrives framed in the `content`
/// record, with key values already blanked on the host.
pub(crate) fn parse_files(
    recs: &Records<'_>,
    spec: &GatherSpec,
    contents: &mut Contents,
) -> Result<BTreeMap<String, ManagedFile>, FactError> {
    let mut out = BTreeMap::new();
    for (i, path) in spec.files.iter().enumerate() {
        let id = format!("file.{i}");
        let section = format!("file {path}");
        let rec = require(recs, &id)?;
        match rec.rc {
            0 => {}
            RC_ABSENT => continue,
            RC_UNREADABLE => {
                return Err(FactError::Unreadable {
                    path: path.clone(),
                    reason: "not readable".into(),
                });
            }
            RC_NOT_FILE => {
                return Err(FactError::Unreadable {
                    path: path.clone(),
                    reason: "not a regular file".into(),
                });
            }
            RC_INVALID => {
                return Err(FactError::InvalidSpec {
                    what: format!("file {path:?}"),
                });
            }
            _ => return Err(failed(rec, &section, "stat")),
        }
        let mode = parse_mode(rec, &section)?;
        if rec.lines().nth(1).is_some() {
            // Content travels in the `content` record only; never quoted in errors.
            return Err(malformed(
                &section,
                rec.line,
                "unexpected output after the mode",
            ));
        }
        // The file's part of the `content` record (none: an empty file).
        let bytes = contents.remove(&i.to_string()).unwrap_or_default();
        let content = String::from_utf8(bytes)
            .map_err(|_| malformed(&section, rec.line, "content is not UTF-8 text"))?;
        out.insert(path.clone(), ManagedFile { content, mode });
    }
    Ok(out)
}

/// The `content` record: `files I J ...` (the ids of its parts, in order: the indexes of the
/// non-empty managed files, then `sysctl.N` for each sysctl that exists), then what one
/// `sed -s` printed of its inputs: first `tail`'s last byte of each part, then each part's
/// redacted content. Each input starts with a line `-`, every line of it is prefixed with a
/// space, and an empty line may close the stream. sed cannot tell whether an input's last line
/// ended in a newline (it adds one before the next input's output), hence the last bytes.
fn parse_contents(rec: &Record<'_>) -> Result<Contents, FactError> {
    let bad = |reason: &str| malformed("content", rec.line, reason.to_owned());
    if rec.rc != 0 {
        return Err(failed(rec, "content", "tail/sed"));
    }
    let mut lines = rec.body.iter().map(|(_, l)| *l);
    let Some(list) = lines.next().and_then(|l| l.trim().strip_prefix("files")) else {
        return Err(bad("no list of files"));
    };
    let indexes: Vec<String> = list
        .split_whitespace()
        .map(|w| {
            let id = w.strip_prefix("sysctl.").unwrap_or(w);
            match id.parse::<usize>() {
                Ok(_) => Ok(w.to_owned()),
                Err(_) => Err(bad("bad part id")),
            }
        })
        .collect::<Result<_, _>>()?;
    let mut parts: Vec<String> = Vec::new();
    for line in lines {
        match line.split_at_checked(1) {
            None => {}
            Some(("-", "")) => parts.push(String::new()),
            Some((" ", rest)) => {
                let part = parts
                    .last_mut()
                    .ok_or_else(|| bad("content before a file"))?;
                part.push_str(rest);
                part.push('\n');
            }
            _ => return Err(bad("content is not framed")),
        }
    }
    if indexes.is_empty() {
        return match parts.is_empty() {
            true => Ok(BTreeMap::new()),
            false => Err(bad("content without a list of files")),
        };
    }
    if parts.len() != indexes.len() + 1 {
        return Err(bad("content does not hold one part per file"));
    }
    // One character per last byte: a byte that is not UTF-8 on its own arrived as U+FFFD.
    let last: Vec<char> = parts.remove(0).chars().take(indexes.len()).collect();
    if last.len() != indexes.len() {
        return Err(bad("content is cut short"));
    }
    let mut out = BTreeMap::new();
    for ((i, f), last) in indexes.into_iter().zip(parts).zip(last) {
        let mut f = f.into_bytes();
        if last != '\n' {
            f.pop();
        }
        out.insert(i, f);
    }
    Ok(out)
}

/// Service states; only gathered on systemd hosts (otherwise empty).
pub(crate) fn parse_services(
    recs: &Records<'_>,
    spec: &GatherSpec,
    systemd: bool,
) -> Result<BTreeMap<String, ServiceState>, FactError> {
    let mut out = BTreeMap::new();
    if !systemd {
        return Ok(out);
    }
    for (i, unit) in spec.services.iter().enumerate() {
        let rec = require(recs, &format!("service.{i}"))?;
        // `systemctl show -p UnitFileState -p ActiveState`: `KEY=VALUE` lines in systemd's
        // order; an unknown unit has an empty UnitFileState and ActiveState=inactive.
        if rec.rc != 0 {
            return Err(failed(rec, &format!("service {unit}"), "systemctl show"));
        }
        let mut state = ServiceState {
            enabled: false,
            active: false,
        };
        for (_, line) in rec.lines() {
            match line.trim().split_once('=') {
                Some(("UnitFileState", v)) => state.enabled = v == "enabled",
                Some(("ActiveState", v)) => state.active = v == "active",
                _ => {}
            }
        }
        out.insert(unit.clone(), state);
    }
    Ok(out)
}

/// Resolved endpoint names: unique addresses in `getent` order. A name that does not resolve
/// (`getent` exit 2) maps to an empty list.
pub(crate) fn parse_resolved(
    recs: &Records<'_>,
    spec: &GatherSpec,
) -> Result<BTreeMap<String, Vec<IpAddr>>, FactError> {
    let mut out = BTreeMap::new();
    for (i, name) in spec.resolve.iter().enumerate() {
        let rec = require(recs, &format!("resolve.{i}"))?;
        let section = format!("resolve {name}");
        let mut addrs: Vec<IpAddr> = Vec::new();
        match rec.rc {
            0 => {
                for (n, line) in rec.lines() {
                    let first = line.split_whitespace().next().unwrap_or("");
                    let addr: IpAddr = first.parse().map_err(|_| {
                        malformed(&section, n, format!("not an address: {}", excerpt(first)))
                    })?;
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
            }
            2 => {}
            _ => return Err(failed(rec, &section, "getent ahosts")),
        }
        out.insert(name.clone(), addrs);
    }
    Ok(out)
}
