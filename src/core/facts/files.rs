//! Sysctls, managed files, services and resolved endpoint names: the per-item records
//! (`sysctl.N`, `file.N`, `service.N`, `resolve.N`, N indexing the spec's lists).

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;

use super::records::{Records, excerpt, malformed};
use super::script::{RC_ABSENT, RC_INVALID, RC_NOT_FILE, RC_UNREADABLE};
use super::wireguard::parse_mode;
use super::{FactError, GatherSpec, failed, require};
use crate::state::{ManagedFile, ServiceState};

/// Sysctl values by dotted key; a key whose `/proc/sys` entry does not exist (an absent
/// interface) is left out, not an error.
pub(crate) fn parse_sysctls(
    recs: &Records<'_>,
    spec: &GatherSpec,
) -> Result<BTreeMap<String, String>, FactError> {
    let mut out = BTreeMap::new();
    for (i, key) in spec.sysctls.iter().enumerate() {
        let id = format!("sysctl.{i}");
        let rec = require(recs, &id)?;
        match rec.rc {
            0 => {
                let value = rec.text();
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
/// is a [`FactError::Unreadable`] for that path. Content arrives base64-encoded, with key values
/// already blanked on the host.
pub(crate) fn parse_files(
    recs: &Records<'_>,
    spec: &GatherSpec,
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
            _ => return Err(failed(rec, &section, "stat/sed/base64")),
        }
        let mode = parse_mode(rec, &section)?;
        // Base64 lines after the mode; never quoted in errors.
        let mut encoded = String::new();
        for (_, line) in rec.lines().skip(1) {
            encoded.push_str(line.trim());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|_| malformed(&section, rec.line, "content is not valid base64"))?;
        let content = String::from_utf8(bytes)
            .map_err(|_| malformed(&section, rec.line, "content is not UTF-8 text"))?;
        out.insert(path.clone(), ManagedFile { content, mode });
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
        // `systemctl is-enabled` exits non-zero for anything but enabled; its stdout says what
        // (disabled, masked, static, not-found, or nothing for an unknown unit on old systemd).
        let state = rec.first_line().unwrap_or("");
        if rec.rc == super::script::RC_NOT_FOUND {
            return Err(failed(
                rec,
                &format!("service {unit}"),
                "systemctl is-enabled",
            ));
        }
        out.insert(
            unit.clone(),
            ServiceState {
                enabled: state == "enabled",
            },
        );
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
