//! Fetching a published bundle and keeping the last good one. A bundle is
//! trusted for its signature (`.sig`, checked against the allowed_signers
//! file), not for where it came from; its `.sha256` only names it. A failed
//! fetch or a refused bundle keeps the last good bundle, whose signature is
//! checked again each run so that a revoked key stops counting.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Agent, State};
use crate::fleet::bundle::unpack;
use crate::platform::target::Target;
use crate::serial::BundleMeta;
use crate::trust::{AllowedSigners, sig_path};

/// Why a bundle was not fetched or not trusted. Each names what was read
/// or written, so the log says where to look.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {url}: {source}")]
    Get {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// `op` is what was being done: creating, writing, keeping.
    #[error("{op} {}: {source}", path.display())]
    Local {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no root certificates found on this system ({0}); install ca-certificates or set SSL_CERT_FILE"
    )]
    NoRootCertificates(String),
    #[error("{what}: larger than {max} bytes")]
    TooLarge { what: String, max: u64 },
    #[error("{0}.sha256 holds no sha256")]
    NoSha256(String),
    #[error("{bundle}: sha256 {got} does not match the published {want}")]
    Mismatch {
        bundle: String,
        got: String,
        want: String,
    },
    #[error("{bundle}: unsigned (no signature at {sig}: {why}); refused")]
    Unsigned {
        bundle: String,
        sig: String,
        why: Box<FetchError>,
    },
    /// The signature, the signer or the serial was refused.
    #[error("{0}")]
    Untrusted(String),
    /// The bundle's contents were refused while unpacking.
    #[error("{0}")]
    Bundle(String),
}

/// The repository a run converges.
pub enum Source {
    /// A directory, or a bundle fetched and verified now.
    Fresh(PathBuf),
    /// The fetch failed or was refused: the last good bundle instead.
    LastGood(PathBuf),
    /// The fetch failed and no earlier bundle is trusted: nothing to converge.
    Nothing,
}

/// The repository of this run: the agent's own, a directory source, or a
/// fetched bundle; after a failed fetch, the last good bundle if it is
/// still trusted. Records the fetched bundle in `state`.
pub fn source(a: &Agent, state: &mut State, log: &dyn Fn(&str)) -> Source {
    let s = match &a.source {
        None => return Source::Fresh(a.repo.clone()),
        Some(s) if Path::new(s).is_dir() => return Source::Fresh(PathBuf::from(s)),
        Some(s) => s,
    };
    match fetch(s, &a.state_dir, &a.allowed_signers, log) {
        Ok((sha, meta)) => {
            if state.current.as_deref() != Some(&sha) {
                log(&format!(
                    "new bundle {sha}{}",
                    meta.map(|m| format!(" ({}, made {})", m.short(), m.created))
                        .unwrap_or_default()
                ));
            }
            state.current = Some(sha.clone());
            Source::Fresh(a.state_dir.join("bundles").join(sha))
        }
        Err(e) => {
            let last_good = state.current.as_ref().filter(|sha| {
                a.state_dir.join("bundles").join(sha).is_dir()
                    && match reverify(&a.state_dir, sha, &a.allowed_signers) {
                        Ok(_) => true,
                        Err(e) => {
                            log(&format!(
                                "the last good bundle {sha} is no longer trusted: {e}"
                            ));
                            false
                        }
                    }
            });
            match last_good {
                Some(sha) => {
                    log(&format!(
                        "fetching {s} failed ({e}); converging with the last good bundle {sha}"
                    ));
                    Source::LastGood(a.state_dir.join("bundles").join(sha))
                }
                None => {
                    log(&format!(
                        "fetching {s} failed ({e}) and there is no trusted earlier bundle; not converging"
                    ));
                    Source::Nothing
                }
            }
        }
    }
}

/// Bundles larger than this are refused while downloading: more than a
/// signature is checked over.
const MAX_BUNDLE: u64 = crate::trust::MAX_SIGNED;

/// How many fetched bundles are kept.
const KEEP: usize = 5;

/// An http(s) client; for https, rustls with the system's root certificates
/// (which honours SSL_CERT_FILE and SSL_CERT_DIR). Plain http needs none.
fn http_agent(https: bool) -> Result<ureq::Agent, FetchError> {
    agent(https, Duration::from_secs(300), true)
}

/// [`http_agent`] with a time limit of its own for each request, and
/// every status returned as a response (report uploads and queries read
/// the server's error body).
pub fn http_client(https: bool, timeout: Duration) -> Result<ureq::Agent, FetchError> {
    agent(https, timeout, false)
}

fn agent(https: bool, timeout: Duration, status_as_error: bool) -> Result<ureq::Agent, FetchError> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(status_as_error);
    if !https {
        return Ok(config.build().into());
    }
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    type Roots = Result<Arc<Vec<Certificate<'static>>>, String>;
    static ROOTS: std::sync::OnceLock<Roots> = std::sync::OnceLock::new();
    let roots = ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let certs: Vec<Certificate<'static>> = found
                .certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            if certs.is_empty() {
                return Err(found
                    .errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "));
            }
            Ok(Arc::new(certs))
        })
        .clone()
        .map_err(FetchError::NoRootCertificates)?;
    Ok(config
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(roots))
                .build(),
        )
        .build()
        .into())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Opens a path or URL for reading.
fn open(what: &str) -> Result<Box<dyn Read>, FetchError> {
    if is_url(what) {
        let resp = http_agent(what.starts_with("https://"))?
            .get(what)
            .call()
            .map_err(|e| FetchError::Get {
                url: what.to_string(),
                source: Box::new(e),
            })?;
        Ok(Box::new(resp.into_body().into_reader()))
    } else {
        Ok(Box::new(std::fs::File::open(what).map_err(|source| {
            FetchError::Read {
                what: what.to_string(),
                source,
            }
        })?))
    }
}

/// A small published file (the .sha256 or the .sig), whole.
fn get_small(what: &str) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    open(what)?
        .take(64 << 10)
        .read_to_end(&mut body)
        .map_err(|source| FetchError::Read {
            what: what.to_string(),
            source,
        })?;
    Ok(body)
}

/// Streams `what` to `dest` (at most [`MAX_BUNDLE`]), returning its sha256.
fn download(what: &str, dest: &Path) -> Result<String, FetchError> {
    use sha2::{Digest, Sha256};
    let local = |op| {
        move |source| FetchError::Local {
            op,
            path: dest.to_path_buf(),
            source,
        }
    };
    let mut r = open(what)?.take(MAX_BUNDLE + 1);
    let mut f = std::fs::File::create(dest).map_err(local("creating"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|source| FetchError::Read {
            what: what.to_string(),
            source,
        })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_BUNDLE {
            return Err(FetchError::TooLarge {
                what: what.to_string(),
                max: MAX_BUNDLE,
            });
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(local("writing"))?;
    }
    f.sync_all().map_err(local("writing"))?;
    Ok(hex::encode(h.finalize()))
}

/// Checks a kept bundle's signature against the allowed signers as they are
/// now. Returns the signer.
fn reverify(state: &Path, sha: &str, allowed: &Path) -> Result<String, FetchError> {
    let tar = state.join("bundles").join(format!("{sha}.tar"));
    let signers =
        AllowedSigners::load(allowed).map_err(|e| FetchError::Untrusted(e.to_string()))?;
    signers
        .verify_file(&tar, Path::new(&sig_path(&tar.to_string_lossy())))
        .map_err(|e| FetchError::Untrusted(e.to_string()))
}

/// Fetches a bundle, its published sha256 and its signature from a path or
/// http(s):// URL, streams it to disk, verifies the hash and the signature
/// against the allowed signers, refuses it when it is older than the newest
/// bundle this host converged (whatever the cache holds: the record is
/// kiln's, not the cache's), and only then unpacks it under
/// `state/bundles/<sha>`. Returns the sha and the bundle's metadata.
fn fetch(
    source: &str,
    state: &Path,
    allowed: &Path,
    log: &dyn Fn(&str),
) -> Result<(String, Option<BundleMeta>), FetchError> {
    let untrusted = |e: &dyn std::fmt::Display| FetchError::Untrusted(e.to_string());
    let published = get_small(&format!("{source}.sha256"))?;
    let want = String::from_utf8_lossy(&published)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FetchError::NoSha256(source.to_string()));
    }
    let newest = crate::serial::recorded(&Target::host()).map_err(|e| untrusted(&e))?;
    let admit = |meta: Option<&BundleMeta>| {
        crate::serial::admit(newest.as_ref(), meta, source).map_err(|e| e.to_string())
    };
    let dir = state.join("bundles");
    let unpacked = dir.join(&want);
    if unpacked.is_dir() {
        // Already have it: nothing to download, but its signature must
        // still count (a signer removed since is refused), and so must its
        // serial (a newer bundle may have converged since).
        reverify(state, &want, allowed)?;
        let meta = BundleMeta::load(&unpacked).map_err(|e| untrusted(&e))?;
        admit(meta.as_ref()).map_err(FetchError::Untrusted)?;
        return Ok((want, meta));
    }
    std::fs::create_dir_all(&dir).map_err(|source| FetchError::Local {
        op: "creating",
        path: dir.clone(),
        source,
    })?;
    let part = dir.join(format!("{want}.tar.part.{}", std::process::id()));
    let part_sig = PathBuf::from(sig_path(&part.to_string_lossy()));
    let result = (|| {
        let got = download(source, &part)?;
        if got != want {
            return Err(FetchError::Mismatch {
                bundle: source.to_string(),
                got,
                want: want.clone(),
            });
        }
        let sig = get_small(&sig_path(source)).map_err(|e| FetchError::Unsigned {
            bundle: source.to_string(),
            sig: sig_path(source),
            why: Box::new(e),
        })?;
        std::fs::write(&part_sig, &sig).map_err(|source| FetchError::Local {
            op: "writing",
            path: part_sig.clone(),
            source,
        })?;
        let who = AllowedSigners::load(allowed)
            .and_then(|s| s.verify_file(&part, &part_sig))
            // Name what was fetched, not the temporary file.
            .map_err(|e| {
                FetchError::Untrusted(e.to_string().replace(&part.display().to_string(), source))
            })?;
        log(&format!("{source}: bundle {want} signed by {who}"));
        let tar = dir.join(format!("{want}.tar"));
        let tar_sig = sig_path(&tar.to_string_lossy());
        std::fs::rename(&part_sig, &tar_sig)
            .and_then(|_| std::fs::rename(&part, &tar))
            .map_err(|source| FetchError::Local {
                op: "keeping",
                path: tar.clone(),
                source,
            })?;
        unpack(&tar, source, &unpacked, admit)
            .map_err(FetchError::Bundle)
            .inspect_err(|_| {
                // Refused: nothing of it is kept.
                let _ = std::fs::remove_file(&tar);
                let _ = std::fs::remove_file(&tar_sig);
            })
    })();
    let _ = std::fs::remove_file(&part);
    let _ = std::fs::remove_file(&part_sig);
    let meta = result?;
    prune(&dir);
    Ok((want, meta))
}

/// Keeps the [`KEEP`] newest bundles in `dir`.
fn prune(dir: &Path) {
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(KEEP);
    for (_, p) in &old[..excess] {
        let _ = std::fs::remove_dir_all(p);
        let _ = std::fs::remove_file(p.with_extension("tar"));
        let _ = std::fs::remove_file(p.with_extension("tar.sig"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_without_a_published_sha256_names_the_file_to_publish() {
        let d = tempfile::tempdir().unwrap();
        let bundle = d.path().join("b.tar");
        let e = get_small(&format!("{}.sha256", bundle.display())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("reading {}.sha256: ", bundle.display())),
            "{e}"
        );
        std::fs::write(d.path().join("b.tar.sha256"), "not a hash\n").unwrap();
        let e = fetch(
            &bundle.to_string_lossy(),
            &d.path().join("state"),
            &d.path().join("allowed_signers"),
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}.sha256 holds no sha256", bundle.display())
        );
    }
}
