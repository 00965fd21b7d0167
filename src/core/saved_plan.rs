//! Saved plans (`meshctl plan -o plan.json`): sealed with a checksum beside the live-state
//! fingerprints, parsed back with every check a hand-edited or stale file needs before `apply`
//! trusts it. Pure: reading and writing the file is `files`' job.

use std::path::Path;

use crate::plan::{PLAN_VERSION, Plan};

/// Why a saved plan is refused.
#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    /// The file given to `meshctl apply` could not be read.
    #[error("cannot read the saved plan {path}: {source}")]
    Read {
        /// The saved plan's path, as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON of the plan schema (truncated, hand-edited, another file).
    #[error("the saved plan {path} is not a meshctl plan (corrupt or hand-edited?): {reason}")]
    Corrupt {
        /// The saved plan's path.
        path: String,
        /// The JSON error.
        reason: String,
    },
    /// The plan was written by a meshctl with another plan format ([`PLAN_VERSION`]).
    #[error(
        "the saved plan {path} has schema version {found}; this meshctl reads version {PLAN_VERSION}: make a new plan"
    )]
    Version {
        /// The saved plan's path.
        path: String,
        /// The version the file declares.
        found: u64,
    },
    /// The inventory, roles or pinned keys changed since the plan was made (the digest differs).
    #[error(
        "the saved plan {path} was made from other inputs (inventory, roles or pinned keys differ): make a new plan"
    )]
    OtherInputs {
        /// The saved plan's path.
        path: String,
    },
    /// A host had failed when the plan was made, so the plan does not cover it.
    #[error(
        "host {host} could not be planned when {path} was made (see the plan's error): fix it and make a new plan"
    )]
    Incomplete {
        /// The saved plan's path.
        path: String,
        /// The host whose gathering failed.
        host: String,
    },
    /// A host's live state no longer matches the fingerprint saved with the plan.
    #[error("host {host} has changed since the plan {path} was made: make a new plan")]
    Moved {
        /// The saved plan's path.
        path: String,
        /// The host that changed.
        host: String,
    },
}

/// The text of a saved plan: the plan as JSON, sealed with its checksum.
pub fn seal(plan: &Plan) -> String {
    let mut sealed = plan.clone();
    sealed.checksum = Some(checksum(plan));
    crate::render::json(&sealed)
}

/// Parses a saved plan's text (read from `path`, named in errors): its schema version first,
/// then the plan, then its checksum.
pub fn parse(text: &str, path: &Path) -> Result<Plan, SavedPlanError> {
    let p = path.display().to_string();
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| SavedPlanError::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| SavedPlanError::Corrupt {
            path: p.clone(),
            reason: "no `version` field".into(),
        })?;
    if version != u64::from(PLAN_VERSION) {
        return Err(SavedPlanError::Version {
            path: p,
            found: version,
        });
    }
    let plan: Plan = serde_json::from_value(value).map_err(|e| SavedPlanError::Corrupt {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    match &plan.checksum {
        Some(sum) if *sum == checksum(&plan) => Ok(Plan {
            checksum: None,
            ..plan
        }),
        Some(_) => Err(SavedPlanError::Corrupt {
            path: p,
            reason: "its content does not match its checksum (edited by hand?)".into(),
        }),
        None => Err(SavedPlanError::Corrupt {
            path: p,
            reason: "it has no checksum (not saved with `meshctl plan -o`)".into(),
        }),
    }
}

/// SHA-256 over the plan without its checksum field.
fn checksum(plan: &Plan) -> String {
    use sha2::Digest;
    let mut unsealed = plan.clone();
    unsealed.checksum = None;
    let json = serde_json::to_vec(&unsealed).expect("a plan always serialises");
    sha2::Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuses a saved plan made from other inputs (inventory, roles, pinned keys) — checked
/// before any host is contacted.
pub fn check_inputs(saved: &Plan, digest: &str, path: &Path) -> Result<(), SavedPlanError> {
    if saved.inventory_digest != digest {
        return Err(SavedPlanError::OtherInputs {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

/// Checks a saved plan against the plan of the hosts as step 1 gathered them now: the same
/// inputs (`now.inventory_digest`: the caller gives the digest taken before step 1 pinned new
/// keys) and every host's live state unchanged (by fingerprint). Only then are the saved
/// plan's own ops run; the plan made now only lends its fingerprints.
pub fn check(saved: &Plan, now: &Plan, path: &Path) -> Result<(), SavedPlanError> {
    let p = path.display().to_string();
    if saved.inventory_digest != now.inventory_digest {
        return Err(SavedPlanError::OtherInputs { path: p });
    }
    for h in &saved.hosts {
        if h.fingerprint.is_none() {
            return Err(SavedPlanError::Incomplete {
                path: p,
                host: h.host.to_string(),
            });
        }
        let current = now.hosts.iter().find(|n| n.host == h.host);
        let same =
            current.is_some_and(|c| c.fingerprint.is_some() && c.fingerprint == h.fingerprint);
        if !same {
            return Err(SavedPlanError::Moved {
                path: p,
                host: h.host.to_string(),
            });
        }
    }
    Ok(())
}
