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
/// Exit status of a family's `*-save` record that was not run: the family's chains are looked
/// for only as leftovers and meshctl's rules file for it does not exist
/// (`GatherSpec::chains_only_beside`). Not one of iptables' own statuses (0 to 4).
pub(crate) const RC_NO_RULES_FILE: i32 = 96;
/// Exit status of a record that was not gathered because its spec item is not acceptable.
pub(crate) const RC_INVALID: i32 = 97;
/// Exit status of the shell when a command is not found.
pub(crate) const RC_NOT_FOUND: i32 = 127;

/// Where the running kernel's release is read (for its WireGuard module file).
pub(crate) const KERNEL_RELEASE_PATH: &str = "/proc/sys/kernel/osrelease";

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
    "wireguard-go",
    "apt-get",
    "dnf",
    "apk",
];

/// Fixed prologue: helper functions. `r ID CMD...` runs CMD between the record markers and
/// leaves its status in `$m_rc`.
///
/// Commands get stdin from /dev/null one by one (not `exec </dev/null`, which would cut off a
/// script that is itself read from stdin by `sh -s`).
///
/// Few processes (the gather's host-side cost is mostly `fork`+`exec`; ci/bench counts them):
/// - two `ip -j -b` (`m_ipb`): one without a family for the interface's addresses, both
///   families' routes (told apart by `root 0.0.0.0/0` / `root ::/0`), the IPv4 rules and the
///   NDP proxies, one with `-6` for the IPv6 rules (`ip rule` has no per-line family);
/// - one `wg show IF` for the seven `wg.*` records (`m_wg`: the pretty form with keys hidden,
///   of which only the public fields are printed);
/// - one `stat` for every mode and size, one `sed` for every managed file's content *and* every
///   sysctl value (`m_files`; its output is framed text, no encoding): /proc/sys answers a read
///   at a non-zero offset with end-of-file, so the shell's `read` (dash reads a byte at a time)
///   would see `3` for `32768 60999`; `sed` reads them whole. sed cannot tell whether a file's
///   last line ended in a newline; the size tells (see `files::parse_files`);
/// - one `iptables-save` / `ip6tables-save` per family with chains of meshctl's to read: on a
///   host whose desired state has none of a family, only where meshctl's rules file of that
///   family exists (`GatherSpec::chains_only_beside`), so a client runs neither;
/// - the legacy iptables table names with the shell's `read` (a seq_file reads fine byte by
///   byte), and `iptables -V` only when such a table exists (the backend matters only then);
/// - one `getent ahosts` for all names and one `systemctl show` for all units, split
///   into the per-item records here; when the split is ambiguous (a name did not resolve, a unit
///   printed nothing) they fall back to one command per item, so the records keep their forms.
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
m_rec() {
  printf '@@meshctl begin %s@@\n' "$1"
  [ -n "${3-}" ] && printf '%s' "$3"
  printf '@@meshctl end %s rc=%s@@\n' "$1" "$2"
}
m_invalid() { return 97; }
m_os() {
  for m_f in /etc/os-release /usr/lib/os-release; do
    if [ -r "$m_f" ]; then
      while IFS= read -r m_l || [ -n "$m_l" ]; do
        case $m_l in PRETTY_NAME=*) printf '%s\n' "${m_l#PRETTY_NAME=}"; return 0 ;; esac
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
m_wgmod() {
  [ -d /sys/module/wireguard ] && printf 'loaded\n'
  for m_f in /lib/modules/*/kernel/drivers/net/wireguard/wireguard.ko*; do
    [ -e "$m_f" ] || continue
    m_f=${m_f#/lib/modules/}
    printf 'module %s\n' "${m_f%%/*}"
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
m_legacy() {
  while [ $# -ge 2 ]; do
    if [ -e "$2" ]; then
      m_out=
      while IFS= read -r m_l; do m_out=$m_out$m_l$m_nl; done <"$2"
      [ -n "$m_out" ] && m_leg=1
      m_rec "$1" 0 "$m_out"
    else
      m_rec "$1" 3
    fi
    shift 2
  done
}
m_ipb() {
  m_ids=$2
  m_out=$(ip -j $1 -force -batch - <<EOF
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
  m_last=
  if [ "$m_irc" = 0 ]; then
    [ "$#" != "$m_n" ] && m_irc=98
  elif [ "$#" = $((m_n - 1)) ]; then
    # only the last command failed (the interface is absent): the others answered
    m_last=$m_irc m_irc=0
  fi
  for m_id in $m_ids; do
    m_n=$((m_n - 1))
    if [ "$m_n" = 0 ] && [ -n "$m_last" ]; then m_irc=$m_last; fi
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
  # m_stat PATH: its mode, type and size from the one `stat` (lines `MODE TYPE SIZE PATH`)
  m_mode= m_type= m_size=
  set -f
  IFS=$m_nl
  for m_l in $m_st; do
    m_r=${m_l#* } m_p=${m_l#* * * }
    if [ "$m_p" = "$1" ]; then m_mode=${m_l%% *} m_type=${m_r%% *} m_r=${m_r#* } m_size=${m_r%% *}; break; fi
  done
  unset IFS
  set +f
}
m_files() {
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
    case $m_i in
      sysctl.*)
        if [ -e "$m_f" ]; then m_rec "$m_i" 0; set -- "$@" "$m_f"; m_ci="$m_ci $m_i"
        else m_rec "$m_i" 3; fi
        continue ;;
    esac
    m_stat "$m_f"
    printf '@@meshctl begin file.%s@@\n' "$m_i"
    if [ -z "$m_mode" ]; then m_rc=3
    elif case $m_type in 8???) false ;; *) true ;; esac; then m_rc=6
    elif [ ! -r "$m_f" ]; then m_rc=5
    else
      printf '%s\n%s\n' "$m_mode" "$m_size"
      m_rc=0
      if [ -s "$m_f" ]; then set -- "$@" "$m_f"; m_ci="$m_ci $m_i"; fi
    fi
    printf '@@meshctl end file.%s rc=%s@@\n' "$m_i" "$m_rc"
  done
  printf '@@meshctl begin content@@\n'
  printf 'files%s\n' "$m_ci"
  m_rc=0
  if [ "$#" -gt 0 ]; then
    sed -s -e "$m_redact" -e 's/^/ /' -e '1i\' -e '-' -- "$@" </dev/null
    m_rc=$?
    printf '\n'
  fi
  printf '@@meshctl end content rc=%s@@\n' "$m_rc"
}
m_split() {
  # m_split N OUT: splits OUT into the N groups m_g1..m_gN, a group starting at each line with
  # at least three fields (`getent ahosts` names the key's canonical name on its first line
  # only); m_k is the number of groups found
  m_k=0
  set -f
  IFS=$m_nl
  for m_l in $2; do
    unset IFS
    set -- $m_l
    if [ "$#" -ge 3 ]; then m_k=$((m_k + 1)); eval "m_g$m_k="; fi
    [ "$m_k" -gt 0 ] && eval "m_g$m_k=\$m_g$m_k\$m_l\$m_nl"
    IFS=$m_nl
  done
  unset IFS
  set +f
}
m_getent() {
  # m_getent I NAME ...: one `getent ahosts` for every name, split into the resolve.I records
  m_n=$(($# / 2)) m_names=
  m_a=$#
  while [ "$m_a" -gt 0 ]; do set -- "$@" "$2"; m_names="$m_names $1"; shift 2; m_a=$((m_a - 2)); done
  m_out=$(getent ahosts "$@" </dev/null)
  m_grc=$?
  m_split "$m_n" "$m_out"
  if [ "$m_grc" = 0 ] && [ "$m_k" = "$m_n" ] || [ "$m_n" = 1 ]; then
    m_k=0
    for m_i in $m_names; do
      m_k=$((m_k + 1))
      if [ "$m_n" = 1 ]; then m_rec "resolve.$m_i" "$m_grc" "${m_out:+$m_out$m_nl}"
      else eval "m_rec resolve.\$m_i 0 \"\$m_g$m_k\""; fi
    done
  else
    for m_i in $m_names; do r "resolve.$m_i" getent ahosts "$1"; shift; done
  fi
}
m_units() {
  # m_units I UNIT ...: one `systemctl show` of UnitFileState and ActiveState for every unit
  # (a block each, in order, an empty line between), each record what the unit alone gives
  m_n=$(($# / 2)) m_names=
  m_a=$#
  while [ "$m_a" -gt 0 ]; do set -- "$@" "$2"; m_names="$m_names $1"; shift 2; m_a=$((m_a - 2)); done
  m_out=$(systemctl show -p UnitFileState -p ActiveState -- "$@" </dev/null 2>/dev/null)
  m_src=$?
  m_rest=$m_out$m_nl$m_nl m_c=0
  while [ -n "$m_rest" ]; do
    m_p=$m_rest m_rest=${m_rest#*"$m_nl$m_nl"}
    [ "$m_rest" = "$m_p" ] && break
    m_c=$((m_c + 1))
  done
  if [ "$m_c" = "$m_n" ] && [ "$m_src" = 0 ]; then
    m_rest=$m_out$m_nl$m_nl
    for m_i in $m_names; do
      m_b=${m_rest%%"$m_nl$m_nl"*} m_rest=${m_rest#*"$m_nl$m_nl"}
      m_rec "service.$m_i" 0 "$m_b$m_nl"
    done
  else
    for m_i in $m_names; do r "service.$m_i" systemctl show -p UnitFileState -p ActiveState -- "$1"; shift; done
  fi
}
m_line() {
  # m_line FILE: its first line, by the shell's read
  IFS= read -r m_l <"$1" || [ -n "$m_l" ] || return 1
  printf '%s\n' "$m_l"
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

/// `0 'A' 1 'B' ...`: each item after its index, shell-quoted (the per-item helpers' arguments).
fn indexed(items: &[String]) -> String {
    let args: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{i} {}", quote(v)))
        .collect();
    args.join(" ")
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
    rec(&mut s, "uid", "m_uid");
    // kernel WireGuard: loaded (or built in), or a module file for some kernel release (the
    // running one is the `kernel` record below): shell builtins only
    rec(&mut s, "wg-kernel", "m_wgmod");
    rec(&mut s, "kernel", &format!("m_line {KERNEL_RELEASE_PATH}"));

    // addresses, routes, rules, NDP proxies: two `ip -j -b`. The interface's addresses come
    // last: when it is absent only that command fails, and `m_ipb` tells it from the others.
    let iface = quote(spec.interface.as_str());
    let ndp = spec.ndp_range.is_some() || spec.ndp_listed_in.is_some();
    let mut ids = String::from("route4 rule4 route6");
    let mut cmds = String::from(
        "route show table all proto 157 root 0.0.0.0/0\nrule show\n\
         route show table all proto 157 root ::/0",
    );
    if ndp {
        ids.push_str(" ndp");
        cmds.push_str("\nneigh show proxy");
    }
    ids.push_str(" link");
    let _ = write!(cmds, "\naddr show dev {}", spec.interface.as_str());
    let _ = writeln!(s, "m_ipb '' {} {}", quote(&ids), quote(&cmds));
    s.push_str("m_link=$m_irc\n");
    let _ = writeln!(s, "m_ipb -6 rule6 'rule show'");

    // wireguard: the seven `wg.*` records from one `wg show IF` (its pretty form, with keys
    // hidden; `m_wg` prints only the fields below, never the `private key:` line)
    // Preshared keys by file path: only paths meshctl makes (checked like managed files).
    let psks: Vec<&(Option<crate::names::WgKey>, String)> =
        spec.psks.iter().filter(|(_, p)| file_path_ok(p)).collect();
    if !psks.is_empty() {
        s.push_str(PSK_PROLOGUE);
    }
    s.push_str("if [ \"$m_link\" = 0 ]; then\n");
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

    // firewall: one *-save per family that has chains in the spec (for a family looked at
    // for leftovers only, only beside its rules file: a shell test), and the legacy tables
    let mut legacy: Vec<String> = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        if spec.chains.iter().any(|c| c.family == family) {
            let id = super::firewall::record_id(family);
            let save = format!("{}-save", family.iptables());
            // Looked for only as leftovers: only beside meshctl's rules file (a shell test).
            let beside = spec
                .chains_only_beside
                .iter()
                .find(|(f, path)| *f == family && file_path_ok(path));
            match beside {
                Some((_, path)) => {
                    let _ = writeln!(
                        s,
                        "if [ -e {} ]; then r {id} {save}; else m_rec {id} {RC_NO_RULES_FILE}; fi",
                        quote(path)
                    );
                }
                None => rec(&mut s, id, &save),
            }
            legacy.push(super::firewall::legacy_record_id(family).to_owned());
            legacy.push(super::firewall::legacy_names_path(family).to_owned());
        }
    }
    if !legacy.is_empty() {
        let _ = writeln!(s, "m_leg=\nm_legacy {}", legacy.join(" "));
        // Which backend the *-save above read matters only beside legacy tables.
        s.push_str("if [ -n \"$m_leg\" ] && command -v iptables >/dev/null 2>&1; then\n");
        rec(&mut s, "iptables-version", "iptables -V");
        s.push_str("fi\n");
    }

    // the key file's mode, the managed files and the sysctl values: one `stat` and one `sed`
    let mut stat_paths: Vec<String> = Vec::new();
    let mut files_args: Vec<String> = Vec::new();
    for (i, path) in spec.files.iter().enumerate() {
        if file_path_ok(path) {
            files_args.push(i.to_string());
            files_args.push(quote(path));
            stat_paths.push(quote(path));
        } else {
            rec(&mut s, &format!("file.{i}"), "m_invalid");
        }
    }
    for (i, key) in spec.sysctls.iter().enumerate() {
        match sysctl_path(key) {
            Some(path) => {
                files_args.push(format!("sysctl.{i}"));
                files_args.push(quote(&path));
            }
            None => rec(&mut s, &format!("sysctl.{i}"), "m_invalid"),
        }
    }
    let key_file = if file_path_ok(&spec.key_file) {
        stat_paths.insert(0, quote(&spec.key_file));
        quote(&spec.key_file)
    } else {
        rec(&mut s, "keyfile", "m_invalid");
        "''".to_owned()
    };
    if stat_paths.is_empty() {
        s.push_str("m_st=\n");
    } else {
        let _ = writeln!(
            s,
            "m_st=$(stat -L -c '%a %f %s %n' -- {} 2>/dev/null </dev/null)",
            stat_paths.join(" ")
        );
    }
    let _ = writeln!(s, "m_files {key_file} {}", files_args.join(" "));
    if file_path_ok(&spec.key_file) {
        // A key rotation in progress (`meshctl rotate`): the public half of the next key, made
        // by step 1 beside the key file. No record, and no process, when there is none.
        let next = quote(&crate::desired::next_key_path(&spec.key_file));
        let _ = writeln!(
            s,
            "if [ -s {next} ]; then\n  printf '@@meshctl begin nextkey@@\\n'; wg pubkey <{next}; m_rc=$?\n  printf '@@meshctl end nextkey rc=%s@@\\n' \"$m_rc\"\nfi"
        );
    }

    // services, only under systemd: one `systemctl show` (enabled and active)
    if !spec.services.is_empty() {
        s.push_str("if [ \"$m_systemd\" = 0 ]; then\n");
        let _ = writeln!(s, "m_units {}", indexed(&spec.services));
        s.push_str("fi\n");
    }

    // endpoint names: one `getent ahosts`
    if !spec.resolve.is_empty() {
        let _ = writeln!(s, "m_getent {}", indexed(&spec.resolve));
    }

    s.push_str("printf '%s\\n' '@@meshctl done@@'\n");
    // Every host in flight holds its script: its own size, not the last doubling's.
    s.shrink_to_fit();
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
