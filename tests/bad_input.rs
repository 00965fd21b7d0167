//! Bad input: nothing is touched on any host when the input is wrong.
//!
//! - A broken inventory (syntax error, semantic error, hostile strings) makes `plan` and
//!   `apply --yes` exit 1 with a `file:line:column:` message, and no host's sshd logs a new
//!   connection. (The exact messages are tested in `inventory_errors.rs`.)
//! - A corrupt, hand-edited, future-version or foreign saved plan is refused with a clear
//!   message, and leaves the hosts as they were.
//! - Every fact parser, fed arbitrary text and damaged copies of real gather output, returns a
//!   value (Ok or Err) and never panics.
//!
//! Lab tests build their own lab (needs root; never skips). Lab names start with `input_`.

mod support;

use std::path::Path;
use std::sync::LazyLock;

use meshctl::facts::{self, GatherSpec};
use meshctl::names::InterfaceName;
use meshctl::state::{ChainId, Family};
use proptest::prelude::*;
use support::{TestLab, assert_success, own_inventory, text};

const MANAGED: [&str; 3] = ["vps", "nas", "laptop"];

/// Every managed host's sshd counters.
fn counts(lab: &TestLab) -> Vec<(usize, usize)> {
    MANAGED.iter().map(|h| lab.sshd_counts(h)).collect()
}

/// 1-based (line, column) of the first occurrence of `needle` in `yaml`.
fn position(yaml: &str, needle: &str) -> (usize, usize) {
    let at = yaml
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the inventory"));
    let line = yaml[..at].matches('\n').count() + 1;
    let col = at - yaml[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, col)
}

/// `yaml` with `from` replaced (which must occur) by `to`.
fn edit(yaml: &str, from: &str, to: &str) -> String {
    assert!(yaml.contains(from), "{from:?} not in the inventory");
    yaml.replacen(from, to, 1)
}

/// No host has anything meshctl makes: no interface, no lock, no key, no files.
fn hosts_untouched(lab: &TestLab, why: &str) {
    for h in MANAGED {
        assert!(
            !lab.exec(h, "ip link show wg0").status.success(),
            "{why}: {h} has a wg0"
        );
        let out = lab.exec(h, "ls -A /etc/wireguard /etc/meshctl /run/meshctl");
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty() && !l.ends_with(':'))
            .map(str::to_owned)
            .collect();
        assert!(
            listed.is_empty(),
            "{why}: {h} has files meshctl makes: {listed:?}"
        );
    }
}

/// (name, inventory text, 1-based line and column of the mistake when known exactly).
type Case = (&'static str, String, Option<(usize, usize)>);

#[test]
fn a_bad_inventory_opens_no_connection_and_names_the_position() {
    let (dir, inv) = own_inventory("rel-input-bad");
    let lab = TestLab::up("input_bad", &inv);
    let good = std::fs::read_to_string(&inv).unwrap();
    let pwned = dir.path().join("pwned");
    let p = pwned.display();

    let mut cases: Vec<Case> = Vec::new();
    cases.push((
        "syntax",
        edit(&good, "  name: lab\n", "  name: \"lab\n"),
        None,
    ));
    let semantic = edit(
        &good,
        "    address: 10.8.0.10\n",
        "    address: 10.9.0.10\n",
    );
    let at = position(&semantic, "10.9.0.10");
    cases.push(("semantic", semantic, Some(at)));
    let ssh = edit(&good, "ssh: root@vps", "ssh: \"root@vps; reboot\"");
    let at = position(&ssh, "\"root@vps; reboot\"");
    cases.push(("ssh", ssh, Some(at)));
    let name = edit(
        &good,
        "\n  laptop:\n",
        &format!("\n  \"lap$(touch {p})\":\n"),
    );
    let at = position(&name, "\"lap$(");
    cases.push(("host-name", name, Some(at)));
    let endpoint = edit(
        &good,
        "endpoint: 198.51.100.10",
        &format!("endpoint: \"`touch {p}`\""),
    );
    let at = position(&endpoint, "\"`touch");
    cases.push(("endpoint", endpoint, Some(at)));
    let quoted = edit(
        &good,
        "ssh: root@nas",
        &format!("ssh: \"root@nas'\\n$(touch {p})\""),
    );
    let at = position(&quoted, "\"root@nas'");
    cases.push(("quote-newline", quoted, Some(at)));

    for (case, yaml, at) in &cases {
        let file = dir.path().join(format!("bad-{case}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let f = file.to_str().unwrap();
        for args in [
            vec!["plan", "-i", f],
            vec!["plan", "--detailed-exitcode", "-i", f],
            vec!["apply", "--yes", "-i", f],
        ] {
            let before = counts(&lab);
            let out = lab.meshctl(&args);
            let t = text(&out);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{case} {args:?} must exit 1:\n{t}"
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().next().unwrap_or_default();
            let prefix = format!("error: {f}:");
            assert!(
                first.starts_with(&prefix),
                "{case} {args:?}: the message must start with `{prefix}LINE:COL:`:\n{t}"
            );
            let pos: Vec<&str> = first[prefix.len()..].splitn(3, ':').collect();
            assert!(
                pos.len() == 3
                    && pos[0].parse::<usize>().is_ok()
                    && pos[1].parse::<usize>().is_ok(),
                "{case} {args:?}: no line:column after the file name:\n{t}"
            );
            if let Some((line, col)) = at {
                assert_eq!(
                    (pos[0], pos[1]),
                    (line.to_string().as_str(), col.to_string().as_str()),
                    "{case} {args:?}: wrong position:\n{t}"
                );
            }
            assert!(
                t.contains("nothing was changed on any host"),
                "{case} {args:?}:\n{t}"
            );
            assert_eq!(
                counts(&lab),
                before,
                "{case} {args:?}: a host's sshd logged a connection or session"
            );
            assert!(
                !pwned.exists(),
                "{case} {args:?}: a hostile string was executed"
            );
        }
    }
    assert!(
        !dir.path().join("lab.keys.yaml").exists(),
        "no keys were pinned"
    );
    for (case, ..) in &cases {
        assert!(
            !dir.path().join(format!("bad-{case}.keys.yaml")).exists(),
            "{case}: keys pinned beside a bad inventory"
        );
    }
    hosts_untouched(&lab, "after bad inventories");
}

#[test]
fn a_bad_saved_plan_is_refused_and_changes_nothing() {
    let (dir, inv) = own_inventory("rel-input-saved");
    let lab = TestLab::up("input_saved", &inv);
    let good_file = dir.path().join("plan.json");
    assert_success(
        &lab.meshctl(&["plan", "-o", good_file.to_str().unwrap()]),
        "plan -o",
    );
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&good_file).unwrap()).expect("plan is JSON");

    let edited = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    };
    let full = std::fs::read_to_string(&good_file).unwrap();
    // (case, content, what the message must say)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            full[..full.len() / 2].to_owned(),
            "is not a meshctl plan",
        ),
        (
            "garbage",
            "\u{0}\u{1}PK\u{3}\u{4} not json at all".to_owned(),
            "is not a meshctl plan",
        ),
        ("empty", String::new(), "is not a meshctl plan"),
        ("array", "[1, 2, 3]".to_owned(), "is not a meshctl plan"),
        (
            "no-version",
            edited(&|v| {
                v.as_object_mut().unwrap().remove("version");
            }),
            "no `version` field",
        ),
        (
            "no-hosts",
            edited(&|v| {
                v.as_object_mut().unwrap().remove("hosts");
            }),
            "missing field `hosts`",
        ),
        (
            "no-changes",
            edited(&|v| {
                v["hosts"][0].as_object_mut().unwrap().remove("changes");
            }),
            "missing field `changes`",
        ),
        (
            "no-digest",
            edited(&|v| {
                v.as_object_mut().unwrap().remove("inventory_digest");
            }),
            "missing field `inventory_digest`",
        ),
        (
            "bad-op",
            edited(&|v| v["hosts"][0]["changes"][0]["op"]["op"] = "format_disk".into()),
            "unknown variant `format_disk`",
        ),
        (
            "bad-op-field",
            edited(&|v| {
                v["hosts"][1]["changes"][0]["op"] =
                    serde_json::json!({"op": "write_file", "path": 7})
            }),
            "is not a meshctl plan",
        ),
        (
            "bad-host",
            edited(&|v| v["hosts"][0]["host"] = "vps; reboot".into()),
            "is not a meshctl plan",
        ),
        (
            "version-99",
            edited(&|v| v["version"] = 99.into()),
            "has schema version 99; this meshctl reads version 3",
        ),
        (
            "version-string",
            edited(&|v| v["version"] = "1".into()),
            "no `version` field",
        ),
    ];
    for (case, content, says) in &cases {
        let file = dir.path().join(format!("{case}.json"));
        std::fs::write(&file, content).unwrap();
        let before = counts(&lab);
        let out = lab.meshctl(&["apply", file.to_str().unwrap(), "--yes"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{case}: must be refused:\n{t}");
        assert!(
            t.contains(&format!("saved plan {}", file.display())),
            "{case}: the message names the file:\n{t}"
        );
        assert!(
            t.contains(says),
            "{case}: the message must say {says:?}:\n{t}"
        );
        assert_eq!(
            counts(&lab),
            before,
            "{case}: a refused plan file must not open a connection"
        );
    }
    hosts_untouched(&lab, "after refused plan files");

    // A plan made from another inventory (here: another MTU), applied with this one.
    let other_dir = tempfile::Builder::new()
        .prefix("rel-input-other")
        .tempdir()
        .unwrap();
    let other = other_dir.path().join("other.yaml");
    std::fs::write(
        &other,
        edit(
            &std::fs::read_to_string(&inv).unwrap(),
            "  mtu: 1420\n",
            "  mtu: 1380\n",
        ),
    )
    .unwrap();
    let other_plan = dir.path().join("other-plan.json");
    assert_success(
        &lab.meshctl(&[
            "plan",
            "-i",
            other.to_str().unwrap(),
            "-o",
            other_plan.to_str().unwrap(),
        ]),
        "plan -i other -o",
    );
    let out = lab.meshctl(&[
        "apply",
        other_plan.to_str().unwrap(),
        "--yes",
        "-i",
        inv.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plan from another inventory must be refused:\n{t}"
    );
    assert!(t.contains("was made from other inputs"), "{t}");
    assert!(!t.contains("Apply:"), "nothing was applied:\n{t}");
    for h in MANAGED {
        assert!(
            !lab.exec(h, "ip link show wg0").status.success(),
            "{h}: a refused plan created wg0"
        );
        assert!(
            !lab.exec(h, "test -e /run/meshctl/lock").status.success(),
            "{h}: the lock was left behind"
        );
        let files = String::from_utf8_lossy(
            &lab.exec(h, "ls -A /etc/meshctl; ls -A /etc/wireguard")
                .stdout,
        )
        .into_owned();
        assert!(
            !files.contains(".conf") && !files.contains("rules") && !files.contains("up.sh"),
            "{h}: files written: {files}"
        );
    }
}

/// A hand-edited saved plan is refused. An edit that stays valid JSON of the right
/// shape (here a change's address, and a removed change) must not be ignored silently: apply
/// either refuses the file or applies it exactly, and never something else than the file says.
#[test]
fn a_hand_edited_valid_saved_plan_is_not_silently_replaced() {
    let (dir, inv) = own_inventory("rel-input-edit");
    let lab = TestLab::up("input_edit", &inv);
    let file = dir.path().join("plan.json");
    assert_success(
        &lab.meshctl(&["plan", "-o", file.to_str().unwrap()]),
        "plan -o",
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let laptop = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .position(|h| h["host"] == "laptop")
        .expect("laptop in plan");
    let changes = v["hosts"][laptop]["changes"].as_array_mut().unwrap();
    let addr = changes
        .iter_mut()
        .find(|c| c["op"]["op"] == "add_address" && c["op"]["address"] == "10.8.0.10/24")
        .expect("the laptop's address change");
    addr["op"]["address"] = "10.8.0.99/24".into();
    addr["resource"] = "address 10.8.0.99/24 on wg0".into();
    std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();

    let out = lab.meshctl(&["apply", file.to_str().unwrap(), "--yes"]);
    let t = text(&out);
    let addrs =
        String::from_utf8_lossy(&lab.exec("laptop", "ip -4 addr show dev wg0").stdout).into_owned();
    if out.status.code() == Some(1) {
        assert!(
            t.contains("saved plan"),
            "a refusal names the saved plan:\n{t}"
        );
        assert!(
            !addrs.contains("10.8.0."),
            "a refused plan changed the laptop: {addrs}"
        );
    } else {
        assert!(
            addrs.contains("10.8.0.99/24") && !addrs.contains("10.8.0.10/24"),
            "apply of an edited plan neither refused it nor applied it exactly: the laptop has {addrs:?}\n{t}"
        );
    }
}

// ---- Fuzzing the fact parsers (no lab) ----

fn chain(family: Family, table: &str, name: &str) -> ChainId {
    ChainId {
        family,
        table: table.into(),
        chain: name.into(),
    }
}

/// The spec `src/core/facts/fixtures/*.out` were captured with (see src/core/facts/fixtures/README.md).
#[path = "../src/core/facts/fixtures/spec.rs"]
mod fixture;
use fixture::fixture_spec;

/// The spec meshctl uses for `host` of `inventory/lab.yaml` (the one
/// `tests/fixtures/gather/gather-HOST.out` was captured with, on a lab host after apply).
fn lab_spec(host: &str) -> GatherSpec {
    let text = include_str!("../inventory/lab.yaml");
    let inv =
        meshctl::inventory::parse(text, "lab.yaml", Path::new("lab.yaml")).expect("lab inventory");
    let roles = meshctl::files::load_roles(None).expect("built-in roles");
    let desired = meshctl::desired::all(&inv, &roles, &meshctl::keys::PinnedKeys::default());
    let d = desired
        .iter()
        .find(|(h, _)| h.as_str() == host)
        .expect("host in the lab inventory")
        .1;
    meshctl::planner::gather_spec(d, &roles)
}

/// Writes the gather script of `vps` and `nas` to `$FX_SCRIPT_DIR/gather-HOST.sh`, to
/// re-capture `tests/fixtures/gather/` (see its README).
#[test]
#[ignore = "helper for capturing fixtures"]
fn capture_lab_gather_scripts() {
    let dir = std::env::var("FX_SCRIPT_DIR").expect("FX_SCRIPT_DIR");
    for host in ["vps", "nas"] {
        let path = Path::new(&dir).join(format!("gather-{host}.sh"));
        std::fs::write(path, facts::gather_script(&lab_spec(host))).unwrap();
    }
}

/// (name, real output, the spec it was gathered with), built once.
static CORPUS: LazyLock<Vec<(&'static str, &'static str, GatherSpec)>> = LazyLock::new(|| {
    vec![
        (
            "hub.out",
            include_str!("../src/core/facts/fixtures/hub.out"),
            fixture_spec("wg0"),
        ),
        (
            "fresh.out",
            include_str!("../src/core/facts/fixtures/fresh.out"),
            fixture_spec("wg0"),
        ),
        (
            "nopeers.out",
            include_str!("../src/core/facts/fixtures/nopeers.out"),
            fixture_spec("wg1"),
        ),
        (
            "gather-vps.out",
            include_str!("fixtures/gather/gather-vps.out"),
            lab_spec("vps"),
        ),
        (
            "gather-nas.out",
            include_str!("fixtures/gather/gather-nas.out"),
            lab_spec("nas"),
        ),
    ]
});

#[test]
fn damaged_gather_output_never_panics_a_fact_parser() {
    // The mutations below start from outputs that parse: otherwise they would only ever test
    // the first check.
    for (name, out, spec) in CORPUS.iter() {
        facts::parse(out, spec)
            .unwrap_or_else(|e| panic!("{name} does not parse with its spec: {e}"));
    }
}

/// One way to damage an output.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceLine(usize, String),
    InsertLine(usize, String),
    FlipByte(usize, u8),
    ChangeStatus(usize, i64),
    CrLf,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let line = prop_oneof![
        any::<String>(),
        "@@meshctl (begin|end) [a-z.0-9-]{0,12}( rc=-?[0-9]{1,3})?@@",
        "@@meshctl facts [0-9]@@",
        "\\[\\{\"[a-z]{1,8}\":(\"[^\"]{0,8}\"|[0-9]{1,4}|null|\\[\\])\\}\\]",
        "[A-Za-z0-9+/]{43}=( [0-9. :/,a-f]{0,30})*",
        "-A MESHCTL-[A-Z]{1,8}( -[a-z] [^ ]{1,10}){0,4}",
        ":[A-Z-]{1,12} (ACCEPT|DROP|-) \\[[0-9]{1,3}:[0-9]{1,3}\\]",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), line.clone()).prop_map(|(a, l)| Mutation::ReplaceLine(a, l)),
        (any::<usize>(), line).prop_map(|(a, l)| Mutation::InsertLine(a, l)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::FlipByte(a, b)),
        (any::<usize>(), any::<i64>()).prop_map(|(a, s)| Mutation::ChangeStatus(a, s)),
        Just(Mutation::CrLf),
    ]
}

fn mutate(out: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::Truncate(at) => {
            let mut at = at % (out.len() + 1);
            while !out.is_char_boundary(at) {
                at -= 1;
            }
            return out[..at].to_owned();
        }
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            lines.insert(i % n, lines[i % n].clone())
        }
        Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
        Mutation::ReplaceLine(i, l) if !lines.is_empty() => lines[i % n] = l.clone(),
        Mutation::InsertLine(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
        Mutation::FlipByte(i, b) => {
            let mut bytes = out.as_bytes().to_vec();
            if !bytes.is_empty() {
                let i = i % bytes.len();
                bytes[i] ^= b | 1;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        Mutation::ChangeStatus(i, s) => {
            let ends: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.starts_with("@@meshctl end "))
                .map(|(k, _)| k)
                .collect();
            if !ends.is_empty() {
                let k = ends[i % ends.len()];
                let l = &lines[k];
                let cut = l.find(" rc=").map_or(l.len(), |c| c);
                lines[k] = format!("{} rc={s}@@", &l[..cut]);
            }
        }
        Mutation::CrLf => return out.replace('\n', "\r\n"),
        _ => {}
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Damaged real outputs (one to four mutations): parse returns Ok or Err, never panics.
    #[test]
    fn fact_parsers_never_panic_on_damaged_output(which in 0usize..5, ms in prop::collection::vec(mutation(), 1..5)) {
        let (_, out, spec) = &CORPUS[which];
        let mut damaged: String = (*out).to_owned();
        for m in &ms {
            damaged = mutate(&damaged, m);
        }
        let _ = facts::parse(&damaged, spec);
    }

    /// Arbitrary text, with and without a valid header line: never a panic.
    #[test]
    fn fact_parsers_never_panic_on_arbitrary_text(which in 0usize..5, body in any::<String>(), header in any::<bool>()) {
        let (_, _, spec) = &CORPUS[which];
        let out = if header { format!("@@meshctl facts 1@@\n{body}") } else { body };
        let _ = facts::parse(&out, spec);
    }

    /// Records of the right names with arbitrary bodies and statuses, in the right order.
    #[test]
    fn fact_parsers_never_panic_on_arbitrary_record_bodies(which in 0usize..5, bodies in prop::collection::vec((any::<String>(), -3i32..300), 1..80)) {
        let (_, out, spec) = &CORPUS[which];
        let ids: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("@@meshctl begin ")?.strip_suffix("@@")).collect();
        let mut s = String::from("@@meshctl facts 1@@\n");
        for (i, id) in ids.iter().enumerate() {
            let (body, rc) = &bodies[i % bodies.len()];
            s.push_str(&format!("@@meshctl begin {id}@@\n{body}\n@@meshctl end {id} rc={rc}@@\n"));
        }
        let _ = facts::parse(&s, spec);
    }
}
