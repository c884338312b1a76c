//! What kiln knows about the system it converges.

pub mod accounts;
pub mod apt;
pub mod archive;
pub mod dpkg;
pub mod facts;
pub mod fallback;
pub mod mirror;
pub mod pincache;
pub mod pins;
pub mod rootfs;
pub mod sandbox;
pub mod siblings;
pub mod target;
pub mod tfs;
