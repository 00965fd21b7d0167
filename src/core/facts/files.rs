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
pub(crate) type Contents = BTreeMap<String, String>;

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
                let value = contents.get(&id).ok_or_else(|| {
                    malformed(&id, rec.line, "the value is missing from `content`")
                })?;
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
        // The size in bytes, on the line after the mode (content travels in the `content`
        // record only; never quoted in errors).
        let mut rest = rec.lines().skip(1);
        let size: usize = match (rest.next(), rest.next()) {
            (Some((_, line)), None) => line
                .trim()
                .parse()
                .map_err(|_| malformed(&section, rec.line, "not a size after the mode"))?,
            _ => return Err(malformed(&section, rec.line, "no size after the mode")),
        };
        // The file's part of the `content` record (none: an empty file). Every line of it
        // came back with a newline; one byte more than the file's size means its last line
        // had none. (A file with a blanked key differs in length: its last newline stays, and
        // its content differs from what meshctl writes anyway.)
        let mut content = contents.remove(&i.to_string()).unwrap_or_default();
        if content.len() == size + 1 && content.ends_with('\n') {
            content.pop();
        }
        out.insert(path.clone(), ManagedFile { content, mode });
    }
    Ok(out)
}

/// The `content` record: `files I J ...` (the ids of its parts, in order: the indexes of the
/// non-empty managed files, then `sysctl.N` for each sysctl that exists), then what one
/// `sed -s` printed of them, redacted: each part starts with a line `-`, every line of it is
/// prefixed with a space and ends in a newline (sed adds the one a part's last line may lack),
/// and an empty line may close the stream.
fn parse_contents(rec: &Record<'_>) -> Result<Contents, FactError> {
    let bad = |reason: &str| malformed("content", rec.line, reason.to_owned());
    if rec.rc != 0 {
        return Err(failed(rec, "content", "sed"));
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
    if parts.len() != indexes.len() {
        return Err(bad("content does not hold one part per file"));
    }
    Ok(indexes.into_iter().zip(parts).collect())
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
