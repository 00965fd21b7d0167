//! Inventory errors that point at the spot: `file:line:column: what is wrong` plus what to do.
//! A YAML syntax or type error stops at the first; semantic errors are all collected.

use std::fmt;

use serde_saphyr::Location;

/// One problem in an inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// All problems found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "\n{n} error{} in the inventory; nothing was changed on any host",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Collector {
    file: String,
    pub found: Vec<Diagnostic>,
}

impl Collector {
    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            found: Vec::new(),
        }
    }

    pub fn error(&mut self, at: Location, message: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line: at.line(),
            column: at.column(),
            message: message.into(),
            help: (!help.is_empty()).then_some(help),
        });
    }

    pub fn finish(mut self) -> Result<(), Diagnostics> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found
            .sort_by(|a, b| (a.line, a.column).cmp(&(b.line, b.column)));
        self.found.dedup();
        Err(Diagnostics(self.found))
    }
}

/// The closest candidate to a misspelt name, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(wrong, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("adress", ["address", "role"]), Some("address"));
        assert_eq!(did_you_mean("listenport", ["listen_port", "mtu"]), Some("listen_port"));
        assert_eq!(did_you_mean("zzz", ["address", "role"]), None);
    }
}
