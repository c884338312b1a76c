//! One file per command: each turns its options into library calls.

pub mod agent;
pub mod check;
pub mod converge;
pub mod fleet;
pub mod verify;
pub mod whitelist;
