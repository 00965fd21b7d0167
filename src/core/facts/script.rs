//! The gather script: one POSIX sh program that reads everything meshctl needs to know about a
//! host and prints it as records (see `records`). It runs as root (the caller prefixes `sudo -n`
//! for other logins) and changes nothing on the host: no temporary files, no `-t TABLE` on
//! `iptables-save` (which can make the legacy backend load a table module), no `wg` subcommand
//! that prints a private key.
//!
//! Every value from the spec is shell-quoted, and values that the script builds a path from are
//! also checked here first: a spec item that cannot be gathered safely gets a record with exit
//! status [`RC_INVALID`] instead of a command.

use std::fmt::Write as _;

use super::GatherSpec;
use crate::shell::quote;
use crate::state::Family;

/// Exit status of a record whose item does not exist (a missing sysctl, file or key file).
pub(crate) const RC_ABSENT: i32 = 3;
/// Exit status of a managed file that exists but is not readable.
pub(crate) const RC_UNREADABLE: i32 = 5;
/// Exit status of a managed path that exists but is not a regular file.
pub(crate) const RC_NOT_FILE: i32 = 6;
/// Exit status of a record that was not gathered because its spec item is not acceptable.
pub(crate) const RC_INVALID: i32 = 97;
/// Exit status of the shell when a command is not found.
pub(crate) const RC_NOT_FOUND: i32 = 127;

/// The tools whose presence is reported in `SystemInfo::tools`.
pub(crate) const TOOLS: &[&str] = &[
    "wg",
    "wg-quick",
    "ip",
    "iptables",
    "ip6tables",
    "iptables-save",
    "ip6tables-save",
    "iptables-restore",
    "ip6tables-restore",
    "sysctl",
    "sudo",
    "systemctl",
];

/// The `wg show IF <what>` subcommands gathered. Exactly these: the others (`dump`,
/// `private-key`, `showconf`, `all`) print the private key.
pub(crate) const WG_SHOW: &[&str] = &[
    "public-key",
    "listen-port",
    "peers",
    "allowed-ips",
    "endpoints",
    "persistent-keepalive",
    "fwmark",
];

/// Fixed prologue: helper functions. `r ID CMD...` runs CMD between the record markers and
/// leaves its status in `$m_rc`.
///
/// Commands get stdin from /dev/null one by one (not `exec </dev/null`, which would cut off a
/// script that is itself read from stdin by `sh -s`).
///
/// `m_read` uses `cat`, not the shell's `read`: dash reads a byte at a time, and most
/// `/proc/sys` entries answer a read at a non-zero offset with end-of-file, so dash would see
/// `3` for `32768 60999` (found by experiment).
const PROLOGUE: &str = r#"# meshctl gather: reads only, writes nothing
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL
r() {
  m_id=$1; shift
  printf '@@meshctl begin %s@@\n' "$m_id"
  "$@" </dev/null
  m_rc=$?
  printf '@@meshctl end %s rc=%s@@\n' "$m_id" "$m_rc"
}
m_invalid() { return 97; }
m_os() {
  for m_f in /etc/os-release /usr/lib/os-release; do
    if [ -r "$m_f" ]; then
      while IFS= read -r m_l || [ -n "$m_l" ]; do
        case $m_l in PRETTY_NAME=*) printf '%s\n' "${m_l#PRETTY_NAME=}" ;; esac
      done <"$m_f"
      return 0
    fi
  done
  return 3
}
m_tools() {
  for m_t in "$@"; do
    command -v "$m_t" >/dev/null 2>&1 && printf '%s\n' "$m_t"
  done
  return 0
}
m_read() {
  [ -e "$1" ] || return 3
  cat "$1"
}
m_mode() {
  [ -e "$1" ] || return 3
  stat -c %a "$1"
}
m_file() {
  [ -e "$1" ] || return 3
  [ -f "$1" ] || return 6
  [ -r "$1" ] || return 5
  stat -c %a "$1" || return 4
  m_c=$(sed -e "$m_redact" "$1" && echo x) || return 7
  printf '%s' "${m_c%x}" | base64
}
"#;

/// The sed script that blanks `PrivateKey` / `PresharedKey` values on the host, before the
/// content is encoded and sent. Key names match case-insensitively and with whitespace anywhere
/// inside them (wg's own parser drops all whitespace), wherever they appear in a line (so a
/// commented-out key is blanked too); everything after the `=` is replaced:
/// `PrivateKey = abc` → `PrivateKey = (redacted)`. `PrivateKeyFile=` (a path) is kept. Any
/// other key-shaped token outside a `PublicKey` line is blanked as well.
pub(crate) fn redact_sed() -> String {
    fn pattern(word: &str) -> String {
        let mut p = String::new();
        for c in word.chars() {
            let _ = write!(
                p,
                "[{}{}][[:space:]]*",
                c.to_ascii_uppercase(),
                c.to_ascii_lowercase()
            );
        }
        p
    }
    let mut parts: Vec<String> = ["privatekey", "presharedkey"]
        .iter()
        .map(|w| format!(r"s/\({}\)=.*$/\1= (redacted)/", pattern(w)))
        .collect();
    // A key can hide elsewhere too: `PostUp = echo KEY | wg set %i private-key /dev/stdin`.
    // Anything shaped like a WireGuard key (43 base64 characters and `=`) is blanked, except on
    // `PublicKey` lines, which meshctl compares.
    parts.push(format!(
        r"/^[[:space:]]*{}=/!s|[A-Za-z0-9+/]\{{43\}}=|(redacted)|g",
        pattern("publickey")
    ));
    parts.join(";")
}

/// The `/proc/sys` path of a dotted sysctl key, or `None` when the key is not acceptable.
///
/// Dots separate components, except inside the interface part of the per-interface keys
/// (`net.ipv6.conf.eth0.1.proxy_ndp` → `net/ipv6/conf/eth0.1/proxy_ndp`): there the first
/// three components and the last one are fixed and everything between is the interface name.
/// A key written with slashes (sysctl accepts that form too) is taken as the path itself.
pub(crate) fn sysctl_path(key: &str) -> Option<String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_=+.-/".contains(&b);
    if key.is_empty() || !key.bytes().all(allowed) {
        return None;
    }
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        let dotted: Vec<&str> = key.split('.').collect();
        let per_interface = dotted.len() >= 5
            && dotted[0] == "net"
            && matches!(dotted[1], "ipv4" | "ipv6" | "mpls")
            && matches!(dotted[2], "conf" | "neigh");
        if per_interface {
            let last = dotted.len() - 1;
            let iface = dotted[3..last].join(".");
            crate::names::InterfaceName::parse(&iface).ok()?;
            return Some(format!(
                "/proc/sys/{}/{}/{}/{}/{}",
                dotted[0], dotted[1], dotted[2], iface, dotted[last]
            ));
        }
        dotted
    };
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(format!("/proc/sys/{}", parts.join("/")))
}

/// Whether a managed file path is one the script may read: absolute, no `..`, no control
/// characters.
pub(crate) fn file_path_ok(path: &str) -> bool {
    path.starts_with('/')
        && !path.split('/').any(|c| c == "..")
        && !path.chars().any(char::is_control)
}

fn rec(s: &mut String, id: &str, cmd: &str) {
    let _ = writeln!(s, "r {id} {cmd}");
}

/// Builds the gather script for `spec`. See the module docs; the record ids are the contract
/// with [`super::parse`].
pub(crate) fn build(spec: &GatherSpec) -> String {
    let mut s = String::from(PROLOGUE);
    let _ = writeln!(s, "m_redact={}", quote(&redact_sed()));
    s.push_str("printf '%s\\n' '@@meshctl facts 1@@'\n");

    // system
    rec(&mut s, "os", "m_os");
    rec(&mut s, "systemd", "test -d /run/systemd/system");
    s.push_str("m_systemd=$m_rc\n");
    rec(&mut s, "tools", &format!("m_tools {}", TOOLS.join(" ")));
    s.push_str("if command -v iptables >/dev/null 2>&1; then\n");
    rec(&mut s, "iptables-version", "iptables -V");
    s.push_str("fi\n");
    rec(&mut s, "uid", "id -u");

    // wireguard
    let iface = quote(spec.interface.as_str());
    rec(&mut s, "link", &format!("ip -j addr show dev {iface}"));
    s.push_str("if [ \"$m_rc\" = 0 ]; then\n");
    for what in WG_SHOW {
        rec(
            &mut s,
            &format!("wg.{what}"),
            &format!("wg show {iface} {what}"),
        );
    }
    s.push_str("fi\n");
    if file_path_ok(&spec.key_file) {
        rec(
            &mut s,
            "keyfile",
            &format!("m_mode {}", quote(&spec.key_file)),
        );
    } else {
        rec(&mut s, "keyfile", "m_invalid");
    }

    // routes
    rec(&mut s, "route4", "ip -j -4 route show table all proto 157");
    rec(&mut s, "route6", "ip -j -6 route show table all proto 157");
    rec(&mut s, "rule4", "ip -j -4 rule show");
    rec(&mut s, "rule6", "ip -j -6 rule show");

    // sysctls
    for (i, key) in spec.sysctls.iter().enumerate() {
        match sysctl_path(key) {
            Some(path) => rec(
                &mut s,
                &format!("sysctl.{i}"),
                &format!("m_read {}", quote(&path)),
            ),
            None => rec(&mut s, &format!("sysctl.{i}"), "m_invalid"),
        }
    }

    // firewall: one *-save per family that has chains in the spec
    for family in [Family::Ipv4, Family::Ipv6] {
        if spec.chains.iter().any(|c| c.family == family) {
            rec(
                &mut s,
                super::firewall::record_id(family),
                &format!("{}-save", family.iptables()),
            );
            rec(
                &mut s,
                super::firewall::legacy_record_id(family),
                &format!("m_read {}", super::firewall::legacy_names_path(family)),
            );
        }
    }

    // ndp
    if spec.ndp_range.is_some() || spec.ndp_listed_in.is_some() {
        rec(&mut s, "ndp", "ip -6 neigh show proxy");
    }

    // files
    for (i, path) in spec.files.iter().enumerate() {
        if file_path_ok(path) {
            rec(
                &mut s,
                &format!("file.{i}"),
                &format!("m_file {}", quote(path)),
            );
        } else {
            rec(&mut s, &format!("file.{i}"), "m_invalid");
        }
    }

    // services, only under systemd
    if !spec.services.is_empty() {
        s.push_str("if [ \"$m_systemd\" = 0 ]; then\n");
        for (i, unit) in spec.services.iter().enumerate() {
            rec(
                &mut s,
                &format!("service.{i}"),
                &format!("systemctl is-enabled {}", quote(unit)),
            );
        }
        s.push_str("fi\n");
    }

    // endpoint names
    for (i, name) in spec.resolve.iter().enumerate() {
        rec(
            &mut s,
            &format!("resolve.{i}"),
            &format!("getent ahosts {}", quote(name)),
        );
    }

    s.push_str("printf '%s\\n' '@@meshctl done@@'\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths_keep_dots_in_interface_names() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            sysctl_path("net.ipv6.conf.all.forwarding").unwrap(),
            "/proc/sys/net/ipv6/conf/all/forwarding"
        );
        assert_eq!(
            sysctl_path("net.ipv6.conf.eth0.1.proxy_ndp").unwrap(),
            "/proc/sys/net/ipv6/conf/eth0.1/proxy_ndp"
        );
        assert_eq!(
            sysctl_path("net/ipv6/conf/eth0.1/proxy_ndp").unwrap(),
            "/proc/sys/net/ipv6/conf/eth0.1/proxy_ndp"
        );
        for bad in [
            "",
            "net..x",
            "net/../../etc/shadow",
            "a b",
            "x;id",
            "net.ipv4.'x'",
            "/x",
        ] {
            assert!(sysctl_path(bad).is_none(), "{bad:?} accepted");
        }
    }
}
