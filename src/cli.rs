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
    /// Print the wg-quick config (and a QR code) for an unmanaged client such as a phone.
    Client(ClientArgs),
    /// Adopt a network built by hand: gather the hosts (read only) and write an inventory.
    Import(ImportArgs),
    /// Draw the network (SVG, DOT or mermaid); `--plan` colours what a plan would change.
    Graph(GraphArgs),
    /// Build, inspect and remove a lab of real hosts on this machine (root, Linux).
    Lab(LabArgs),
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

    /// Print the plan as JSON (a versioned schema, see README.md) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Save the plan, with a fingerprint of each host's live state, for `meshctl apply FILE`.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
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

    /// Break a lock left on a host by a meshctl that was killed.
    #[arg(long)]
    pub break_lock: bool,

    /// For hosts reached through the network meshctl manages (`guard`): seconds the host waits
    /// for a confirmation over a new connection before it restores its previous state by itself.
    #[arg(long, default_value_t = 30)]
    pub guard_timeout: u64,
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
