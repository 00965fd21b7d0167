//! What can go wrong on one host during remote work, as types: the engine decides on the
//! variant, never on a message's text; the text is for people and is made only when shown.

use crate::facts::FactError;
use crate::transport::TransportError;

/// Why a host's gather, prepare or apply failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Connecting or running a script failed (unreachable, host key, login, sudo).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Another apply holds the host's lock.
    #[error("locked by another apply: {holder}; if that run is dead, run again with --break-lock")]
    Locked {
        /// Who holds it, as its holder file says.
        holder: String,
    },
    /// Step 1 stopped before printing the host's public key (no key tool, no permission).
    #[error("preparing failed: {detail}")]
    Prepare {
        /// The last line the host printed on stderr.
        detail: String,
    },
    /// Installing the packages the plan names failed (apply's `provision`): nothing else was
    /// changed on the host.
    #[error("installing {} with {} failed: {}", packages.join(" "), manager.tool(), if output.is_empty() { "no output".to_owned() } else { output.join(" | ") })]
    Install {
        /// The host's package manager.
        manager: crate::packages::Manager,
        /// What was to be installed.
        packages: Vec<String>,
        /// The package manager's last lines of output.
        output: Vec<String>,
    },
    /// The plan could not be made for this host (it lacks something and cannot get it).
    #[error("{reason}")]
    NotPlanned {
        /// The plan's error for the host.
        reason: String,
    },
    /// The host printed something that is not a public key.
    #[error("reading the host's public key: {detail}")]
    PublicKey {
        /// Why it is not one.
        detail: String,
    },
    /// The facts the host printed could not be parsed.
    #[error("reading facts: {source}{}", stderr.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Facts {
        /// The parser's error.
        source: FactError,
        /// The host's last line on stderr, if any.
        stderr: Option<String>,
    },
    /// The host's public key was refused against the pins.
    #[error("{0}")]
    KeyRefused(crate::keys::KeyRefusal),
    /// A step of the change script failed; the script stopped there.
    #[error("step `{failed}` failed ({detail}); applied before it: {}", if applied.is_empty() { "nothing".to_owned() } else { applied.join("; ") })]
    Step {
        /// The failed step's label.
        failed: String,
        /// The step's last line of output.
        detail: String,
        /// The steps that ran before it.
        applied: Vec<String>,
    },
    /// The connection died while the change script ran: it may still be running on the host,
    /// so the lock stays.
    #[error(
        "the connection failed while applying: {source}; the host may still be applying, so its lock stays: once it is done, run again with --break-lock"
    )]
    LostWhileApplying {
        /// What the transport saw.
        source: TransportError,
    },
    /// No answer from the change script within the guard's patience.
    #[error(
        "no answer while applying within {secs}s; the host may still be applying, so its lock stays: once it is done, run again with --break-lock"
    )]
    NoAnswer {
        /// How long meshctl waited.
        secs: u64,
    },
    /// A guarded host's change script was cut off (its connection died, or it did not answer).
    #[error("{0}")]
    CutOff(String),
    /// The guard could not be armed on the host, so the change script never ran.
    #[error("the rollback guard could not be armed, so nothing was changed ({detail})")]
    GuardNotArmed {
        /// What the host said.
        detail: String,
    },
    /// A guarded host could not be confirmed over a new connection: it rolls back by itself.
    #[error("NOT confirmed over a new connection ({why}){}: {after}", step.as_ref().map(|s| format!("; {s}")).unwrap_or_default())]
    NotConfirmed {
        /// Why the confirmation failed.
        why: String,
        /// The change script's own failure, if it had one.
        step: Option<Box<HostError>>,
        /// What the host said afterwards.
        after: RollbackSeen,
    },
    /// A preshared key this host's changes carry could not be read from the other end of its
    /// pair, so nothing was changed here.
    #[error("nothing was changed: {0}")]
    NotCarried(String),
    /// The gather after applying failed.
    #[error("confirming: {0}")]
    Confirming(Box<HostError>),
}

/// What a guarded host said after its timer ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackSeen {
    /// It restored its previous state and answers again.
    RolledBack {
        /// The guard's timeout.
        secs: u64,
    },
    /// It says something else (`confirmed`, `pending`).
    Other(String),
    /// It did not answer yet.
    NoAnswer {
        /// The guard's timeout.
        secs: u64,
    },
}

impl std::fmt::Display for RollbackSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RollbackSeen::RolledBack { secs } => write!(
                f,
                "the host restored its previous state by itself after {secs}s, and answers again"
            ),
            RollbackSeen::Other(what) => write!(f, "the guard on the host says `{what}`"),
            RollbackSeen::NoAnswer { secs } => write!(
                f,
                "the host restores its previous state by itself after {secs}s (it did not answer yet)"
            ),
        }
    }
}
