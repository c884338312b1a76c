//! `kiln agent`: runs the pull agent ([`crate::agent`]) and prints its log,
//! one timestamped line per event.

use crate::error::Error;

pub use crate::agent::Agent;

pub fn run(a: Agent) -> Result<i32, Error> {
    let ok = crate::agent::run(&a, &log)?;
    Ok(if ok { 0 } else { 1 })
}

fn log(msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("[{now}] kiln agent: {}", crate::text::terminal_safe(msg));
}
