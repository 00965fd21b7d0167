//! Splits the gather script's output into records.
//!
//! The script prints a header line, then one record per command, then a trailer:
//!
//! ```text
//! @@meshctl facts 1@@
//! @@meshctl begin ID@@
//! ...the command's stdout, verbatim...
//! @@meshctl end ID rc=STATUS@@
//! @@meshctl done@@
//! ```
//!
//! Markers are recognised only at the start of a line, except that an end marker may follow the
//! last line of a command's output when that output did not end in a newline. No command whose
//! output is copied verbatim can print a line starting with `@@meshctl`, so a record cannot be
//! forged or cut short by its content. Free-form content (the managed files) travels only in a
//! [`FRAMED`] record: every line of it is prefixed, the record ends only at an end marker at
//! the start of a line, and its lines are kept byte for byte (a `\r` included).
//! A record without its end marker, or output without the trailer, is truncated output: an
//! error, never a partial state that would read as "missing, so add it".

use std::collections::BTreeMap;

use super::FactError;

pub(crate) const HEADER: &str = "@@meshctl facts 1@@";
pub(crate) const DONE: &str = "@@meshctl done@@";
const BEGIN: &str = "@@meshctl begin ";
const END: &str = "@@meshctl end ";
/// The record whose body is framed content (see the module docs and `files::parse_contents`).
pub(crate) const FRAMED: &str = "content";

/// One command's output and exit status.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub id: &'a str,
    /// 1-based line number of the begin marker in the whole output.
    pub line: usize,
    /// Body lines with their 1-based line numbers in the whole output.
    pub body: Vec<(usize, &'a str)>,
    pub rc: i32,
}

impl Record<'_> {
    /// The body lines that are not blank.
    pub fn lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.body
            .iter()
            .copied()
            .filter(|(_, l)| !l.trim().is_empty())
    }

    /// The body joined back into one string (for JSON).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (_, l) in &self.body {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// The first non-blank line, trimmed.
    pub fn first_line(&self) -> Option<&str> {
        self.lines().next().map(|(_, l)| l.trim())
    }
}

/// All records of one output, by id.
#[derive(Debug)]
pub(crate) struct Records<'a> {
    map: BTreeMap<&'a str, Record<'a>>,
}

impl<'a> Records<'a> {
    pub fn get(&self, id: &str) -> Option<&Record<'a>> {
        self.map.get(id)
    }
}

/// Splits `output` into records; fails on a missing header, a record without its end marker, or
/// a missing trailer. Lines outside records (a login banner, say) are ignored.
pub(crate) fn split(output: &str) -> Result<Records<'_>, FactError> {
    let mut map = BTreeMap::new();
    let mut header = false;
    let mut current: Option<Record<'_>> = None;
    let mut last_line = 0;
    let body = output.strip_suffix('\n').unwrap_or(output);
    for (i, raw) in body.split('\n').enumerate() {
        let n = i + 1;
        last_line = n;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rec) = current.as_mut() {
            let framed = rec.id == FRAMED;
            // Where an end marker starts in this line, if it holds one: anywhere after the
            // last output line, but only at the start of a line in a framed record.
            let end_at = if framed {
                line.starts_with(END).then_some(0)
            } else if line.ends_with("@@") {
                line.rfind(END)
            } else {
                None
            };
            if let Some(at) = end_at {
                let before = &line[..at];
                if !before.is_empty() {
                    rec.body.push((n, before));
                }
                let tail = line[at + END.len()..].strip_suffix("@@").unwrap_or("");
                let Some((id, rc)) = tail.rsplit_once(" rc=") else {
                    return Err(malformed(rec.id, n, "end marker without an exit status"));
                };
                if id != rec.id {
                    return Err(FactError::Truncated {
                        section: rec.id.to_owned(),
                        line: n,
                    });
                }
                rec.rc = rc
                    .parse()
                    .map_err(|_| malformed(rec.id, n, "end marker with a bad exit status"))?;
                let rec = current.take().expect("checked above");
                if map.insert(rec.id, rec).is_some() {
                    return Err(malformed(id, n, "the section appears twice"));
                }
            } else if line.starts_with(BEGIN) || line == DONE || line == HEADER {
                return Err(FactError::Truncated {
                    section: rec.id.to_owned(),
                    line: n,
                });
            } else {
                // Framed content keeps its bytes (a file's `\r` included).
                rec.body.push((n, if framed { raw } else { line }));
            }
        } else if line == HEADER {
            header = true;
        } else if line == DONE {
            if !header {
                return Err(FactError::NoHeader);
            }
            return Ok(Records { map });
        } else if let Some(id) = line.strip_prefix(BEGIN).and_then(|r| r.strip_suffix("@@")) {
            if !header {
                return Err(FactError::NoHeader);
            }
            current = Some(Record {
                id,
                line: n,
                body: Vec::new(),
                rc: 0,
            });
        }
    }
    match current {
        Some(rec) => Err(FactError::Truncated {
            section: rec.id.to_owned(),
            line: last_line,
        }),
        None if !header => Err(FactError::NoHeader),
        None => Err(FactError::Truncated {
            section: "end of output".to_owned(),
            line: last_line,
        }),
    }
}

pub(crate) fn malformed(section: &str, line: usize, reason: impl Into<String>) -> FactError {
    FactError::Malformed {
        section: section.to_owned(),
        line,
        reason: reason.into(),
    }
}

/// A short, single-line excerpt of a line for an error message. Only used for sections whose
/// output cannot hold a secret (never for managed files).
pub(crate) fn excerpt(line: &str) -> String {
    let t: String = line.trim().chars().take(60).collect();
    if line.trim().chars().count() > 60 {
        format!("{t:?}…")
    } else {
        format!("{t:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_records_including_an_end_marker_after_unterminated_output() {
        let out = "banner\n@@meshctl facts 1@@\n@@meshctl begin a@@\nx\ny@@meshctl end a rc=0@@\n\
                   @@meshctl begin b@@\n@@meshctl end b rc=3@@\n@@meshctl done@@\n";
        let r = split(out).unwrap();
        let a = r.get("a").unwrap();
        assert_eq!(a.body, vec![(4, "x"), (5, "y")]);
        assert_eq!(a.rc, 0);
        assert_eq!(r.get("b").unwrap().rc, 3);
        assert!(r.get("b").unwrap().body.is_empty());
    }

    #[test]
    fn truncation_and_missing_header_are_errors() {
        let cut = "@@meshctl facts 1@@\n@@meshctl begin a@@\nx\n";
        assert!(
            matches!(split(cut), Err(FactError::Truncated { ref section, .. }) if section == "a")
        );
        let no_done = "@@meshctl facts 1@@\n@@meshctl begin a@@\n@@meshctl end a rc=0@@\n";
        assert!(matches!(split(no_done), Err(FactError::Truncated { .. })));
        let nested = "@@meshctl facts 1@@\n@@meshctl begin a@@\n@@meshctl begin b@@\n";
        assert!(
            matches!(split(nested), Err(FactError::Truncated { ref section, .. }) if section == "a")
        );
        assert_eq!(
            split("sudo: a password is required\n").unwrap_err(),
            FactError::NoHeader
        );
        assert_eq!(split("").unwrap_err(), FactError::NoHeader);
        let bad_rc = "@@meshctl facts 1@@\n@@meshctl begin a@@\n@@meshctl end a rc=x@@\n";
        assert!(matches!(split(bad_rc), Err(FactError::Malformed { .. })));
        let dup = "@@meshctl facts 1@@\n@@meshctl begin a@@\n@@meshctl end a rc=0@@\n\
                   @@meshctl begin a@@\n@@meshctl end a rc=0@@\n@@meshctl done@@\n";
        assert!(matches!(split(dup), Err(FactError::Malformed { .. })));
    }
}
