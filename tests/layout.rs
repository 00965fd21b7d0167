//! The layout is the architecture: the pure core (`src/core`) does no I/O and knows nothing of
//! the engine, the edges or the commands. Checked on the source, so a file read, a process or
//! a tokio call slipped into the core fails the build's tests, not a code review.

use std::path::{Path, PathBuf};

/// What the core's production code may not name.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::process",
    "std::env",
    "std::net::TcpStream",
    "std::io::stdin",
    "std::io::stdout",
    "tokio",
    "openssh",
    "println!",
    "eprintln!",
    "crate::engine",
    "crate::edge",
    "crate::commands",
    "crate::cli",
    "crate::files",
    "crate::transport",
    "crate::lab",
    "crate::progress",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's production code: without its `#[cfg(test)]` module (always last: clippy's
/// `items_after_test_module`, denied in ci/test, keeps it so)
/// and without comments.
fn production(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_core_does_no_io_and_does_not_reach_into_the_edges() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(files.len() > 20, "the core's files are found: {files:?}");
    let mut found = Vec::new();
    for f in files {
        // Unit-test files of the core (fixture capture helpers) may touch the machine.
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let code = production(&std::fs::read_to_string(&f).unwrap());
        for bad in FORBIDDEN {
            if code.contains(bad) {
                found.push(format!("{}: {bad}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O or edge code in the pure core:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_itself_sees_a_violation() {
    assert!(production("use std::fs;\nfn f() {}\n").contains("std::fs"));
    assert!(!production("// std::fs in a comment\n").contains("std::fs"));
    assert!(
        !production("fn f() {}\n#[cfg(test)]\nmod tests { use std::fs; }\n").contains("std::fs")
    );
}
