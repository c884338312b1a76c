//! `kiln server --tls-cert FILE --tls-key FILE`: TLS in the server's own
//! process. The HTTP server's rustls feature is tied to an old rustls
//! major, so rustls (the one the rest of kiln uses) terminates TLS here
//! and relays each connection, decrypted, to the HTTP server on a unix
//! socket in a directory only this process's user may enter: nothing but
//! TLS is offered on the network.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate chain and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "--tls-cert {path}: {reason}; give the PEM file of the server's certificate (its chain after it)"
    )]
    Cert { path: String, reason: String },
    #[error("--tls-key {path}: {reason}; give the PEM file of the certificate's private key")]
    Key { path: String, reason: String },
    #[error("the certificate {cert} and key {key} do not make a TLS server: {reason}")]
    Config {
        cert: String,
        key: String,
        reason: String,
    },
}

/// A loaded certificate and key, ready to accept connections.
#[derive(Clone)]
pub struct Terminator {
    config: Arc<rustls::ServerConfig>,
}

impl Terminator {
    pub fn load(files: &TlsFiles) -> Result<Terminator, TlsError> {
        let shown = |p: &Path| p.display().to_string();
        let cert_error = |reason: String| TlsError::Cert {
            path: shown(&files.cert),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| cert_error(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| cert_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(cert_error("it holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
            path: shown(&files.key),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| TlsError::Config {
                cert: shown(&files.cert),
                key: shown(&files.key),
                reason: e.to_string(),
            })?;
        Ok(Terminator {
            config: Arc::new(config),
        })
    }

    /// Accepts connections on `listener` until the process ends, each in
    /// threads of its own, relayed to the HTTP server at `socket`.
    pub fn accept(self, listener: TcpListener, socket: PathBuf) {
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (this, socket) = (self.clone(), socket.clone());
                std::thread::spawn(move || {
                    let _ = this.relay(tcp, &socket);
                });
            }
        });
    }

    /// One connection: what the client sends goes, decrypted, to the HTTP
    /// server; what it answers goes back encrypted. The TLS state is shared
    /// by the two directions; neither holds it while it waits to read.
    fn relay(&self, tcp: TcpStream, socket: &Path) -> io::Result<()> {
        let conn = ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        let conn = Arc::new(Mutex::new(conn));
        let mut inner = UnixStream::connect(socket)?;
        let (mut tcp_in, tcp_out) = (tcp.try_clone()?, tcp);
        let mut inner_out = inner.try_clone()?;
        let back = {
            let (conn, mut tcp_out) = (conn.clone(), tcp_out.try_clone()?);
            std::thread::spawn(move || -> io::Result<()> {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = inner.read(&mut buf)?;
                    let mut c = conn.lock().map_err(|_| io::Error::other("poisoned"))?;
                    if n == 0 {
                        c.send_close_notify();
                    } else {
                        c.writer().write_all(&buf[..n])?;
                    }
                    while c.wants_write() {
                        c.write_tls(&mut tcp_out)?;
                    }
                    if n == 0 {
                        let _ = tcp_out.shutdown(Shutdown::Write);
                        return Ok(());
                    }
                }
            })
        };
        let mut tcp_reply = tcp_out;
        let mut pump = || -> io::Result<()> {
            let mut buf = vec![0u8; 16 << 10];
            let mut plain = vec![0u8; 16 << 10];
            loop {
                let n = tcp_in.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                let mut c = conn.lock().map_err(|_| io::Error::other("poisoned"))?;
                let mut offered = &buf[..n];
                while !offered.is_empty() {
                    c.read_tls(&mut offered)?;
                    if let Err(e) = c.process_new_packets() {
                        // The alert that says why goes back before the close.
                        while c.wants_write() {
                            c.write_tls(&mut tcp_reply)?;
                        }
                        return Err(io::Error::other(e));
                    }
                }
                loop {
                    match c.reader().read(&mut plain) {
                        Ok(0) => break,
                        Ok(m) => inner_out.write_all(&plain[..m])?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                while c.wants_write() {
                    c.write_tls(&mut tcp_reply)?;
                }
            }
        };
        let outcome = pump();
        let _ = inner_out.shutdown(Shutdown::Write);
        let _ = back.join();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_no_certificate_or_key_are_named_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let files = |cert: &Path, key: &Path| TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let e = Terminator::load(&files(&junk, &junk))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with(&format!("--tls-cert {}", junk.display())),
            "{e}"
        );
        assert!(e.contains("holds no certificate"), "{e}");
        let e = Terminator::load(&files(&d.path().join("none"), &junk))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--tls-cert") && e.contains("none"), "{e}");
    }
}
