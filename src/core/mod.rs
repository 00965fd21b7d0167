//! The pure core: inventory, roles, desired state, fact scripts and their parsers, the diff,
//! the plan, its rendering, and the spelling of every shell command and script. Nothing in
//! here does I/O — no files, no processes, no network, no tokio (a test, `tests/layout.rs`,
//! keeps it so) — so all of it is tested with fixtures, fast, without SSH.

pub mod desired;
pub mod diff;
pub mod facts;
pub mod graph;
pub mod import;
pub mod init;
pub mod inventory;
pub mod keys;
pub mod names;
pub mod packages;
pub mod persist;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod psk;
pub mod qr;
pub mod render;
pub mod render_markdown;
pub mod report;
pub mod roles;
pub mod saved_plan;
pub mod scripts;
pub mod shell;
pub mod spell;
pub mod ssh_path;
pub mod state;
pub mod status;
pub mod verify;
