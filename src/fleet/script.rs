//! The only shell a host runs for the fleet, because it runs before the
//! right kiln is there: say what the host lacks, check the kiln binary and
//! hand it the request (`kiln __host`), or take an upload. Its answers are
//! [`HostReport`]s made here, so that the controller parses every answer
//! in one place.

use super::payload::Payload;
use super::protocol::{BIN_DIR, BUNDLE_DIR, HostFailure, HostReport, HostRequest, HostState};
use crate::platform::target::shell_quote as q;

/// Stands for a shell value in a report or request made here.
const HOLE: &str = "@kiln-hole@";

/// Holes for several shell values, told apart.
fn hole(n: usize) -> String {
    format!("@kiln-hole-{n}@")
}

/// A `printf` of `json`, with the shell value `var` in its [`HOLE`].
fn say(json: &str, var: &str) -> String {
    say_all(&json.replace(HOLE, &hole(0)), &[var])
}

/// A `printf` of `json`, with the shell value `vars[n]` in [`hole`]`(n)`,
/// wherever serialization put each. The values must need no JSON escape.
fn say_all(json: &str, vars: &[&str]) -> String {
    let mut at: Vec<(usize, usize)> = (0..vars.len())
        .filter_map(|n| Some((json.find(&hole(n))?, n)))
        .collect();
    at.sort();
    let mut format = String::from("%s");
    let mut args = Vec::new();
    let mut from = 0;
    for (pos, n) in at {
        args.push(q(&json[from..pos]));
        args.push(format!("\"{}\"", vars[n]));
        format.push_str("%s%s");
        from = pos + hole(n).len();
    }
    args.push(q(&json[from..]));
    format!("printf '{format}\\n' {}", args.join(" "))
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

/// What `fleet status` runs: the request on stdin goes to the kiln the
/// host last converged with, once its hash is the one in its name. Without
/// one that may run, the answer says why, with the release and last run
/// (what the shell can read without kiln).
pub fn status() -> String {
    let answer = |failure| {
        let doc = HostReport {
            state: Some(HostState {
                release: hole(3),
                last_run: hole(4),
                fingerprint: None,
            }),
            ..HostReport::failed(failure)
        };
        say_all(&doc.to_json(), &["$K", "$got", "$S", "$rel", "$last"])
    };
    format!(
        "K=$(readlink -f {BIN_DIR}/kiln); case \"${{K##*/}}\" in kiln.*) S=${{K##*/kiln.}};; *) S=;; esac; got=; \
         if [ -x \"$K\" ]; then \
         if [ -n \"$S\" ]; then got=$(sha256sum < \"$K\" | cut -d' ' -f1); fi; \
         if [ \"$got\" = \"$S\" ]; then exec \"$K\" __host; fi; fi; \
         rel=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | head -n 1 | tr -d '\"\\\\\\000-\\037'); \
         last=$(tr -d '\\000-\\037' < {LAST_RUN} 2>/dev/null | sed 's/\\\\/\\\\\\\\/g; s/\"/\\\\\"/g'); \
         if [ -x \"$K\" ]; then {altered}; else {none}; fi",
        LAST_RUN = crate::engine::LAST_RUN,
        altered = answer(HostFailure::BinaryAltered {
            path: hole(0),
            found: hole(1),
            expected: hole(2),
        }),
        none = answer(HostFailure::Need {
            binary: true,
            bundle: false,
        }),
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
            report_to: None,
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
    fn status_without_a_kiln_to_run_says_so_with_what_the_shell_can_read() {
        if std::path::Path::new(BIN_DIR).join("kiln").exists() {
            eprintln!("skipped: this machine has a fleet kiln in {BIN_DIR}");
            return;
        }
        let r = run(&status(), b"{}\n");
        assert_eq!(
            r.failure,
            Some(HostFailure::Need {
                binary: true,
                bundle: false
            })
        );
        let release = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
            .unwrap_or_default()
            .replace('"', "");
        assert_eq!(r.state.unwrap().release, release);
    }

    #[test]
    fn holes_take_shell_values_wherever_serialization_put_them() {
        let json = format!(r#"{{"b":"{}","a":"x{}y"}}"#, hole(0), hole(1));
        let r = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "one=1; two='2 \"'; {}",
                say_all(&json, &["$one", "$two"])
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.stdout),
            "{\"b\":\"1\",\"a\":\"x2 \"y\"}\n"
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
