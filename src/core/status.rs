//! `meshctl status`: who is online. From what each managed host's interface reports
//! ([`crate::scripts::status`]), a report per host — every peer by its inventory name (matched
//! by public key: pinned keys and the inventory's `public_key`, so an unmanaged phone is seen
//! from the hub), its endpoint, latest handshake, transfer and whether it is online — rendered
//! as a terminal table or JSON. Pure: the engine runs the script, the command prints.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::inventory::Inventory;
use crate::keys::PinnedKeys;
use crate::names::{HostName, WgKey};
use crate::render::{Style, clean};
use crate::scripts::status::Seen;

/// A peer is online when its latest handshake is at most this old: WireGuard renews a session
/// every 2 minutes while traffic flows (and keepalives make traffic), so a live peer is never
/// much older than that.
pub const ONLINE_WITHIN_SECS: u64 = 180;

/// The status of every managed host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// The inventory's network name.
    pub network: String,
    /// The WireGuard interface looked at (`network.interface`).
    pub interface: String,
    /// The online threshold used, in seconds.
    pub online_within_secs: u64,
    /// One entry per managed host, by name.
    pub hosts: Vec<HostReport>,
}

/// One managed host's interface and peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    /// The host's inventory name.
    pub host: HostName,
    /// Its role.
    pub role: String,
    /// Whether the host answered.
    pub reachable: bool,
    /// Why it did not (unreachable, unreadable output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The interface's name (`None` when the host has no such interface).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The link state (`UP`, `UNKNOWN` for a userspace tun, `DOWN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The interface's public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The UDP port it listens on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Its peers, by name (unknown keys last).
    pub peers: Vec<PeerReport>,
}

/// One peer as a host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerReport {
    /// Its inventory name, when its public key is one of the inventory's.
    pub name: Option<String>,
    /// Its public key.
    pub public_key: String,
    /// Where its packets last came from.
    pub endpoint: Option<String>,
    /// The latest handshake, seconds since the epoch (host clock); `None`: never.
    pub latest_handshake: Option<u64>,
    /// How long ago that was, in seconds.
    pub handshake_age_secs: Option<u64>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// A handshake within the threshold.
    pub online: bool,
}

/// The inventory name of every public key the inventory knows (pinned or written in it).
pub fn names_by_key(inv: &Inventory, keys: &PinnedKeys) -> BTreeMap<WgKey, HostName> {
    let mut out: BTreeMap<WgKey, HostName> = keys
        .keys
        .iter()
        .map(|(h, k)| (k.clone(), h.clone()))
        .collect();
    for h in inv.hosts.values() {
        if let Some(k) = &h.public_key {
            out.insert(k.clone(), h.name.clone());
        }
    }
    out
}

/// The report from what each host's script printed (or why it could not run).
pub fn build(
    inv: &Inventory,
    keys: &PinnedKeys,
    seen: &BTreeMap<HostName, Result<Seen, String>>,
    online_within: u64,
) -> StatusReport {
    let names = names_by_key(inv, keys);
    let hosts = seen
        .iter()
        .map(|(h, r)| {
            let role = inv
                .hosts
                .get(h)
                .map(|x| x.role.name().to_owned())
                .unwrap_or_default();
            let mut hr = HostReport {
                host: h.clone(),
                role,
                reachable: r.is_ok(),
                error: r.as_ref().err().cloned(),
                interface: None,
                link: None,
                public_key: None,
                listen_port: None,
                peers: vec![],
            };
            let Ok(seen) = r else { return hr };
            let Some(wg) = &seen.interface else {
                return hr;
            };
            hr.interface = Some(inv.network.interface.to_string());
            hr.link = Some(wg.link.clone());
            hr.public_key = wg.public_key.as_ref().map(ToString::to_string);
            hr.listen_port = wg.listen_port;
            hr.peers = wg
                .peers
                .iter()
                .map(|(k, p)| {
                    let age = p.latest_handshake.map(|t| seen.now.saturating_sub(t));
                    PeerReport {
                        name: names.get(k).map(ToString::to_string),
                        public_key: k.to_string(),
                        endpoint: p.endpoint.clone(),
                        latest_handshake: p.latest_handshake,
                        handshake_age_secs: age,
                        rx_bytes: p.rx,
                        tx_bytes: p.tx,
                        online: age.is_some_and(|a| a <= online_within),
                    }
                })
                .collect();
            hr.peers
                .sort_by(|a, b| (a.name.is_none(), &a.name).cmp(&(b.name.is_none(), &b.name)));
            hr
        })
        .collect();
    StatusReport {
        network: inv.network.name.clone(),
        interface: inv.network.interface.to_string(),
        online_within_secs: online_within,
        hosts,
    }
}

/// "12 s ago", "3 min ago", "5 h ago", "2 d ago", or "never".
pub fn ago(age: Option<u64>) -> String {
    match age {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s} s ago"),
        Some(s) if s < 2 * 3600 => format!("{} min ago", s / 60),
        Some(s) if s < 2 * 86400 => format!("{} h ago", s / 3600),
        Some(s) => format!("{} d ago", s / 86400),
    }
}

/// Bytes in binary units: "0 B", "512 B", "1.5 KiB", "12.0 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The report as a table per host; an unreachable host is one line.
pub fn text(report: &StatusReport, style: Style) -> String {
    let mut s = String::new();
    for h in &report.hosts {
        if let Some(e) = &h.error {
            writeln!(
                s,
                "{}: {} {}\n",
                style.paint("1", h.host.as_str()),
                style.paint("31;1", "unreachable:"),
                clean(e).replace('\n', " ")
            )
            .ok();
            continue;
        }
        let Some(ifname) = &h.interface else {
            writeln!(
                s,
                "{} ({}): no interface {} (not applied yet, or taken down)\n",
                style.paint("1", h.host.as_str()),
                h.role,
                report.interface
            )
            .ok();
            continue;
        };
        let online = h.peers.iter().filter(|p| p.online).count();
        let port = h
            .listen_port
            .map(|p| format!(", port {p}"))
            .unwrap_or_default();
        writeln!(
            s,
            "{} ({}): {ifname} {}{port}, {online} of {} peers online",
            style.paint("1", h.host.as_str()),
            h.role,
            clean(h.link.as_deref().unwrap_or("?")).to_lowercase(),
            h.peers.len()
        )
        .ok();
        let rows: Vec<[String; 6]> = h
            .peers
            .iter()
            .map(|p| {
                [
                    p.name
                        .clone()
                        .unwrap_or_else(|| format!("{}…", &p.public_key[..8])),
                    clean(p.endpoint.as_deref().unwrap_or("-")),
                    ago(p.handshake_age_secs),
                    bytes(p.rx_bytes),
                    bytes(p.tx_bytes),
                    if p.online { "online" } else { "offline" }.to_owned(),
                ]
            })
            .collect();
        let header = ["PEER", "ENDPOINT", "HANDSHAKE", "RX", "TX", "STATUS"].map(String::from);
        let mut widths = [0usize; 6];
        for r in std::iter::once(&header).chain(&rows) {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |r: &[String; 6]| {
            let mut l = String::from(" ");
            for (i, c) in r.iter().enumerate().take(5) {
                let pad = widths[i] - c.chars().count();
                if i >= 3 {
                    write!(l, " {}{c} ", " ".repeat(pad)).ok();
                } else {
                    write!(l, " {c}{}", " ".repeat(pad)).ok();
                }
            }
            l
        };
        writeln!(s, "{}  {}", line(&header), header[5]).ok();
        for r in &rows {
            let status = if r[5] == "online" {
                style.paint("32", &r[5])
            } else {
                style.paint("31", &r[5])
            };
            writeln!(s, "{}  {status}", line(r)).ok();
        }
        s.push('\n');
    }
    s
}

/// The report as pretty JSON.
pub fn json(report: &StatusReport) -> String {
    serde_json::to_string_pretty(report).expect("a status report always serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::{ago, bytes};

    #[test]
    fn human_units() {
        assert_eq!(ago(None), "never");
        assert_eq!(ago(Some(12)), "12 s ago");
        assert_eq!(ago(Some(600)), "10 min ago");
        assert_eq!(ago(Some(3 * 3600)), "3 h ago");
        assert_eq!(ago(Some(3 * 86400)), "3 d ago");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(7_890_123), "7.5 MiB");
    }
}
