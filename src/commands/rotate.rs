//! `meshctl rotate HOST [--psk]`: a new private key for one managed host, made on that host,
//! and in the same apply every managed peer learns its public key.
//!
//! A command of its own rather than `apply --rotate`: rotation is a one-off act, not a state
//! the inventory describes, so it cannot be a saved plan, and it says what it changed (old →
//! new, recorded in the pins file) and which unmanaged configs must be handed out again.
//! Everything else is apply: the same steps, the same plan shown and confirmed.
//!
//! The switch: step 1 makes the next key beside the old one (`wg0.key.next`; the old key stays
//! in use), the plan gives every peer the new public key (the new peer entry added before the
//! old one is removed, so the allowed IPs move over at once) and switches the host's key. The
//! hub's change script runs first, the others as soon as it is done: a peer that offers the
//! new key to a hub still on the old one would wait WireGuard's 5 s before its next handshake
//! attempt.

use anyhow::bail;

use crate::cli::{ApplyArgs, RotateArgs};
use crate::engine::apply::Rotation;
use crate::names::HostName;

/// Runs `meshctl rotate`.
pub async fn run(args: RotateArgs, no_color: bool, verbose: bool) -> anyhow::Result<u8> {
    let inputs = crate::files::load_inputs(&args.common.inventory, args.common.roles.as_deref())?;
    let inv = &inputs.inventory;
    let host = HostName::parse(&args.host)?;
    let Some(h) = inv.hosts.get(&host) else {
        bail!("{}: no host `{host}` in the inventory", inv.path.display());
    };
    if !h.is_managed() {
        bail!(
            "{host} is not managed over SSH: its key is replaced with `meshctl client {host} --new-key` (then `meshctl apply`, so the hub learns it)"
        );
    }
    if h.public_key.is_some() {
        bail!(
            "{host} has `public_key:` in {}: meshctl does not own its key; remove the line to let meshctl rotate it",
            inv.path.display()
        );
    }
    if inputs.keys.get(&host).is_none() {
        bail!("{host} has no key yet: run `meshctl apply` first");
    }
    if args.psk && !crate::psk::is_hub(inv, &host) && !inv.has_psk(h) {
        bail!("--psk: the pair of {host} and the hub has no preshared key (`preshared_key`)");
    }
    if !args.common.limit.is_empty() {
        bail!("--limit: a rotation changes every managed peer of {host}; run it without --limit");
    }
    let apply = ApplyArgs {
        common: args.common,
        plan_file: None,
        yes: args.yes,
        accept_new_keys: false,
        no_verify: args.no_verify,
        break_lock: args.break_lock,
        guard_timeout: args.guard_timeout,
        timings: None,
    };
    let rotation = Rotation {
        host,
        psk: args.psk,
    };
    super::apply::run_rotating(apply, Some(rotation), no_color, verbose).await
}
