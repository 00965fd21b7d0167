//! The WireGuard interface: addresses from `ip -j addr show dev IF`, everything else from the
//! six `wg show IF <what>` subcommands that cannot print a private key, and the key file's mode.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::records::{Record, Records, excerpt, malformed};
use super::script::{RC_ABSENT, RC_INVALID};
use super::{FactError, GatherSpec, failed, require};
use crate::names::WgKey;
use crate::state::{KeyFile, Peer, WgInterface};

#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: Option<IpAddr>,
    prefixlen: Option<u8>,
}

pub(crate) fn parse(
    recs: &Records<'_>,
    spec: &GatherSpec,
) -> Result<Option<WgInterface>, FactError> {
    let iface = spec.interface.as_str();
    let link = require(recs, "link")?;
    match link.rc {
        0 => {}
        // `Device "wg0" does not exist.`
        1 => return Ok(None),
        _ => {
            return Err(failed(
                link,
                "link",
                &format!("ip -j addr show dev {iface}"),
            ));
        }
    }
    let addresses = parse_addresses(link, iface)?;

    let wg = |what: &str| -> Result<&Record<'_>, FactError> {
        let id = format!("wg.{what}");
        let rec = require(recs, &id)?;
        if rec.rc != 0 {
            return Err(failed(rec, &id, &format!("wg show {iface} {what}")));
        }
        Ok(rec)
    };

    let public_key = match wg("public-key")?.lines().next() {
        None => None,
        Some((_, "(none)")) => None,
        Some((n, line)) => Some(key(line, "wg.public-key", n)?),
    };
    let listen_port = match wg("listen-port")?.lines().next() {
        None => None,
        Some((n, line)) => match line.trim().parse::<u16>() {
            Ok(0) => None,
            Ok(p) => Some(p),
            Err(_) => {
                return Err(malformed(
                    "wg.listen-port",
                    n,
                    format!("not a port: {}", excerpt(line)),
                ));
            }
        },
    };

    // Fixtures captured before meshctl read the mark have no record: no mark.
    let fwmark_rec = match recs.get("wg.fwmark") {
        Some(_) => Some(wg("fwmark")?),
        None => None,
    };
    let fwmark = match fwmark_rec.and_then(|r| r.lines().next()) {
        None | Some((_, "off")) => None,
        Some((n, line)) => {
            let v = line.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => v.parse::<u32>().ok(),
            };
            Some(parsed.ok_or_else(|| {
                malformed(
                    "wg.fwmark",
                    n,
                    format!("not a firewall mark: {}", excerpt(v)),
                )
            })?)
        }
    };

    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    for (n, line) in wg("peers")?.lines() {
        let k = key(line, "wg.peers", n)?;
        peers.insert(
            k.as_str().to_owned(),
            Peer {
                public_key: Some(k),
                allowed_ips: BTreeSet::new(),
                endpoint: None,
                persistent_keepalive: None,
                preshared_key: None,
            },
        );
    }
    for (n, k, value) in per_peer(wg("allowed-ips")?, "wg.allowed-ips", &peers)? {
        if value == "(none)" {
            continue;
        }
        for ip in value.split_whitespace() {
            let net: IpNet = ip.parse().map_err(|_| {
                malformed(
                    "wg.allowed-ips",
                    n,
                    format!("not an address range: {}", excerpt(ip)),
                )
            })?;
            peers.get_mut(&k).expect("checked").allowed_ips.insert(net);
        }
    }
    for (_, k, value) in per_peer(wg("endpoints")?, "wg.endpoints", &peers)? {
        if value != "(none)" {
            peers.get_mut(&k).expect("checked").endpoint = Some(value.to_owned());
        }
    }
    for (n, k, value) in per_peer(
        wg("persistent-keepalive")?,
        "wg.persistent-keepalive",
        &peers,
    )? {
        let keepalive = match value {
            "off" => None,
            v => Some(v.parse::<u16>().map_err(|_| {
                malformed(
                    "wg.persistent-keepalive",
                    n,
                    format!("not a number of seconds: {}", excerpt(v)),
                )
            })?),
        };
        peers.get_mut(&k).expect("checked").persistent_keepalive = keepalive;
    }

    Ok(Some(WgInterface {
        name: spec.interface.clone(),
        addresses,
        listen_port,
        fwmark,
        public_key,
        private_key_file: KeyFile {
            path: spec.key_file.clone(),
        },
        peers,
    }))
}

/// The key file's mode (`None`: absent). Its content is never gathered.
pub(crate) fn parse_key_file_mode(
    recs: &Records<'_>,
    spec: &GatherSpec,
) -> Result<Option<u32>, FactError> {
    let rec = require(recs, "keyfile")?;
    let mode = match rec.rc {
        0 => Some(parse_mode(rec, "keyfile")?),
        RC_ABSENT => None,
        RC_INVALID => {
            return Err(FactError::InvalidSpec {
                what: format!("key file {:?}", spec.key_file),
            });
        }
        _ => {
            return Err(failed(
                rec,
                "keyfile",
                &format!("stat -c %a {}", spec.key_file),
            ));
        }
    };
    Ok(mode)
}

/// The public key of the next private key of a rotation in progress (`nextkey`, printed only
/// when that file exists).
pub(crate) fn parse_next_key(recs: &Records<'_>) -> Result<Option<WgKey>, FactError> {
    let Some(rec) = recs.get("nextkey") else {
        return Ok(None);
    };
    if rec.rc != 0 {
        return Err(failed(rec, "nextkey", "wg pubkey"));
    }
    match rec.lines().next() {
        Some((n, line)) => Ok(Some(key(line.trim(), "nextkey", n)?)),
        None => Err(malformed("nextkey", rec.line, "no public key")),
    }
}

/// The first line of a record as an octal mode (`stat -c %a` prints `600`).
pub(crate) fn parse_mode(rec: &Record<'_>, section: &str) -> Result<u32, FactError> {
    let (n, line) = rec
        .lines()
        .next()
        .ok_or_else(|| malformed(section, rec.line, "no mode in the output"))?;
    let t = line.trim();
    if t.is_empty() || t.len() > 4 || !t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(malformed(
            section,
            n,
            format!("not an octal mode: {}", excerpt(t)),
        ));
    }
    u32::from_str_radix(t, 8).map_err(|_| malformed(section, n, "not an octal mode"))
}

fn key(s: &str, section: &str, line: usize) -> Result<WgKey, FactError> {
    WgKey::parse(s).map_err(|_| malformed(section, line, "not a WireGuard public key"))
}

/// Splits `KEY<TAB>VALUE` lines; every key must be one of the peers `wg show IF peers` listed.
fn per_peer<'r>(
    rec: &'r Record<'_>,
    section: &str,
    peers: &BTreeMap<String, Peer>,
) -> Result<Vec<(usize, String, &'r str)>, FactError> {
    let mut out = Vec::new();
    for (n, line) in rec.lines() {
        let Some((k, value)) = line.split_once('\t') else {
            return Err(malformed(
                section,
                n,
                format!("expected PEER-KEY<TAB>VALUE, got {}", excerpt(line)),
            ));
        };
        let k = key(k, section, n)?;
        if !peers.contains_key(k.as_str()) {
            // The peer was added between `wg show peers` and this command.
            return Err(malformed(
                section,
                n,
                format!("peer {} is not in `wg show peers`", k.short()),
            ));
        }
        out.push((n, k.as_str().to_owned(), value.trim()));
    }
    Ok(out)
}

/// Global addresses of the interface; link-local `fe80::/10` ones are the kernel's, not ours.
fn parse_addresses(link: &Record<'_>, iface: &str) -> Result<BTreeSet<IpNet>, FactError> {
    let links: Vec<Link> = serde_json::from_str(&link.text())
        .map_err(|e| malformed("link", link.line + e.line(), format!("bad JSON: {e}")))?;
    if links.len() != 1 || links[0].ifname != iface {
        return Err(malformed(
            "link",
            link.line,
            format!("expected exactly interface {iface}"),
        ));
    }
    let mut out = BTreeSet::new();
    for info in links.iter().flat_map(|l| &l.addr_info) {
        let (Some(addr), Some(len)) = (info.local, info.prefixlen) else {
            continue;
        };
        if let IpAddr::V6(v6) = addr
            && (v6.segments()[0] & 0xffc0) == 0xfe80
        {
            continue;
        }
        let net = IpNet::new(addr, len)
            .map_err(|_| malformed("link", link.line, format!("bad prefix length /{len}")))?;
        out.insert(net);
    }
    Ok(out)
}
