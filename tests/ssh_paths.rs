//! Which hosts' SSH paths cross the VPN, as the real `ssh -G` resolves them through an
//! ssh_config: every host asked about is answered, however many there are (they are looked at a
//! bounded number at a time).

use std::collections::BTreeSet;

use meshctl::edge::ssh_paths::crossing_hosts;
use meshctl::names::HostName;
use meshctl::transport::SshOptions;

/// More clients than are looked at at once.
const CLIENTS: usize = 40;

fn inventory() -> String {
    let clients: String = (1..=CLIENTS)
        .map(|i| {
            format!(
                "  c{i}:\n    role: client\n    ssh: root@c{i}\n    address: 10.8.0.{}\n",
                10 + i
            )
        })
        .collect();
    format!(
        "network:\n  name: paths\n  interface: wg0\n  listen_port: 51820\n  ipv4: 10.8.0.0/24\n\n\
         hosts:\n  vps:\n    role: hub\n    ssh: root@vps\n    address: 10.8.0.1\n    \
         endpoint: 198.51.100.10\n    wan_interface: eth0\n{clients}"
    )
}

#[test]
fn every_host_reached_through_a_vpn_address_is_found_among_many() {
    let dir = tempfile::tempdir().unwrap();
    // Odd clients are reached at their VPN address, even ones at a documentation address
    // outside every range of the inventory.
    let config: String = (1..=CLIENTS)
        .map(|i| {
            let addr = if i % 2 == 1 {
                format!("10.8.0.{}", 10 + i)
            } else {
                format!("192.0.2.{i}")
            };
            format!("Host c{i}\n  HostName {addr}\n")
        })
        .collect();
    let config_file = dir.path().join("ssh_config");
    std::fs::write(&config_file, config).unwrap();
    let path = dir.path().join("paths.yaml");
    let inv = meshctl::inventory::parse(&inventory(), "paths.yaml", &path).expect("valid");
    let opts = SshOptions {
        config_file: Some(config_file),
        ..SshOptions::default()
    };
    let among: BTreeSet<HostName> = inv.hosts.keys().cloned().collect();

    let crossing = crossing_hosts(&inv, &opts, &among);

    let expected: BTreeSet<HostName> = (1..=CLIENTS)
        .filter(|i| i % 2 == 1)
        .map(|i| HostName::parse(&format!("c{i}")).unwrap())
        .collect();
    assert_eq!(crossing, expected);
}
