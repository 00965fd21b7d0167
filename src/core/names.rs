//! Validated newtypes for the strings meshctl passes around: host names, interface names and
//! WireGuard public keys.
//!
//! They are parsed once, at the edge (inventory, pinned keys, facts), so that no value that
//! could reach a remote shell or a file name is an unchecked string further in. Their
//! allowlists are deliberately strict: a name with a quote, a `$` or a newline is rejected long
//! before quoting would have to save us (quoting is still done, see `shell`).

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Why a name or key was refused. The message never echoes a key back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "host name {0:?} is not allowed: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    /// A host or router name outside `[a-z0-9][a-z0-9-]{0,62}`.
    Host(String),
    /// An interface name the kernel would refuse (or `.`/`..`).
    #[error("interface name {0:?} is not allowed: use 1-15 characters of a-z, A-Z, 0-9 and _=+.-")]
    Interface(String),
    /// Not 44 characters of base64 encoding 32 bytes; the value is not echoed (it may be a private key).
    #[error("not a valid WireGuard public key: expected 44 characters of base64 encoding 32 bytes")]
    Key,
}

/// The name of a host in the inventory (`vps`, `nas`, `laptop`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    /// Parses a host name against the allowlist `[a-z0-9][a-z0-9-]{0,62}`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Host(s.to_owned()))
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<HostName> for String {
    fn from(n: HostName) -> String {
        n.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A network interface name, as the kernel accepts it (`[a-zA-Z0-9_=+.-]{1,15}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Parses an interface name against the kernel's rules: 1-15 characters of `[a-zA-Z0-9_=+.-]`, not `.` or `..`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Interface(s.to_owned()))
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<InterfaceName> for String {
    fn from(n: InterfaceName) -> String {
        n.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WireGuard *public* key (base64 of 32 bytes). There is deliberately no type for a private
/// key anywhere in meshctl's plan or state: what cannot be represented cannot leak.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WgKey(String);

impl WgKey {
    /// Parses a public key (surrounding whitespace trimmed): 44 characters of base64 that decode to 32 bytes.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.trim();
        if s.len() != 44 {
            return Err(NameError::Key);
        }
        match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(bytes) if bytes.len() == 32 => Ok(Self(s.to_owned())),
            _ => Err(NameError::Key),
        }
    }

    /// The key in base64, as `wg` prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shortened form shown to humans (`AbCdEfGh…`).
    pub fn short(&self) -> String {
        format!("{}…", &self.0[..8])
    }
}

impl TryFrom<String> for WgKey {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<WgKey> for String {
    fn from(k: WgKey) -> String {
        k.0
    }
}

impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgKey({})", self.short())
    }
}

impl fmt::Display for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_the_allowlist() {
        assert!(HostName::parse("vps").is_ok());
        assert!(HostName::parse("nas-2").is_ok());
        for bad in ["", "-x", "Vps", "a b", "a;reboot", "$(id)", "a\nb", "vрs"] {
            assert!(HostName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(InterfaceName::parse("wg0").is_ok());
        assert!(InterfaceName::parse("br-lan.10").is_ok());
        for bad in [
            "",
            "sixteen-chars-xx",
            "wg 0",
            "wg0;ls",
            "`x`",
            "..",
            "wg/0",
        ] {
            assert!(InterfaceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keys_are_base64_of_32_bytes_and_never_echoed() {
        let k = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        assert_eq!(WgKey::parse(k).unwrap().as_str(), k);
        let err = WgKey::parse("not-a-key-but-a-secret-value-of-44-chars-xx=").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert_eq!(
            format!("{:?}", WgKey::parse(k).unwrap()),
            "WgKey(xTIBA5rb…)"
        );
    }
}
