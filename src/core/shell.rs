//! Quoting values for the remote POSIX shell.
//!
//! Every value meshctl puts into a remote command line (an interface name, an address, a path, a
//! file's content) goes through [`quote`], so that the remote `sh` reads it back as exactly one
//! word with exactly the same bytes, and never runs anything from it. Inventory validation
//! already rejects hostile names, but quoting does not rely on it: a quoting bug must not be
//! hidden by a validation rule (`tests/shell_quote.rs` checks the round trip through a real `sh`
//! for arbitrary strings).

/// Quotes `s` as a single word for a POSIX shell (`sh`, `dash`, `bash`, `zsh`, `ksh`).
///
/// Words made only of characters that no POSIX shell treats specially (ASCII letters and
/// digits and `_ - . / : , + @`) are returned as they are, so generated scripts stay readable
/// (`ip link show wg0`). Everything else is wrapped in single quotes, inside which a shell
/// expands nothing; a `'` in the value becomes `'\''` (close the quote, an escaped quote, open
/// again). The empty string becomes `''`, so it still counts as a word.
///
/// `=` is deliberately not in the plain set: `a=b` in command position is an assignment, not a
/// word. A leading `-` is left alone: quoting cannot stop a program from reading a word as an
/// option; callers put `--` where that matters.
///
/// A NUL byte has no representation in a shell word (argv and shells stop at or drop it);
/// validation rejects such values long before they get here. Whatever a NUL does to the
/// resulting line, it cannot end the quoting early, so it cannot make anything run.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(is_plain) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes every word with [`quote`] and joins them with single spaces: a command line whose
/// words the remote shell splits back into exactly `args`.
pub fn quote_all<I>(args: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut out = String::new();
    for (i, a) in args.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quote(a.as_ref()));
    }
    out
}

/// Bytes that are literal in every POSIX shell in every position of a word.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':' | b',' | b'+' | b'@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(quote("wg0"), "wg0");
        assert_eq!(quote("10.8.0.0/24"), "10.8.0.0/24");
        assert_eq!(quote("2001:db8::1/128"), "2001:db8::1/128");
        assert_eq!(quote("/etc/wireguard/wg0.conf"), "/etc/wireguard/wg0.conf");
        assert_eq!(quote("-n"), "-n");
    }

    #[test]
    fn empty_string_is_still_a_word() {
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn single_quote_is_closed_escaped_and_reopened() {
        assert_eq!(quote("it's"), r#"'it'\''s'"#);
        assert_eq!(quote("'"), r#"''\'''"#);
        assert_eq!(quote("''"), r#"''\'''\'''"#);
    }

    #[test]
    fn special_characters_are_single_quoted() {
        assert_eq!(quote("; reboot"), "'; reboot'");
        assert_eq!(quote("$(touch /tmp/x)"), "'$(touch /tmp/x)'");
        assert_eq!(quote("`id`"), "'`id`'");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("a\nb"), "'a\nb'");
        assert_eq!(quote("*"), "'*'");
        assert_eq!(quote("~"), "'~'");
        assert_eq!(quote("a=b"), "'a=b'");
        assert_eq!(quote("back\\slash"), "'back\\slash'");
        assert_eq!(quote("\"dq\""), "'\"dq\"'");
        assert_eq!(quote("wg０"), "'wg０'");
    }

    #[test]
    fn quote_all_joins_quoted_words() {
        assert_eq!(
            quote_all(["ip", "link", "show", "wg 0"]),
            "ip link show 'wg 0'"
        );
        assert_eq!(
            quote_all(vec![String::from("a'b"), String::new()]),
            r#"'a'\''b' ''"#
        );
        assert_eq!(quote_all(Vec::<&str>::new()), "");
    }
}
