//! The scripts apply runs on a host, as text: the three steps (`steps`: lock + key + gather,
//! the changes, gather + unlock) and the confirm-or-roll-back guard (`guard`). Pure builders:
//! running them is the engine's job.

pub mod guard;
pub mod status;
pub mod steps;
pub mod verify;
