//! Signed distribution (issue 13): bundles are trusted for their OpenSSH
//! signature, not for where they came from. The agent fetches over https
//! from a local TLS server (a test CA), refuses forged, unsigned and
//! revoked-signer bundles and converges the last good one; fleet hosts
//! refuse an altered kiln binary and a bundle their allowed_signers does not
//! trust; the ssh transport refuses a foreign control directory and
//! ssh_options that touch host key checking.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fleet::{Fleet, HostRoot, kiln_binary, spec};
use crate::support::*;

fn keygen(path: &Path, comment: &str) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Signing keys and their allowed_signers lines.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new(names: &[&str]) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            keygen(&dir.path().join(n), n);
        }
        Keys { dir }
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An allowed_signers file trusting these keys.
    fn allowed(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| {
                let public = std::fs::read_to_string(self.key(n).with_extension("pub")).unwrap();
                format!("{n}@example.com namespaces=\"kiln-bundle\" {public}")
            })
            .collect()
    }
}

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

/// `kiln fleet bundle --out DIR --signing-key KEY`.
fn bundle(repo: &Repo, out: &Path, key: &Path) {
    kiln()
        .repo(repo)
        .args(["fleet", "bundle", "--out"])
        .arg(out)
        .arg("--signing-key")
        .arg(key)
        .run()
        .success()
        .stdout_contains("signed by SHA256:");
}

#[test]
fn bundle_signatures_interoperate_with_ssh_keygen() {
    let keys = Keys::new(&["ops", "other"]);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("pub");
    bundle(&site("one"), &out, &keys.key("ops"));
    let allowed = d.path().join("allowed_signers");
    std::fs::write(&allowed, keys.allowed(&["ops"])).unwrap();

    // kiln signs, ssh-keygen verifies.
    let v = Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-n",
            "kiln-bundle",
            "-I",
            "ops@example.com",
            "-f",
        ])
        .arg(&allowed)
        .arg("-s")
        .arg(out.join("bundle.tar.sig"))
        .stdin(std::fs::File::open(out.join("bundle.tar")).unwrap())
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "ssh-keygen -Y verify: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // ssh-keygen signs, kiln verifies; other namespaces and keys are refused.
    let copy = d.path().join("b.tar");
    std::fs::copy(out.join("bundle.tar"), &copy).unwrap();
    let sign = |key: &str, ns: &str| {
        let _ = std::fs::remove_file(d.path().join("b.tar.sig"));
        let st = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", ns, "-f"])
            .arg(keys.key(key))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
    };
    let verify = || {
        kiln()
            .arg("verify-bundle")
            .arg(&copy)
            .arg("--allowed-signers")
            .arg(&allowed)
            .run()
    };
    sign("ops", "kiln-bundle");
    verify()
        .success()
        .stdout_contains("signed by ops@example.com");
    sign("ops", "git");
    verify().failure().stderr_contains("namespace");
    sign("other", "kiln-bundle");
    verify()
        .failure()
        .stderr_contains("unknown or revoked signer");
    std::fs::remove_file(d.path().join("b.tar.sig")).unwrap();
    verify().failure().stderr_contains("unsigned");
}

#[test]
fn unsigned_bundles_are_not_published_unless_asked() {
    let repo = site("one");
    let d = tempfile::tempdir().unwrap();
    kiln()
        .repo(&repo)
        .args(["fleet", "bundle", "--out"])
        .arg(d.path().join("a"))
        .run()
        .failure()
        .stderr_contains("--signing-key")
        .stderr_contains("--allow-unsigned");
    kiln()
        .repo(&repo)
        .args(["fleet", "bundle", "--allow-unsigned", "--out"])
        .arg(d.path().join("b"))
        .run()
        .success()
        .stdout_contains("unsigned");
    assert!(!d.path().join("b/bundle.tar.sig").exists());
    // fleet converge: refused before any connection (nothing listens there).
    std::fs::write(d.path().join("known_hosts"), "").unwrap();
    std::fs::write(
        d.path().join("inventory.toml"),
        "known_hosts = \"known_hosts\"\n[hosts.\"web01.example.com\"]\naddress = \"127.0.0.1\"\nport = 9\nroles = [\"web\"]\n",
    )
    .unwrap();
    kiln()
        .repo(&repo)
        .args(["fleet", "converge", "--inventory"])
        .arg(d.path().join("inventory.toml"))
        .env("KILN_SSH_CONTROL_DIR", d.path().join("ctl"))
        .run()
        .failure()
        .stderr_contains("refusing to publish an unsigned bundle");
}

#[test]
fn a_foreign_control_directory_and_host_key_options_are_refused() {
    need!(Root);
    let repo = site("one");
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("known_hosts"), "").unwrap();
    let inv = d.path().join("inventory.toml");
    std::fs::write(
        &inv,
        "known_hosts = \"known_hosts\"\n[hosts.\"web01.example.com\"]\naddress = \"127.0.0.1\"\nport = 9\nroles = [\"web\"]\n",
    )
    .unwrap();
    // A control directory someone else made (nobody's) stops kiln.
    let ctl = d.path().join("ctl");
    std::fs::create_dir(&ctl).unwrap();
    std::os::unix::fs::chown(&ctl, Some(65534), Some(65534)).unwrap();
    for cmd in [&["status"][..], &["converge", "--allow-unsigned"][..]] {
        kiln()
            .repo(&repo)
            .arg("fleet")
            .args(cmd)
            .arg("--inventory")
            .arg(&inv)
            .env("KILN_SSH_CONTROL_DIR", &ctl)
            .run()
            .failure()
            .stderr_contains(&format!(
                "the ssh control directory {} is owned by uid 65534, not by you",
                ctl.display()
            ));
    }
    // One kiln makes is private.
    let own = d.path().join("own");
    kiln()
        .repo(&repo)
        .args(["fleet", "status", "--inventory"])
        .arg(&inv)
        .env("KILN_SSH_CONTROL_DIR", &own)
        .env("KILN_SSH_CONNECT_TIMEOUT", "1")
        .run()
        .failure();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&own).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // ssh_options: an allowlist; the error names the option, the file and
    // line, and what is allowed.
    std::fs::write(
        &inv,
        "known_hosts = \"known_hosts\"\nssh_options = [\n  \"ProxyJump=bastion\",\n  \"KnownHostsCommand=/bin/echo %H\",\n]\n[hosts.\"web01.example.com\"]\naddress = \"127.0.0.1\"\nroles = [\"web\"]\n",
    )
    .unwrap();
    kiln()
        .repo(&repo)
        .args(["fleet", "converge", "--allow-unsigned", "--inventory"])
        .arg(&inv)
        .env("KILN_SSH_CONTROL_DIR", &own)
        .run()
        .failure()
        .stderr_contains(&format!("{}:4", inv.display()))
        .stderr_contains("KnownHostsCommand is not an option kiln lets the inventory set")
        .stderr_contains("ProxyJump, PubkeyAcceptedAlgorithms");
}

/// `openssl s_server -WWW` serving a directory over TLS on loopback, with a
/// certificate from a CA made for the test.
struct TlsServer {
    child: Child,
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(serve: &Path) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=kiln test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "srv.key",
                    "-out",
                    "srv.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            p("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(p("srv.pem"))
            .arg("-key")
            .arg(p("srv.key"))
            .current_dir(serve)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "openssl s_server does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsServer {
            child,
            port,
            ca: p("ca.pem"),
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kiln agent --once` inside the root (own mount and PID namespaces),
/// fetching `url` with the test CA as the system's roots.
fn agent_once(root: &Path, url: &str) -> (bool, String) {
    let out = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg("chroot")
        .arg(root)
        .args(["/usr/local/bin/kiln", "agent", "--once", "--splay", "0"])
        .args([
            "--role",
            "web",
            "--fqdn",
            "agent01.example.com",
            "--source",
            url,
        ])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("SSL_CERT_FILE", "/etc/kiln/test-ca.pem")
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

#[test]
fn agent_over_https_refuses_forged_and_revoked_bundles_and_keeps_the_last_good() {
    need!(DebianRoot);
    let root = HostRoot::new();
    let r = root.path();
    std::fs::copy(kiln_binary(), r.join("usr/local/bin/kiln")).unwrap();
    let keys = Keys::new(&["old", "new", "mallory"]);
    let serve = r.join("srv/pub");
    std::fs::create_dir_all(&serve).unwrap();
    let server = TlsServer::start(&serve);
    std::fs::create_dir_all(r.join("etc/kiln")).unwrap();
    std::fs::copy(&server.ca, r.join("etc/kiln/test-ca.pem")).unwrap();
    let allow = |names: &[&str]| {
        std::fs::write(r.join("etc/kiln/allowed_signers"), keys.allowed(names)).unwrap()
    };
    let url = format!("https://127.0.0.1:{}/bundle.tar", server.port);
    let conf = r.join("etc/kiln-site.conf");
    let site_conf = || std::fs::read_to_string(&conf).unwrap_or_default();

    // A signed bundle over https converges.
    allow(&["old"]);
    bundle(&site("one"), &serve, &keys.key("old"));
    let (ok, log) = agent_once(r, &url);
    assert!(ok, "{log}");
    assert!(log.contains("signed by old@example.com"), "{log}");
    assert_eq!(site_conf(), "one\n");

    // Forged: a new bundle and its matching .sha256, beside the old
    // signature. Refused (the run fails); the last good bundle converges
    // (and puts back a change made by hand).
    let good_sig = std::fs::read(serve.join("bundle.tar.sig")).unwrap();
    bundle(&site("forged"), &serve, &keys.key("old"));
    std::fs::write(serve.join("bundle.tar.sig"), &good_sig).unwrap();
    std::fs::write(&conf, "changed by hand\n").unwrap();
    let (ok, log) = agent_once(r, &url);
    // Refused: --once says so in its exit code.
    assert!(!ok, "{log}");
    assert!(log.contains("bad signature"), "{log}");
    assert!(
        log.contains("converging with the last good bundle"),
        "{log}"
    );
    assert_eq!(site_conf(), "one\n");

    // Forged and signed by a key nobody trusts.
    bundle(&site("forged"), &serve, &keys.key("mallory"));
    let (ok, log) = agent_once(r, &url);
    // Refused: --once says so in its exit code.
    assert!(!ok, "{log}");
    assert!(log.contains("unknown or revoked signer"), "{log}");
    assert_eq!(site_conf(), "one\n");

    // Rotation: both keys trusted while it happens; a bundle signed by the
    // new key is picked up.
    allow(&["old", "new"]);
    bundle(&site("two"), &serve, &keys.key("new"));
    let (ok, log) = agent_once(r, &url);
    assert!(ok, "{log}");
    assert!(log.contains("signed by new@example.com"), "{log}");
    assert_eq!(site_conf(), "two\n");

    // The old key revoked: a bundle it signs is refused, the last good
    // (signed by the new key) converges.
    allow(&["new"]);
    bundle(&site("three"), &serve, &keys.key("old"));
    let (ok, log) = agent_once(r, &url);
    // Refused: --once says so in its exit code.
    assert!(!ok, "{log}");
    assert!(log.contains("unknown or revoked signer"), "{log}");
    assert_eq!(site_conf(), "two\n");

    // With the new key revoked too, even the last good bundle is no longer
    // trusted: nothing converges.
    allow(&["mallory"]);
    std::fs::write(&conf, "changed by hand\n").unwrap();
    let (ok, log) = agent_once(r, &url);
    assert!(!ok, "{log}");
    assert!(log.contains("is no longer trusted"), "{log}");
    assert_eq!(site_conf(), "changed by hand\n");
    drop(server);
}

fn host<'a>(report: &'a serde_json::Value, fqdn: &str) -> &'a serde_json::Value {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["fqdn"] == fqdn)
        .unwrap()
}

#[test]
fn fleet_hosts_refuse_an_altered_binary_and_an_untrusted_bundle() {
    need!(Sshd);
    let mut f = Fleet::new(
        vec![
            spec("web01.example.com", &["web"]),
            spec("web02.example.com", &["web"]),
            spec("web03.example.com", &["web"]),
        ],
        |_| {},
    );
    // web03 has no allowed_signers yet: its first push verifies against the
    // copy in the bundle's kiln cookbook; a bundle without one is refused.
    std::fs::remove_file(at(
        f.host("web03.example.com").path(),
        "/etc/kiln/allowed_signers",
    ))
    .unwrap();
    f.start();
    let o = f
        .kiln(&["converge", "--json", "--hosts", "web03*"])
        .repo(&site("one"))
        .run()
        .failure();
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let web03 = host(&report, "web03.example.com");
    assert_eq!(
        web03["failure"]["kind"], "bundle signature refused",
        "{web03:#}"
    );
    assert!(
        web03["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("missing on this host"),
        "{web03:#}"
    );
    let public = std::fs::read_to_string(f.dir.path().join("signing_key.pub")).unwrap();
    let one = site("one")
        .metadata("kiln", "name = \"kiln\"\nversion = \"1.0.0\"\n")
        .cookbook_file(
            "kiln",
            "allowed_signers",
            format!("ops@example.com {public}"),
        );
    f.kiln(&["converge"]).repo(&one).run().success();
    for h in &f.hosts {
        assert_eq!(read(h.path(), "/etc/kiln-site.conf"), "one\n");
    }
    // web01: its kiln binary changed after upload. web02: trusts another
    // key only.
    f.host("web01.example.com")
        .sh("printf x >> \"$(readlink -f /var/lib/kiln/bin/kiln)\"");
    let other = Keys::new(&["other"]);
    std::fs::write(
        at(
            f.host("web02.example.com").path(),
            "/etc/kiln/allowed_signers",
        ),
        other.allowed(&["other"]),
    )
    .unwrap();
    let o = f
        .kiln(&["converge", "--json", "--max-fail", "5"])
        .repo(&site("two"))
        .run()
        .failure();
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let web01 = host(&report, "web01.example.com");
    assert_eq!(web01["state"], "failed", "{web01:#}");
    assert_eq!(web01["failure"]["kind"], "kiln binary altered", "{web01:#}");
    assert!(
        web01["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("altered on the host, not run"),
        "{web01:#}"
    );
    let web02 = host(&report, "web02.example.com");
    assert_eq!(web02["state"], "failed", "{web02:#}");
    assert_eq!(
        web02["failure"]["kind"], "bundle signature refused",
        "{web02:#}"
    );
    assert!(
        web02["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown or revoked signer"),
        "{web02:#}"
    );
    for h in &f.hosts {
        assert_eq!(read(h.path(), "/etc/kiln-site.conf"), "one\n");
    }
    // Nothing of the refused bundle was unpacked on web02.
    let sha = report["bundle"].as_str().unwrap();
    assert!(
        !at(
            f.host("web02.example.com").path(),
            &format!("/var/lib/kiln/bundles/{sha}")
        )
        .exists()
    );
    assert!(
        !at(
            f.host("web02.example.com").path(),
            &format!("/var/lib/kiln/bundles/{sha}.tar")
        )
        .exists()
    );
    // fleet status does not run it either, and says why.
    f.kiln(&["status"])
        .repo(&site("one"))
        .run()
        .failure()
        .stdout_contains("kiln binary altered");
    // The text report says why, per host.
    f.kiln(&["converge", "--max-fail", "5"])
        .repo(&site("two"))
        .run()
        .failure()
        .stdout_contains("kiln binary altered")
        .stdout_contains("bundle signature refused");
}

/// First contact happens once: a host that verified a bundle remembers it
/// trusted a signer list, so a list deleted later (by a recipe, by hand)
/// never makes the next bundle, signed by anyone, a new first contact.
#[test]
fn a_host_never_returns_to_first_contact() {
    let keys = Keys::new(&["ops", "intruder"]);
    let d = tempfile::tempdir().unwrap();
    let with_list = |key: &str| {
        site("one")
            .metadata("kiln", "name = \"kiln\"\nversion = \"1.0.0\"\n")
            .cookbook_file("kiln", "allowed_signers", keys.allowed(&[key]))
    };
    let (ours, theirs) = (d.path().join("ours"), d.path().join("theirs"));
    bundle(&with_list("ops"), &ours, &keys.key("ops"));
    bundle(&with_list("intruder"), &theirs, &keys.key("intruder"));
    let allowed = d.path().join("etc/allowed_signers");
    std::fs::create_dir_all(allowed.parent().unwrap()).unwrap();
    let verify = |dir: &Path| {
        kiln()
            .arg("verify-bundle")
            .arg(dir.join("bundle.tar"))
            .arg("--allowed-signers")
            .arg(&allowed)
            .arg("--first-contact")
            .run()
    };
    // The first bundle starts from its own list, once.
    verify(&ours)
        .success()
        .stdout_contains("signed by ops@example.com");
    assert!(allowed.with_file_name("allowed_signers.trusted").is_file());
    // The list is gone: any bundle is refused, its own list notwithstanding.
    let refused = verify(&theirs).failure();
    assert!(
        refused.stderr.contains("never returns to first contact"),
        "{}",
        refused.stderr
    );
    verify(&ours).failure();
}
