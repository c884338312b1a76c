//! One file per command: each turns its options into library calls.

pub mod agent;
pub mod check;
pub mod converge;
pub mod devvm;
pub mod fingerprint;
pub mod fleet;
pub mod root_exec;
pub mod secret;
pub mod test;
pub mod verify;
pub mod whitelist;
