//! The CI drift check as users run it: `ci/drift-check.example.yml` is valid YAML, and its own
//! `run:` steps — the drift check and the step that turns its exit code into the job's result —
//! are run here verbatim (with bash, as GitHub runs them) against a lab: a converged lab says
//! "no drift" and passes; a drift made by hand fails with exit 2, the summary names the host and
//! the resources, and neither the summary nor the JSON artifact holds the canary key.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{MESHCTL, TestLab, assert_success, ok, own_inventory, text};

/// A private key planted in a hand-edited config (never a key of the lab's).
const CANARY: &str = "qLzbdHgVFRpKzb4gBVjNqQRN0qF0kMT8gbCbqwFlXlc=";

fn workflow() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/drift-check.example.yml");
    let text = std::fs::read_to_string(&path).expect("read the workflow");
    serde_saphyr::from_str(&text).expect("the workflow is valid YAML")
}

/// The `run:` script of the step named `name`.
fn step_run(wf: &serde_json::Value, name: &str) -> String {
    wf["jobs"]["drift"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name:?}"))["run"]
        .as_str()
        .unwrap_or_else(|| panic!("step {name:?} has no run"))
        .to_owned()
}

/// Runs a step's script as GitHub does (`bash --noprofile --norc -eo pipefail`), in `cwd`,
/// with meshctl on PATH and GitHub's files in `cwd`.
fn run_step(lab: &TestLab, script: &str, cwd: &Path, env: &[(&str, &str)]) -> Output {
    let bin = Path::new(MESHCTL).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(cwd)
        .env("PATH", path)
        .env("GITHUB_STEP_SUMMARY", cwd.join("summary.md"))
        .env("GITHUB_OUTPUT", cwd.join("output"))
        .env("MESHCTL_SSH_CONFIG", lab.ssh_config())
        .env("MESHCTL_INVENTORY", &lab.inventory)
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run bash")
}

/// One run of the workflow's drift check: (exit code it recorded, summary, plan.json).
fn drift_check(lab: &TestLab, wf: &serde_json::Value, name: &str) -> (String, String, String) {
    let cwd: PathBuf = lab.dir.join(name);
    std::fs::create_dir_all(&cwd).unwrap();
    let out = run_step(lab, &step_run(wf, "Drift check"), &cwd, &[]);
    assert_success(&out, "the drift check step itself");
    let output = std::fs::read_to_string(cwd.join("output")).unwrap();
    let code = output
        .lines()
        .find_map(|l| l.strip_prefix("exitcode="))
        .unwrap_or_else(|| panic!("no exitcode in GITHUB_OUTPUT: {output}"))
        .to_owned();
    let summary = std::fs::read_to_string(cwd.join("summary.md")).unwrap_or_default();
    let plan = std::fs::read_to_string(cwd.join("plan.json")).unwrap();
    (code, summary, plan)
}

#[test]
fn the_workflow_is_valid_and_triggers_on_a_schedule_and_by_hand() {
    let wf = workflow();
    assert!(wf["on"]["schedule"][0]["cron"].is_string(), "{wf}");
    assert!(wf["on"].get("workflow_dispatch").is_some(), "{wf}");
    let steps = wf["jobs"]["drift"]["steps"].as_array().unwrap();
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("the plan is uploaded as an artifact");
    assert_eq!(upload["with"]["path"], "plan.json");
    assert_eq!(upload["if"], "always()", "uploaded on drift too");
    let keys = step_run(&wf, "SSH key and pinned host keys");
    assert!(keys.contains("ci/known_hosts") && keys.contains("StrictHostKeyChecking yes"));
    let install = step_run(&wf, "Install meshctl");
    assert!(install.contains("cargo install --locked"), "{install}");
    let check = step_run(&wf, "Drift check");
    assert!(
        check.contains(
            "meshctl plan --detailed-exitcode --json --summary \"$GITHUB_STEP_SUMMARY\" > plan.json"
        ),
        "{check}"
    );
}

#[test]
fn the_workflow_passes_a_converged_lab_and_fails_a_drifted_one_without_leaking_a_key() {
    let wf = workflow();
    let result = step_run(&wf, "Result");
    let (_keep, inv) = own_inventory("drift-check");
    let lab = TestLab::up("drift_check", &inv);
    assert_success(&lab.meshctl(&["apply", "--yes"]), "apply");

    // Converged: exit 0, "no drift", the JSON plan as artifact; the result step passes.
    let (code, summary, plan) = drift_check(&lab, &wf, "converged");
    assert_eq!(code, "0", "{summary}");
    assert!(
        summary.starts_with("## meshctl plan `lab`: no drift\n"),
        "{summary}"
    );
    for host in ["vps", "nas", "laptop"] {
        assert!(
            summary.contains(&format!("| {host} | ")) && summary.contains("in sync"),
            "{summary}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&plan).expect("plan.json is JSON");
    assert_eq!(json["version"], 3);
    let out = run_step(&lab, &result, &lab.dir, &[("EXITCODE", &code)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("No drift"), "{}", text(&out));

    // A drift by hand on the laptop: a private key pasted into its config, its hub's keepalive changed.
    ok(
        &lab,
        "laptop",
        &format!(
            "sed -i 's|^\\[Interface\\]$|[Interface]\\nPrivateKey = {CANARY}|' /etc/wireguard/wg0.conf && grep -c {CANARY} /etc/wireguard/wg0.conf && wg set wg0 peer \"$(wg show wg0 peers)\" persistent-keepalive 60"
        ),
    );
    let (code, summary, plan) = drift_check(&lab, &wf, "drifted");
    assert_eq!(code, "2", "{summary}");
    assert!(summary.contains(": drift on 1 host\n"), "{summary}");
    assert!(
        summary.contains("| laptop | client | drift | "),
        "{summary}"
    );
    assert!(
        summary.contains("### laptop (client, `root@laptop`)"),
        "{summary}"
    );
    assert!(
        summary.contains("file /etc/wireguard/wg0.conf"),
        "the file is named: {summary}"
    );
    assert!(
        summary.contains("`~` peer vps: ") && summary.contains("keepalive 60"),
        "the peer is named: {summary}"
    );
    assert!(
        !summary.contains(CANARY),
        "the summary leaks the key:\n{summary}"
    );
    assert!(!plan.contains(CANARY), "the JSON artifact leaks the key");
    let out = run_step(&lab, &result, &lab.dir, &[("EXITCODE", &code)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("::error title=Drift::"),
        "{}",
        text(&out)
    );

    // An error (a host that cannot be reached) fails differently.
    let pid = lab.state().hosts["nas"].sshd_pid.expect("nas has sshd");
    assert!(
        Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    let (code, summary, _) = drift_check(&lab, &wf, "unreachable");
    assert_eq!(code, "1", "{summary}");
    assert!(summary.contains("### Unreachable hosts"), "{summary}");
    assert!(summary.contains("**nas**"), "{summary}");
    let out = run_step(&lab, &result, &lab.dir, &[("EXITCODE", &code)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("::error title=Drift check failed::"),
        "{}",
        text(&out)
    );
}
