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
