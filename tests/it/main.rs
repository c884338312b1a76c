//! kiln's integration tests, one binary (as ripgrep and cargo do): each
//! module drives the real `kiln` program against real Debian roots, apt
//! repositories, sshd test hosts or VMs, through the harness in `support`.
//!
//! Run one module with `cargo test --release --test it converge::`.
//!
//! A test that needs root, Debian's archive or QEMU says so in its first
//! line, `need!(DebianRoot);` (`support/need.rs`): a plain `cargo test` skips
//! it with one line, and `scripts/test` fails it when the need is missing.

#[macro_use]
mod support;

mod adversarial;
mod agent;
mod bad_input;
mod converge;
mod dashboard;
mod devvm;
mod fingerprint;
mod fleet;
mod harness;
mod interrupt;
mod kiln_test;
mod mirror;
mod outdated;
mod packages;
mod packages_debian;
mod policy;
mod releases;
mod repo_paths;
mod report_store;
mod rollouts;
mod running;
mod sandbox;
mod secrets;
mod services;
mod siblings;
mod signed;
mod snapshot;
mod stack;
mod store;
mod substitute;
mod vanished;
mod workflow;
