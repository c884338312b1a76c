//! Fleets: an inventory of hosts reached over OpenSSH, a policy bundle
//! copied to them once per content hash, rollouts with canaries, batches and
//! a push hold, and the status of the last runs across the fleet.

pub mod bundle;
pub mod host;
pub mod inventory;
pub mod payload;
pub mod plan;
pub mod pool;
pub mod protocol;
pub mod push;
pub mod script;
pub mod secrets;
pub mod serve;
pub mod ssh;
pub mod status;
