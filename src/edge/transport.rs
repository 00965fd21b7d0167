//! The SSH edge: every byte meshctl exchanges with a managed host goes through here.
//!
//! It drives the system `ssh` through the `openssh` crate, so `~/.ssh/config`, the agent,
//! ProxyJump/ProxyCommand and known_hosts all work as they do for the user's own `ssh`.
//!
//! - [`Session::connect`] opens exactly **one** SSH connection (an `ssh -M` control master in a
//!   private directory); [`Session::run_script`] is exactly **one** remote execution (one `exec`
//!   channel on that connection). The benchmark counts both in sshd's logs.
//! - Host keys are checked strictly unless the caller asks to accept a new host's key; a
//!   *changed* key is refused either way, and unknown key, changed key, refused login and
//!   unreachable host are distinct errors, each naming the host and saying what to do.
//! - The control master exits on its own after [`SshOptions::master_idle_timeout`] without a
//!   client, so a killed meshctl does not leave a connection behind for long.
//! - Scripts travel on stdin, never on the command line, and non-root logins run them through
//!   `sudo -n` in the same execution (see [`Session::run_script`]).
//! - Nothing here logs. What comes back is exactly the script's exit status, stdout and stderr,
//!   with this module's own markers removed; errors carry ssh's or sudo's diagnostics only.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, SessionBuilder, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::inventory::model::SshTarget;
use crate::scripts::steps::MARK_PREFIX;
use crate::shell::quote;

/// How long ssh waits between keep-alive probes on a quiet connection; after three unanswered
/// probes (ssh's `ServerAliveCountMax` default) it gives up, so a dead host or a cut tunnel is
/// noticed in about 15 s instead of hanging on TCP timeouts.
const SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Longest diagnostic text (from ssh or sudo) kept in an error message.
const MAX_REASON_LEN: usize = 600;

/// First stderr line of a non-root execution: who logged in (for the sudo error message).
const LOGIN_USER_MARKER: &str = "meshctl-transport: login user ";
/// Why a remote execution failed when its connection is gone.
const LOST: &str = "the SSH connection was lost (the host went down, the network was cut, or \
                    the connection sat idle longer than the master's idle timeout)";

/// Printed by the shell that `sudo -n` started: sudo worked, the script's own output follows.
const SUDO_OK_MARKER: &str = "meshctl-transport: sudo ok";

/// How meshctl talks to ssh; the same for every host of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    /// An ssh_config to use instead of `~/.ssh/config` (`--ssh-config` / `MESHCTL_SSH_CONFIG`),
    /// e.g. the lab's.
    pub config_file: Option<PathBuf>,
    /// Accept (and record in known_hosts) the key of a host seen for the first time
    /// (`StrictHostKeyChecking=accept-new`). A host whose key *changed* is refused regardless.
    /// Off by default: an unknown key is an error (`StrictHostKeyChecking=yes`).
    pub accept_new_host_keys: bool,
    /// TCP connect and SSH banner timeout (`ConnectTimeout`, whole seconds, at least 1).
    pub connect_timeout: Duration,
    /// How long the control master stays up without any client (`ControlPersist`, whole
    /// seconds, at least 1). Bounds what a killed meshctl leaves behind; a session idle for
    /// longer than this between two [`Session::run_script`] calls has to be reconnected.
    pub master_idle_timeout: Duration,
    /// Leave each connection open when the run ends, recorded for the next run to reuse
    /// (`plan --keep-connections`; see [`crate::edge::kept`]); its master then exits after
    /// [`SshOptions::master_idle_timeout`] without a client. `false`: closed at the end.
    pub keep: bool,
    /// Reuse a connection a `plan --keep-connections` left open to the same destination
    /// through the same ssh_config, instead of opening one (`apply --yes`).
    pub reuse_kept: bool,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            config_file: None,
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            master_idle_timeout: Duration::from_secs(60),
            keep: false,
            reuse_kept: false,
        }
    }
}

/// What one remote execution produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    /// The script's exit status. `None` when the remote shell did not exit normally: killed by a
    /// signal, or it exited with 255, which ssh uses for its own errors so the two cannot be told
    /// apart (the connection itself was checked and is alive in that case).
    pub status: Option<i32>,
    /// The script's stdout (invalid UTF-8 replaced by U+FFFD).
    pub stdout: String,
    /// The script's stderr (invalid UTF-8 replaced by U+FFFD), without this module's markers.
    pub stderr: String,
}

impl RemoteOutput {
    /// The script exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// A marker line of a script's stdout (`@@meshctl …`) and when the controller received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// When it arrived.
    pub at: std::time::Instant,
    /// The line, without its newline.
    pub line: String,
}

/// Why talking to a host failed. Every message names the host (the ssh destination as written
/// in the inventory) and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host could not be reached, or ssh failed for a reason other than the ones below.
    #[error(
        "cannot connect to {host}: {reason} (check that the host is up and reachable and its ssh_config entry)"
    )]
    Connect {
        /// The ssh destination.
        host: String,
        /// ssh's own message.
        reason: String,
    },
    /// Strict checking is on and known_hosts has no key for the host.
    #[error(
        "the host key of {host} is not known: verify its fingerprint and add it to known_hosts (e.g. by running `ssh {host}` once), or run again with --accept-new-host-keys to trust it on first contact"
    )]
    HostKeyUnknown {
        /// The ssh destination.
        host: String,
    },
    /// The host presented a key different from the one in known_hosts.
    #[error(
        "the host key of {host} changed: if the host was reinstalled, remove its line from known_hosts (ssh-keygen -R {host}) and check the new key; otherwise this may be an attack. meshctl never accepts a changed key"
    )]
    HostKeyChanged {
        /// The ssh destination.
        host: String,
    },
    /// The host refused every key meshctl (ssh) offered.
    #[error(
        "{host} refused the login: {reason} (check the user, the key or agent, and the host's authorized_keys)"
    )]
    Auth {
        /// The ssh destination.
        host: String,
        /// ssh's own message.
        reason: String,
    },
    /// A non-root login could not become root with `sudo -n`.
    #[error(
        "user {user} on {host} cannot run sudo without a password (sudo -n): grant it NOPASSWD for meshctl, or log in as root ({reason})"
    )]
    Sudo {
        /// The ssh destination.
        host: String,
        /// The login user that tried sudo.
        user: String,
        /// sudo's own message.
        reason: String,
    },
    /// The remote execution could not be run or its connection was lost.
    #[error("running a script on {host} failed: {reason}")]
    Exec {
        /// The ssh destination.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// Shutting the connection down failed (the work itself was done).
    #[error("closing the SSH connection to {host} failed: {reason}")]
    Close {
        /// The ssh destination.
        host: String,
        /// What went wrong.
        reason: String,
    },
}

impl TransportError {
    /// The ssh destination the error is about.
    pub fn host(&self) -> &str {
        match self {
            TransportError::Connect { host, .. }
            | TransportError::HostKeyUnknown { host }
            | TransportError::HostKeyChanged { host }
            | TransportError::Auth { host, .. }
            | TransportError::Sudo { host, .. }
            | TransportError::Exec { host, .. }
            | TransportError::Close { host, .. } => host,
        }
    }
}

/// One SSH connection to one host.
#[derive(Debug)]
pub struct Session {
    inner: openssh::Session,
    host: String,
    /// Where the connection is recorded when closed, to be kept ([`SshOptions::keep`]).
    keep_at: Option<PathBuf>,
    /// The private directory of a connection reused from an earlier run, removed when it is
    /// closed (the crate removes only a directory it made in this process).
    reused_dir: Option<PathBuf>,
    /// A reused connection's hold: a control client that stays connected while this run has
    /// the connection, so its master does not exit between two executions after the idle
    /// time the keeping run gave it (as short as 1 s; apply waits for every host's first step
    /// before any change script). ssh counts an open control client as activity.
    hold: Option<std::os::unix::net::UnixStream>,
}

impl Session {
    /// Opens one SSH connection to `target` (a control master that later executions share).
    ///
    /// The destination, user and port are passed to ssh as given; everything else (address,
    /// identity, proxies, known_hosts file) comes from ssh_config. meshctl's own settings win
    /// over ssh_config: `BatchMode=yes` (never a password prompt), `StrictHostKeyChecking`,
    /// `ConnectTimeout`, `ServerAliveInterval`, `ControlPersist`.
    pub async fn connect(target: &SshTarget, opts: &SshOptions) -> Result<Session, TransportError> {
        let host = target.host.clone();
        check_destination(target)?;
        let control = control_directory();
        let record = (opts.keep || opts.reuse_kept)
            .then(|| crate::edge::kept::record_path(&control, target, opts.config_file.as_deref()))
            .flatten();
        let keep_at = record.clone().filter(|_| opts.keep);
        if let Some(r) = record.as_deref().filter(|_| opts.reuse_kept)
            && let Some((socket, log)) = crate::edge::kept::take(r, &control)
        {
            let dir = socket.parent().map(std::path::Path::to_path_buf);
            let inner = openssh::Session::resume_mux(
                socket.into_boxed_path(),
                log.map(PathBuf::into_boxed_path),
            );
            if inner.check().await.is_ok()
                && let Ok(hold) = std::os::unix::net::UnixStream::connect(inner.control_socket())
            {
                return Ok(Session {
                    inner,
                    host,
                    keep_at,
                    reused_dir: dir,
                    hold: Some(hold),
                });
            }
            // Its master is gone (idle past its time): a new connection, as without one.
            crate::edge::kept::remove_connection_dir(dir.as_deref(), &control);
        }

        let mut b = SessionBuilder::default();
        // The crate's default is accept-new: meshctl's is strict.
        b.known_hosts_check(if opts.accept_new_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(opts.connect_timeout.max(Duration::from_secs(1)))
        .server_alive_interval(SERVER_ALIVE_INTERVAL)
        .control_persist(ControlPersist::IdleFor(whole_seconds(
            opts.master_idle_timeout,
        )))
        .control_directory(control_directory());
        if let Some(user) = &target.user {
            b.user(user.clone());
        }
        if let Some(port) = target.port {
            b.port(port);
        }
        if let Some(config) = &opts.config_file {
            b.config_file(config);
        }

        // Native multiplexing talks to the control master in-process: no `ssh` client process
        // per command or to close (measured by ci/bench: the drift check is CPU-bound on ssh).
        match b.connect_mux(&target.host).await {
            Ok(inner) => Ok(Session {
                inner,
                host,
                keep_at,
                reused_dir: None,
                hold: None,
            }),
            Err(e) => Err(classify_connect_error(&host, &e)),
        }
    }

    /// The ssh destination this session is connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs a POSIX sh `script` as root on the host: one remote execution, the script on stdin.
    ///
    /// The command line is fixed and never contains the script (so nothing in it shows up in
    /// the host's process list or shell history, and its size is not bounded by ARG_MAX). The
    /// remote side, in one execution:
    ///
    /// 1. if the login user is not root, re-executes itself as `sudo -n -- sh -c …` (no password
    ///    prompt, ever); if sudo is missing or wants a password, the result is
    ///    [`TransportError::Sudo`] for this host;
    /// 2. sources the script from stdin (`. /dev/stdin`); the script arrives [`framed`]: its
    ///    first line points stdin at `/dev/null`, and the rest is one brace group, parsed whole
    ///    before any of it runs. So a command in the script that reads stdin gets end-of-file
    ///    instead of swallowing the rest of the script, and a script cut short runs nothing.
    ///
    /// The script's exit status, stdout and stderr are returned as they are; a non-zero status
    /// is not an error here (fact scripts and apply steps decide what a status means).
    pub async fn run_script(&self, script: &str) -> Result<RemoteOutput, TransportError> {
        self.run_inner(script, None).await
    }

    /// [`Session::run_script`], and the moment each stdout line starting with `@@meshctl`
    /// arrived (for `--timings`: the scripts announce their steps with such lines, so the
    /// controller times them as they pass, without a clock process on the host).
    pub async fn run_script_marked(
        &self,
        script: &str,
    ) -> Result<(RemoteOutput, Vec<Mark>), TransportError> {
        let mut marks = Vec::new();
        let out = self.run_inner(script, Some(&mut marks)).await?;
        Ok((out, marks))
    }

    async fn run_inner(
        &self,
        script: &str,
        marks: Option<&mut Vec<Mark>>,
    ) -> Result<RemoteOutput, TransportError> {
        let mut cmd = self.inner.raw_command(remote_command());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn().await {
            Ok(c) => c,
            Err(e) if self.inner.check().await.is_err() => {
                return Err(self.exec_error(format!("{LOST} ({e})")));
            }
            Err(e) => return Err(self.exec_error(format!("cannot start the remote command: {e}"))),
        };

        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        // Write and read at once: a large script and a large output must not wait on each other.
        let write = async move {
            if let Some(mut w) = stdin {
                // A write error means the remote side stopped reading (e.g. sudo refused and
                // exited): the exit status and stderr below say why, so it is not reported.
                let _ = write_all_parts(&mut w, &framed(script)).await;
                let _ = w.shutdown().await;
            }
        };
        let read_out = async move {
            let mut buf = Vec::new();
            match (stdout, marks) {
                (Some(mut r), None) => r.read_to_end(&mut buf).await.map(|_| buf),
                (Some(mut r), Some(marks)) => {
                    // Line by line as it arrives; only marker lines are kept apart. The
                    // buffer is on the heap: an array here would sit in every execution's
                    // future, marked or not, for all the hosts at once.
                    let mut chunk = vec![0u8; 8192];
                    let mut line_start = 0;
                    loop {
                        let n = r.read(&mut chunk).await?;
                        if n == 0 {
                            break Ok(buf);
                        }
                        let at = std::time::Instant::now();
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(i) = buf[line_start..].iter().position(|b| *b == b'\n') {
                            let line = &buf[line_start..line_start + i];
                            if line.starts_with(MARK_PREFIX.as_bytes()) {
                                marks.push(Mark {
                                    at,
                                    line: String::from_utf8_lossy(line).into_owned(),
                                });
                            }
                            line_start += i + 1;
                        }
                    }
                }
                (None, _) => Ok(buf),
            }
        };
        let read_err = async move {
            let mut buf = Vec::new();
            match stderr {
                Some(mut r) => r.read_to_end(&mut buf).await.map(|_| buf),
                None => Ok(buf),
            }
        };
        let ((), out, err) = tokio::join!(write, read_out, read_err);
        let status = child.wait().await;

        let out = out.map_err(|e| self.exec_error(format!("reading the output failed: {e}")))?;
        let err = err.map_err(|e| self.exec_error(format!("reading the output failed: {e}")))?;

        let status = match status {
            Ok(st) => exit_code(st),
            // The process backend maps these two exit codes to errors; undo that, the script's
            // output is all here.
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(127),
            Err(openssh::Error::RemoteProcessTerminated) | Err(openssh::Error::Disconnected) => {
                // 255: either the remote shell died/exited 255, or the connection is gone.
                if self.inner.check().await.is_err() {
                    return Err(self.exec_error(LOST.to_owned()));
                }
                None
            }
            Err(e) => return Err(self.exec_error(reason_of(&e))),
        };

        let stderr = String::from_utf8_lossy(&err).into_owned();
        let stderr = match strip_markers(&stderr) {
            Markers::Root(s) | Markers::SudoOk(s) => s,
            Markers::SudoFailed { user, reason } => {
                return Err(TransportError::Sudo {
                    host: self.host.clone(),
                    user,
                    reason,
                });
            }
        };
        Ok(RemoteOutput {
            status,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr,
        })
    }

    /// Closes the connection (stops the control master and removes its directory) — or, kept
    /// ([`SshOptions::keep`]), leaves it open and records it for the next run.
    pub async fn close(self) -> Result<(), TransportError> {
        let Session {
            mut inner,
            host,
            keep_at,
            mut reused_dir,
            hold,
        } = self;
        // From here the master's own idle time counts again.
        drop(hold);
        if let Some(record) = keep_at {
            let (socket, log) = inner.detach();
            if crate::edge::kept::record(&record, &socket, log.as_deref()).is_ok() {
                return Ok(());
            }
            // Not recorded, so no run could reuse it: closed now.
            reused_dir = socket.parent().map(std::path::Path::to_path_buf);
            inner = openssh::Session::resume_mux(socket, log);
        }
        let closed = inner.close().await.map_err(|e| TransportError::Close {
            reason: reason_of(&e),
            host,
        });
        crate::edge::kept::remove_connection_dir(reused_dir.as_deref(), &control_directory());
        closed
    }

    fn exec_error(&self, reason: String) -> TransportError {
        TransportError::Exec {
            host: self.host.clone(),
            reason,
        }
    }
}

/// Refuses destinations ssh would read as an option (`-oProxyCommand=…`) or that the openssh
/// crate would re-parse (`ssh://…`). Inventory validation rejects them already; this is the
/// last line, since the destination is the one word passed to ssh unquoted by meaning.
fn check_destination(target: &SshTarget) -> Result<(), TransportError> {
    let bad = |s: &str| {
        s.is_empty()
            || s.starts_with('-')
            || s.starts_with("ssh://")
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    };
    if bad(&target.host) || target.user.as_deref().is_some_and(bad) {
        return Err(TransportError::Connect {
            host: target.host.clone(),
            reason: format!("`{target}` is not a valid ssh destination"),
        });
    }
    Ok(())
}

fn whole_seconds(d: Duration) -> NonZeroUsize {
    NonZeroUsize::new(usize::try_from(d.as_secs()).unwrap_or(usize::MAX))
        .unwrap_or(NonZeroUsize::MIN)
}

/// Whether `plan --keep-connections` can keep connections here (see [`crate::edge::kept`]).
pub fn keeping_possible() -> bool {
    crate::edge::kept::possible(&control_directory())
}

/// Where the control master's directory goes: `$XDG_RUNTIME_DIR` (per user, 0700, emptied at
/// logout) when there is one, else the system temp dir. Either way the crate creates a fresh
/// `.ssh-connection*` directory inside it for the socket and the master's log; ssh creates
/// the socket 0600 (measured: the directory itself is 0755), so no other user can connect.
/// (The crate's own default, `~/.local/state`, would leave stale directories in the home of a
/// killed run.)
fn control_directory() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The script as it travels: stdin pointed at /dev/null first, then the script as one brace
/// group. The shell parses a group whole before it runs any of it, so a script cut short on
/// the way (a dropped connection) is a syntax error that runs nothing, and no command in it can
/// read the rest of the script from stdin (the classic `sh -s` trap).
///
/// In three parts, so the script is not copied once more for every host in flight.
fn framed(script: &str) -> [&str; 3] {
    ["exec </dev/null\n{\n", script, "\n}\n"]
}

/// Writes `parts` in order, as few writes as the pipe takes (one `writev` when it has room).
async fn write_all_parts<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&str],
) -> std::io::Result<()> {
    let mut bufs: Vec<std::io::IoSlice<'_>> = parts
        .iter()
        .map(|p| std::io::IoSlice::new(p.as_bytes()))
        .collect();
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// The one command line every execution uses (the login shell runs it with `-c`).
fn remote_command() -> String {
    // Runs the script read from stdin, with stdin then closed (see `run_script`). The sbin
    // directories go first on PATH, whoever logged in: a non-root login's PATH (kept by a sudo
    // without `secure_path`) lacks them, and iptables, sysctl and dpkg's maintainer scripts
    // (which dpkg refuses to run without them) live there.
    //
    // A pipe (what sshd and sudo give) is sourced as it is (`. /dev/stdin`: the shell reads it
    // on a descriptor of its own, no `cat` and no copy to `eval`; ci/bench measured 7 ms of
    // host CPU per execution less), and the script's first line then points stdin at
    // /dev/null (see [`framed`]). Anything else (a socket, which /dev/stdin cannot open) is
    // read whole by `cat` first.
    let runner = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH\nexport PATH\nif [ -p /dev/stdin ] || [ -f /dev/stdin ]; then . /dev/stdin; else meshctl_script=$(cat); exec </dev/null; eval \"$meshctl_script\"; fi";
    let sudo_runner = format!("printf '%s\\n' '{SUDO_OK_MARKER}' >&2\n{runner}");
    // The effective uid from /proc (the shell's `read`: no process), `id -u` where there is
    // no /proc: every process is host CPU on every host, and ci/bench counts them.
    let uid = "meshctl_uid=\n\
               if [ -r /proc/self/status ]; then\n\
               while read -r meshctl_k meshctl_r meshctl_e meshctl_x; do\n\
               if [ \"$meshctl_k\" = Uid: ]; then meshctl_uid=$meshctl_e; break; fi\n\
               done </proc/self/status\n\
               fi\n\
               [ -n \"$meshctl_uid\" ] || meshctl_uid=$(id -u)\n";
    let wrapper = format!(
        "{uid}if [ \"$meshctl_uid\" != 0 ]; then\n\
         printf '{LOGIN_USER_MARKER}%s\\n' \"$(id -un)\" >&2\n\
         exec sudo -n -- sh -c {}\n\
         fi\n\
         {runner}",
        quote(&sudo_runner)
    );
    format!("exec sh -c {}", quote(&wrapper))
}

fn exit_code(st: ExitStatus) -> Option<i32> {
    st.code()
}

/// What the module's markers on stderr say about the execution.
#[derive(Debug, PartialEq, Eq)]
enum Markers {
    /// Root login: no markers, stderr is the script's.
    Root(String),
    /// Non-root login and sudo worked: the script's stderr, markers removed.
    SudoOk(String),
    /// Non-root login and sudo never started the script.
    SudoFailed { user: String, reason: String },
}

fn strip_markers(stderr: &str) -> Markers {
    let Some(rest) = stderr.strip_prefix(LOGIN_USER_MARKER) else {
        return Markers::Root(stderr.to_owned());
    };
    let (user, rest) = rest.split_once('\n').unwrap_or((rest, ""));
    let user = if user.is_empty() {
        "(unknown)".to_owned()
    } else {
        user.to_owned()
    };
    // sudo may print warnings of its own before the shell it started prints the marker.
    let mut before = String::new();
    let mut lines = rest.split_inclusive('\n');
    for line in lines.by_ref() {
        if line.trim_end_matches('\n') == SUDO_OK_MARKER {
            let after: String = lines.collect();
            return Markers::SudoOk(before + &after);
        }
        before.push_str(line);
    }
    let reason = if before.trim().is_empty() {
        "sudo printed nothing".to_owned()
    } else {
        summarize(&before)
    };
    Markers::SudoFailed { user, reason }
}

/// Turns a failed `SessionBuilder::connect` into the error that says what to do.
fn classify_connect_error(host: &str, e: &openssh::Error) -> TransportError {
    let host = host.to_owned();
    let text = match e {
        // The crate puts the master's log (ssh's own diagnostics) into these io errors; an
        // io error with an OS code is a local failure (ssh missing, temp dir not writable).
        openssh::Error::Connect(io) | openssh::Error::Master(io) if io.raw_os_error().is_some() => {
            return TransportError::Connect {
                host,
                reason: format!("cannot run the local ssh client: {io}"),
            };
        }
        openssh::Error::Connect(io) | openssh::Error::Master(io) => io.to_string(),
        other => reason_of(other),
    };
    classify_ssh_log(host, &text)
}

fn classify_ssh_log(host: String, text: &str) -> TransportError {
    if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || (text.contains("Host key for") && text.contains("has changed"))
        || text.contains("host key has changed")
    {
        TransportError::HostKeyChanged { host }
    } else if text.contains("host key is known for")
        || text.contains("Host key verification failed")
        || text.contains("authenticity of host")
    {
        TransportError::HostKeyUnknown { host }
    } else if text.contains("Permission denied (")
        || text.contains("Too many authentication failures")
    {
        TransportError::Auth {
            host,
            reason: summarize(text),
        }
    } else if text.trim().is_empty() {
        TransportError::Connect {
            host,
            reason: "ssh failed without a message (LogLevel QUIET in ssh_config?)".to_owned(),
        }
    } else {
        TransportError::Connect {
            host,
            reason: summarize(text),
        }
    }
}

/// An error's own message and its sources, in one line.
fn reason_of(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !m.is_empty() && !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    summarize(&s)
}

/// Diagnostic text on one line: lines trimmed and joined with "; ", ssh's "Warning: Permanently
/// added" notice dropped, cut at [`MAX_REASON_LEN`].
fn summarize(text: &str) -> String {
    let mut s = text
        .lines()
        .map(|l| l.trim().trim_start_matches("ssh: ").trim())
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect::<Vec<_>>()
        .join("; ");
    if s.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    /// Runs the remote command line locally the way sshd would (`$SHELL -c LINE`), script on
    /// stdin. The test runs as root or not, so only one branch is exercised per environment.
    fn run_locally(script: &str) -> (Option<i32>, String, String) {
        run_remote(framed(script).concat().as_bytes(), Stdin::Pipe)
    }

    /// What the remote command line reads its script from.
    #[derive(Clone, Copy)]
    enum Stdin {
        /// A pipe, as sshd and sudo give it.
        Pipe,
        /// A socket, which `/dev/stdin` cannot open: the `cat` fallback.
        Socket,
    }

    /// Runs the remote command line locally with `input` on stdin exactly as given (not
    /// framed).
    fn run_remote(input: &[u8], stdin: Stdin) -> (Option<i32>, String, String) {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(remote_command())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = match stdin {
            Stdin::Pipe => {
                let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
                child.stdin.take().unwrap().write_all(input).unwrap();
                child
            }
            Stdin::Socket => {
                let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
                let child = cmd
                    .stdin(std::os::fd::OwnedFd::from(theirs))
                    .spawn()
                    .unwrap();
                ours.write_all(input).unwrap();
                ours.shutdown(std::net::Shutdown::Write).unwrap();
                child
            }
        };
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn running_as_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n")
    }

    #[test]
    fn remote_command_runs_the_script_from_stdin_with_stdin_closed() {
        if !running_as_root() {
            return; // the non-root branch needs sudo; the lab test covers it
        }
        let script = "x='a b'\necho \"$x\" \"$#\"\ncat\necho after >&2\nexit 7\n";
        let (status, out, err) = run_locally(script);
        assert_eq!(status, Some(7));
        // `cat` read /dev/null, not the rest of the script.
        assert_eq!(out, "a b 0\n");
        assert_eq!(err, "after\n");
        // The sbin directories are on PATH first, even when the caller's PATH lacks them.
        let (_, out, _) = run_locally("printf '%s\\n' \"$PATH\"");
        assert!(
            out.starts_with("/usr/local/sbin:/usr/local/bin:/usr/sbin:"),
            "{out}"
        );
    }

    #[test]
    fn remote_command_runs_a_script_from_a_socket_too() {
        if !running_as_root() {
            return;
        }
        let script = "echo \"$#\"\ncat\necho after\nexit 3\n";
        let (status, out, _) = run_remote(framed(script).concat().as_bytes(), Stdin::Socket);
        assert_eq!((status, out.as_str()), (Some(3), "0\nafter\n"));
    }

    #[test]
    fn a_script_cut_short_runs_nothing() {
        if !running_as_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ran");
        let script = format!(
            "touch {}\necho first\n# {}\necho last\n",
            quote(flag.to_str().unwrap()),
            "x".repeat(20_000)
        );
        let whole = framed(&script).concat();
        for cut in [whole.len() / 2, whole.len() - 3] {
            for (stdin, on) in [(Stdin::Pipe, "pipe"), (Stdin::Socket, "socket")] {
                let (_, out, _) = run_remote(&whole.as_bytes()[..cut], stdin);
                assert_eq!(out, "", "{on}, cut at {cut}");
                assert!(
                    !flag.exists(),
                    "{on}, cut at {cut}: the script's first line ran"
                );
            }
        }
        let (_, out, _) = run_remote(whole.as_bytes(), Stdin::Pipe);
        assert_eq!(out, "first\nlast\n");
        assert!(flag.exists());
    }

    #[test]
    fn remote_command_never_contains_anything_variable() {
        assert_eq!(remote_command(), remote_command());
        assert!(remote_command().starts_with("exec sh -c '"));
    }

    #[test]
    fn markers_root() {
        assert_eq!(strip_markers("oops\n"), Markers::Root("oops\n".into()));
    }

    #[test]
    fn markers_sudo_ok_are_removed() {
        let s = format!(
            "{LOGIN_USER_MARKER}alice\nsudo: unable to resolve host x\n{SUDO_OK_MARKER}\nscript err\n"
        );
        assert_eq!(
            strip_markers(&s),
            Markers::SudoOk("sudo: unable to resolve host x\nscript err\n".into())
        );
        let s = format!("{LOGIN_USER_MARKER}alice\n{SUDO_OK_MARKER}\n");
        assert_eq!(strip_markers(&s), Markers::SudoOk(String::new()));
    }

    #[test]
    fn markers_sudo_failed() {
        let s = format!("{LOGIN_USER_MARKER}alice\nsudo: a password is required\n");
        assert_eq!(
            strip_markers(&s),
            Markers::SudoFailed {
                user: "alice".into(),
                reason: "sudo: a password is required".into()
            }
        );
        let s = format!("{LOGIN_USER_MARKER}bob\nsh: 3: exec: sudo: not found\n");
        assert!(
            matches!(strip_markers(&s), Markers::SudoFailed { user, reason } if user == "bob" && reason.contains("not found"))
        );
    }

    #[test]
    fn ssh_logs_are_classified() {
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
            Host key verification failed.\r\n";
        assert!(matches!(
            classify_ssh_log("h".into(), changed),
            TransportError::HostKeyChanged { .. }
        ));
        let unknown = "No ED25519 host key is known for vps and you have requested strict checking.\r\n\
            Host key verification failed.\r\n";
        assert!(matches!(
            classify_ssh_log("h".into(), unknown),
            TransportError::HostKeyUnknown { .. }
        ));
        let auth = "root@vps: Permission denied (publickey).\r\n";
        assert!(matches!(
            classify_ssh_log("h".into(), auth),
            TransportError::Auth { .. }
        ));
        let down = "ssh: connect to host 192.0.2.1 port 22: Connection timed out\r\n";
        match classify_ssh_log("vps".into(), down) {
            TransportError::Connect { host, reason } => {
                assert_eq!(host, "vps");
                assert_eq!(
                    reason,
                    "connect to host 192.0.2.1 port 22: Connection timed out"
                );
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn messages_name_the_host_and_what_to_do() {
        let e = TransportError::HostKeyChanged { host: "vps".into() };
        assert!(e.to_string().contains("vps") && e.to_string().contains("known_hosts"));
        let e = TransportError::Sudo {
            host: "nas".into(),
            user: "admin".into(),
            reason: "sudo: a password is required".into(),
        };
        assert_eq!(
            e.to_string(),
            "user admin on nas cannot run sudo without a password (sudo -n): grant it NOPASSWD for meshctl, or log in as root (sudo: a password is required)"
        );
        assert_eq!(e.host(), "nas");
    }

    #[test]
    fn hostile_destinations_are_refused() {
        for (user, host) in [
            (None, "-oProxyCommand=touch /tmp/x"),
            (None, "ssh://a@b"),
            (None, "a b"),
            (Some("-x"), "h"),
            (None, ""),
        ] {
            let t = SshTarget {
                user: user.map(str::to_owned),
                host: host.to_owned(),
                port: None,
            };
            assert!(
                matches!(check_destination(&t), Err(TransportError::Connect { .. })),
                "{t:?}"
            );
        }
        let t = SshTarget {
            user: Some("root".into()),
            host: "vps.example.org".into(),
            port: Some(2222),
        };
        assert!(check_destination(&t).is_ok());
    }

    #[test]
    fn summaries_are_one_bounded_line() {
        assert_eq!(
            summarize(
                "Warning: Permanently added 'x' (ED25519) to the list of known hosts.\r\nssh: boom\r\n\r\nbang"
            ),
            "boom; bang"
        );
        assert!(summarize(&"é".repeat(1000)).len() <= MAX_REASON_LEN + '…'.len_utf8());
    }
}
