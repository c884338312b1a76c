//! `kiln __root-exec` (hidden): one program of a `--root` tree, run in a
//! sandbox rooted there; kiln starts itself this way for every such program.

use std::ffi::OsString;
use std::path::Path;

use crate::error::Error;

pub fn run(root: &Path, read_only: bool, argv: &[OsString]) -> Result<i32, Error> {
    Ok(crate::platform::sandbox::exec::run(root, read_only, argv))
}
