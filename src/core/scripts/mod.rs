//! The scripts meshctl runs on a host, as text: the three steps (`steps`: lock + key + gather,
//! the changes, gather + unlock), the confirm-or-roll-back guard (`guard`), and the read-only
//! checks of `meshctl status` (`status`) and `meshctl verify` (`verify`) with their parsers.
//! Pure builders: running them is the engine's job.

pub mod guard;
pub mod status;
pub mod steps;
pub mod verify;
