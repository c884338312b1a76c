//! The only shell a host runs for the fleet, because it runs before the
//! right kiln is there: say what the host lacks, check the kiln binary and
//! hand it the request (`kiln __host`), or take an upload. Its answers are
//! [`HostReport`]s made here, so that the controller parses every answer
//! in one place.

use super::host::Payload;
use super::protocol::{HostFailure, HostReport, HostRequest};
use super::ssh::q;

pub const BIN_DIR: &str = "/var/lib/kiln/bin";
pub const BUNDLE_DIR: &str = "/var/lib/kiln/bundles";

/// Stands for a shell value in a report or request made here.
const HOLE: &str = "@kiln-hole@";

/// A `printf` of `json`, with the shell value `var` in its [`HOLE`].
fn say(json: &str, var: &str) -> String {
    let (before, after) = json.split_once(HOLE).unwrap_or((json, ""));
    format!("printf '%s%s%s\\n' {} \"{var}\" {}", q(before), q(after))
}

fn failed(f: HostFailure) -> String {
    say(&HostReport::failed(f).to_json(), "$got")
}

/// Stops unless the kiln binary `$K` still has the hash it was uploaded
/// with: a binary changed on the host after upload is never run.
fn check_binary(p: &Payload, cleanup: &str) -> String {
    format!(
        "got=$(sha256sum < \"$K\" | cut -d' ' -f1); \
         if [ \"$got\" != {sha} ]; then {cleanup}{altered}; exit 0; fi; ",
        sha = p.binary_sha,
        altered = failed(HostFailure::BinaryAltered {
            path: p.remote_kiln(),
            found: HOLE.into(),
            expected: p.binary_sha.clone(),
        }),
    )
}

/// What the host lacks, said before anything there is hash-checked; then
/// the request on stdin goes to the host's kiln, once its hash is checked.
/// A host whose current bundle holds the same policy (the same content
/// digest in its signed metadata), and recorded that policy as the newest
/// it converged, lacks no bundle: it converges that one.
pub fn converge(p: &Payload) -> String {
    let same = crate::serial::BundleMeta::content_line(&p.bundle_content);
    let recorded = crate::serial::BundleMeta::record_content_line(&p.bundle_content);
    let need = |binary, bundle| failed(HostFailure::Need { binary, bundle });
    format!(
        "K={k}; R={r}; got=; b=; u=; [ -x \"$K\" ] || b=1; \
         if ! {{ [ -f \"$R.tar\" ] && [ -d \"$R\" ]; }}; then \
         C={BUNDLE_DIR}/$(readlink {BUNDLE_DIR}/current 2>/dev/null); \
         {{ [ -f \"$C.tar\" ] && grep -qxF {same} \"$C/{meta}\" 2>/dev/null \
         && grep -qF {recorded} {record} 2>/dev/null; }} || u=1; fi; \
         if [ -n \"$b$u\" ]; then \
         if [ -z \"$u\" ]; then {b}; elif [ -z \"$b\" ]; then {u}; else {bu}; fi; exit 0; fi; \
         {check}exec \"$K\" __host",
        k = q(&p.remote_kiln()),
        r = q(&p.remote_repo()),
        same = q(&same),
        recorded = q(&recorded),
        record = crate::serial::RECORD,
        meta = crate::serial::META,
        b = need(true, false),
        u = need(false, true),
        bu = need(true, true),
        check = check_binary(p, ""),
    )
}

/// Streams stdin to `dest` on the host through a temporary name `$T`,
/// checks its sha256 there, then runs `then`.
fn upload(dest: &str, sha: &str, then: &str) -> String {
    let dir = std::path::Path::new(dest)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    format!(
        "set -e; umask 022; mkdir -p {dir}; T={d}.part.$$; cat > \"$T\"; \
         got=$(sha256sum \"$T\" | cut -d' ' -f1); \
         if [ \"$got\" != {sha} ]; then rm -f \"$T\"; {mismatch}; exit 0; fi; {then}",
        dir = q(&dir),
        d = q(dest),
        mismatch = failed(HostFailure::HashMismatch {
            path: dest.to_string(),
            found: HOLE.into(),
            expected: sha.to_string(),
        }),
    )
}

/// Installs the kiln binary sent on stdin under its name.
pub fn upload_binary(p: &Payload) -> String {
    let dest = p.remote_kiln();
    let ok = HostReport {
        success: true,
        ..HostReport::default()
    }
    .to_json();
    upload(
        &dest,
        &p.binary_sha,
        &format!(
            "chmod 0755 \"$T\"; mv -f \"$T\" {d}; printf '%s\\n' {ok}",
            d = q(&dest),
            ok = q(&ok),
        ),
    )
}

/// Takes the bundle sent on stdin, then hands it to the (checked) kiln
/// binary, which verifies, unpacks or refuses it.
pub fn upload_bundle(p: &Payload) -> String {
    let request = HostRequest::Receive {
        bundle: p.bundle_ref(),
        upload: HOLE.into(),
        signature: p.bundle_sig.as_ref().map(|s| s.trim().to_string()),
    };
    let request = serde_json::to_string(&request).unwrap_or_default();
    upload(
        &format!("{}.tar", p.remote_repo()),
        &p.bundle_sha,
        &format!(
            "K={k}; {check}{send} | \"$K\" __host",
            k = q(&p.remote_kiln()),
            check = check_binary(p, "rm -f \"$T\"; "),
            send = say(&request, "$T"),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, OnceLock};

    fn payload() -> Payload {
        Payload {
            bundle: Arc::new(b"bundle".to_vec()),
            bundle_sha: "00bundle".into(),
            bundle_content: "c0ntent".into(),
            bundle_sig: Some("-----BEGIN SSH SIGNATURE-----\nx'y\n".into()),
            binary_path: "/nonexistent".into(),
            binary_sha: "00kiln-never-installed".into(),
            binary: OnceLock::new(),
        }
    }

    fn run(script: &str, input: &[u8]) -> HostReport {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        HostReport::parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    #[test]
    fn a_host_without_kiln_answers_what_it_lacks() {
        let r = run(&converge(&payload()), b"{}\n");
        assert_eq!(
            r.failure,
            Some(HostFailure::Need {
                binary: true,
                bundle: true
            })
        );
    }

    #[test]
    fn an_upload_that_arrives_altered_is_answered_with_both_hashes() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("kiln.x").display().to_string();
        let r = run(&upload(&dest, "ab", ":"), b"sent");
        let Some(HostFailure::HashMismatch {
            path,
            found,
            expected,
        }) = r.failure
        else {
            panic!("{r:?}");
        };
        assert_eq!((path, expected), (dest, "ab".to_string()));
        assert_eq!(found, crate::digest::sha256_hex(b"sent"));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
