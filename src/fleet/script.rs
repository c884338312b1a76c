//! The shell that runs on a host before kiln does: the scripts that check
//! and install what a host lacks.

use super::host::Payload;
use super::inventory::Host;
use super::ssh::q;

pub const BIN_DIR: &str = "/var/lib/kiln/bin";
pub const BUNDLE_DIR: &str = "/var/lib/kiln/bundles";
/// Exit code of the upload script when the file's hash differs on the host.
pub const HASH_MISMATCH: i32 = 97;
/// Exit code of a host script when the kiln binary on the host no longer
/// has the hash it was uploaded with: it is not run.
pub const BINARY_ALTERED: i32 = 98;
/// Exit code of the upload script when the host refuses the bundle's
/// signature.
pub const SIGNATURE_REFUSED: i32 = 96;
/// Exit code of the upload script when the host refuses to unpack the
/// bundle: a member it may not hold, or a serial older than it converged.
pub const BUNDLE_REFUSED: i32 = 95;

/// The node argument of a host's converge: its node file in the bundle
/// `$R`, which the bundle's signature covers. Nothing about the node
/// (roles, attributes) travels on the command line, where it would be
/// unsigned.
pub fn node_args(host: &Host) -> String {
    let node = super::bundle::node_path(std::path::Path::new(""), &host.fqdn);
    format!(" --node \"$R\"/{}", q(&node.to_string_lossy()))
}

pub const NEED: &str = "kiln-need:";

/// One remote script for the whole no-op path, so that a host that already
/// has this kiln and this policy costs one ssh exec: check what the host
/// has (or say what it needs), converge, keep the current links, and run the
/// health checks after a successful converge. Each build of a bundle has a
/// serial of its own, so a host whose current bundle holds the same policy
/// (the same content digest in its signed metadata), and recorded that
/// policy as the newest it converged, converges that one.
pub fn host_script(host: &Host, p: &Payload, why_run: bool) -> String {
    let node = node_args(host);
    let mut s = format!(
        "K={k}; R={r}; need=''; [ -x \"$K\" ] || need=\"$need binary\"; \
         if ! {{ [ -f \"$R.tar\" ] && [ -d \"$R\" ]; }}; then \
         C={BUNDLE_DIR}/$(readlink {BUNDLE_DIR}/current 2>/dev/null); \
         if [ -f \"$C.tar\" ] && grep -qxF {same} \"$C/{meta}\" 2>/dev/null \
         && grep -qF {recorded} {record} 2>/dev/null; then R=$C; \
         else need=\"$need bundle\"; fi; fi; \
         if [ -n \"$need\" ]; then echo \"{NEED}$need\"; exit 0; fi; \
         {check} \
         \"$K\" --repo \"$R\" verify --converge --json{why}{node}; rc=$?; ",
        k = q(&p.remote_kiln()),
        r = q(&p.remote_repo()),
        same = q(&crate::serial::BundleMeta::content_line(&p.bundle_content)),
        recorded = q(&crate::serial::BundleMeta::record_content_line(
            &p.bundle_content
        )),
        record = crate::serial::RECORD,
        meta = crate::serial::META,
        why = if why_run { " --why-run" } else { "" },
        check = check_binary(p),
    );
    if !why_run {
        // What the host last converged to: the agent's default source and
        // the binary the kiln cookbook links to /usr/local/bin/kiln.
        s.push_str(&format!(
            "ln -sfn kiln.{b} {BIN_DIR}/kiln.new && mv -Tf {BIN_DIR}/kiln.new {BIN_DIR}/kiln; \
             ln -sfn \"${{R##*/}}\" {BUNDLE_DIR}/current.new && mv -Tf {BUNDLE_DIR}/current.new {BUNDLE_DIR}/current; ",
            b = p.binary_sha,
        ));
    }
    s.push_str("exit $rc");
    s
}

/// A remote script fragment that stops (exit [`BINARY_ALTERED`]) unless the
/// kiln binary `$K` still has the hash it was uploaded with: a binary changed
/// on the host after upload is never run.
pub fn check_binary(p: &Payload) -> String {
    format!(
        "got=$(sha256sum < \"$K\" | cut -d' ' -f1); if [ \"$got\" != {sha} ]; then \
         echo \"$K has sha256 $got, not {sha} as uploaded: altered on the host, not run\" >&2; \
         exit {BINARY_ALTERED}; fi;",
        sha = p.binary_sha,
    )
}

/// A remote script fragment that verifies the uploaded bundle `$T` with the
/// (just checked) kiln binary against the host's allowed_signers, before
/// anything unpacks it. On a host with no allowed_signers yet, the bundle's
/// own `kiln` cookbook copy is the start (first contact over a checked
/// host key, as with `--accept-new-host-keys`).
pub fn check_signature(p: &Payload) -> String {
    match &p.bundle_sig {
        None => String::new(),
        Some(sig) => format!(
            "K={k}; {check} printf '%s\\n' {sig} > \"$T.sig\"; \
             if ! \"$K\" verify-bundle \"$T\" --signature \"$T.sig\" --allowed-signers {allowed} --first-contact >/dev/null; then \
             rm -f \"$T\" \"$T.sig\"; exit {SIGNATURE_REFUSED}; fi; mv -f \"$T.sig\" {dest_sig}; ",
            k = q(&p.remote_kiln()),
            check = check_binary(p),
            sig = q(sig.trim()),
            allowed = q(crate::trust::ALLOWED_SIGNERS),
            dest_sig = q(&format!("{}.tar.sig", p.remote_repo())),
        ),
    }
}

/// A remote script that keeps the `keep` newest `PREFIX*SUFFIX` files of
/// `dir` (and for bundles their unpacked directories), never the one the
/// `current` link points at. Runs only when something new arrives.
pub fn prune(dir: &str, prefix: &str, suffix: &str, current: &str, keep: usize) -> String {
    format!(
        "(cd {dir} && cur=$(readlink {current} 2>/dev/null); \
         ls -1t {prefix}*{suffix} 2>/dev/null | tail -n +{n} | while read -r f; do \
         b=${{f%{suffix}}}; [ \"$b\" = \"$cur\" ] || [ \"$f\" = \"$cur\" ] || rm -rf \"$f\" \"$b\"; done) || true",
        n = keep + 1,
    )
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
        let script = prune(&dir.display().to_string(), "", ".tar", "current", 2);
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(st.success());
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "a.tar", "c", "c.tar", "current", "d", "d.tar"]);
    }
}
