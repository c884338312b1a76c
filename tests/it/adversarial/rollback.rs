//! Rollback protection (issue 21, item 5) and what a bundle may hold
//! (item 9): a hostile bundle server that serves an older, validly signed
//! bundle is refused, by the serial the bundle's signature covers and the
//! newest serial the host recorded outside the agent's cache; a bundle
//! whose members would leave it, are special files, or appear twice is
//! refused whole, and nothing of it is unpacked.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::fleet::{Fleet, HostRoot, kiln_binary, spec};
use crate::support::*;

/// Where a host keeps the newest bundle serial it converged.
const RECORD: &str = "var/lib/kiln/bundle_serial.json";

/// A policy that writes one file: which bundle converged shows in it.
fn site(text: &str) -> Repo {
    Repo::new()
        .role("web", "run_list = [\"recipe[site]\"]")
        .recipe(
            "site",
            "default",
            &format!("[[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"{text}\\n\"\n"),
        )
        .whitelist("[packages]\n")
}

/// A host root with kiln installed, trusting one signing key, and a
/// sentinel directory outside it that nothing may touch.
struct Host {
    root: HostRoot,
    keys: tempfile::TempDir,
    sentinel: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let root = HostRoot::new();
        let r = root.path();
        std::fs::copy(kiln_binary(), r.join("usr/local/bin/kiln")).unwrap();
        let keys = tempfile::tempdir().unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
            .arg(keys.path().join("key"))
            .status()
            .unwrap();
        assert!(st.success());
        let public = std::fs::read_to_string(keys.path().join("key.pub")).unwrap();
        std::fs::create_dir_all(r.join("etc/kiln")).unwrap();
        std::fs::write(
            r.join("etc/kiln/allowed_signers"),
            format!("ops@example.com namespaces=\"kiln-bundle\" {public}"),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("srv/pub")).unwrap();
        let sentinel = tempfile::tempdir().unwrap();
        std::fs::write(sentinel.path().join("keep"), "untouched\n").unwrap();
        Host {
            root,
            keys,
            sentinel,
        }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn key(&self) -> PathBuf {
        self.keys.path().join("key")
    }

    /// `kiln fleet bundle` of `repo` (and `args`) into a directory of its own.
    fn build(&self, repo: &Repo, args: &[&str]) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        kiln()
            .repo(repo)
            .args(["fleet", "bundle", "--out"])
            .arg(out.path())
            .arg("--signing-key")
            .arg(self.key())
            .args(args)
            .run()
            .success();
        out
    }

    /// What the server at /srv/pub serves from now on: a built bundle.
    fn serve(&self, built: &Path) {
        for name in ["bundle.tar", "bundle.tar.sha256", "bundle.tar.sig"] {
            std::fs::copy(built.join(name), self.path().join("srv/pub").join(name)).unwrap();
        }
    }

    /// `kiln agent --once` inside the root, as the host runs it.
    fn agent(&self, source: &str) -> (bool, String) {
        let r = self.path();
        let out = Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--kill-child"])
            .arg(format!("--mount-proc={}", r.join("proc").display()))
            .arg("chroot")
            .arg(r)
            .args(["/usr/local/bin/kiln", "agent", "--once", "--splay", "0"])
            .args(["--role", "web", "--fqdn", "agent01.example.com"])
            .args(["--source", source])
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn conf(&self) -> String {
        std::fs::read_to_string(self.path().join("etc/kiln-site.conf")).unwrap_or_default()
    }

    fn sentinel_hash(&self) -> String {
        tree_hash(self.sentinel.path())
    }
}

/// The serial a built bundle carries, as `kiln fleet bundle` prints it.
fn serial_of(built: &Path) -> u64 {
    let mut a = tar::Archive::new(std::fs::File::open(built.join("bundle.tar")).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap() == Path::new("kiln-bundle.toml") {
            let mut text = String::new();
            e.read_to_string(&mut text).unwrap();
            let t: toml::Table = toml::from_str(&text).unwrap();
            return t["serial"].as_integer().unwrap() as u64;
        }
    }
    panic!("no kiln-bundle.toml in {}", built.display());
}

/// The reviewer's attack: after the agent converged v2 from a URL, the
/// same URL serves the older, validly signed v1. Refused, the host keeps
/// v2, and again on the next run.
#[test]
fn an_agent_refuses_an_older_bundle_from_its_server() {
    need!(DebianRoot);
    let host = Host::new();
    let server = StaticServer::serve(&host.path().join("srv/pub"));
    let url = format!("{}bundle.tar", server.url());
    let v1 = host.build(&site("one"), &[]);
    let v2 = host.build(&site("two"), &[]);
    let before = host.sentinel_hash();

    host.serve(v2.path());
    let (ok, first) = host.agent(&url);
    assert!(ok, "{first}");
    assert_eq!(host.conf(), "two\n");

    // The server turns hostile: v1 again, its signature valid. Refused.
    host.serve(v1.path());
    let (ok, log) = host.agent(&url);
    assert!(!ok, "{log}");
    assert_eq!(host.conf(), "two\n");
    let (serial1, serial2) = (serial_of(v1.path()), serial_of(v2.path()));
    assert!(serial1 < serial2);
    assert!(first.contains(&format!("serial {serial2}")), "{first}");
    assert!(
        log.contains(&format!("serial {serial1}"))
            && log.contains(&format!("serial {serial2}"))
            && log.contains("new bundle with a higher serial"),
        "{log}"
    );

    // And on the next run, from its cache.
    let (ok, log) = host.agent(&url);
    assert!(!ok, "{log}");
    assert!(log.contains("older than"), "{log}");
    assert_eq!(host.conf(), "two\n");
    assert_eq!(host.sentinel_hash(), before);
    drop(server);
}

/// The same attack on an agent whose whole state (its bundle cache, its
/// last good bundle) was emptied after it converged v2: the record is not
/// in the cache, so v1 is still refused, and nothing converges.
#[test]
fn emptying_the_agents_cache_does_not_reset_the_serial() {
    need!(DebianRoot);
    let host = Host::new();
    let server = StaticServer::serve(&host.path().join("srv/pub"));
    let url = format!("{}bundle.tar", server.url());
    let v1 = host.build(&site("one"), &[]);
    let v2 = host.build(&site("two"), &[]);
    let before = host.sentinel_hash();
    host.serve(v2.path());
    let (ok, log) = host.agent(&url);
    assert!(ok, "{log}");

    std::fs::remove_dir_all(host.path().join("var/lib/kiln/agent")).unwrap();
    host.serve(v1.path());
    let etc = tree_hash(host.path().join("etc"));
    let (ok, log) = host.agent(&url);
    assert!(!ok, "{log}");
    assert_eq!(host.conf(), "two\n");
    assert_eq!(tree_hash(host.path().join("etc")), etc);
    assert!(log.contains("older than"), "{log}");
    assert!(
        !host
            .path()
            .join("var/lib/kiln/agent/bundles")
            .read_dir()
            .map(|mut d| d.any(|e| e.unwrap().path().is_dir()))
            .unwrap_or(false),
        "the refused bundle was unpacked"
    );
    assert_eq!(host.sentinel_hash(), before);
    drop(server);
}

/// A serial names one bundle: the same serial with other content is
/// refused, the same serial with the same content converges again.
#[test]
fn an_equal_serial_with_other_content_is_refused() {
    need!(DebianRoot);
    let host = Host::new();
    let first = host.build(&site("two"), &["--serial", "7000"]);
    host.serve(first.path());
    let (ok, log) = host.agent("/srv/pub/bundle.tar");
    assert!(ok, "{log}");
    assert_eq!(host.conf(), "two\n");
    assert_eq!(serial_of(first.path()), 7000);

    let other = host.build(&site("other"), &["--serial", "7000"]);
    host.serve(other.path());
    let (ok, log) = host.agent("/srv/pub/bundle.tar");
    assert!(!ok, "{log}");
    assert!(
        log.contains("serial 7000") && log.contains("other content"),
        "{log}"
    );
    assert_eq!(host.conf(), "two\n");

    // The same content again under the same serial (built anew): fine.
    let again = host.build(&site("two"), &["--serial", "7000"]);
    host.serve(again.path());
    std::fs::write(host.path().join("etc/kiln-site.conf"), "by hand\n").unwrap();
    let (ok, log) = host.agent("/srv/pub/bundle.tar");
    assert!(ok, "{log}");
    assert_eq!(host.conf(), "two\n");
}

/// A policy rollback is a new bundle: the old policy, built again, gets a
/// higher serial, and the host takes it and records it.
#[test]
fn a_rollback_published_as_a_new_bundle_is_accepted() {
    need!(DebianRoot);
    let host = Host::new();
    let v1 = host.build(&site("one"), &[]);
    let v2 = host.build(&site("two"), &[]);
    host.serve(v2.path());
    let (ok, log) = host.agent("/srv/pub/bundle.tar");
    assert!(ok, "{log}");
    host.serve(v1.path());
    let (ok, log) = host.agent("/srv/pub/bundle.tar");
    assert!(!ok, "{log}");
    assert_eq!(host.conf(), "two\n");

    let rollback = host.build(&site("one"), &[]);
    let serial = serial_of(rollback.path());
    assert!(serial > serial_of(v2.path()));
    host.serve(rollback.path());
    let (ok, log) = host.agent("/srv/pub/bundle.tar");
    assert!(ok, "{log}");
    assert_eq!(host.conf(), "one\n");
    let record = std::fs::read_to_string(host.path().join(RECORD)).unwrap();
    assert!(record.contains(&serial.to_string()), "{record}");
}

/// A bundle from before serials (validly signed, made by an older kiln)
/// is a rollback too, once the host recorded a serial.
#[test]
fn a_bundle_without_a_serial_is_refused_once_a_serial_is_recorded() {
    need!(DebianRoot);
    let host = Host::new();
    let now = host.build(&site("two"), &[]);
    host.serve(now.path());
    let (ok, log) = host.agent("/srv/pub/bundle.tar");
    assert!(ok, "{log}");
    // The same policy as an older kiln built it: no kiln-bundle.toml.
    let old = host.build(&site("one"), &[]);
    let mut b = tar::Builder::new(Vec::new());
    for (mut h, path, body) in members_of(old.path()) {
        if path != Path::new("kiln-bundle.toml") {
            b.append_data(&mut h, path, body.as_slice()).unwrap();
        }
    }
    publish_tar(&host, &b.into_inner().unwrap());
    let (ok, log) = host.agent("/srv/bad/bundle.tar");
    assert!(!ok, "{log}");
    assert!(log.contains("carries no serial"), "{log}");
    assert_eq!(host.conf(), "two\n");
}

/// A pushed host converges its current bundle again only while it holds
/// the policy the host recorded: once its agent converged a newer bundle
/// from elsewhere, a push of the old policy sends a new build of it (a
/// higher serial), which the host takes, instead of converging the stale
/// current bundle, which it would refuse.
#[test]
fn a_push_after_the_agent_moved_on_sends_a_new_build() {
    need!(Sshd);
    let mut f = Fleet::new(vec![spec("web01.example.com", &["web"])], |_| {});
    f.start();
    let root = f.host("web01.example.com").path().to_path_buf();
    let push = |repo: &Repo| {
        let o = f.kiln(&["converge", "--json"]).repo(repo).run().success();
        let r: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        r["hosts"][0].clone()
    };
    let one = site("one");
    assert_eq!(push(&one)["sent_bundle"], true);
    assert_eq!(push(&one)["sent_bundle"], false);
    assert_eq!(read(&root, "/etc/kiln-site.conf"), "one\n");

    // The host's agent converges a newer bundle published for it.
    kiln()
        .repo(&site("two"))
        .args(["fleet", "bundle", "--out"])
        .arg(root.join("srv/pub"))
        .arg("--inventory")
        .arg(f.inventory())
        .arg("--signing-key")
        .arg(f.dir.path().join("signing_key"))
        .run()
        .success();
    let out = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg("chroot")
        .arg(&root)
        .args(["/var/lib/kiln/bin/kiln", "agent", "--once", "--splay", "0"])
        .args(["--source", "/srv/pub/bundle.tar"])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert_eq!(read(&root, "/etc/kiln-site.conf"), "two\n");

    // The old policy pushed again: a new build, sent and taken.
    let o = f.kiln(&["converge", "--json"]).repo(&one).run().success();
    let r: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let h = &r["hosts"][0];
    assert_eq!(h["sent_bundle"], true, "{h:#}");
    assert_eq!(h["state"], "changed", "{h:#}");
    assert_eq!(read(&root, "/etc/kiln-site.conf"), "one\n");
    // fleet status shows the serial the host runs.
    let serial = r["bundle_serial"].as_u64().unwrap();
    f.kiln(&["status"])
        .repo(&one)
        .run()
        .success()
        .stdout_contains("SERIAL")
        .stdout_contains(&serial.to_string());
}

/// A built bundle unpacked by hand into `built/unpacked`, as a repository
/// to converge with `--root`.
fn unpacked(built: &Path) -> PathBuf {
    let dir = built.join("unpacked");
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(built.join("bundle.tar"))
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

/// `--root`: the record is kept in the target, and an older bundle
/// (unpacked by hand) is refused there before anything changes.
#[test]
fn a_root_target_keeps_its_own_record() {
    need!(DebianRoot);
    let host = Host::new();
    let root = TestRoot::new();
    let v1 = host.build(&site("one"), &[]);
    let v2 = host.build(&site("two"), &[]);
    let converge = |dir: &Path| {
        kiln()
            .arg("--repo")
            .arg(dir)
            .args(["converge", "--role", "web", "--root"])
            .arg(root.path())
            .run()
    };
    converge(&unpacked(v2.path())).success();
    assert_eq!(read(root.path(), "/etc/kiln-site.conf"), "two\n");
    let before = tree_hash(root.path());
    converge(&unpacked(v1.path()))
        .failure()
        .stderr_contains("older than");
    assert_eq!(tree_hash(root.path()), before);
    assert!(at(root.path(), &format!("/{RECORD}")).is_file());
    // Why-run says so too, and records nothing.
    kiln()
        .arg("--repo")
        .arg(v1.path().join("unpacked"))
        .args(["converge", "--why-run", "--role", "web", "--root"])
        .arg(root.path())
        .run()
        .failure()
        .stderr_contains("older than");
}

/// A link planted at the record's path in a `--root` tree leads nowhere
/// outside it: what it points at (a record that would refuse every
/// bundle) is neither read nor written, and the link is replaced.
#[test]
fn a_link_at_the_record_in_a_root_leads_nowhere() {
    need!(DebianRoot);
    let root = TestRoot::new();
    let sentinel = tempfile::tempdir().unwrap();
    let planted = sentinel.path().join("record.json");
    std::fs::write(
        &planted,
        "{\"serial\": 99999999999999999, \"created\": \"2999-01-01T00:00:00.000Z\", \"content\": \"x\"}",
    )
    .unwrap();
    let record = at(root.path(), &format!("/{RECORD}"));
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&planted, &record).unwrap();
    let before = tree_hash(sentinel.path());
    let out = tempfile::tempdir().unwrap();
    kiln()
        .repo(&site("two"))
        .args(["fleet", "bundle", "--allow-unsigned", "--out"])
        .arg(out.path())
        .run()
        .success();
    let dir = unpacked(out.path());
    kiln()
        .arg("--repo")
        .arg(&dir)
        .args(["converge", "--role", "web", "--root"])
        .arg(root.path())
        .run()
        .success();
    assert_eq!(tree_hash(sentinel.path()), before);
    let kept = std::fs::symlink_metadata(&record).unwrap();
    assert!(kept.is_file(), "{kept:?}");
    assert!(
        std::fs::read_to_string(&record)
            .unwrap()
            .contains("\"serial\"")
    );
}

// ---------------------------------------------------------------------------
// What a bundle may hold
// ---------------------------------------------------------------------------

/// A ustar header whose name (and link name) are written byte for byte, as
/// a hostile tool would, past the checks of the `tar` crate's setters.
fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, link: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(8).unwrap();
        h.set_device_minor(0).unwrap();
    }
    h.set_cksum();
    h
}

/// The members of a built bundle, as they are.
fn members_of(built: &Path) -> Vec<(tar::Header, PathBuf, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(built.join("bundle.tar")).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            (e.header().clone(), e.path().unwrap().into_owned(), body)
        })
        .collect()
}

/// Publishes `bytes` as a bundle at /srv/bad, with its sha256, signed by
/// the host's trusted key: only what is inside can be wrong.
fn publish_tar(host: &Host, bytes: &[u8]) {
    let dir = host.path().join("srv/bad");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bundle.tar");
    std::fs::write(&file, bytes).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    std::fs::write(
        dir.join("bundle.tar.sha256"),
        format!("{sha}  bundle.tar\n"),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("bundle.tar.sig"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "kiln-bundle", "-f"])
        .arg(host.key())
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A good bundle of `site("good")` with one more member, signed by the
/// host's trusted key and published at /srv/bad: only its members are bad.
fn publish_with(host: &Host, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
    let good = host.build(&site("good"), &[]);
    let mut b = tar::Builder::new(Vec::new());
    for (mut h, path, body) in members_of(good.path()) {
        b.append_data(&mut h, path, body.as_slice()).unwrap();
    }
    b.append(&raw_header(name, kind, data.len() as u64, link), data)
        .unwrap();
    publish_tar(host, &b.into_inner().unwrap());
}

/// Plants a bundle with one bad member; the agent refuses it whole, names
/// the bundle and the member, unpacks nothing, and converges nothing.
fn refused(name: &str, kind: tar::EntryType, data: &[u8], link: &str, why: &str) {
    let host = Host::new();
    publish_with(&host, name.as_bytes(), kind, data, link.as_bytes());
    let before = host.sentinel_hash();
    let etc = tree_hash(host.path().join("etc"));
    let (ok, log) = host.agent("/srv/bad/bundle.tar");
    assert!(!ok, "{log}");
    assert!(log.contains("/srv/bad/bundle.tar"), "{log}");
    assert!(log.contains(&format!("{name:?}")), "{log}");
    assert!(log.contains(why), "{log}");
    assert!(log.contains("nothing unpacked"), "{log}");
    assert_eq!(host.conf(), "");
    assert_eq!(tree_hash(host.path().join("etc")), etc);
    let cache = host.path().join("var/lib/kiln/agent/bundles");
    let kept: Vec<PathBuf> = cache
        .read_dir()
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(kept.iter().all(|p| !p.is_dir()), "unpacked: {kept:?}");
    assert!(!host.path().join("srv/pwned").exists());
    assert!(!host.path().join("pwned").exists());
    assert_eq!(host.sentinel_hash(), before);
}

#[test]
fn a_member_with_dot_dot_is_refused() {
    need!(DebianRoot);
    refused(
        "cookbooks/site/../../../../srv/pwned",
        tar::EntryType::Regular,
        b"escaped\n",
        "",
        "..",
    );
}

#[test]
fn an_absolute_member_is_refused() {
    need!(DebianRoot);
    refused(
        "/pwned",
        tar::EntryType::Regular,
        b"escaped\n",
        "",
        "absolute",
    );
}

#[test]
fn a_character_device_member_is_refused() {
    need!(DebianRoot);
    refused(
        "cookbooks/site/files/disk",
        tar::EntryType::Char,
        b"",
        "",
        "device",
    );
}

#[test]
fn a_block_device_member_is_refused() {
    need!(DebianRoot);
    refused(
        "cookbooks/site/files/sda",
        tar::EntryType::Block,
        b"",
        "",
        "device",
    );
}

#[test]
fn a_fifo_member_is_refused() {
    need!(DebianRoot);
    refused(
        "cookbooks/site/files/fifo",
        tar::EntryType::Fifo,
        b"",
        "",
        "FIFO",
    );
}

#[test]
fn a_symlink_member_is_refused() {
    need!(DebianRoot);
    refused(
        "cookbooks/site/files/passwd",
        tar::EntryType::Symlink,
        b"",
        "/etc/passwd",
        "symbolic link",
    );
}

#[test]
fn a_hard_link_member_is_refused() {
    need!(DebianRoot);
    refused(
        "cookbooks/site/files/shadow",
        tar::EntryType::Link,
        b"",
        "roles/web.toml",
        "hard link",
    );
}

#[test]
fn a_member_twice_is_refused() {
    need!(DebianRoot);
    refused(
        "cookbooks/site/recipes/default.toml",
        tar::EntryType::Regular,
        b"[[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"second copy\\n\"\n",
        "",
        "twice",
    );
}

// ---------------------------------------------------------------------------
// First contact, once
// ---------------------------------------------------------------------------

/// A fresh host often has no /etc/kiln at all when its first bundle
/// arrives: that first contact is remembered all the same, so once the
/// signer list the kiln cookbook installs is deleted, a bundle signed by
/// anyone, carrying its own list, is refused.
#[test]
fn first_contact_is_remembered_on_a_host_without_etc_kiln() {
    need!(DebianRoot);
    let host = Host::new();
    let intruder = tempfile::tempdir().unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "intruder", "-f"])
        .arg(intruder.path().join("key"))
        .status()
        .unwrap();
    assert!(st.success());
    let with_list = |key: &Path| {
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let repo = site("one")
            .metadata("kiln", "name = \"kiln\"\nversion = \"1.0.0\"\n")
            .cookbook_file(
                "kiln",
                "allowed_signers",
                format!("ops@example.com namespaces=\"kiln-bundle\" {public}"),
            );
        let out = tempfile::tempdir().unwrap();
        kiln()
            .repo(&repo)
            .args(["fleet", "bundle", "--out"])
            .arg(out.path())
            .arg("--signing-key")
            .arg(key)
            .run()
            .success();
        out
    };
    let ours = with_list(&host.key());
    let theirs = with_list(&intruder.path().join("key"));
    let d = tempfile::tempdir().unwrap();
    let allowed = d.path().join("etc/kiln/allowed_signers");
    let verify = |dir: &Path| {
        kiln()
            .arg("verify-bundle")
            .arg(dir.join("bundle.tar"))
            .arg("--allowed-signers")
            .arg(&allowed)
            .arg("--first-contact")
            .run()
    };
    verify(ours.path()).success();
    assert!(allowed.with_file_name("allowed_signers.trusted").is_file());
    verify(theirs.path())
        .failure()
        .stderr_contains("never returns to first contact");
}
