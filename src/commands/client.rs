//! `meshctl client NAME [--qr] [--qr-png FILE] [-o FILE]`: the complete wg-quick config of an unmanaged client
//! (a phone), with a QR code its WireGuard app can scan.
//!
//! This is the one place a private key exists outside its host, at the user's explicit
//! request: when the inventory has no `public_key` for the client, a keypair is generated here,
//! the private key goes only into this output (`-o` writes 0600), and only the public key is
//! pinned. When its pair with the hub has a preshared key, the key is read from the hub over
//! SSH at this moment and goes only into this output too.

use anyhow::{Context, bail};
use base64::Engine;

use crate::cli::ClientArgs;
use crate::names::{HostName, WgKey};
use crate::persist;

/// Runs `meshctl client`.
pub async fn run(args: ClientArgs, verbose: bool) -> anyhow::Result<u8> {
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    let inv = &inputs.inventory;
    let name = HostName::parse(&args.name)?;
    let Some(host) = inv.hosts.get(&name) else {
        bail!("{}: no host `{name}` in the inventory", inv.path.display());
    };
    if host.is_managed() {
        bail!(
            "{name} is managed over SSH (`ssh:` is set): meshctl applies its config itself; `meshctl client` is for unmanaged clients such as phones"
        );
    }
    let (hub, _) = inv.hub();
    let Some(hub_key) = inputs.keys.get(&hub.name) else {
        bail!(
            "the hub's public key is not known yet: run `meshctl apply` first, so the hub's key is generated and pinned"
        );
    };

    // A key made on the device (`public_key:` in the inventory) never needs a private key here.
    // A key meshctl made earlier is pinned, but its private half is only in the config handed
    // out then: a new one is made only when asked, since the hub must then learn it.
    let (private_key, public_key) = match (&host.public_key, inputs.keys.get(&name)) {
        (Some(k), _) => (None, Some(k.clone())),
        (None, Some(_)) if !args.new_key => bail!(
            "{name} already has a key (pinned in {}); its private half is only in the config handed out then. To make a new one, run `meshctl client {name} --new-key`, then `meshctl apply` so the hub learns it",
            inv.keys_path().display()
        ),
        (None, _) => {
            let secret = x25519_dalek::StaticSecret::random();
            let public = x25519_dalek::PublicKey::from(&secret);
            let b64 = base64::engine::general_purpose::STANDARD;
            (
                Some(b64.encode(secret.to_bytes())),
                Some(
                    WgKey::parse(&b64.encode(public.to_bytes())).expect("a generated key is valid"),
                ),
            )
        }
    };
    let psk = if inv.has_psk(host) {
        Some(read_psk(&inputs, &args, &name, verbose).await?)
    } else {
        None
    };
    let config = zeroize::Zeroizing::new(persist::client_conf(
        inv,
        host,
        hub_key,
        private_key.as_deref(),
        psk.as_ref().map(|k| k.as_str()),
    ));

    // The output first: a key is only pinned once its config exists somewhere.
    match &args.out {
        Some(path) => {
            write_private(path, config.as_bytes())?;
            eprintln!("Wrote {} (mode 0600).", path.display());
        }
        None => print!("{}", config.as_str()),
    }
    let mut rotated: Option<WgKey> = None;
    if host.public_key.is_none()
        && let Some(k) = &public_key
    {
        let path = inv.keys_path();
        let mut pinned = crate::files::read_pins(&path)?;
        // A replaced key is recorded as `meshctl rotate` records one (old -> new), so a reviewer
        // of the pins file's commit sees it.
        match pinned.keys.get(&name).cloned() {
            Some(old) if &old != k => {
                pinned.rotate(
                    &name,
                    &old,
                    k,
                    &crate::files::rotation_stamp("meshctl client --new-key"),
                );
                rotated = Some(old);
            }
            _ => {
                pinned.keys.insert(name.clone(), k.clone());
            }
        }
        crate::files::save_pins(&pinned, &path).with_context(|| {
            format!("the config was handed out, but pinning its public key in {} failed: fix that and run again with --new-key", path.display())
        })?;
    }

    if args.qr || args.qr_png.is_some() {
        let code = crate::qr::Qr::new(config.as_bytes()).context("making the QR code")?;
        if let Some(path) = &args.qr_png {
            write_private(path, &code.png())?;
            eprintln!("Wrote the QR code to {} (mode 0600).", path.display());
        }
        if args.qr {
            use std::io::IsTerminal as _;
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            let form = crate::qr::TerminalForm::choose(std::io::stdout().is_terminal(), no_color);
            print!("{}", code.for_terminal(form));
            if let Some(note) = form.note() {
                eprintln!("{note}");
            }
        }
    }
    if let (Some(old), Some(new)) = (&rotated, &public_key) {
        eprintln!(
            "Rotated the key of {name}: public key {} → {} (pinned, and the rotation recorded, in {}). Run `meshctl apply` so the hub learns it. This config holds the private key: keep it safe.",
            old.short(),
            new.short(),
            inv.keys_path().display()
        );
    } else if private_key.is_some() {
        eprintln!(
            "A new key was generated for {name}; its public key is pinned. Run `meshctl apply` so the hub learns it. This config holds the private key: keep it safe."
        );
    } else {
        eprintln!(
            "The config has no private key: `PrivateKey` is the key generated on the device itself."
        );
    }
    Ok(0)
}

/// The pair's preshared key, read from the hub's file now (one connection, one execution), held
/// in memory only.
async fn read_psk(
    inputs: &crate::planner::Inputs,
    args: &ClientArgs,
    name: &HostName,
    verbose: bool,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let inv = &inputs.inventory;
    let (hub, _) = inv.hub();
    if !hub.is_managed() {
        bail!(
            "the pair of {name} and the hub has a preshared key, but meshctl cannot read it: the hub {} has no `ssh:`",
            hub.name
        );
    }
    let source = crate::psk::path(name);
    let (engine, _progress) = super::engine(
        inputs,
        &args.common,
        super::ssh_options(&args.common),
        verbose,
    );
    let scripts = std::collections::BTreeMap::from([(
        hub.name.clone(),
        crate::scripts::steps::carry(&[], std::slice::from_ref(&source)),
    )]);
    let mut out = engine.run_each(scripts, "reading the preshared key").await;
    let out = out
        .remove(&hub.name)
        .expect("one result per host")
        .with_context(|| format!("reading the preshared key of {name} from {}", hub.name))?;
    let ok = out.success();
    let stdout = zeroize::Zeroizing::new(out.stdout);
    if !ok {
        bail!(
            "{}:{source} cannot be read: run `meshctl apply` first, so the hub makes the preshared key of {name}",
            hub.name
        );
    }
    let mut carried = crate::psk::Carried::default();
    carried
        .read(&hub.name, &stdout, std::slice::from_ref(&source))
        .map_err(anyhow::Error::msg)?;
    let key = zeroize::Zeroizing::new(
        carried
            .get(&hub.name, &source)
            .expect("read checked it")
            .to_owned(),
    );
    Ok(key)
}

/// Writes a new file readable by its owner only: what it holds carries the client's private key.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::files::create_new(path, bytes, 0o600)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}
