//! `kiln server`: the report store on its embedded SQLite file.

use std::io::Write as _;

use crate::error::Error;
use crate::server::{Options, ServerError};

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Self {
        Error::Usage(e.to_string())
    }
}

/// Opens the store and serves until stopped; the first line on stdout
/// says where it listens (with `--listen 127.0.0.1:0`, the port it got).
pub fn run(opts: Options) -> Result<i32, Error> {
    let store = crate::store::sqlite::Sqlite::open(&opts.database).map_err(ServerError::from)?;
    let database = opts.database.display().to_string();
    crate::server::serve(opts, Box::new(store), &mut |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "kiln server: listening on http://{addr} (store {database})"
        );
        let _ = out.flush();
    })?;
    Ok(0)
}
