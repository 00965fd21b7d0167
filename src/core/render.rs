//! Rendering a plan for humans (Terraform-like text) or machines (JSON). It reads the plan and
//! decides nothing.

use std::fmt::Write;

use crate::plan::{Action, HostResult, HostStatus, Plan};

/// Colours, on only for a terminal and never with NO_COLOR or `--no-color`.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Whether to use ANSI colours.
    pub color: bool,
}

impl Style {
    /// Colour on a terminal (`is_tty`) unless `no_color` (`--no-color`, or NO_COLOR set).
    pub fn new(is_tty: bool, no_color: bool) -> Self {
        Self {
            color: is_tty && !no_color,
        }
    }

    /// `text` in the SGR colour `code` when colours are on, else as it is.
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn action(&self, a: Action, text: &str) -> String {
        match a {
            Action::Add => self.paint("32", text),
            Action::Change => self.paint("33", text),
            Action::Remove => self.paint("31", text),
        }
    }
}

/// Text that came from a host (a file's content, an error, a rule) made safe for a terminal:
/// control characters other than tab are shown escaped, so a hostile host cannot move the
/// cursor, recolour or rewrite what the user reads.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\n' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The plan as text.
pub fn text(plan: &Plan, style: Style) -> String {
    let mut s = String::new();
    let mut in_sync = Vec::new();
    for h in &plan.hosts {
        if h.status == HostStatus::Planned && h.changes.is_empty() && h.warnings.is_empty() {
            in_sync.push(h.host.to_string());
            continue;
        }
        writeln!(
            s,
            "{} ({}, {})",
            style.paint("1", h.host.as_str()),
            h.role,
            h.target
        )
        .ok();
        if let Some(e) = &h.error {
            writeln!(s, "  {} {}", style.paint("31;1", "error:"), clean(e)).ok();
        }
        for w in &h.warnings {
            writeln!(s, "  {} {}", style.paint("33;1", "warning:"), clean(w)).ok();
        }
        for c in &h.changes {
            let mut line = format!("  {} {}", c.action.symbol(), c.resource);
            match (&c.before, &c.after) {
                (Some(b), Some(a)) if !b.contains('\n') && !a.contains('\n') => {
                    write!(line, ": {b} → {a}").ok();
                }
                (None, Some(a)) if !a.contains('\n') => {
                    write!(line, ": {a}").ok();
                }
                (Some(b), None) if !b.contains('\n') => {
                    write!(line, ": {b}").ok();
                }
                _ => {}
            }
            writeln!(s, "{}", style.action(c.action, &clean(&line))).ok();
            if let Some(d) = &c.diff {
                for l in d
                    .lines()
                    .filter(|l| !l.starts_with("---") && !l.starts_with("+++"))
                {
                    let l = &clean(l);
                    let painted = match l.chars().next() {
                        Some('+') => style.paint("32", l),
                        Some('-') => style.paint("31", l),
                        Some('@') => style.paint("36", l),
                        _ => l.to_owned(),
                    };
                    writeln!(s, "      {painted}").ok();
                }
            }
        }
        for k in &h.skipped {
            writeln!(s, "  skipped: {}", clean(k)).ok();
        }
        for n in &h.notes {
            writeln!(s, "  note: {}", clean(n)).ok();
        }
        s.push('\n');
    }
    if !in_sync.is_empty() {
        writeln!(s, "No changes: {}\n", in_sync.join(", ")).ok();
    }
    if !plan.manual_steps.is_empty() {
        writeln!(
            s,
            "{}",
            style.paint("1", "Manual steps (meshctl cannot do these):")
        )
        .ok();
        for m in &plan.manual_steps {
            writeln!(s, "  - {}: {}", m.subject, m.text).ok();
        }
        s.push('\n');
    }
    s.push_str(&summary(plan));
    s
}

/// "Plan: N to add, N to change, N to remove." with the counts per host.
pub fn summary(plan: &Plan) -> String {
    let c = plan.counts();
    let per_host: Vec<String> = plan
        .hosts
        .iter()
        .map(|h| match h.status {
            HostStatus::Failed => format!("{}: failed", h.host),
            HostStatus::Planned => {
                let c = h.counts();
                format!("{}: +{} ~{} -{}", h.host, c.add, c.change, c.remove)
            }
        })
        .collect();
    let failed = plan.failed_hosts().count();
    let mut s = format!(
        "Plan: {} to add, {} to change, {} to remove ({}).\n",
        c.add,
        c.change,
        c.remove,
        per_host.join(", ")
    );
    if failed > 0 {
        writeln!(
            s,
            "{failed} host(s) could not be planned; see the errors above."
        )
        .ok();
    }
    s
}

/// The plan as pretty JSON (schema: see `plan`).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("a plan always serialises") + "\n"
}

/// The summary after apply: one line per host of the plan, then the totals.
pub fn apply_summary(
    plan: &Plan,
    outcomes: &std::collections::BTreeMap<crate::names::HostName, HostResult>,
) -> String {
    let mut s = String::from("\nApply:\n");
    let mut failed = 0;
    for hp in &plan.hosts {
        let line = match outcomes.get(&hp.host) {
            None => {
                failed += 1;
                "failed: not reached".to_owned()
            }
            Some(HostResult::Failed { error: e }) => {
                failed += 1;
                format!("failed: {e}")
            }
            Some(HostResult::Converged { applied }) => {
                format!("converged ({applied} changes applied)")
            }
            Some(HostResult::NotConverged { left }) => {
                failed += 1;
                format!(
                    "NOT converged: {left} changes remain after apply (run `meshctl plan` to see them)"
                )
            }
        };
        s.push_str(&format!("  {}: {}\n", hp.host, clean(&line)));
    }
    s.push_str(&format!(
        "{} host(s) converged, {failed} failed.\n",
        plan.hosts.len() - failed
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn host_text_cannot_drive_the_terminal() {
        assert_eq!(clean("ok\tline\n"), "ok\tline\n");
        assert_eq!(clean("\x1b[2Jgone\r"), "\\u{1b}[2Jgone\\u{d}");
    }
}
