//! `meshctl lab exec` and `meshctl lab status`.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::config::Layout;
use super::state;
use super::sys;

/// Runs `command` in lab host `host`: on a machine, inside it (every namespace of its systemd:
/// its own programs and files, as root); for a host with sshd, in that sshd's network, mount (and
/// UTS) namespace (so `wg show` finds wireguard-go's socket in the host's own /run/wireguard);
/// otherwise in its network namespace. Returns the command's exit code.
pub fn exec(dir: &Path, host: &str, command: &[String]) -> anyhow::Result<u8> {
    sys::require_root()?;
    let st = state::load(dir)?;
    let h = st.host(host)?;
    let mut argv: Vec<String> = match h.sshd_pid {
        _ if h.machine.is_some() => {
            let leader = super::machine::leader(&Layout::new(&st.dir), host).with_context(|| {
                format!(
                    "lab machine {host} is not running (it may be rebooting; else rebuild the lab with `meshctl lab up --dir {}`)",
                    dir.display()
                )
            })?;
            super::machine::nsenter_argv(leader)
        }
        Some(pid) if sys::alive(pid) => {
            vec![
                "nsenter".into(),
                "-t".into(),
                pid.to_string(),
                "-n".into(),
                "-m".into(),
                "-u".into(),
                "--".into(),
            ]
        }
        Some(pid) => bail!(
            "the sshd of lab host {host} (pid {pid}) is not running: rebuild the lab with `meshctl lab up --dir {}`",
            dir.display()
        ),
        None if h.ssh => bail!("lab host {host} has no sshd yet (lab up did not finish)"),
        None => vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            h.namespace.clone(),
        ],
    };
    argv.extend(command.iter().cloned());
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .with_context(|| format!("cannot run `{}`", argv[0]))?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => 1,
    })
}

/// Lists the lab's hosts, their kind, namespace and addresses, and whether each managed host
/// answers over SSH. Exit code 0 when the lab is complete and every managed host answers.
pub fn status(dir: &Path) -> anyhow::Result<u8> {
    sys::require_root()?;
    let st = state::load(dir)?;
    let layout = Layout::new(&st.dir);
    let existing = sys::list_namespaces()?;
    let hosts: Vec<(&String, &state::LabHost)> = st.hosts.iter().collect();
    let config = layout.ssh_config();
    let config = config.to_string_lossy();
    let answers = sys::parallel(&hosts, 16, |(name, h)| {
        if !h.ssh {
            return "-".to_owned();
        }
        match sys::status_with_timeout(
            &[
                "ssh",
                "-F",
                &config,
                "-o",
                "ConnectTimeout=5",
                name.as_str(),
                "true",
            ],
            Duration::from_secs(10),
        ) {
            Ok(Some(true)) => "ok".into(),
            Ok(Some(false)) => "FAILED".into(),
            Ok(None) => "TIMEOUT".into(),
            Err(e) => format!("ERROR ({e})"),
        }
    });
    let w = hosts.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
    let wn = hosts
        .iter()
        .map(|(_, h)| h.namespace.len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!(
        "lab {} in {}{}",
        st.prefix,
        st.dir.display(),
        if st.complete {
            ""
        } else {
            " (INCOMPLETE: lab up did not finish)"
        }
    );
    println!(
        "{:w$}  {:8}  {:wn$}  {:7}  ADDRESSES",
        "HOST", "KIND", "NAMESPACE", "SSH"
    );
    let mut ok = st.complete;
    for ((name, h), answer) in hosts.iter().zip(&answers) {
        let present = existing.contains(&h.namespace);
        let ns = if present {
            h.namespace.clone()
        } else {
            format!("{} (MISSING)", h.namespace)
        };
        ok &= present && (answer == "-" || answer == "ok");
        println!(
            "{name:w$}  {:8}  {ns:wn$}  {answer:7}  {}",
            h.kind.as_str(),
            h.addresses.join(" ")
        );
    }
    Ok(if ok { 0 } else { 1 })
}
