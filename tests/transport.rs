//! The SSH transport against a real sshd, in a network + mount namespace of its own.
//!
//! Every test builds its own throwaway host (unique namespace `tpt-<pid>-<n>`, its own temp
//! dir, host keys, client key, known_hosts and ssh_config, recipe from LAB.md) and tears it down
//! on drop: the sshd it started is killed by pid, then the namespace is deleted. Tests may run
//! in parallel. Root is required (network namespaces); the tests fail, never skip, without it.
//!
//! The non-root login uses a user that exists only inside the host's mount namespace (a
//! bind-mounted copy of /etc/passwd and /etc/shadow), so the machine's users are not touched.
//! This machine has no sudo; the sudo cases use the real absence of sudo and two stand-in
//! `sudo` scripts bind-mounted over /usr/local/bin in the namespace (one that refuses like
//! `sudo -n` does without a NOPASSWD rule, one that runs the command).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshctl::inventory::model::SshTarget;
use meshctl::transport::{Session, SshOptions, TransportError};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

const TEST_USER: &str = "tptuser";

/// What stands in for sudo on the test host.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sudo {
    /// Whatever the machine has (here: no sudo at all).
    Machine,
    /// A `sudo` that fails like `sudo -n` without a NOPASSWD rule.
    Refuses,
    /// A `sudo` that runs its command (as the login user: it cannot really become root).
    Grants,
}

struct Lab {
    dir: tempfile::TempDir,
    ns: String,
    sshd: Option<Child>,
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) {
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "meshctl-test", "-f"])
        .arg(path));
}

/// `TYPE BASE64` of a public key file (no comment).
fn pubkey(path: &Path) -> String {
    let s = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

impl Lab {
    fn new(sudo: Sudo) -> Lab {
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout == b"0\n"),
            "tests/transport.rs needs root (it makes network namespaces and runs sshd)"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = format!("tpt-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("meshctl-tpt-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

        keygen(&d.join("id_ed25519"));
        keygen(&d.join("hostkey"));
        keygen(&d.join("otherkey"));
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        // The host's real key in known_hosts by default; tests change it.
        std::fs::write(
            d.join("known_hosts"),
            format!("labhost {}\n", pubkey(&d.join("hostkey"))),
        )
        .unwrap();

        // A user that exists only in the namespace.
        let uid = (61000..64000)
            .find(|u| !uid_exists(*u))
            .expect("a free uid");
        std::fs::create_dir(d.join("home")).unwrap();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap()
            + &format!(
                "{TEST_USER}:x:{uid}:{uid}:meshctl test:{}:/bin/sh\n",
                d.join("home").display()
            );
        let shadow = std::fs::read_to_string("/etc/shadow").unwrap()
            + &format!("{TEST_USER}:*:19000:0:99999:7:::\n");
        let group =
            std::fs::read_to_string("/etc/group").unwrap() + &format!("{TEST_USER}:x:{uid}:\n");
        std::fs::write(d.join("passwd"), passwd).unwrap();
        std::fs::write(d.join("shadow"), shadow).unwrap();
        std::fs::write(d.join("group"), group).unwrap();

        let fake_sudo = match sudo {
            Sudo::Machine => None,
            Sudo::Refuses => Some("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"),
            Sudo::Grants => {
                Some("#!/bin/sh\n[ \"$1\" = -n ] && shift\n[ \"$1\" = -- ] && shift\nexec \"$@\"\n")
            }
        };
        let mut mounts = format!(
            "mount -t tmpfs tmpfs /root\n\
             mount --bind {d}/passwd /etc/passwd\n\
             mount --bind {d}/shadow /etc/shadow\n\
             mount --bind {d}/group /etc/group\n",
            d = d.display()
        );
        if let Some(script) = fake_sudo {
            std::fs::create_dir(d.join("bin")).unwrap();
            std::fs::write(d.join("bin/sudo"), script).unwrap();
            std::fs::set_permissions(
                d.join("bin/sudo"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            mounts += &format!("mount --bind {}/bin /usr/local/bin\n", d.display());
        }

        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\n\
                 Port 22\n\
                 HostKey {d}/hostkey\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PidFile {d}/sshd.pid\n\
                 LogLevel VERBOSE\n",
                d = d.display()
            ),
        )
        .unwrap();

        let common = format!(
            "  IdentityFile {d}/id_ed25519\n\
             \x20 IdentitiesOnly yes\n\
             \x20 IdentityAgent none\n\
             \x20 UserKnownHostsFile {d}/known_hosts\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 CheckHostIP no\n",
            d = d.display()
        );
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host labhost\n  User root\n  ProxyCommand ip netns exec {ns} nc 127.0.0.1 22\n{common}\n\
                 Host blackhole\n  User root\n  ProxyCommand ip netns exec {ns} nc 203.0.113.1 22\n{common}\n\
                 Host closedport\n  User root\n  ProxyCommand ip netns exec {ns} nc 127.0.0.1 23\n{common}\n"
            ),
        )
        .unwrap();

        let mut lab = Lab {
            dir,
            ns,
            sshd: None,
        };
        sh(Command::new("ip").args(["netns", "add", &lab.ns]));
        sh(Command::new("ip").args(["-n", &lab.ns, "link", "set", "lo", "up"]));
        // 203.0.113.0/24 goes out of one end of a veth pair to a link-layer address nobody has
        // (a permanent neighbour entry, so no ARP failure either): packets vanish, and a
        // connection there hangs like one to a dead host. It never leaves the namespace.
        let ip = |args: &str| {
            sh(Command::new("ip")
                .args(["-n", &lab.ns])
                .args(args.split(' ')))
        };
        ip("link add bh0 type veth peer name bh1");
        ip("link set bh0 up");
        ip("link set bh1 up");
        ip("route add 203.0.113.0/24 dev bh0");
        ip("neigh add 203.0.113.1 lladdr 02:00:00:00:00:01 dev bh0 nud permanent");
        std::fs::create_dir_all("/run/sshd").unwrap(); // sshd's privilege separation directory

        let log = std::fs::File::create(lab.dir.path().join("sshd.log")).unwrap();
        // `ip netns exec`, `unshare` and `sh -c exec` all exec: the child's pid is sshd's.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(format!(
                "set -e\n{mounts}exec /usr/sbin/sshd -D -e -f {}/sshd_config",
                lab.dir.path().display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        lab.sshd = Some(child);
        lab.wait_for_sshd();
        lab
    }

    fn wait_for_sshd(&mut self) {
        let start = Instant::now();
        loop {
            if std::fs::read_to_string(self.dir.path().join("sshd.log"))
                .is_ok_and(|l| l.contains("Server listening"))
            {
                return;
            }
            if let Some(st) = self.sshd.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited ({st}): {}", self.sshd_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start: {}",
                self.sshd_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn opts(&self) -> SshOptions {
        SshOptions {
            config_file: Some(self.path("ssh_config")),
            connect_timeout: Duration::from_secs(3),
            ..SshOptions::default()
        }
    }

    fn target(&self, user: Option<&str>, host: &str) -> SshTarget {
        SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port: None,
        }
    }

    /// Waits until no control master of this lab runs (they exit on their own after their idle
    /// time), failing after `limit`; returns how long that took.
    async fn masters_gone_within(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        while !self.local_ssh_processes().is_empty() {
            assert!(
                start.elapsed() < limit,
                "master still running: {:?}",
                self.local_ssh_processes()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        start.elapsed()
    }

    /// Processes on the controller whose command line mentions this lab's directory (control
    /// masters and mux clients use our ssh_config path).
    fn local_ssh_processes(&self) -> Vec<String> {
        let needle = self.path("ssh_config").display().to_string();
        let mut found = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&needle) && !cmd.contains("sshd") {
                    found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
                }
            }
        }
        found
    }
}

fn uid_exists(uid: u32) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .any(|l| l.split(':').nth(2) == Some(&uid.to_string()))
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Session processes sshd forked (and proxies) may outlive it for a moment: end exactly
        // the ones in this lab's namespace, by pid.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn runs_scripts_on_one_connection_with_one_execution_each() {
    let lab = Lab::new(Sudo::Machine);
    let s = Session::connect(&lab.target(None, "labhost"), &lab.opts())
        .await
        .expect("connect");
    assert_eq!(s.host(), "labhost");

    let out = s.run_script("id -u\necho oops >&2\n").await.unwrap();
    assert_eq!(
        (out.status, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "0\n", "oops\n")
    );

    // The script arrives intact: quotes, $, backslashes, newlines, unicode, a here-document.
    let script = r#"a='single '"'"'quoted'"'"' $HOME `x`'
b="double \"quoted\" \$HOME \\ back"
printf '%s\n' "$a" "$b" 'ünïcödé ✓'
cat <<'EOF'
$(never run) `nor this` ${x:-y} \n
  indented	tab
EOF
exit 3
"#;
    let out = s.run_script(script).await.unwrap();
    assert_eq!(out.status, Some(3));
    assert_eq!(
        out.stdout,
        "single 'quoted' $HOME `x`\ndouble \"quoted\" $HOME \\ back\nünïcödé ✓\n$(never run) `nor this` ${x:-y} \\n\n  indented\ttab\n"
    );
    assert_eq!(out.stderr, "");

    // A command that reads stdin gets EOF, not the rest of the script.
    let out = s.run_script("cat\necho still-here\n").await.unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (Some(0), "still-here\n"));

    // Exit codes the openssh crate treats specially.
    let out = s.run_script("echo x; exit 127").await.unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (Some(127), "x\n"));
    let out = s.run_script("kill -9 $$").await.unwrap();
    assert_eq!(out.status, None);

    // Large script and large output at once (no pipe deadlock): 1 MiB each way.
    let big = "0123456789abcdef".repeat(65536);
    let out = s
        .run_script(&format!("cat <<'EOF'\n{big}\nEOF\n"))
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), big.len() + 1);
    assert_eq!(out.stdout.trim_end(), big);

    s.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = lab.sshd_log();
    assert_eq!(
        count(&log, "Accepted publickey for"),
        1,
        "one connection: {log}"
    );
    assert_eq!(
        count(&log, "Starting session: command"),
        6,
        "one exec per run_script: {log}"
    );
    assert!(
        lab.local_ssh_processes().is_empty(),
        "close left: {:?}",
        lab.local_ssh_processes()
    );
}

#[tokio::test]
async fn unknown_host_key_is_refused_unless_accepting_new_keys() {
    let lab = Lab::new(Sudo::Machine);
    std::fs::write(lab.path("known_hosts"), "").unwrap();
    let target = lab.target(None, "labhost");

    let err = Session::connect(&target, &lab.opts()).await.unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, TransportError::HostKeyUnknown { ref host } if host == "labhost"),
        "{err:?}"
    );
    assert!(err.to_string().contains("--accept-new-host-keys"), "{err}");
    assert_eq!(
        std::fs::read_to_string(lab.path("known_hosts")).unwrap(),
        "",
        "strict mode wrote known_hosts"
    );

    let opts = SshOptions {
        accept_new_host_keys: true,
        ..lab.opts()
    };
    let s = Session::connect(&target, &opts).await.expect("accept-new");
    assert_eq!(s.run_script("echo ok").await.unwrap().stdout, "ok\n");
    s.close().await.unwrap();
    let known = std::fs::read_to_string(lab.path("known_hosts")).unwrap();
    assert!(
        known.contains(&pubkey(&lab.path("hostkey"))),
        "key recorded: {known}"
    );

    // Now known: strict mode connects.
    let s = Session::connect(&target, &lab.opts())
        .await
        .expect("strict after recording");
    s.close().await.unwrap();
}

#[tokio::test]
async fn changed_host_key_is_refused_even_when_accepting_new_keys() {
    let lab = Lab::new(Sudo::Machine);
    let wrong = format!("labhost {}\n", pubkey(&lab.path("otherkey")));
    std::fs::write(lab.path("known_hosts"), &wrong).unwrap();
    let target = lab.target(None, "labhost");

    for accept in [false, true] {
        let opts = SshOptions {
            accept_new_host_keys: accept,
            ..lab.opts()
        };
        let err = Session::connect(&target, &opts).await.unwrap_err();
        eprintln!("{err}");
        assert!(
            matches!(err, TransportError::HostKeyChanged { ref host } if host == "labhost"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("never accepts a changed key"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(lab.path("known_hosts")).unwrap(),
        wrong,
        "known_hosts untouched"
    );
    assert_eq!(
        count(&lab.sshd_log(), "Accepted publickey"),
        0,
        "never logged in"
    );
}

#[tokio::test]
async fn unreachable_host_is_a_quick_connect_error() {
    let lab = Lab::new(Sudo::Machine);
    let opts = SshOptions {
        connect_timeout: Duration::from_secs(2),
        ..lab.opts()
    };

    // Packets vanish: ssh gives up after ConnectTimeout (banner exchange through the proxy).
    let start = Instant::now();
    let err = Session::connect(&lab.target(None, "blackhole"), &opts)
        .await
        .unwrap_err();
    eprintln!("{err}");
    let took = start.elapsed();
    assert!(
        matches!(err, TransportError::Connect { ref host, .. } if host == "blackhole"),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("cannot connect to blackhole: "),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");

    // Nothing listens: fails at once.
    let start = Instant::now();
    let err = Session::connect(&lab.target(None, "closedport"), &opts)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, TransportError::Connect { ref host, .. } if host == "closedport"),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        lab.local_ssh_processes().is_empty(),
        "left behind: {:?}",
        lab.local_ssh_processes()
    );
}

#[tokio::test]
async fn refused_login_is_an_auth_error() {
    let lab = Lab::new(Sudo::Machine);
    std::fs::write(lab.path("authorized_keys"), "").unwrap();
    let err = Session::connect(&lab.target(None, "labhost"), &lab.opts())
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, TransportError::Auth { ref host, .. } if host == "labhost"),
        "{err:?}"
    );
}

#[tokio::test]
async fn non_root_login_without_sudo_is_a_sudo_error() {
    for sudo in [Sudo::Machine, Sudo::Refuses] {
        let lab = Lab::new(sudo);
        let s = Session::connect(&lab.target(Some(TEST_USER), "labhost"), &lab.opts())
            .await
            .expect("connect as user");
        let err = s
            .run_script("echo must-not-run; touch /tmp/meshctl-tpt-must-not-exist")
            .await
            .unwrap_err();
        eprintln!("{err}");
        match &err {
            TransportError::Sudo { host, user, reason } => {
                assert_eq!((host.as_str(), user.as_str()), ("labhost", TEST_USER));
                assert!(reason.contains("sudo"), "{reason}");
                if sudo == Sudo::Refuses {
                    assert_eq!(reason, "sudo: a password is required");
                }
            }
            e => panic!("{e:?}"),
        }
        assert!(
            err.to_string().starts_with(&format!(
                "user {TEST_USER} on labhost cannot run sudo without a password (sudo -n): grant it NOPASSWD for meshctl, or log in as root"
            )),
            "{err}"
        );
        assert!(!Path::new("/tmp/meshctl-tpt-must-not-exist").exists());
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn non_root_login_runs_the_script_through_sudo() {
    let lab = Lab::new(Sudo::Grants);
    let s = Session::connect(&lab.target(Some(TEST_USER), "labhost"), &lab.opts())
        .await
        .expect("connect as user");
    let out = s
        .run_script("id -un\necho 'q\"uo$te' >&2\ncat\nexit 5\n")
        .await
        .unwrap();
    // The stand-in sudo cannot become root: what is checked is that the script went through
    // the sudo hop on stdin, and that the transport's markers do not reach the caller.
    assert_eq!(out.status, Some(5));
    assert_eq!(out.stdout, format!("{TEST_USER}\n"));
    assert_eq!(out.stderr, "q\"uo$te\n");
    s.close().await.unwrap();
    let log = lab.sshd_log();
    assert_eq!(count(&log, "Starting session: command"), 1, "{log}");
}

#[tokio::test]
async fn a_killed_meshctl_leaves_no_master_behind_for_long() {
    let lab = Lab::new(Sudo::Machine);
    let opts = SshOptions {
        master_idle_timeout: Duration::from_secs(2),
        ..lab.opts()
    };
    let s = Session::connect(&lab.target(None, "labhost"), &opts)
        .await
        .unwrap();
    s.run_script("true").await.unwrap();
    let masters = lab.local_ssh_processes();
    assert_eq!(masters.len(), 1, "one control master: {masters:?}");
    // The master's private directory (`-S DIR/master`), removed by hand below since the
    // forgotten session cannot.
    let control_dir = masters[0]
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/master"))
        .map(PathBuf::from)
        .expect("-S DIR/master");
    // What a SIGKILL does: no Drop, no `ssh -O exit`.
    std::mem::forget(s);
    let waited = lab.masters_gone_within(Duration::from_secs(10)).await;
    assert!(
        waited >= Duration::from_secs(1),
        "master exited before its idle timeout"
    );
    assert!(
        !control_dir.join("master").exists(),
        "the master removed its socket"
    );
    std::fs::remove_dir_all(&control_dir).unwrap();
}

#[tokio::test]
async fn a_session_whose_master_expired_is_an_exec_error() {
    let lab = Lab::new(Sudo::Machine);
    let opts = SshOptions {
        master_idle_timeout: Duration::from_secs(1),
        ..lab.opts()
    };
    let s = Session::connect(&lab.target(None, "labhost"), &opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = s.run_script("echo late").await.unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, TransportError::Exec { ref host, ref reason } if host == "labhost" && reason.contains("connection was lost")),
        "{err:?}"
    );
    let _ = s.close().await;
}

#[tokio::test]
async fn a_kept_connection_is_reused_once_by_the_next_run_and_expires_on_its_own() {
    let lab = Lab::new(Sudo::Machine);
    let target = lab.target(None, "labhost");
    // `plan --keep-connections 2`: the connection stays open when the run closes it.
    let keep = SshOptions {
        keep: true,
        reuse_kept: true,
        master_idle_timeout: Duration::from_secs(2),
        ..lab.opts()
    };
    let s = Session::connect(&target, &keep).await.unwrap();
    s.run_script("true").await.unwrap();
    s.close().await.unwrap();
    assert_eq!(lab.local_ssh_processes().len(), 1, "the kept master stays");

    // `apply --yes`: over the kept connection (no new login), held open while the run has it
    // (apply waits for every host's first step: longer than the kept idle time here), closed
    // at its end.
    let reuse = SshOptions {
        reuse_kept: true,
        ..lab.opts()
    };
    let s = Session::connect(&target, &reuse).await.unwrap();
    let out = s.run_script("echo again").await.unwrap();
    assert_eq!(out.stdout, "again\n");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let out = s.run_script("echo still").await.unwrap();
    assert_eq!(out.stdout, "still\n");
    s.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = lab.sshd_log();
    assert_eq!(count(&log, "Accepted publickey for"), 1, "reused: {log}");
    assert_eq!(count(&log, "Starting session: command"), 3, "{log}");
    assert!(
        lab.local_ssh_processes().is_empty(),
        "the run that took it closed it: {:?}",
        lab.local_ssh_processes()
    );

    // Taken once: the next run logs in again.
    let s = Session::connect(&target, &reuse).await.unwrap();
    s.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&lab.sshd_log(), "Accepted publickey for"), 2);

    // Kept and never taken: its master exits on its own after its idle time, and the run
    // after that connects anew.
    let s = Session::connect(&target, &keep).await.unwrap();
    s.close().await.unwrap();
    let waited = lab.masters_gone_within(Duration::from_secs(15)).await;
    assert!(
        waited >= Duration::from_secs(1),
        "exited before its idle time"
    );
    let s = Session::connect(&target, &reuse).await.unwrap();
    assert_eq!(s.run_script("echo new").await.unwrap().stdout, "new\n");
    s.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&lab.sshd_log(), "Accepted publickey for"), 4);
    assert!(lab.local_ssh_processes().is_empty());
}
