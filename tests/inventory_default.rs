//! Which inventory meshctl reads: `-i FILE`, else `$MESHCTL_INVENTORY`, else `./meshctl.yaml`,
//! and what it says when none of them exists. `meshctl client` shows the choice without any
//! host: the config it prints names the inventory's network.

use std::path::Path;
use std::process::{Command, Output};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");
/// A hub key to pin, so that `meshctl client` can make a config.
const HUB_KEY: &str = "gwSyaptQc4Ro7MuZHihtpjDj+3wfQfTgSECpjCXT1SM=";

/// Writes `inventory/example.yaml` to `dir/file` with its network renamed to `network`, and
/// pins the hub's key beside it.
fn inventory(dir: &Path, file: &str, network: &str) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/example.yaml"),
    )
    .unwrap();
    let renamed = text.replacen("name: home", &format!("name: {network}"), 1);
    assert_ne!(renamed, text, "example.yaml names its network `home`");
    std::fs::write(dir.join(file), renamed).unwrap();
    let keys = dir.join(file.replace(".yaml", ".keys.yaml"));
    std::fs::write(keys, format!("vps: \"{HUB_KEY}\"\n")).unwrap();
}

/// `meshctl client phone ARGS` in `dir`, with `env` as `$MESHCTL_INVENTORY` (or unset).
fn client(dir: &Path, env: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(MESHCTL);
    cmd.args(["client", "phone"]).args(args).current_dir(dir);
    match env {
        Some(v) => cmd.env("MESHCTL_INVENTORY", v),
        None => cmd.env_remove("MESHCTL_INVENTORY"),
    };
    cmd.output().unwrap()
}

/// The network the printed config was made for.
fn network(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    first
        .rsplit_once("for network ")
        .map(|(_, n)| n.to_owned())
        .unwrap_or_else(|| panic!("no network in {first:?}"))
}

#[test]
fn without_any_inventory_the_error_says_where_meshctl_looks_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = client(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in [
        "-i FILE",
        "$MESHCTL_INVENTORY is not set",
        "./meshctl.yaml does not exist",
        "inventory/example.yaml",
    ] {
        assert!(stderr.contains(part), "{part:?} missing in:\n{stderr}");
    }
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
}

#[test]
fn a_missing_file_named_by_the_environment_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let out = client(dir.path(), Some("elsewhere.yaml"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("elsewhere.yaml named by $MESHCTL_INVENTORY does not exist"),
        "{stderr}"
    );
}

#[test]
fn the_flag_wins_over_the_environment_which_wins_over_meshctl_yaml() {
    let dir = tempfile::tempdir().unwrap();
    inventory(dir.path(), "meshctl.yaml", "default");
    inventory(dir.path(), "env.yaml", "fromenv");
    inventory(dir.path(), "flag.yaml", "fromflag");
    let d = dir.path();
    // `--new-key`: every run makes (and pins) the phone a fresh key, so runs don't interfere.
    assert_eq!(network(&client(d, None, &["--new-key"])), "default");
    assert_eq!(
        network(&client(d, Some("env.yaml"), &["--new-key"])),
        "fromenv"
    );
    assert_eq!(
        network(&client(
            d,
            Some("env.yaml"),
            &["--new-key", "-i", "flag.yaml"]
        )),
        "fromflag"
    );
}
