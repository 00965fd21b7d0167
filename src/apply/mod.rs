//! Applying a plan on a host: the scripts of the three-step protocol (see `script`).

pub mod guard;
pub mod script;
