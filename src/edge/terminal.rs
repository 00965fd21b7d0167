//! The person at the terminal during `meshctl apply` (the plan shown, a "yes" asked for, Ctrl-C
//! taken as a no) and the pins file beside the inventory: the engine's [`Operator`] at the edge.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use crate::engine::apply::Operator;
use crate::names::{HostName, WgKey};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::render::{self, Style};

/// The person at the terminal, and the pins file beside the inventory.
pub struct Terminal {
    /// `--yes`: confirmed without asking.
    pub yes: bool,
    /// How to draw the plan.
    pub style: Style,
    /// Cleared before the plan is drawn.
    pub progress: Arc<Progress>,
    /// The pins file beside the inventory.
    pub keys_path: std::path::PathBuf,
}

impl Operator for Terminal {
    fn show(&self, plan: &Plan) {
        self.progress.clear();
        print!("{}", render::text(plan, self.style));
    }

    async fn confirm(&self) -> anyhow::Result<bool> {
        if self.yes {
            return Ok(true);
        }
        print!("Apply these changes? Only 'yes' is accepted: ");
        std::io::stdout().flush().ok();
        let answer = tokio::task::spawn_blocking(|| {
            let mut answer = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .map(|_| answer)
        });
        // Ctrl-C at the prompt is a "no": the hosts' locks are released on the way out.
        tokio::select! {
            a = answer => Ok(a??.trim() == "yes"),
            _ = tokio::signal::ctrl_c() => {
                println!();
                Ok(false)
            }
        }
    }

    fn pin(&self, learnt: &BTreeMap<HostName, WgKey>) -> anyhow::Result<()> {
        // A pins file that cannot be read is an error, never "no pins": saving over it would
        // drop every pin, phones' keys included.
        let mut pins = crate::files::read_pins(&self.keys_path).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "pinning public keys in {}",
                self.keys_path.display()
            ))
        })?;
        pins.keys
            .extend(learnt.iter().map(|(h, k)| (h.clone(), k.clone())));
        crate::files::save_pins(&pins, &self.keys_path).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "pinning public keys in {}",
                self.keys_path.display()
            ))
        })
    }

    fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }

    fn record_rotation(&self, host: &HostName, old: &WgKey, new: &WgKey) -> anyhow::Result<()> {
        let context = || format!("recording the rotation in {}", self.keys_path.display());
        let mut pins = crate::files::read_pins(&self.keys_path)
            .map_err(|e| anyhow::Error::new(e).context(context()))?;
        pins.rotate(
            host,
            old,
            new,
            &crate::files::rotation_stamp("meshctl rotate"),
        );
        crate::files::save_pins(&pins, &self.keys_path)
            .map_err(|e| anyhow::Error::new(e).context(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_pins_file_is_an_error_and_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.keys.yaml");
        let conflicted = "<<<<<<< HEAD\nphone: \"OCO5ZvqkqiQdK4QiFK3CNZwcoZ2EQ2RHFvDcARXSyxQ=\"\n=======\n>>>>>>> other\n";
        std::fs::write(&path, conflicted).unwrap();
        let t = Terminal {
            yes: true,
            style: crate::render::Style::new(false, true),
            progress: Arc::new(Progress::quiet()),
            keys_path: path.clone(),
        };
        let learnt = BTreeMap::from([(
            HostName::parse("vps").unwrap(),
            WgKey::parse("x/mx1BYRsLAiujkK0jxj1w7VcUqhmtKsX+NjQA+VdV0=").unwrap(),
        )]);
        let err = t.pin(&learnt).unwrap_err();
        assert!(format!("{err:#}").contains("lab.keys.yaml"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), conflicted);
    }
}
