//! The one owner of the terminal while hosts are worked on: workers report events, this draws
//! one spinner per host on a TTY and plain lines elsewhere (or nothing, for `--json`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Progress reporting for a set of hosts.
pub struct Progress {
    mode: Mode,
}

enum Mode {
    Quiet,
    Lines,
    Bars {
        bars: Mutex<BTreeMap<String, ProgressBar>>,
        multi: MultiProgress,
    },
}

impl Progress {
    /// Spinners when stderr is a terminal, plain lines when `verbose`, otherwise nothing.
    pub fn new(hosts: &[String], verbose: bool) -> Self {
        if std::io::stderr().is_terminal() {
            let multi = MultiProgress::new();
            let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                .expect("valid template");
            let bars = hosts
                .iter()
                .map(|h| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.set_prefix(h.clone());
                    b.enable_steady_tick(Duration::from_millis(100));
                    (h.clone(), b)
                })
                .collect();
            Self {
                mode: Mode::Bars {
                    bars: Mutex::new(bars),
                    multi,
                },
            }
        } else if verbose {
            Self { mode: Mode::Lines }
        } else {
            Self { mode: Mode::Quiet }
        }
    }

    /// No output at all (tests, `--json`).
    pub fn quiet() -> Self {
        Self { mode: Mode::Quiet }
    }

    /// `host` is now doing `what`.
    pub fn update(&self, host: &str, what: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{host}: {what}"),
            Mode::Bars { bars, .. } => {
                if let Some(b) = bars.lock().expect("not poisoned").get(host) {
                    b.set_message(what.to_owned());
                }
            }
        }
    }

    /// `host` is done, with a final word.
    pub fn finish(&self, host: &str, what: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{host}: {what}"),
            Mode::Bars { bars, .. } => {
                if let Some(b) = bars.lock().expect("not poisoned").get(host) {
                    b.finish_with_message(what.to_owned());
                }
            }
        }
    }

    /// Removes the spinners before the plan is printed.
    pub fn clear(&self) {
        if let Mode::Bars { multi, .. } = &self.mode {
            multi.clear().ok();
        }
    }
}
