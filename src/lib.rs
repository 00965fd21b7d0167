//! meshctl: one YAML inventory in, a working WireGuard network out.
//!
//! The crate is a pure core between two thin edges (see DESIGN.md):
//! `inventory` → `desired` state ─┐
//!                                ├→ `diff` → `plan` → `render` / `apply`
//! `transport` → `facts` (parse) ─┘

pub mod inventory;
pub mod names;
pub mod state;
pub mod cli;
pub mod lab;
pub mod facts;
pub mod shell;
pub mod transport;
pub mod desired;
pub mod diff;
pub mod keys;
pub mod persist;
pub mod plan;
pub mod roles;
pub mod apply;
pub mod commands;
pub mod planner;
pub mod progress;
pub mod remote;
pub mod render;
pub mod saved_plan;
