//! `meshctl status`'s one remote execution per host: a script that prints the interface's
//! runtime state, and its pure parser.
//!
//! The script asks `wg` only for what prints public data — `public-key`, `listen-port`,
//! `endpoints`, `latest-handshakes`, `transfer` — and never for `wg show IF` in full, `dump`,
//! `showconf` or `private-key`, which print the private (and preshared) keys: nothing that
//! could hold a secret leaves the host. The host's own clock (`date +%s`) comes along, so ages
//! are computed against the clock the handshake times were taken with.

use std::collections::BTreeMap;

use crate::names::{InterfaceName, WgKey};
use crate::shell::quote;

/// The first line of the script's output (its format's version).
pub const HEADER: &str = "@@meshctl status 1@@";
/// The last line: everything before it was printed.
pub const DONE: &str = "@@meshctl done@@";

/// The script that prints `interface`'s state (see the module's documentation).
pub fn script(interface: &InterfaceName) -> String {
    let i = quote(interface.as_str());
    format!(
        "export LC_ALL=C
echo '{HEADER}'
echo \"now $(date +%s)\"
if ! ip link show dev {i} >/dev/null 2>&1; then
  echo 'nointerface {interface}'
  echo '{DONE}'
  exit 0
fi
state=$(ip -o link show dev {i} | sed -n 's/.* state \\([A-Z]*\\).*/\\1/p')
echo \"link {interface} ${{state:-UNKNOWN}}\"
for what in public-key listen-port endpoints latest-handshakes transfer; do
  case $what in
    public-key) tag=self ;; listen-port) tag=port ;; endpoints) tag=endpoint ;;
    latest-handshakes) tag=handshake ;; transfer) tag=transfer ;;
  esac
  wg show {i} \"$what\" | sed \"s/^/$tag\t/\" || echo \"error wg show {interface} $what failed\"
done
echo '{DONE}'
"
    )
}

/// One host's interface as the script saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The host's clock (seconds since the epoch).
    pub now: u64,
    /// The interface, or `None` when the host has none of that name.
    pub interface: Option<SeenInterface>,
}

/// A live WireGuard interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenInterface {
    /// `UP`, `UNKNOWN` (wireguard-go's tun), `DOWN`.
    pub link: String,
    /// Its public key (`None`: no private key set).
    pub public_key: Option<WgKey>,
    /// Its UDP port (`None`: not listening).
    pub listen_port: Option<u16>,
    /// Its peers by public key.
    pub peers: BTreeMap<WgKey, SeenPeer>,
    /// Errors the script reported (a `wg show` that failed).
    pub errors: Vec<String>,
}

/// A peer as the interface sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenPeer {
    /// Where its packets last came from (`None`: never heard from, no endpoint configured).
    pub endpoint: Option<String>,
    /// The last handshake (host clock, seconds since the epoch); `None`: never.
    pub latest_handshake: Option<u64>,
    /// Bytes received from it.
    pub rx: u64,
    /// Bytes sent to it.
    pub tx: u64,
}

/// Why the output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusParseError {
    /// The output does not start with [`HEADER`] (not this script's output, or a shell that
    /// printed something first).
    #[error("the status output does not start with {HEADER}")]
    NoHeader,
    /// The output stops before [`DONE`] (the script was cut off).
    #[error("the status output is cut off (no {DONE})")]
    Truncated,
    /// A line that does not read.
    #[error("status line {line}: {why}: {text:?}")]
    Bad {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
        /// The line.
        text: String,
    },
}

/// Parses the script's output.
pub fn parse(out: &str) -> Result<Seen, StatusParseError> {
    let mut lines = out.lines().enumerate();
    match lines.next() {
        Some((_, HEADER)) => {}
        _ => return Err(StatusParseError::NoHeader),
    }
    let mut seen = Seen::default();
    let mut wg: Option<SeenInterface> = None;
    let mut done = false;
    for (n, text) in lines {
        let bad = |why| StatusParseError::Bad {
            line: n + 1,
            why,
            text: text.to_owned(),
        };
        if text == DONE {
            done = true;
            break;
        }
        if text.is_empty() {
            continue;
        }
        let (tag, rest) = text
            .split_once(['\t', ' '])
            .ok_or_else(|| bad("no value"))?;
        let fields: Vec<&str> = rest.split('\t').collect();
        let key = |s: &str| WgKey::parse(s).map_err(|_| bad("not a public key"));
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad("not a number"));
        match tag {
            "now" => seen.now = num(rest)?,
            "nointerface" => wg = None,
            "link" => {
                wg = Some(SeenInterface {
                    link: rest.split(' ').nth(1).unwrap_or("UNKNOWN").to_owned(),
                    ..SeenInterface::default()
                })
            }
            "error" => {
                if let Some(w) = wg.as_mut() {
                    w.errors.push(rest.to_owned());
                }
            }
            _ => {
                let w = wg
                    .as_mut()
                    .ok_or_else(|| bad("interface data before `link`"))?;
                match (tag, &fields[..]) {
                    ("self", ["(none)"]) => w.public_key = None,
                    ("self", [k]) => w.public_key = Some(key(k)?),
                    ("port", [p]) => {
                        let p = u16::try_from(num(p)?).map_err(|_| bad("not a port"))?;
                        w.listen_port = (p != 0).then_some(p);
                    }
                    ("endpoint", [k, e]) => {
                        w.peers.entry(key(k)?).or_default().endpoint =
                            (*e != "(none)").then(|| (*e).to_owned());
                    }
                    ("handshake", [k, t]) => {
                        let t = num(t)?;
                        w.peers.entry(key(k)?).or_default().latest_handshake =
                            (t != 0).then_some(t);
                    }
                    ("transfer", [k, rx, tx]) => {
                        let (rx, tx) = (num(rx)?, num(tx)?);
                        let p = w.peers.entry(key(k)?).or_default();
                        (p.rx, p.tx) = (rx, tx);
                    }
                    _ => return Err(bad("unknown record")),
                }
            }
        }
    }
    if !done {
        return Err(StatusParseError::Truncated);
    }
    seen.interface = wg;
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = include_str!("fixtures/status-hub.out");
    const NAS: &str = "MWImW/jCzmR9p+vyUiWG4o93uSLVC6/Q/Vz2d0oDcXY=";
    const PHONE: &str = "OCO5ZvqkqiQdK4QiFK3CNZwcoZ2EQ2RHFvDcARXSyxQ=";

    #[test]
    fn the_script_never_asks_for_anything_that_prints_a_private_key() {
        let s = script(&InterfaceName::parse("wg0").unwrap());
        for forbidden in ["dump", "showconf", "private-key", "preshared"] {
            assert!(!s.contains(forbidden), "{forbidden} in:\n{s}");
        }
        // Every `wg show` names what it shows (a bare `wg show wg0` prints the keys too).
        assert!(s.contains("wg show wg0 \"$what\""), "{s}");
    }

    #[test]
    fn a_hub_with_an_online_a_stale_and_a_never_seen_peer() {
        let seen = parse(HUB).unwrap();
        assert_eq!(seen.now, 1_764_000_000);
        let wg = seen.interface.unwrap();
        assert_eq!(wg.link, "UNKNOWN");
        assert_eq!(wg.listen_port, Some(51820));
        assert_eq!(wg.peers.len(), 3);
        let nas = &wg.peers[&WgKey::parse(NAS).unwrap()];
        assert_eq!(nas.endpoint.as_deref(), Some("198.51.100.20:40021"));
        assert_eq!(nas.latest_handshake, Some(1_763_999_988));
        assert_eq!((nas.rx, nas.tx), (123_456, 7_890_123));
        let phone = &wg.peers[&WgKey::parse(PHONE).unwrap()];
        assert_eq!(
            phone,
            &SeenPeer::default(),
            "never seen: no endpoint, no handshake"
        );
    }

    #[test]
    fn no_interface_is_not_an_error() {
        let seen = parse(include_str!("fixtures/status-nointerface.out")).unwrap();
        assert_eq!(seen.interface, None);
    }

    #[test]
    fn malformed_output_names_the_line() {
        let err = parse(include_str!("fixtures/status-malformed.out")).unwrap_err();
        assert_eq!(
            err,
            StatusParseError::Bad {
                line: 6,
                why: "not a public key",
                text: "handshake\tnot-a-key\t12".into()
            }
        );
        assert_eq!(parse("hello\n"), Err(StatusParseError::NoHeader));
        assert_eq!(
            parse(&HUB.replace(DONE, "")),
            Err(StatusParseError::Truncated)
        );
        let bad_number = HUB.replace("123456", "12x");
        assert!(matches!(
            parse(&bad_number),
            Err(StatusParseError::Bad {
                why: "not a number",
                ..
            })
        ));
    }
}
