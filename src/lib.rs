//! meshctl: one YAML inventory in, a working WireGuard network out.
//!
//! The crate is a pure core between two thin edges (see DESIGN.md):
//! `inventory` → `desired` state ─┐
//!                                ├→ `diff` → `plan` → `render` / `apply`
//! `transport` → `facts` (parse) ─┘
#![warn(missing_docs)]

pub mod apply;
pub mod cli;
pub mod commands;
pub mod desired;
pub mod diff;
pub mod facts;
pub mod inventory;
pub mod keys;
pub mod lab;
pub mod names;
pub mod persist;
pub mod plan;
pub mod planner;
pub mod progress;
pub mod remote;
pub mod render;
pub mod roles;
pub mod saved_plan;
pub mod shell;
pub mod spell;
pub mod state;
pub mod transport;
