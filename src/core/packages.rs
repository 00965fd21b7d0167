//! The packages a host needs for what meshctl does on it, named for its package manager: a
//! fresh VPS has no `wg`, no `wg-quick`, often no iptables, and its kernel may have no
//! WireGuard. Pure: decided from the desired state and the gathered facts (tools present,
//! kernel WireGuard, package manager); apply installs them first (see `scripts::steps`).

use serde::{Deserialize, Serialize};

use crate::state::{Family, HostState, LiveHost, SystemInfo};

/// A package manager meshctl can install with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// Debian, Ubuntu: `apt-get`.
    Apt,
    /// Fedora, RHEL and its rebuilds: `dnf`.
    Dnf,
    /// Alpine: `apk`.
    Apk,
}

impl Manager {
    /// Its short name, as the plan shows it: `apt`, `dnf`, `apk`.
    pub fn name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Dnf => "dnf",
            Manager::Apk => "apk",
        }
    }

    /// The command whose presence (in `SystemInfo::tools`) says the manager is there.
    pub fn tool(self) -> &'static str {
        match self {
            Manager::Apt => "apt-get",
            Manager::Dnf => "dnf",
            Manager::Apk => "apk",
        }
    }

    /// The host's package manager, the first of apt, dnf, apk that is there.
    pub fn of(system: &SystemInfo) -> Option<Manager> {
        [Manager::Apt, Manager::Dnf, Manager::Apk]
            .into_iter()
            .find(|m| system.tools.contains(m.tool()))
    }
}

/// Something a host lacks for what meshctl does on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lack {
    /// `wg` or `wg-quick` (every managed host has the interface).
    WireguardTools,
    /// A WireGuard implementation: the kernel has none and wireguard-go is not there.
    Userspace,
    /// `iptables`/`ip6tables` with its `-save` and `-restore` (only where meshctl manages
    /// chains of that family).
    Iptables(Family),
}

impl Lack {
    /// What is missing, for people.
    pub fn what(self) -> &'static str {
        match self {
            Lack::WireguardTools => "wg and wg-quick",
            Lack::Userspace => "a WireGuard implementation (the kernel has none: wireguard-go)",
            Lack::Iptables(Family::Ipv4) => "iptables, iptables-save and iptables-restore",
            Lack::Iptables(Family::Ipv6) => "ip6tables, ip6tables-save and ip6tables-restore",
        }
    }

    /// The packages that provide it under `m` (Alpine splits ip6tables off iptables).
    pub fn packages(self, m: Manager) -> &'static [&'static str] {
        match (self, m) {
            (Lack::WireguardTools, _) => &["wireguard-tools"],
            (Lack::Userspace, _) => &["wireguard-go"],
            (Lack::Iptables(Family::Ipv6), Manager::Apk) => &["ip6tables"],
            (Lack::Iptables(_), _) => &["iptables"],
        }
    }
}

/// The tools a family's chains are read and written with.
fn iptables_tools(family: Family) -> [String; 3] {
    let t = family.iptables();
    [t.to_owned(), format!("{t}-save"), format!("{t}-restore")]
}

/// What the host lacks for `desired`, in a stable order.
pub fn lacks(desired: &HostState, live: &LiveHost) -> Vec<Lack> {
    let tools = &live.system.tools;
    let has = |t: &str| tools.contains(t);
    let mut out = Vec::new();
    if desired.interface.is_some() {
        if !has("wg") || !has("wg-quick") {
            out.push(Lack::WireguardTools);
        }
        // An interface that is up already runs on something; only a new one needs a kernel
        // module or wireguard-go (wg-quick falls back to it by itself).
        if live.state.interface.is_none() && !live.system.kernel_wireguard && !has("wireguard-go") {
            out.push(Lack::Userspace);
        }
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        let managed = desired.firewall.chains.keys().any(|c| c.family == family)
            || desired.firewall.jumps.iter().any(|j| j.family == family);
        if managed && !iptables_tools(family).iter().all(|t| has(t)) {
            out.push(Lack::Iptables(family));
        }
    }
    out
}

/// A host lacks something and has no package manager meshctl knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this host lacks {}, and has none of the package managers meshctl installs with (apt-get, dnf, apk): install {} by hand (Debian's names), then plan again",
    lacks.iter().map(|l| l.what()).collect::<Vec<_>>().join("; "),
    debian_names(lacks)
)]
pub struct Unavailable {
    /// What it lacks.
    pub lacks: Vec<Lack>,
}

fn debian_names(lacks: &[Lack]) -> String {
    names(lacks, Manager::Apt).join(" ")
}

/// The packages for `lacks` under `m`, each once, in order.
pub fn names(lacks: &[Lack], m: Manager) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in lacks.iter().flat_map(|l| l.packages(m)) {
        if !out.iter().any(|o| o == p) {
            out.push((*p).to_owned());
        }
    }
    out
}

/// What to install on the host for `desired`: `None` when it lacks nothing.
pub fn needed(
    desired: &HostState,
    live: &LiveHost,
) -> Result<Option<(Manager, Vec<String>)>, Unavailable> {
    let lacks = lacks(desired, live);
    if lacks.is_empty() {
        return Ok(None);
    }
    match Manager::of(&live.system) {
        Some(m) => Ok(Some((m, names(&lacks, m)))),
        None => Err(Unavailable { lacks }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::InterfaceName;
    use crate::state::{ChainId, KeyFile, WgInterface};

    fn desired(v4: bool, v6: bool) -> HostState {
        let mut s = HostState {
            interface: Some(WgInterface {
                name: InterfaceName::parse("wg0").unwrap(),
                addresses: Default::default(),
                listen_port: None,
                public_key: None,
                private_key_file: KeyFile {
                    path: "/etc/wireguard/wg0.key".into(),
                },
                fwmark: None,
                peers: Default::default(),
            }),
            ..HostState::default()
        };
        for (on, family) in [(v4, Family::Ipv4), (v6, Family::Ipv6)] {
            if on {
                s.firewall.chains.insert(
                    ChainId {
                        family,
                        table: "filter".into(),
                        chain: "MESHCTL-FORWARD".into(),
                    },
                    vec![],
                );
            }
        }
        s
    }

    fn live(tools: &[&str], kernel: bool) -> LiveHost {
        let mut l = LiveHost::default();
        l.system.tools = tools.iter().map(|t| (*t).to_owned()).collect();
        l.system.kernel_wireguard = kernel;
        l
    }

    const ALL_IPTABLES: &[&str] = &[
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "ip6tables-save",
        "ip6tables-restore",
    ];

    #[test]
    fn a_fresh_debian_vps_needs_the_tools_wireguard_go_and_iptables() {
        let d = desired(true, true);
        let got = needed(&d, &live(&["apt-get", "ip"], false)).unwrap();
        assert_eq!(
            got,
            Some((
                Manager::Apt,
                vec![
                    "wireguard-tools".into(),
                    "wireguard-go".into(),
                    "iptables".into()
                ]
            ))
        );
        // A kernel with WireGuard needs no wireguard-go; Alpine splits ip6tables off.
        let got = needed(&d, &live(&["apk"], true)).unwrap();
        assert_eq!(
            got,
            Some((
                Manager::Apk,
                vec![
                    "wireguard-tools".into(),
                    "iptables".into(),
                    "ip6tables".into()
                ]
            ))
        );
        let got = needed(&d, &live(&["dnf", "wg"], true)).unwrap();
        assert_eq!(
            got,
            Some((
                Manager::Dnf,
                vec!["wireguard-tools".into(), "iptables".into()]
            ))
        );
    }

    #[test]
    fn iptables_only_where_meshctl_manages_chains_of_that_family() {
        let mut tools = vec!["apt-get", "wg", "wg-quick"];
        assert_eq!(
            needed(&desired(false, false), &live(&tools, true)),
            Ok(None)
        );
        let got = needed(&desired(false, true), &live(&tools, true)).unwrap();
        assert_eq!(got, Some((Manager::Apt, vec!["iptables".into()])));
        // ip6tables-restore alone missing is enough.
        tools.extend(ALL_IPTABLES.iter().filter(|t| **t != "ip6tables-restore"));
        assert_eq!(
            lacks(&desired(true, true), &live(&tools, true)),
            vec![Lack::Iptables(Family::Ipv6)]
        );
    }

    #[test]
    fn nothing_to_install_on_a_provisioned_host() {
        let mut tools = vec!["wg", "wg-quick", "wireguard-go"];
        tools.extend(ALL_IPTABLES);
        // No package manager needed when nothing lacks.
        assert_eq!(needed(&desired(true, true), &live(&tools, false)), Ok(None));
        // An interface that exists already runs without wireguard-go or a module.
        let mut l = live(&tools[..2], false);
        l.state.interface = desired(false, false).interface;
        assert_eq!(needed(&desired(false, false), &l), Ok(None));
    }

    #[test]
    fn no_package_manager_names_what_to_install_by_hand() {
        let err = needed(&desired(true, false), &live(&["ip"], false)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("lacks wg and wg-quick; a WireGuard implementation"),
            "{msg}"
        );
        assert!(msg.contains("(apt-get, dnf, apk)"), "{msg}");
        assert!(
            msg.contains("install wireguard-tools wireguard-go iptables by hand"),
            "{msg}"
        );
    }
}
