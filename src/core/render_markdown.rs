//! The plan as GitHub-flavoured Markdown, for a CI job summary (`$GITHUB_STEP_SUMMARY`) or a
//! pull-request comment: a heading that says "no drift" or "drift on N hosts", a table of hosts
//! with their counts, each drifted host's changes (file diffs folded in `<details>`), the
//! manual steps and the hosts that could not be reached.
//!
//! It reads the [`Plan`] and nothing else, so it holds what the JSON holds and no more: no type
//! of the plan can carry a private or preshared key, so neither can this summary. Text that came
//! from a host (errors, file content) is escaped, so it cannot close a code block or inject HTML.

use std::fmt::Write;

use crate::plan::{Change, HostPlan, HostStatus, Plan};

/// The plan as Markdown (see the module's documentation).
pub fn markdown(plan: &Plan) -> String {
    let mut s = String::new();
    let drifted: Vec<&HostPlan> = plan
        .hosts
        .iter()
        .filter(|h| h.status == HostStatus::Planned && !h.changes.is_empty())
        .collect();
    let failed: Vec<&HostPlan> = plan.failed_hosts().collect();
    let mut heading = if drifted.is_empty() {
        "no drift".to_owned()
    } else {
        format!("drift on {}", hosts(drifted.len()))
    };
    if !failed.is_empty() {
        write!(heading, ", {} unreachable", hosts(failed.len())).ok();
    }
    writeln!(
        s,
        "## meshctl plan `{}`: {heading}\n",
        inline(&plan.network)
    )
    .ok();

    s.push_str("| Host | Role | Status | Add | Change | Remove |\n");
    s.push_str("|---|---|---|--:|--:|--:|\n");
    for h in &plan.hosts {
        let c = h.counts();
        let (status, counts) = match h.status {
            HostStatus::Failed => ("unreachable", "– | – | –".to_owned()),
            HostStatus::Planned if c.total() > 0 => {
                ("drift", format!("{} | {} | {}", c.add, c.change, c.remove))
            }
            HostStatus::Planned => ("in sync", "0 | 0 | 0".to_owned()),
        };
        writeln!(
            s,
            "| {} | {} | {status} | {counts} |",
            cell(h.host.as_str()),
            cell(&h.role)
        )
        .ok();
    }
    let total = plan.counts();
    writeln!(
        s,
        "\n**Plan:** {} to add, {} to change, {} to remove.",
        total.add, total.change, total.remove
    )
    .ok();

    for h in &drifted {
        writeln!(
            s,
            "\n### {} ({}, `{}`)\n",
            inline(h.host.as_str()),
            inline(&h.role),
            code_text(&h.target)
        )
        .ok();
        for w in &h.warnings {
            writeln!(s, "- **warning:** {}", inline(w)).ok();
        }
        for c in &h.changes {
            change(&mut s, c);
        }
        for k in &h.skipped {
            writeln!(s, "- skipped: {}", inline(k)).ok();
        }
        for n in &h.notes {
            writeln!(s, "- note: {}", inline(n)).ok();
        }
    }

    let warned: Vec<&HostPlan> = plan
        .hosts
        .iter()
        .filter(|h| {
            h.status == HostStatus::Planned && h.changes.is_empty() && !h.warnings.is_empty()
        })
        .collect();
    if !warned.is_empty() {
        s.push_str("\n### Warnings\n\n");
        for h in warned {
            for w in &h.warnings {
                writeln!(s, "- **{}**: {}", inline(h.host.as_str()), inline(w)).ok();
            }
        }
    }

    if !plan.manual_steps.is_empty() {
        s.push_str("\n### Manual steps (meshctl cannot do these)\n\n");
        for m in &plan.manual_steps {
            writeln!(s, "- **{}**: {}", inline(&m.subject), inline(&m.text)).ok();
        }
    }

    if !failed.is_empty() {
        s.push_str("\n### Unreachable hosts\n\n");
        for h in failed {
            let why = h.error.as_deref().unwrap_or("could not be gathered");
            writeln!(
                s,
                "- **{}** (`{}`): {}",
                inline(h.host.as_str()),
                code_text(&h.target),
                inline(why)
            )
            .ok();
        }
    }
    s
}

/// One change as a list item; a multi-line value or a file diff is folded in `<details>`.
fn change(s: &mut String, c: &Change) {
    fn one_line(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|t| !t.contains('\n'))
    }
    let mut line = format!("`{}` {}", c.action.symbol(), inline(&c.resource));
    match (one_line(&c.before), one_line(&c.after), &c.before, &c.after) {
        (Some(b), Some(a), _, _) => {
            write!(line, ": `{}` → `{}`", code_text(b), code_text(a)).ok();
        }
        (None, Some(a), None, _) => {
            write!(line, ": `{}`", code_text(a)).ok();
        }
        (Some(b), None, _, None) => {
            write!(line, ": `{}`", code_text(b)).ok();
        }
        _ => {}
    }
    let Some(diff) = &c.diff else {
        writeln!(s, "- {line}").ok();
        return;
    };
    // Markdown is not rendered inside `<summary>`: plain HTML there.
    writeln!(
        s,
        "- <details><summary><code>{}</code> {}</summary>\n",
        c.action.symbol(),
        html(&c.resource)
    )
    .ok();
    let fence = fence_for(diff);
    writeln!(s, "  {fence}diff").ok();
    for l in crate::render::clean(diff).lines() {
        writeln!(s, "  {l}").ok();
    }
    writeln!(s, "  {fence}\n\n  </details>").ok();
}

fn hosts(n: usize) -> String {
    if n == 1 {
        "1 host".to_owned()
    } else {
        format!("{n} hosts")
    }
}

/// A fence of backticks longer than any run of backticks in `text` (at least three), so the
/// content cannot end its code block.
fn fence_for(text: &str) -> String {
    let longest = text
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    "`".repeat(longest.max(2) + 1)
}

/// Text for inside a `` `code span` ``: on one line, without backticks (shown as `'`).
fn code_text(text: &str) -> String {
    crate::render::clean(text)
        .replace('\n', " ")
        .replace('`', "'")
        .replace('|', "\\|")
}

/// Text in Markdown prose: HTML and Markdown's own characters escaped, on one line.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for ch in crate::render::clean(text).chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' => {
                out.push('\\');
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text inside HTML: `<`, `>`, `&` and quotes escaped, on one line.
fn html(text: &str) -> String {
    crate::render::clean(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\n', " ")
}

/// Text in a table cell.
fn cell(text: &str) -> String {
    inline(text)
}

#[cfg(test)]
mod tests {
    use super::{fence_for, inline};

    #[test]
    fn host_text_cannot_close_a_fence_or_inject_html() {
        assert_eq!(fence_for("a ``` b"), "````");
        assert_eq!(fence_for("plain"), "```");
        assert_eq!(inline("<img src=x> | *a*"), "&lt;img src=x&gt; \\| \\*a\\*");
    }
}
