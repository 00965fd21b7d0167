//! Roles (hub, gateway, client) are data: `roles/*.yaml`, shipped inside the binary and
//! overridable with `--roles DIR`. A role lists the sysctls, routes and firewall chains a host
//! of that role gets, written with a tiny placeholder language (`{wg}`, `{vpn4}`, ...) and
//! `when:` conditions. Both are parsed at load time into [`Placeholder`]s (inside a
//! [`Template`]) and [`Condition`]s: an unknown one is an error naming the file, not a surprise
//! on a host, and `desired` decides each one in an exhaustive match.

use std::collections::BTreeMap;

use crate::state::Family;

/// The role files compiled into the binary.
const BUILTIN: [(&str, &str); 3] = [
    ("hub", include_str!("../../roles/hub.yaml")),
    ("gateway", include_str!("../../roles/gateway.yaml")),
    ("client", include_str!("../../roles/client.yaml")),
];

/// A value a role's text can name, written `{name}` (`{wg}`, `{vpn4}`, ...). Each stands for a
/// list: one value (`{wg}`), or one per home LAN (`{lan4}`), or none (a hub has no `{own_lan4}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placeholder {
    /// `{wg}`: the WireGuard interface.
    Wg,
    /// `{port}`: the hub's WireGuard port.
    Port,
    /// `{wan}`: the hub's WAN interface.
    Wan,
    /// `{vpn4}`: the VPN's IPv4 range.
    Vpn4,
    /// `{clients6}`: the clients' public IPv6 range.
    Clients6,
    /// `{lan4}`: every home LAN.
    Lan4,
    /// `{lan6}`: every home LAN's IPv6 prefix.
    Lan6,
    /// `{own_lan4}`: a gateway's own home LAN.
    OwnLan4,
    /// `{remote_lan4}`: the home LANs behind other gateways.
    RemoteLan4,
    /// `{own_lan6}`: a gateway's own home LAN's IPv6 prefix.
    OwnLan6,
    /// `{remote_lan6}`: the IPv6 prefixes of the home LANs behind other gateways.
    RemoteLan6,
    /// `{policy4}`: whole IPv4 rules of the reachability policy (`allow:`), generated per
    /// source; none when no host has an `allow:` list.
    Policy4,
    /// `{policy6}`: the same for IPv6.
    Policy6,
}

impl Placeholder {
    /// Every placeholder, in the order role files and messages list them.
    pub const ALL: [Placeholder; 13] = [
        Placeholder::Wg,
        Placeholder::Port,
        Placeholder::Wan,
        Placeholder::Vpn4,
        Placeholder::Clients6,
        Placeholder::Lan4,
        Placeholder::Lan6,
        Placeholder::OwnLan4,
        Placeholder::RemoteLan4,
        Placeholder::OwnLan6,
        Placeholder::RemoteLan6,
        Placeholder::Policy4,
        Placeholder::Policy6,
    ];

    /// The name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Wg => "wg",
            Placeholder::Port => "port",
            Placeholder::Wan => "wan",
            Placeholder::Vpn4 => "vpn4",
            Placeholder::Clients6 => "clients6",
            Placeholder::Lan4 => "lan4",
            Placeholder::Lan6 => "lan6",
            Placeholder::OwnLan4 => "own_lan4",
            Placeholder::RemoteLan4 => "remote_lan4",
            Placeholder::OwnLan6 => "own_lan6",
            Placeholder::RemoteLan6 => "remote_lan6",
            Placeholder::Policy4 => "policy4",
            Placeholder::Policy6 => "policy6",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The placeholders each role may use: a value a role cannot have (a client's `{wan}`)
    /// is refused when the role loads rather than expanding to nothing on a host.
    fn allowed(role: &str) -> &'static [Placeholder] {
        use Placeholder::*;
        match role {
            "hub" => &[Wg, Port, Wan, Vpn4, Clients6, Lan4, Lan6, Policy4, Policy6],
            "gateway" => &[
                Wg, Port, Vpn4, OwnLan4, RemoteLan4, Clients6, OwnLan6, RemoteLan6, Policy4,
                Policy6,
            ],
            _ => &[Wg, Port, Vpn4, RemoteLan4, Clients6],
        }
    }
}

/// What a `when:` may name: a fact about the host or the network, decided in `desired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// `ipv6`: the network has a public IPv6 plan.
    Ipv6,
    /// `ipv6_on_link`: the clients' IPv6 range is on the hub's WAN link (NDP proxy).
    Ipv6OnLink,
    /// `wan_accepts_ra`: the hub's WAN interface must keep accepting router advertisements.
    WanAcceptsRa,
    /// `nat`: the hub masquerades the VPN's IPv4 range.
    Nat,
    /// `has_ipv6`: the host has a public IPv6 address.
    HasIpv6,
    /// `split_tunnel`: only the VPN and the home LANs go through the tunnel.
    SplitTunnel,
    /// `full_tunnel`: all IPv4 goes through the tunnel.
    FullTunnel,
    /// `has_lan6`: this gateway's home LAN has an IPv6 prefix (and the network has IPv6).
    HasLan6,
}

impl Condition {
    /// Every condition, in the order messages list them.
    pub const ALL: [Condition; 8] = [
        Condition::Ipv6,
        Condition::Ipv6OnLink,
        Condition::WanAcceptsRa,
        Condition::Nat,
        Condition::HasIpv6,
        Condition::SplitTunnel,
        Condition::FullTunnel,
        Condition::HasLan6,
    ];

    /// The name a `when:` uses.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Ipv6 => "ipv6",
            Condition::Ipv6OnLink => "ipv6_on_link",
            Condition::WanAcceptsRa => "wan_accepts_ra",
            Condition::Nat => "nat",
            Condition::HasIpv6 => "has_ipv6",
            Condition::SplitTunnel => "split_tunnel",
            Condition::FullTunnel => "full_tunnel",
            Condition::HasLan6 => "has_lan6",
        }
    }

    /// Reads a `when:` value; unknown names are an error naming every known one.
    fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown condition `when: {name}` (known: {})",
                    known.join(", ")
                )
            })
    }
}

/// A piece of a role's text: literal text, or a placeholder to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Copied as it is.
    Literal(String),
    /// Replaced by each of the placeholder's values.
    Value(Placeholder),
}

/// A role's text with its placeholders found at load time, so expanding it cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Splits `text` into literals and placeholders, refusing an unclosed `{`, a `}` after the
    /// last placeholder and any placeholder `role` may not use.
    fn parse(text: &str, role: &str) -> Result<Self, String> {
        let mut names = Vec::new();
        let mut literals = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {text:?}"))?;
            literals.push(&rest[..start]);
            names.push(&after[..end]);
            rest = &after[end + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray `}}` in {text:?}"));
        }
        let allowed = Placeholder::allowed(role);
        let mut segments = Vec::new();
        for (literal, name) in literals.into_iter().zip(names) {
            let p = Placeholder::parse(name)
                .filter(|p| allowed.contains(p))
                .ok_or_else(|| {
                    let may: Vec<String> = allowed
                        .iter()
                        .map(|a| format!("{{{}}}", a.name()))
                        .collect();
                    format!(
                        "unknown placeholder {{{name}}} in {text:?} (a {role} may use: {})",
                        may.join(" ")
                    )
                })?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(literal.to_owned()));
            }
            segments.push(Segment::Value(p));
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    /// The pieces, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Expands the text with `value`: a placeholder bound to several values yields one result
    /// per value (a rule per home LAN), one bound to none yields nothing.
    pub fn expand<'v>(&self, value: impl Fn(Placeholder) -> &'v [String]) -> Vec<String> {
        let mut results = vec![String::new()];
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => results.iter_mut().for_each(|r| r.push_str(l)),
                Segment::Value(p) => {
                    let options = value(*p);
                    results = results
                        .iter()
                        .flat_map(|r| options.iter().map(move |o| format!("{r}{o}")))
                        .collect();
                }
            }
        }
        results
    }
}

/// One role's data, checked: every text parsed into a [`Template`], every `when:` a
/// [`Condition`].
#[derive(Debug, Clone, Default)]
pub struct RoleSpec {
    /// `sysctls:`: kernel settings the role sets (and persists in the sysctl drop-in).
    pub sysctls: Vec<SysctlSpec>,
    /// `routes:`: routes the role adds, marked as meshctl's.
    pub routes: Vec<RouteSpec>,
    /// `chains:`: meshctl's own firewall chains, each with its jump.
    pub chains: Vec<ChainSpec>,
}

/// One `sysctls:` entry of a role file.
#[derive(Debug, Clone)]
pub struct SysctlSpec {
    /// `key`: dotted sysctl key; may hold placeholders such as `{wan}`.
    pub key: Template,
    /// `value`: the value to set, as a string (`"1"`).
    pub value: Template,
    /// `when`: absent: always.
    pub when: Option<Condition>,
}

/// One `routes:` entry of a role file.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// `to`: the destination, e.g. `{lan4}` (one route per home LAN).
    pub to: Template,
    /// `dev`: the device, e.g. `{wg}`.
    pub dev: Template,
    /// `when`: absent: always.
    pub when: Option<Condition>,
}

/// One `chains:` entry of a role file: a chain of meshctl's and its rules.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// `family`: `ipv4` or `ipv6`.
    pub family: Family,
    /// `table`: `filter`, `nat` or `mangle`.
    pub table: String,
    /// `chain`: the chain's name, `MESHCTL-<UPPERCASE>`.
    pub chain: String,
    /// The built-in chain that jumps here (one tagged rule at its top).
    pub from: String,
    /// `when`: absent: always.
    pub when: Option<Condition>,
    /// `rules`: the chain's rules in `iptables-save` form without `-A CHAIN`; may hold placeholders.
    pub rules: Vec<Template>,
}

/// The three roles, validated.
#[derive(Debug, Clone)]
pub struct Roles {
    /// Each role's data by role name (`hub`, `gateway`, `client`).
    pub by_name: BTreeMap<String, RoleSpec>,
}

/// A role file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("role file {file}: {message}")]
pub struct RoleError {
    /// The role file: its path, or `(built-in) roles/<role>.yaml`.
    pub file: String,
    /// What is wrong, with the YAML error's location when there is one.
    pub message: String,
}

impl Roles {
    /// Refuses roles that would leave a reachability policy unenforced: when a host has an
    /// `allow:` list, the hub's role (and, with gateways, the gateway's) must place
    /// `{policy4}` in its chains — and `{policy6}` where the network has IPv6 — or the lists
    /// would silently do nothing (a `--roles DIR` written before the policy existed).
    pub fn check_policy(&self, inv: &crate::inventory::Inventory) -> Result<(), RoleError> {
        if !inv.hosts.values().any(|h| h.allow.is_some()) {
            return Ok(());
        }
        let mut roles = vec!["hub"];
        if !inv.lans().is_empty() {
            roles.push("gateway");
        }
        for role in roles {
            let uses = |p: Placeholder| {
                self.get(role).chains.iter().any(|c| {
                    c.rules
                        .iter()
                        .any(|r| r.segments().contains(&Segment::Value(p)))
                })
            };
            let mut needed = vec![Placeholder::Policy4];
            if inv.network.ipv6.is_some() && role == "hub" {
                needed.push(Placeholder::Policy6);
            }
            if let Some(p) = needed.into_iter().find(|p| !uses(*p)) {
                return Err(RoleError {
                    file: format!("roles/{role}.yaml"),
                    message: format!(
                        "no rule places `{{{}}}`, so the inventory's `allow:` lists would not be enforced; add a rule \"{{{}}}\" to its MESHCTL-FORWARD chain (see the built-in role)",
                        p.name(),
                        p.name()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The built-in roles.
    pub fn builtin() -> Self {
        Self::with_overrides(&BTreeMap::new()).expect("built-in roles are valid (tested)")
    }

    /// The role names meshctl knows, each with its built-in file.
    pub fn names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(name, _)| *name)
    }

    /// The built-in roles, with those in `overrides` (role name → (file name, text), read from
    /// `--roles DIR` by `files`) replaced.
    pub fn with_overrides(
        overrides: &BTreeMap<String, (String, String)>,
    ) -> Result<Self, RoleError> {
        let mut by_name = BTreeMap::new();
        for (name, builtin) in BUILTIN {
            let (file, text) = match overrides.get(name) {
                Some((file, text)) => (file.clone(), text.clone()),
                None => (format!("(built-in) roles/{name}.yaml"), builtin.to_owned()),
            };
            let raw: raw::RoleSpec =
                serde_saphyr::from_str_with_options(&text, crate::inventory::yaml_options())
                    .map_err(|e| RoleError {
                        file: file.clone(),
                        message: crate::inventory::yaml_error(&e, &file, &text).to_string(),
                    })?;
            let spec = check(name, raw).map_err(|message| RoleError { file, message })?;
            by_name.insert(name.to_owned(), spec);
        }
        Ok(Self { by_name })
    }

    /// The data of `role` (`hub`, `gateway` or `client`; any other name panics).
    pub fn get(&self, role: &str) -> &RoleSpec {
        &self.by_name[role]
    }
}

/// The role files as written: texts and conditions still strings, for [`check`] to parse.
mod raw {
    use serde::Deserialize;

    use crate::state::Family;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RoleSpec {
        #[serde(default)]
        pub sysctls: Vec<SysctlSpec>,
        #[serde(default)]
        pub routes: Vec<RouteSpec>,
        #[serde(default)]
        pub chains: Vec<ChainSpec>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SysctlSpec {
        pub key: String,
        pub value: String,
        #[serde(default)]
        pub when: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RouteSpec {
        pub to: String,
        pub dev: String,
        #[serde(default)]
        pub when: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ChainSpec {
        pub family: Family,
        pub table: String,
        pub chain: String,
        pub from: String,
        #[serde(default)]
        pub when: Option<String>,
        pub rules: Vec<String>,
    }
}

/// Checks a role as written and parses its conditions and texts. The checks run in a fixed
/// order (chains, then conditions, then placeholders), so a file with several mistakes always
/// reports the same one first.
fn check(role: &str, spec: raw::RoleSpec) -> Result<RoleSpec, String> {
    for c in &spec.chains {
        let name_ok = c.chain.starts_with("MESHCTL-")
            && c.chain
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(format!(
                "chain {:?} must be named MESHCTL-<UPPERCASE>: meshctl only owns its own chains",
                c.chain
            ));
        }
        if !["filter", "nat", "mangle"].contains(&c.table.as_str()) {
            return Err(format!(
                "unknown table {:?} (use filter, nat or mangle)",
                c.table
            ));
        }
        if !["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"].contains(&c.from.as_str()) {
            return Err(format!("`from: {}` is not a built-in chain", c.from));
        }
        for r in &c.rules {
            let safe = r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" -_.,:/{}=!".contains(&b));
            if !safe {
                return Err(format!("rule {r:?} has characters outside the allowed set"));
            }
            if c.from == "INPUT" && (r.contains("-j DROP") || r.contains("-j REJECT")) {
                return Err(format!(
                    "rule {r:?}: meshctl never adds a drop or reject to INPUT"
                ));
            }
        }
    }
    let when = |w: &Option<String>| w.as_deref().map(Condition::parse).transpose();
    let sysctl_whens = spec
        .sysctls
        .iter()
        .map(|s| when(&s.when))
        .collect::<Result<Vec<_>, _>>()?;
    let route_whens = spec
        .routes
        .iter()
        .map(|r| when(&r.when))
        .collect::<Result<Vec<_>, _>>()?;
    let chain_whens = spec
        .chains
        .iter()
        .map(|c| when(&c.when))
        .collect::<Result<Vec<_>, _>>()?;
    let text = |t: &str| Template::parse(t, role);
    let sysctls = spec
        .sysctls
        .iter()
        .zip(sysctl_whens)
        .map(|(s, when)| {
            Ok(SysctlSpec {
                key: text(&s.key)?,
                value: text(&s.value)?,
                when,
            })
        })
        .collect::<Result<_, String>>()?;
    let routes = spec
        .routes
        .iter()
        .zip(route_whens)
        .map(|(r, when)| {
            Ok(RouteSpec {
                to: text(&r.to)?,
                dev: text(&r.dev)?,
                when,
            })
        })
        .collect::<Result<_, String>>()?;
    let chains = spec
        .chains
        .into_iter()
        .zip(chain_whens)
        .map(|(c, when)| {
            Ok(ChainSpec {
                rules: c
                    .rules
                    .iter()
                    .map(|r| text(r))
                    .collect::<Result<_, String>>()?,
                family: c.family,
                table: c.table,
                chain: c.chain,
                from: c.from,
                when,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(RoleSpec {
        sysctls,
        routes,
        chains,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roles_load() {
        let roles = Roles::builtin();
        assert_eq!(roles.by_name.len(), 3);
        assert!(!roles.get("hub").chains.is_empty());
    }

    #[test]
    fn unknown_placeholder_is_a_load_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("client.yaml"),
            "routes:\n  - to: \"{lan}\"\n    dev: \"{wg}\"\n",
        )
        .unwrap();
        let err = crate::files::load_roles(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown placeholder {lan}"), "{err}");
        assert!(err.contains("client.yaml"), "{err}");
    }

    #[test]
    fn unknown_condition_is_a_load_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("client.yaml"),
            "routes:\n  - to: \"::/0\"\n    dev: \"{wg}\"\n    when: ipv7\n",
        )
        .unwrap();
        let err = crate::files::load_roles(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown condition `when: ipv7`"), "{err}");
    }

    #[test]
    fn input_never_gets_a_drop() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hub.yaml"), "chains:\n  - family: ipv4\n    table: filter\n    chain: MESHCTL-INPUT\n    from: INPUT\n    rules: [\"-j DROP\"]\n").unwrap();
        assert!(crate::files::load_roles(Some(dir.path())).is_err());
    }

    #[test]
    fn expansion_multiplies_lists() {
        let mut v: BTreeMap<Placeholder, Vec<String>> = BTreeMap::new();
        v.insert(Placeholder::Vpn4, vec!["10.8.0.0/24".to_owned()]);
        v.insert(
            Placeholder::Lan4,
            vec!["192.168.1.0/24".to_owned(), "192.168.2.0/24".to_owned()],
        );
        let expand = |text: &str, v: &BTreeMap<Placeholder, Vec<String>>| {
            Template::parse(text, "hub")
                .unwrap()
                .expand(|p| v.get(&p).map_or(&[][..], Vec::as_slice))
        };
        assert_eq!(
            expand("-s {vpn4} -d {lan4} -j ACCEPT", &v),
            vec![
                "-s 10.8.0.0/24 -d 192.168.1.0/24 -j ACCEPT",
                "-s 10.8.0.0/24 -d 192.168.2.0/24 -j ACCEPT"
            ]
        );
        v.insert(Placeholder::Lan4, vec![]);
        assert!(expand("-d {lan4}", &v).is_empty());
    }

    #[test]
    fn templates_are_parsed_at_load() {
        let t = Template::parse("net.ipv6.conf.{wan}.proxy_ndp", "hub").unwrap();
        assert_eq!(
            t.segments(),
            [
                Segment::Literal("net.ipv6.conf.".into()),
                Segment::Value(Placeholder::Wan),
                Segment::Literal(".proxy_ndp".into()),
            ]
        );
        // A client has no WAN interface.
        let err = Template::parse("{wan}", "client").unwrap_err();
        assert!(err.starts_with("unknown placeholder {wan}"), "{err}");
        assert!(Template::parse("{wg", "hub").is_err());
        assert!(Template::parse("{wg}}", "hub").is_err());
    }

    #[test]
    fn names_round_trip() {
        for p in Placeholder::ALL {
            assert_eq!(Placeholder::parse(p.name()), Some(p));
        }
        for c in Condition::ALL {
            assert_eq!(Condition::parse(c.name()), Ok(c));
        }
    }
}
