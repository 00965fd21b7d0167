//! The command line: clap definitions only. Each subcommand's work lives in its own module;
//! `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The inventory read when neither `-i` nor [`INVENTORY_ENV`] names one: the user's own file in
/// the current directory, never a file of meshctl's repository.
pub const DEFAULT_INVENTORY: &str = "meshctl.yaml";

/// The environment variable naming the inventory when `-i` is not given.
pub const INVENTORY_ENV: &str = "MESHCTL_INVENTORY";

/// meshctl turns one YAML inventory into a working WireGuard network and keeps it that way.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about, long_about = None)]
pub struct Cli {
    /// Never colour the output (also honoured: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    pub no_color: bool,

    /// Log what meshctl does (never a key).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// meshctl's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gather the live state of every host over SSH and show what apply would change.
    Plan(PlanArgs),
    /// Change only what differs, then gather again and report whether each host converged.
    Apply(ApplyArgs),
    /// Replace a managed host's private key (and with --psk its pairs' preshared keys): one
    /// apply in which every managed peer learns the new key.
    Rotate(RotateArgs),
    /// Print the wg-quick config (and a QR code) for an unmanaged client such as a phone.
    Client(ClientArgs),
    /// Write a commented starting inventory from a few facts about your network.
    Init(InitArgs),
    /// Who is online: every managed host's interface and its peers (endpoint, latest
    /// handshake, transfer), one remote execution per host.
    Status(StatusArgs),
    /// Prove the network passes traffic: every managed host pings the others' VPN addresses
    /// (and clients the home LANs' gateways), one remote execution per host.
    Verify(VerifyArgs),
    /// Adopt a network built by hand: gather the hosts (read only) and write an inventory.
    Import(ImportArgs),
    /// Draw the network (SVG, DOT or mermaid); `--plan` colours what a plan would change.
    Graph(GraphArgs),
    /// Build, inspect and remove a lab of real hosts on this machine (root, Linux).
    Lab(LabArgs),
}

/// `meshctl init`: a starting inventory, validated, written to a new file.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Where to write it (never overwritten).
    #[arg(short, long, default_value = DEFAULT_INVENTORY)]
    pub out: PathBuf,
    /// The network's name.
    #[arg(long, default_value = "home")]
    pub name: String,
    /// The hub (the VPS): its SSH target, `user@host[:port]`.
    #[arg(long)]
    pub hub: String,
    /// What the others dial to reach the hub (default: the hub's SSH host).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The hub's interface to the internet.
    #[arg(long, default_value = "eth0")]
    pub wan: String,
    /// The /64 the provider gave the hub: clients get public IPv6 addresses out of it.
    #[arg(long)]
    pub ipv6_prefix: Option<ipnet::Ipv6Net>,
    /// The NAS (gateway into the home LAN): its SSH target.
    #[arg(long, requires = "lan")]
    pub gateway: Option<String>,
    /// The NAS's name in the inventory.
    #[arg(long, default_value = "nas")]
    pub gateway_name: String,
    /// The home LAN, e.g. 192.168.178.0/24.
    #[arg(long)]
    pub lan: Option<ipnet::Ipv4Net>,
    /// The NAS's address on the home LAN (default: .10 of the LAN).
    #[arg(long)]
    pub lan_address: Option<std::net::Ipv4Addr>,
    /// The NAS's interface on the home LAN.
    #[arg(long, default_value = "eth0")]
    pub lan_interface: String,
    /// The home router, `NAME=ADDRESS` (e.g. fritzbox=192.168.178.1): its static route is
    /// printed as a manual step.
    #[arg(long, requires = "gateway")]
    pub router: Option<String>,
    /// A managed client, `NAME=user@host` (repeatable).
    #[arg(long)]
    pub client: Vec<String>,
    /// An unmanaged client such as a phone, by name (repeatable).
    #[arg(long)]
    pub phone: Vec<String>,
    /// The VPN's IPv4 range (default: 10.8.0.0/24, or the next one clear of the home LAN).
    #[arg(long)]
    pub vpn: Option<ipnet::Ipv4Net>,
}

/// Options shared by everything that reads an inventory and talks to hosts.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The inventory file: this one, else the one $MESHCTL_INVENTORY names, else ./meshctl.yaml
    /// (start one by copying inventory/example.yaml from meshctl's source).
    #[arg(short, long, default_value = DEFAULT_INVENTORY, env = INVENTORY_ENV)]
    pub inventory: PathBuf,

    /// Roles directory overriding the built-in roles (hub.yaml, gateway.yaml, client.yaml).
    #[arg(long)]
    pub roles: Option<PathBuf>,

    /// ssh_config file to use instead of ~/.ssh/config (e.g. the lab's `.meshctl-lab/ssh_config`).
    #[arg(long, env = "MESHCTL_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,

    /// Accept a host's key on first contact (known_hosts has no entry yet). A *changed* host key
    /// is always refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,

    /// Only these managed hosts (comma-separated or repeated); the others are not contacted.
    #[arg(long, value_delimiter = ',')]
    pub limit: Vec<String>,
}

/// Arguments of `meshctl plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The inventory and connection options.
    #[command(flatten)]
    pub common: Common,

    /// Exit 0 when nothing would change, 2 when something would, 1 on error (for CI drift checks).
    #[arg(long)]
    pub detailed_exitcode: bool,

    /// Print the plan as JSON (a versioned schema, see README.md) instead of text; the same as
    /// `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,

    /// How to print the plan: `text` (Terraform-like), `json` (the versioned schema) or
    /// `markdown` (a CI job summary: "no drift" or "drift on N hosts", a table of hosts, each
    /// drifted host's changes, manual steps, unreachable hosts; never a key).
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,

    /// Also append the plan as Markdown to this file (for CI: `--summary "$GITHUB_STEP_SUMMARY"`),
    /// whatever `--format` prints on standard output.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Save the plan, with a fingerprint of each host's live state, for `meshctl apply FILE`.
    #[arg(short, long)]
    pub out: Option<PathBuf>,

    /// Leave each host's SSH connection open for up to SECONDS without use (1-600), for the
    /// `meshctl apply --yes` that follows to run over it instead of connecting again (it is
    /// taken by that one run). Meanwhile any process of yours can use it: off by default.
    #[arg(long, value_name = "SECONDS", env = "MESHCTL_KEEP_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub keep_connections: Option<u64>,
}

/// The output formats of `meshctl plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// Terraform-like text, coloured on a terminal.
    Text,
    /// The plan's versioned JSON schema.
    Json,
    /// GitHub-flavoured Markdown for a job summary or a pull-request comment.
    Markdown,
}

/// Arguments of `meshctl apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The inventory and connection options.
    #[command(flatten)]
    pub common: Common,

    /// A plan saved with `meshctl plan -o FILE`: applied exactly, or refused if a host moved.
    pub plan_file: Option<PathBuf>,

    /// Do not ask for confirmation (required when there is no terminal).
    #[arg(short, long)]
    pub yes: bool,

    /// Accept a host whose live public key differs from the pinned one (a reinstall).
    #[arg(long)]
    pub accept_new_keys: bool,

    /// Do not run `meshctl verify` after a converged apply (by default apply proves the network
    /// passes traffic: every host pings the others, at one more connection per host).
    #[arg(long)]
    pub no_verify: bool,

    /// Break a lock left on a host by a meshctl that was killed.
    #[arg(long)]
    pub break_lock: bool,

    /// Write when each phase of each host took place (connect, lock, key, gather, every step
    /// of the change script, the final gather) to FILE as JSON, in milliseconds; also
    /// `MESHCTL_TIMINGS=FILE`. It holds phase names and the plan's change texts, never a key.
    #[arg(long, value_name = "FILE", env = "MESHCTL_TIMINGS")]
    pub timings: Option<PathBuf>,

    /// For hosts reached through the network meshctl manages (`guard`): seconds the host waits
    /// for a confirmation over a new connection before it restores its previous state by itself.
    #[arg(long, default_value_t = 30)]
    pub guard_timeout: u64,
}

/// Arguments of `meshctl rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The inventory and connection options.
    #[command(flatten)]
    pub common: Common,

    /// The managed host whose key is replaced (an unmanaged client's key is replaced with
    /// `meshctl client NAME --new-key`).
    pub host: String,

    /// Also replace the preshared keys of the host's pairs (for the hub: every pair).
    #[arg(long)]
    pub psk: bool,

    /// Do not ask for confirmation (required when there is no terminal).
    #[arg(short, long)]
    pub yes: bool,

    /// Do not run `meshctl verify` after a converged apply.
    #[arg(long)]
    pub no_verify: bool,

    /// Break a lock left on a host by a meshctl that was killed.
    #[arg(long)]
    pub break_lock: bool,

    /// For guarded hosts: seconds before an unconfirmed apply rolls back by itself.
    #[arg(long, default_value_t = 30)]
    pub guard_timeout: u64,
}

/// Arguments of `meshctl status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The inventory and connection options.
    #[command(flatten)]
    pub common: Common,

    /// Print the status as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Redraw every SECONDS seconds (default 2) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,

    /// A peer is online when its latest handshake is at most this many seconds old (for tests).
    #[arg(long, default_value_t = crate::status::ONLINE_WITHIN_SECS, hide = true)]
    pub online_within: u64,
}

/// Arguments of `meshctl verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The inventory and connection options.
    #[command(flatten)]
    pub common: Common,

    /// Print the results as JSON instead of a matrix.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `meshctl client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The inventory and connection options.
    #[command(flatten)]
    pub common: Common,

    /// The unmanaged client (a host without `ssh:`).
    pub name: String,

    /// Also print the config as a QR code for the WireGuard app: black on white on a terminal
    /// (it scans on a dark background too), plain block characters for a light background
    /// otherwise.
    #[arg(long)]
    pub qr: bool,

    /// Also write the config as a QR code to this PNG file (mode 0600: it holds what the config
    /// holds, the private key included; it must not exist yet).
    #[arg(long, value_name = "FILE")]
    pub qr_png: Option<PathBuf>,

    /// Write the config to this file (mode 0600) instead of standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,

    /// Make a new key for a client meshctl made a key for before (its private half is only in
    /// the config handed out then); run `meshctl apply` afterwards so the hub learns it.
    #[arg(long)]
    pub new_key: bool,
}

/// Arguments of `meshctl import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A host of the network, `user@host[:port]` (repeat: `--host root@vps --host admin@nas`);
    /// it is named after its host part. Nothing is written on any host.
    #[arg(long = "host", required = true, value_name = "TARGET")]
    pub hosts: Vec<String>,

    /// The WireGuard interface to read on every host.
    #[arg(long, default_value = "wg0")]
    pub interface: String,

    /// The inventory to write (never overwritten; its keys file `<stem>.keys.yaml` beside it).
    #[arg(short, long, default_value = DEFAULT_INVENTORY)]
    pub out: PathBuf,

    /// ssh_config file to use instead of ~/.ssh/config.
    #[arg(long, env = "MESHCTL_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,

    /// Accept a host's key on first contact (a *changed* host key is always refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// How many hosts to gather at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
}

/// The picture formats of `meshctl graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// An SVG picture drawn by meshctl (no Graphviz needed).
    Svg,
    /// Graphviz DOT text (`dot -Tpng`).
    Dot,
    /// A mermaid flowchart (GitHub renders it in a ```mermaid block).
    Mermaid,
}

/// Arguments of `meshctl graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The inventory and connection options (hosts are contacted only with `--plan`).
    #[command(flatten)]
    pub common: Common,

    /// Write the picture to this file instead of standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,

    /// The picture's format; default: from the `-o` file's extension (.svg, .dot/.gv, .mmd),
    /// else svg.
    #[arg(long, value_enum)]
    pub format: Option<GraphFormat>,

    /// Gather every managed host like `meshctl plan` does and colour each host by what the plan
    /// would change (green in sync, orange changes, red not gathered). Without it no host is
    /// contacted.
    #[arg(long)]
    pub plan: bool,
}

/// Arguments of `meshctl lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab subcommand to run.
    #[command(subcommand)]
    pub command: LabCommand,
}

/// The subcommands of `meshctl lab`.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build one namespace per inventory host, plus the internet, the home router and `inet`.
    Up {
        /// The inventory to build the lab from (found like every command's: `-i`, else
        /// $MESHCTL_INVENTORY, else ./meshctl.yaml); the reference lab is inventory/lab.yaml.
        #[arg(short, long, default_value = DEFAULT_INVENTORY, env = INVENTORY_ENV)]
        inventory: PathBuf,
        /// Where the lab keeps its state (keys, ssh_config, pids).
        #[arg(long, default_value = ".meshctl-lab")]
        dir: PathBuf,
        /// Boot this host as a Debian machine with systemd (as the inventory's `lab.machines`
        /// does): a fresh VPS-like host whose login is `admin` with sudo. Repeat or separate
        /// with commas. The root file system and package mirror are built once and cached in
        /// /var/cache/meshctl-lab ($MESHCTL_LAB_CACHE).
        #[arg(long = "machine", value_name = "HOST", value_delimiter = ',')]
        machines: Vec<String>,
    },
    /// Remove every namespace and process the lab made (also after a crashed run).
    Down {
        /// The lab's state directory, as given to `lab up`.
        #[arg(long, default_value = ".meshctl-lab")]
        dir: PathBuf,
    },
    /// List the lab's hosts and whether each answers over SSH.
    Status {
        /// The lab's state directory, as given to `lab up`.
        #[arg(long, default_value = ".meshctl-lab")]
        dir: PathBuf,
    },
    /// Run a command inside a lab host's network and mount namespace.
    Exec {
        /// The lab's state directory, as given to `lab up`.
        #[arg(long, default_value = ".meshctl-lab")]
        dir: PathBuf,
        /// The lab host to run in (its inventory name).
        host: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}
