//! Inventory errors that point at the spot: `file:line:column: what is wrong` plus what to do.
//! A YAML syntax or type error stops at the first; semantic errors are all collected.

use std::fmt;

use serde_saphyr::Location;

/// One problem in an inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The inventory file, as given on the command line.
    pub file: String,
    /// 1-based line of the offending spot.
    pub line: u64,
    /// 1-based column of the offending spot.
    pub column: u64,
    /// What is wrong, naming the key or host it is about.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
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
    /// The problems so far, in the order found (sorted by `finish`).
    pub found: Vec<Diagnostic>,
}

impl Collector {
    /// A collector for `file`, the name every diagnostic will carry.
    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            found: Vec::new(),
        }
    }

    /// Records a problem at `at`; an empty `help` means none is shown.
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

    /// `Ok` when nothing was found; otherwise every problem, in file order, without duplicates.
    pub fn finish(mut self) -> Result<(), Diagnostics> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found.sort_by_key(|d| (d.line, d.column));
        self.found.dedup();
        Err(Diagnostics(self.found))
    }
}

/// The inventory's text, for reading what a YAML error points at: the path of keys that leads
/// to a spot and the value written there. It only reads block-style YAML reliably; everything
/// it returns is optional, and the messages fall back to less context when it finds nothing.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    text: &'a str,
}

/// A `key:` found on a line: its text and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAt {
    /// The key's text, without the colon.
    pub key: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column of the key's first character.
    pub column: u64,
}

impl<'a> Source<'a> {
    /// Wraps the inventory's text.
    pub fn new(text: &'a str) -> Self {
        Self { text }
    }

    fn line(&self, line: u64) -> Option<&'a str> {
        let i = usize::try_from(line.checked_sub(1)?).ok()?;
        self.text.lines().nth(i)
    }

    /// Indentation (in characters) and key of a block-mapping line such as `  nat: true`.
    /// Keys are only recognised when they are plain words, so nothing odd is ever echoed.
    fn key_of(line: &str) -> Option<(usize, &str)> {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        let (key, rest) = body.split_once(':')?;
        let plain = !key.is_empty()
            && key.len() <= 63
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        (plain && (rest.is_empty() || rest.starts_with([' ', '\t']))).then_some((indent, key))
    }

    /// The keys leading to the spot at `line`:`column`, outermost first, each with its
    /// position. When the spot is the value of a `key:` on its own line, that key is the last
    /// element; when the spot is a key itself, the path ends with its parent. `None` when the
    /// layout is not plain block style.
    pub fn path_at(&self, line: u64, column: u64) -> Option<Vec<KeyAt>> {
        let here = self.line(line)?;
        let mut path = Vec::new();
        let indent_here = here.len() - here.trim_start_matches(' ').len();
        // Keys strictly less indented than `limit` are ancestors; a `- item` line may also sit
        // at its parent key's indentation (`in_list`).
        let (mut limit, mut in_list) = match Self::key_of(here) {
            Some((indent, key)) => {
                if column > (indent + 1) as u64 {
                    // Inside a flow mapping on this line (`lan: {subnet: x, address: y}`):
                    // the key just before the spot. (`path` is built innermost first.)
                    if let Some((k, col)) = Self::flow_key_before(here, column) {
                        path.push(KeyAt {
                            key: k.to_owned(),
                            line,
                            column: col,
                        });
                    }
                    path.push(KeyAt {
                        key: key.to_owned(),
                        line,
                        column: (indent + 1) as u64,
                    });
                }
                (indent, false)
            }
            None => (indent_here, here.trim_start().starts_with('-')),
        };
        let mut n = line;
        while limit > 0 || in_list {
            n = n.checked_sub(1).filter(|n| *n > 0)?;
            let l = self.line(n)?;
            let t = l.trim_start_matches(' ');
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let indent = l.len() - t.len();
            let is_item = t.starts_with('-');
            if indent > limit || (indent == limit && (is_item || !in_list)) {
                // Deeper, a sibling key, or a sibling list item.
                continue;
            }
            let (indent, key) = Self::key_of(l)?;
            path.push(KeyAt {
                key: key.to_owned(),
                line: n,
                column: (indent + 1) as u64,
            });
            limit = indent;
            in_list = false;
        }
        path.reverse();
        Some(path)
    }

    /// In a flow mapping, the plain key right before `column` (`{name: x, mtu: big}` at
    /// `big` gives `mtu`), with its column.
    fn flow_key_before(line: &str, column: u64) -> Option<(&str, u64)> {
        let before: String = line
            .chars()
            .take(usize::try_from(column.saturating_sub(1)).ok()?)
            .collect();
        if !before.contains('{') {
            return None;
        }
        // `before` is a prefix of `line`, so its byte offsets are `line`'s.
        let head = before.trim_end().strip_suffix(':')?.len();
        let start = before[..head].rfind(['{', ',', ' ']).map_or(0, |i| i + 1);
        let key = &line[start..head];
        let plain = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        plain.then(|| (key, line[..start].chars().count() as u64 + 1))
    }

    /// Where `key` was first given in the same mapping as the key at `line`:`column`.
    pub fn earlier_key(&self, key: &str, line: u64, column: u64) -> Option<u64> {
        let indent = usize::try_from(column.checked_sub(1)?).ok()?;
        let mut n = line;
        loop {
            n = n.checked_sub(1).filter(|n| *n > 0)?;
            let l = self.line(n)?;
            let t = l.trim_start_matches(' ');
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let i = l.len() - t.len();
            if i < indent {
                return None;
            }
            if i == indent && Self::key_of(l).is_some_and(|(_, k)| k == key) {
                return Some(n);
            }
        }
    }

    /// What is written at `line`:`column`, for a "found ..." message.
    pub fn found_at(&self, line: u64, column: u64) -> Found {
        let Some(l) = self.line(line) else {
            return Found::Nothing;
        };
        let before: String = l.chars().take(column.saturating_sub(1) as usize).collect();
        let rest: String = l.chars().skip(column.saturating_sub(1) as usize).collect();
        let rest = rest.trim_end();
        if rest.starts_with('[') || rest == "-" || rest.starts_with("- ") {
            return Found::List;
        }
        if rest.starts_with('{') || Self::key_of(rest).is_some() {
            return Found::Mapping;
        }
        let in_flow = before.contains(['[', '{']);
        let value = if let Some(q) = rest.strip_prefix('"') {
            q.split('"').next().unwrap_or_default()
        } else if let Some(q) = rest.strip_prefix('\'') {
            q.split('\'').next().unwrap_or_default()
        } else {
            let v = rest.split(" #").next().unwrap_or_default();
            let v = if in_flow {
                v.split([',', ']', '}']).next().unwrap_or_default()
            } else {
                v
            };
            v.trim()
        };
        match value {
            "" | "~" | "null" | "Null" | "NULL" => Found::Nothing,
            v => Found::Scalar(v.to_owned()),
        }
    }
}

/// What a YAML error found where it expected something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A plain value, shown quoted in the message.
    Scalar(String),
    /// A list (block or flow).
    List,
    /// A mapping (block or flow).
    Mapping,
    /// An empty value or `null`.
    Nothing,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Scalar(s) => write!(f, "`{}`", shown(s)),
            Found::List => f.write_str("a list"),
            Found::Mapping => f.write_str("a mapping"),
            Found::Nothing => f.write_str("nothing"),
        }
    }
}

/// A value from the inventory as it may appear in a message: control and invisible characters
/// escaped (so a newline cannot forge a line of output), quotes and backslashes escaped (so
/// the value's end is unambiguous) and cut to a readable length.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(40) {
        // Control, format and other invisible characters (a bidi override, a zero-width
        // space) are escaped; letters of other scripts stay as they are.
        if c.is_control() || (!c.is_ascii() && !c.is_alphanumeric()) {
            out.extend(c.escape_debug());
        } else {
            if matches!(c, '"' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// Like [`shown`] for longer texts (a parser's message): control characters escaped only.
pub fn shown_long(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || (!c.is_ascii() && !c.is_alphanumeric()) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Names the first character of `s` that is not ASCII, for look-alike letters (a Cyrillic
/// `о` looks exactly like a Latin `o`).
pub fn non_ascii_hint(s: &str) -> Option<String> {
    s.chars().find(|c| !c.is_ascii()).map(|c| {
        let what = if c.is_alphanumeric() {
            "which only looks like an ASCII letter or digit"
        } else {
            "an invisible or non-ASCII character"
        };
        format!("it contains {:?} (U+{:04X}), {what}", c, u32::from(c))
    })
}

/// The closest candidate to a misspelt name, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
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
        assert_eq!(
            did_you_mean("listenport", ["listen_port", "mtu"]),
            Some("listen_port")
        );
        assert_eq!(did_you_mean("zzz", ["address", "role"]), None);
    }
}
