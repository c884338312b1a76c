//! compile → plan → apply → report.

pub mod compile;
mod converge;
pub mod lock;
pub mod report;
mod run;

pub use compile::{Policy, Request, compile};
pub use converge::{Converge, DEFAULT_LOCK_TIMEOUT, Event, NodeFile, Prepared, converge, prepare};
pub use report::{LAST_RUN, Report, ResourceReport, Status, managed_ids};
