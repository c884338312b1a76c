//! The host's end of the fleet protocol: `kiln __host` answers one
//! [`HostRequest`] with one [`HostReport`]. It runs as the kiln binary the
//! controller sent (for a status, the one the host last converged with),
//! once the shell in [`super::script`] found it unaltered.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use super::bundle::BundleError;
use super::protocol::{BIN_DIR, BUNDLE_DIR};
use super::protocol::{BundleRef, HostFailure, HostReport, HostRequest};
use crate::engine::{self, Converge, Event};
use crate::error::Error;
use crate::platform::target::Target;
use crate::serial::BundleMeta;

/// The longest request line read: a request is a few hundred bytes, the
/// signature included.
const MAX_REQUEST: u64 = 1 << 20;

/// Reads the request (one JSON line) from `input` and answers it.
pub fn answer(input: &mut impl BufRead) -> HostReport {
    let mut line = String::new();
    if let Err(e) = input.by_ref().take(MAX_REQUEST).read_line(&mut line) {
        return HostReport::failed(HostFailure::Host(format!("reading the request: {e}")));
    }
    match serde_json::from_str::<HostRequest>(&line) {
        Err(e) => HostReport::failed(HostFailure::Host(format!(
            "the request is not one this kiln reads ({e}): the controller and the host run different builds"
        ))),
        Ok(HostRequest::Converge {
            bundle,
            fqdn,
            why_run,
            binary_sha,
            report_to,
        }) => {
            let doc = converge(&bundle, &fqdn, why_run, &binary_sha);
            if let (Some(url), Some(report), false) = (&report_to, &doc.converge, why_run) {
                let sent = crate::outbox::Sent {
                    interval: None,
                    checks: doc.checks.clone(),
                };
                let mut warn = |w: String| eprintln!("warning: {w}");
                crate::outbox::report_run(&Target::host(), report, url, &sent, &mut warn);
            }
            doc
        }
        Ok(HostRequest::Receive {
            bundle,
            upload,
            signature,
        }) => match receive(&bundle, Path::new(&upload), signature.as_deref()) {
            Ok(()) => HostReport {
                success: true,
                ..HostReport::default()
            },
            Err(f) => HostReport::failed(f),
        },
        Ok(HostRequest::Status { fqdn }) => status(&fqdn),
    }
}

/// The host's release, last run and fingerprint, then a why-run of the
/// policy it last converged, as its node file in that bundle describes it.
fn status(fqdn: &str) -> HostReport {
    let target = Target::host();
    let release = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.replace('"', ""))
        .unwrap_or_default();
    let last = engine::Report::load_last(&target).ok().flatten();
    let fingerprint = last.as_ref().and_then(|l| {
        let mut fp = crate::fingerprint::compute(&target, &l.managed_ids()?);
        fp.substitutions = l.substitutions.clone();
        Some(fp)
    });
    let state = super::protocol::HostState {
        release,
        last_run: std::fs::read_to_string(engine::LAST_RUN).unwrap_or_default(),
        fingerprint,
    };
    let repo = PathBuf::from(format!("{BUNDLE_DIR}/current/"));
    let mut doc = if repo.is_dir() {
        let c = Converge {
            node: Some(super::bundle::node_path(&repo, fqdn)),
            why_run: true,
            ..Converge::roles(&repo, &[])
        };
        let mut doc = HostReport::default();
        if let Err(e) = converge_and_check(&c, &mut doc) {
            doc.failure = Some(HostFailure::Converge(printed(&e)));
        }
        doc
    } else {
        HostReport::failed(HostFailure::Need {
            binary: false,
            bundle: true,
        })
    };
    doc.state = Some(state);
    doc
}

/// An error as `kiln` prints it on stderr, for a report that carries it.
fn printed(e: &Error) -> String {
    match e {
        Error::Policy(_) => e.to_string(),
        _ => format!("error: {e}"),
    }
}

/// Converges with the bundle, then keeps what this host converged with as
/// its current kiln and bundle (the agent's default source, the binary the
/// kiln cookbook links to /usr/local/bin/kiln), whether the run succeeded
/// or not, as a real run recorded it.
fn converge(bundle: &BundleRef, fqdn: &str, why_run: bool, binary_sha: &str) -> HostReport {
    let Some(repo) = resolve(bundle) else {
        return HostReport::failed(HostFailure::Need {
            binary: false,
            bundle: true,
        });
    };
    let c = Converge {
        node: Some(super::bundle::node_path(&repo, fqdn)),
        why_run,
        ..Converge::roles(&repo, &[])
    };
    let mut doc = HostReport::default();
    let ran = converge_and_check(&c, &mut doc);
    if !why_run {
        let name = repo.file_name().unwrap_or_default().to_string_lossy();
        keep_current(
            Path::new(BIN_DIR),
            "kiln",
            &format!("kiln.{binary_sha}"),
            |dir| prune(dir, "kiln.", "", "kiln", 3),
        );
        keep_current(Path::new(BUNDLE_DIR), "current", &name, |_| {});
    }
    if let Err(e) = ran {
        doc.failure = Some(HostFailure::Converge(printed(&e)));
    }
    doc
}

/// The converge, and the roles' verify checks after a successful real one.
fn converge_and_check(c: &Converge, doc: &mut HostReport) -> Result<(), Error> {
    let prepared = engine::prepare(c)?;
    let report = prepared.apply(&mut |e| {
        if let Event::Warning(w) = e {
            eprintln!("warning: {w}");
        }
    })?;
    let ok = report.success;
    doc.converge = Some(report);
    if c.why_run {
        doc.desired = engine::desired_digests(&prepared.policy);
    }
    if !ok || c.why_run {
        return Ok(());
    }
    let checks = crate::verify::run_all(
        &prepared.policy.verify,
        &prepared.target,
        &prepared.policy.pins,
    );
    *doc = HostReport {
        converge: doc.converge.take(),
        desired: std::mem::take(&mut doc.desired),
        ..HostReport::checks(checks)
    };
    Ok(())
}

/// The unpacked bundle to converge: this one, or the current one when it
/// holds the same policy (another build of it) and this host recorded that
/// policy as the newest it converged.
fn resolve(bundle: &BundleRef) -> Option<PathBuf> {
    let dir = Path::new(BUNDLE_DIR);
    let this = dir.join(&bundle.sha256);
    if tar_of(&this).is_file() && this.is_dir() {
        return Some(this);
    }
    let current = dir.join(std::fs::read_link(dir.join("current")).ok()?);
    let holds = |m: Option<BundleMeta>| m.is_some_and(|m| m.content == bundle.content);
    let same = tar_of(&current).is_file()
        && holds(BundleMeta::load(&current).ok().flatten())
        && holds(crate::serial::recorded(&Target::host()).ok().flatten());
    same.then_some(current)
}

fn tar_of(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(".tar");
    PathBuf::from(name)
}

/// Points the link `dir/name` at `to` (through a new link renamed over it,
/// so that it never is missing); when it moved, `pruned` tidies `dir`.
fn keep_current(dir: &Path, name: &str, to: &str, pruned: impl FnOnce(&Path)) {
    let link = dir.join(name);
    if std::fs::read_link(&link).is_ok_and(|now| now == Path::new(to)) {
        return;
    }
    let new = dir.join(format!("{name}.new"));
    let _ = std::fs::remove_file(&new);
    if std::os::unix::fs::symlink(to, &new)
        .and_then(|()| std::fs::rename(&new, &link))
        .is_ok()
    {
        pruned(dir);
    }
}

/// Takes the bundle uploaded (its hash checked) to `part`: checks its
/// signature (on a host with no allowed_signers yet, against the bundle's
/// own `kiln` cookbook copy: first contact), names it `BUNDLE_DIR/SHA.tar`
/// and unpacks it once every member and its serial are admitted. Nothing
/// of a refused bundle stays.
fn receive(bundle: &BundleRef, part: &Path, signature: Option<&str>) -> Result<(), HostFailure> {
    let dir = Path::new(BUNDLE_DIR);
    let repo = dir.join(&bundle.sha256);
    let dest = tar_of(&repo);
    let path = dest.display().to_string();
    let mut sig = part.as_os_str().to_os_string();
    sig.push(".sig");
    let sig = PathBuf::from(sig);
    let gone = || {
        let _ = std::fs::remove_file(part);
        let _ = std::fs::remove_file(&sig);
    };
    if part.parent() != Some(dir) {
        gone();
        return Err(HostFailure::Host(format!(
            "{} is no upload in {BUNDLE_DIR}",
            part.display()
        )));
    }
    if let Some(text) = signature {
        let verified = std::fs::write(&sig, format!("{}\n", text.trim()))
            .map_err(|e| Error::Io {
                context: format!("writing {}", sig.display()),
                source: e,
            })
            .and_then(|()| {
                crate::trust::verify_bundle(
                    part,
                    &sig,
                    Path::new(crate::trust::ALLOWED_SIGNERS),
                    true,
                )
                .map(drop)
                .map_err(Error::from)
            });
        if let Err(e) = verified {
            gone();
            return Err(HostFailure::SignatureRefused {
                path,
                reason: printed(&e),
            });
        }
    }
    let placed = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(part, std::fs::Permissions::from_mode(0o644))
            .and_then(|()| std::fs::rename(part, &dest))
            .and_then(|()| match signature {
                Some(_) => std::fs::rename(&sig, crate::trust::sig_path(&path)),
                None => Ok(()),
            })
    };
    if let Err(e) = placed {
        gone();
        return Err(HostFailure::Host(format!("placing {path}: {e}")));
    }
    if let Err(e) = unpack(&dest, &repo) {
        let _ = std::fs::remove_file(&dest);
        let _ = std::fs::remove_file(crate::trust::sig_path(&path));
        return Err(HostFailure::BundleRefused {
            path,
            reason: printed(&e),
        });
    }
    prune(dir, "", ".tar", "current", 5);
    Ok(())
}

/// Unpacks a received bundle: every member is checked and the serial is
/// compared with this host's record before anything is unpacked.
fn unpack(file: &Path, dest: &Path) -> Result<(), Error> {
    let target = Target::host();
    let what = file.display().to_string();
    let newest = crate::serial::recorded(&target)?;
    super::bundle::unpack(file, &what, dest, |meta| {
        crate::serial::admit(newest.as_ref(), meta, &what).map_err(BundleError::from)
    })
    .map_err(|e| Error::Trust(Box::new(e)))?;
    Ok(())
}

/// Keeps the `keep` newest `PREFIX*SUFFIX` files of `dir` (and for bundles
/// their unpacked directories and signatures), never the one the `current`
/// link points at. Runs only when something new arrived.
fn prune(dir: &Path, prefix: &str, suffix: &str, current: &str, keep: usize) {
    let cur = std::fs::read_link(dir.join(current)).ok();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kept = name.starts_with(prefix)
                && name.ends_with(suffix)
                && name != current
                && !name.contains(".part.")
                && !name.ends_with(".new");
            let modified = e.metadata().ok()?.modified().ok()?;
            kept.then_some((modified, name))
        })
        .collect();
    found.sort_by(|a, b| b.cmp(a));
    for (_, name) in found.into_iter().skip(keep) {
        let base = &name[..name.len() - suffix.len()];
        if cur
            .as_deref()
            .is_some_and(|c| c == Path::new(base) || c == Path::new(&name))
        {
            continue;
        }
        let _ = std::fs::remove_file(dir.join(&name));
        let _ = std::fs::remove_file(dir.join(format!("{name}.sig")));
        let _ = std::fs::remove_dir_all(dir.join(base));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_and_the_current() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, sha) in ["a", "b", "c", "d"].iter().enumerate() {
            std::fs::write(dir.join(format!("{sha}.tar")), "x").unwrap();
            std::fs::create_dir(dir.join(sha)).unwrap();
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(dir.join(format!("{sha}.tar")))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        std::os::unix::fs::symlink("a", dir.join("current")).unwrap();
        prune(dir, "", ".tar", "current", 2);
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "a.tar", "c", "c.tar", "current", "d", "d.tar"]);
    }

    #[test]
    fn a_request_it_cannot_read_is_answered_not_crashed_on() {
        let r = answer(&mut std::io::Cursor::new(b"{\"do\":\"dance\"}\n".to_vec()));
        assert!(
            matches!(&r.failure, Some(HostFailure::Host(m)) if m.contains("different builds")),
            "{r:?}"
        );
    }
}
