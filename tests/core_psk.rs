//! Preshared keys in the pure core: the inventory switch and its errors, the desired state
//! (a file per pair, never a value), the diff of a peer's live key against its file, the
//! cross-host comparison of the two ends' file hashes, rotation, and saved plans whose keys
//! are slots. Cases are the reference topology (`inventory/example.yaml`) with
//! `network.preshared_keys: true`, converged, then drifted the way a host drifts.

mod support;

use std::collections::BTreeMap;

use meshctl::names::HostName;
use meshctl::plan::{Action, Op, Plan};
use meshctl::planner::{self, Gathered};
use meshctl::psk::{self, PskWork};
use meshctl::state::Psk;
use support::core::*;

fn with_psk(extra: &[(&str, &str)]) -> String {
    let mut text = edit(
        &repo_text("inventory/example.yaml"),
        "  mtu: 1420",
        "  preshared_keys: true\n  mtu: 1420",
    );
    for (from, to) in extra {
        text = edit(&text, from, to);
    }
    text
}

impl Case {
    fn new(text: &str) -> Self {
        Self::from_fixture(Fixture::new("home.yaml", text, &ALL_HOST_KEYS, None))
    }

    fn plan_with(&self, work: PskWork) -> Plan {
        let inputs = planner::Inputs {
            psk: work,
            ..self.fx.inputs.clone()
        };
        planner::build(&inputs, &self.desired, &self.live)
    }
}

fn resources(plan: &Plan, name: &str) -> Vec<String> {
    plan.hosts
        .iter()
        .find(|h| h.host.as_str() == name)
        .unwrap()
        .changes
        .iter()
        .map(|c| format!("{} {}", c.action.symbol(), c.resource))
        .collect()
}

fn load(peer: &str, key: &str, path: &str) -> Op {
    Op::LoadPsk {
        interface: "wg0".into(),
        name: peer.into(),
        public_key: Some(meshctl::names::WgKey::parse(key).unwrap()),
        path: Some(path.into()),
    }
}

fn write(path: &str) -> Op {
    Op::WritePsk {
        path: path.into(),
        from: host("vps"),
        source: String::new(),
    }
}

/// `write_psk` ops with their source blanked (compared by path and origin).
fn writes(plan: &Plan, name: &str) -> Vec<Op> {
    ops(plan, name)
        .into_iter()
        .filter_map(|o| match o {
            Op::WritePsk { path, from, .. } => Some(Op::WritePsk {
                path,
                from,
                source: String::new(),
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn every_pair_has_a_file_on_both_ends_and_the_configs_load_it_from_there() {
    let case = Case::new(&with_psk(&[]));
    let vps = case.desired[&host("vps")].state.interface.clone().unwrap();
    for (peer, p) in &vps.peers {
        assert_eq!(
            p.preshared_key,
            Some(Psk::File(format!("/etc/wireguard/psk/{peer}.psk"))),
            "{peer}"
        );
    }
    let laptop = case.desired[&host("laptop")]
        .state
        .interface
        .clone()
        .unwrap();
    assert_eq!(
        laptop.peers["vps"].preshared_key,
        Some(Psk::File("/etc/wireguard/psk/vps.psk".into()))
    );
    let conf = &case.desired[&host("laptop")].state.files["/etc/wireguard/wg0.conf"].content;
    assert!(
        conf.contains(&format!(
            "PostUp = wg set %i peer {VPS} preshared-key /etc/wireguard/psk/vps.psk\n"
        )),
        "{conf}"
    );
    assert!(!conf.contains("PresharedKey"), "{conf}");
}

#[test]
fn a_converged_network_with_preshared_keys_has_no_changes() {
    let plan = Case::new(&with_psk(&[])).plan();
    assert!(!plan.has_changes(), "{:#?}", plan.hosts);
}

#[test]
fn a_missing_hub_file_is_generated_there_and_carried_to_the_managed_end() {
    let mut case = Case::new(&with_psk(&[]));
    let hub = case.live("vps");
    hub.psk_files.remove("/etc/wireguard/psk/laptop.psk");
    for p in hub.state.interface.as_mut().unwrap().peers.values_mut() {
        if p.public_key.as_ref().map(|k| k.as_str()) == Some(LAPTOP) {
            p.preshared_key = None;
        }
    }
    let plan = case.plan();
    let vps = ops(&plan, "vps");
    assert!(vps.contains(&Op::GeneratePsk {
        path: "/etc/wireguard/psk/laptop.psk".into()
    }));
    assert!(vps.contains(&load("laptop", LAPTOP, "/etc/wireguard/psk/laptop.psk")));
    assert_eq!(
        writes(&plan, "laptop"),
        vec![write("/etc/wireguard/psk/vps.psk")]
    );
    assert!(
        ops(&plan, "laptop").contains(&load("vps", VPS, "/etc/wireguard/psk/vps.psk")),
        "the laptop reloads the key it is given"
    );
    assert!(ops(&plan, "nas").is_empty(), "the other pair is left alone");
    assert!(
        resources(&plan, "vps").contains(&"+ preshared key for laptop (set)".to_owned()),
        "{:?}",
        resources(&plan, "vps")
    );
}

#[test]
fn an_other_end_whose_file_hash_differs_gets_the_hubs_key_and_reloads_it() {
    let mut case = Case::new(&with_psk(&[]));
    // Its file was replaced by hand; the interface still holds the old key (now not the
    // file's: the host said so).
    let nas = case.live("nas");
    nas.psk_files
        .get_mut("/etc/wireguard/psk/vps.psk")
        .unwrap()
        .sha256 = "0".repeat(64);
    let plan = case.plan();
    assert!(ops(&plan, "vps").is_empty(), "{:?}", ops(&plan, "vps"));
    assert_eq!(
        writes(&plan, "nas"),
        vec![write("/etc/wireguard/psk/vps.psk")]
    );
    assert!(ops(&plan, "nas").contains(&load("vps", VPS, "/etc/wireguard/psk/vps.psk")));
    // What apply reads, and from where.
    assert_eq!(
        plan.carried_psks().into_iter().collect::<Vec<_>>(),
        vec![(host("vps"), "/etc/wireguard/psk/nas.psk".to_owned())]
    );
}

#[test]
fn a_key_removed_by_hand_from_the_interface_is_loaded_again_from_its_file() {
    let mut case = Case::new(&with_psk(&[]));
    let wg = case.live("vps").state.interface.as_mut().unwrap();
    wg.peers.get_mut(NAS).unwrap().preshared_key = None;
    let plan = case.plan();
    assert_eq!(
        ops(&plan, "vps"),
        vec![load("nas", NAS, "/etc/wireguard/psk/nas.psk")]
    );
    assert_eq!(
        resources(&plan, "vps"),
        vec!["~ preshared key for nas (set)".to_owned()]
    );
    assert!(plan.carried_psks().is_empty(), "nothing travels");
}

#[test]
fn a_stale_live_key_on_the_other_end_is_reloaded_from_its_file() {
    let mut case = Case::new(&with_psk(&[]));
    let wg = case.live("laptop").state.interface.as_mut().unwrap();
    wg.peers.get_mut(VPS).unwrap().preshared_key = Some(Psk::Other);
    let plan = case.plan();
    assert_eq!(
        ops(&plan, "laptop"),
        vec![load("vps", VPS, "/etc/wireguard/psk/vps.psk")]
    );
}

#[test]
fn a_key_file_readable_by_others_is_made_0600() {
    let mut case = Case::new(&with_psk(&[]));
    let f = case.live("laptop");
    f.psk_files
        .get_mut("/etc/wireguard/psk/vps.psk")
        .unwrap()
        .mode = 0o644;
    let plan = case.plan();
    assert_eq!(
        ops(&plan, "laptop"),
        vec![Op::FixKeyMode {
            path: "/etc/wireguard/psk/vps.psk".into()
        }]
    );
}

#[test]
fn a_host_saying_no_has_no_preshared_key_and_one_set_by_hand_is_taken_off() {
    let mut case = Case::new(&with_psk(&[(
        "    tunnel: split",
        "    tunnel: split\n    preshared_key: false",
    )]));
    let laptop = case.desired[&host("laptop")]
        .state
        .interface
        .clone()
        .unwrap();
    assert_eq!(laptop.peers["vps"].preshared_key, None);
    assert!(!case.plan().has_changes());
    let wg = case.live("laptop").state.interface.as_mut().unwrap();
    wg.peers.get_mut(VPS).unwrap().preshared_key = Some(Psk::Other);
    let plan = case.plan();
    assert_eq!(
        ops(&plan, "laptop"),
        vec![Op::LoadPsk {
            interface: "wg0".into(),
            name: "vps".into(),
            public_key: Some(meshctl::names::WgKey::parse(VPS).unwrap()),
            path: None,
        }]
    );
    assert_eq!(
        resources(&plan, "laptop"),
        vec!["~ preshared key for vps (remove)".to_owned()]
    );
}

#[test]
fn the_hub_takes_no_preshared_key_of_its_own_and_says_where() {
    let text = with_psk(&[(
        "    role: hub\n",
        "    role: hub\n    preshared_key: true\n",
    )]);
    let err = meshctl::inventory::parse(&text, "home.yaml", std::path::Path::new("home.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("home.yaml:19:20:"), "{err}");
    assert!(
        err.contains("`preshared_key` does not apply to hub"),
        "{err}"
    );
    assert!(err.contains("network.preshared_keys"), "{err}");
}

#[test]
fn rotating_the_hubs_keys_replaces_every_pair_and_names_the_phone() {
    let case = Case::new(&with_psk(&[]));
    let plan = case.plan_with(PskWork {
        rotate: [host("vps")].into(),
    });
    let vps = ops(&plan, "vps");
    for peer in ["laptop", "nas", "phone"] {
        let path = format!("/etc/wireguard/psk/{peer}.psk");
        assert!(vps.contains(&Op::RotatePsk { path }), "{peer}: {vps:?}");
    }
    assert!(resources(&plan, "vps").contains(&"~ preshared key for laptop (rotate)".to_owned()));
    for peer in ["laptop", "nas"] {
        assert_eq!(
            writes(&plan, peer),
            vec![write("/etc/wireguard/psk/vps.psk")]
        );
        assert!(ops(&plan, peer).contains(&load("vps", VPS, "/etc/wireguard/psk/vps.psk")));
    }
    assert_eq!(
        psk::unmanaged_rotated(
            &case.fx.inputs.inventory,
            &PskWork {
                rotate: [host("vps")].into(),
            }
        ),
        vec![host("phone")]
    );
    // Its key was made by meshctl (pinned, no `public_key:`): its config comes with a new key.
    assert!(
        plan.manual_steps.iter().any(|s| s.subject == "phone"
            && s.text
                .contains("`meshctl client phone --new-key --qr`, then `meshctl apply`")),
        "{:?}",
        plan.manual_steps
    );
    // A key made on the device stays: `client phone --qr`. One never handed out: nothing.
    let device = Case::new(&with_psk(&[(
        "    address: 10.8.0.11\n",
        &format!("    address: 10.8.0.11\n    public_key: {PHONE}\n"),
    )]));
    let inv = &device.fx.inputs.inventory;
    assert_eq!(
        psk::hand_out_again(inv, &device.fx.inputs.keys, &host("phone")).as_deref(),
        Some("`meshctl client phone --qr`")
    );
    let mut unpinned = case.fx.inputs.keys.clone();
    unpinned.keys.remove(&host("phone"));
    assert_eq!(
        psk::hand_out_again(&case.fx.inputs.inventory, &unpinned, &host("phone")),
        None
    );
    // Rotating one host's pair touches that pair only.
    let plan = case.plan_with(PskWork {
        rotate: [host("nas")].into(),
    });
    assert!(ops(&plan, "laptop").is_empty());
    assert!(ops(&plan, "vps").contains(&Op::RotatePsk {
        path: "/etc/wireguard/psk/nas.psk".into()
    }));
}

#[test]
fn a_saved_plan_holds_slots_not_keys_and_fills_a_pending_peer_key_in_the_loading_line() {
    // A plan made before the laptop had a key: the hub's line that loads its preshared key
    // names it "(known after apply)" and is filled in at apply.
    let keys: Vec<(&str, &str)> = ALL_HOST_KEYS
        .iter()
        .copied()
        .filter(|(h, _)| *h != "laptop")
        .collect();
    let fx = Fixture::new("home.yaml", &with_psk(&[]), &keys, None);
    let desired = fx.desired();
    let mut live: BTreeMap<HostName, Gathered> = desired
        .iter()
        .map(|(h, d)| (h.clone(), Ok(converged(h.as_str(), d))))
        .collect();
    live.insert(host("laptop"), Ok(fresh("laptop")));
    if let Some(Ok(vps)) = live.get_mut(&host("vps")) {
        vps.state.files.remove("/etc/wireguard/wg0.conf");
    }
    let mut plan = planner::build(&fx.inputs, &desired, &live);
    let json = meshctl::render::json(&plan);
    assert!(json.contains("\"op\": \"write_psk\""), "{json}");
    let mut pins = fx.inputs.keys.clone();
    pins.keys.insert(
        host("laptop"),
        meshctl::names::WgKey::parse(LAPTOP).unwrap(),
    );
    plan.resolve_pending_keys(&pins).unwrap();
    let conf = ops(&plan, "vps")
        .into_iter()
        .find_map(|o| match o {
            Op::WriteFile { path, content, .. } if path == "/etc/wireguard/wg0.conf" => {
                Some(content)
            }
            _ => None,
        })
        .unwrap();
    assert!(
        conf.contains(&format!(
            "PostUp = wg set %i peer {LAPTOP} preshared-key /etc/wireguard/psk/laptop.psk"
        )),
        "{conf}"
    );
    assert!(!conf.contains("known after apply"), "{conf}");
    // Nothing in the plan is a preshared key: only public keys and paths.
    for t in key_like_tokens(&meshctl::render::json(&plan)) {
        assert!(ALL_KEYS.contains(&t.as_str()), "{t}");
    }
    assert!(
        plan.hosts
            .iter()
            .flat_map(|h| &h.changes)
            .all(|c| c.action != Action::Remove || !matches!(c.op, Op::WritePsk { .. }))
    );
}
