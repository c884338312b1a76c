//! One file per command: each turns its options into library calls.

pub mod check;
pub mod converge;
pub mod whitelist;
