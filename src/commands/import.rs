//! `meshctl import`: gather each `--host` once with the read-only gather script (nothing is
//! written on any host), infer an inventory (`crate::import`), check that it loads, and write it
//! and its pinned keys — never over an existing file.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::EXIT_OK;
use crate::cli::ImportArgs;
use crate::engine::{Engine, SshConnector};
use crate::facts::GatherSpec;
use crate::import::Observed;
use crate::inventory::validate::parse_ssh_target;
use crate::names::{HostName, InterfaceName};
use crate::progress::Progress;
use crate::state::{ChainId, Family};
use crate::transport::SshOptions;

/// What to gather on a host meshctl knows nothing about yet: the interface, its config file
/// and meshctl's would-be files (content arrives with key values blanked), the forwarding
/// sysctls, meshctl's chains (to see whether any exist), wg-quick's unit.
pub fn spec_for_unknown_host(interface: &InterfaceName) -> GatherSpec {
    let wg = interface.as_str();
    let chains = [
        (Family::Ipv4, "filter", "MESHCTL-FORWARD"),
        (Family::Ipv6, "filter", "MESHCTL-FORWARD"),
        (Family::Ipv4, "filter", "MESHCTL-INPUT"),
        (Family::Ipv4, "nat", "MESHCTL-POSTROUTING"),
    ]
    .into_iter()
    .map(|(family, table, chain)| ChainId {
        family,
        table: table.into(),
        chain: chain.into(),
    })
    .collect();
    GatherSpec {
        interface: interface.clone(),
        key_file: format!("/etc/wireguard/{wg}.key"),
        sysctls: vec![
            "net.ipv4.ip_forward".into(),
            "net.ipv6.conf.all.forwarding".into(),
        ],
        chains,
        files: crate::persist::candidate_paths(wg),
        services: vec![format!("wg-quick@{wg}")],
        resolve: Vec::new(),
        ndp_range: None,
        ndp_listed_in: None,
        chains_only_beside: Vec::new(),
        psks: Vec::new(),
    }
}

/// The inventory name of a `--host` target: the first label of its host part, else `host-N`.
fn name_for(target: &str, n: usize, taken: &BTreeMap<HostName, String>) -> HostName {
    let host = target.rsplit('@').next().unwrap_or(target);
    let host = host.split(':').next().unwrap_or(host);
    let first = host.split('.').next().unwrap_or(host).to_ascii_lowercase();
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    match HostName::parse(&first) {
        Ok(h) if !is_ip && !taken.contains_key(&h) => h,
        _ => HostName::parse(&format!("host-{n}")).expect("valid"),
    }
}

/// Runs `meshctl import`.
pub async fn run(args: ImportArgs, verbose: bool) -> anyhow::Result<u8> {
    let interface = InterfaceName::parse(&args.interface).map_err(anyhow::Error::msg)?;
    let keys_path = crate::inventory::keys_path_beside(&args.out);
    for p in [&args.out, &keys_path] {
        if p.exists() {
            bail!(
                "{} exists: import never overwrites a file\n  help: pass -o NEW_FILE",
                p.display()
            );
        }
    }
    let mut targets = BTreeMap::new();
    let mut given: BTreeMap<HostName, String> = BTreeMap::new();
    for (i, t) in args.hosts.iter().enumerate() {
        let target = parse_ssh_target(t)
            .with_context(|| format!("--host {t:?}: expected user@host[:port]"))?;
        let name = name_for(t, i + 1, &given);
        given.insert(name.clone(), t.clone());
        targets.insert(name, target);
    }
    let names: Vec<String> = targets.keys().map(ToString::to_string).collect();
    let progress = Arc::new(Progress::new(&names, verbose));
    let ssh = SshOptions {
        config_file: args.ssh_config.clone(),
        accept_new_host_keys: args.accept_new_host_keys,
        ..SshOptions::default()
    };
    let engine = Engine::new(
        SshConnector::new(targets, ssh),
        args.parallel,
        progress.clone(),
    );
    let spec = spec_for_unknown_host(&interface);
    let specs: BTreeMap<HostName, GatherSpec> =
        given.keys().map(|h| (h.clone(), spec.clone())).collect();
    let gathered = engine.gather(specs).await;
    progress.clear();
    let mut observed = Vec::new();
    let mut failed = Vec::new();
    for (name, r) in gathered {
        match r {
            Ok(live) => observed.push(Observed {
                ssh: given[&name].clone(),
                name,
                live,
            }),
            Err(e) => failed.push(format!("{name} ({}): {e}", given[&name])),
        }
    }
    if !failed.is_empty() {
        bail!(
            "could not gather every host, nothing was written:\n  {}",
            failed.join("\n  ")
        );
    }
    let imported = crate::import::infer(&observed, interface.as_str())?;
    // It must load before it is written: the same loader every command uses.
    let inventory =
        crate::inventory::parse(&imported.yaml, &args.out.display().to_string(), &args.out)
            .map_err(|d| {
                anyhow::anyhow!("the inferred inventory does not validate (a bug):\n{d}")
            })?;
    crate::files::create_new(&args.out, imported.yaml.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", args.out.display()))?;
    crate::files::save_pins(&imported.pins, &keys_path)?;
    crate::files::load_inputs(&args.out, None)?;
    println!(
        "Wrote {} ({} hosts) and {} (their public keys, pinned).",
        args.out.display(),
        inventory.hosts.len(),
        keys_path.display()
    );
    if imported.unmapped.is_empty() {
        println!("Everything was mapped.");
    } else {
        println!("Not mapped or assumed (also marked in the file):");
        for u in &imported.unmapped {
            println!("  - {u}");
        }
    }
    println!(
        "Next: `meshctl plan -i {}` shows what meshctl would add or normalise.",
        args.out.display()
    );
    Ok(EXIT_OK)
}
