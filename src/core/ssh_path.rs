//! Whether the path meshctl's SSH takes to a host crosses the network meshctl manages — then
//! one wrong change cuts meshctl off, and the host is changed under the guard. The path is
//! what `ssh -G` says ssh will do (after the user's ssh_config: aliases, `HostName`,
//! `ProxyJump`, `ProxyCommand`), not the inventory's text: `admin@nas.home.arpa`, an alias or a
//! jump through the hub are the usual ways to reach a NAS. Pure: the edge runs `ssh -G` and
//! resolves names; this decides.

use std::net::IpAddr;

use ipnet::IpNet;

/// The parts of `ssh -G` output that make up the path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshPath {
    /// `hostname`: where ssh connects (the last hop).
    pub hostname: String,
    /// `proxyjump`, if any: the hosts connected through first.
    pub proxyjump: Option<String>,
    /// `proxycommand`, if any.
    pub proxycommand: Option<String>,
}

impl SshPath {
    /// Reads `ssh -G` output (`key value` per line, keys in lower case).
    pub fn parse(ssh_g: &str) -> Self {
        let mut p = SshPath::default();
        for line in ssh_g.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let v = v.trim();
            match k {
                "hostname" => p.hostname = v.to_owned(),
                "proxyjump" if v != "none" => p.proxyjump = Some(v.to_owned()),
                "proxycommand" if v != "none" => p.proxycommand = Some(v.to_owned()),
                _ => {}
            }
        }
        p
    }

    /// Whether the path crosses the managed network: the last hop's address (`hostname`, or
    /// `resolved`, what it resolves to) is inside one of `ranges` (the VPN, the home LANs), a
    /// jump goes through the hub (`hub_names`: its SSH host and endpoint) or into the ranges,
    /// or a proxy command connects to an address inside them.
    pub fn crosses(&self, resolved: &[IpAddr], ranges: &[IpNet], hub_names: &[String]) -> bool {
        let inside = |a: &IpAddr| ranges.iter().any(|r| r.contains(a));
        let literal_inside = |word: &str| {
            let w = word.trim_matches(|c| c == '[' || c == ']');
            let host = w.rsplit_once('@').map_or(w, |(_, h)| h);
            let host = match host.parse::<std::net::SocketAddr>() {
                Ok(sa) => return inside(&sa.ip()),
                Err(_) => host.split(':').next().unwrap_or(host),
            };
            host.parse::<IpAddr>().is_ok_and(|a| inside(&a))
        };
        if literal_inside(&self.hostname) || resolved.iter().any(inside) {
            return true;
        }
        if let Some(jumps) = &self.proxyjump {
            for hop in jumps.split(',') {
                let host = hop.rsplit_once('@').map_or(hop, |(_, h)| h);
                let host = host.split(':').next().unwrap_or(host);
                if literal_inside(host) || hub_names.iter().any(|n| n == host) {
                    return true;
                }
            }
        }
        self.proxycommand
            .as_deref()
            .is_some_and(|c| c.split_whitespace().any(literal_inside))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<IpNet> {
        vec![
            "10.8.0.0/24".parse().unwrap(),
            "192.168.178.0/24".parse().unwrap(),
        ]
    }

    fn crosses(g: &str, resolved: &[&str]) -> bool {
        let resolved: Vec<IpAddr> = resolved.iter().map(|a| a.parse().unwrap()).collect();
        SshPath::parse(g).crosses(&resolved, &ranges(), &["vps.example.net".into()])
    }

    #[test]
    fn an_alias_whose_hostname_is_a_vpn_address_crosses() {
        assert!(crosses(
            "user admin\nhostname 10.8.0.2\nport 22\nproxyjump none\n",
            &[]
        ));
    }

    #[test]
    fn a_name_that_resolves_into_a_home_lan_crosses() {
        assert!(crosses("hostname nas.home.arpa\n", &["192.168.178.10"]));
        assert!(!crosses("hostname nas.example.org\n", &["203.0.113.5"]));
    }

    #[test]
    fn a_jump_through_the_hub_crosses() {
        assert!(crosses(
            "hostname nas\nproxyjump root@vps.example.net\n",
            &[]
        ));
        assert!(crosses(
            "hostname nas\nproxyjump admin@10.8.0.1:2222\n",
            &[]
        ));
        assert!(!crosses(
            "hostname nas\nproxyjump bastion.example.org\n",
            &[]
        ));
    }

    #[test]
    fn a_proxy_command_to_a_vpn_address_crosses() {
        assert!(crosses(
            "hostname nas\nproxycommand ip netns exec lab-laptop nc 10.8.0.2 22\n",
            &[]
        ));
        assert!(!crosses(
            "hostname nas\nproxycommand ip netns exec lab-nas nc 127.0.0.1 22\n",
            &[]
        ));
    }

    #[test]
    fn a_public_address_does_not_cross() {
        assert!(!crosses(
            "hostname 198.51.100.10\nproxyjump none\nproxycommand none\n",
            &[]
        ));
    }
}
