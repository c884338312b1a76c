//! kiln: converges hosts to a policy repository of roles, cookbooks and a
//! pinned package whitelist.

pub mod agent;
pub mod cli;
pub mod commands;
pub mod devvm;
pub mod digest;
pub mod engine;
pub mod error;
pub mod fingerprint;
pub mod fleet;
pub mod outbox;
pub mod pins;
pub mod platform;
pub mod policy;
pub mod resource;
pub mod secrets;
pub mod serial;
pub mod server;
pub mod store;
pub mod testing;
pub mod text;
pub mod trust;
pub mod verify;
