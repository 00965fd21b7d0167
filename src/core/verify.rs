//! `meshctl verify`: proof that the network passes traffic, from the hosts themselves. What
//! each managed host must reach ([`targets`]): every other managed host's VPN address (IPv4,
//! and IPv6 where both have one on the interface), and, from clients, each home LAN's gateway
//! address; plus every managed peer's latest handshake must be recent. The results become a
//! matrix (hosts × targets, ✓/✗ with the round-trip time) or JSON, and the failing pairs are
//! named. Pure: the script is [`crate::scripts::verify`], the engine runs it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

use serde::Serialize;

use crate::desired::Desired;
use crate::inventory::{Inventory, Role};
use crate::keys::PinnedKeys;
use crate::names::HostName;
use crate::render::{Style, clean};
use crate::scripts::status::Seen;
use crate::scripts::verify::{Probe, ProbeResult};

/// What one host pings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The column: `nas`, `vps v6`, `nas LAN`.
    pub label: String,
    /// The host the address belongs to.
    pub host: HostName,
    /// `vpn4`, `vpn6` or `lan`.
    pub kind: &'static str,
    /// The address pinged.
    pub address: IpAddr,
    /// Whether the reachability policy lets the source reach it (`allow:`); a path it denies
    /// must fail, and passes the check when it does.
    pub allowed: bool,
}

/// A host's VPN addresses on the interface, as the desired state has them.
fn vpn_addresses(d: &Desired) -> (Option<IpAddr>, Option<IpAddr>) {
    let mut v4 = None;
    let mut v6 = None;
    for a in d.state.interface.iter().flat_map(|i| i.addresses.iter()) {
        match a.addr() {
            ip @ IpAddr::V4(_) => v4 = v4.or(Some(ip)),
            IpAddr::V6(x) if !x.is_unicast_link_local() => v6 = v6.or(Some(IpAddr::V6(x))),
            IpAddr::V6(_) => {}
        }
    }
    (v4, v6)
}

/// Every managed host's targets, in column order (by target host, IPv4 before IPv6, LANs last).
pub fn targets(
    inv: &Inventory,
    desired: &BTreeMap<HostName, Desired>,
) -> BTreeMap<HostName, Vec<Target>> {
    let addrs: BTreeMap<&HostName, (Option<IpAddr>, Option<IpAddr>)> =
        desired.iter().map(|(h, d)| (h, vpn_addresses(d))).collect();
    let (hub, _) = inv.hub();
    let mut out = BTreeMap::new();
    // What each host may reach (`allow:`; `None`: everything). A restricted host reaches the
    // hub itself and what its list names; and since its tunnel carries nothing else, its
    // answers reach only those too.
    let reach: BTreeMap<&HostName, Option<Vec<ipnet::IpNet>>> = addrs
        .keys()
        .map(|h| {
            let nets = inv
                .hosts
                .get(*h)
                .and_then(|x| crate::policy::destinations(inv, x));
            (*h, nets)
        })
        .collect();
    // `answer`: the way back. A host allowed `internet` keeps its default routes, so its answers
    // to anyone go into the tunnel, and the hub lets answers through statefully.
    let may = |from: &HostName, to: &HostName, a: Option<&IpAddr>, answer: bool| {
        *to == hub.name
            || *from == hub.name
            || (answer
                && inv
                    .hosts
                    .get(from)
                    .is_some_and(crate::policy::allows_internet))
            || reach
                .get(from)
                .cloned()
                .flatten()
                .is_none_or(|nets| a.is_some_and(|a| nets.iter().any(|n| n.contains(a))))
    };
    for (src, (src4, src6)) in &addrs {
        let may_reach = reach.get(*src).cloned().flatten();
        let allowed = |dst: &HostName, a: &IpAddr| {
            let back = if a.is_ipv4() {
                src4.as_ref()
            } else {
                src6.as_ref()
            };
            may(src, dst, Some(a), false) && may(dst, src, back, true)
        };
        let mut t = Vec::new();
        for (dst, (v4, v6)) in &addrs {
            if src == dst {
                continue;
            }
            if let Some(a) = v4 {
                t.push(Target {
                    label: dst.to_string(),
                    host: (*dst).clone(),
                    kind: "vpn4",
                    address: *a,
                    allowed: allowed(dst, a),
                });
            }
            if let (Some(a), Some(_)) = (v6, src6) {
                t.push(Target {
                    label: format!("{dst} v6"),
                    host: (*dst).clone(),
                    kind: "vpn6",
                    address: *a,
                    allowed: allowed(dst, a),
                });
            }
        }
        let is_client = inv
            .hosts
            .get(*src)
            .is_some_and(|h| matches!(h.role, Role::Client(_)));
        if is_client {
            for g in inv.hosts.values() {
                if let Role::Gateway(gw) = &g.role {
                    let address = IpAddr::V4(gw.lan.address);
                    t.push(Target {
                        label: format!("{} LAN", g.name),
                        host: g.name.clone(),
                        kind: "lan",
                        address,
                        allowed: may_reach
                            .as_ref()
                            .is_none_or(|nets| nets.iter().any(|n| n.contains(&address))),
                    });
                }
            }
        }
        out.insert((*src).clone(), t);
    }
    out
}

/// The probes of a host's targets, for the script.
pub fn probes(targets: &[Target]) -> Vec<Probe> {
    targets
        .iter()
        .map(|t| Probe { address: t.address })
        .collect()
}

/// The whole check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The inventory's network name.
    pub network: String,
    /// Every probe, by source host then target.
    pub results: Vec<PathResult>,
    /// Every managed peer's latest handshake as its host sees it.
    pub handshakes: Vec<HandshakeResult>,
    /// Hosts that could not run the check, with why.
    pub unreachable: BTreeMap<HostName, String>,
}

/// One path from a host to a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathResult {
    /// The host that pinged.
    pub from: HostName,
    /// What it pinged.
    pub to: Target,
    /// Whether an answer came.
    pub ok: bool,
    /// The round-trip time, milliseconds.
    pub rtt_ms: Option<f64>,
}

/// One managed peer's latest handshake on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandshakeResult {
    /// The host.
    pub host: HostName,
    /// The peer's inventory name.
    pub peer: HostName,
    /// Seconds since its latest handshake (`None`: never, or not a peer at all).
    pub age_secs: Option<u64>,
    /// Within [`crate::status::ONLINE_WITHIN_SECS`].
    pub ok: bool,
}

impl VerifyReport {
    /// Every failure, for people: `laptop → nas (10.8.0.2)`, `nas: no handshake with vps`,
    /// `nas: unreachable: ...`.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unreachable
            .iter()
            .map(|(h, e)| format!("{h}: could not run the check: {}", clean(e)))
            .collect();
        for r in self.results.iter().filter(|r| r.ok != r.to.allowed) {
            out.push(if r.to.allowed {
                format!("{} → {} ({})", r.from, r.to.label, r.to.address)
            } else {
                format!(
                    "{} → {} ({}) answers, but the policy (`allow:`) denies it",
                    r.from, r.to.label, r.to.address
                )
            });
        }
        for h in self.handshakes.iter().filter(|h| !h.ok) {
            out.push(match h.age_secs {
                None => format!("{}: never a handshake with {}", h.host, h.peer),
                Some(a) => format!(
                    "{}: no handshake with {} for {}",
                    h.host,
                    h.peer,
                    crate::status::ago(Some(a))
                ),
            });
        }
        out
    }

    /// Whether everything passed.
    pub fn ok(&self) -> bool {
        self.failures().is_empty()
    }
}

/// The report from each host's probe results and status (or why it could not run).
pub fn build(
    inv: &Inventory,
    keys: &PinnedKeys,
    targets: &BTreeMap<HostName, Vec<Target>>,
    outcomes: &BTreeMap<HostName, Result<(Vec<ProbeResult>, Seen), String>>,
) -> VerifyReport {
    let names = crate::status::names_by_key(inv, keys);
    let mut report = VerifyReport {
        network: inv.network.name.clone(),
        results: vec![],
        handshakes: vec![],
        unreachable: BTreeMap::new(),
    };
    for (h, r) in outcomes {
        let (results, seen) = match r {
            Ok(x) => x,
            Err(e) => {
                report.unreachable.insert(h.clone(), e.clone());
                continue;
            }
        };
        for (t, p) in targets.get(h).into_iter().flatten().zip(results) {
            report.results.push(PathResult {
                from: h.clone(),
                to: t.clone(),
                ok: p.ok,
                rtt_ms: p.rtt_ms,
            });
        }
        // Managed peers this host should have: the other managed hosts it peers with.
        let wanted: Vec<&HostName> = targets
            .get(h)
            .into_iter()
            .flatten()
            .filter(|t| t.kind == "vpn4")
            .map(|t| &t.host)
            .collect();
        let peers = seen.interface.as_ref().map(|i| &i.peers);
        for (key, p) in peers.into_iter().flatten() {
            let Some(name) = names.get(key) else { continue };
            if !wanted.contains(&name) {
                continue;
            }
            let age = p.latest_handshake.map(|t| seen.now.saturating_sub(t));
            report.handshakes.push(HandshakeResult {
                host: h.clone(),
                peer: name.clone(),
                age_secs: age,
                ok: age.is_some_and(|a| a <= crate::status::ONLINE_WITHIN_SECS),
            });
        }
    }
    report
}

/// The matrix: a row per host, a column per target, ✓ with the round-trip time or ✗; then the
/// failures, or "all N paths work".
pub fn text(report: &VerifyReport, style: Style) -> String {
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<HostName> = Vec::new();
    for r in &report.results {
        if !columns.contains(&r.to.label) {
            columns.push(r.to.label.clone());
        }
        if !rows.contains(&r.from) {
            rows.push(r.from.clone());
        }
    }
    // Columns by host order of the matrix's rows, LANs last.
    columns.sort_by_key(|c| (c.ends_with(" LAN"), c.clone()));
    let cell = |from: &HostName, col: &str| -> (String, Option<bool>) {
        match report
            .results
            .iter()
            .find(|r| &r.from == from && r.to.label == col)
        {
            None => ("·".into(), None),
            // A path the policy denies: refused is right, an answer is a failure.
            Some(r) if !r.to.allowed && !r.ok => ("– denied".into(), Some(true)),
            Some(r) if !r.to.allowed => ("✗ open".into(), Some(false)),
            Some(r) if r.ok => (
                r.rtt_ms
                    .map(|t| format!("✓ {t:.1} ms"))
                    .unwrap_or_else(|| "✓".into()),
                Some(true),
            ),
            Some(_) => ("✗".into(), Some(false)),
        }
    };
    let first = rows
        .iter()
        .map(|r| r.as_str().len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).0.chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let mut s = String::new();
    write!(s, "{:first$}", "from").ok();
    for (c, w) in columns.iter().zip(&widths) {
        write!(s, "  {c:w$}").ok();
    }
    s.push('\n');
    for r in &rows {
        write!(s, "{:first$}", r.as_str()).ok();
        for (c, w) in columns.iter().zip(&widths) {
            let (text, ok) = cell(r, c);
            let pad = " ".repeat(w - text.chars().count());
            let painted = match ok {
                Some(true) => style.paint("32", &text),
                Some(false) => style.paint("31;1", &text),
                None => text,
            };
            write!(s, "  {painted}{pad}").ok();
        }
        s.push('\n');
    }
    for (h, e) in &report.unreachable {
        writeln!(
            s,
            "{h}: {} {}",
            style.paint("31;1", "could not run the check:"),
            clean(e).replace('\n', " ")
        )
        .ok();
    }
    let failures = report.failures();
    let paths = report.results.len();
    let denied = report.results.iter().filter(|r| !r.to.allowed).count();
    if failures.is_empty() && denied > 0 {
        writeln!(
            s,
            "\nVerified: all {paths} paths as the policy says ({} work, {denied} denied by `allow:` are refused), every tunnel has a recent handshake.",
            paths - denied
        )
        .ok();
    } else if failures.is_empty() {
        writeln!(
            s,
            "\nVerified: all {paths} paths work, every tunnel has a recent handshake."
        )
        .ok();
    } else {
        writeln!(s, "\n{}", style.paint("31;1", "Verify failed:")).ok();
        for f in &failures {
            writeln!(s, "  ✗ {f}").ok();
        }
        let bad = report
            .results
            .iter()
            .filter(|r| r.ok != r.to.allowed)
            .count();
        writeln!(s, "{} of {paths} paths work.", paths - bad).ok();
    }
    s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
}

/// The report as pretty JSON, with the failures listed.
pub fn json(report: &VerifyReport) -> String {
    #[derive(Serialize)]
    struct Shown<'a> {
        #[serde(flatten)]
        report: &'a VerifyReport,
        ok: bool,
        failures: Vec<String>,
    }
    serde_json::to_string_pretty(&Shown {
        report,
        ok: report.ok(),
        failures: report.failures(),
    })
    .expect("a verify report always serialises")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_the_policy_denies_passes_when_refused_and_fails_when_it_answers() {
        let path = |ok: bool| PathResult {
            from: HostName::parse("friend").unwrap(),
            to: Target {
                label: "laptop".into(),
                host: HostName::parse("laptop").unwrap(),
                kind: "vpn4",
                address: "10.8.0.10".parse().unwrap(),
                allowed: false,
            },
            ok,
            rtt_ms: None,
        };
        let report = |ok: bool| VerifyReport {
            network: "lab".into(),
            results: vec![path(ok)],
            handshakes: vec![],
            unreachable: BTreeMap::new(),
        };
        assert!(report(false).ok());
        assert!(text(&report(false), Style::new(false, true)).contains("– denied"));
        let open = report(true);
        assert!(!open.ok());
        assert!(open.failures()[0].contains("the policy (`allow:`) denies it"));
    }
}
