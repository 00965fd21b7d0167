//! `meshctl init`: the flags → [`crate::core::init`] → the inventory loader (it must validate)
//! → a new file (never overwritten) → what to do next.

use anyhow::{Context, bail};

use crate::cli::InitArgs;
use crate::core::init::{GatewayRequest, InitRequest, starting_inventory};

/// Runs `meshctl init`.
pub fn run(args: InitArgs) -> anyhow::Result<u8> {
    let pair = |flag: &str, v: &str| -> anyhow::Result<(String, String)> {
        match v.split_once('=') {
            Some((n, t)) if !n.is_empty() && !t.is_empty() => Ok((n.to_owned(), t.to_owned())),
            _ => bail!("--{flag} {v}: expected NAME=VALUE, e.g. --{flag} laptop=me@laptop"),
        }
    };
    let router = match &args.router {
        Some(r) => {
            let (name, addr) = pair("router", r)?;
            let addr = addr
                .parse()
                .with_context(|| format!("--router {r}: `{addr}` is not an IPv4 address"))?;
            Some((name, addr))
        }
        None => None,
    };
    let req = InitRequest {
        name: args.name.clone(),
        hub: args.hub.clone(),
        endpoint: args.endpoint.clone(),
        wan_interface: args.wan.clone(),
        ipv6_prefix: args.ipv6_prefix,
        gateway: match (&args.gateway, args.lan) {
            (Some(ssh), Some(lan)) => Some(GatewayRequest {
                name: args.gateway_name.clone(),
                ssh: ssh.clone(),
                lan,
                address: args.lan_address,
                interface: args.lan_interface.clone(),
            }),
            _ => None,
        },
        router,
        clients: args
            .client
            .iter()
            .map(|c| pair("client", c))
            .collect::<anyhow::Result<_>>()?,
        phones: args.phone.clone(),
        vpn: args.vpn,
    };
    let text = starting_inventory(&req)?;
    // What is written is exactly what validates.
    let path = &args.out;
    crate::inventory::parse(&text, &path.display().to_string(), path)
        .context("the starting inventory does not validate (a value given on the command line?)")?;
    crate::files::create_new(path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {} (it must not exist yet)", path.display()))?;
    let i = path.display();
    println!("Wrote {i}. Check it, then:");
    println!("  meshctl plan -i {i}           # what would change (nothing is touched)");
    println!("  meshctl apply -i {i}          # shows the plan, asks, applies");
    for p in &req.phones {
        println!("  meshctl client {p} --qr -i {i}   # the phone's config as a QR code");
    }
    Ok(0)
}
