//! `kiln server`: the report store on a SQLite file or a PostgreSQL database.

use std::io::Write as _;

use crate::error::Error;
use crate::server::{Options, ServerError};

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Inventory(p) => p.into(),
            ServerError::Token { .. } | ServerError::Listen { .. } | ServerError::Tls(_) => {
                Error::Usage(e.to_string())
            }
            ServerError::Store(_) | ServerError::Signals(_) => {
                Error::Run(crate::error::RunError::platform(e))
            }
        }
    }
}

/// Opens the store and serves until stopped (SIGTERM or SIGINT: exit 0
/// once the requests in hand are answered); the first line on stdout
/// says where it listens (with `--listen 127.0.0.1:0`, the port it got).
pub fn run(opts: Options) -> Result<i32, Error> {
    // Shown without a PostgreSQL URL's password.
    let database = opts.database.to_string();
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let db = opts.database.clone();
    let open = || db.open();
    crate::server::serve(opts, &open, &mut |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "kiln server: listening on {scheme}://{addr} (store {database})"
        );
        let _ = out.flush();
    })?;
    Ok(0)
}
