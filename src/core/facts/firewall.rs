//! meshctl's firewall chains and jumps, parsed from one `iptables-save` / `ip6tables-save` per
//! family.
//!
//! # Canonical rule forms
//!
//! Rules are compared in the form `iptables-save` prints them, without the leading `-A CHAIN `.
//! `iptables-restore` accepts many spellings of one rule but `iptables-save` prints only one, so
//! desired rules must be written in exactly that form or they never compare equal to the live
//! ones. Found by experiment (iptables v1.8.9, Debian 12; a rule written with
//! `iptables-restore --noflush`, read back with `iptables-save`), identical for the nf_tables
//! and the legacy backend, and for iptables and ip6tables where both apply:
//!
//! | written                                                         | printed by `*-save`                                          |
//! |-----------------------------------------------------------------|--------------------------------------------------------------|
//! | `-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`          | unchanged                                                    |
//! | `-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`          | `-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`       |
//! | `-m state --state RELATED,ESTABLISHED -j ACCEPT`                | unchanged (stays `-m state`)                                 |
//! | v6 `-p icmpv6 -j ACCEPT`, v6 `-p ipv6-icmp -j ACCEPT`           | `-p ipv6-icmp -j ACCEPT`                                     |
//! | v6 `-p icmpv6 --icmpv6-type echo-request -j ACCEPT`             | `-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT`          |
//! | v6 `-d 2001:db8:10:0:100::/72 -i wg0 -j ACCEPT`                 | unchanged                                                    |
//! | v6 `-s 2001:db8:10:0:100::/72 -i wg0 -j ACCEPT`                 | unchanged                                                    |
//! | v6 `-i wg0 -s 2001:db8:10:0:100::/72 -j ACCEPT`                 | `-s 2001:db8:10:0:100::/72 -i wg0 -j ACCEPT`                 |
//! | v6 `-d 2001:db8:10:0:100::/72 -i eth0 -m conntrack --ctstate NEW -j REJECT --reject-with icmp6-port-unreachable` | unchanged |
//! | v6 `-d 2001:db8:10:0:1ff::/72 ...` (host bits set)              | `-d 2001:db8:10:0:100::/72 ...` (masked to the network)      |
//! | v6 `-d 2001:DB8::1 -j ACCEPT`                                   | `-d 2001:db8::1/128 -j ACCEPT` (lower case, `/128` added)    |
//! | v6 `-j REJECT`                                                  | `-j REJECT --reject-with icmp6-port-unreachable`             |
//! | v6 `-d ::/0 -j ACCEPT`                                          | `-j ACCEPT` (an any-address match is dropped)                |
//! | `-s 10.8.0.0/24 -d 192.168.178.0/24 -j ACCEPT`                  | unchanged                                                    |
//! | `-s 10.8.0.5 -j ACCEPT`                                         | `-s 10.8.0.5/32 -j ACCEPT`                                   |
//! | `-s 10.8.0.7/24 -j ACCEPT`                                      | `-s 10.8.0.0/24 -j ACCEPT`                                   |
//! | `-d 0.0.0.0/0 -s 10.8.0.0/24 -j ACCEPT`                         | `-s 10.8.0.0/24 -j ACCEPT`                                   |
//! | `-i wg0 -o wg0 -j ACCEPT`                                       | unchanged                                                    |
//! | `-o eth0 -s 10.8.0.0/24 -j ACCEPT`                              | `-s 10.8.0.0/24 -o eth0 -j ACCEPT`                           |
//! | `-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu` (v4, v6) | unchanged                                     |
//! | `-p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`  | `-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu` |
//! | nat `-s 10.8.0.0/24 -o eth0 -j MASQUERADE`                      | unchanged                                                    |
//! | `-p udp -m udp --dport 51820 -j ACCEPT` (v4, v6)                | unchanged                                                    |
//! | `-p udp --dport 51820 -j ACCEPT`, `-p UDP --dport 51820 ...`    | `-p udp -m udp --dport 51820 -j ACCEPT`                      |
//! | v4 `-j REJECT`                                                  | `-j REJECT --reject-with icmp-port-unreachable`              |
//! | `-m comment --comment "meshctl" -j X`                           | `-m comment --comment meshctl -j X` (quoted only with spaces: `--comment "meshctl rule"`) |
//! | `-I FORWARD 1 -m comment --comment meshctl -j MESHCTL-FORWARD`  | `-A FORWARD -m comment --comment meshctl -j MESHCTL-FORWARD` (always `-A`, in position order) |
//!
//! The rules of thumb: addresses in CIDR form with the prefix length always written and host
//! bits zero, lower-case IPv6; option order `-s -d -i -o -p` (with `!` before the option), then
//! the matches `-m ...` in the order given, then `-j TARGET` with every target option the
//! kernel defaults (`--reject-with`); `-p tcp`/`-p udp` with port or flag options get an
//! explicit `-m tcp`/`-m udp`; ICMPv6 is `ipv6-icmp` and ICMPv6 types are numbers.
//!
//! # What is read
//!
//! meshctl's chains are the spec's chains plus the targets of meshctl's tagged jumps (so a chain
//! the inventory dropped is still seen, and removed). A chain that does not exist is absent from
//! [`Firewall::chains`]; an existing empty chain maps to an empty list. A jump is a rule in a
//! built-in chain of exactly the form `-m comment --comment meshctl -j CHAIN`. Foreign rules are
//! never part of the state; two kinds are reported as warnings: a DROP/REJECT rule placed before
//! meshctl's jump in the same chain (it shadows meshctl's rules), and a DROP policy on FORWARD
//! where meshctl has no jump yet.

use std::collections::BTreeSet;

use super::records::{Records, excerpt, malformed};
use super::script::{RC_NO_RULES_FILE, RC_NOT_FOUND};
use super::{FactError, GatherSpec, failed, require};
use crate::state::{ChainId, Family, Firewall, JUMP_COMMENT, Jump};

/// The record id of a family's `*-save` output.
pub(crate) fn record_id(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "fw4",
        Family::Ipv6 => "fw6",
    }
}

/// The record id of a family's `/proc/net/ip*_tables_names` (legacy tables in use).
pub(crate) fn legacy_record_id(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "fw4-legacy",
        Family::Ipv6 => "fw6-legacy",
    }
}

/// The `/proc/net` file that lists the legacy backend's tables in use.
pub(crate) fn legacy_names_path(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "/proc/net/ip_tables_names",
        Family::Ipv6 => "/proc/net/ip6_tables_names",
    }
}

/// One table of a `*-save` output.
#[derive(Debug, Default)]
struct Table {
    name: String,
    /// Chains in declaration order with their policy (`-` for user chains).
    chains: Vec<(String, String)>,
    /// (chain, rule without `-A CHAIN `) in order.
    rules: Vec<(String, String)>,
}

impl Table {
    fn policy(&self, chain: &str) -> Option<&str> {
        self.chains
            .iter()
            .find(|(c, _)| c == chain)
            .map(|(_, p)| p.as_str())
    }

    fn rules_of<'s>(&'s self, chain: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.rules
            .iter()
            .filter(move |(c, _)| c == chain)
            .map(|(_, r)| r.as_str())
    }
}

/// Parses `iptables-save` output (either backend, with or without `-c` counters).
fn parse_save<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
    section: &str,
    legacy_warning: &mut bool,
) -> Result<Vec<Table>, FactError> {
    let mut tables: Vec<Table> = Vec::new();
    let mut current: Option<Table> = None;
    let mut last = 0;
    for (n, raw) in lines {
        last = n;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if comment.contains("legacy tables present") {
                *legacy_warning = true;
            }
            continue;
        }
        let bad = |why: &str| malformed(section, n, format!("{why}: {}", excerpt(line)));
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(bad("table starts before the previous one's COMMIT"));
            }
            current = Some(Table {
                name: name.trim().to_owned(),
                ..Table::default()
            });
            continue;
        }
        let Some(table) = current.as_mut() else {
            return Err(bad("line outside a table"));
        };
        if line == "COMMIT" {
            tables.push(current.take().expect("checked"));
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let (Some(chain), Some(policy)) = (words.next(), words.next()) else {
                return Err(bad("chain declaration without a policy"));
            };
            table.chains.push((chain.to_owned(), policy.to_owned()));
        } else {
            // `[pkts:bytes] -A ...` with `-c`.
            let rule = match line.strip_prefix('[') {
                Some(rest) => rest
                    .split_once("] ")
                    .map(|(_, r)| r)
                    .ok_or_else(|| bad("bad counters"))?,
                None => line,
            };
            let Some(rest) = rule.strip_prefix("-A ") else {
                return Err(bad("not a rule"));
            };
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            if table.policy(chain).is_none() {
                return Err(bad("rule in an undeclared chain"));
            }
            table.rules.push((chain.to_owned(), spec.trim().to_owned()));
        }
    }
    if let Some(t) = current {
        return Err(malformed(
            section,
            last,
            format!("table {} has no COMMIT (output cut off?)", t.name),
        ));
    }
    Ok(tables)
}

/// Splits a rule into words, keeping a double-quoted comment as one word.
fn words(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = rule.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The jump target of a rule (`-j X` / `--jump X`), if any.
fn target(words: &[String]) -> Option<&str> {
    words
        .iter()
        .position(|w| w == "-j" || w == "--jump")
        .and_then(|i| words.get(i + 1))
        .map(String::as_str)
}

/// The chain a meshctl jump rule goes to, when `rule` is exactly of the form meshctl writes.
fn meshctl_jump(rule: &str) -> Option<&str> {
    let prefix = format!("-m comment --comment {JUMP_COMMENT} -j ");
    let to = rule.strip_prefix(&prefix)?;
    (!to.is_empty() && !to.contains(char::is_whitespace)).then_some(to)
}

/// Whether a rule carries meshctl's comment tag at all.
fn tagged(words: &[String]) -> bool {
    words
        .windows(2)
        .any(|w| w[0] == "--comment" && w[1] == JUMP_COMMENT)
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

pub(crate) fn parse(
    recs: &Records<'_>,
    spec: &GatherSpec,
    backend: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Firewall, FactError> {
    let mut fw = Firewall::default();
    for family in [Family::Ipv4, Family::Ipv6] {
        if !spec.chains.iter().any(|c| c.family == family) {
            continue;
        }
        let fam = family_name(family);
        let id = record_id(family);
        let save = format!("{}-save", family.iptables());
        let rec = require(recs, id)?;
        // Not installed: no chains of meshctl's can exist (empty state, not an error); the
        // plan installs the tools where the host needs them (`packages`).
        if rec.rc == RC_NOT_FOUND {
            continue;
        }
        // Not read: no rules file of meshctl's, so no chain of its can be left there.
        if rec.rc == RC_NO_RULES_FILE && spec.chains_only_beside.iter().any(|(f, _)| *f == family) {
            continue;
        }
        if rec.rc != 0 {
            return Err(failed(rec, id, &save));
        }
        let mut legacy_present = false;
        let tables = parse_save(rec.body.iter().copied(), id, &mut legacy_present)?;
        if let Some(names) = recs.get(legacy_record_id(family))
            && names.rc == 0
            && names.lines().next().is_some()
            && backend == Some("nf_tables")
        {
            legacy_present = true;
        }
        if legacy_present {
            warnings.push(format!(
                "{fam}: iptables-legacy tables are present besides the nf_tables ones; meshctl \
                 reads and writes only the nf_tables ones, and the legacy rules still apply"
            ));
        }
        for table in &tables {
            read_table(family, table, spec, &mut fw, warnings);
        }
    }
    Ok(fw)
}

fn read_table(
    family: Family,
    table: &Table,
    spec: &GatherSpec,
    fw: &mut Firewall,
    warnings: &mut Vec<String>,
) {
    let fam = family_name(family);
    let t = table.name.as_str();
    let builtin = |chain: &str| table.policy(chain).is_some_and(|p| p != "-");

    // Jumps, and what comes before them, per built-in chain.
    let mut mine: BTreeSet<String> = spec
        .chains
        .iter()
        .filter(|c| c.family == family && c.table == t)
        .map(|c| c.chain.clone())
        .collect();
    for (from, _) in table.chains.iter().filter(|(c, _)| builtin(c)) {
        let mut foreign_stops: Vec<(usize, String)> = Vec::new();
        let mut jumped = false;
        for (pos, rule) in table.rules_of(from).enumerate() {
            if let Some(to) = meshctl_jump(rule) {
                if !jumped {
                    for (p, r) in &foreign_stops {
                        warnings.push(format!(
                            "{fam} {t} {from}: rule {} `{r}` comes before meshctl's jump to {to} \
                             and may drop traffic meshctl's rules accept",
                            p + 1
                        ));
                    }
                }
                jumped = true;
                mine.insert(to.to_owned());
                fw.jumps.insert(Jump {
                    family,
                    table: t.to_owned(),
                    from: from.clone(),
                    to: to.to_owned(),
                });
                continue;
            }
            let w = words(rule);
            if tagged(&w) {
                warnings.push(format!(
                    "{fam} {t} {from}: rule `{rule}` carries meshctl's comment but is not a jump \
                     meshctl writes; it is left alone"
                ));
            }
            if !jumped && matches!(target(&w), Some("DROP" | "REJECT")) {
                foreign_stops.push((pos, rule.to_owned()));
            }
        }
        let forward_drop = from == "FORWARD"
            && t == "filter"
            && table.policy(from) == Some("DROP")
            && spec
                .chains
                .iter()
                .any(|c| c.family == family && c.table == "filter");
        if forward_drop && !jumped {
            warnings.push(format!(
                "{fam} filter FORWARD has policy DROP and no jump to meshctl's chains yet: \
                 forwarded traffic is dropped until meshctl's rules are applied"
            ));
        }
    }

    for chain in mine {
        if table.policy(&chain).is_none() {
            continue;
        }
        let rules = table.rules_of(&chain).map(str::to_owned).collect();
        fw.chains.insert(
            ChainId {
                family,
                table: t.to_owned(),
                chain,
            },
            rules,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quoted_comments() {
        assert_eq!(
            words(r#"-m comment --comment "a \"b\" c" -j DROP"#),
            vec!["-m", "comment", "--comment", "a \"b\" c", "-j", "DROP"]
        );
        assert_eq!(
            target(&words("-s 1.2.3.4/32 -j REJECT --reject-with x")),
            Some("REJECT")
        );
        assert_eq!(target(&words("-s 1.2.3.4/32")), None);
    }

    #[test]
    fn only_the_exact_form_is_a_jump() {
        assert_eq!(
            meshctl_jump("-m comment --comment meshctl -j MESHCTL-FORWARD"),
            Some("MESHCTL-FORWARD")
        );
        assert_eq!(
            meshctl_jump("-i eth0 -m comment --comment meshctl -j X"),
            None
        );
        assert_eq!(meshctl_jump("-m comment --comment meshctl -j "), None);
        assert_eq!(meshctl_jump("-m comment --comment meshctl2 -j X"), None);
    }
}
