//! Roles (hub, gateway, client) are data: `roles/*.yaml`, shipped inside the binary and
//! overridable with `--roles DIR`. A role lists the sysctls, routes and firewall chains a host
//! of that role gets, written with a tiny placeholder language (`{wg}`, `{vpn4}`, ...) and
//! `when:` conditions. Both are checked at load time: an unknown placeholder or condition is an
//! error naming the file, not a surprise on a host.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::state::Family;

/// The role files compiled into the binary.
const BUILTIN: [(&str, &str); 3] = [
    ("hub", include_str!("../../roles/hub.yaml")),
    ("gateway", include_str!("../../roles/gateway.yaml")),
    ("client", include_str!("../../roles/client.yaml")),
];

/// Placeholders each role may use.
fn allowed_placeholders(role: &str) -> &'static [&'static str] {
    match role {
        "hub" => &["wg", "port", "wan", "vpn4", "clients6", "lan4", "lan6"],
        "gateway" => &[
            "wg",
            "port",
            "vpn4",
            "own_lan4",
            "remote_lan4",
            "clients6",
            "own_lan6",
            "remote_lan6",
        ],
        _ => &["wg", "port", "vpn4", "remote_lan4", "clients6"],
    }
}

/// Conditions a `when:` may name.
pub const CONDITIONS: &[&str] = &[
    "ipv6",
    "ipv6_on_link",
    "wan_accepts_ra",
    "nat",
    "has_ipv6",
    "split_tunnel",
    "full_tunnel",
    "has_lan6",
];

/// One role's data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// `sysctls:`: kernel settings the role sets (and persists in the sysctl drop-in).
    #[serde(default)]
    pub sysctls: Vec<SysctlSpec>,
    /// `routes:`: routes the role adds, marked as meshctl's.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// `chains:`: meshctl's own firewall chains, each with its jump.
    #[serde(default)]
    pub chains: Vec<ChainSpec>,
}

/// One `sysctls:` entry of a role file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlSpec {
    /// `key`: dotted sysctl key; may hold placeholders such as `{wan}`.
    pub key: String,
    /// `value`: the value to set, as a string (`"1"`).
    pub value: String,
    /// `when`: a condition from [`CONDITIONS`]; absent: always.
    #[serde(default)]
    pub when: Option<String>,
}

/// One `routes:` entry of a role file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `to`: the destination, e.g. `{lan4}` (one route per home LAN).
    pub to: String,
    /// `dev`: the device, e.g. `{wg}`.
    pub dev: String,
    /// `when`: a condition from [`CONDITIONS`]; absent: always.
    #[serde(default)]
    pub when: Option<String>,
}

/// One `chains:` entry of a role file: a chain of meshctl's and its rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    /// `family`: `ipv4` or `ipv6`.
    pub family: Family,
    /// `table`: e.g. `filter` or `nat`.
    pub table: String,
    /// `chain`: the chain's name, e.g. `MESHCTL-FORWARD`.
    pub chain: String,
    /// The built-in chain that jumps here (one tagged rule at its top).
    pub from: String,
    /// `when`: a condition from [`CONDITIONS`]; absent: always.
    #[serde(default)]
    pub when: Option<String>,
    /// `rules`: the chain's rules in `iptables-save` form without `-A CHAIN`; may hold placeholders.
    pub rules: Vec<String>,
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
            let spec: RoleSpec =
                serde_saphyr::from_str_with_options(&text, crate::inventory::yaml_options())
                    .map_err(|e| RoleError {
                        file: file.clone(),
                        message: crate::inventory::yaml_error(&e, &file, &text).to_string(),
                    })?;
            check(name, &spec).map_err(|message| RoleError { file, message })?;
            by_name.insert(name.to_owned(), spec);
        }
        Ok(Self { by_name })
    }

    /// The data of `role` (`hub`, `gateway` or `client`; any other name panics).
    pub fn get(&self, role: &str) -> &RoleSpec {
        &self.by_name[role]
    }
}

/// Checks every placeholder and condition of a role.
fn check(role: &str, spec: &RoleSpec) -> Result<(), String> {
    let allowed = allowed_placeholders(role);
    let mut texts: Vec<&str> = Vec::new();
    let mut whens: Vec<&str> = Vec::new();
    for s in &spec.sysctls {
        texts.extend([s.key.as_str(), s.value.as_str()]);
        whens.extend(s.when.as_deref());
    }
    for r in &spec.routes {
        texts.extend([r.to.as_str(), r.dev.as_str()]);
        whens.extend(r.when.as_deref());
    }
    for c in &spec.chains {
        texts.extend(c.rules.iter().map(String::as_str));
        whens.extend(c.when.as_deref());
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
    for w in whens {
        if !CONDITIONS.contains(&w) {
            return Err(format!(
                "unknown condition `when: {w}` (known: {})",
                CONDITIONS.join(", ")
            ));
        }
    }
    for t in texts {
        for p in placeholders(t)? {
            if !allowed.contains(&p) {
                return Err(format!(
                    "unknown placeholder {{{p}}} in {t:?} (a {role} may use: {})",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
    }
    Ok(())
}

/// The placeholder names in `text`.
fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in {text:?}"))?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray `}}` in {text:?}"));
    }
    Ok(out)
}

/// Expands `text` with `values`: a placeholder bound to several values yields one result per
/// value (a rule per home LAN), one bound to none yields nothing.
pub fn expand(text: &str, values: &BTreeMap<&str, Vec<String>>) -> Vec<String> {
    let mut results = vec![String::new()];
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let end = start + 1 + rest[start + 1..].find('}').expect("checked at load");
        let name = &rest[start + 1..end];
        let literal = &rest[..start];
        let options = values.get(name).cloned().unwrap_or_default();
        results = results
            .into_iter()
            .flat_map(|r| options.iter().map(move |o| format!("{r}{literal}{o}")))
            .collect();
        rest = &rest[end + 1..];
    }
    results.into_iter().map(|r| r + rest).collect()
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
        let mut v = BTreeMap::new();
        v.insert("vpn4", vec!["10.8.0.0/24".to_owned()]);
        v.insert(
            "lan4",
            vec!["192.168.1.0/24".to_owned(), "192.168.2.0/24".to_owned()],
        );
        assert_eq!(
            expand("-s {vpn4} -d {lan4} -j ACCEPT", &v),
            vec![
                "-s 10.8.0.0/24 -d 192.168.1.0/24 -j ACCEPT",
                "-s 10.8.0.0/24 -d 192.168.2.0/24 -j ACCEPT"
            ]
        );
        v.insert("lan4", vec![]);
        assert!(expand("-d {lan4}", &v).is_empty());
    }
}
