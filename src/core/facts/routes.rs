//! meshctl's routes (`ip -j route show table all proto 157 root 0.0.0.0/0` and `root ::/0`:
//! the same as with `-4` / `-6`) and NDP proxy entries (`ip -j neigh show proxy`, both families,
//! of which the IPv6 ones are read; older gathers: the text of `ip -6 neigh show proxy`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;

use super::records::{Records, excerpt, malformed};
use super::{FactError, GatherSpec, failed, require};
use crate::names::InterfaceName;
use crate::state::{Family, NdpProxy, Route, RoutingRule, RuleKind};

#[derive(Deserialize)]
struct JsonNeigh {
    dst: String,
    dev: String,
}

#[derive(Deserialize)]
struct JsonRoute {
    dst: String,
    gateway: Option<IpAddr>,
    dev: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    table: Option<String>,
}

/// Routes carrying meshctl's proto, from all tables. Routes meshctl cannot represent (no
/// device: `unreachable`, multipath) are reported as warnings and left out.
pub(crate) fn parse_routes(
    recs: &Records<'_>,
    warnings: &mut Vec<String>,
) -> Result<BTreeSet<Route>, FactError> {
    let mut out = BTreeSet::new();
    for (id, v6) in [("route4", false), ("route6", true)] {
        let rec = require(recs, id)?;
        if rec.rc != 0 {
            let fam = if v6 { "-6" } else { "-4" };
            let cmd = format!("ip -j {fam} route show table all proto 157");
            return Err(failed(rec, id, &cmd));
        }
        let text = rec.text();
        if text.trim().is_empty() {
            continue;
        }
        let routes: Vec<JsonRoute> = serde_json::from_str(&text)
            .map_err(|e| malformed(id, rec.line + e.line(), format!("bad JSON: {e}")))?;
        for r in routes {
            let destination = destination(&r.dst, v6).ok_or_else(|| {
                malformed(id, rec.line, format!("bad destination {}", excerpt(&r.dst)))
            })?;
            let device = match (&r.dev, &r.kind) {
                (Some(dev), None) => InterfaceName::parse(dev)
                    .map_err(|_| malformed(id, rec.line, format!("bad device {}", excerpt(dev))))?,
                _ => {
                    warnings.push(format!(
                        "route {destination} carries meshctl's proto 157 but is not a plain \
                         device route; it is left alone"
                    ));
                    continue;
                }
            };
            let table = match r.table.as_deref() {
                None | Some("main") => None,
                Some(t) => match t.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        warnings.push(format!(
                            "route {destination} dev {device} with meshctl's proto is in table {t}; it is left alone"
                        ));
                        continue;
                    }
                },
            };
            out.insert(Route {
                destination,
                device,
                via: r.gateway,
                table,
            });
        }
    }
    Ok(out)
}

/// `default` → 0.0.0.0/0 or ::/0; a bare address → a host route (/32, /128).
fn destination(dst: &str, v6: bool) -> Option<IpNet> {
    if dst == "default" {
        return Some(if v6 {
            "::/0".parse().expect("valid")
        } else {
            "0.0.0.0/0".parse().expect("valid")
        });
    }
    let net = if dst.contains('/') {
        dst.parse::<IpNet>().ok()?
    } else {
        IpNet::from(dst.parse::<IpAddr>().ok()?)
    };
    (net.addr().is_ipv6() == v6).then_some(net)
}

/// meshctl's NDP proxy entries (`ADDR dev IF proxy` lines): inside `spec.ndp_range`, or listed
/// in meshctl's boot script (`listed_in`, its gathered content).
pub(crate) fn parse_ndp(
    recs: &Records<'_>,
    spec: &GatherSpec,
    listed_in: Option<&str>,
) -> Result<BTreeSet<NdpProxy>, FactError> {
    let mut out = BTreeSet::new();
    if spec.ndp_range.is_none() && spec.ndp_listed_in.is_none() {
        return Ok(out);
    }
    let listed = |a: &Ipv6Addr| {
        listed_in.is_some_and(|script| {
            script
                .lines()
                .any(|l| crate::spell::ndp_proxy_replaced_address(l) == Some(*a))
        })
    };
    let rec = require(recs, "ndp")?;
    if rec.rc != 0 {
        return Err(failed(rec, "ndp", "ip neigh show proxy"));
    }
    let mut keep = |address: Ipv6Addr, dev: &str, n: usize| -> Result<(), FactError> {
        if !(spec.ndp_range.is_some_and(|r| r.contains(&address)) || listed(&address)) {
            return Ok(());
        }
        let device = InterfaceName::parse(dev)
            .map_err(|_| malformed("ndp", n, format!("bad device {}", excerpt(dev))))?;
        out.insert(NdpProxy { address, device });
        Ok(())
    };
    if rec.first_line().is_some_and(|l| l.starts_with('[')) {
        let entries: Vec<JsonNeigh> = serde_json::from_str(&rec.text())
            .map_err(|e| malformed("ndp", rec.line + e.line(), format!("bad JSON: {e}")))?;
        for e in entries {
            // IPv4 proxy ARP entries come with the same dump; they are not meshctl's.
            let Ok(IpAddr::V6(address)) = e.dst.parse::<IpAddr>() else {
                if e.dst.parse::<IpAddr>().is_err() {
                    return Err(malformed(
                        "ndp",
                        rec.line,
                        format!("not an address: {}", excerpt(&e.dst)),
                    ));
                }
                continue;
            };
            keep(address, &e.dev, rec.line)?;
        }
        return Ok(out);
    }
    for (n, line) in rec.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || {
            malformed(
                "ndp",
                n,
                format!("expected `ADDRESS dev DEVICE proxy`, got {}", excerpt(line)),
            )
        };
        let [addr, "dev", dev, rest @ ..] = words.as_slice() else {
            return Err(bad());
        };
        if !rest.contains(&"proxy") {
            return Err(bad());
        }
        let address: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        keep(address, dev, n)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            destination("default", false).unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(destination("default", true).unwrap().to_string(), "::/0");
        assert_eq!(
            destination("10.9.0.5", false).unwrap().to_string(),
            "10.9.0.5/32"
        );
        assert_eq!(
            destination("2001:db8:30::1", true).unwrap().to_string(),
            "2001:db8:30::1/128"
        );
        assert_eq!(
            destination("10.0.0.0/8", false).unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(destination("10.0.0.0/8", true).is_none());
        assert!(destination("garbage", false).is_none());
    }
}

#[derive(Deserialize)]
struct JsonRule {
    priority: u32,
    /// `"not": null` marks an inverted selector: only the key's presence counts.
    #[serde(default, deserialize_with = "present")]
    not: bool,
    fwmark: Option<String>,
    table: Option<String>,
    suppress_prefixlen: Option<u32>,
    protocol: Option<String>,
    src: Option<String>,
}

/// Policy routing rules carrying meshctl's protocol (157), of the two kinds it makes; another
/// rule with its protocol is a warning and left alone.
pub(crate) fn parse_rules(
    recs: &Records<'_>,
    warnings: &mut Vec<String>,
) -> Result<BTreeSet<RoutingRule>, FactError> {
    let mut out = BTreeSet::new();
    for (id, family) in [("rule4", Family::Ipv4), ("rule6", Family::Ipv6)] {
        let Some(rec) = recs.get(id) else { continue };
        if rec.rc != 0 {
            // No policy routing support (or no IPv6): there are no rules of meshctl's.
            continue;
        }
        let text = rec.text();
        if text.trim().is_empty() {
            continue;
        }
        let rules: Vec<JsonRule> = serde_json::from_str(&text)
            .map_err(|e| malformed(id, rec.line + e.line(), format!("bad JSON: {e}")))?;
        for r in rules
            .into_iter()
            .filter(|r| r.protocol.as_deref() == Some("157"))
        {
            let mark = r
                .fwmark
                .as_deref()
                .and_then(|m| match m.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => m.parse().ok(),
                });
            let table = r.table.as_deref().and_then(|t| t.parse::<u32>().ok());
            let plain_src = r.src.as_deref().is_none_or(|s| s == "all");
            let kind = match (r.not, mark, table, r.table.as_deref(), r.suppress_prefixlen) {
                (true, Some(fwmark), Some(table), _, None) if plain_src => {
                    RuleKind::TunnelUnlessMarked { fwmark, table }
                }
                (false, None, None, Some("main"), Some(0)) if plain_src => {
                    RuleKind::MainWithoutDefault
                }
                _ => {
                    warnings.push(format!(
                        "a {} rule at priority {} carries meshctl's protocol but is not one it makes; it is left alone",
                        if family == Family::Ipv4 { "IPv4" } else { "IPv6" },
                        r.priority
                    ));
                    continue;
                }
            };
            out.insert(RoutingRule {
                family,
                priority: r.priority,
                kind,
            });
        }
    }
    Ok(out)
}

/// True when the field is there at all (whatever its value, `null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde_json::Value::deserialize(d).map(|_| true)
}
