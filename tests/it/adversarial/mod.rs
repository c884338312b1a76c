//! Hostile input, one module per class of attack: each test plants the
//! attack, runs the real binary, and asserts that nothing outside the
//! target changed (a sentinel directory hashed before and after) and that
//! no secret reached output, reports or `/proc/*/cmdline`.
//!
//! - a `--root` tree's own programs (planted sh, apt-cache, systemctl,
//!   useradd; a chroot escape; the caller's environment): `root_sandbox`
//! - values that would change a file's structure (units, deb822, ini;
//!   typed attributes, escaping helpers): `typed_attrs`
//! - a secret anywhere but content, redaction by value: `secret_leaks`
//! - a bundle server serving an older signed bundle, bad bundle members:
//!   `rollback`
//! - special files, hard links and links in a target: `confine`
//! - templates that recurse, nest or grow without bound: `templates`
//! - what was accepted without a word: `silent`
//!
//! Elsewhere, beside the feature they attack: `kiln test`'s sandbox
//! (`sandbox::nothing_of_the_host_is_inherited_by_a_role`,
//! `sandbox::a_role_cannot_leave_the_test_sandbox`), escape sequences from
//! a host (`fleet::a_hosts_escape_sequences_never_reach_the_terminal`) and
//! first contact (`signed::a_host_never_returns_to_first_contact`).

mod confine;
mod rollback;
mod root_sandbox;
mod secret_leaks;
mod silent;
mod templates;
mod typed_attrs;
