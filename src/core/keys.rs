//! Pinned public keys: the file beside the inventory (`lab.yaml` → `lab.keys.yaml`) that records
//! each host's WireGuard public key, learnt at apply or given in the inventory. Public keys are
//! not secret, and pinning them means a plan never depends on every host being reachable, and a
//! host whose key changed (a reinstall, or something worse) is noticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::inventory::Inventory;
use crate::names::{HostName, WgKey};

/// What a reported public key means next to the pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Not pinned yet: it will be.
    New,
    /// The pinned key.
    Same,
    /// Another key than the pinned one, accepted explicitly (`--accept-new-keys`).
    Changed,
}

/// Why a reported public key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// Another host of the inventory already has this key.
    #[error(
        "its public key {key} is also the key of {other}: two peers cannot share a key (a copied key file?); give one of them a new key"
    )]
    Shared {
        /// The key, shortened.
        key: String,
        /// The host that has it too.
        other: HostName,
    },
    /// The key is not the pinned one, and changed keys are not accepted in this run.
    #[error(
        "THE PUBLIC KEY OF {host} CHANGED (pinned {pinned}, now {now}): a reinstall, or something worse. Check the host; accept with --accept-new-keys"
    )]
    Changed {
        /// The host.
        host: HostName,
        /// The pinned key, shortened.
        pinned: String,
        /// The reported key, shortened.
        now: String,
    },
}

/// Host name → public key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedKeys {
    /// Each host's public key, by host name.
    pub keys: BTreeMap<HostName, WgKey>,
    /// The rotations the file records, as its comment lines (`# rotated vps: OLD -> NEW ...`),
    /// oldest first: kept so a reviewer of the file's history sees each one.
    pub history: Vec<String>,
}

/// How a rotation's record in the pins file starts.
const ROTATED: &str = "# rotated ";

/// Why the pinned keys file could not be used; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file exists but could not be read.
    #[error("cannot read pinned keys {path}: {source}")]
    Read {
        /// The keys file (`<inventory>.keys.yaml`).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a YAML mapping of valid host names to valid public keys.
    #[error("pinned keys {path}: {message}")]
    Invalid {
        /// The keys file.
        path: PathBuf,
        /// What is wrong, with the YAML location or the host it is about.
        message: String,
    },
    /// The file could not be written after apply learnt a new key.
    #[error("cannot write pinned keys {path}: {source}")]
    Write {
        /// The keys file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl PinnedKeys {
    /// Adds the keys the inventory gives (`public_key:`), which take precedence over pins.
    pub fn with_inventory(mut self, inv: &Inventory) -> Self {
        for h in inv.hosts.values() {
            if let Some(k) = &h.public_key {
                self.keys.insert(h.name.clone(), k.clone());
            }
        }
        self
    }

    /// Parses the text of the keys file at `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeysError> {
        let raw: BTreeMap<String, String> = if text.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_saphyr::from_str(text).map_err(|e| KeysError::Invalid {
                path: path.to_owned(),
                message: crate::inventory::yaml_error(&e, &path.display().to_string(), text)
                    .to_string(),
            })?
        };
        let history = text
            .lines()
            .filter(|l| l.starts_with(ROTATED))
            .map(str::to_owned)
            .collect();
        let mut keys = BTreeMap::new();
        for (host, key) in raw {
            let name = HostName::parse(&host).map_err(|e| KeysError::Invalid {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            let key = WgKey::parse(&key).map_err(|e| KeysError::Invalid {
                path: path.to_owned(),
                message: format!("host {name}: {e}"),
            })?;
            keys.insert(name, key);
        }
        Ok(Self { keys, history })
    }

    /// Pins `new` for `host` and records the rotation from `old` (`when`: e.g. a date).
    pub fn rotate(&mut self, host: &HostName, old: &WgKey, new: &WgKey, when: &str) {
        self.history
            .push(format!("{ROTATED}{host}: \"{old}\" -> \"{new}\" ({when})"));
        self.keys.insert(host.clone(), new.clone());
    }

    /// The pinned public key of `host`; `None`: not known yet (it is made at the first apply).
    /// Checks a public key `host` reported against the pins: a key another host of `inv`
    /// already has is refused (a copied key file, or a host lying), and so is a changed key
    /// unless `accept_changed`. Pins of hosts the inventory no longer has do not count (a
    /// renamed host keeps its key).
    pub fn vet(
        &self,
        host: &HostName,
        key: &WgKey,
        inv: &Inventory,
        accept_changed: bool,
    ) -> Result<KeyVerdict, KeyRefusal> {
        if let Some((other, _)) = self
            .keys
            .iter()
            .find(|(o, k)| *o != host && *k == key && inv.hosts.contains_key(*o))
        {
            return Err(KeyRefusal::Shared {
                key: key.short(),
                other: other.clone(),
            });
        }
        match self.get(host) {
            None => Ok(KeyVerdict::New),
            Some(old) if old == key => Ok(KeyVerdict::Same),
            Some(_) if accept_changed => Ok(KeyVerdict::Changed),
            Some(old) => Err(KeyRefusal::Changed {
                host: host.clone(),
                pinned: old.short(),
                now: key.short(),
            }),
        }
    }

    /// The key pinned for `host`.
    pub fn get(&self, host: &HostName) -> Option<&WgKey> {
        self.keys.get(host)
    }

    /// The host a public key belongs to.
    pub fn owner(&self, key: &str) -> Option<&HostName> {
        self.keys
            .iter()
            .find(|(_, k)| k.as_str() == key)
            .map(|(h, _)| h)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# WireGuard public keys pinned by meshctl (public keys only: commit this file).\n\
             # A host whose live key differs is reported; `meshctl apply --accept-new-keys` re-pins it.\n",
        );
        for line in &self.history {
            out.push_str(line);
            out.push('\n');
        }
        for (h, k) in &self.keys {
            out.push_str(&format!("{h}: \"{k}\"\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.keys.yaml");
        let mut p = PinnedKeys::default();
        p.keys.insert(
            HostName::parse("vps").unwrap(),
            WgKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").unwrap(),
        );
        crate::files::save_pins(&p, &path).unwrap();
        assert_eq!(crate::files::read_pins(&path).unwrap(), p);
        assert_eq!(
            crate::files::read_pins(&dir.path().join("absent.yaml")).unwrap(),
            PinnedKeys::default()
        );
    }

    #[test]
    fn reported_keys_are_vetted_against_the_pins() {
        let text = include_str!("../../inventory/example.yaml");
        let inv = crate::inventory::parse(text, "example.yaml", Path::new("example.yaml")).unwrap();
        let (a, b) = (
            WgKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").unwrap(),
            WgKey::parse("gwSyaptQc4Ro7MuZHihtpjDj+3wfQfTgSECpjCXT1SM=").unwrap(),
        );
        let (vps, nas, gone) = (
            HostName::parse("vps").unwrap(),
            HostName::parse("nas").unwrap(),
            HostName::parse("oldhost").unwrap(),
        );
        let mut p = PinnedKeys::default();
        assert_eq!(p.vet(&vps, &a, &inv, false), Ok(KeyVerdict::New));
        p.keys.insert(vps.clone(), a.clone());
        assert_eq!(p.vet(&vps, &a, &inv, false), Ok(KeyVerdict::Same));
        assert!(matches!(
            p.vet(&vps, &b, &inv, false),
            Err(KeyRefusal::Changed { .. })
        ));
        assert_eq!(p.vet(&vps, &b, &inv, true), Ok(KeyVerdict::Changed));
        let shared = p.vet(&nas, &a, &inv, true).unwrap_err().to_string();
        assert!(shared.contains("also the key of vps"), "{shared}");
        // A pin of a host the inventory no longer has does not count.
        let mut renamed = PinnedKeys::default();
        renamed.keys.insert(gone, b.clone());
        assert_eq!(renamed.vet(&nas, &b, &inv, false), Ok(KeyVerdict::New));
    }

    #[test]
    fn invalid_key_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.keys.yaml");
        std::fs::write(&path, "vps: \"SECRETSECRETSECRET\"\n").unwrap();
        let err = crate::files::read_pins(&path).unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }
}
