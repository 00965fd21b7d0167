//! Micro-benchmark of the pure core (no SSH, no I/O in the timed parts): desired state and diff
//! for a hub with 1,000 and 10,000 peers. Run with `cargo bench --bench core`.
//!
//! The inventory is generated into a temp dir and loaded with `meshctl::files::load_inventory`, with a
//! keys file beside it pinning a distinct valid public key per host (32 pseudo-random bytes,
//! base64), so every desired peer has its key and the diff matches live peers by key, as it does
//! against a real hub. `live` is either the hub's desired state as live state (the converged
//! drift check: nothing to change) or an empty host (a fresh hub: everything to add).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use meshctl::desired::{self, Desired};
use meshctl::diff::diff_host;
use meshctl::inventory::Inventory;
use meshctl::keys::PinnedKeys;
use meshctl::names::HostName;
use meshctl::roles::Roles;
use meshctl::state::LiveHost;

/// Peers of the hub (= clients in the inventory).
const SIZES: &[usize] = &[1_000, 10_000];

/// The hub's name: `vps` as in inventory/lab.yaml (it sorts after the `cN` clients).
const HUB: &str = "vps";

fn main() {
    divan::main();
}

/// splitmix64: deterministic pseudo-random bytes, so every run benchmarks the same keys.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn key(&mut self) -> String {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// The generated inventory text: one hub and `clients` SSH-managed split-tunnel clients in
/// 10.0.0.0/16 (each also gets an IPv6 address of the clients' /72, so the hub has one NDP proxy
/// entry per client, as in the lab).
fn inventory_yaml(clients: usize) -> String {
    let mut s = String::from(
        "network:\n  name: bench\n  interface: wg0\n  listen_port: 51820\n  ipv4: 10.0.0.0/16\n  \
         ipv6:\n    prefix: 2001:db8:10::/64\n    clients: 2001:db8:10:0:100::/72\n    mode: on-link\n  \
         dns: [10.0.0.1]\n  mtu: 1420\n\nhosts:\n",
    );
    let _ = write!(
        s,
        "  {HUB}:\n    role: hub\n    ssh: root@{HUB}\n    address: 10.0.0.1\n    endpoint: 198.51.100.10\n    \
         wan_interface: eth0\n    nat: true\n"
    );
    for i in 1..=clients {
        let n = 10 + i;
        let _ = write!(
            s,
            "  c{i}:\n    role: client\n    ssh: root@c{i}\n    address: 10.0.{}.{}\n    tunnel: split\n",
            n / 256,
            n % 256
        );
    }
    s
}

/// Everything the timed functions take, built once per size.
struct Fixture {
    _dir: tempfile::TempDir,
    inventory_path: PathBuf,
    inv: Inventory,
    roles: Roles,
    keys: PinnedKeys,
    hub: Desired,
}

impl Fixture {
    fn new(clients: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let inventory_path = dir.path().join("bench.yaml");
        std::fs::write(&inventory_path, inventory_yaml(clients)).expect("write inventory");
        let mut rng = SplitMix(clients as u64);
        let mut keys_text = String::new();
        for name in std::iter::once(HUB.to_owned()).chain((1..=clients).map(|i| format!("c{i}"))) {
            let _ = writeln!(keys_text, "{name}: \"{}\"", rng.key());
        }
        std::fs::write(dir.path().join("bench.keys.yaml"), keys_text).expect("write keys");

        let inv = meshctl::files::load_inventory(&inventory_path)
            .unwrap_or_else(|e| panic!("generated inventory: {e}"));
        let keys = meshctl::files::load_pins(&inv).expect("pinned keys");
        assert_eq!(keys.keys.len(), clients + 1, "one pinned key per host");
        let roles = Roles::builtin();
        let hub_name = HostName::parse(HUB).expect("hub name");
        let hub = desired::all(&inv, &roles, &keys)
            .remove(&hub_name)
            .expect("the hub is managed");
        let peers = hub.state.interface.as_ref().map_or(0, |i| i.peers.len());
        assert_eq!(peers, clients, "the hub has a peer per client");
        Self {
            _dir: dir,
            inventory_path,
            inv,
            roles,
            keys,
            hub,
        }
    }

    /// The hub's desired state as it would be read back from a converged hub.
    fn converged_live(&self) -> LiveHost {
        LiveHost {
            host: Some(HostName::parse(HUB).expect("hub name")),
            state: self.hub.state.clone(),
            resolved: BTreeMap::new(),
            ..LiveHost::default()
        }
    }
}

#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn load_inventory(bencher: divan::Bencher, clients: usize) {
    let f = Fixture::new(clients);
    bencher.bench(|| {
        meshctl::files::load_inventory(divan::black_box(&f.inventory_path)).expect("load")
    });
}

#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn desired_all(bencher: divan::Bencher, clients: usize) {
    let f = Fixture::new(clients);
    bencher.bench(|| desired::all(divan::black_box(&f.inv), &f.roles, &f.keys));
}

#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn desired_hub_only(bencher: divan::Bencher, clients: usize) {
    let f = Fixture::new(clients);
    let hub = f
        .inv
        .hosts
        .get(&HostName::parse(HUB).expect("hub name"))
        .expect("hub");
    bencher.bench(|| desired::for_host(divan::black_box(&f.inv), &f.roles, &f.keys, hub));
}

#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn diff_hub_converged(bencher: divan::Bencher, clients: usize) {
    let f = Fixture::new(clients);
    let live = f.converged_live();
    let d = diff_host(&f.hub.state, &live, &f.keys);
    assert!(
        d.changes.is_empty(),
        "converged hub has nothing to change: {:?}",
        d.changes.first()
    );
    bencher.bench(|| diff_host(divan::black_box(&f.hub.state), &live, &f.keys));
}

#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
fn diff_hub_empty(bencher: divan::Bencher, clients: usize) {
    let f = Fixture::new(clients);
    let live = LiveHost::default();
    let d = diff_host(&f.hub.state, &live, &f.keys);
    assert!(
        d.changes.len() > clients,
        "an empty hub gets every peer added"
    );
    bencher.bench(|| diff_host(divan::black_box(&f.hub.state), &live, &f.keys));
}
