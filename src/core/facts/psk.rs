//! Preshared keys, without their values: per live peer whether it has one and whether it is
//! the content of its file (compared on the host), and each file's mode and SHA-256 (computed
//! on the host), from the `psk.*` records of `m_psk` and `m_pskf`.

use std::collections::BTreeMap;

use super::records::{Records, malformed};
use super::{FactError, GatherSpec, failed};
use crate::state::{Psk, PskFile, WgInterface};

/// Sets each live peer's `preshared_key` from `psk.live`: `none` → `None`, `set` → `Other`,
/// and `same` (after `set`) → `File` of the spec's path for that peer. Without the record (the
/// spec names no preshared keys) the peers keep `None`.
pub(crate) fn parse_live(
    recs: &Records<'_>,
    spec: &GatherSpec,
    wg: &mut WgInterface,
) -> Result<(), FactError> {
    if spec.psks.is_empty() {
        return Ok(());
    }
    let Some(rec) = recs.get("psk.live") else {
        return Ok(());
    };
    if rec.rc != 0 {
        return Err(failed(
            rec,
            "psk.live",
            &format!("wg show {} preshared-keys", spec.interface),
        ));
    }
    let path_of: BTreeMap<&str, &str> = spec
        .psks
        .iter()
        .filter_map(|(k, p)| k.as_ref().map(|k| (k.as_str(), p.as_str())))
        .collect();
    for (n, line) in rec.lines() {
        let bad = |why: &str| malformed("psk.live", n, why.to_owned());
        let (key, what) = line
            .split_once('\t')
            .ok_or_else(|| bad("expected PEER-KEY<TAB>none|set|same"))?;
        // Only a public key is ever looked up here: a line that is not one is not echoed.
        let Some(peer) = wg.peers.get_mut(key) else {
            return Err(bad("a peer that `wg show` did not list"));
        };
        peer.preshared_key = match what.trim() {
            "none" => None,
            "set" => Some(Psk::Other),
            "same" => match path_of.get(key) {
                Some(p) => Some(Psk::File((*p).to_owned())),
                None => return Err(bad("`same` for a peer without a preshared key file")),
            },
            // Not echoed: a value here could be a key.
            _ => return Err(bad("expected none, set or same")),
        };
    }
    Ok(())
}

/// The preshared key files of the spec that exist: mode from `psk.modes` (`MODE PATH`) and
/// SHA-256 from `psk.sha` (`HASH  PATH`); a file in one and not the other is left out (it
/// appeared or vanished between the two commands: the next gather sees it).
pub(crate) fn parse_files(
    recs: &Records<'_>,
    spec: &GatherSpec,
) -> Result<BTreeMap<String, PskFile>, FactError> {
    let mut out = BTreeMap::new();
    if spec.psks.is_empty() {
        return Ok(out);
    }
    let (Some(modes), Some(sha)) = (recs.get("psk.modes"), recs.get("psk.sha")) else {
        return Ok(out);
    };
    for (rec, id, cmd) in [(modes, "psk.modes", "stat"), (sha, "psk.sha", "sha256sum")] {
        if rec.rc != 0 {
            return Err(failed(rec, id, cmd));
        }
    }
    let wanted = |p: &str| spec.psks.iter().any(|(_, w)| w == p);
    let mut mode_of: BTreeMap<&str, u32> = BTreeMap::new();
    for (n, line) in modes.lines() {
        let (m, path) = line
            .split_once(' ')
            .ok_or_else(|| malformed("psk.modes", n, "expected MODE PATH"))?;
        let mode = u32::from_str_radix(m, 8)
            .ok()
            .filter(|_| (1..=4).contains(&m.len()))
            .ok_or_else(|| malformed("psk.modes", n, "not an octal mode"))?;
        if wanted(path) {
            mode_of.insert(path, mode);
        }
    }
    for (n, line) in sha.lines() {
        let (h, path) = line
            .split_once("  ")
            .ok_or_else(|| malformed("psk.sha", n, "expected HASH  PATH"))?;
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("psk.sha", n, "not a SHA-256"));
        }
        if let Some(mode) = mode_of.get(path) {
            out.insert(
                path.to_owned(),
                PskFile {
                    mode: *mode,
                    sha256: h.to_ascii_lowercase(),
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::records;
    use crate::names::{InterfaceName, WgKey};
    use crate::state::Peer;

    const A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const B: &str = "gwSyaptQc4Ro7MuZHihtpjDj+3wfQfTgSECpjCXT1SM=";
    const C: &str = "MWImW/jCzmR9p+vyUiWG4o93uSLVC6/Q/Vz2d0oDcXY=";

    fn spec() -> GatherSpec {
        GatherSpec {
            interface: InterfaceName::parse("wg0").unwrap(),
            key_file: "/etc/wireguard/wg0.key".into(),
            sysctls: vec![],
            chains: vec![],
            files: vec![],
            services: vec![],
            resolve: vec![],
            ndp_range: None,
            ndp_listed_in: None,
            chains_only_beside: Vec::new(),
            psks: vec![
                (
                    Some(WgKey::parse(A).unwrap()),
                    "/etc/wireguard/psk/a.psk".into(),
                ),
                (
                    Some(WgKey::parse(B).unwrap()),
                    "/etc/wireguard/psk/b.psk".into(),
                ),
                (None, "/etc/wireguard/psk/c.psk".into()),
            ],
        }
    }

    fn output(records: &[(&str, &str, i32)]) -> String {
        let mut s = String::from("@@meshctl facts 1@@\n");
        for (id, body, rc) in records {
            s.push_str(&format!(
                "@@meshctl begin {id}@@\n{body}@@meshctl end {id} rc={rc}@@\n"
            ));
        }
        s.push_str("@@meshctl done@@\n");
        s
    }

    fn wg() -> WgInterface {
        let peer = |k: &str| {
            (
                k.to_owned(),
                Peer {
                    public_key: Some(WgKey::parse(k).unwrap()),
                    allowed_ips: Default::default(),
                    endpoint: None,
                    persistent_keepalive: None,
                    preshared_key: None,
                },
            )
        };
        WgInterface {
            name: InterfaceName::parse("wg0").unwrap(),
            addresses: Default::default(),
            listen_port: None,
            public_key: None,
            private_key_file: crate::state::KeyFile {
                path: "/etc/wireguard/wg0.key".into(),
            },
            fwmark: None,
            peers: [peer(A), peer(B), peer(C)].into(),
        }
    }

    #[test]
    fn live_keys_are_none_other_or_their_file() {
        let out = output(&[(
            "psk.live",
            &format!("{A}\tset\n{B}\tset\n{C}\tnone\n{A}\tsame\n"),
            0,
        )]);
        let recs = records::split(&out).unwrap();
        let mut w = wg();
        parse_live(&recs, &spec(), &mut w).unwrap();
        assert_eq!(
            w.peers[A].preshared_key,
            Some(Psk::File("/etc/wireguard/psk/a.psk".into()))
        );
        assert_eq!(w.peers[B].preshared_key, Some(Psk::Other));
        assert_eq!(w.peers[C].preshared_key, None);
    }

    #[test]
    fn malformed_live_lines_are_errors_that_quote_no_key() {
        let secret = "FAKEPSKFAKEPSKFAKEPSKFAKEPSKFAKEPSKFAKEPSK0=";
        for body in [
            format!("{A}\t{secret}\n"),
            format!("{secret}\tset\n"),
            format!("{A} set\n"),
            format!("{C}\tsame\n"),
        ] {
            let out = output(&[("psk.live", &body, 0)]);
            let recs = records::split(&out).unwrap();
            let err = parse_live(&recs, &spec(), &mut wg())
                .unwrap_err()
                .to_string();
            assert!(!err.contains(&secret[..8]), "{err}");
        }
        let out = output(&[("psk.live", "", 1)]);
        let recs = records::split(&out).unwrap();
        assert!(parse_live(&recs, &spec(), &mut wg()).is_err());
    }

    #[test]
    fn files_pair_their_mode_and_hash_and_others_are_ignored() {
        let h = "ab".repeat(32);
        let out = output(&[
            (
                "psk.modes",
                "600 /etc/wireguard/psk/a.psk\n644 /etc/wireguard/psk/c.psk\n600 /etc/other\n",
                0,
            ),
            (
                "psk.sha",
                &format!(
                    "{h}  /etc/wireguard/psk/a.psk\n{}  /etc/wireguard/psk/c.psk\n{h}  /etc/other\n",
                    "CD".repeat(32)
                ),
                0,
            ),
        ]);
        let recs = records::split(&out).unwrap();
        let files = parse_files(&recs, &spec()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["/etc/wireguard/psk/a.psk"].mode, 0o600);
        assert_eq!(files["/etc/wireguard/psk/a.psk"].sha256, h);
        assert_eq!(files["/etc/wireguard/psk/c.psk"].mode, 0o644);
        assert_eq!(files["/etc/wireguard/psk/c.psk"].sha256, "cd".repeat(32));
        for (modes, sha) in [
            ("6x0 /etc/wireguard/psk/a.psk\n", String::new()),
            (
                "600 /etc/wireguard/psk/a.psk\n",
                "nothex  /etc/wireguard/psk/a.psk\n".to_owned(),
            ),
        ] {
            let out = output(&[("psk.modes", modes, 0), ("psk.sha", &sha, 0)]);
            let recs = records::split(&out).unwrap();
            assert!(parse_files(&recs, &spec()).is_err(), "{modes} {sha}");
        }
    }
}
