//! Inventory validation, one fixture per mistake.
//!
//! Every fixture in `tests/fixtures/inventory/` is the same small, valid inventory
//! (`valid.yaml`) with one mistake in it (`many_errors.yaml` has several), and the table below
//! holds the exact text meshctl prints for it: `file:line:column: what is wrong`, the `help:`
//! line saying what to do, and the closing count. A YAML syntax or type error stops at the
//! first; semantic errors are all reported, in file order.
//!
//! The loader is also fed arbitrary text and bytes and randomly damaged copies of
//! `inventory/lab.yaml`: it must never panic, only return an error value.

use std::path::Path;

use meshctl::inventory::{self, Diagnostics};
use proptest::prelude::*;

const FIXTURES: &str = "tests/fixtures/inventory";

/// What loading a fixture prints: its errors, or `OK`.
fn outcome(case: &str) -> String {
    match meshctl::files::load_inventory(Path::new(&format!("{FIXTURES}/{case}.yaml"))) {
        Ok(_) => "OK".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// (fixture, exact output).
const CASES: &[(&str, &str)] = &[
    (
        "address_is_network",
        "tests/fixtures/inventory/address_is_network.yaml:27:14: address 10.8.0.0 of host `laptop` is the network address of the VPN range 10.8.0.0/24
  help: pick a free host address inside 10.8.0.0/24
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "address_outside_vpn",
        "tests/fixtures/inventory/address_outside_vpn.yaml:27:14: address 10.9.0.10 of host `laptop` is outside the VPN range 10.8.0.0/24
  help: pick a free host address inside 10.8.0.0/24
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "allow_lan_not_gateway",
        "tests/fixtures/inventory/allow_lan_not_gateway.yaml:28:13: `allow` of host `laptop` names the LAN of `laptop`, a client, not a gateway
  help: `lan:NAME` names a host of role gateway (its home LAN)
tests/fixtures/inventory/allow_lan_not_gateway.yaml:28:27: `allow` of host `laptop` names \"nsa\", which is not a host of the inventory
  help: did you mean `nas`?
2 errors in the inventory; nothing was changed on any host",
    ),
    (
        "allow_on_hub",
        "tests/fixtures/inventory/allow_on_hub.yaml:16:12: `allow` does not apply to hub `vps`
  help: `allow` restricts what a gateway or client may reach through the hub: remove it
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "allow_unknown_target",
        "tests/fixtures/inventory/allow_unknown_target.yaml:28:18: `allow` of host `laptop` names the LAN of \"nsa\", which is not a host of the inventory
  help: did you mean `lan:nas`?
tests/fixtures/inventory/allow_unknown_target.yaml:28:29: `allow` of host `laptop` names \"homepc\", which is not a host of the inventory
  help: name a host of the inventory, `lan:GATEWAY`, a CIDR such as 192.168.178.0/24, or `internet`
tests/fixtures/inventory/allow_unknown_target.yaml:28:37: `allow` of host `laptop` names \"10.8.0.0/33\", which is not a CIDR
  help: write a network with its prefix length, e.g. 192.168.178.0/24 or 2001:db8::/64, or one address
3 errors in the inventory; nothing was changed on any host",
    ),
    ("allow_valid", "OK"),
    (
        "bool_no",
        "tests/fixtures/inventory/bool_no.yaml:16:10: `nat` of host `vps`: expected a boolean (true/false), found `no`
  help: write `true` or `false` (YAML 1.1 words such as yes, no, on, off are not booleans here)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "bool_on",
        "tests/fixtures/inventory/bool_on.yaml:16:21: `wan_accepts_ra` of host `vps`: expected a boolean (true/false), found `on`
  help: write `true` or `false` (YAML 1.1 words such as yes, no, on, off are not booleans here)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "bool_yes",
        "tests/fixtures/inventory/bool_yes.yaml:28:18: `public_ipv6` of host `laptop`: expected a boolean (true/false), found `yes`
  help: write `true` or `false` (YAML 1.1 words such as yes, no, on, off are not booleans here)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "clients_outside_prefix",
        "tests/fixtures/inventory/clients_outside_prefix.yaml:7:14: the clients' IPv6 range 2001:db8:43:0:100::/72 is not inside the hub's prefix 2001:db8:42::/64
  help: take the clients' range as a slice of `prefix`, e.g. a /72 of the /64
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "dns_not_an_address",
        "tests/fixtures/inventory/dns_not_an_address.yaml:7:7: `network.dns`: expected an IP address such as 10.8.0.1, found `dns.example.net`
  help: write an IP address such as 10.8.0.1
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "duplicate_host",
        "tests/fixtures/inventory/duplicate_host.yaml:28:3: duplicate key `laptop` in `hosts` (first given at line 24)
  help: keep only one of them: YAML would otherwise silently use just one
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "duplicate_ipv4",
        "tests/fixtures/inventory/duplicate_ipv4.yaml:27:14: address 10.8.0.2 of host `laptop` is already used by host `nas`
  help: give every host its own address
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "duplicate_ipv6",
        "tests/fixtures/inventory/duplicate_ipv6.yaml:28:19: IPv6 address 2001:db8:42:0:100::1 of host `laptop` is already used by host `vps`
  help: give every host its own IPv6 address
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "duplicate_key",
        "tests/fixtures/inventory/duplicate_key.yaml:28:5: duplicate key `address` in host `laptop` (first given at line 27)
  help: keep only one of them: YAML would otherwise silently use just one
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "duplicate_public_key",
        "tests/fixtures/inventory/duplicate_public_key.yaml:31:17: host `phone` has the same public key as host `laptop`
  help: every device has its own key pair: paste each one's own `wg pubkey` output
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "empty",
        "tests/fixtures/inventory/empty.yaml:2:1: the inventory is empty
  help: describe the network and its hosts (start from inventory/example.yaml)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "endpoint_shell",
        "tests/fixtures/inventory/endpoint_shell.yaml:14:15: endpoint \"vps.example.net; reboot\" of hub `vps` is not a host name or an IP address
  help: give a DNS name (letters, digits, '-' and '.') or an IP address, without a port (the port is `network.listen_port`)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "endpoint_with_port",
        "tests/fixtures/inventory/endpoint_with_port.yaml:14:15: endpoint \"vps.example.net:51820\" of hub `vps` is not a host name or an IP address
  help: give a DNS name (letters, digits, '-' and '.') or an IP address, without a port (the port is `network.listen_port`)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "field_for_other_role",
        "tests/fixtures/inventory/field_for_other_role.yaml:16:16: `keepalive` does not apply to hub `vps`
  help: `keepalive` is only for gateways and clients (the hub is the one everyone dials): remove it or change the host's role
tests/fixtures/inventory/field_for_other_role.yaml:21:13: `tunnel` does not apply to gateway `nas`
  help: `tunnel` is only for clients: remove it or change the host's role
tests/fixtures/inventory/field_for_other_role.yaml:30:10: `nat` does not apply to client `laptop`
  help: `nat` is only for the hub: remove it or change the host's role
3 errors in the inventory; nothing was changed on any host",
    ),
    (
        "flow_mapping_type_error",
        "tests/fixtures/inventory/flow_mapping_type_error.yaml:20:63: `lan.address` of host `nas`: expected an IPv4 address such as 10.8.0.2, found `192.168.178.300`
  help: write an IPv4 address such as 10.8.0.2
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "gateway_without_lan",
        "tests/fixtures/inventory/gateway_without_lan.yaml:16:3: gateway `nas` has no `lan`
  help: add `lan:` to host `nas`: the home LAN it routes into the VPN (`subnet`, `interface`, `address`)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "host_name_invalid",
        "tests/fixtures/inventory/host_name_invalid.yaml:24:3: host name \"My_Laptop\" is not allowed
  help: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "host_name_lookalike",
        "tests/fixtures/inventory/host_name_lookalike.yaml:24:3: host name \"lаptop\" is not allowed: it contains 'а' (U+0430), which only looks like an ASCII letter or digit
  help: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "host_name_shell",
        "tests/fixtures/inventory/host_name_shell.yaml:24:3: host name \"laptop; reboot\" is not allowed
  help: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "interface_name_shell",
        "tests/fixtures/inventory/interface_name_shell.yaml:15:20: interface name \"eth0; reboot\" is not allowed
  help: use 1-15 characters of a-z, A-Z, 0-9 and _=+.- (the name `ip link` shows, e.g. `wg0`)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "interface_name_too_long",
        "tests/fixtures/inventory/interface_name_too_long.yaml:5:14: interface name \"wireguard-interface0\" is not allowed
  help: use 1-15 characters of a-z, A-Z, 0-9 and _=+.- (the name `ip link` shows, e.g. `wg0`)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "invalid_address",
        "tests/fixtures/inventory/invalid_address.yaml:27:14: `address` of host `laptop`: expected an IPv4 address such as 10.8.0.2, found `10.8.0.300`
  help: write an IPv4 address such as 10.8.0.2
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "invalid_public_key",
        "tests/fixtures/inventory/invalid_public_key.yaml:28:17: `public_key` of host `laptop` is not a valid WireGuard public key
  help: paste the output of `wg pubkey`: 44 characters of base64 (the public key, never the private one)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "ipv6_outside_clients",
        "tests/fixtures/inventory/ipv6_outside_clients.yaml:28:19: IPv6 address 2001:db8:42::10 of host `laptop` is outside the clients' range 2001:db8:42:0:100::/72
  help: pick an address inside `network.ipv6.clients`
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "ipv6_without_network_ipv6",
        "tests/fixtures/inventory/ipv6_without_network_ipv6.yaml:24:19: host `laptop` has an `ipv6_address` but the network has no `ipv6`
  help: add `network.ipv6` (prefix, clients, mode) or remove the address
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "lan6_overlaps_clients",
        "tests/fixtures/inventory/lan6_overlaps_clients.yaml:24:20: LAN IPv6 prefix 2001:db8:42::/64 of gateway `nas` overlaps the clients' IPv6 range 2001:db8:42:0:100::/72
  help: give the home LAN its own IPv6 prefix (from the home router), outside `network.ipv6.clients`
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "lan6_overlaps_lan6",
        "tests/fixtures/inventory/lan6_overlaps_lan6.yaml:32:20: AllowedIPs of two peers of the hub's wg0 overlap: 2001:db8:77:1::/64 (LAN IPv6 prefix of gateway `nas2`) and 2001:db8:77::/56 (LAN IPv6 prefix of gateway `nas`)
  help: WireGuard would silently move the overlap to whichever peer is configured last: give each peer its own, non-overlapping range
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "lan_address_outside_lan",
        "tests/fixtures/inventory/lan_address_outside_lan.yaml:23:16: LAN address 192.168.179.10 of gateway `nas` is outside its LAN 192.168.178.0/24
  help: give the gateway's own address inside `subnet`
tests/fixtures/inventory/lan_address_outside_lan.yaml:30:10: router LAN 192.168.178.0/24 does not contain gateway `nas`'s LAN address 192.168.179.10
  help: the router and its gateway must share the home LAN
2 errors in the inventory; nothing was changed on any host",
    ),
    (
        "lan_overlaps_lan",
        "tests/fixtures/inventory/lan_overlaps_lan.yaml:28:15: AllowedIPs of two peers of the hub's wg0 overlap: 192.168.0.0/16 (LAN of gateway `nas2`) and 192.168.178.0/24 (LAN of gateway `nas`)
  help: WireGuard would silently move the overlap to whichever peer is configured last: give each peer its own, non-overlapping range
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "list_for_string",
        "tests/fixtures/inventory/list_for_string.yaml:26:10: `ssh` of host `laptop`: expected a string, found a list
  help: write a string here, not a list
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "many_errors",
        "tests/fixtures/inventory/many_errors.yaml:3:9: network name \"-home\" is not allowed
  help: use 1-63 letters, digits, '-' and '_', not starting with '-'
tests/fixtures/inventory/many_errors.yaml:15:20: interface name \"eth0;reboot\" is not allowed
  help: use 1-15 characters of a-z, A-Z, 0-9 and _=+.- (the name `ip link` shows, e.g. `wg0`)
tests/fixtures/inventory/many_errors.yaml:23:16: LAN address 192.168.179.10 of gateway `nas` is outside its LAN 192.168.178.0/24
  help: give the gateway's own address inside `subnet`
tests/fixtures/inventory/many_errors.yaml:27:14: address 10.8.0.2 of host `laptop` is already used by host `nas`
  help: give every host its own address
tests/fixtures/inventory/many_errors.yaml:32:14: gateway \"nass\" of router `fritzbox` is not a host of the inventory
  help: did you mean `nas`?
5 errors in the inventory; nothing was changed on any host",
    ),
    (
        "missing_host_field",
        "tests/fixtures/inventory/missing_host_field.yaml:24:3: host `laptop` has no `address`
  help: add `address:` to host `laptop` (see inventory/example.yaml)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "missing_lan_field",
        "tests/fixtures/inventory/missing_lan_field.yaml:20:5: `lan` of host `nas` has no `interface`
  help: add `interface:` to `lan` of host `nas` (see inventory/example.yaml)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "missing_network",
        "tests/fixtures/inventory/missing_network.yaml:1:1: the inventory has no `network`
  help: add `network:` to the inventory (see inventory/example.yaml)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "mode_typo",
        "tests/fixtures/inventory/mode_typo.yaml:8:11: `network.ipv6.mode`: unknown value `onlink`
  help: did you mean `on-link`? (one of on-link, routed)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "multiple_documents",
        "tests/fixtures/inventory/multiple_documents.yaml:34:1: a second YAML document (`---`) in the inventory
  help: keep one inventory per file
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "network_name_shell",
        "tests/fixtures/inventory/network_name_shell.yaml:3:9: network name \"home'\\\"\" is not allowed
  help: use 1-63 letters, digits, '-' and '_', not starting with '-'
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "no_hub",
        "tests/fixtures/inventory/no_hub.yaml:10:3: the inventory has no hub
  help: give exactly one host `role: hub` (the VPS everyone dials)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "not_utf8",
        "tests/fixtures/inventory/not_utf8.yaml:3:12: the inventory is not valid UTF-8 text
  help: save the file as UTF-8 (meshctl reads YAML text only)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "number_for_string",
        "tests/fixtures/inventory/number_for_string.yaml:3:9: `network.name`: expected a string, found a number (`123`)
  help: put it in quotes: \"123\"
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "port_too_big",
        "tests/fixtures/inventory/port_too_big.yaml:5:16: `network.listen_port`: expected a UDP port number (1-65535), found `70000`
  help: write a UDP port number (1-65535)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "role_typo",
        "tests/fixtures/inventory/role_typo.yaml:11:11: `role` of host `vps`: unknown value `hubb`
  help: did you mean `hub`? (one of hub, gateway, client)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "router_address_outside_lan",
        "tests/fixtures/inventory/router_address_outside_lan.yaml:31:14: router address 192.168.1.1 is outside its LAN 192.168.178.0/24
  help: give the router's own address inside `lan`
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "router_gateway_not_gateway",
        "tests/fixtures/inventory/router_gateway_not_gateway.yaml:32:14: gateway `laptop` of router `fritzbox` is a client, not a gateway
  help: a router sends the VPN range to a host of role gateway
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "router_name_invalid",
        "tests/fixtures/inventory/router_name_invalid.yaml:29:3: router name \"Fritz.Box\" is not allowed
  help: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "ssh_backticks",
        "tests/fixtures/inventory/ssh_backticks.yaml:26:10: ssh target \"me@`reboot`\" of host `laptop` is not user@host[:port]
  help: write e.g. `root@vps.example.net` or `admin@nas:2222` (letters, digits, '.', '-' and '_'; no leading '-')
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "ssh_command_substitution",
        "tests/fixtures/inventory/ssh_command_substitution.yaml:26:10: ssh target \"me@$(reboot)\" of host `laptop` is not user@host[:port]
  help: write e.g. `root@vps.example.net` or `admin@nas:2222` (letters, digits, '.', '-' and '_'; no leading '-')
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "ssh_lookalike",
        "tests/fixtures/inventory/ssh_lookalike.yaml:26:10: ssh target \"me@lаptop\" of host `laptop` is not user@host[:port]: it contains 'а' (U+0430), which only looks like an ASCII letter or digit
  help: write e.g. `root@vps.example.net` or `admin@nas:2222` (letters, digits, '.', '-' and '_'; no leading '-')
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "ssh_option_injection",
        "tests/fixtures/inventory/ssh_option_injection.yaml:26:10: ssh target \"-oProxyCommand=reboot\" of host `laptop` is not user@host[:port]: it starts with '-', which ssh would read as an option
  help: write e.g. `root@vps.example.net` or `admin@nas:2222` (letters, digits, '.', '-' and '_'; no leading '-')
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "ssh_quote_newline",
        "tests/fixtures/inventory/ssh_quote_newline.yaml:26:10: ssh target \"me@laptop'\\nreboot\" of host `laptop` is not user@host[:port]
  help: write e.g. `root@vps.example.net` or `admin@nas:2222` (letters, digits, '.', '-' and '_'; no leading '-')
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "string_for_port",
        "tests/fixtures/inventory/string_for_port.yaml:5:16: `network.listen_port`: expected a UDP port number (1-65535), found `fifty`
  help: write a UDP port number (1-65535)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "syntax_tab",
        "tests/fixtures/inventory/syntax_tab.yaml:25:11: YAML syntax error: while scanning a plain scalar, found a tab
  help: fix the YAML here: indent with spaces, and quote values that contain `: `, `#` or start with a special character
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "tunnel_typo",
        "tests/fixtures/inventory/tunnel_typo.yaml:28:13: `tunnel` of host `laptop`: unknown value `ful`
  help: did you mean `full`? (one of split, full)
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "two_hubs",
        "tests/fixtures/inventory/two_hubs.yaml:24:3: host `laptop` is a second hub (`vps` is one already)
  help: meshctl builds a hub-and-spoke network: keep exactly one `role: hub`
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_field_host",
        "tests/fixtures/inventory/unknown_field_host.yaml:27:5: unknown field `adress` in host `laptop`
  help: did you mean `address`?
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_field_ipv6",
        "tests/fixtures/inventory/unknown_field_ipv6.yaml:8:5: unknown field `mdoe` in `network.ipv6`
  help: did you mean `mode`?
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_field_lab",
        "tests/fixtures/inventory/unknown_field_lab.yaml:34:3: unknown field `hub_public` in `lab`
  help: did you mean `hub_public4`?
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_field_lan",
        "tests/fixtures/inventory/unknown_field_lan.yaml:21:7: unknown field `subnett` in `lan` of host `nas`
  help: did you mean `subnet`?
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_field_network",
        "tests/fixtures/inventory/unknown_field_network.yaml:5:3: unknown field `listenport` in `network`
  help: did you mean `listen_port`?
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_field_router",
        "tests/fixtures/inventory/unknown_field_router.yaml:32:5: unknown field `via` in router `fritzbox`
  help: expected one of: lan, address, gateway
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_field_top",
        "tests/fixtures/inventory/unknown_field_top.yaml:28:1: unknown field `router` at the top level
  help: did you mean `routers`?
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "unknown_gateway",
        "tests/fixtures/inventory/unknown_gateway.yaml:32:14: gateway \"nsa\" of router `fritzbox` is not a host of the inventory
  help: did you mean `nas`?
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "valid",
        "OK",
    ),
    (
        "vpn_host_bits",
        "tests/fixtures/inventory/vpn_host_bits.yaml:4:9: VPN range 10.8.0.1/24 has host bits set
  help: write the network address: 10.8.0.0/24
1 error in the inventory; nothing was changed on any host",
    ),
    (
        "vpn_overlaps_lan",
        "tests/fixtures/inventory/vpn_overlaps_lan.yaml:21:15: LAN 10.8.0.0/16 of gateway `nas` overlaps the VPN range 10.8.0.0/24
  help: the VPN and every home LAN need distinct, non-overlapping ranges
1 error in the inventory; nothing was changed on any host",
    ),
];

#[test]
fn every_fixture_gives_its_exact_message() {
    let mut wrong = Vec::new();
    for (case, expected) in CASES {
        let got = outcome(case);
        if got != *expected {
            wrong.push(format!(
                "--- {case}: expected\n{expected}\n--- got\n{got}\n"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_fixture_is_in_the_table_once() {
    let mut on_disk: Vec<String> = std::fs::read_dir(FIXTURES)
        .expect("fixtures directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(c, _)| (*c).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

/// Runs `meshctl plan -i INVENTORY` from the crate root, as a user would; no host is contacted.
fn plan_stderr(inventory: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["plan", "-i", inventory])
        .env_remove("MESHCTL_INVENTORY")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run meshctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_prints_each_inventory_error_once() {
    let (code, stderr) = plan_stderr("tests/fixtures/inventory/many_errors.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    let expected = CASES
        .iter()
        .find(|(c, _)| *c == "many_errors")
        .expect("many_errors is a case")
        .1;
    // Exactly the diagnostics, once, under one `error:`: no `caused by:` repeating them.
    assert_eq!(stderr, format!("error: {expected}\n"));
    for line in expected.lines() {
        assert_eq!(stderr.matches(line).count(), 1, "{line:?} in:\n{stderr}");
    }
}

#[test]
fn an_unreadable_inventory_names_the_file_and_the_os_error_once() {
    let (code, stderr) = plan_stderr("tests/fixtures/inventory/no_such_file.yaml");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr
            .starts_with("error: cannot read inventory tests/fixtures/inventory/no_such_file.yaml"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn the_shipped_inventories_load_cleanly() {
    for file in ["inventory/lab.yaml", "inventory/example.yaml"] {
        if let Err(e) = meshctl::files::load_inventory(Path::new(file)) {
            panic!("{file} does not load:\n{e}");
        }
    }
}

#[test]
fn a_key_is_never_echoed() {
    let text = std::fs::read_to_string(format!("{FIXTURES}/invalid_public_key.yaml")).unwrap();
    let key = "SECRETprivateKEYmustNEVERbeECHOEDback0000=";
    assert!(text.contains(key), "the fixture holds the key");
    let out = outcome("invalid_public_key");
    assert!(out.contains("is not a valid WireGuard public key"), "{out}");
    for part in [key, "SECRET", "ECHOED"] {
        assert!(!out.contains(part), "the message shows the key: {out}");
    }
}

#[test]
fn a_hostile_value_cannot_add_a_line_to_the_output() {
    // The ssh target holds a newline; the message shows it escaped, so the output is exactly
    // message, help and count.
    let out = outcome("ssh_quote_newline");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains(r"me@laptop'\nreboot"), "{out}");
}

/// Checks the shape of whatever the loader returned: never a panic, and an error is a
/// non-empty list of one-line messages, each with a help line, at a real position.
fn check_outcome(r: Result<inventory::Inventory, Diagnostics>) -> Result<(), TestCaseError> {
    if let Err(d) = r {
        prop_assert!(!d.0.is_empty());
        for e in &d.0 {
            prop_assert!(e.line >= 1 && e.column >= 1, "{e}");
            prop_assert!(!e.message.contains('\n'), "{e:?}");
            prop_assert!(
                e.help
                    .as_deref()
                    .is_some_and(|h| !h.is_empty() && !h.contains('\n')),
                "{e:?}"
            );
        }
        let shown = d.to_string();
        prop_assert_eq!(shown.lines().count(), 2 * d.0.len() + 1, "{}", shown);
    }
    Ok(())
}

/// One way to damage an inventory.
#[derive(Debug, Clone)]
enum Damage {
    DeleteLine(usize),
    DuplicateLine(usize),
    ReplaceChar(usize, char),
    InsertChar(usize, char),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    // Characters that mean something to YAML or to a shell, and a look-alike.
    let special = prop::sample::select(vec![
        ':', '-', ' ', '\t', '\n', '"', '\'', '[', ']', '{', '}', '&', '*', '!', '#', '|', '>',
        '%', '@', '`', '$', ';', '0', '9', '/', '.', 'a', 'Z', '\u{43e}', '\u{0}', '\u{feff}',
    ]);
    prop_oneof![
        any::<usize>().prop_map(Damage::DeleteLine),
        any::<usize>().prop_map(Damage::DuplicateLine),
        (any::<usize>(), special.clone()).prop_map(|(i, c)| Damage::ReplaceChar(i, c)),
        (any::<usize>(), special).prop_map(|(i, c)| Damage::InsertChar(i, c)),
        any::<usize>().prop_map(Damage::Truncate),
    ]
}

fn apply(text: &str, d: &Damage) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let chars: Vec<char> = text.chars().collect();
    match *d {
        Damage::DeleteLine(i) => {
            let i = i % lines.len().max(1);
            let mut l = lines.clone();
            if !l.is_empty() {
                l.remove(i);
            }
            l.join("\n")
        }
        Damage::DuplicateLine(i) => {
            let i = i % lines.len().max(1);
            let mut l = lines.clone();
            if let Some(x) = lines.get(i) {
                l.insert(i, x);
            }
            l.join("\n")
        }
        Damage::ReplaceChar(i, c) => {
            let mut v = chars;
            if !v.is_empty() {
                let n = v.len();
                v[i % n] = c;
            }
            v.into_iter().collect()
        }
        Damage::InsertChar(i, c) => {
            let mut v = chars;
            v.insert(i % (v.len() + 1), c);
            v.into_iter().collect()
        }
        Damage::Truncate(i) => chars[..i % (chars.len() + 1)].iter().collect(),
    }
}

proptest! {
    // Bounded, and no regression files written into the source tree.
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_lab_inventories_never_panic(damages in prop::collection::vec(damage(), 1..6)) {
        let mut text = include_str!("../inventory/lab.yaml").to_owned();
        for d in &damages {
            text = apply(&text, d);
        }
        check_outcome(inventory::parse(&text, "lab.yaml", Path::new("lab.yaml")))?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_outcome(inventory::parse(&text, "x.yaml", Path::new("x.yaml")))?;
    }

    #[test]
    fn arbitrary_yaml_like_text_never_panics(text in "[a-z_:0-9 \n\t\\[\\]{},.\"'#&*!|>/-]{0,200}") {
        check_outcome(inventory::parse(&text, "x.yaml", Path::new("x.yaml")))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_outcome(inventory::parse_bytes(&bytes, "x.yaml", Path::new("x.yaml")))?;
    }
}
