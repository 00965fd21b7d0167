//! How each shell command meshctl runs on a host is spelled: one function per command, used by
//! both the boot script (`persist`) and apply's change script (`apply::script`).
//!
//! Both places must do exactly the same thing to the kernel (a route restored at boot is the
//! route apply made, or the next plan sees drift), so the spelling lives here once. Pure: every
//! function returns a command line, with every value shell-quoted; nothing is run here.

use crate::shell::quote;
use crate::state::{Family, JUMP_COMMENT, Jump, NdpProxy, Peer, ROUTE_PROTO, Route, RoutingRule};

/// The family of a route (`ip -4|-6`), from its destination.
pub fn route_family(r: &Route) -> Family {
    if r.destination.addr().is_ipv6() {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

/// `ip -4|-6 route VERB DEST [via GW] dev IF [table T] proto 157`.
fn route(verb: &str, r: &Route) -> String {
    format!(
        "ip {} {}",
        route_family(r).ip_flag(),
        route_words(verb, r, quote)
    )
}

/// `route VERB DEST [via GW] dev IF [table T] proto 157`, each value passed through `word`
/// (shell quoting for a command line, none for a batch line).
fn route_words(verb: &str, r: &Route, word: fn(&str) -> String) -> String {
    let via = r
        .via
        .map(|v| format!(" via {}", word(&v.to_string())))
        .unwrap_or_default();
    let table = r.table.map(|t| format!(" table {t}")).unwrap_or_default();
    format!(
        "route {verb} {}{via} dev {}{table} proto {ROUTE_PROTO}",
        word(&r.destination.to_string()),
        word(r.device.as_str())
    )
}

/// [`route_replace`] as a line of `ip -4|-6 -batch` (its family's; no quotes: an address and
/// a validated interface name hold no character the batch reader would split or interpret).
pub fn route_replace_batch(r: &Route) -> String {
    route_words("replace", r, str::to_owned)
}

/// A line of `ip -4|-6 -batch` adding the rule (its family's). Without [`rule_add`]'s
/// `del` first: the batch runs only where the gather, under the lock, found the rule absent,
/// and a `del` of an absent rule would end the batch. Should the add fail anyway, the step
/// runs again as [`rule_add`].
pub fn rule_add_batch(r: &RoutingRule) -> String {
    format!("rule add {}", r.selector())
}

/// Adds or updates a route meshctl owns (`replace` is idempotent, so boot and apply share it).
pub fn route_replace(r: &Route) -> String {
    route("replace", r)
}

/// Deletes a route meshctl owns.
pub fn route_del(r: &Route) -> String {
    route("del", r)
}

/// `ip -4|-6 rule VERB SELECTOR`: the verb is spliced in here only, so no caller edits a
/// template string.
fn rule(verb: &str, r: &RoutingRule) -> String {
    format!("ip {} rule {verb} {}", r.family.ip_flag(), r.selector())
}

/// Adds a policy rule, replacing one at the same priority first: `ip rule` has no `replace`,
/// and a second `add` would make a duplicate.
pub fn rule_add(r: &RoutingRule) -> String {
    format!("{} 2>/dev/null || true; {}", rule("del", r), rule("add", r))
}

/// Deletes a policy rule meshctl owns.
pub fn rule_del(r: &RoutingRule) -> String {
    rule("del", r)
}

/// `iptables -w -t TABLE OP FROM[ POSITION] -m comment --comment meshctl -j TO`.
fn jump(j: &Jump, op: &str, position: &str) -> String {
    format!(
        "{} -w -t {} {op} {}{position} -m comment --comment {JUMP_COMMENT} -j {}",
        j.family.iptables(),
        quote(&j.table),
        quote(&j.from),
        quote(&j.to)
    )
}

/// Inserts the tagged jump at the top of its built-in chain unless it is already there (`-C`
/// first: inserting twice would make two jumps, and the second removal would miss one).
pub fn jump_ensure(j: &Jump) -> String {
    format!(
        "{} 2>/dev/null || {}",
        jump(j, "-C", ""),
        jump(j, "-I", " 1")
    )
}

/// The tagged jump as a line of a `*-restore --noflush` input, inserted at the top of its
/// built-in chain (for a jump the live state lacks: a restore has no `-C`).
pub fn jump_insert_restore_line(j: &Jump) -> String {
    format!(
        "-I {} 1 -m comment --comment {JUMP_COMMENT} -j {}",
        j.from, j.to
    )
}

/// Deletes the tagged jump.
pub fn jump_del(j: &Jump) -> String {
    jump(j, "-D", "")
}

/// `ip -6 neigh VERB proxy ADDR dev IF`.
fn ndp_proxy(verb: &str, n: &NdpProxy) -> String {
    format!(
        "ip -6 neigh {verb} proxy {} dev {}",
        quote(&n.address.to_string()),
        quote(n.device.as_str())
    )
}

/// Adds (or keeps) an NDP proxy entry.
pub fn ndp_proxy_replace(n: &NdpProxy) -> String {
    ndp_proxy("replace", n)
}

/// [`ndp_proxy_replace`] as a line of `ip -6 -batch` (no quotes: an address and a validated
/// interface name hold no character the batch reader would split or interpret).
pub fn ndp_proxy_replace_batch(n: &NdpProxy) -> String {
    format!(
        "neigh replace proxy {} dev {}",
        n.address,
        n.device.as_str()
    )
}

/// The address of an NDP proxy entry that a line written by [`ndp_proxy_replace`] (in meshctl's
/// boot script) adds; `None` for any other line. The reading lives beside the spelling, so the
/// two cannot drift apart.
pub fn ndp_proxy_replaced_address(line: &str) -> Option<std::net::Ipv6Addr> {
    let rest = line.strip_prefix("ip -6 neigh replace proxy ")?;
    let word = rest.split_whitespace().next()?;
    word.trim_matches('\'').parse().ok()
}

/// Deletes an NDP proxy entry.
pub fn ndp_proxy_del(n: &NdpProxy) -> String {
    ndp_proxy("del", n)
}

/// A sysctl key the way `sysctl` reads it: dotted, except when a per-interface key names an
/// interface with a dot in it (a VLAN such as `eth0.100`), which `sysctl` would read as two path
/// components (`eth0/100`). Such a key is written with slashes
/// (`net/ipv6/conf/eth0.100/proxy_ndp`), a form `sysctl -w` and `sysctl -p FILE` both accept.
/// The first three components and the last one of a per-interface key are fixed; everything
/// between is the interface name (as the gather script reads it, see `facts`).
pub fn sysctl_key(key: &str) -> String {
    if key.contains('/') {
        return key.to_owned();
    }
    let dotted: Vec<&str> = key.split('.').collect();
    let per_interface = dotted.len() >= 5
        && dotted[0] == "net"
        && matches!(dotted[1], "ipv4" | "ipv6" | "mpls")
        && matches!(dotted[2], "conf" | "neigh");
    if !per_interface || dotted.len() == 5 {
        return key.to_owned();
    }
    let last = dotted.len() - 1;
    format!(
        "{}/{}/{}/{}/{}",
        dotted[0],
        dotted[1],
        dotted[2],
        dotted[3..last].join("."),
        dotted[last]
    )
}

/// Sets one sysctl now (the drop-in file persists it).
pub fn sysctl_set(key: &str, value: &str) -> String {
    sysctls_set(&[(key, value)])
}

/// Sets sysctls now, in one `sysctl` (it goes on past a key it cannot set, and then exits
/// non-zero).
pub fn sysctls_set(settings: &[(&str, &str)]) -> String {
    let args: Vec<String> = settings
        .iter()
        .map(|(key, value)| quote(&format!("{}={value}", sysctl_key(key))))
        .collect();
    format!("sysctl -q -w {}", args.join(" "))
}

/// Loads every sysctl of a drop-in file (at boot).
pub fn sysctl_load(path: &str) -> String {
    format!("sysctl -q -p {}", quote(path))
}

/// `ip address VERB ADDR dev IF`.
fn address(verb: &str, interface: &str, address: &ipnet::IpNet) -> String {
    format!(
        "ip address {verb} {} dev {}",
        quote(&address.to_string()),
        quote(interface)
    )
}

/// Adds (or keeps) an address on an interface.
pub fn address_replace(interface: &str, a: &ipnet::IpNet) -> String {
    address("replace", interface, a)
}

/// [`address_replace`] as a line of `ip -batch` (no family: `ip` takes it from the address;
/// no quotes, as in [`route_replace_batch`]).
pub fn address_replace_batch(interface: &str, a: &ipnet::IpNet) -> String {
    format!("address replace {a} dev {interface}")
}

/// Removes an address from an interface.
pub fn address_del(interface: &str, a: &ipnet::IpNet) -> String {
    address("del", interface, a)
}

/// Brings an interface up from its wg-quick config (wg-quick reports on stderr: keep it).
pub fn wg_quick_up(interface: &str) -> String {
    format!("wg-quick up {} 2>&1", quote(interface))
}

/// Brings a WireGuard interface up as `wg-quick up` does for meshctl's config, without
/// wg-quick (a bash script of ~15 processes): the link — kernel WireGuard, else, where the
/// module is not loaded, the userspace implementation wg-quick would start
/// (`$WG_QUICK_USERSPACE_IMPLEMENTATION`, default `wireguard-go`) —, its private key from
/// `key_file` (the config's first `PostUp`), the MTU, up. A failure after the link exists
/// deletes it again, as wg-quick's trap does. Addresses, port, fwmark and peers are set by the
/// steps after it, with the same spellings as everywhere else.
pub fn interface_up(interface: &str, key_file: &str, mtu: u16) -> String {
    let i = quote(interface);
    format!(
        "{{ ip link add dev {i} type wireguard 2>/dev/null || \
         {{ [ ! -e /sys/module/wireguard ] && m_u=${{WG_QUICK_USERSPACE_IMPLEMENTATION:-wireguard-go}} && \
         command -v \"$m_u\" >/dev/null 2>&1 && \"$m_u\" {i} 2>&1; }} || \
         ip link add dev {i} type wireguard; }} && \
         {{ wg set {i} private-key {} && ip link set dev {i} mtu {mtu} up || {{ ip link del dev {i}; false; }}; }}",
        quote(key_file)
    )
}

/// The setting of a peer's allowed IPs, endpoint and keepalive, one of `wg set IF SETTING...`
/// (see [`wg_set`]); the key is passed apart from `peer` because a desired peer may not know
/// it yet, and such a peer cannot be set at all.
pub fn wg_peer_setting(public_key: &str, peer: &Peer) -> String {
    // The keepalive is always spelled (`0` turns it off), so a removed keepalive goes away.
    let allowed: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
    let endpoint = peer
        .endpoint
        .as_ref()
        .map(|e| format!(" endpoint {}", quote(e)))
        .unwrap_or_default();
    // The pair's preshared key is loaded from its file, never given on a command line.
    let psk = match &peer.preshared_key {
        Some(crate::state::Psk::File(path)) => format!(" preshared-key {}", quote(path)),
        _ => " preshared-key /dev/null".to_owned(),
    };
    format!(
        "peer {} allowed-ips {}{endpoint} persistent-keepalive {}{psk}",
        quote(public_key),
        quote(&allowed.join(",")),
        peer.persistent_keepalive.unwrap_or(0)
    )
}

/// `wg set IF SETTINGS`: one setting or several (of [`wg_peer_setting`], [`wg_psk_setting`],
/// [`wg_remove_peer_setting`], [`wg_listen_port_setting`], [`wg_fwmark_setting`]) in one
/// process, applied in their order.
pub fn wg_set(interface: &str, settings: &[String]) -> String {
    format!("wg set {} {}", quote(interface), settings.join(" "))
}

/// A rotation's switch: the next key replaces the key file (a rename: the file is whole at
/// every moment) and the interface takes it.
pub fn key_switch(interface: &str, path: &str) -> String {
    format!(
        "mv -f {} {p} && wg set {} private-key {p}",
        quote(&crate::desired::next_key_path(path)),
        quote(interface),
        p = quote(path)
    )
}

/// The setting loading a peer's preshared key from its file (`None`: `/dev/null`, none),
/// leaving the rest of the peer and its session alone.
pub fn wg_psk_setting(public_key: &str, path: Option<&str>) -> String {
    format!(
        "peer {} preshared-key {}",
        quote(public_key),
        quote(path.unwrap_or("/dev/null"))
    )
}

/// The directory of a preshared key file made 0700 (it holds secrets only): `mkdir -p` and
/// `chmod`, since an existing directory keeps its mode.
pub fn psk_dir(path: &str) -> String {
    let dir = path.rsplit_once('/').map_or("/", |(d, _)| d);
    format!("mkdir -p -m 700 {0} && chmod 700 {0}", quote(dir))
}

/// Makes a new preshared key with `wg genpsk` into `path` (0600, atomically: a temporary file
/// beside it, renamed), under the caller's `umask 077`. The key is never printed.
pub fn psk_generate(path: &str) -> String {
    let p = quote(path);
    let t = quote(&format!("{path}.meshctl-new"));
    format!(
        "{} && wg genpsk > {t} && chmod 600 {t} && mv -f {t} {p} || {{ rm -f {t}; false; }}",
        psk_dir(path)
    )
}

/// The setting removing a peer by its public key.
pub fn wg_remove_peer_setting(public_key: &str) -> String {
    format!("peer {} remove", quote(public_key))
}

/// The setting of the interface's UDP port.
pub fn wg_listen_port_setting(port: u16) -> String {
    format!("listen-port {port}")
}

/// The setting of the interface's firewall mark; `None` turns it off.
pub fn wg_fwmark_setting(fwmark: Option<u32>) -> String {
    format!(
        "fwmark {}",
        fwmark.map_or("off".to_owned(), |m| m.to_string())
    )
}

/// Restores meshctl's chains of `family` from `file` without touching any other chain (at boot:
/// the file was checked when apply wrote it).
pub fn chains_restore(family: Family, file: &str) -> String {
    format!("{}-restore -w --noflush {}", family.iptables(), quote(file))
}

/// Restores meshctl's chains of `family` from the rules on stdin.
pub fn chains_restore_stdin(family: Family) -> String {
    format!("{}-restore -w --noflush", family.iptables())
}

/// Restores meshctl's chains of `family` from `file` after a dry run (`--test`), so a file the
/// kernel refuses leaves the chains as they were.
pub fn chains_restore_checked(family: Family, file: &str) -> String {
    let cmd = format!("{}-restore", family.iptables());
    let file = quote(file);
    format!("{cmd} -w --test --noflush {file} && {cmd} -w --noflush {file}")
}

/// Flushes and deletes one of meshctl's chains (its jump must be gone first).
pub fn chain_delete(family: Family, table: &str, chain: &str) -> String {
    let cmd = family.iptables();
    format!(
        "{cmd} -w -t {t} -F {c} && {cmd} -w -t {t} -X {c}",
        t = quote(table),
        c = quote(chain)
    )
}

/// Makes the private key file private again.
pub fn key_chmod(path: &str) -> String {
    format!("chmod 600 {}", quote(path))
}

/// Removes a file meshctl no longer needs.
pub fn file_remove(path: &str) -> String {
    format!("rm -f {}", quote(path))
}

/// How long an install waits for a package manager lock another process holds (an unattended
/// upgrade on a VPS that just booted), in seconds.
pub const PACKAGE_LOCK_WAIT_SECS: u32 = 600;

/// Installs packages non-interactively with `manager`, waiting for its lock instead of
/// failing. apt refreshes its lists first (a fresh image's are often empty or stale) and
/// installs no recommends; `DEBIAN_FRONTEND` is set here, inside the script, because `sudo`
/// drops the caller's environment.
pub fn install_packages(manager: crate::packages::Manager, packages: &[String]) -> String {
    use crate::packages::Manager;
    let names: Vec<String> = packages.iter().map(|p| quote(p)).collect();
    let names = names.join(" ");
    let wait = PACKAGE_LOCK_WAIT_SECS;
    match manager {
        // `DPkg::Lock::Timeout` makes `install` wait for dpkg's lock, but `update` fails at
        // once on the lists' lock (apt 2.6, checked with a held lock): it is tried again every
        // 5 s for as long.
        Manager::Apt => format!(
            "DEBIAN_FRONTEND=noninteractive; export DEBIAN_FRONTEND; \
             m_ok=1 m_w=0; while :; do if apt-get -q update; then m_ok=0; break; fi; \
             [ \"$m_w\" -lt {wait} ] || break; sleep 5; m_w=$((m_w + 5)); done; \
             [ \"$m_ok\" = 0 ] && apt-get -q -y -o DPkg::Lock::Timeout={wait} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install --no-install-recommends {names}"
        ),
        // dnf waits for another dnf by itself.
        Manager::Dnf => format!("dnf -q -y install {names}"),
        Manager::Apk => format!("apk add --no-progress --wait {wait} {names}"),
    }
}

/// Starts a systemd unit; when it fails, the unit's last log lines say why (systemctl itself
/// only points at the journal).
pub fn service_start(unit: &str) -> String {
    let u = quote(unit);
    format!(
        "systemctl start {u} 2>&1 || {{ journalctl -u {u} -n 5 --no-pager -o cat 2>&1; false; }}"
    )
}

/// Takes an interface that is up without its unit down (wg-quick's way, or by deleting the
/// link when wg-quick cannot), then starts the unit, which owns it from then on.
pub fn service_take_over(unit: &str, interface: &str) -> String {
    let i = quote(interface);
    format!(
        "{{ wg-quick down {i} 2>&1 || ip link del {i}; }} && {{ {}; }}",
        service_start(unit)
    )
}

/// Stops a systemd unit (a guarded host's rollback of an interface its unit brought up).
pub fn service_stop(unit: &str) -> String {
    format!("systemctl stop {} 2>/dev/null", quote(unit))
}

/// Enables a systemd unit at boot (systemctl reports on stderr: keep it).
pub fn service_enable(unit: &str) -> String {
    format!("systemctl enable {} 2>&1", quote(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ndp_entry_spelled_here_is_read_back_here() {
        let n = NdpProxy {
            address: "2001:db8:10:0:100::a".parse().unwrap(),
            device: crate::names::InterfaceName::parse("eth0").unwrap(),
        };
        assert_eq!(
            ndp_proxy_replaced_address(&ndp_proxy_replace(&n)),
            Some(n.address)
        );
        assert_eq!(ndp_proxy_replaced_address(&ndp_proxy_del(&n)), None);
    }
    use crate::names::InterfaceName;
    use crate::state::RuleKind;

    #[test]
    fn rule_add_deletes_first() {
        let r = RoutingRule {
            family: Family::Ipv6,
            priority: 32761,
            kind: RuleKind::TunnelUnlessMarked {
                fwmark: 51820,
                table: 51820,
            },
        };
        assert_eq!(
            rule_add(&r),
            "ip -6 rule del not fwmark 51820 table 51820 priority 32761 protocol 157 2>/dev/null || true; \
             ip -6 rule add not fwmark 51820 table 51820 priority 32761 protocol 157"
        );
        assert_eq!(
            rule_del(&r),
            "ip -6 rule del not fwmark 51820 table 51820 priority 32761 protocol 157"
        );
    }

    #[test]
    fn route_spells_every_part() {
        let r = Route {
            destination: "10.1.0.0/16".parse().unwrap(),
            device: InterfaceName::parse("wg0").unwrap(),
            via: Some("10.8.0.2".parse().unwrap()),
            table: Some(7),
        };
        assert_eq!(
            route_replace(&r),
            "ip -4 route replace 10.1.0.0/16 via 10.8.0.2 dev wg0 table 7 proto 157"
        );
        assert_eq!(
            route_del(&r),
            "ip -4 route del 10.1.0.0/16 via 10.8.0.2 dev wg0 table 7 proto 157"
        );
    }

    #[test]
    fn installs_are_non_interactive_and_wait_for_the_lock() {
        use crate::packages::Manager;
        let p = vec!["wireguard-tools".to_owned(), "iptables".to_owned()];
        let apt = install_packages(Manager::Apt, &p);
        assert!(apt.starts_with("DEBIAN_FRONTEND=noninteractive; export DEBIAN_FRONTEND; "));
        assert!(apt.contains("-o DPkg::Lock::Timeout=600 "));
        assert!(apt.ends_with("install --no-install-recommends wireguard-tools iptables"));
        assert_eq!(
            install_packages(Manager::Dnf, &p),
            "dnf -q -y install wireguard-tools iptables"
        );
        assert_eq!(
            install_packages(Manager::Apk, &["a b".to_owned()]),
            "apk add --no-progress --wait 600 'a b'"
        );
    }

    /// Runs the apt install through the real `sh` with `apt-get` (a script on PATH: dash takes
    /// no `-` in a function name) and `sleep` as stand-ins: `update` fails `busy` times (its
    /// lists' lock held) and then succeeds.
    fn apt_with_busy_update(busy: u32) -> (bool, String) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("apt-get");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$*\" >> log\ncase $* in *update*) n=$(($(cat n 2>/dev/null || echo 0) + 1)); echo $n > n; [ $n -gt {busy} ] ;; esac\n"),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = format!(
            "PATH={}:$PATH\nsleep() {{ :; }}\n{}",
            dir.path().display(),
            install_packages(
                crate::packages::Manager::Apt,
                &["wireguard-tools".to_owned()]
            )
        );
        let ok = std::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(dir.path())
            .status()
            .unwrap()
            .success();
        (
            ok,
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default(),
        )
    }

    #[test]
    fn apt_update_waits_for_the_lists_lock_and_gives_up_after_the_wait() {
        // Busy twice: two retries, then the install.
        let (ok, log) = apt_with_busy_update(2);
        assert!(ok, "{log}");
        assert_eq!(log.lines().filter(|l| l.ends_with("update")).count(), 3);
        assert!(log.lines().last().unwrap().contains("install"));
        // Busy for longer than the wait: no install, the step fails.
        let (ok, log) = apt_with_busy_update(10_000);
        assert!(!ok);
        assert!(!log.contains("install"));
        let tries = log.lines().count() as u32;
        assert_eq!(tries, PACKAGE_LOCK_WAIT_SECS / 5 + 1);
    }

    #[test]
    fn values_are_quoted() {
        assert_eq!(sysctl_set("net.x", "1"), "sysctl -q -w 'net.x=1'");
        assert_eq!(key_chmod("/a b"), "chmod 600 '/a b'");
    }

    #[test]
    fn sysctl_keys_of_dotted_interfaces_are_written_with_slashes() {
        assert_eq!(
            sysctl_set("net.ipv6.conf.eth0.100.proxy_ndp", "1"),
            "sysctl -q -w 'net/ipv6/conf/eth0.100/proxy_ndp=1'"
        );
        assert_eq!(
            sysctl_key("net.ipv4.conf.br0.10.20.forwarding"),
            "net/ipv4/conf/br0.10.20/forwarding"
        );
        // Keys whose interface has no dot, and keys that are not per interface, stay dotted.
        assert_eq!(
            sysctl_set("net.ipv6.conf.eth0.proxy_ndp", "1"),
            "sysctl -q -w 'net.ipv6.conf.eth0.proxy_ndp=1'"
        );
        assert_eq!(sysctl_key("net.ipv4.ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(
            sysctl_key("net.ipv6.conf.all.forwarding"),
            "net.ipv6.conf.all.forwarding"
        );
        assert_eq!(
            sysctl_key("net.netfilter.nf_conntrack_udp_timeout"),
            "net.netfilter.nf_conntrack_udp_timeout"
        );
        // Already slashed: taken as it is.
        assert_eq!(
            sysctl_key("net/ipv6/conf/eth0.100/proxy_ndp"),
            "net/ipv6/conf/eth0.100/proxy_ndp"
        );
    }
}
