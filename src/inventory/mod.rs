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
    #[error("cannot read inventory {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
}

/// Reads and validates the inventory at `path`.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse(&text, &path.display().to_string(), path)?)
}

/// Parses and validates inventory text; `file` names it in messages.
pub fn parse(text: &str, file: &str, path: &Path) -> Result<Inventory, Diagnostics> {
    let raw: raw::RawInventory =
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
            Diagnostics(vec![yaml_error(&e, file)])
        })?;
    validate::validate(raw, file, path.to_path_buf())
}

/// Strict YAML: YAML 1.1 booleans (`no`, `on`) and numbers are not silently converted.
pub fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.no_schema = true;
    o.with_snippet = false;
    o
}

/// Turns a YAML parse or type error into a diagnostic at its location.
pub fn yaml_error(e: &serde_saphyr::Error, file: &str) -> Diagnostic {
    let (line, column) = e
        .location()
        .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    let (message, help) = match e {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => {
            let help = match diagnostic::did_you_mean(field, expected.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", expected.join(", ")),
            };
            (format!("unknown field `{field}`"), Some(help))
        }
        other => {
            let msg = other.without_snippet().to_string();
            // The message may carry its own location suffix; keep the first line only.
            let msg = msg.lines().next().unwrap_or_default().to_owned();
            (msg, Some("fix the value's type or syntax (see inventory/example.yaml)".to_owned()))
        }
    };
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message,
        help,
    }
}
