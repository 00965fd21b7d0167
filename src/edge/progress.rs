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
            let p = Self {
                mode: Mode::Bars {
                    bars: Mutex::new(BTreeMap::new()),
                    multi: MultiProgress::new(),
                },
            };
            for h in hosts {
                p.with_bar(h, |_| {});
            }
            p
        } else if verbose {
            Self { mode: Mode::Lines }
        } else {
            Self { mode: Mode::Quiet }
        }
    }

    /// Runs `f` on `host`'s spinner, made on first use: a spinner is only drawn for a host
    /// that is worked on.
    fn with_bar(&self, host: &str, f: impl FnOnce(&ProgressBar)) {
        if let Mode::Bars { bars, multi } = &self.mode {
            let mut bars = bars.lock().expect("not poisoned");
            let b = bars.entry(host.to_owned()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                        .expect("valid template"),
                );
                b.set_prefix(host.to_owned());
                b.enable_steady_tick(Duration::from_millis(100));
                b
            });
            f(b);
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
            Mode::Bars { .. } => self.with_bar(host, |b| b.set_message(what.to_owned())),
        }
    }

    /// `host` is done, with a final word.
    pub fn finish(&self, host: &str, what: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{host}: {what}"),
            Mode::Bars { .. } => self.with_bar(host, |b| b.finish_with_message(what.to_owned())),
        }
    }

    /// Removes the spinners before the plan is printed.
    pub fn clear(&self) {
        if let Mode::Bars { multi, .. } = &self.mode {
            multi.clear().ok();
        }
    }
}
