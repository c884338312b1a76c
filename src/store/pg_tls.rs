//! TLS from `kiln server` to PostgreSQL, set in the `--database` URL as
//! libpq users set it: `sslmode` and `sslrootcert`. The postgres crate
//! knows neither the verify modes nor `sslrootcert`, so both are taken out
//! of the URL here and carried out with rustls. What each mode checks, as
//! in libpq:
//!
//! - `disable`: no TLS.
//! - `prefer` (the default): TLS if the server offers it, plain if not.
//! - `require`: TLS, or no connection.
//! - `verify-ca`: TLS, with a certificate signed by a trusted CA.
//! - `verify-full`: `verify-ca`, and the certificate names the host in the URL.
//!
//! The CA is `sslrootcert=FILE` (PEM), or the system's roots without it
//! (or with `sslrootcert=system`). `prefer` and `require` check the
//! certificate only when `sslrootcert` is given (then as `verify-ca`):
//! without it they encrypt, but anyone on the path may pose as the server.

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{DatabaseError, redact};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &[(&str, SslMode)] = &[
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    pub fn name(self) -> &'static str {
        SslMode::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(n, _)| n)
    }
}

/// The CAs a certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    System,
    File(PathBuf),
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Roots::System => f.write_str("the system's CA certificates"),
            Roots::File(path) => write!(f, "sslrootcert {}", path.display()),
        }
    }
}

/// A `postgres://` URL: what the postgres crate takes, and the TLS
/// parameters kiln carries out itself.
#[derive(Debug, Clone)]
pub struct PgUrl {
    pub config: postgres::Config,
    pub sslmode: SslMode,
    /// `sslrootcert`, if given.
    pub rootcert: Option<Roots>,
    /// The URL without its password, for messages.
    pub shown: String,
}

/// How a server's certificate is checked.
enum Check {
    Nothing,
    Ca(Roots),
    CaAndName(Roots),
}

/// Why a TLS connection to PostgreSQL was not made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{url}: {roots} cannot be read: {reason}; give sslrootcert=FILE, the PEM file of the CA \
         that signed the server's certificate"
    )]
    Roots {
        url: String,
        roots: Roots,
        reason: String,
    },
    #[error(
        "{url}: sslmode={mode} needs TLS and the server does not offer it; turn ssl on in the \
         server's postgresql.conf (ssl_cert_file, ssl_key_file), or, on a network you trust, \
         use sslmode=prefer or sslmode=disable"
    )]
    NotOffered { url: String, mode: &'static str },
    #[error(
        "{url}: the server's certificate is not signed by a CA in {roots} ({reason}); give \
         sslrootcert=FILE, the PEM file of the CA that signed it"
    )]
    Untrusted {
        url: String,
        roots: Roots,
        reason: String,
    },
    #[error(
        "{url}: the server's certificate does not name the host the URL connects to ({reason}); \
         connect by a name the certificate holds, or use sslmode=verify-ca to check the CA alone"
    )]
    WrongName { url: String, reason: String },
    #[error("{url}: the TLS handshake with the server failed: {reason}")]
    Handshake { url: String, reason: String },
}

impl PgUrl {
    /// Splits `url` into the postgres crate's config and the TLS
    /// parameters; libpq's default mode is `prefer`.
    pub fn parse(url: &str) -> Result<PgUrl, DatabaseError> {
        let shown = redact(url);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut sslmode, mut rootcert) = (SslMode::Prefer, None);
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            match key {
                "sslmode" => {
                    sslmode = SslMode::NAMES
                        .iter()
                        .find(|(n, _)| *n == value)
                        .map(|(_, m)| *m)
                        .ok_or_else(|| DatabaseError::SslMode {
                            url: shown.clone(),
                            value: value.to_string(),
                        })?;
                }
                "sslrootcert" if value == "system" => rootcert = Some(Roots::System),
                "sslrootcert" => rootcert = Some(Roots::File(PathBuf::from(value.as_ref()))),
                _ => rest.push(pair),
            }
        }
        let rest = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = rest
            .parse::<postgres::Config>()
            .map_err(|e| DatabaseError::Url {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        config.ssl_mode(match sslmode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        Ok(PgUrl {
            config,
            sslmode,
            rootcert,
            shown,
        })
    }

    fn check(&self) -> Check {
        let roots = self.rootcert.clone();
        match self.sslmode {
            SslMode::Disable => Check::Nothing,
            // As libpq: a CA given is a CA checked.
            SslMode::Prefer | SslMode::Require => roots.map_or(Check::Nothing, Check::Ca),
            SslMode::VerifyCa => Check::Ca(roots.unwrap_or(Roots::System)),
            SslMode::VerifyFull => Check::CaAndName(roots.unwrap_or(Roots::System)),
        }
    }

    /// The TLS side of a connection, with the CA certificates read now
    /// (again at each reconnection would be the same files).
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.check() {
            Check::Nothing => Arc::new(NameUnchecked {
                chain: None,
                provider: provider.clone(),
            }),
            Check::Ca(roots) => Arc::new(NameUnchecked {
                chain: Some(self.webpki(roots, &provider)?),
                provider: provider.clone(),
            }),
            Check::CaAndName(roots) => self.webpki(roots, &provider)?,
        };
        let handshake = |e: rustls::Error| TlsError::Handshake {
            url: self.shown.clone(),
            reason: e.to_string(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(handshake)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    fn webpki(
        &self,
        roots: Roots,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
        let failed = |roots: &Roots, reason: String| TlsError::Roots {
            url: self.shown.clone(),
            roots: roots.clone(),
            reason,
        };
        let mut store = RootCertStore::empty();
        match &roots {
            Roots::File(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect())
                    .map_err(|e| failed(&roots, e.to_string()))?;
                for cert in certs {
                    store.add(cert).map_err(|e| failed(&roots, e.to_string()))?;
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    return Err(failed(&roots, format!("none found {}", why.join("; "))));
                }
            }
        }
        if store.is_empty() {
            return Err(failed(&roots, "it holds no PEM certificate".into()));
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| failed(&roots, e.to_string()))
    }

    /// What a failed connection says about TLS, if it failed there.
    pub fn refused(&self, e: &postgres::Error) -> Option<TlsError> {
        let url = self.shown.clone();
        // The postgres crate's only word for it (tests/it/store.rs holds it).
        if e.source()
            .is_some_and(|s| s.to_string() == "server does not support TLS")
        {
            return Some(TlsError::NotOffered {
                url,
                mode: self.sslmode.name(),
            });
        }
        let tls = rustls_error(e)?;
        let reason = tls.to_string();
        let roots = match self.check() {
            Check::Ca(roots) | Check::CaAndName(roots) => roots,
            Check::Nothing => return Some(TlsError::Handshake { url, reason }),
        };
        Some(match tls {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => TlsError::WrongName { url, reason },
            rustls::Error::InvalidCertificate(_) => TlsError::Untrusted { url, roots, reason },
            _ => TlsError::Handshake { url, reason },
        })
    }
}

/// The rustls error under a failed connection: tokio-rustls hands it on
/// inside an `io::Error`, whose `source()` skips it.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>());
        if let Some(found) = e.downcast_ref::<rustls::Error>().or(inner) {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// The checks short of `verify-full`, as libpq's: none at all (`prefer`
/// and `require` without a CA: the handshake's signatures prove only that
/// the server holds the certificate's key), or rustls's whole check but
/// the name (`verify-ca`). rustls checks the chain and dates first and the
/// name last, so a name error means the rest passed.
#[derive(Debug)]
struct NameUnchecked {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            done => done,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_libpq_s_default_is_prefer() {
        let u = PgUrl::parse("postgres://kiln:pw@db/kiln").unwrap();
        assert_eq!((u.sslmode, u.rootcert), (SslMode::Prefer, None));
        let u = PgUrl::parse(
            "postgres://kiln:pw@db/kiln?connect_timeout=3&sslmode=verify-full&sslrootcert=/etc/a%20b.pem",
        )
        .unwrap();
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(u.rootcert, Some(Roots::File("/etc/a b.pem".into())));
        assert_eq!(
            u.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        let u = PgUrl::parse("postgres://db/kiln?sslrootcert=system&sslmode=verify-ca").unwrap();
        assert_eq!(u.rootcert, Some(Roots::System));
        let e = PgUrl::parse("postgres://kiln:pw@db/kiln?sslmode=verify").unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("verify-full") && !message.contains("pw@"),
            "{message}"
        );
    }

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let url = format!(
            "postgres://kiln:pw@db/kiln?sslmode=verify-full&sslrootcert={}",
            file.display()
        );
        let Err(e) = PgUrl::parse(&url).unwrap().connector() else {
            panic!("a CA file without a certificate was taken");
        };
        let message = e.to_string();
        assert!(message.contains("no PEM certificate"), "{message}");
        assert!(message.contains("kiln:***@db"), "{message}");
        let missing = url.replace("ca.pem", "missing.pem");
        let Err(e) = PgUrl::parse(&missing).unwrap().connector() else {
            panic!("a missing CA file was taken");
        };
        assert!(matches!(e, TlsError::Roots { .. }), "{e}");
    }
}
