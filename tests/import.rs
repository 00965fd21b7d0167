//! `meshctl import`'s inference (`meshctl::import::infer`) on fixture live states of a network
//! built by hand: a VPS hub with a phone and an unnamed peer only in its config, a NAS that
//! forwards its LAN, a laptop. The written inventory loads with the inventory loader, the keys
//! are pinned, what could not be mapped is listed, and a plan from it against the same live
//! states removes no peer and changes no key.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use meshctl::import::{Observed, infer};
use meshctl::names::{InterfaceName, WgKey};
use meshctl::plan::Action;
use meshctl::state::{KeyFile, LiveHost, ManagedFile, Peer, WgInterface};
use support::core::{Fixture, LAPTOP, NAS, PHONE, STRANGER, TABLET, VPS, host, system};

fn key(k: &str) -> WgKey {
    WgKey::parse(k).unwrap()
}

fn peer(k: &str, allowed: &[&str], endpoint: Option<&str>, keepalive: Option<u16>) -> Peer {
    Peer {
        public_key: Some(key(k)),
        allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        endpoint: endpoint.map(str::to_owned),
        persistent_keepalive: keepalive,
        preshared_key: None,
    }
}

/// A host as the gather reports it: wg0 with `addresses` and `peers` (keyed by public key, as
/// facts report peers no pin names), its wg-quick config (key values blanked, as on the host).
fn live(
    name: &str,
    pubkey: &str,
    addresses: &[&str],
    port: Option<u16>,
    peers: Vec<Peer>,
    conf: &str,
) -> LiveHost {
    let mut files = BTreeMap::new();
    files.insert(
        "/etc/wireguard/wg0.conf".to_owned(),
        ManagedFile {
            content: conf.to_owned(),
            mode: 0o600,
        },
    );
    let mut l = LiveHost {
        host: Some(host(name)),
        system: system(),
        ..LiveHost::default()
    };
    l.state.interface = Some(WgInterface {
        name: InterfaceName::parse("wg0").unwrap(),
        addresses: addresses
            .iter()
            .map(|a| a.parse().unwrap())
            .collect::<BTreeSet<_>>(),
        listen_port: port,
        public_key: Some(key(pubkey)),
        private_key_file: KeyFile {
            path: "/etc/wireguard/wg0.key".into(),
        },
        fwmark: None,
        peers: peers
            .into_iter()
            .map(|p| (p.public_key.as_ref().unwrap().to_string(), p))
            .collect(),
    });
    l.state.files = files;
    // What the gather resolves on the host for the endpoint name (`GatherSpec::resolve`).
    l.resolved.insert(
        "vps.example.net".into(),
        vec!["198.51.100.10".parse().unwrap()],
    );
    l
}

const HUB_CONF: &str = "[Interface]
Address = 10.8.0.1/24, 2001:db8:42:0:100::1/72
ListenPort = 51820
PrivateKey =
MTU = 1420
PostUp = iptables -t nat -A POSTROUTING -s 10.8.0.0/24 -o ens3 -j MASQUERADE
PostUp = ip6tables -A FORWARD -o wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT

# nas
[Peer]
PublicKey = MWImW/jCzmR9p+vyUiWG4o93uSLVC6/Q/Vz2d0oDcXY=
AllowedIPs = 10.8.0.2/32, 192.168.178.0/24, 2001:db8:77::/64

# laptop
[Peer]
PublicKey = D0XM6kWW/LZWjOOgBVkAp8xJsp4BLCNJsEZHpEY4Rj0=
AllowedIPs = 10.8.0.10/32, 2001:db8:42:0:100::a/128

# Anna's Phone
[Peer]
PublicKey = OCO5ZvqkqiQdK4QiFK3CNZwcoZ2EQ2RHFvDcARXSyxQ=
AllowedIPs = 10.8.0.11/32, 2001:db8:42:0:100::b/128

[Peer]
PublicKey = 6xlc5ehlcoXY+eK5taEoEpbvkrfPeseK3emDksgweSQ=
AllowedIPs = 10.8.0.12/32
";

fn network() -> Vec<Observed> {
    let hub = live(
        "vps",
        VPS,
        &["10.8.0.1/24", "2001:db8:42:0:100::1/72"],
        Some(51820),
        vec![
            peer(
                NAS,
                &["10.8.0.2/32", "192.168.178.0/24", "2001:db8:77::/64"],
                Some("203.0.113.7:40000"),
                None,
            ),
            peer(
                LAPTOP,
                &["10.8.0.10/32", "2001:db8:42:0:100::a/128"],
                None,
                None,
            ),
            peer(
                PHONE,
                &["10.8.0.11/32", "2001:db8:42:0:100::b/128"],
                None,
                None,
            ),
            peer(TABLET, &["10.8.0.12/32"], None, None),
        ],
        HUB_CONF,
    );
    let nas = live(
        "nas",
        NAS,
        &["10.8.0.2/24"],
        None,
        vec![peer(
            VPS,
            &["10.8.0.0/24"],
            Some("198.51.100.10:51820"),
            Some(25),
        )],
        "[Interface]\nAddress = 10.8.0.2/24\nPrivateKey =\nPostUp = iptables -A FORWARD -i wg0 -o eth1 -j ACCEPT\n\n[Peer]\nPublicKey = x/mx1BYRsLAiujkK0jxj1w7VcUqhmtKsX+NjQA+VdV0=\nEndpoint = vps.example.net:51820\nAllowedIPs = 10.8.0.0/24\nPersistentKeepalive = 25\n",
    );
    let laptop = live(
        "laptop",
        LAPTOP,
        &["10.8.0.10/24", "2001:db8:42:0:100::a/72"],
        None,
        vec![peer(
            VPS,
            &["10.8.0.0/24", "192.168.178.0/24", "::/0"],
            Some("198.51.100.10:51820"),
            Some(25),
        )],
        "[Interface]\nAddress = 10.8.0.10/24\nPrivateKey =\nDNS = 10.8.0.1\n\n[Peer]\nPublicKey = x/mx1BYRsLAiujkK0jxj1w7VcUqhmtKsX+NjQA+VdV0=\nEndpoint = vps.example.net:51820\nAllowedIPs = 10.8.0.0/24, 192.168.178.0/24, ::/0\nPersistentKeepalive = 25\n",
    );
    vec![
        Observed {
            name: host("vps"),
            ssh: "root@vps".into(),
            live: hub,
        },
        Observed {
            name: host("nas"),
            ssh: "admin@192.168.178.10".into(),
            live: nas,
        },
        Observed {
            name: host("laptop"),
            ssh: "me@laptop".into(),
            live: laptop,
        },
    ]
}

#[test]
fn the_inferred_inventory_validates_and_maps_every_peer() {
    let obs = network();
    let imported = infer(&obs, "wg0").expect("a hub is found");
    insta::assert_snapshot!("imported_yaml", imported.yaml);
    let keys: Vec<(&str, &str)> = imported
        .pins
        .keys
        .iter()
        .map(|(h, k)| (h.as_str(), k.as_str()))
        .collect();
    assert_eq!(keys, vec![("laptop", LAPTOP), ("nas", NAS), ("vps", VPS)]);
    let fx = Fixture::new("imported.yaml", &imported.yaml, &keys, None);
    let inv = &fx.inputs.inventory;
    let role = |h: &str| inv.hosts[&host(h)].role.name();
    assert_eq!(role("vps"), "hub");
    assert_eq!(role("nas"), "gateway");
    assert_eq!(role("laptop"), "client");
    // The phone is named from its comment, the uncommented peer numbered; both unmanaged
    // with their keys.
    let phone = &inv.hosts[&host("anna-s-phone")];
    assert!(!phone.is_managed());
    assert_eq!(phone.public_key.as_ref().unwrap().as_str(), PHONE);
    let other = &inv.hosts[&host("peer-1")];
    assert_eq!(other.public_key.as_ref().unwrap().as_str(), TABLET);
    let (_, hub) = inv.hub();
    assert_eq!(hub.endpoint, "vps.example.net");
    assert_eq!(hub.wan_interface.as_str(), "ens3");
    assert!(hub.nat);
    let lans = inv.lans();
    assert_eq!(lans[0].1.subnet.to_string(), "192.168.178.0/24");
    assert_eq!(lans[0].1.interface.as_str(), "eth1");
    assert_eq!(lans[0].1.address.to_string(), "192.168.178.10");
    assert_eq!(
        lans[0].1.ipv6_prefix.unwrap().to_string(),
        "2001:db8:77::/64"
    );
    assert_eq!(inv.network.mtu, Some(1420));
    assert_eq!(inv.network.dns.len(), 1);
    assert_eq!(inv.network.ipv4.to_string(), "10.8.0.0/24");
    assert_eq!(
        inv.network.ipv6.as_ref().unwrap().clients.to_string(),
        "2001:db8:42:0:100::/72"
    );
    assert!(
        imported.unmapped.iter().any(|u| u.contains("routers")),
        "{:?}",
        imported.unmapped
    );
    assert!(!imported.yaml.contains(STRANGER));
}

#[test]
fn a_plan_from_the_import_removes_no_peer_and_changes_no_key() {
    let obs = network();
    let imported = infer(&obs, "wg0").unwrap();
    let keys: Vec<(&str, &str)> = imported
        .pins
        .keys
        .iter()
        .map(|(h, k)| (h.as_str(), k.as_str()))
        .collect();
    let fx = Fixture::new("imported.yaml", &imported.yaml, &keys, None);
    let desired = fx.desired();
    let live: BTreeMap<_, _> = obs
        .iter()
        .map(|o| (o.name.clone(), Ok(o.live.clone())))
        .collect();
    let plan = meshctl::planner::build(&fx.inputs, &desired, &live);
    for hp in &plan.hosts {
        assert!(hp.error.is_none(), "{}: {:?}", hp.host, hp.error);
        for c in &hp.changes {
            let what = format!(
                "{}: {} {} {}",
                hp.host,
                c.action.symbol(),
                c.kind,
                c.resource
            );
            assert!(
                !(c.action == Action::Remove && c.kind.contains("peer")),
                "removes a peer: {what}"
            );
            // The only key change allowed is the key *file*: the hand-made config holds the key
            // inline, and apply's first step writes the running interface's key into the file
            // (`wg show wg0 private-key`, see src/core/scripts/steps.rs) — the public key stays.
            if c.kind.contains("key") {
                assert_eq!(c.action, Action::Add, "changes a key: {what}");
                assert!(c.resource.contains("/etc/wireguard/wg0.key"), "{what}");
            }
            // A peer may be added, or normalised: the same key, AllowedIPs only widened (the
            // NAS's peer gains the IPv6 ranges its LAN's prefix needs); never removed.
            if c.kind == "peer" && c.action == Action::Change {
                let field = |s: &Option<String>, name: &str| -> Vec<String> {
                    let s = s.as_deref().unwrap_or("");
                    let words: Vec<&str> = s.split_whitespace().collect();
                    let i = words.iter().position(|w| *w == name).expect(name);
                    words[i + 1].split(',').map(str::to_owned).collect()
                };
                assert_eq!(field(&c.before, "key"), field(&c.after, "key"), "{what}");
                let after = field(&c.after, "allowed-ips");
                for a in field(&c.before, "allowed-ips") {
                    assert!(after.contains(&a), "{what}: {a} dropped");
                }
            }
        }
    }
}

#[test]
fn no_hub_is_an_error_naming_the_interface() {
    let mut obs = network();
    obs.retain(|o| o.name.as_str() != "vps");
    let e = infer(&obs, "wg0").unwrap_err();
    assert!(e.to_string().contains("wg0 with a listen port"), "{e}");
}
