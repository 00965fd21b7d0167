//! Facts: what a host's live state is, gathered in one remote execution and parsed without I/O.
//!
//! A gather is a [`GatherSpec`] (what to look at, derived from the desired state), a POSIX sh
//! script built from it ([`gather_script`]) and a pure parser of that script's output
//! ([`parse`]). The transport runs the script once per host (as root, or under `sudo -n`) and
//! hands the output to [`parse`]; nothing here does I/O.
//!
//! The output is a sequence of records, one per command, each ending with the command's exit
//! status (see `records`), so one failing command cannot hide or garble the others, and a cut-off
//! output is detected instead of read as "nothing there".
//!
//! Secrets: the script never asks `wg` for anything that prints a private key (`wg show dump`,
//! `showconf`, `private-key`), only stats the key file, and blanks `PrivateKey` / `PresharedKey`
//! values in managed files *on the host* before the content is sent. Errors never quote the
//! content of a managed file.
//!
//! Sub-modules hold one parser per kind of fact, each tested against raw outputs in `fixtures/`.

mod files;
mod firewall;
mod psk;
mod records;
mod routes;
mod script;
mod system;
mod wireguard;

#[cfg(test)]
mod tests;

use ipnet::Ipv6Net;

use crate::names::{InterfaceName, WgKey};
use crate::state::{ChainId, Family, HostState, LiveHost};

/// The first line of a gather's output: what comes before it on the same stdout (a change
/// script's step markers, when one execution runs both) is not the gather's.
pub const HEADER: &str = records::HEADER;

/// What to gather on one host: derived by the lead from the host's desired [`HostState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherSpec {
    /// The WireGuard interface, e.g. `wg0`.
    pub interface: InterfaceName,
    /// The private key file, e.g. `/etc/wireguard/wg0.key`: only stat'ed for its mode, never read.
    pub key_file: String,
    /// Dotted sysctl keys, e.g. `net.ipv4.ip_forward`, `net.ipv6.conf.eth0.proxy_ndp`.
    pub sysctls: Vec<String>,
    /// meshctl's own chains, e.g. (ipv6, filter, MESHCTL-FORWARD).
    pub chains: Vec<ChainId>,
    /// The families of `chains` whose chains are looked for only to find ones meshctl left
    /// behind (the desired state has none of that family), each with meshctl's rules file of
    /// the family. Such a chain can only exist beside that file: apply writes the file before
    /// the restore that creates the chains, deletes the chains before it removes the file, and
    /// the boot script makes them from the file. So the family's `*-save` (two processes on
    /// every client, the largest part of a client's gather) runs only where the file exists;
    /// elsewhere the family reads as having no chains of meshctl's. A chain made by hand under
    /// meshctl's name after the file was deleted by hand goes unseen. Empty: always read.
    pub chains_only_beside: Vec<(Family, String)>,
    /// Absolute paths of the managed files.
    pub files: Vec<String>,
    /// systemd units, e.g. `wg-quick@wg0`; only queried when the host runs systemd.
    pub services: Vec<String>,
    /// Endpoint host names to resolve on the host (`getent ahosts`).
    pub resolve: Vec<String>,
    /// NDP proxy entries inside this range are meshctl's.
    pub ndp_range: Option<Ipv6Net>,
    /// meshctl's boot script (one of `files`): the NDP proxy entries it lists are meshctl's
    /// too, so an entry stays known as meshctl's after the inventory dropped its range.
    /// With neither this nor `ndp_range`, no entry is gathered.
    pub ndp_listed_in: Option<String>,
    /// The pairs' preshared key files: (the peer's public key where known, the file on this
    /// host). The host compares each peer's live preshared key with its file itself and
    /// reports only "same" or not, and a SHA-256 of each file; empty: not looked at.
    pub psks: Vec<(Option<WgKey>, String)>,
}

impl GatherSpec {
    /// Derives what to gather from a desired state: its interface (or `wg0` when the desired
    /// state has none) and key file (or `/etc/wireguard/IF.key`), the sysctl keys, the chains
    /// (including jump targets), the file paths and the services it names.
    pub fn from_desired(
        desired: &HostState,
        resolve: Vec<String>,
        ndp_range: Option<Ipv6Net>,
    ) -> Self {
        let interface = desired
            .interface
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_else(|| InterfaceName::parse("wg0").expect("valid name"));
        let key_file = desired
            .interface
            .as_ref()
            .map(|i| i.private_key_file.path.clone())
            .unwrap_or_else(|| format!("/etc/wireguard/{interface}.key"));
        let mut chains: Vec<ChainId> = desired.firewall.chains.keys().cloned().collect();
        for jump in &desired.firewall.jumps {
            let id = ChainId {
                family: jump.family,
                table: jump.table.clone(),
                chain: jump.to.clone(),
            };
            if !chains.contains(&id) {
                chains.push(id);
            }
        }
        let psks = desired
            .interface
            .iter()
            .flat_map(|i| i.peers.values())
            .filter_map(|p| match &p.preshared_key {
                Some(crate::state::Psk::File(path)) => Some((p.public_key.clone(), path.clone())),
                _ => None,
            })
            .collect();
        Self {
            interface,
            key_file,
            psks,
            sysctls: desired.sysctls.keys().cloned().collect(),
            chains,
            chains_only_beside: Vec::new(),
            files: desired.files.keys().cloned().collect(),
            services: desired.services.keys().cloned().collect(),
            resolve,
            ndp_range,
            ndp_listed_in: None,
        }
    }
}

/// Why a gather's output could not be read. Every variant names the section (and where it
/// helps, the line of the whole output); none quotes a managed file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactError {
    /// The output does not start like meshctl's fact output: the script did not run (e.g.
    /// `sudo -n` refused, or the shell is not POSIX); the transport's stderr says why.
    #[error("the output is not meshctl's fact output (its header line is missing)")]
    NoHeader,
    /// The output stops inside or after a section: the connection or the script was cut off.
    #[error("the output is cut off at section `{section}` (line {line})")]
    Truncated {
        /// The last section the output reached.
        section: String,
        /// Line of the whole output where it stops.
        line: usize,
    },
    /// A section the spec asks for is not in the output.
    #[error("section `{section}` is missing from the output")]
    Missing {
        /// The section that is absent.
        section: String,
    },
    /// A section's output is not in the expected form.
    #[error("section `{section}`, line {line}: {reason}")]
    Malformed {
        /// The section, e.g. `link`, `ndp` or `file /etc/wireguard/wg0.conf`.
        section: String,
        /// Line of the whole output where the problem is.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A command failed on the host.
    #[error("section `{section}` (line {line}): `{command}` failed with exit status {status}")]
    Command {
        /// The section the command belongs to.
        section: String,
        /// Line of the whole output where the failure is reported.
        line: usize,
        /// The command that failed, as run on the host.
        command: String,
        /// Its exit status.
        status: i32,
    },
    /// A managed file exists but could not be read (or is not a regular file).
    #[error("managed file {path}: {reason}")]
    Unreadable {
        /// The file's absolute path on the host.
        path: String,
        /// What the host reported, e.g. `not a regular file`.
        reason: String,
    },
    /// A spec item was not gathered because it is unsafe to put in a path (a sysctl key with
    /// `..`, a relative file path, ...).
    #[error("{what} was not gathered: it is not an acceptable name or absolute path")]
    InvalidSpec {
        /// The refused item, e.g. `sysctl a..b`.
        what: String,
    },
}

/// The POSIX sh script that gathers everything `spec` names, in one execution. It runs as root
/// (prefix `sudo -n` for other logins), writes nothing on the host, and prints records that
/// [`parse`] reads.
pub fn gather_script(spec: &GatherSpec) -> String {
    script::build(spec)
}

/// Parses the output of [`gather_script`]`(spec)` into the host's live state. Pure.
///
/// Live peers are keyed by their public key (mapping keys to host names is the caller's job);
/// `LiveHost::host` is left `None` for the caller to fill.
pub fn parse(output: &str, spec: &GatherSpec) -> Result<LiveHost, FactError> {
    let recs = records::split(output)?;
    let mut live = LiveHost {
        system: system::parse(&recs)?,
        ..LiveHost::default()
    };
    live.state.interface = wireguard::parse(&recs, spec)?;
    if let Some(wg) = live.state.interface.as_mut() {
        psk::parse_live(&recs, spec, wg)?;
    }
    live.psk_files = psk::parse_files(&recs, spec)?;
    live.key_file_mode = wireguard::parse_key_file_mode(&recs, spec)?;
    live.next_public_key = wireguard::parse_next_key(&recs)?;
    live.state.routes = routes::parse_routes(&recs, &mut live.warnings)?;
    live.state.rules = routes::parse_rules(&recs, &mut live.warnings)?;
    let mut contents = files::contents(&recs)?;
    live.state.sysctls = files::parse_sysctls(&recs, spec, &contents)?;
    live.state.firewall = firewall::parse(
        &recs,
        spec,
        live.system.iptables_backend.as_deref(),
        &mut live.warnings,
    )?;
    live.state.files = files::parse_files(&recs, spec, &mut contents)?;
    let listed_in = spec
        .ndp_listed_in
        .as_ref()
        .and_then(|p| live.state.files.get(p))
        .map(|f| f.content.as_str());
    live.state.ndp_proxies = routes::parse_ndp(&recs, spec, listed_in)?;
    live.state.services = files::parse_services(&recs, spec, live.system.systemd)?;
    live.resolved = files::parse_resolved(&recs, spec)?;
    Ok(live)
}

/// Looks up a record the spec requires.
pub(crate) fn require<'r, 'a>(
    recs: &'r records::Records<'a>,
    id: &str,
) -> Result<&'r records::Record<'a>, FactError> {
    recs.get(id).ok_or_else(|| FactError::Missing {
        section: id.to_owned(),
    })
}

/// The error for a record whose command failed.
pub(crate) fn failed(rec: &records::Record<'_>, section: &str, command: &str) -> FactError {
    FactError::Command {
        section: section.to_owned(),
        line: rec.line,
        command: command.to_owned(),
        status: rec.rc,
    }
}
