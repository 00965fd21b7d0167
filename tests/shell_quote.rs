//! The shell quoting function, checked through real shells: any string without NUL survives the
//! round trip byte for byte and runs nothing (validation alone would hide a quoting bug).

use std::path::Path;
use std::process::Command;

use meshctl::shell::{quote, quote_all};
use proptest::prelude::*;

/// Fragments that break naive quoting, plus canaries that would create `canary` in the working
/// directory (or `$CANARY`, an absolute path) if anything in the value ever ran.
const HOSTILE: &[&str] = &[
    "; reboot",
    "; touch canary",
    "$(touch canary)",
    "`touch canary`",
    "$(touch \"$CANARY\")",
    "'$(touch canary)'",
    "\"$(touch canary)\"",
    "' ; touch canary ; '",
    "'\\''",
    "\\'",
    "'",
    "\"",
    "\\",
    "$HOME",
    "${PATH}",
    "$((1+1))",
    "$'\\n'",
    "&& touch canary",
    "| touch canary",
    "> canary",
    "< /etc/passwd",
    "\n",
    "\r\n",
    "\t",
    " ",
    "-n",
    "--",
    "-e \\n",
    "*",
    "?",
    "[a-z]",
    "[",
    "~",
    "~root",
    "{a,b}",
    "!",
    "#",
    "%",
    "=",
    "a=b",
    "é",
    "wg０",
    "\u{202e}",
    "\u{200b}",
    "😀",
    "",
];

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        // Arbitrary unicode (NUL removed: no shell word can carry it).
        any::<String>().prop_map(|s| s.replace('\0', "")),
        // Concatenations of hostile fragments, mixed with arbitrary text.
        proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(HOSTILE).prop_map(str::to_owned),
                "[^\u{0}]{0,4}",
            ],
            0..8
        )
        .prop_map(|v| v.concat()),
    ]
}

/// Runs `script` with `shell -c` in `dir` and returns its stdout, asserting success.
fn run(shell: &str, script: &str, dir: &Path) -> Vec<u8> {
    let out = Command::new(shell)
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("CANARY", dir.join("abs-canary"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shell}: {e}"));
    assert!(
        out.status.success(),
        "{shell} failed on {script:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn assert_nothing_ran(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "a quoted value ran a command: {left:?} appeared"
    );
}

/// `sh` is the shell scripts run under; `bash` is a common login shell that parses the command
/// line first.
fn shells() -> Vec<&'static str> {
    let mut v = vec!["sh"];
    if Command::new("bash")
        .arg("-c")
        .arg(":")
        .status()
        .is_ok_and(|s| s.success())
    {
        v.push("bash");
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn one_word_round_trips_and_runs_nothing(s in hostile_string()) {
        let dir = tempfile::tempdir().unwrap();
        for shell in shells() {
            let out = run(shell, &format!("printf %s {}", quote(&s)), dir.path());
            prop_assert_eq!(out, s.as_bytes().to_vec(), "through {}", shell);
        }
        assert_nothing_ran(dir.path());
    }

    #[test]
    fn many_words_round_trip_and_run_nothing(words in proptest::collection::vec(hostile_string(), 0..6)) {
        let dir = tempfile::tempdir().unwrap();
        // `printf '%s\0'` repeats its format for every argument: one NUL-terminated record per word.
        let script = format!("printf '%s\\0' {}", quote_all(&words));
        for shell in shells() {
            let out = run(shell, &script, dir.path());
            let got: Vec<Vec<u8>> = if words.is_empty() {
                // With no arguments printf still prints its format once, with an empty %s.
                prop_assert_eq!(out, b"\0".to_vec());
                vec![]
            } else {
                out.split(|b| *b == 0).map(<[u8]>::to_vec).collect::<Vec<_>>()[..words.len()].to_vec()
            };
            let want: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, want, "through {}", shell);
        }
        assert_nothing_ran(dir.path());
    }
}

/// The canaries themselves work: unquoted, they do create the file (so the property above would
/// notice if quoting let one through).
#[test]
fn canary_fires_when_unquoted() {
    let dir = tempfile::tempdir().unwrap();
    run("sh", "printf %s $(touch canary)", dir.path());
    assert!(dir.path().join("canary").exists());
}

#[test]
fn fixed_hostile_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for s in HOSTILE {
        let out = run("sh", &format!("printf %s {}", quote(s)), dir.path());
        assert_eq!(out, s.as_bytes(), "{s:?}");
    }
    assert_nothing_ran(dir.path());
}
