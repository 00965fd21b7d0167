//! `meshctl verify` and `meshctl status` without hosts: which paths each host checks on the
//! reference lab topology, how results from the hosts become the matrix and the failing pairs
//! (snapshotted), and the status report with peers named by key.

mod support;

use std::collections::BTreeMap;

use meshctl::names::{HostName, WgKey};
use meshctl::render::Style;
use meshctl::scripts::status::{Seen, SeenInterface, SeenPeer};
use meshctl::scripts::verify::ProbeResult;
use meshctl::verify::{self, Target};
use support::core::*;

fn lab() -> Fixture {
    Fixture::repo("lab.yaml", &ALL_HOST_KEYS)
}

fn labels(t: &[Target]) -> Vec<String> {
    t.iter()
        .map(|t| format!("{} {}", t.label, t.address))
        .collect()
}

/// `host`'s interface with `peers` (name, handshake age) at time 1000.
fn seen(peers: &[(&str, Option<u64>)]) -> Seen {
    let key = |n: &str| {
        let k = ALL_HOST_KEYS.iter().find(|(h, _)| *h == n).unwrap().1;
        WgKey::parse(k).unwrap()
    };
    Seen {
        now: 1000,
        interface: Some(SeenInterface {
            link: "UP".into(),
            peers: peers
                .iter()
                .map(|(n, age)| {
                    (
                        key(n),
                        SeenPeer {
                            endpoint: Some("198.51.100.2:51820".into()),
                            latest_handshake: age.map(|a| 1000 - a),
                            rx: 4096,
                            tx: 2048,
                        },
                    )
                })
                .collect(),
            ..SeenInterface::default()
        }),
    }
}

#[test]
fn every_host_checks_the_others_and_clients_check_the_home_lan() {
    let fx = lab();
    let t = verify::targets(&fx.inputs.inventory, &fx.desired());
    assert_eq!(
        t.keys().map(HostName::as_str).collect::<Vec<_>>(),
        ["laptop", "nas", "vps"],
        "managed hosts only: the phone is not asked"
    );
    assert_eq!(
        labels(&t[&host("laptop")]),
        [
            "nas 10.8.0.2",
            "vps 10.8.0.1",
            "vps v6 2001:db8:10:0:100::1",
            "nas LAN 192.168.178.10"
        ]
    );
    assert_eq!(
        labels(&t[&host("nas")]),
        ["laptop 10.8.0.10", "vps 10.8.0.1"],
        "no IPv6 from a host without an IPv6 address"
    );
    assert_eq!(
        labels(&t[&host("vps")]),
        [
            "laptop 10.8.0.10",
            "laptop v6 2001:db8:10:0:100::a",
            "nas 10.8.0.2"
        ]
    );
}

#[test]
fn failing_pairs_are_named_and_the_matrix_shows_them() {
    let fx = lab();
    let inv = &fx.inputs.inventory;
    let targets = verify::targets(inv, &fx.desired());
    let ok = |ms| ProbeResult {
        ok: true,
        rtt_ms: Some(ms),
    };
    let bad = ProbeResult {
        ok: false,
        rtt_ms: None,
    };
    let mut outcomes = BTreeMap::new();
    outcomes.insert(
        host("laptop"),
        Ok((
            vec![bad, ok(0.31), ok(0.42), bad],
            seen(&[("vps", Some(12))]),
        )),
    );
    outcomes.insert(
        host("vps"),
        Ok((
            vec![ok(0.5), ok(0.61), ok(1.25)],
            seen(&[("laptop", Some(12)), ("nas", None), ("phone", None)]),
        )),
    );
    outcomes.insert(
        host("nas"),
        Err("cannot connect to nas: Connection refused".into()),
    );
    let report = verify::build(inv, &fx.inputs.keys, &targets, &outcomes);
    assert_eq!(
        report.failures(),
        [
            "nas: could not run the check: cannot connect to nas: Connection refused",
            "laptop → nas (10.8.0.2)",
            "laptop → nas LAN (192.168.178.10)",
            "vps: never a handshake with nas",
        ],
        "the phone (unmanaged) is not required to be online"
    );
    assert!(!report.ok());
    let text = verify::text(&report, Style { color: false });
    insta::assert_snapshot!("verify_matrix_failing", text);
    let json: serde_json::Value = serde_json::from_str(&verify::json(&report)).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["results"].as_array().unwrap().len(), 7);
}

#[test]
fn status_names_peers_by_key_and_counts_online_ones() {
    let fx = lab();
    let inv = &fx.inputs.inventory;
    let mut s = seen(&[("laptop", Some(12)), ("nas", Some(200)), ("phone", None)]);
    s.interface.as_mut().unwrap().peers.insert(
        WgKey::parse(STRANGER).unwrap(),
        SeenPeer {
            latest_handshake: Some(990),
            ..SeenPeer::default()
        },
    );
    let mut all = BTreeMap::new();
    all.insert(host("vps"), Ok(s));
    all.insert(host("nas"), Err("cannot connect to nas: timed out".into()));
    all.insert(host("laptop"), Ok(Seen::default()));
    let report = meshctl::status::build(inv, &fx.inputs.keys, &all, 180);
    let text = meshctl::status::text(&report, Style { color: false });
    insta::assert_snapshot!("status_table", text);
    let vps = &report.hosts[2];
    let online: Vec<_> = vps
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.online))
        .collect();
    assert_eq!(
        online,
        [
            (Some("laptop".into()), true),
            (Some("nas".into()), false),
            (Some("phone".into()), false),
            (None, true),
        ]
    );
}
