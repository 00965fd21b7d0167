//! `meshctl verify`'s one remote execution per host: ping every probe's address at once, then
//! print the interface's status (for the handshake check), and the pure parser.
//!
//! Each probe is `ping -n -c 1 -w 3` (3 s: [`DEADLINE_SECS`]; longer right after an apply): it
//! sends a packet a second until one answer comes or the deadline passes, so a tunnel that handshakes on the first packet (or a NAT'd gateway whose endpoint the
//! hub learns a keepalive later) still passes, and a dead path costs 3 s — all probes run in
//! parallel, so a host's whole check takes about that long. The status part is
//! [`super::status::script`], which prints no private key.

use std::net::IpAddr;

use crate::names::InterfaceName;
use crate::scripts::status::{self, Seen, StatusParseError};

/// The first line of the probe part of the output.
pub const HEADER: &str = "@@meshctl verify 1@@";

/// One address a host pings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The address.
    pub address: IpAddr,
}

/// How long `meshctl verify` waits for a probe's answer, in seconds.
pub const DEADLINE_SECS: u32 = 3;

/// The script that runs `probes` (by index) in parallel, each waiting up to `deadline` seconds
/// for an answer, then the status script.
pub fn script(probes: &[Probe], interface: &InterfaceName, deadline: u32) -> String {
    let mut s = format!(
        "export LC_ALL=C
echo '{HEADER}'
probe() {{
  out=$(ping -$2 -n -c 1 -w {deadline} \"$3\" 2>&1); rc=$?
  rtt=$(printf '%s\\n' \"$out\" | sed -n 's/.* time=\\([0-9.]*\\) ms.*/\\1/p' | head -n 1)
  echo \"probe $1 $rc ${{rtt:--}}\"
}}
"
    );
    for (i, p) in probes.iter().enumerate() {
        let family = if p.address.is_ipv4() { 4 } else { 6 };
        s.push_str(&format!("probe {i} {family} {} &\n", p.address));
    }
    s.push_str("wait\n");
    s.push_str(&status::script(interface));
    s
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// Whether an answer came.
    pub ok: bool,
    /// Its round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// Why the output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyParseError {
    /// Not this script's output.
    #[error("the verify output does not start with {HEADER}")]
    NoHeader,
    /// A probe line that does not read, or a probe that printed nothing.
    #[error("verify: {0}")]
    Bad(String),
    /// The status part.
    #[error(transparent)]
    Status(#[from] StatusParseError),
}

/// Parses the output of [`script`] for `count` probes: each probe's result (by index) and the
/// interface's status.
pub fn parse(out: &str, count: usize) -> Result<(Vec<ProbeResult>, Seen), VerifyParseError> {
    let mut lines = out.lines();
    if lines.next() != Some(HEADER) {
        return Err(VerifyParseError::NoHeader);
    }
    let mut results: Vec<Option<ProbeResult>> = vec![None; count];
    let mut rest = String::new();
    let mut in_status = false;
    for l in lines {
        if in_status || l == status::HEADER {
            in_status = true;
            rest.push_str(l);
            rest.push('\n');
            continue;
        }
        let f: Vec<&str> = l.split(' ').collect();
        let ["probe", id, rc, rtt] = f[..] else {
            return Err(VerifyParseError::Bad(format!("unexpected line {l:?}")));
        };
        let id: usize = id
            .parse()
            .ok()
            .filter(|i| *i < count)
            .ok_or_else(|| VerifyParseError::Bad(format!("no probe {id:?}")))?;
        let ok = rc == "0";
        results[id] = Some(ProbeResult {
            ok,
            rtt_ms: rtt.parse().ok().filter(|_| ok),
        });
    }
    let seen = status::parse(&rest)?;
    let results = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| VerifyParseError::Bad(format!("probe {i} printed nothing"))))
        .collect::<Result<_, _>>()?;
    Ok((results, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes() -> Vec<Probe> {
        ["10.8.0.1", "2001:db8:10:0:100::1", "10.8.0.2"]
            .iter()
            .map(|a| Probe {
                address: a.parse().unwrap(),
            })
            .collect()
    }

    #[test]
    fn the_script_pings_each_address_in_its_family_in_parallel() {
        let s = script(&probes(), &InterfaceName::parse("wg0").unwrap(), 3);
        assert!(s.contains("probe 0 4 10.8.0.1 &\n"), "{s}");
        assert!(s.contains("probe 1 6 2001:db8:10:0:100::1 &\n"), "{s}");
        assert!(s.contains("wait\n"), "{s}");
        for forbidden in ["dump", "showconf", "private-key"] {
            assert!(!s.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn results_in_any_order_with_the_status_after_them() {
        let out = format!(
            "{HEADER}\nprobe 2 1 -\nprobe 0 0 0.412\nprobe 1 0 1.5\n{}",
            include_str!("fixtures/status-hub.out")
        );
        let (r, seen) = parse(&out, 3).unwrap();
        assert_eq!(
            r,
            vec![
                ProbeResult {
                    ok: true,
                    rtt_ms: Some(0.412)
                },
                ProbeResult {
                    ok: true,
                    rtt_ms: Some(1.5)
                },
                ProbeResult {
                    ok: false,
                    rtt_ms: None
                },
            ]
        );
        assert_eq!(seen.interface.unwrap().peers.len(), 3);
    }

    #[test]
    fn malformed_output_is_an_error() {
        let status = include_str!("fixtures/status-hub.out");
        assert_eq!(parse("x\n", 1).unwrap_err(), VerifyParseError::NoHeader);
        assert!(matches!(
            parse(&format!("{HEADER}\nprobe 0 0 1\n{status}"), 2),
            Err(VerifyParseError::Bad(m)) if m == "probe 1 printed nothing"
        ));
        assert!(matches!(
            parse(&format!("{HEADER}\nprobe 7 0 1\n{status}"), 2),
            Err(VerifyParseError::Bad(_))
        ));
        assert!(matches!(
            parse(&format!("{HEADER}\nprobe 0 0 1\n"), 1),
            Err(VerifyParseError::Status(StatusParseError::NoHeader))
        ));
    }
}
