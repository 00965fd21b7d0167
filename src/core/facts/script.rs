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

/// Fixed prologue: helper functions. `r ID CMD...` runs CMD between the record markers and
/// leaves its status in `$m_rc`.
///
/// Commands get stdin from /dev/null one by one (not `exec </dev/null`, which would cut off a
/// script that is itself read from stdin by `sh -s`).
///
/// Few processes (the gather's host-side cost is mostly `fork`+`exec`): one `grep` reads every
/// `/proc` file (`m_proc`), not the shell's `read`: dash reads a byte at a time, and most
/// `/proc/sys` entries answer a read at a non-zero offset with end-of-file, so dash would see
/// `3` for `32768 60999` (found by experiment). One `ip -j -b` per family (`m_ipb`), one
/// `wg show IF` for the seven `wg.*` records (`m_wg`: the pretty form with keys hidden, of which
/// only the public fields are printed), one `stat` for every mode and one `tail`, `sed` and
/// `base64` for every managed file's content (`m_files`); the records keep their ids and forms.
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
m_nl='
'
m_tab='	'
m_uid() {
  while IFS= read -r m_l; do
    case $m_l in Uid:*) set -f; set -- $m_l; set +f; printf '%s\n' "$3"; return 0 ;; esac
  done </proc/self/status
  return 1
}
m_proc() {
  m_ex=
  m_n=0
  for m_a do
    m_n=$((m_n + 1))
    if [ $((m_n % 2)) = 0 ] && [ -e "$m_a" ]; then m_ex="$m_ex $m_a"; fi
  done
  m_out= m_grc=0
  set -f
  if [ -n "$m_ex" ]; then m_out=$(grep -H '' $m_ex </dev/null); m_grc=$?; fi
  while [ $# -ge 2 ]; do
    printf '@@meshctl begin %s@@\n' "$1"
    if [ ! -e "$2" ]; then m_rc=3
    elif [ "$m_grc" -gt 1 ]; then m_rc=$m_grc
    else
      m_rc=0
      IFS=$m_nl
      for m_l in $m_out; do
        case $m_l in "$2":*) printf '%s\n' "${m_l#"$2":}" ;; esac
      done
      unset IFS
    fi
    printf '@@meshctl end %s rc=%s@@\n' "$1" "$m_rc"
    shift 2
  done
  set +f
}
m_ipb() {
  m_ids=$2
  m_out=$(ip -j "$1" -force -batch - <<EOF
$3
EOF
)
  m_irc=$?
  set -f
  IFS=$m_nl
  set -- $m_out
  unset IFS
  m_n=0
  for m_id in $m_ids; do m_n=$((m_n + 1)); done
  [ "$m_irc" = 0 ] && [ "$#" != "$m_n" ] && m_irc=98
  for m_id in $m_ids; do
    printf '@@meshctl begin %s@@\n' "$m_id"
    [ "$m_irc" = 0 ] && printf '%s\n' "$1" && shift
    printf '@@meshctl end %s rc=%s@@\n' "$m_id" "$m_irc"
  done
  set +f
}
m_wgpeer() {
  [ -n "$m_cur" ] || return 0
  m_peers=$m_peers$m_cur$m_nl
  m_aips=$m_aips$m_cur$m_tab$m_ai$m_nl
  m_eps=$m_eps$m_cur$m_tab${m_ep:-(none)}$m_nl
  m_kas=$m_kas$m_cur$m_tab${m_ka:-off}$m_nl
}
m_wgrec() {
  printf '@@meshctl begin wg.%s@@\n' "$1"
  [ "$m_wrc" = 0 ] && printf '%s' "$2"
  printf '@@meshctl end wg.%s rc=%s@@\n' "$1" "$m_wrc"
}
m_wg() {
  m_out=$(WG_HIDE_KEYS=always WG_COLOR_MODE=never wg show "$1" </dev/null)
  m_wrc=$?
  m_pk='(none)' m_lp=0 m_fw=off m_peers= m_aips= m_eps= m_kas= m_cur=
  set -f
  IFS=$m_nl
  for m_l in $m_out; do
    m_v=${m_l#*: }
    case $m_l in
      'peer: '*) m_wgpeer; m_cur=$m_v m_ai='(none)' m_ep= m_ka= ;;
      '  public key: '*) m_pk=$m_v ;;
      '  listening port: '*) m_lp=$m_v ;;
      '  fwmark: '*) m_fw=$m_v ;;
      '  endpoint: '*) m_ep=$m_v ;;
      '  allowed ips: '*)
        m_ai=
        while :; do
          case $m_v in
            *', '*) m_ai="$m_ai${m_v%%, *} "; m_v=${m_v#*, } ;;
            *) m_ai=$m_ai$m_v; break ;;
          esac
        done ;;
      '  persistent keepalive: every '*)
        m_v="${m_v#every }, " m_ka=0
        while [ -n "$m_v" ]; do
          m_p=${m_v%%, *}; m_v=${m_v#*, }
          case ${m_p#* } in
            year*) m_k=31536000 ;; day*) m_k=86400 ;; hour*) m_k=3600 ;;
            minute*) m_k=60 ;; second*) m_k=1 ;; *) m_k=x ;;
          esac
          case ${m_p%% *}$m_k in *[!0-9]*) m_ka=?; break ;; esac
          m_ka=$((m_ka + ${m_p%% *} * m_k))
        done ;;
    esac
  done
  unset IFS
  set +f
  m_wgpeer
  m_wgrec public-key "$m_pk$m_nl"
  m_wgrec listen-port "$m_lp$m_nl"
  m_wgrec fwmark "$m_fw$m_nl"
  m_wgrec peers "$m_peers"
  m_wgrec allowed-ips "$m_aips"
  m_wgrec endpoints "$m_eps"
  m_wgrec persistent-keepalive "$m_kas"
}
m_stat() {
  m_mode= m_type=
  set -f
  IFS=$m_nl
  for m_l in $m_st; do
    m_r=${m_l#* }
    if [ "${m_r#* }" = "$1" ]; then m_mode=${m_l%% *} m_type=${m_r%% *}; break; fi
  done
  unset IFS
  set +f
}
m_files() {
  m_st=$(stat -L -c '%a %f %n' -- "$@" 2>/dev/null </dev/null)
  if [ -n "$1" ]; then
    m_stat "$1"
    printf '@@meshctl begin keyfile@@\n'
    if [ -n "$m_mode" ]; then printf '%s\n' "$m_mode"; m_rc=0; else m_rc=3; fi
    printf '@@meshctl end keyfile rc=%s@@\n' "$m_rc"
  fi
  shift
  m_n=$# m_ci=
  while [ "$m_n" -gt 0 ]; do
    m_i=$1 m_f=$2
    shift 2
    m_n=$((m_n - 2))
    m_stat "$m_f"
    printf '@@meshctl begin file.%s@@\n' "$m_i"
    if [ -z "$m_mode" ]; then m_rc=3
    elif case $m_type in 8???) false ;; *) true ;; esac; then m_rc=6
    elif [ ! -r "$m_f" ]; then m_rc=5
    else
      printf '%s\n' "$m_mode"
      m_rc=0
      if [ -s "$m_f" ]; then set -- "$@" "$m_f"; m_ci="$m_ci $m_i"; fi
    fi
    printf '@@meshctl end file.%s rc=%s@@\n' "$m_i" "$m_rc"
  done
  printf '@@meshctl begin content@@\n'
  printf 'files%s\n' "$m_ci"
  m_rc=0
  if [ "$#" -gt 0 ]; then
    { tail -q -c 1 -- "$@"; sed -s -e "$m_redact" -e 's/^/ /' -e '1i\' -e '-' -- "$@"; } </dev/null | base64
    m_rc=$?
  fi
  printf '@@meshctl end content rc=%s@@\n' "$m_rc"
}
"#;

/// The preshared key helpers, added only when the spec names preshared key files.
///
/// `m_psk IF KEY PATH ...`: one `wg show IF preshared-keys`, read into the shell and never
/// printed: for every live peer `KEY<TAB>none` or `KEY<TAB>set`, then `KEY<TAB>same` for each
/// spec peer whose live key equals its file's content (read with the shell's own `read`, no
/// process). `m_pskf PATH ...`: one `stat` and one `sha256sum` over the files that exist.
const PSK_PROLOGUE: &str = r#"m_psk() {
  m_if=$1; shift
  m_out=$(wg show "$m_if" preshared-keys </dev/null 2>/dev/null)
  m_prc=$?
  printf '@@meshctl begin psk.live@@\n'
  if [ "$m_prc" = 0 ]; then
    set -f
    IFS=$m_nl
    for m_l in $m_out; do
      case $m_l in
        *"$m_tab(none)") printf '%s\tnone\n' "${m_l%%"$m_tab"*}" ;;
        *"$m_tab"*) printf '%s\tset\n' "${m_l%%"$m_tab"*}" ;;
      esac
    done
    unset IFS
    set +f
    while [ $# -ge 2 ]; do
      m_k=$1 m_f=$2
      shift 2
      case $m_out in *"$m_k$m_tab"*) ;; *) continue ;; esac
      m_v=${m_out#*"$m_k$m_tab"}
      m_v=${m_v%%"$m_nl"*}
      m_c=
      [ -r "$m_f" ] && IFS= read -r m_c <"$m_f"
      if [ -n "$m_c" ] && [ "$m_c" = "$m_v" ]; then printf '%s\tsame\n' "$m_k"; fi
    done
  fi
  printf '@@meshctl end psk.live rc=%s@@\n' "$m_prc"
  m_out= m_v= m_c=
}
m_pskf() {
  m_ex=
  for m_f do
    if [ -e "$m_f" ]; then m_ex=$m_ex$m_f$m_nl; fi
  done
  set -f
  IFS=$m_nl
  for m_w in modes sha; do
    printf '@@meshctl begin psk.%s@@\n' "$m_w"
    m_rc=0
    if [ -n "$m_ex" ]; then
      case $m_w in
        modes) stat -L -c '%a %n' -- $m_ex </dev/null ;;
        sha) sha256sum -- $m_ex </dev/null ;;
      esac
      m_rc=$?
    fi
    printf '@@meshctl end psk.%s rc=%s@@\n' "$m_w" "$m_rc"
  done
  unset IFS
  set +f
}
"#;

/// The sed script that blanks `PrivateKey` / `PresharedKey` values on the host, before the
/// content is encoded and sent. Key names match case-insensitively and with whitespace anywhere
/// inside them (wg's own parser drops all whitespace), wherever they appear in a line (so a
/// commented-out key is blanked too); everything after the `=` is replaced:
/// `PrivateKey = abc` → `PrivateKey = (redacted)`. `PrivateKeyFile=` (a path) is kept. Any
/// other key-shaped token outside a `PublicKey` line (or meshctl's own line loading a peer's
/// preshared key from its file, which names the peer's public key) is blanked as well.
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
    // meshctl's own `PostUp = wg set %i peer KEY preshared-key /etc/wireguard/psk/NAME.psk`
    // names a peer's public key (exactly that form: the preshared key comes from a file of
    // meshctl's, so nothing else on such a line can be a secret).
    parts.push(format!(
        r"/^[[:space:]]*{}=/!{{/^PostUp = wg set %i peer [A-Za-z0-9+\/]\{{43\}}= preshared-key {}\/[a-z0-9-]*\.psk$/!s|[A-Za-z0-9+/]\{{43\}}=|(redacted)|g}}",
        pattern("publickey"),
        crate::psk::DIR.replace('/', r"\/")
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
    rec(&mut s, "uid", "m_uid");

    // wireguard: the seven `wg.*` records from one `wg show IF` (its pretty form, with keys
    // hidden; `m_wg` prints only the fields below, never the `private key:` line)
    let iface = quote(spec.interface.as_str());
    // Preshared keys by file path: only paths meshctl makes (checked like managed files).
    let psks: Vec<&(Option<crate::names::WgKey>, String)> =
        spec.psks.iter().filter(|(_, p)| file_path_ok(p)).collect();
    if !psks.is_empty() {
        s.push_str(PSK_PROLOGUE);
    }
    rec(&mut s, "link", &format!("ip -j addr show dev {iface}"));
    s.push_str("if [ \"$m_rc\" = 0 ]; then\n");
    let _ = writeln!(s, "m_wg {iface}");
    if !psks.is_empty() {
        let pairs: Vec<String> = psks
            .iter()
            .filter_map(|(k, p)| {
                k.as_ref()
                    .map(|k| format!("{} {}", quote(k.as_str()), quote(p)))
            })
            .collect();
        let _ = writeln!(s, "m_psk {iface} {}", pairs.join(" "));
    }
    s.push_str("fi\n");
    if !psks.is_empty() {
        let paths: Vec<String> = psks.iter().map(|(_, p)| quote(p)).collect();
        let _ = writeln!(s, "m_pskf {}", paths.join(" "));
    }

    // routes and rules: one `ip -j -b` per family
    for (fam, n) in [("-4", "4"), ("-6", "6")] {
        let _ = writeln!(
            s,
            "m_ipb {fam} 'route{n} rule{n}' 'route show table all proto 157\nrule show'"
        );
    }

    // sysctls and the legacy table names: one `grep` over /proc
    let mut proc_args: Vec<String> = Vec::new();
    for (i, key) in spec.sysctls.iter().enumerate() {
        match sysctl_path(key) {
            Some(path) => {
                proc_args.push(format!("sysctl.{i}"));
                proc_args.push(path);
            }
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
            proc_args.push(super::firewall::legacy_record_id(family).to_owned());
            proc_args.push(super::firewall::legacy_names_path(family).to_owned());
        }
    }
    if !proc_args.is_empty() {
        let quoted: Vec<String> = proc_args.iter().map(|a| quote(a)).collect();
        let _ = writeln!(s, "m_proc {}", quoted.join(" "));
    }

    // ndp
    if spec.ndp_range.is_some() || spec.ndp_listed_in.is_some() {
        rec(&mut s, "ndp", "ip -6 neigh show proxy");
    }

    // the key file's mode and the managed files: one `stat`, one `sed`, one `base64`
    let mut files_args: Vec<String> = Vec::new();
    for (i, path) in spec.files.iter().enumerate() {
        if file_path_ok(path) {
            files_args.push(i.to_string());
            files_args.push(quote(path));
        } else {
            rec(&mut s, &format!("file.{i}"), "m_invalid");
        }
    }
    if file_path_ok(&spec.key_file) {
        let _ = writeln!(
            s,
            "m_files {} {}",
            quote(&spec.key_file),
            files_args.join(" ")
        );
        // A key rotation in progress (`meshctl rotate`): the public half of the next key, made
        // by step 1 beside the key file. No record, and no process, when there is none.
        let next = quote(&crate::desired::next_key_path(&spec.key_file));
        let _ = writeln!(
            s,
            "if [ -s {next} ]; then\n  printf '@@meshctl begin nextkey@@\\n'; wg pubkey <{next}; m_rc=$?\n  printf '@@meshctl end nextkey rc=%s@@\\n' \"$m_rc\"\nfi"
        );
    } else {
        rec(&mut s, "keyfile", "m_invalid");
        let _ = writeln!(s, "m_files '' {}", files_args.join(" "));
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
