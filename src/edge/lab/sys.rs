//! The machine side of the lab: running programs, checking prerequisites, working in parallel.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A program the lab runs and the Debian package that provides it.
pub struct Needed {
    /// The command name looked up on `PATH`, e.g. `ip`.
    pub program: &'static str,
    /// The Debian package to install when it is missing, named in the error.
    pub package: &'static str,
}

/// What `lab up` needs on the machine.
pub const NEEDED_FOR_UP: &[Needed] = &[
    Needed {
        program: "ip",
        package: "iproute2",
    },
    Needed {
        program: "sshd",
        package: "openssh-server",
    },
    Needed {
        program: "ssh",
        package: "openssh-client",
    },
    Needed {
        program: "ssh-keygen",
        package: "openssh-client",
    },
    Needed {
        program: "nc",
        package: "netcat-openbsd",
    },
    Needed {
        program: "iptables",
        package: "iptables",
    },
    Needed {
        program: "sysctl",
        package: "procps",
    },
    Needed {
        program: "unshare",
        package: "util-linux",
    },
    Needed {
        program: "nsenter",
        package: "util-linux",
    },
    Needed {
        program: "wireguard-go",
        package: "wireguard-go",
    },
    Needed {
        program: "wg",
        package: "wireguard-tools",
    },
    Needed {
        program: "ping",
        package: "iputils-ping",
    },
];

/// Finds `program` on PATH or in the sbin directories (root's tools live there).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Fails naming every missing program, its Debian package and the command that installs them.
pub fn require_programs(needed: &[Needed]) -> anyhow::Result<()> {
    let missing: Vec<&Needed> = needed
        .iter()
        .filter(|n| which(n.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
    packages.dedup();
    bail!(
        "meshctl lab needs {} (Debian: {}); install with: apt-get install -y {}",
        missing
            .iter()
            .map(|n| format!("`{}`", n.program))
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(", "),
        packages.join(" ")
    )
}

/// Fails unless the process runs as root (read from /proc: no libc needed).
pub fn require_root() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("meshctl lab runs on Linux only (cannot read /proc/self/status)")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        bail!(
            "meshctl lab must run as root (it creates network namespaces); run it with sudo or as root"
        );
    }
    Ok(())
}

/// Fails unless /dev/net/tun exists (wireguard-go needs it).
pub fn require_tun() -> anyhow::Result<()> {
    if !Path::new("/dev/net/tun").exists() {
        bail!(
            "/dev/net/tun is missing: wireguard-go needs it (load the tun module with `modprobe tun`, \
             or give the container the device, e.g. `--device /dev/net/tun`)"
        );
    }
    Ok(())
}

fn describe(argv: &[&str]) -> String {
    let s = argv.join(" ");
    if s.len() > 200 {
        format!("{}…", &s[..200])
    } else {
        s
    }
}

/// Runs `argv`, returns its stdout; on failure the error names the command and its stderr.
pub fn run(argv: &[&str]) -> anyhow::Result<String> {
    let out = output(argv, None)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(argv),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `argv` with `stdin` fed in (or /dev/null), capturing its output.
pub fn output(argv: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{}`", argv[0]))?;
    if let Some(text) = stdin {
        use std::io::Write as _;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// Runs `argv` and waits at most `timeout`; `None` when it had to be killed.
pub fn status_with_timeout(argv: &[&str], timeout: Duration) -> anyhow::Result<Option<bool>> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run `{}`", argv[0]))?;
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st.success()));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on every item with up to `workers` threads; results in the items' order.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results.lock().expect("no worker panicked")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

/// The namespaces that exist on the machine (`ip netns list`).
pub fn list_namespaces() -> anyhow::Result<Vec<String>> {
    let out = run(&["ip", "netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The pids of processes in namespace `ns` (`ip netns pids`).
pub fn namespace_pids(ns: &str) -> Vec<u32> {
    run(&["ip", "netns", "pids", ns])
        .map(|o| {
            o.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether process `pid` still exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
