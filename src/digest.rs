//! SHA-256 in the one form kiln prints, stores and compares: lower-case hex.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The sha256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sha256 of everything `r` yields, in hex, read in blocks so that a
/// large file never sits in memory whole.
pub fn sha256_reader(mut r: impl Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The sha256 of the host file at `path`, in hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_reader(std::fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_and_whole_agree_with_the_known_value() {
        let known = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), known);
        assert_eq!(sha256_reader(&b"abc"[..]).unwrap(), known);
        let big = vec![7u8; (1 << 16) * 2 + 5];
        assert_eq!(sha256_reader(&big[..]).unwrap(), sha256_hex(&big));
    }
}
