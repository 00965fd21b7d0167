//! The guard's timer and a change script that is still running cannot race: a guarded change
//! whose step hangs past the guard's time (a `wg set` waiting on something, say) is stopped by
//! the rollback before the rollback runs, so the host ends exactly in its previous state —
//! never a mix of the two — and its lock is released only after both are done.

mod support;

use std::time::{Duration, Instant};

use support::{TestLab, assert_success, ok, own_inventory, text};

#[test]
fn a_change_step_that_hangs_past_the_guard_is_stopped_before_the_rollback() {
    let (dir, inv) = own_inventory("guard-race");
    let yaml = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(
        &inv,
        yaml.replace("    keepalive: 4\n", "    keepalive: 4\n    guard: true\n"),
    )
    .unwrap();
    let lab = TestLab::up("guard_race", &inv);
    assert_success(
        &lab.meshctl(&["apply", "--yes", "--guard-timeout", "8"]),
        "the first apply",
    );

    // On the NAS, `wg set ... persistent-keepalive 6` hangs for 25 s, then does its work.
    std::fs::copy("/usr/bin/wg", dir.path().join("real-wg")).unwrap();
    let d = dir.path().display();
    let wrapper = format!(
        "#!/bin/sh\ncase \"$*\" in *'persistent-keepalive 6'*) sleep 25 ;; esac\nexec {d}/real-wg \"$@\"\n"
    );
    let path = dir.path().join("wg");
    std::fs::write(&path, wrapper).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok(
        &lab,
        "nas",
        &format!("mount --bind {} /usr/bin/wg", path.display()),
    );

    let yaml = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(
        &inv,
        yaml.replace("    keepalive: 4\n", "    keepalive: 6\n"),
    )
    .unwrap();
    let started = Instant::now();
    let out = lab.meshctl(&["apply", "--yes", "--limit", "nas", "--guard-timeout", "8"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("NOT confirmed over a new connection"), "{t}");
    assert!(t.contains("restored its previous state by itself"), "{t}");

    // Past the moment the hung step would have finished: nothing of the change came back.
    let until = Duration::from_secs(32);
    if let Some(rest) = until.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let keepalive = ok(&lab, "nas", "/usr/bin/wg show wg0 persistent-keepalive");
    assert!(
        keepalive.trim_end().ends_with("\t4"),
        "the NAS keeps its old keepalive, not the change that was still running: {keepalive:?}"
    );
    assert!(
        !lab.exec("nas", "test -e /run/meshctl/lock")
            .status
            .success(),
        "the lock is released"
    );
    let conf = ok(&lab, "nas", "cat /etc/wireguard/wg0.conf");
    assert!(
        conf.contains("PersistentKeepalive = 4"),
        "the old config is back:\n{conf}"
    );

    // The host is exactly as before: the old inventory plans no change.
    ok(&lab, "nas", "umount /usr/bin/wg");
    let yaml = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(
        &inv,
        yaml.replace("    keepalive: 6\n", "    keepalive: 4\n"),
    )
    .unwrap();
    let plan = lab.meshctl(&["plan", "--detailed-exitcode", "--limit", "nas"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
}
