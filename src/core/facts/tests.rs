//! Tests of the whole gather: the script's safety properties, the parser against fixtures
//! captured from real commands (`fixtures/*.out`, made with the `capture_*` helpers below in a
//! scratch network namespace), composed outputs for the edge cases, and one end-to-end run in a
//! fresh network namespace (`#[ignore]`d: it needs root, `ip netns` and `wireguard-go`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::*;
use crate::state::{Family, Jump, NdpProxy, Route};

fn chain(family: Family, table: &str, chain: &str) -> ChainId {
    ChainId {
        family,
        table: table.into(),
        chain: chain.into(),
    }
}

#[path = "fixtures/spec.rs"]
mod spec;

/// The spec the captured fixtures were gathered with (a hub).
fn hub_spec() -> GatherSpec {
    spec::fixture_spec("wg0")
}

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/src/core/facts/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes the script for `hub_spec()` to `$FX_SCRIPT_OUT`, to capture fixtures with
/// `ip netns exec NS sh SCRIPT > src/core/facts/fixtures/NAME.out`.
#[test]
#[ignore = "helper for capturing fixtures"]
fn capture_hub_script() {
    let spec = match std::env::var("FX_INTERFACE") {
        Ok(i) => GatherSpec {
            interface: InterfaceName::parse(&i).unwrap(),
            ..hub_spec()
        },
        Err(_) => hub_spec(),
    };
    std::fs::write(
        std::env::var("FX_SCRIPT_OUT").unwrap(),
        gather_script(&spec),
    )
    .unwrap();
}

/// Replaces the body and status of record `id` in a whole output.
fn with_record(output: &str, id: &str, body: &str, rc: i32) -> String {
    let begin = format!("@@meshctl begin {id}@@\n");
    let start = output
        .find(&begin)
        .unwrap_or_else(|| panic!("no record {id}"))
        + begin.len();
    let end_marker = format!("@@meshctl end {id} rc=");
    let end = start + output[start..].find(&end_marker).unwrap();
    let after = end + output[end..].find("@@\n").unwrap() + 3;
    format!(
        "{}{body}{end_marker}{rc}@@\n{}",
        &output[..start],
        &output[after..]
    )
}

fn key(s: &str) -> crate::names::WgKey {
    crate::names::WgKey::parse(s).unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const PEER_A: &str = "FJdoGjHrJiAQgPe9ngURP+fpuzYTPCHzndFRSzHhCEM=";
const PEER_B: &str = "lA+to4kbUQklRoMhZ3tj3v5FyVlmmiVEM0nEHMENtkc=";
const PEER_C: &str = "Yb5MiC9A1/Tpjk3TDj/kGDVO1oVwqYIKjHaQms9dBic=";
const PEER_D: &str = "QEhBINCYDyFIzJj89A01CXkxDz9ZQxI/qU5AAWRssFM=";

// ---------------------------------------------------------------- the script

#[test]
fn script_never_asks_for_a_private_key() {
    let script = gather_script(&hub_spec());
    for banned in ["dump", "showconf", "private-key", "show all"] {
        assert!(!script.contains(banned), "script contains {banned:?}");
    }
    // Nothing reads a file's content but `sed` (the managed files and /proc/sys values: the key
    // file is `shift`ed off first) and the shell's `read` (only /proc/net names).
    assert!(!script.contains("cat ") && !script.contains("grep "));
    for line in script.lines().filter(|l| l.starts_with("m_legacy ")) {
        for arg in line.split(' ').skip(2).step_by(2) {
            assert!(arg.starts_with("/proc/net/"), "{line}");
        }
    }
    // The key file appears exactly twice: to `stat` (its mode) and as the first argument of
    // the files helper, which takes it off before `sed` sees the list.
    // (The next key of a rotation, beside it, is only ever given to `wg pubkey`.)
    let next = crate::desired::next_key_path("/tmp/fxkeys/hub.key");
    let (nexts, uses): (Vec<&str>, Vec<&str>) = script
        .lines()
        .filter(|l| l.contains("hub.key"))
        .partition(|l| l.contains(&next));
    assert_eq!(nexts.len(), 2, "{nexts:?}");
    assert!(
        nexts[1].contains(&format!("wg pubkey <{next};")),
        "{nexts:?}"
    );
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert!(uses[0].starts_with("m_st=$(stat -L -c "), "{uses:?}");
    assert!(
        uses[1].starts_with("m_files /tmp/fxkeys/hub.key "),
        "{uses:?}"
    );
    // `wg` runs once, as `wg show IF` with keys hidden whatever the environment says.
    let wg_lines: Vec<&str> = script.lines().filter(|l| l.contains("wg show")).collect();
    assert_eq!(
        wg_lines,
        vec![r#"  m_out=$(WG_HIDE_KEYS=always WG_COLOR_MODE=never wg show "$1" </dev/null)"#]
    );
    assert!(script.contains("m_wg wg0\n"));
}

#[test]
fn script_is_valid_sh_and_quotes_every_value() {
    let spec = GatherSpec {
        files: vec!["/tmp/a'b; touch pwned".into()],
        services: vec!["x; touch pwned".into()],
        resolve: vec!["$(touch pwned)".into(), "`touch pwned`".into()],
        key_file: "/tmp/k'ey $(touch pwned)".into(),
        ..hub_spec()
    };
    let script = gather_script(&spec);
    assert!(script.contains(r"0 '/tmp/a'\''b; touch pwned'"));
    assert!(script.contains("m_getent 0 '$(touch pwned)' 1 '`touch pwned`'"));
    assert!(script.contains("m_units 0 'x; touch pwned'"));
    let status = std::process::Command::new("sh")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn unsafe_spec_items_are_not_gathered() {
    let spec = GatherSpec {
        sysctls: vec!["net/../../../etc/shadow".into()],
        files: vec!["relative/path".into(), "/etc/../etc/shadow".into()],
        key_file: "wg0.key".into(),
        ..hub_spec()
    };
    let script = gather_script(&spec);
    assert!(!script.contains("shadow"));
    assert!(!script.contains("relative"));
    assert_eq!(script.matches("m_invalid\n").count(), 4);
    // The parser names the item.
    let out = with_record(&fixture("hub.out"), "sysctl.0", "", script::RC_INVALID);
    let err = parse(&out, &spec).unwrap_err();
    assert!(matches!(err, FactError::InvalidSpec { .. }), "{err}");
}

/// Runs `script` through the real `sh` in `dir`, returning its stdout.
fn run_sh(script: &str, dir: &std::path::Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As the transport hands it over: invalid UTF-8 replaced by U+FFFD.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Needs nothing but `sh`, coreutils and `ip`: runs on any Linux CI machine, root or not.
#[test]
fn files_are_redacted_on_the_host_through_a_real_sh() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    let psk = "FAKEPSKFAKEPSKFAKEPSKFAKEPSKFAKEPSKFAKEPSK0=";
    let content = format!(
        "[Interface]\nPrivateKey = {secret}\n\tprivatekey={secret}\n# PRIVATEKEY =  {secret}\n\
         PrivateKeyFile = /etc/wireguard/wg0.key\nPrivate Key={secret}\n[Peer]\n\
         PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nPresharedKey\t=\t{psk}\n\
         presharedKEY={psk}\nEndpoint = vps.example.org:51820\n\
         PostUp = wg set %i peer xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg= preshared-key /etc/wireguard/psk/nas.psk\n\
         PostUp = wg set %i peer {secret} preshared-key /etc/wireguard/psk/nas.psk x\n\
         PostUp = echo {secret} | wg set %i private-key /dev/stdin"
    );
    let conf = dir.path().join("wg0.conf");
    std::fs::write(&conf, &content).unwrap();
    let odd = dir.path().join("odd '$(touch pwned)'.conf");
    std::fs::write(&odd, "@@meshctl done@@\n@@meshctl end file.1 rc=0@@\n\n").unwrap();
    // A file with CRLF lines, and one that ends in a character of two bytes and no newline
    // (its last byte alone is no UTF-8): both arrive byte for byte.
    let crlf = dir.path().join("crlf.conf");
    std::fs::write(&crlf, " a\r\n\r\nb@@meshctl end content rc=0@@\r\n").unwrap();
    let accent = dir.path().join("accent.conf");
    std::fs::write(&accent, "caf\u{e9}").unwrap();
    let spec = GatherSpec {
        interface: InterfaceName::parse("fxnone0").unwrap(),
        key_file: dir.path().join("absent.key").to_str().unwrap().into(),
        sysctls: vec![],
        chains: vec![],
        files: vec![
            conf.to_str().unwrap().into(),
            odd.to_str().unwrap().into(),
            crlf.to_str().unwrap().into(),
            accent.to_str().unwrap().into(),
            dir.path().to_str().unwrap().into(),
        ],
        services: vec![],
        resolve: vec![],
        ndp_range: None,
        ndp_listed_in: None,
        chains_only_beside: Vec::new(),
        psks: vec![],
    };
    let mut spec_ok = spec.clone();
    spec_ok.files.pop();
    let out = run_sh(&gather_script(&spec_ok), dir.path());
    assert!(!out.contains(secret) && !out.contains(psk));
    let live = parse(&out, &spec_ok).unwrap();
    let got = &live.state.files[conf.to_str().unwrap()];
    assert_eq!(
        got.content,
        "[Interface]\nPrivateKey = (redacted)\n\tprivatekey= (redacted)\n\
         # PRIVATEKEY = (redacted)\nPrivateKeyFile = /etc/wireguard/wg0.key\n\
         Private Key= (redacted)\n[Peer]\n\
         PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nPresharedKey\t= (redacted)\n\
         presharedKEY= (redacted)\nEndpoint = vps.example.org:51820\n\
         PostUp = wg set %i peer xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg= preshared-key /etc/wireguard/psk/nas.psk\n\
         PostUp = wg set %i peer (redacted) preshared-key /etc/wireguard/psk/nas.psk x\n\
         PostUp = echo (redacted) | wg set %i private-key /dev/stdin\n"
    );
    // (Its last line had no newline; blanking changed its length, so its size cannot tell, and
    // it reads as ending in one. Files without a blanked key arrive byte for byte, below.)
    assert!(!got.content.contains(secret));
    // Content that looks like markers survives, byte for byte (trailing newlines included).
    let odd_file = &live.state.files[odd.to_str().unwrap()];
    assert_eq!(
        odd_file.content,
        "@@meshctl done@@\n@@meshctl end file.1 rc=0@@\n\n"
    );
    assert_eq!(
        live.state.files[crlf.to_str().unwrap()].content,
        " a\r\n\r\nb@@meshctl end content rc=0@@\r\n"
    );
    assert_eq!(
        live.state.files[accent.to_str().unwrap()].content,
        "caf\u{e9}"
    );
    assert_eq!(live.state.interface, None);
    assert!(!dir.path().join("pwned").exists());

    // A directory where a file should be is an error for that path.
    let out = run_sh(&gather_script(&spec), dir.path());
    let err = parse(&out, &spec).unwrap_err();
    assert!(matches!(err, FactError::Unreadable { .. }), "{err}");
    assert!(!err.to_string().contains(secret));
}

/// The script with `prelude` (shell functions standing in for commands) run through the real
/// `sh`, parsed with `spec`.
fn run_with(prelude: &str, spec: &GatherSpec) -> LiveHost {
    let dir = tempfile::tempdir().unwrap();
    let out = run_sh(&format!("{prelude}\n{}", gather_script(spec)), dir.path());
    parse(&out, spec).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// One `getent ahosts` and one `systemctl show` answer for every name and unit, split
/// into per-item records by the script; where the split would be ambiguous (a name that does
/// not resolve, a unit that prints nothing) it asks item by item. Needs `sh` and `ip` only.
#[test]
fn merged_lookups_split_into_per_item_records_through_a_real_sh() {
    // Stand-ins with the real commands' output forms (glibc `getent`: the canonical name on a
    // key's first line only; exit 2 when a key is not found). They log each call.
    // `set -u`: apply's prepare step runs the gather under it.
    let prelude = r#"set -u
getent() {
  echo "getent $*" >> calls; shift; m_x=0
  for k do
    case $k in
      a.example) printf '%-15s %-6s %s\n' 192.0.2.1 STREAM a.example 192.0.2.1 DGRAM '' 192.0.2.1 RAW '' 2001:db8::1 STREAM '' ;;
      b.example) printf '%-15s %-6s %s\n' 198.51.100.7 STREAM b.example 198.51.100.7 DGRAM '' ;;
      *) m_x=2 ;;
    esac
  done
  return $m_x
}
test() { [ "$*" = "-d /run/systemd/system" ] && return 0; command test "$@"; }
systemctl() {
  echo "systemctl $*" >> calls; shift 6; m_n=$#; m_sep=
  for u do
    printf '%s' "$m_sep"; m_sep='
'
    case $u in
      on.service) printf 'ActiveState=active\nUnitFileState=enabled\n' ;;
      off.service) printf 'ActiveState=inactive\nUnitFileState=disabled\n' ;;
      # an answer that cannot be split: nothing for it among others
      gone.service) [ "$m_n" = 1 ] && printf 'ActiveState=inactive\nUnitFileState=\n' ;;
    esac
  done
  return 0
}
"#;
    let spec = |resolve: &[&str], services: &[&str]| GatherSpec {
        interface: InterfaceName::parse("fxnone0").unwrap(),
        key_file: "/nonexistent/fx.key".into(),
        sysctls: vec![],
        chains: vec![],
        files: vec![],
        services: services.iter().map(|s| s.to_string()).collect(),
        resolve: resolve.iter().map(|s| s.to_string()).collect(),
        ndp_range: None,
        ndp_listed_in: None,
        chains_only_beside: Vec::new(),
        psks: vec![],
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let calls = |prelude: &str, spec: &GatherSpec| {
        let dir = tempfile::tempdir().unwrap();
        let out = run_sh(&format!("{prelude}\n{}", gather_script(spec)), dir.path());
        let live = parse(&out, spec).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
        (live, calls)
    };

    // Everything answers: one call each.
    let s = spec(&["a.example", "b.example"], &["on.service", "off.service"]);
    let (live, log) = calls(prelude, &s);
    assert_eq!(
        log,
        "systemctl show -p UnitFileState -p ActiveState -- on.service off.service\ngetent ahosts a.example b.example\n"
    );
    assert_eq!(
        live.resolved["a.example"],
        vec![ip("192.0.2.1"), ip("2001:db8::1")]
    );
    assert_eq!(live.resolved["b.example"], vec![ip("198.51.100.7")]);
    assert!(live.state.services["on.service"].enabled);
    assert!(live.state.services["on.service"].active);
    assert!(!live.state.services["off.service"].enabled);
    assert!(!live.state.services["off.service"].active);

    // A name that does not resolve and a unit that prints nothing: item by item, the same
    // answers as before.
    let s = spec(
        &["a.example", "nx.invalid", "b.example"],
        &["gone.service", "on.service"],
    );
    let (live, log) = calls(prelude, &s);
    assert_eq!(
        log.lines().filter(|l| l.starts_with("getent")).count(),
        4,
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.starts_with("systemctl")).count(),
        3,
        "{log}"
    );
    assert_eq!(live.resolved["a.example"].len(), 2);
    assert!(live.resolved["nx.invalid"].is_empty());
    assert_eq!(live.resolved["b.example"], vec![ip("198.51.100.7")]);
    assert!(!live.state.services["gone.service"].enabled);
    assert!(live.state.services["on.service"].enabled);

    // One name that does not resolve: one call, its status kept.
    let live = run_with(prelude, &spec(&["nx.invalid"], &[]));
    assert!(live.resolved["nx.invalid"].is_empty());
}

// ---------------------------------------------------------------- captured fixtures

#[test]
fn hub_fixture() {
    let live = parse(&fixture("hub.out"), &hub_spec()).unwrap();

    assert_eq!(live.system.os, "Debian GNU/Linux 12 (bookworm)");
    assert!(!live.system.systemd);
    assert!(live.system.root);
    assert_eq!(live.system.iptables_backend.as_deref(), Some("nf_tables"));
    assert!(live.system.tools.contains("wg") && !live.system.tools.contains("sudo"));
    assert!(live.system.tools.contains("wireguard-go") && live.system.tools.contains("apt-get"));
    // The lab machine's kernel has no WireGuard module (wireguard-go does it).
    assert!(!live.system.kernel_wireguard);

    let wg = live.state.interface.as_ref().unwrap();
    assert_eq!(wg.name.as_str(), "wg0");
    assert_eq!(
        wg.addresses,
        BTreeSet::from([net("10.8.0.1/24"), net("2001:db8:10:0:100::1/72")])
    );
    assert_eq!(wg.listen_port, Some(51820));
    assert_eq!(
        wg.public_key,
        Some(key("Hd/jD36aY7zk85i+ZAxrWsKPh0OEkTkOaUS7xpplBx4="))
    );
    assert_eq!(wg.private_key_file.path, "/tmp/fxkeys/hub.key");
    assert_eq!(live.key_file_mode, Some(0o600));
    assert_eq!(wg.peers.len(), 4);
    let a = &wg.peers[PEER_A];
    assert_eq!(a.public_key, Some(key(PEER_A)));
    assert_eq!(
        a.allowed_ips,
        BTreeSet::from([net("10.8.0.2/32"), net("192.168.178.0/24")])
    );
    assert_eq!(a.endpoint.as_deref(), Some("192.0.2.10:51820"));
    assert_eq!(a.persistent_keepalive, Some(25));
    let b = &wg.peers[PEER_B];
    assert_eq!(b.endpoint, None);
    assert_eq!(b.persistent_keepalive, None);
    assert!(b.allowed_ips.contains(&net("2001:db8:10:0:100::3/128")));
    assert_eq!(
        wg.peers[PEER_C].endpoint.as_deref(),
        Some("[2001:db8::10]:51821")
    );
    let d = &wg.peers[PEER_D];
    assert!(d.allowed_ips.is_empty());
    assert_eq!((d.endpoint.as_ref(), d.persistent_keepalive), (None, None));

    let wg0 = InterfaceName::parse("wg0").unwrap();
    let eth0 = InterfaceName::parse("eth0").unwrap();
    let via = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(
        live.state.routes,
        BTreeSet::from([
            Route {
                destination: net("0.0.0.0/0"),
                device: eth0.clone(),
                via: via("192.0.2.1"),
                table: Some(100),
            },
            Route {
                destination: net("10.9.0.5/32"),
                device: wg0.clone(),
                via: via("10.8.0.2"),
                table: None,
            },
            Route {
                destination: net("192.168.178.0/24"),
                device: wg0.clone(),
                via: None,
                table: None,
            },
            Route {
                destination: net("::/0"),
                device: wg0.clone(),
                via: None,
                table: Some(101),
            },
            Route {
                destination: net("2001:db8:20::/64"),
                device: wg0.clone(),
                via: via("2001:db8:10:0:100::2"),
                table: None,
            },
            Route {
                destination: net("2001:db8:30::1/128"),
                device: wg0.clone(),
                via: None,
                table: None,
            },
        ])
    );

    let sysctls: Vec<(&str, &str)> = live
        .state
        .sysctls
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        sysctls,
        vec![
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv6.conf.all.forwarding", "0"),
            ("net.ipv6.conf.eth0.1.proxy_ndp", "0"),
            ("net.ipv6.conf.eth0.proxy_ndp", "0"),
        ]
    );

    let fw = &live.state.firewall;
    let v4fwd = &fw.chains[&chain(Family::Ipv4, "filter", "MESHCTL-FORWARD")];
    assert_eq!(
        v4fwd[0],
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    assert_eq!(v4fwd[1], "-s 10.8.0.0/24 -d 192.168.178.0/24 -j ACCEPT");
    assert_eq!(v4fwd.len(), 7);
    assert_eq!(
        fw.chains[&chain(Family::Ipv4, "nat", "MESHCTL-POSTROUTING")],
        vec!["-s 10.8.0.0/24 -o eth0 -j MASQUERADE"]
    );
    assert_eq!(
        fw.chains[&chain(Family::Ipv6, "filter", "MESHCTL-EMPTY")],
        Vec::<String>::new()
    );
    assert!(
        !fw.chains
            .contains_key(&chain(Family::Ipv6, "filter", "MESHCTL-ABSENT"))
    );
    // MESHCTL-EMPTY exists in v4 too but is not in the spec for v4 and nothing jumps to it.
    assert!(
        !fw.chains
            .contains_key(&chain(Family::Ipv4, "filter", "MESHCTL-EMPTY"))
    );
    assert_eq!(
        fw.chains[&chain(Family::Ipv6, "filter", "MESHCTL-FORWARD")][6],
        "-d 2001:db8:10:0:100::/72 -i eth0 -m conntrack --ctstate NEW -j REJECT --reject-with icmp6-port-unreachable"
    );
    let jump = |family, table: &str, from: &str, to: &str| Jump {
        family,
        table: table.into(),
        from: from.into(),
        to: to.into(),
    };
    assert_eq!(
        fw.jumps,
        BTreeSet::from([
            jump(Family::Ipv4, "filter", "INPUT", "MESHCTL-INPUT"),
            jump(Family::Ipv4, "filter", "FORWARD", "MESHCTL-FORWARD"),
            jump(Family::Ipv4, "nat", "POSTROUTING", "MESHCTL-POSTROUTING"),
            jump(Family::Ipv6, "filter", "FORWARD", "MESHCTL-FORWARD"),
        ])
    );

    let warnings = live.warnings.join("\n");
    // The foreign DROP before the v4 jump, not the ACCEPT before it, not the v6 DROP after it.
    assert!(warnings.contains("ipv4 filter FORWARD: rule 2 `-s 203.0.113.0/24 -j DROP`"));
    assert!(!warnings.contains("--dport 22"));
    assert!(!warnings.contains("-i eth0 -j DROP"));
    assert!(
        warnings
            .contains("`-i eth0 -m comment --comment meshctl -j ACCEPT` carries meshctl's comment")
    );
    assert!(warnings.contains("ipv4: iptables-legacy tables are present"));
    assert!(warnings.contains("ipv6: iptables-legacy tables are present"));
    // Routes in numbered tables are meshctl's own (its tunnel table), not warnings.
    assert!(!warnings.contains("table 100") && !warnings.contains("table 101"));
    assert!(!warnings.contains("policy DROP"));

    assert_eq!(
        live.state.ndp_proxies,
        BTreeSet::from([
            NdpProxy {
                address: "2001:db8:10:0:100::5".parse().unwrap(),
                device: eth0
            },
            NdpProxy {
                address: "2001:db8:10:0:100::6".parse().unwrap(),
                device: InterfaceName::parse("eth0.1").unwrap(),
            },
        ])
    );

    let conf = &live.state.files["/tmp/fxfiles/wg0.conf"];
    assert_eq!(conf.mode, 0o600);
    assert!(conf.content.contains("\nPrivateKey = (redacted)\n"));
    assert!(conf.content.contains("\nPresharedKey\t= (redacted)\n"));
    assert!(
        conf.content
            .contains("PrivateKeyFile = /etc/wireguard/wg0.key\n")
    );
    assert!(!conf.content.contains("yAnz5TF"));
    assert!(!live.state.files.contains_key("/tmp/fxfiles/absent.conf"));
    assert_eq!(live.state.files["/tmp/fxfiles/nonl"].content, "x");
    assert_eq!(live.state.files["/tmp/fxfiles/nonl"].mode, 0o644);
    assert_eq!(
        live.state.files["/tmp/fxfiles/trailing"].content,
        "no trailing newline\n\n"
    );

    // No systemd: services are not queried and not reported.
    assert!(live.state.services.is_empty());
    assert_eq!(
        live.resolved["localhost"],
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(live.resolved["nonexistent.invalid"], Vec::<IpAddr>::new());
    assert_eq!(live.host, None);
}

#[test]
fn fresh_host_fixture_absent_interface_and_empty_chain() {
    let live = parse(&fixture("fresh.out"), &hub_spec()).unwrap();
    assert_eq!(live.state.interface, None);
    // Captured on the lab machine, whose kernel has no WireGuard (wireguard-go does it).
    assert!(!live.system.kernel_wireguard);
    assert!(live.state.routes.is_empty());
    assert!(live.state.ndp_proxies.is_empty());
    assert!(
        !live
            .state
            .sysctls
            .contains_key("net.ipv6.conf.eth0.proxy_ndp")
    );
    assert_eq!(live.state.sysctls.len(), 2);
    let fw = &live.state.firewall;
    assert!(fw.jumps.is_empty());
    assert_eq!(
        fw.chains.keys().cloned().collect::<Vec<_>>(),
        vec![
            chain(Family::Ipv4, "filter", "MESHCTL-FORWARD"),
            chain(Family::Ipv6, "filter", "MESHCTL-FORWARD"),
        ]
    );
    assert!(fw.chains.values().all(Vec::is_empty));
    let warnings = live.warnings.join("\n");
    assert!(warnings.contains("ipv4 filter FORWARD has policy DROP"));
    assert!(warnings.contains("ipv6 filter FORWARD has policy DROP"));
    assert!(!warnings.contains("legacy"));
}

#[test]
fn interface_without_key_and_peers_fixture() {
    let spec = GatherSpec {
        interface: InterfaceName::parse("wg1").unwrap(),
        ..hub_spec()
    };
    let live = parse(&fixture("nopeers.out"), &spec).unwrap();
    let wg = live.state.interface.unwrap();
    assert_eq!(wg.name.as_str(), "wg1");
    assert_eq!(wg.public_key, None);
    assert!(wg.peers.is_empty());
    assert!(wg.addresses.is_empty());
    assert!(wg.listen_port.is_some());
}

// ---------------------------------------------------------------- composed edge cases

#[test]
fn legacy_backend_with_counters() {
    let out = with_record(
        &fixture("hub.out"),
        "fw4",
        &fixture("legacy4-counters.save"),
        0,
    );
    let out = with_record(&out, "iptables-version", "iptables v1.8.9 (legacy)\n", 0);
    let out = with_record(&out, "fw6", &fixture("legacy6.save"), 0);
    let live = parse(&out, &hub_spec()).unwrap();
    assert_eq!(live.system.iptables_backend.as_deref(), Some("legacy"));
    let fw = &live.state.firewall;
    let v4fwd = &fw.chains[&chain(Family::Ipv4, "filter", "MESHCTL-FORWARD")];
    assert_eq!(
        v4fwd[0],
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    assert_eq!(v4fwd.len(), 7);
    assert!(fw.jumps.len() == 4);
    let warnings = live.warnings.join("\n");
    // The REJECT before the jump; the FORWARD DROP policy is no note since meshctl jumps there.
    assert!(warnings.contains(
        "ipv4 filter FORWARD: rule 1 `-i eth0 -j REJECT --reject-with icmp-port-unreachable`"
    ));
    assert!(!warnings.contains("policy DROP"));
    // On the legacy backend the legacy tables are the ones meshctl uses: no warning.
    assert!(!warnings.contains("legacy tables"));

    // The same rules read through both backends are the same state.
    let plain = with_record(&out, "fw4", &fixture("legacy4.save"), 0);
    assert_eq!(parse(&plain, &hub_spec()).unwrap().state, live.state);
}

#[test]
fn legacy_warning_comment_in_save_output_is_a_warning() {
    let hub = fixture("hub.out");
    let body = format!(
        "{}# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n",
        fixture("legacy4.save")
    );
    let out = with_record(&hub, "fw4", &body, 0);
    let out = with_record(&out, "fw4-legacy", "", 3);
    let live = parse(&out, &hub_spec()).unwrap();
    assert!(
        live.warnings
            .iter()
            .any(|w| w.starts_with("ipv4: iptables-legacy"))
    );
}

#[test]
fn missing_tools_and_failing_commands() {
    let hub = fixture("hub.out");
    // No ip6tables-save: no chains of that family (the empty state a fresh host has), not
    // an error (the plan installs it where the host needs it).
    let out = with_record(&hub, "fw6", "", 127);
    let live = parse(&out, &hub_spec()).unwrap();
    assert!(!live.warnings.iter().any(|w| w.contains("ip6tables")));
    assert!(
        !live
            .state
            .firewall
            .chains
            .keys()
            .any(|c| c.family == Family::Ipv6)
    );
    // Not root, no sudo: iptables-save fails → an error naming the section.
    let out = with_record(&hub, "fw4", "", 4);
    let err = parse(&out, &hub_spec()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("section `fw4` (line "), "{msg}");
    assert!(
        msg.ends_with("`iptables-save` failed with exit status 4"),
        "{msg}"
    );
    // wg itself missing.
    let out = with_record(&hub, "wg.peers", "", 127);
    assert!(matches!(
        parse(&out, &hub_spec()),
        Err(FactError::Command { status: 127, .. })
    ));
    // Key file absent.
    let out = with_record(&hub, "keyfile", "", 3);
    let live = parse(&out, &hub_spec()).unwrap();
    assert_eq!(live.key_file_mode, None);
    // A file meshctl cannot read.
    let out = with_record(&hub, "file.0", "", 5);
    assert_eq!(
        parse(&out, &hub_spec()).unwrap_err(),
        FactError::Unreadable {
            path: "/tmp/fxfiles/wg0.conf".into(),
            reason: "not readable".into()
        }
    );
}

#[test]
fn kernel_wireguard_from_the_module_or_its_file_for_the_running_release() {
    let hub = fixture("hub.out");
    let kernel = |body: &str| {
        let out = with_record(&hub, "wg-kernel", body, 0);
        parse(&out, &hub_spec()).map(|l| l.system.kernel_wireguard)
    };
    assert_eq!(kernel(""), Ok(false));
    assert_eq!(kernel("loaded\n"), Ok(true));
    // The hub fixture's kernel is 6.18.44-fc-v1045: a module for another release does not count.
    assert_eq!(kernel("module 6.1.0-27-amd64\n"), Ok(false));
    assert_eq!(
        kernel("module 6.1.0-27-amd64\nmodule 6.18.44-fc-v1045\n"),
        Ok(true)
    );
    assert!(matches!(
        kernel("what\n"),
        Err(FactError::Malformed { section, .. }) if section == "wg-kernel"
    ));
    // Without the release (an old fixture, an unreadable /proc), only `loaded` counts.
    let out = with_record(
        &with_record(&hub, "kernel", "", 3),
        "wg-kernel",
        "module 6.18.44-fc-v1045\n",
        0,
    );
    assert!(!parse(&out, &hub_spec()).unwrap().system.kernel_wireguard);
    // The tools a fresh host lacks are reported by their absence.
    let out = with_record(&hub, "tools", "ip\nsysctl\ndnf\n", 0);
    let tools = parse(&out, &hub_spec()).unwrap().system.tools;
    assert_eq!(
        tools.into_iter().collect::<Vec<_>>(),
        ["dnf", "ip", "sysctl"]
    );
}

#[test]
fn services_under_systemd() {
    let hub = fixture("hub.out");
    let out = with_record(&hub, "systemd", "", 0);
    let with = |body: &str, rc| {
        let out = out.replace(
            "@@meshctl begin resolve.0@@",
            &format!("@@meshctl begin service.0@@\n{body}@@meshctl end service.0 rc={rc}@@\n@@meshctl begin resolve.0@@"),
        );
        parse(&out, &hub_spec()).map(|l| l.state.services)
    };
    let state = |body: &str| {
        let s = &with(body, 0).unwrap()["wg-quick@wg0"];
        (s.enabled, s.active)
    };
    assert_eq!(
        state("ActiveState=active\nUnitFileState=enabled\n"),
        (true, true)
    );
    assert_eq!(
        state("UnitFileState=enabled\nActiveState=inactive\n"),
        (true, false)
    );
    // A hand-made `wg-quick@wg0` started but not enabled.
    assert_eq!(
        state("ActiveState=active\nUnitFileState=disabled\n"),
        (false, true)
    );
    // Not installed yet (no wireguard-tools): an unknown unit.
    assert_eq!(
        state("ActiveState=inactive\nUnitFileState=\n"),
        (false, false)
    );
    assert_eq!(state(""), (false, false));
    assert!(matches!(
        with("", 127),
        Err(FactError::Command { status: 127, .. })
    ));
    assert!(matches!(
        parse(&out, &hub_spec()),
        Err(FactError::Missing { .. })
    ));
}

/// Garbage in any section is an error naming that section, or harmless; never a panic.
#[test]
fn garbage_in_every_section() {
    let hub = fixture("hub.out");
    let strict = [
        "tools",
        "uid",
        "link",
        "wg.public-key",
        "wg.listen-port",
        "wg.peers",
        "wg.allowed-ips",
        "wg.endpoints",
        "wg.persistent-keepalive",
        "keyfile",
        "route4",
        "route6",
        "fw4",
        "fw6",
        "ndp",
        "file.0",
        "file.2",
        "resolve.0",
    ];
    let ids: Vec<String> = hub
        .lines()
        .filter_map(|l| l.strip_prefix("@@meshctl begin ")?.strip_suffix("@@"))
        .map(str::to_owned)
        .collect();
    assert!(ids.len() > 30);
    for garbage in [
        "garbage line\n",
        "x\ty\tz\n\u{0}\n",
        "[{\"dst\":1}]\n",
        "-A\n*\n:\n",
    ] {
        for id in &ids {
            let out = with_record(&hub, id, garbage, 0);
            let result = parse(&out, &hub_spec());
            if strict.contains(&id.as_str()) {
                let err = result.expect_err(id);
                let msg = err.to_string();
                let named = msg.contains(id.as_str())
                    || msg.contains("resolve localhost")
                    || msg.contains("/tmp/fxfiles/");
                assert!(named, "{id}: {msg}");
            }
        }
    }
    // A wrong peer in a per-peer list, a bad address, a bad keepalive.
    let cases = [
        ("wg.allowed-ips", format!("{PEER_A}\t10.8.0.300/32\n")),
        (
            "wg.endpoints",
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\t1.2.3.4:5\n".to_owned(),
        ),
        ("wg.persistent-keepalive", format!("{PEER_A}\tsoon\n")),
        ("wg.public-key", "(hidden)\n".to_owned()),
        ("keyfile", "rw-------\n".to_owned()),
        ("ndp", "2001:db8:10:0:100::5 lladdr x\n".to_owned()),
    ];
    for (id, body) in cases {
        let err = parse(&with_record(&hub, id, &body, 0), &hub_spec()).expect_err(id);
        assert!(
            matches!(err, FactError::Malformed { ref section, .. } if section == id),
            "{err}"
        );
    }
}

/// Errors about managed files never quote their content.
#[test]
fn file_errors_do_not_quote_content() {
    let hub = fixture("hub.out");
    for body in [
        "600\nUHJpdmF0ZUtleSA9IHNlY3JldA\n!!!\n",
        "600\n/w==\n",
        "zzz\nsecret\n",
    ] {
        let err = parse(&with_record(&hub, "file.0", body, 0), &hub_spec()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/tmp/fxfiles/wg0.conf"), "{msg}");
        assert!(
            !msg.contains("secret") && !msg.contains("UHJp") && !msg.contains("/w=="),
            "{msg}"
        );
    }
}

/// Every cut of the output before its trailer is an error, never a partial state.
#[test]
fn truncated_output_is_always_an_error() {
    let hub = fixture("hub.out");
    let done = hub.find("@@meshctl done@@").unwrap();
    let mut cut = 0;
    while cut < done {
        let result = parse(&hub[..cut], &hub_spec());
        assert!(result.is_err(), "cut at byte {cut} parsed");
        cut = hub[cut + 1..].find('\n').map_or(done, |i| cut + 1 + i);
        if let Err(FactError::Truncated { .. } | FactError::NoHeader | FactError::Missing { .. }) =
            parse(&hub[..cut], &hub_spec())
        {
        } else if cut < done {
            panic!("cut at line end {cut} is not a truncation error");
        }
    }
    // A section missing its end.
    let out = hub.replace("@@meshctl end route6 rc=0@@\n", "");
    assert!(matches!(
        parse(&out, &hub_spec()),
        Err(FactError::Truncated { ref section, .. }) if section == "route6"
    ));
    // A section left out entirely.
    let start = hub.find("@@meshctl begin ndp@@").unwrap();
    let end = hub.find("@@meshctl begin link@@").unwrap();
    let out = format!("{}{}", &hub[..start], &hub[end..]);
    assert_eq!(
        parse(&out, &hub_spec()).unwrap_err(),
        FactError::Missing {
            section: "ndp".into()
        }
    );
    // Not our output at all (sudo refusing, a banner only).
    assert_eq!(
        parse("sudo: a password is required\n", &hub_spec()).unwrap_err(),
        FactError::NoHeader
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_section_bodies_never_panic(body in "(\\PC{0,40}\n){0,4}", idx in 0usize..40) {
        let hub = fixture("hub.out");
        let ids: Vec<&str> = hub
            .lines()
            .filter_map(|l| l.strip_prefix("@@meshctl begin ")?.strip_suffix("@@"))
            .collect();
        let id = ids[idx % ids.len()];
        let _ = parse(&with_record(&hub, id, &body, 0), &hub_spec());
    }

    #[test]
    fn arbitrary_output_never_panics(s in "\\PC{0,300}") {
        let _ = parse(&s, &hub_spec());
        let _ = parse(&format!("@@meshctl facts 1@@\n{s}\n@@meshctl done@@\n"), &hub_spec());
    }
}

// ---------------------------------------------------------------- spec derivation

#[test]
fn spec_from_desired_state() {
    use crate::state::{KeyFile, ManagedFile, ServiceState, WgInterface};
    let mut desired = HostState::default();
    let spec = GatherSpec::from_desired(&desired, vec![], None);
    assert_eq!(spec.interface.as_str(), "wg0");
    assert_eq!(spec.key_file, "/etc/wireguard/wg0.key");
    desired.interface = Some(WgInterface {
        name: InterfaceName::parse("wg7").unwrap(),
        addresses: BTreeSet::new(),
        listen_port: None,
        public_key: None,
        private_key_file: KeyFile {
            path: "/etc/wireguard/wg7.key".into(),
        },
        peers: Default::default(),
        fwmark: None,
    });
    desired
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "1".into());
    let fwd = chain(Family::Ipv6, "filter", "MESHCTL-FORWARD");
    desired.firewall.chains.insert(fwd.clone(), vec![]);
    desired.firewall.jumps.insert(Jump {
        family: Family::Ipv4,
        table: "nat".into(),
        from: "POSTROUTING".into(),
        to: "MESHCTL-POSTROUTING".into(),
    });
    desired.files.insert(
        "/etc/wireguard/wg7.conf".into(),
        ManagedFile {
            content: String::new(),
            mode: 0o600,
        },
    );
    desired.services.insert(
        "wg-quick@wg7".into(),
        ServiceState {
            enabled: true,
            active: true,
        },
    );
    let range: Ipv6Net = "2001:db8::/72".parse().unwrap();
    let spec = GatherSpec::from_desired(&desired, vec!["vps.example.org".into()], Some(range));
    assert_eq!(spec.interface.as_str(), "wg7");
    assert_eq!(spec.key_file, "/etc/wireguard/wg7.key");
    assert_eq!(spec.sysctls, vec!["net.ipv4.ip_forward"]);
    assert_eq!(
        spec.chains,
        vec![fwd, chain(Family::Ipv4, "nat", "MESHCTL-POSTROUTING")]
    );
    assert_eq!(spec.files, vec!["/etc/wireguard/wg7.conf"]);
    assert_eq!(spec.services, vec!["wg-quick@wg7"]);
    assert_eq!(spec.resolve, vec!["vps.example.org"]);
    assert_eq!(spec.ndp_range, Some(range));
}

// ---------------------------------------------------------------- end to end, for real

/// A scratch network namespace with a wireguard-go interface, torn down on drop (also when the
/// test fails): wireguard-go is killed by its pid, then the namespace is deleted.
struct Scratch {
    ns: String,
    iface: String,
    wireguard_go: Option<std::process::Child>,
}

impl Scratch {
    fn sh(&self, cmd: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut child) = self.wireguard_go.take() {
            // SIGTERM first: wireguard-go then removes its UAPI socket, which lives in the
            // host-wide /var/run/wireguard, not in the namespace.
            let pid = child.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            for _ in 0..50 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.iface));
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

/// END TO END, FOR REAL: needs root, `ip netns`, `wireguard-go`, `wg` and iptables. Builds a
/// small hub in a fresh network namespace (`fx-test-PID`), runs `gather_script` through `sh`
/// in it and parses the output. Leaves nothing behind (see `Scratch`). Run with
/// `cargo test --lib facts::tests::gather_for_real -- --ignored`.
#[test]
#[ignore = "needs root, ip netns and wireguard-go"]
fn gather_for_real_in_a_scratch_netns() {
    use std::process::{Command, Stdio};
    let ns = format!("fx-test-{}", std::process::id());
    // Unique: wireguard-go's UAPI socket (/var/run/wireguard/IF.sock) is shared by all
    // namespaces.
    let iface = format!("fxt{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success()
    );
    let mut scratch = Scratch {
        ns: ns.clone(),
        iface: iface.clone(),
        wireguard_go: None,
    };
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, "wireguard-go", "-f", &iface])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    scratch.wireguard_go = Some(child);
    let mut up = false;
    for _ in 0..50 {
        let st = Command::new("ip")
            .args(["-n", &ns, "link", "show", &iface])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if st.success() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "wireguard-go did not create {iface}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let peer = scratch.sh("wg genkey | wg pubkey").trim().to_owned();
    scratch.sh(&format!(
        "set -e; umask 077; wg genkey > {d}/wg0.key
         wg set {iface} private-key {d}/wg0.key listen-port 51820 \
            peer {peer} allowed-ips 10.8.0.2/32,192.168.178.0/24 endpoint 192.0.2.10:51820 \
            persistent-keepalive 25
         ip link set lo up; ip link set {iface} up
         ip addr add 10.8.0.1/24 dev {iface}; ip addr add 2001:db8:10:0:100::1/72 dev {iface}
         ip route add 192.168.178.0/24 dev {iface} proto 157
         ip route add 172.16.0.0/16 dev {iface}
         ip -6 neigh add proxy 2001:db8:10:0:100::5 dev {iface}
         ip -6 neigh add proxy 2001:db8:99::5 dev {iface}
         printf '*filter\\n:MESHCTL-FORWARD - [0:0]\\n-A MESHCTL-FORWARD -s 10.8.0.0/24 -j ACCEPT\\n-I FORWARD 1 -m comment --comment meshctl -j MESHCTL-FORWARD\\nCOMMIT\\n' | iptables-restore --noflush
         printf '*filter\\n:MESHCTL-FORWARD - [0:0]\\nCOMMIT\\n' | ip6tables-restore --noflush
         printf '[Interface]\\nPrivateKey = %s\\n' \"$(cat {d}/wg0.key)\" > {d}/wg0.conf"
    ));
    let private = std::fs::read_to_string(dir.path().join("wg0.key")).unwrap();
    let public = scratch
        .sh(&format!("wg pubkey < {d}/wg0.key"))
        .trim()
        .to_owned();

    let spec = GatherSpec {
        interface: InterfaceName::parse(&iface).unwrap(),
        key_file: format!("{d}/wg0.key"),
        sysctls: vec![
            "net.ipv4.ip_forward".into(),
            "net.ipv6.conf.eth7.proxy_ndp".into(),
        ],
        chains: vec![
            chain(Family::Ipv4, "filter", "MESHCTL-FORWARD"),
            chain(Family::Ipv6, "filter", "MESHCTL-FORWARD"),
            chain(Family::Ipv4, "nat", "MESHCTL-POSTROUTING"),
        ],
        files: vec![format!("{d}/wg0.conf"), format!("{d}/absent.conf")],
        services: vec!["wg-quick@wg0".into()],
        resolve: vec!["localhost".into()],
        ndp_range: Some("2001:db8:10:0:100::/72".parse().unwrap()),
        ndp_listed_in: None,
        chains_only_beside: Vec::new(),
        psks: vec![],
    };
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let output = scratch.sh(&gather_script(&spec));
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before, after, "the gather wrote a file");
    assert!(
        !output.contains(private.trim()),
        "the private key left the host"
    );

    let live = parse(&output, &spec).unwrap();
    assert!(live.system.root);
    let wg = live.state.interface.as_ref().unwrap();
    assert_eq!(
        wg.public_key.as_ref().map(|k| k.as_str()),
        Some(public.as_str())
    );
    assert_eq!(wg.listen_port, Some(51820));
    assert_eq!(live.key_file_mode, Some(0o600));
    assert_eq!(
        wg.addresses,
        BTreeSet::from([net("10.8.0.1/24"), net("2001:db8:10:0:100::1/72")])
    );
    let p = &wg.peers[&peer];
    assert_eq!(p.endpoint.as_deref(), Some("192.0.2.10:51820"));
    assert_eq!(p.persistent_keepalive, Some(25));
    assert_eq!(p.allowed_ips.len(), 2);
    assert_eq!(
        live.state.routes,
        BTreeSet::from([Route {
            destination: net("192.168.178.0/24"),
            device: InterfaceName::parse(&iface).unwrap(),
            via: None,
            table: None,
        }])
    );
    assert_eq!(
        live.state
            .sysctls
            .get("net.ipv4.ip_forward")
            .map(String::as_str),
        Some("0")
    );
    assert!(
        !live
            .state
            .sysctls
            .contains_key("net.ipv6.conf.eth7.proxy_ndp")
    );
    let fw = &live.state.firewall;
    assert_eq!(
        fw.chains[&chain(Family::Ipv4, "filter", "MESHCTL-FORWARD")],
        vec!["-s 10.8.0.0/24 -j ACCEPT"]
    );
    assert!(fw.chains[&chain(Family::Ipv6, "filter", "MESHCTL-FORWARD")].is_empty());
    assert!(
        !fw.chains
            .contains_key(&chain(Family::Ipv4, "nat", "MESHCTL-POSTROUTING"))
    );
    assert_eq!(fw.jumps.len(), 1);
    assert_eq!(live.state.ndp_proxies.len(), 1);
    let conf = &live.state.files[&format!("{d}/wg0.conf")];
    assert_eq!(conf.content, "[Interface]\nPrivateKey = (redacted)\n");
    assert_eq!(live.state.files.len(), 1);
    assert!(!live.resolved["localhost"].is_empty());
    drop(scratch);
    assert!(!std::path::Path::new(&format!("/var/run/wireguard/{iface}.sock")).exists());
    assert!(
        !String::from_utf8(
            Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout
        )
        .unwrap()
        .contains(&ns)
    );
}

#[test]
fn routes_meshctl_cannot_represent_are_warnings() {
    // Captured: an `unreachable` and a multipath route, both with proto 157.
    let out = with_record(
        &fixture("hub.out"),
        "route4",
        &fixture("routes4-odd.json"),
        0,
    );
    let live = parse(&out, &hub_spec()).unwrap();
    let v4: Vec<String> = live
        .state
        .routes
        .iter()
        .filter(|r| r.destination.addr().is_ipv4())
        .map(|r| r.destination.to_string())
        .collect();
    assert_eq!(v4, vec!["0.0.0.0/0", "10.9.0.5/32", "192.168.178.0/24"]);
    let warnings = live.warnings.join("\n");
    assert!(warnings.contains("route 10.66.0.0/16 carries meshctl's proto 157"));
    assert!(warnings.contains("route 10.77.0.0/16 carries meshctl's proto 157"));
}

/// Multi-character sysctl values read whole under every shell meshctl may meet as `sh`
/// (dash reads byte by byte, which /proc/sys answers with only the first byte).
#[test]
fn sysctls_read_whole_under_dash_bash_and_busybox() {
    let spec = GatherSpec {
        interface: InterfaceName::parse("fxnone0").unwrap(),
        key_file: "/nonexistent/fx.key".into(),
        sysctls: vec![
            "net.ipv4.ip_local_port_range".into(),
            "kernel.pid_max".into(),
        ],
        chains: vec![],
        files: vec![],
        services: vec![],
        resolve: vec![],
        ndp_range: None,
        ndp_listed_in: None,
        chains_only_beside: Vec::new(),
        psks: vec![],
    };
    let script = gather_script(&spec);
    let expected = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    for shell in [&["dash"][..], &["bash"], &["busybox", "sh"]] {
        let Ok(out) = std::process::Command::new(shell[0])
            .args(&shell[1..])
            .args(["-c", &script])
            .output()
        else {
            continue; // that shell is not installed here
        };
        let live = parse(&String::from_utf8(out.stdout).unwrap(), &spec).unwrap();
        assert_eq!(
            live.state.sysctls["net.ipv4.ip_local_port_range"],
            expected.trim(),
            "{shell:?}"
        );
        assert!(live.state.sysctls["kernel.pid_max"].len() > 1, "{shell:?}");
    }
}

/// A family the desired state has no chains of is looked at for leftovers only beside
/// meshctl's rules file: without it the `*-save` does not run (a record saying why) and the
/// family reads as having no chains; with it, the `*-save` runs. Through the real `sh`.
#[test]
fn leftover_chains_are_read_only_beside_their_rules_file_through_a_real_sh() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.v4").to_str().unwrap().to_owned();
    let spec = GatherSpec {
        interface: InterfaceName::parse("fxnone0").unwrap(),
        key_file: "/nonexistent/fx.key".into(),
        sysctls: vec![],
        chains: vec![chain(Family::Ipv4, "filter", "MESHCTL-FORWARD")],
        files: vec![],
        services: vec![],
        resolve: vec![],
        ndp_range: None,
        ndp_listed_in: None,
        chains_only_beside: vec![(Family::Ipv4, rules.clone())],
        psks: vec![],
    };
    let out = run_sh(&gather_script(&spec), dir.path());
    assert!(
        out.contains("@@meshctl end fw4 rc=96@@"),
        "no rules file: not read\n{out}"
    );
    let live = parse(&out, &spec).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(live.state.firewall.chains.is_empty());
    assert!(live.state.firewall.jumps.is_empty());

    // The same record from a host whose spec wants the family read is the `*-save` failing.
    let mut always = spec.clone();
    always.chains_only_beside.clear();
    assert!(matches!(
        parse(&out, &always),
        Err(FactError::Command { status: 96, .. })
    ));

    // Beside the file, `iptables-save` runs (its status here depends on the machine: 0 as
    // root, 127 where it is not installed, another failure for a user; never the skip's 96).
    std::fs::write(&rules, "*filter\nCOMMIT\n").unwrap();
    let out = run_sh(&gather_script(&spec), dir.path());
    assert!(out.contains("@@meshctl begin fw4@@"), "{out}");
    assert!(!out.contains("@@meshctl end fw4 rc=96@@"), "{out}");
}
