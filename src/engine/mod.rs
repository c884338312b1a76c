//! compile → plan → apply → report.

pub mod compile;
pub mod lock;
pub mod report;
mod run;

pub use compile::{Policy, Request, compile};
pub use report::{Report, ResourceReport, Status};
pub use run::{Options, Plan, Step, converge, plan};
