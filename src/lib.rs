//! meshctl: one YAML inventory in, a working WireGuard network out.
//!
//! The layout is the architecture (see DESIGN.md and README's "Layout"):
//!
//! - [`core`]: the pure core — inventory → desired state ─┐
//!   facts (parsed from gathered text) ─────────────────┴→ diff → plan → render; and the
//!   scripts that gather and apply, as text. No I/O.
//! - [`engine`]: all remote work over one `Remote` trait — gather, prepare, execute the plan's
//!   ops, guard, confirm, unlock.
//! - [`edge`]: the SSH transport, files on the controller, the terminal's progress, the lab.
//! - [`commands`] on top: arguments → inputs → engine → render.
//!
//! The core's and the edges' modules are also reachable from the crate root (`meshctl::plan`,
//! `meshctl::transport`, ...), the paths the tests and benchmarks use.
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod core;
pub mod edge;
pub mod engine;

pub use crate::core::{
    desired, diff, facts, graph, import, inventory, keys, names, packages, persist, plan, planner,
    policy, psk, qr, render, render_markdown, report, roles, saved_plan, scripts, shell, spell,
    ssh_path, state, status, verify,
};
pub use crate::edge::{files, lab, progress, transport};
