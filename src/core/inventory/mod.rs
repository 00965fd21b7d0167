//! The inventory: one YAML file describing the network and its hosts.
//!
//! `load` reads it with strict typing (`no`/`on` are not booleans, numbers are not strings,
//! duplicate keys and unknown fields are errors) and validates it into an [`Inventory`].

pub mod diagnostic;
pub mod model;
pub mod raw;
pub mod validate;

use std::path::Path;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::*;

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read (missing, no permission, a directory).
    #[error("cannot read inventory {path}: {source}")]
    Read {
        /// The inventory path, as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML or fails validation: every problem found, with its location.
    /// Transparent: the diagnostics are the whole message, not a cause to print under it.
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
}

/// Parses and validates inventory bytes; a file that is not UTF-8 is an error at the first
/// bad byte.
pub fn parse_bytes(bytes: &[u8], file: &str, path: &Path) -> Result<Inventory, Diagnostics> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, file, path),
        Err(e) => {
            let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let line = good.matches('\n').count() as u64 + 1;
            let column = good.rsplit('\n').next().unwrap_or_default().chars().count() as u64 + 1;
            Err(Diagnostics(vec![Diagnostic {
                file: file.to_owned(),
                line,
                column,
                message: "the inventory is not valid UTF-8 text".into(),
                help: Some("save the file as UTF-8 (meshctl reads YAML text only)".into()),
            }]))
        }
    }
}

/// Parses and validates inventory text; `file` names it in messages.
pub fn parse(text: &str, file: &str, path: &Path) -> Result<Inventory, Diagnostics> {
    let raw: raw::RawInventory = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| Diagnostics(vec![yaml_error(&e, file, text)]))?;
    validate::validate(raw, file, path.to_path_buf())
}

/// Strict YAML: YAML 1.1 booleans (`no`, `on`) and numbers are not silently converted, and a
/// key given twice is an error rather than "the last one wins".
pub fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.no_schema = true;
    o.with_snippet = false;
    o.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    o
}

/// What a field of the inventory holds, for "expected ..." messages; `path` is the field's
/// keys from the top (`["hosts", "vps", "nat"]`).
fn expected_for(path: &[&str]) -> Option<&'static str> {
    let Some(&last) = path.last() else {
        return Some("a mapping with `network` and `hosts` (see inventory/example.yaml)");
    };
    Some(match (path[0], path.len(), last) {
        (_, 1, "network") => "a mapping with `name`, `ipv4` and the other network settings",
        (_, 1, "hosts") => "a mapping from host names to hosts",
        (_, 1, "routers") => "a mapping from router names to routers",
        (_, 1, "lab") => "a mapping of lab addresses",
        ("network", 2, "ipv6") => "a mapping with `prefix`, `clients` and `mode`",
        ("hosts", 2, _) => "a mapping with the host's `role`, `address` and other settings",
        ("routers", 2, _) => "a mapping with the router's `lan`, `address` and `gateway`",
        ("hosts", 3, "lan") => "a mapping with `subnet`, `interface` and `address`",
        ("routers", 3, "lan") => "an IPv4 network such as 192.168.178.0/24",
        (_, _, "name" | "ssh" | "endpoint" | "interface" | "wan_interface" | "gateway") => {
            "a string"
        }
        (_, _, "public_key") => "a WireGuard public key (a string)",
        (_, _, "address" | "hub_public4") => "an IPv4 address such as 10.8.0.2",
        (_, _, "ipv6_address") => "an IPv6 address such as 2001:db8::2",
        (_, _, "ipv4" | "subnet" | "internet4") => "an IPv4 network such as 10.8.0.0/24",
        (_, _, "prefix" | "clients" | "ipv6_prefix" | "internet6" | "hub_public6") => {
            "an IPv6 network such as 2001:db8::/64"
        }
        (_, _, "listen_port") => "a UDP port number (1-65535)",
        (_, _, "mtu") => "a number (1280-9000)",
        (_, _, "keepalive") => "a number of seconds (0-65535)",
        (_, _, "nat" | "wan_accepts_ra" | "public_ipv6") => "a boolean (true/false)",
        (_, _, "dns") => "a list of IP addresses such as [10.8.0.1]",
        (_, _, "role") => "one of hub, gateway, client",
        (_, _, "mode") => "one of on-link, routed",
        (_, _, "tunnel") => "one of split, full",
        _ => return None,
    })
}

/// How a message names the place a path leads to: "host `vps`", "`nat` of host `vps`",
/// "`network.ipv6`".
fn describe(path: &[&str]) -> String {
    match path {
        [] => "the inventory".into(),
        ["hosts", h] => format!("host `{h}`"),
        ["hosts", h, rest @ ..] => format!("`{}` of host `{h}`", rest.join(".")),
        ["routers", r] => format!("router `{r}`"),
        ["routers", r, rest @ ..] => format!("`{}` of router `{r}`", rest.join(".")),
        p => format!("`{}`", p.join(".")),
    }
}

/// Where a phrase like "in host `vps`" places an unknown or duplicate key.
fn inside(path: &[&str]) -> String {
    match path {
        [] => "at the top level".into(),
        p => format!("in {}", describe(p)),
    }
}

/// Turns a YAML parse or type error into a diagnostic at its location: what is wrong, in the
/// inventory's terms (the field and the host it belongs to), and what to do. `text` is the
/// inventory, read to name the field and the value an error points at.
pub fn yaml_error(e: &serde_saphyr::Error, file: &str, text: &str) -> Diagnostic {
    use serde_saphyr::Error as E;
    let mut e = e.without_snippet();
    // An error in an aliased value is reported where the alias is used.
    let mut used_at = None;
    while let E::AliasError {
        error, locations, ..
    } = e
    {
        used_at = used_at.or(Some(locations.reference_location));
        e = error.without_snippet();
    }
    let (mut line, mut column) = used_at
        .filter(|l| l.line() > 0)
        .or(e.location())
        .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    let src = diagnostic::Source::new(text);
    let keys = src.path_at(line, column);
    let path: Vec<&str> = keys
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|k| k.key.as_str())
        .collect();
    let found = src.found_at(line, column);
    // A value is only echoed when it cannot be a key (public or, pasted by mistake, private).
    let secret = path.last().is_some_and(|k| k.contains("key"));
    let found_text = if secret {
        "something else".to_owned()
    } else {
        found.to_string()
    };
    let expected = if matches!(e, E::Message { .. } | E::InvalidScalar { .. })
        && path.last() == Some(&"dns")
    {
        Some("an IP address such as 10.8.0.1")
    } else {
        expected_for(&path)
    };
    let type_error = |what: &str| -> (String, String) {
        let exp = expected.unwrap_or(what);
        let help = if exp.contains("boolean") {
            "write `true` or `false` (YAML 1.1 words such as yes, no, on, off are not booleans here)"
                .to_owned()
        } else if matches!(found, diagnostic::Found::List | diagnostic::Found::Mapping) {
            format!("write {exp} here, not {found}")
        } else {
            format!("write {exp}")
        };
        (
            format!("{}: expected {exp}, found {found_text}", describe(&path)),
            help,
        )
    };
    let (message, help) = match e {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let help = match diagnostic::did_you_mean(field, expected.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", expected.join(", ")),
            };
            (
                format!(
                    "unknown field `{}` {}",
                    diagnostic::shown(field),
                    inside(&path)
                ),
                help,
            )
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let help = match diagnostic::did_you_mean(variant, expected.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? (one of {})", expected.join(", ")),
                None => format!("use one of: {}", expected.join(", ")),
            };
            (
                format!(
                    "{}: unknown value `{}`",
                    describe(&path),
                    diagnostic::shown(variant)
                ),
                help,
            )
        }
        E::SerdeMissingField { field, .. } => {
            // Point at the mapping that lacks the field, not at wherever the parser stopped.
            match keys.as_deref().and_then(|k| k.last()) {
                Some(parent) => (line, column) = (parent.line, parent.column),
                None => (line, column) = (1, 1),
            }
            (
                format!("{} has no `{field}`", describe(&path)),
                format!(
                    "add `{field}:` to {} (see inventory/example.yaml)",
                    describe(&path)
                ),
            )
        }
        E::DuplicateMappingKey { key, .. } => {
            let key = key.as_deref().unwrap_or("?");
            let first = src
                .earlier_key(key, line, column)
                .map_or(String::new(), |l| format!(" (first given at line {l})"));
            (
                format!(
                    "duplicate key `{}` {}{first}",
                    diagnostic::shown(key),
                    inside(&path)
                ),
                "keep only one of them: YAML would otherwise silently use just one".to_owned(),
            )
        }
        E::InvalidBooleanStrict { .. } => type_error("a boolean (true/false)"),
        E::QuotingRequired { value, .. } => {
            let kind = if value == "true" || value == "false" {
                "a boolean"
            } else {
                "a number"
            };
            let exp = expected.unwrap_or("a string");
            if exp == "a string" {
                (
                    format!(
                        "{}: expected a string, found {kind} ({found_text})",
                        describe(&path)
                    ),
                    if secret {
                        "put the value in quotes".to_owned()
                    } else {
                        format!("put it in quotes: \"{}\"", diagnostic::shown(value))
                    },
                )
            } else {
                type_error(exp)
            }
        }
        E::Message { msg, .. } if expected.is_none() => (
            format!(
                "{}: {}, found {found_text}",
                describe(&path),
                diagnostic::shown_long(msg)
            ),
            "fix the value (see inventory/example.yaml)".to_owned(),
        ),
        E::InvalidScalar { ty, .. } => type_error(match *ty {
            "bool" => "a boolean (true/false)",
            t if t.starts_with(['u', 'i']) => "a whole number",
            t if t.starts_with('f') => "a number",
            _ => "another kind of value",
        }),
        E::SerdeInvalidType { expected: exp, .. } | E::SerdeInvalidValue { expected: exp, .. } => {
            type_error(if exp.starts_with("struct ") || exp.starts_with("a map") {
                "a mapping"
            } else if exp.starts_with("a sequence") {
                "a list"
            } else if exp.starts_with("a string") {
                "a string"
            } else {
                "another kind of value"
            })
        }
        E::Unexpected { expected: exp, .. } => type_error(match *exp {
            "mapping start" => "a mapping",
            "sequence start" => "a list",
            "string scalar" => "a single value",
            _ => "another kind of value",
        }),
        E::Message { .. } | E::NullIntoString { .. } => type_error("a value"),
        E::Eof { .. }
            if text.lines().all(|l| {
                let t = l.trim();
                t.is_empty() || t.starts_with('#') || t == "---"
            }) =>
        {
            (
                "the inventory is empty".to_owned(),
                "describe the network and its hosts (start from inventory/example.yaml)".to_owned(),
            )
        }
        E::Eof { .. } => (
            "the inventory ends in the middle of a value".to_owned(),
            "the file looks cut off: complete it or restore it".to_owned(),
        ),
        E::MultipleDocuments { .. } => (
            "a second YAML document (`---`) in the inventory".to_owned(),
            "keep one inventory per file".to_owned(),
        ),
        E::UnknownAnchor { .. } => (
            "an alias (`*name`) refers to an anchor (`&name`) that is not defined before it"
                .to_owned(),
            "define the anchor first or write the value out".to_owned(),
        ),
        E::Budget { .. } => (
            "the inventory is too large or too deeply nested".to_owned(),
            "an inventory is a few dozen lines; check for runaway aliases or nesting".to_owned(),
        ),
        other => {
            let msg = serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::UserMessageFormatter,
                other,
            );
            (
                format!("YAML syntax error: {}", diagnostic::shown_long(&msg)),
                "fix the YAML here: indent with spaces, and quote values that contain `: `, `#` or start with a special character".to_owned(),
            )
        }
    };
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message,
        help: Some(help),
    }
}
