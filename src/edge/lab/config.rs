//! The files that make lab hosts reachable over SSH: each host's sshd_config, the client's
//! ssh_config and known_hosts, and the script that starts a host's sshd in its own mount
//! namespace. Pure text generation; `up` writes them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Directories that every SSH-managed lab host gets a private tmpfs over, so hosts share no state
/// with each other or with the machine (and never reach the machine's init system).
pub const PRIVATE_DIRS: [&str; 8] = [
    "/run/wireguard",
    "/etc/wireguard",
    "/etc/sysctl.d",
    "/etc/iptables",
    "/etc/meshctl",
    "/run/meshctl",
    "/run/systemd",
    "/root",
];

/// Where a lab keeps its files, all under one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The lab's directory (`.meshctl-lab` by default), canonical.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout of the lab in `dir` (pass the canonical path: it ends up in configs).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The client's private key (its public half, `.pub`, is every sshd's authorized key).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    /// The client's public key: every lab sshd's AuthorizedKeysFile.
    pub fn client_pubkey(&self) -> PathBuf {
        self.dir.join("id_ed25519.pub")
    }
    /// Every managed host's key under its inventory name.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    /// The client's ssh_config (`ssh -F`, `--ssh-config`, `MESHCTL_SSH_CONFIG`).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }
    /// A host's sshd host key (private; `.pub` beside it).
    pub fn host_key(&self, host: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{host}_host_ed25519"))
    }
    /// A host's sshd_config.
    pub fn sshd_config(&self, host: &str) -> PathBuf {
        self.dir.join("sshd").join(format!("{host}.sshd_config"))
    }
    /// A host's sshd PidFile.
    pub fn sshd_pidfile(&self, host: &str) -> PathBuf {
        self.dir.join("run").join(format!("{host}.sshd.pid"))
    }
    /// Everything of lab machine `host`: its overlay (`upper`, `work`, `root`) and supervisor.
    pub fn machine_dir(&self, host: &str) -> PathBuf {
        self.dir.join("machines").join(host)
    }
    /// The pid of the systemd-nspawn of machine `host`'s current boot (its supervisor writes it).
    pub fn nspawn_pidfile(&self, host: &str) -> PathBuf {
        self.dir.join("run").join(format!("{host}.nspawn.pid"))
    }
    /// The console of machine `host` (systemd's boot messages) and its supervisor's lines.
    pub fn console_log(&self, host: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{host}.console.log"))
    }
    /// The package mirror's access log.
    pub fn mirror_log(&self) -> PathBuf {
        self.dir.join("logs").join("mirror.log")
    }
    /// sshd's log (LogLevel VERBOSE): one `Accepted publickey` line per connection and one
    /// `Starting session:` line per remote execution.
    pub fn sshd_log(&self, host: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{host}.sshd.log"))
    }
}

/// sshd_config for lab host `host`: loopback only inside its namespace, the lab's client key only.
pub fn sshd_config(layout: &Layout, host: &str) -> String {
    let p = |p: PathBuf| p.display().to_string();
    format!(
        "# meshctl lab: sshd of {host} (generated; rebuilt by `meshctl lab up`)\n\
         ListenAddress 127.0.0.1\n\
         Port 22\n\
         HostKey {hostkey}\n\
         AuthorizedKeysFile {authorized}\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         MaxSessions 128\n\
         MaxStartups 128\n\
         PidFile {pidfile}\n\
         LogLevel VERBOSE\n\
         Subsystem sftp internal-sftp\n",
        hostkey = p(layout.host_key(host)),
        authorized = p(layout.client_pubkey()),
        pidfile = p(layout.sshd_pidfile(host)),
    )
}

/// One `Host` block of the client's ssh_config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// The inventory name (also the known_hosts name, via `HostKeyAlias`).
    pub name: String,
    /// Every name the block matches: the inventory name and the `ssh:` target's host.
    pub aliases: Vec<String>,
    /// The network namespace whose sshd the block reaches.
    pub namespace: String,
    /// The login user: `root` on a namespace host, the machine's login user on a machine.
    pub user: String,
}

/// The client's ssh_config: `ssh -F <dir>/ssh_config root@vps` reaches the lab's `vps`.
pub fn ssh_config(layout: &Layout, prefix: &str, hosts: &[SshHost]) -> String {
    let mut s = format!(
        "# meshctl lab {prefix} (generated): ssh -F {} HOST\n",
        layout.ssh_config().display()
    );
    for h in hosts {
        let _ = write!(
            s,
            "\nHost {aliases}\n  \
               HostKeyAlias {name}\n  \
               User {user}\n  \
               IdentityFile {key}\n  \
               IdentitiesOnly yes\n  \
               ProxyCommand ip netns exec {ns} nc 127.0.0.1 22\n  \
               UserKnownHostsFile {known}\n  \
               GlobalKnownHostsFile /dev/null\n  \
               StrictHostKeyChecking yes\n  \
               UpdateHostKeys no\n  \
               BatchMode yes\n  \
               LogLevel ERROR\n",
            aliases = h.aliases.join(" "),
            name = h.name,
            key = layout.client_key().display(),
            ns = h.namespace,
            user = h.user,
            known = layout.known_hosts().display(),
        );
    }
    s
}

/// known_hosts: each host's key under its inventory name. `pubkeys` are `(name, "type base64 ...")`.
pub fn known_hosts(pubkeys: &[(String, String)]) -> String {
    pubkeys
        .iter()
        .map(|(name, key)| {
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            format!("{name} {}\n", key.join(" "))
        })
        .collect()
}

/// The script run as `ip netns exec NS unshare -m -u --propagation private sh -c SCRIPT`: the
/// host's own hostname (its inventory name), private tmpfs over [`PRIVATE_DIRS`], then sshd
/// (which daemonizes once it listens).
///
/// If the lab directory itself lies under one of those directories (a checkout in /root), it is
/// bound back on top through a file descriptor opened before the tmpfs covered it.
pub fn sshd_launch_script(layout: &Layout, host: &str, sshd: &Path) -> String {
    let dir = layout.dir.display().to_string();
    let covered = PRIVATE_DIRS.iter().any(|d| layout.dir.starts_with(d));
    let mut s = format!("set -e\nhostname {host}\n");
    if covered {
        let _ = writeln!(s, "exec 3< {dir}");
    }
    for d in PRIVATE_DIRS {
        let mode = if d == "/root" { "0700" } else { "0755" };
        let _ = writeln!(s, "mkdir -p {d} && mount -t tmpfs -o mode={mode} tmpfs {d}");
    }
    if covered {
        let _ = writeln!(
            s,
            "mkdir -p {dir} && mount -c --bind /proc/self/fd/3 {dir}\nexec 3<&-"
        );
    }
    let _ = writeln!(
        s,
        "exec {} -f {} -E {}",
        sshd.display(),
        layout.sshd_config(host).display(),
        layout.sshd_log(host).display()
    );
    s
}

/// Counts `(connections, sessions)` in an sshd log: `Accepted publickey` lines and
/// `Starting session:` lines (one per remote command, shell or subsystem).
pub fn count_sshd_log(text: &str) -> (usize, usize) {
    let conns = text
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count();
    let sessions = text
        .lines()
        .filter(|l| l.contains("Starting session:"))
        .count();
    (conns, sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new("/work/lab")
    }

    #[test]
    fn sshd_config_text() {
        assert_eq!(
            sshd_config(&layout(), "vps"),
            "# meshctl lab: sshd of vps (generated; rebuilt by `meshctl lab up`)
ListenAddress 127.0.0.1
Port 22
HostKey /work/lab/keys/vps_host_ed25519
AuthorizedKeysFile /work/lab/id_ed25519.pub
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
MaxSessions 128
MaxStartups 128
PidFile /work/lab/run/vps.sshd.pid
LogLevel VERBOSE
Subsystem sftp internal-sftp
"
        );
    }

    #[test]
    fn ssh_config_text() {
        let hosts = [
            SshHost {
                name: "vps".into(),
                aliases: vec!["vps".into()],
                namespace: "m12345-vps".into(),
                user: "root".into(),
            },
            SshHost {
                name: "nas".into(),
                aliases: vec!["nas".into(), "nas.home.example".into()],
                namespace: "m12345-nas".into(),
                user: "admin".into(),
            },
        ];
        assert_eq!(
            ssh_config(&layout(), "m12345", &hosts),
            "# meshctl lab m12345 (generated): ssh -F /work/lab/ssh_config HOST

Host vps
  HostKeyAlias vps
  User root
  IdentityFile /work/lab/id_ed25519
  IdentitiesOnly yes
  ProxyCommand ip netns exec m12345-vps nc 127.0.0.1 22
  UserKnownHostsFile /work/lab/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  BatchMode yes
  LogLevel ERROR

Host nas nas.home.example
  HostKeyAlias nas
  User admin
  IdentityFile /work/lab/id_ed25519
  IdentitiesOnly yes
  ProxyCommand ip netns exec m12345-nas nc 127.0.0.1 22
  UserKnownHostsFile /work/lab/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  BatchMode yes
  LogLevel ERROR
"
        );
    }

    #[test]
    fn known_hosts_drops_key_comments() {
        let k = known_hosts(&[("vps".into(), "ssh-ed25519 AAAAC3Nz root@machine\n".into())]);
        assert_eq!(k, "vps ssh-ed25519 AAAAC3Nz\n");
    }

    #[test]
    fn launch_script_covers_private_dirs_and_rebinds_a_covered_lab_dir() {
        let s = sshd_launch_script(&layout(), "vps", Path::new("/usr/sbin/sshd"));
        assert!(s.contains("mount -t tmpfs -o mode=0700 tmpfs /root"));
        assert!(s.ends_with(
            "exec /usr/sbin/sshd -f /work/lab/sshd/vps.sshd_config -E /work/lab/logs/vps.sshd.log\n"
        ));
        assert!(!s.contains("/proc/self/fd/3"));
        let s = sshd_launch_script(
            &Layout::new("/root/src/lab"),
            "vps",
            Path::new("/usr/sbin/sshd"),
        );
        assert!(s.starts_with("set -e\nhostname vps\nexec 3< /root/src/lab\n"));
        assert!(s.contains("mount -c --bind /proc/self/fd/3 /root/src/lab\nexec 3<&-\n"));
    }

    #[test]
    fn log_counts() {
        let log = "Server listening on 127.0.0.1 port 22.\n\
                   Accepted publickey for root from 127.0.0.1 port 1 ssh2: ED25519 SHA256:x\n\
                   Starting session: command for root from 127.0.0.1 port 1 id 0\n\
                   Starting session: command for root from 127.0.0.1 port 1 id 1\n";
        assert_eq!(count_sshd_log(log), (1, 2));
    }
}
