//! How the binary prints an error: its message, then each cause that says something new.
//!
//! Errors nest in two ways that would otherwise print the same text twice: a wrapper that only
//! forwards its inner error (`#[error(transparent)]`, or `#[error("{0}")]` with `#[from]`), and
//! an error whose message already quotes its source (`cannot read X: No such file`) because it
//! is also shown on its own, e.g. as one host's failure in a plan. A cause whose text is already
//! part of a line above is left out; a cause that differs (the I/O error under an `anyhow`
//! context) is printed, so the chain stays complete. Pure: it returns lines, `main` prints them.

use std::error::Error;

/// The lines that describe `err`: its own message first, then the causes that add something,
/// outermost first.
pub fn chain(err: &(dyn Error + 'static)) -> Vec<String> {
    let mut lines = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !lines.iter().any(|l| l.contains(&text)) {
            lines.push(text);
        }
        cause = c.source();
    }
    lines
}

/// The whole report as the binary prints it: `error: MESSAGE`, then `  caused by: CAUSE` lines.
pub fn render(err: &(dyn Error + 'static)) -> String {
    let mut out = String::new();
    for (i, line) in chain(err).iter().enumerate() {
        out.push_str(if i == 0 { "error: " } else { "  caused by: " });
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional source, to build chains.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn e(msg: &'static str, source: Option<E>) -> E {
        E(msg, source.map(Box::new))
    }

    #[test]
    fn a_wrapper_with_its_causes_text_prints_it_once() {
        let err = e("a.yaml:1:1: bad", Some(e("a.yaml:1:1: bad", None)));
        assert_eq!(chain(&err), ["a.yaml:1:1: bad"]);
    }

    #[test]
    fn a_message_quoting_its_source_does_not_repeat_it() {
        let err = e("cannot read x: No such file", Some(e("No such file", None)));
        assert_eq!(render(&err), "error: cannot read x: No such file\n");
    }

    #[test]
    fn causes_that_differ_are_all_printed_outermost_first() {
        let err = e(
            "creating phone.conf",
            Some(e("opening", Some(e("File exists", None)))),
        );
        assert_eq!(
            render(&err),
            "error: creating phone.conf\n  caused by: opening\n  caused by: File exists\n"
        );
    }
}
