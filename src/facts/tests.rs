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

/// The spec the captured fixtures were gathered with (a hub).
fn hub_spec() -> GatherSpec {
    GatherSpec {
        interface: InterfaceName::parse("wg0").unwrap(),
        key_file: "/tmp/fxkeys/hub.key".into(),
        sysctls: vec![
            "net.ipv4.ip_forward".into(),
            "net.ipv6.conf.all.forwarding".into(),
            "net.ipv6.conf.eth0.proxy_ndp".into(),
            "net.ipv6.conf.eth0.1.proxy_ndp".into(),
            "net.ipv6.conf.eth9.proxy_ndp".into(),
        ],
        chains: vec![
            chain(Family::Ipv4, "filter", "MESHCTL-FORWARD"),
            chain(Family::Ipv4, "filter", "MESHCTL-INPUT"),
            chain(Family::Ipv4, "nat", "MESHCTL-POSTROUTING"),
            chain(Family::Ipv6, "filter", "MESHCTL-FORWARD"),
            chain(Family::Ipv6, "filter", "MESHCTL-EMPTY"),
            chain(Family::Ipv6, "filter", "MESHCTL-ABSENT"),
        ],
        files: vec![
            "/tmp/fxfiles/wg0.conf".into(),
            "/tmp/fxfiles/absent.conf".into(),
            "/tmp/fxfiles/nonl".into(),
            "/tmp/fxfiles/trailing".into(),
        ],
        services: vec!["wg-quick@wg0".into()],
        resolve: vec!["localhost".into(), "nonexistent.invalid".into()],
        ndp_range: Some("2001:db8:10:0:100::/72".parse().unwrap()),
    }
}

fn fixture(name: &str) -> String {
    let path = format!("{}/src/facts/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Writes the script for `hub_spec()` to `$FX_SCRIPT_OUT`, to capture fixtures with
/// `ip netns exec NS sh SCRIPT > src/facts/fixtures/NAME.out`.
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
    std::fs::write(std::env::var("FX_SCRIPT_OUT").unwrap(), gather_script(&spec)).unwrap();
}
