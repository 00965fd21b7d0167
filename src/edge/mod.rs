//! The edges: everything that touches the world outside the process besides the engine's
//! remote work — the SSH transport, files on the controller, the terminal's progress display,
//! and the lab of real hosts on this machine.

pub mod files;
pub mod kept;
pub mod lab;
pub mod progress;
pub mod ssh_paths;
pub mod terminal;
pub mod transport;
