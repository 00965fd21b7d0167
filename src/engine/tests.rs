//! The engine's orchestration against the fake `Remote`: every failure path of an apply in
//! milliseconds, without root, SSH or a lab.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::apply::{ApplyError, ApplyOptions, ApplyResult, Operator, PlanSource};
use super::fake::{self, FakeConnector, FakeHost, Kind};
use super::{Engine, ExecuteSettings, HostError, HostOutcome, Lock, RollbackSeen};
use crate::names::{HostName, WgKey};
use crate::plan::Plan;
use crate::planner::{self, Inputs};
use crate::progress::Progress;
use crate::scripts::steps;

const VPS: &str = "x/mx1BYRsLAiujkK0jxj1w7VcUqhmtKsX+NjQA+VdV0=";
const NAS: &str = "MWImW/jCzmR9p+vyUiWG4o93uSLVC6/Q/Vz2d0oDcXY=";
const LAPTOP: &str = "D0XM6kWW/LZWjOOgBVkAp8xJsp4BLCNJsEZHpEY4Rj0=";
const OTHER: &str = "PGphLCc7BZN9PEM4ayCW3LVDreZtGGLl3zqQSGZHmHY=";

/// The lab inventory in a temporary directory (with `extra` appended to the nas entry), and
/// optionally a pins file beside it.
fn inputs(nas_extra: &str, pins: &[(&str, &str)]) -> (tempfile::TempDir, Inputs) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("inventory/lab.yaml"),
    )
    .unwrap()
    .replace(
        "    keepalive: 4\n",
        &format!("    keepalive: 4\n{nas_extra}"),
    );
    let path = dir.path().join("lab.yaml");
    std::fs::write(&path, text).unwrap();
    if !pins.is_empty() {
        let mut keys = crate::keys::PinnedKeys::default();
        for (h, k) in pins {
            keys.keys
                .insert(HostName::parse(h).unwrap(), WgKey::parse(k).unwrap());
        }
        crate::files::save_pins(&keys, &dir.path().join("lab.keys.yaml")).unwrap();
    }
    let inputs = crate::files::load_inputs(&path, None).unwrap();
    (dir, inputs)
}

fn engine(c: &FakeConnector) -> Engine<FakeConnector> {
    Engine::new(c.clone(), 8, Arc::new(Progress::quiet()))
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        lock: Lock {
            holder: "test".into(),
            break_lock: false,
        },
        accept_new_keys: false,
        execute: ExecuteSettings {
            run_id: "run-1".into(),
            guard_timeout_secs: 5,
        },
        rotate: None,
        crossing: crate::planner::crossing_none(),
    }
}

/// An operator that answers `answer` and records what it was shown and told.
#[derive(Default)]
struct Scripted {
    answer: Option<bool>,
    shown: Mutex<Vec<Plan>>,
    pinned: Mutex<Vec<BTreeMap<HostName, WgKey>>>,
    warned: Mutex<Vec<String>>,
}

impl Scripted {
    fn yes() -> Self {
        Self {
            answer: Some(true),
            ..Self::default()
        }
    }
}

impl Operator for Scripted {
    fn show(&self, plan: &Plan) {
        self.shown.lock().unwrap().push(plan.clone());
    }
    async fn confirm(&self) -> anyhow::Result<bool> {
        self.answer.ok_or_else(|| anyhow::anyhow!("no terminal"))
    }
    fn pin(&self, learnt: &BTreeMap<HostName, WgKey>) -> anyhow::Result<()> {
        self.pinned.lock().unwrap().push(learnt.clone());
        Ok(())
    }
    fn warn(&self, text: &str) {
        self.warned.lock().unwrap().push(text.to_owned());
    }
    fn record_rotation(&self, host: &HostName, _old: &WgKey, new: &WgKey) -> anyhow::Result<()> {
        self.pinned
            .lock()
            .unwrap()
            .push(BTreeMap::from([(host.clone(), new.clone())]));
        Ok(())
    }
}

fn three_healthy() -> FakeConnector {
    FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        ("nas", fake::healthy(NAS)),
        ("laptop", fake::healthy(LAPTOP)),
    ])
}

fn host(h: &str) -> HostName {
    HostName::parse(h).unwrap()
}

async fn apply(
    c: &FakeConnector,
    inputs: &Inputs,
    source: PlanSource,
    op: &Scripted,
) -> Result<ApplyResult, ApplyError> {
    super::apply::run(&engine(c), inputs, source, &opts(), op).await
}

fn fresh() -> PlanSource {
    PlanSource::Fresh { only: None }
}

fn outcomes(r: Result<ApplyResult, ApplyError>) -> BTreeMap<HostName, HostOutcome> {
    match r {
        Ok(ApplyResult::Applied { outcomes, .. }) => outcomes,
        other => panic!("not applied: {other:?}"),
    }
}

/// What `meshctl plan -o` would save against the fake hosts.
async fn saved_plan(c: &FakeConnector, inputs: &Inputs) -> Plan {
    let desired = inputs.desired();
    let specs = desired
        .iter()
        .map(|(h, d)| (h.clone(), planner::gather_spec(d, &inputs.roles)))
        .collect();
    let live = engine(c)
        .gather(specs)
        .await
        .into_iter()
        .map(|(h, r)| (h, r.map_err(|e| e.to_string())))
        .collect();
    planner::build(inputs, &desired, &live)
}

#[tokio::test]
async fn a_fresh_apply_locks_changes_and_confirms_each_host_over_one_connection() {
    let (_d, inputs) = inputs("", &[]);
    let c = three_healthy();
    let op = Scripted::yes();
    let out = outcomes(apply(&c, &inputs, fresh(), &op).await);
    for h in ["vps", "nas", "laptop"] {
        assert_eq!(
            c.kinds(h),
            vec![Kind::Prepare, Kind::Changes, Kind::Finish],
            "{h}"
        );
        assert_eq!(c.connections(h), 1, "{h}");
        // Unguarded: the changes and the check after them are one execution.
        assert_eq!(c.executions(h), 2, "{h}");
        // The fake stays fresh, so the check after apply sees the changes still to do.
        assert!(
            matches!(out[&host(h)], HostOutcome::NotConverged { .. }),
            "{h}"
        );
    }
    // The keys learnt in step 1 are pinned, and the plan shown knows them.
    let pinned = op.pinned.lock().unwrap();
    assert_eq!(pinned[0].len(), 3);
    let shown = &op.shown.lock().unwrap()[0];
    assert!(!render_json(shown).contains("known after apply"));
}

fn render_json(p: &Plan) -> String {
    crate::render::json(p)
}

#[tokio::test]
async fn the_change_script_is_exactly_the_plans_ops() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = three_healthy();
    let op = Scripted::yes();
    outcomes(apply(&c, &inputs, fresh(), &op).await);
    let shown = op.shown.lock().unwrap()[0].clone();
    for hp in &shown.hosts {
        assert_eq!(
            c.scripts(hp.host.as_str(), Kind::Changes),
            vec![steps::changes(&hp.changes, steps::OnFailure::Stop)],
            "{}",
            hp.host
        );
    }
}

#[tokio::test]
async fn a_saved_plan_runs_its_own_ops_whatever_its_display_fields_say() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = three_healthy();
    let plan = saved_plan(&c, &inputs).await;
    let mut scrambled = plan.clone();
    for hp in &mut scrambled.hosts {
        hp.warnings = vec!["ignore me".into()];
        for ch in &mut hp.changes {
            ch.kind = "nonsense".into();
            ch.resource = "rm -rf /".into();
            ch.before = Some("x".into());
            ch.after = Some("y".into());
            ch.diff = Some("z".into());
        }
    }
    let run = |p: Plan| {
        let c = three_healthy();
        let inputs = inputs.clone();
        async move {
            let op = Scripted::yes();
            let source = PlanSource::Saved {
                plan: Box::new(p),
                path: "plan.json".into(),
            };
            outcomes(apply(&c, &inputs, source, &op).await);
            ["vps", "nas", "laptop"].map(|h| c.scripts(h, Kind::Changes))
        }
    };
    let original = run(plan.clone()).await;
    let from_scrambled = run(scrambled).await;
    assert_eq!(original, from_scrambled);
    // And they are the saved plan's ops, not a new plan's.
    for (i, h) in ["vps", "nas", "laptop"].iter().enumerate() {
        let hp = plan.hosts.iter().find(|p| p.host.as_str() == *h).unwrap();
        assert_eq!(
            original[i],
            vec![steps::changes(&hp.changes, steps::OnFailure::Stop)],
            "{h}"
        );
    }
}

#[tokio::test]
async fn a_saved_plan_made_before_the_keys_existed_gets_them_in_step_1() {
    let (_d, inputs) = inputs("", &[]);
    let c = three_healthy();
    let plan = saved_plan(&c, &inputs).await;
    assert!(render_json(&plan).contains("PublicKey = (known after apply)"));
    let op = Scripted::yes();
    let source = PlanSource::Saved {
        plan: Box::new(plan),
        path: "plan.json".into(),
    };
    outcomes(apply(&c, &inputs, source, &op).await);
    let vps = c.scripts("vps", Kind::Changes).join("");
    assert!(vps.contains(&format!("PublicKey = {NAS}")), "{vps}");
    assert!(vps.contains(&format!("peer '{LAPTOP}'")) || vps.contains(LAPTOP));
    assert!(!vps.contains("known after apply"), "{vps}");
}

#[tokio::test]
async fn a_saved_plan_is_refused_when_a_host_moved_and_every_lock_is_released() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = three_healthy();
    let plan = saved_plan(&c, &inputs).await;
    // nas now has forwarding on: not the state the plan was made against.
    let moved = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            FakeHost {
                refuse_connects: vec![],
                respond: Arc::new(|kind, s, _| match kind {
                    Kind::Prepare => fake::ok(fake::prepared(NAS, s).replacen(
                        "@@meshctl begin sysctl.0@@\n0\n",
                        "@@meshctl begin sysctl.0@@\n1\n",
                        1,
                    )),
                    _ => fake::ok(String::new()),
                }),
            },
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let source = PlanSource::Saved {
        plan: Box::new(plan),
        path: "plan.json".into(),
    };
    let r = apply(&moved, &inputs, source, &Scripted::yes()).await;
    assert!(
        matches!(&r, Err(ApplyError::Saved(crate::saved_plan::SavedPlanError::Moved { host, .. })) if host == "nas"),
        "{r:?}"
    );
    for h in ["vps", "nas", "laptop"] {
        assert_eq!(moved.kinds(h), vec![Kind::Prepare, Kind::Unlock], "{h}");
    }
}

#[tokio::test]
async fn a_host_lost_in_step_1_fails_alone_and_the_others_apply() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            FakeHost {
                refuse_connects: vec![],
                respond: Arc::new(|_, _, _| fake::lost("nas")),
            },
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    assert!(matches!(
        &out[&host("nas")],
        HostOutcome::Failed(HostError::Transport(_))
    ));
    assert_eq!(c.kinds("nas"), vec![Kind::Prepare]);
    assert_eq!(
        c.kinds("vps"),
        vec![Kind::Prepare, Kind::Changes, Kind::Finish]
    );
}

#[tokio::test]
async fn an_unreachable_host_fails_alone() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let mut nas = fake::healthy(NAS);
    nas.refuse_connects = vec![0];
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        ("nas", nas),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(e) = &out[&host("nas")] else {
        panic!()
    };
    assert!(e.to_string().starts_with("cannot connect to nas"), "{e}");
    assert!(c.kinds("nas").is_empty());
    assert_eq!(c.kinds("laptop").len(), 3);
}

#[tokio::test]
async fn a_lost_connection_while_applying_keeps_the_lock() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        ("nas", fake::prepared_then(NAS, |_, _, _| fake::lost("nas"))),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(e) = &out[&host("nas")] else {
        panic!()
    };
    assert!(matches!(e, HostError::LostWhileApplying { .. }));
    assert!(e.to_string().contains("--break-lock"), "{e}");
    // No unlock and no finish: the script may still be running on the host.
    assert_eq!(c.kinds("nas"), vec![Kind::Prepare, Kind::Changes]);
}

#[tokio::test]
async fn a_failing_step_names_it_and_what_ran_before_it() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            fake::prepared_then(NAS, |kind, s, _| match kind {
                Kind::Changes => {
                    // Let the first two announced steps start, the second fail.
                    let steps: Vec<&str> = s
                        .lines()
                        .filter(|l| l.starts_with(&format!("echo {}", steps::MARK_STEP)))
                        .map(|l| l.trim_start_matches("echo "))
                        .take(2)
                        .collect();
                    let failed = steps[1].replacen(steps::MARK_STEP, steps::MARK_FAILED, 1);
                    fake::fail(
                        1,
                        format!("{}\n{}\n{failed}\n", steps[0], steps[1]),
                        "RTNETLINK answers: test fault\n",
                    )
                }
                _ => fake::ok(fake::fresh_gather(s)),
            }),
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(HostError::Step {
        failed,
        detail,
        applied,
    }) = &out[&host("nas")]
    else {
        panic!("{:?}", out[&host("nas")])
    };
    assert_eq!(detail, "RTNETLINK answers: test fault");
    assert_eq!(applied.len(), 1);
    assert!(
        failed.starts_with('+') || failed.starts_with('~'),
        "{failed}"
    );
    // The lock is released by the finishing gather.
    assert_eq!(
        c.kinds("nas"),
        vec![Kind::Prepare, Kind::Changes, Kind::Finish]
    );
}

#[tokio::test]
async fn a_changed_key_is_refused_and_its_lock_released_at_once() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", OTHER), ("laptop", LAPTOP)]);
    let c = three_healthy();
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(HostError::KeyRefused(why)) = &out[&host("nas")] else {
        panic!()
    };
    assert!(why.to_string().contains("THE PUBLIC KEY OF nas CHANGED"));
    assert_eq!(c.kinds("nas"), vec![Kind::Prepare, Kind::Unlock]);
    assert_eq!(c.kinds("vps").len(), 3);
}

#[tokio::test]
async fn a_key_another_host_has_is_refused() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("laptop", LAPTOP)]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        ("nas", fake::healthy(VPS)),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    assert!(matches!(
        &out[&host("nas")],
        HostOutcome::Failed(HostError::KeyRefused(
            crate::keys::KeyRefusal::Shared { .. }
        ))
    ));
}

#[tokio::test]
async fn a_lock_held_by_another_run_is_reported_with_its_holder() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            FakeHost {
                refuse_connects: vec![],
                respond: Arc::new(|_, _, _| {
                    fake::fail(
                        steps::EXIT_LOCKED,
                        format!("{}\nmeshctl pid 7 on ci\n", steps::MARK_LOCKED),
                        "",
                    )
                }),
            },
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(e @ HostError::Locked { holder }) = &out[&host("nas")] else {
        panic!()
    };
    assert_eq!(holder, "meshctl pid 7 on ci");
    assert!(e.to_string().contains("--break-lock"));
}

#[tokio::test]
async fn no_at_the_prompt_releases_every_lock_and_changes_nothing() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = three_healthy();
    let op = Scripted {
        answer: Some(false),
        ..Scripted::default()
    };
    let r = apply(&c, &inputs, fresh(), &op).await;
    assert!(matches!(r, Ok(ApplyResult::Cancelled)));
    for h in ["vps", "nas", "laptop"] {
        assert_eq!(c.kinds(h), vec![Kind::Prepare, Kind::Unlock], "{h}");
    }
}

#[tokio::test]
async fn ctrl_c_that_killed_the_connections_releases_the_locks_over_new_ones() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    // Ctrl-C reaches the ssh processes too: the first connection's unlock fails.
    let dying = |key: &'static str| FakeHost {
        refuse_connects: vec![],
        respond: Arc::new(move |kind, s, n| match kind {
            Kind::Prepare => fake::ok(fake::prepared(key, s)),
            Kind::Unlock if n == 0 => fake::lost("host"),
            _ => fake::ok(String::new()),
        }),
    };
    let c = FakeConnector::with([
        ("vps", dying(VPS)),
        ("nas", dying(NAS)),
        ("laptop", dying(LAPTOP)),
    ]);
    let op = Scripted {
        answer: Some(false),
        ..Scripted::default()
    };
    let r = apply(&c, &inputs, fresh(), &op).await;
    assert!(matches!(r, Ok(ApplyResult::Cancelled)));
    for h in ["vps", "nas", "laptop"] {
        assert_eq!(
            c.kinds(h),
            vec![Kind::Prepare, Kind::Unlock, Kind::Unlock],
            "{h}"
        );
        assert_eq!(c.connections(h), 2, "{h}");
    }
}

#[tokio::test]
async fn no_terminal_to_confirm_on_releases_every_lock() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = three_healthy();
    let r = apply(&c, &inputs, fresh(), &Scripted::default()).await;
    assert!(matches!(r, Err(ApplyError::Operator(_))));
    for h in ["vps", "nas", "laptop"] {
        assert_eq!(c.kinds(h), vec![Kind::Prepare, Kind::Unlock], "{h}");
    }
}

/// A guarded nas: `confirm` answers the confirmation.
fn guarded_nas(confirm: fake::Responder) -> FakeConnector {
    FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            fake::prepared_then(NAS, move |kind, s, n| match kind {
                Kind::Changes => fake::ok(format!("{}\n", steps::MARK_DONE)),
                Kind::Confirm | Kind::GuardStatus => confirm(kind, s, n),
                _ => fake::ok(fake::fresh_gather(s)),
            }),
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ])
}

#[tokio::test]
async fn a_guarded_host_is_armed_with_the_plans_rollback_and_confirmed_over_a_new_connection() {
    let (_d, inputs) = inputs(
        "    guard: true\n",
        &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)],
    );
    let c = guarded_nas(Arc::new(|_, s, _| fake::ok(fake::fresh_gather(s))));
    let op = Scripted::yes();
    let out = outcomes(apply(&c, &inputs, fresh(), &op).await);
    assert!(matches!(
        out[&host("nas")],
        HostOutcome::NotConverged { .. }
    ));
    assert_eq!(
        c.kinds("nas"),
        vec![Kind::Prepare, Kind::Changes, Kind::Confirm]
    );
    assert_eq!(c.connections("nas"), 2);
    // The rollback armed is the one in the plan.
    let plan = op.shown.lock().unwrap()[0].clone();
    let hp = plan
        .hosts
        .iter()
        .find(|h| h.host.as_str() == "nas")
        .unwrap();
    let g = hp
        .guard
        .as_ref()
        .expect("a guarded host's plan has its rollback");
    assert_eq!(g.created_interface.as_deref(), Some("wg0"));
    let changes = &c.scripts("nas", Kind::Changes)[0];
    assert!(changes.contains(&crate::scripts::guard::arm("run-1", &hp.changes, g, 5)));
    // Unguarded hosts have none.
    assert!(
        plan.hosts
            .iter()
            .filter(|h| h.host.as_str() != "nas")
            .all(|h| h.guard.is_none())
    );
}

#[tokio::test(start_paused = true)]
async fn a_guarded_host_that_cannot_be_confirmed_rolls_back_by_itself() {
    let (_d, inputs) = inputs(
        "    guard: true\n",
        &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)],
    );
    let c = guarded_nas(Arc::new(|kind, _, _| match kind {
        Kind::Confirm => fake::fail(4, String::new(), "the changes did not finish on the host"),
        _ => fake::ok(format!("{}\n", crate::scripts::guard::STATUS_ROLLED_BACK)),
    }));
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(HostError::NotConfirmed { why, after, .. }) = &out[&host("nas")] else {
        panic!("{:?}", out[&host("nas")])
    };
    assert_eq!(why, "the changes did not finish on the host");
    assert_eq!(*after, RollbackSeen::RolledBack { secs: 5 });
    assert_eq!(
        c.kinds("nas"),
        vec![
            Kind::Prepare,
            Kind::Changes,
            Kind::Confirm,
            Kind::GuardStatus
        ]
    );
}

#[tokio::test]
async fn a_guard_that_could_not_be_armed_changed_nothing() {
    let (_d, inputs) = inputs(
        "    guard: true\n",
        &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)],
    );
    let c = guarded_nas(Arc::new(|_, _, _| {
        fake::fail(
            crate::scripts::guard::EXIT_NEVER_ARMED,
            String::new(),
            "the guard was never armed",
        )
    }));
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    assert!(matches!(
        &out[&host("nas")],
        HostOutcome::Failed(HostError::GuardNotArmed { .. })
    ));
    assert!(!c.kinds("nas").contains(&Kind::GuardStatus));
}

#[tokio::test]
async fn plan_gathers_each_host_once_over_one_connection() {
    let (_d, inputs) = inputs("", &[]);
    let c = three_healthy();
    let plan = saved_plan(&c, &inputs).await;
    assert!(plan.failed_hosts().next().is_none());
    for h in ["vps", "nas", "laptop"] {
        assert_eq!(c.kinds(h), vec![Kind::Gather], "{h}");
        assert_eq!(c.connections(h), 1);
    }
}

#[tokio::test]
async fn a_connection_lost_in_the_final_gather_fails_that_host_alone() {
    // The final gather runs in the change script's execution (no guard): a connection lost
    // there is lost while applying, as far as meshctl can tell, and the lock stays.
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            fake::prepared_then(NAS, |kind, _, _| match kind {
                Kind::Changes => fake::ok(format!("{}\n", steps::MARK_DONE)),
                _ => fake::lost("nas"),
            }),
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(e @ HostError::LostWhileApplying { .. }) = &out[&host("nas")] else {
        panic!("{:?}", out[&host("nas")])
    };
    assert!(e.to_string().contains("its lock stays"), "{e}");
    assert_eq!(
        c.kinds("nas"),
        vec![Kind::Prepare, Kind::Changes, Kind::Finish]
    );
    assert!(
        !c.kinds("nas").contains(&Kind::Unlock),
        "no unlock of a lock in use"
    );
    assert!(matches!(
        out[&host("vps")],
        HostOutcome::NotConverged { .. }
    ));
}

/// A failing step: the gather and the unlock after it still run in the same execution, and
/// the failure is the step's, named from the part of the output before the gather.
#[tokio::test]
async fn a_failed_step_still_gathers_and_unlocks_in_the_same_execution() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            fake::prepared_then(NAS, |kind, s, _| match kind {
                Kind::Changes => fake::fail(
                    1,
                    format!("{} 0\n{} 0\n", steps::MARK_STEP, steps::MARK_FAILED),
                    "RTNETLINK answers: File exists\n",
                ),
                // The gather's own noise on stderr (the absent interface) is not the step's.
                _ => Ok(crate::transport::RemoteOutput {
                    status: Some(0),
                    stdout: fake::fresh_gather(s),
                    stderr: "Command failed -:5\n".into(),
                }),
            }),
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let out = outcomes(apply(&c, &inputs, fresh(), &Scripted::yes()).await);
    let HostOutcome::Failed(e @ HostError::Step { .. }) = &out[&host("nas")] else {
        panic!("{:?}", out[&host("nas")])
    };
    assert!(e.to_string().contains("File exists"), "{e}");
    assert!(!e.to_string().contains("Command failed"), "{e}");
    assert_eq!(
        c.kinds("nas"),
        vec![Kind::Prepare, Kind::Changes, Kind::Finish]
    );
    assert_eq!(c.executions("nas"), 2);
    assert!(c.scripts("nas", Kind::Finish)[0].contains(steps::LOCK_DIR));
}

// ---------------------------------------------------------------- provisioning

fn shown_text(op: &Scripted) -> String {
    crate::render::text(
        &op.shown.lock().unwrap()[0],
        crate::render::Style { color: false },
    )
}

/// The hub a freshly rented VPS whose install succeeds, the others healthy.
fn fresh_vps_hub() -> FakeConnector {
    FakeConnector::with([
        (
            "vps",
            fake::fresh_vps(VPS, |k| fake::ok(fake::provisioned(k))),
        ),
        ("nas", fake::healthy(NAS)),
        ("laptop", fake::healthy(LAPTOP)),
    ])
}

#[tokio::test]
async fn a_fresh_vps_gets_its_packages_after_the_prompt_then_its_key_then_its_changes() {
    let (_d, inputs) = inputs("", &[]);
    let c = fresh_vps_hub();
    let op = Scripted::yes();
    let out = outcomes(apply(&c, &inputs, fresh(), &op).await);
    assert_eq!(
        c.kinds("vps"),
        vec![Kind::Prepare, Kind::Provision, Kind::Changes, Kind::Finish]
    );
    assert_eq!(c.connections("vps"), 1);
    for h in ["nas", "laptop"] {
        assert_eq!(
            c.kinds(h),
            vec![Kind::Prepare, Kind::Changes, Kind::Finish],
            "{h}"
        );
    }
    // The plan shown lists the packages, first, and the hub's key as known after apply.
    let text = shown_text(&op);
    assert!(
        text.contains("vps (hub, ")
            && text.contains("  + package wireguard-tools (apt)\n  + package wireguard-go (apt)\n  + package iptables (apt)\n"),
        "{text}"
    );
    // Installed exactly the plan's packages, non-interactively, waiting for the lock, with
    // the script's stdin kept from the package manager.
    let script = &c.scripts("vps", Kind::Provision)[0];
    assert!(
        script.contains("DEBIAN_FRONTEND=noninteractive; export DEBIAN_FRONTEND;")
            && script.contains("DPkg::Lock::Timeout=600")
            && script.contains(
                "--no-install-recommends wireguard-tools wireguard-go iptables\n} </dev/null 2>&1"
            ),
        "{script}"
    );
    let install_at = script.find("apt-get").unwrap();
    assert!(
        install_at < script.find("wg genkey").unwrap(),
        "install before the key"
    );
    // The key made there reaches the others' changes, and is pinned.
    for h in ["nas", "laptop"] {
        let changes = c.scripts(h, Kind::Changes).join("");
        assert!(
            changes.contains(&format!("PublicKey = {VPS}")),
            "{h}: {changes}"
        );
        assert!(!changes.contains("known after apply"), "{h}");
    }
    let pinned = op.pinned.lock().unwrap();
    assert_eq!(pinned.last().unwrap()[&host("vps")].as_str(), VPS);
    // The change script itself installs nothing (it was done before).
    assert!(!c.scripts("vps", Kind::Changes)[0].contains("apt-get"));
    assert!(matches!(
        out[&host("vps")],
        HostOutcome::NotConverged { .. }
    ));
}

#[tokio::test]
async fn no_at_the_prompt_installs_nothing() {
    let (_d, inputs) = inputs("", &[]);
    let c = fresh_vps_hub();
    let op = Scripted {
        answer: Some(false),
        ..Scripted::default()
    };
    let r = apply(&c, &inputs, fresh(), &op).await;
    assert!(matches!(r, Ok(ApplyResult::Cancelled)));
    assert_eq!(c.kinds("vps"), vec![Kind::Prepare, Kind::Unlock]);
}

#[tokio::test]
async fn a_failed_install_fails_that_host_alone_and_the_others_leave_it_out() {
    let (_d, inputs) = inputs("", &[]);
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        (
            "nas",
            fake::fresh_vps(NAS, |_| {
                Ok(crate::transport::RemoteOutput {
                    status: Some(1),
                    stdout: format!(
                        "{} 0\nReading package lists...\nE: Unable to locate package wireguard-go\n{} 0\n",
                        steps::MARK_INSTALL,
                        steps::MARK_INSTALL_FAILED
                    ),
                    stderr: String::new(),
                })
            }),
        ),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let op = Scripted::yes();
    let out = outcomes(apply(&c, &inputs, fresh(), &op).await);
    match &out[&host("nas")] {
        HostOutcome::Failed(e @ HostError::Install { output, .. }) => {
            assert_eq!(
                output,
                &[
                    "Reading package lists...",
                    "E: Unable to locate package wireguard-go"
                ]
            );
            let msg = e.to_string();
            assert!(
                msg.starts_with(
                    "installing wireguard-tools wireguard-go iptables with apt-get failed: "
                ) && msg.ends_with("E: Unable to locate package wireguard-go"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Its lock is released, nothing else ran there.
    assert_eq!(
        c.kinds("nas"),
        vec![Kind::Prepare, Kind::Provision, Kind::Unlock]
    );
    // The hub applies, with the laptop but without the NAS (whose key never came).
    assert_eq!(
        c.kinds("vps"),
        vec![Kind::Prepare, Kind::Changes, Kind::Finish]
    );
    let vps = c.scripts("vps", Kind::Changes).join("");
    assert!(vps.contains(&format!("PublicKey = {LAPTOP}")), "{vps}");
    assert!(
        !vps.contains("# nas\n") && !vps.contains("known after apply"),
        "{vps}"
    );
    assert!(!matches!(out[&host("vps")], HostOutcome::Failed(_)));
    assert!(!matches!(out[&host("laptop")], HostOutcome::Failed(_)));
}

#[tokio::test]
async fn a_host_without_a_package_manager_fails_alone_with_what_to_install() {
    let (_d, inputs) = inputs("", &[("vps", VPS), ("nas", NAS), ("laptop", LAPTOP)]);
    let bare = FakeHost {
        refuse_connects: vec![],
        respond: Arc::new(|kind, s, _| {
            let mut lacks = fake::FRESH_VPS_LACKS.to_vec();
            lacks.push("apt-get");
            match kind {
                Kind::Prepare => fake::ok(format!(
                    "{}\n{}\n{}",
                    steps::MARK_PUBKEY,
                    steps::NO_KEY,
                    fake::gather_lacking(s, &lacks)
                )),
                Kind::Unlock => fake::ok(String::new()),
                other => panic!("{other:?} on a host that could not be planned"),
            }
        }),
    };
    let c = FakeConnector::with([
        ("vps", fake::healthy(VPS)),
        ("nas", bare),
        ("laptop", fake::healthy(LAPTOP)),
    ]);
    let op = Scripted::yes();
    let out = outcomes(apply(&c, &inputs, fresh(), &op).await);
    match &out[&host("nas")] {
        HostOutcome::Failed(e @ HostError::NotPlanned { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("lacks wg and wg-quick")
                    && msg.contains("install wireguard-tools wireguard-go iptables by hand"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.kinds("nas"), vec![Kind::Prepare, Kind::Unlock]);
    assert_eq!(
        c.kinds("vps"),
        vec![Kind::Prepare, Kind::Changes, Kind::Finish]
    );
    // The plan shown says so for that host alone.
    let text = shown_text(&op);
    assert!(
        text.contains("nas (gateway, ") && text.contains("error: this host lacks"),
        "{text}"
    );
}

#[tokio::test]
async fn a_saved_plan_installs_its_own_packages() {
    let (_d, inputs) = inputs("", &[]);
    let c = fresh_vps_hub();
    let plan = saved_plan(&c, &inputs).await;
    let text = crate::render::json(&plan);
    assert!(text.contains("\"op\": \"install_packages\""));
    let op = Scripted::yes();
    let source = PlanSource::Saved {
        plan: Box::new(plan),
        path: "plan.json".into(),
    };
    outcomes(apply(&c, &inputs, source, &op).await);
    assert_eq!(
        c.kinds("vps"),
        vec![
            Kind::Gather,
            Kind::Prepare,
            Kind::Provision,
            Kind::Changes,
            Kind::Finish
        ]
    );
    let script = &c.scripts("vps", Kind::Provision)[0];
    assert!(
        script.contains("install --no-install-recommends wireguard-tools wireguard-go iptables")
    );
    let nas = c.scripts("nas", Kind::Changes).join("");
    assert!(nas.contains(&format!("PublicKey = {VPS}")), "{nas}");
}
