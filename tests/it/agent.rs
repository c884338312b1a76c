//! `kiln agent`: a host converges on its own from a bundle published over
//! http on loopback, keeps converging with the last good bundle when the
//! URL fails or serves a bundle that does not match its sha256, and picks up
//! a new bundle.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::apt_repo::AptRepo;
use crate::support::fleet::{Fleet, HostRoot, kiln_binary, spec};
use crate::support::*;

/// A tiny HTTP server: GET of a published file, or 503 while `failing`.
struct Server {
    port: u16,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    failing: Arc<AtomicBool>,
    /// The key bundles are signed with (signing_key, signing_key.pub).
    keys: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let (f, fail) = (files.clone(), failing.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let body = f.lock().unwrap().get(&path).cloned();
                let resp = match body {
                    _ if fail.load(Ordering::SeqCst) => {
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                    Some(b) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&b);
                        r
                    }
                };
                let _ = c.write_all(&resp);
            }
        });
        let keys = tempfile::tempdir().unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
            .arg(keys.path().join("signing_key"))
            .status()
            .unwrap();
        assert!(st.success());
        Server {
            port,
            files,
            failing,
            keys,
        }
    }

    /// Publishes the repository's bundle as /bundle.tar (+ .sha256).
    fn publish(&self, repo: &Repo) {
        let out = tempfile::tempdir().unwrap();
        kiln()
            .repo(repo)
            .args(["fleet", "bundle", "--out"])
            .arg(out.path())
            .arg("--signing-key")
            .arg(self.keys.path().join("signing_key"))
            .run()
            .success();
        let mut files = self.files.lock().unwrap();
        for name in ["bundle.tar", "bundle.tar.sha256", "bundle.tar.sig"] {
            files.insert(
                format!("/{name}"),
                std::fs::read(out.path().join(name)).unwrap(),
            );
        }
    }

    /// An allowed_signers file that trusts the signing key.
    fn allowed_signers(&self) -> String {
        let public = std::fs::read_to_string(self.keys.path().join("signing_key.pub")).unwrap();
        format!("ops {public}")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/bundle.tar", self.port)
    }
}

fn policy(hello: &str) -> Repo {
    Repo::new()
        .role("web", "run_list = [\"recipe[site]\"]")
        .recipe(
            "site",
            "default",
            "[[resource]]\npackage = \"kiln-hello\"\n\n[[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"served by kiln\\n\"\n",
        )
        .whitelist(&format!("[packages]\nkiln-hello = \"{hello}\"\n"))
}

fn version(root: &Path) -> Option<String> {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    status.split("\n\n").find_map(|s| {
        (s.contains("Package: kiln-hello\n") && s.contains(" installed\n")).then(|| {
            s.lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .map(String::from)
        })?
    })
}

fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent, and the tree it runs in.
struct Agent(Child, std::path::PathBuf);

impl Drop for Agent {
    /// Kills the agent and waits until nothing runs in its tree any more:
    /// a killed converge's apt and dpkg may outlive the agent's own exit
    /// for a moment, and the next step of a test must not meet them.
    fn drop(&mut self) {
        // SAFETY: the process group this test started.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
        let deadline = Instant::now() + Duration::from_secs(60);
        while running_in(&self.1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether any process has `root` as its root directory.
fn running_in(root: &Path) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|p| std::fs::read_link(p.path().join("root")).is_ok_and(|r| r == root))
}

#[test]
fn agent_converges_from_a_url_keeps_the_last_good_bundle_and_picks_up_a_new_one() {
    need!(DebianRoot);
    let root = HostRoot::new();
    AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "2.0-1")
        .install_into(root.path());
    std::fs::copy(kiln_binary(), root.path().join("usr/local/bin/kiln")).unwrap();
    let server = Server::start();
    std::fs::create_dir_all(root.path().join("etc/kiln")).unwrap();
    std::fs::write(
        root.path().join("etc/kiln/allowed_signers"),
        server.allowed_signers(),
    )
    .unwrap();
    let repo = policy("1.0-1");
    server.publish(&repo);
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let log = root.path().join("var/log/kiln-agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child"])
        .arg(format!(
            "--mount-proc={}",
            root.path().join("proc").display()
        ))
        .arg("chroot")
        .arg(root.path())
        .args([
            "/usr/local/bin/kiln",
            "agent",
            "--interval",
            "1s",
            "--splay",
            "200ms",
        ])
        .args(["--role", "web", "--fqdn", "agent01.example.com"])
        .arg("--source")
        .arg(server.url())
        .arg("--statsd")
        .arg(statsd.local_addr().unwrap().to_string())
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap();
    let agent = Agent(child, root.path().canonicalize().unwrap());

    // It converges on its own, and reports to StatsD.
    wait_for("the first converge", &log, || {
        version(root.path()).as_deref() == Some("1.0-1")
    });
    let mut buf = [0u8; 2048];
    let mut metrics = String::new();
    while !metrics.contains("kiln.agent.changed:") {
        let n = statsd.recv(&mut buf).expect("a StatsD packet");
        metrics.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(metrics.contains("kiln.agent.run_time_ms:"), "{metrics}");
    assert!(metrics.contains("kiln.agent.failed:0|g"), "{metrics}");
    assert!(
        metrics.contains("kiln.agent.checks_failed:0|g"),
        "{metrics}"
    );

    // The URL fails: the agent keeps converging with the last good bundle
    // (a change by hand is put back).
    server.failing.store(true, Ordering::SeqCst);
    let conf = root.path().join("etc/kiln-site.conf");
    wait_for("a failed fetch", &log, || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("converging with the last good bundle")
    });
    std::fs::write(&conf, "changed by hand\n").unwrap();
    wait_for("a converge with the last good bundle", &log, || {
        std::fs::read_to_string(&conf).unwrap() == "served by kiln\n"
    });

    // A bundle that does not match its published sha256 is refused too.
    server.failing.store(false, Ordering::SeqCst);
    let new = policy("2.0-1");
    server.publish(&new);
    server
        .files
        .lock()
        .unwrap()
        .insert("/bundle.tar".into(), b"tampered".to_vec());
    wait_for("a refused bundle", &log, || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("does not match the published")
    });
    assert_eq!(version(root.path()).as_deref(), Some("1.0-1"));

    // A new bundle is picked up.
    server.publish(&new);
    wait_for("the new bundle", &log, || {
        version(root.path()).as_deref() == Some("2.0-1")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("new bundle"), "{text}");
    drop(agent);

    // --once from a repository directory; the roles and fqdn given to the
    // first agent are remembered.
    let old = policy("1.0-1");
    let dir = root.path().join("srv/policy");
    std::fs::create_dir_all(&dir).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(old.path().join("."))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(cp.success());
    let out = Command::new("chroot")
        .arg(root.path())
        .args([
            "/usr/local/bin/kiln",
            "agent",
            "--once",
            "--splay",
            "0",
            "--source",
            "/srv/policy",
        ])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("roles web"), "{text}");
    assert_eq!(version(root.path()).as_deref(), Some("1.0-1"));
}

#[test]
fn agent_refuses_bad_sources_and_durations() {
    kiln()
        .args(["agent", "--once", "--interval", "5parsecs"])
        .run()
        .failure()
        .stderr_contains("--interval");
    // A file source without a published sha256 is not trusted.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("b.tar"), b"x").unwrap();
    kiln()
        .args([
            "agent",
            "--once",
            "--splay",
            "0",
            "--role",
            "web",
            "--state-dir",
        ])
        .arg(d.path().join("state"))
        .arg("--source")
        .arg(d.path().join("b.tar"))
        .run()
        .failure()
        .stdout_contains("b.tar.sha256");
}

/// Runs a command inside a host's root as its own agent runs there: in
/// mount and PID namespaces of its own (with /proc), chrooted.
fn in_host(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg("chroot")
        .arg(root)
        .args(args)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A site whose config file says what the node's attributes say, with a
/// verify check that reads the same attribute.
fn greeting_policy() -> Repo {
    Repo::new()
        .role(
            "web",
            "run_list = [\"recipe[site]\"]\n\n[[verify]]\nfile = \"/etc/kiln-site.conf\"\ncontains = \"{{site.greeting}}\"\n",
        )
        .attributes("site", "[site]\ngreeting = \"the cookbook default\"\n")
        .recipe(
            "site",
            "default",
            "[[resource]]\nfile = \"/etc/kiln-site.conf\"\ncontent = \"hello from {{site.greeting}}\\n\"\n",
        )
        .whitelist("[packages]\n")
}

/// Gives the host inventory attributes: `site.greeting`.
fn set_greeting(inventory: &Path, greeting: &str) {
    let inv: String = std::fs::read_to_string(inventory)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("attributes"))
        .map(|l| format!("{l}\n"))
        .collect();
    let host = "[hosts.\"attr01.example.com\"]\n";
    std::fs::write(
        inventory,
        inv.replace(
            host,
            &format!("{host}attributes = {{ site = {{ greeting = \"{greeting}\" }} }}\n"),
        ),
    )
    .unwrap();
}

#[test]
fn the_agent_converges_what_the_push_converged() {
    need!(Sshd);
    let mut f = Fleet::new(vec![spec("attr01.example.com", &["web"])], |_: &Path| {});
    set_greeting(&f.inventory(), "the inventory");
    f.start();
    let repo = greeting_policy();
    let root = f.host("attr01.example.com").path().to_path_buf();
    let conf = || read(&root, "/etc/kiln-site.conf");
    f.kiln(&["converge"]).repo(&repo).run().success();
    assert_eq!(conf(), "hello from the inventory\n");

    // The agent, on the host, converges the pushed bundle with the same
    // node: nothing changes, the checks pass, and --once waits no splay
    // (an hour of it would hold this test up).
    let agent = |source: &str| {
        in_host(
            &root,
            &[
                "/var/lib/kiln/bin/kiln",
                "agent",
                "--once",
                "--splay",
                "1h",
                "--source",
                source,
            ],
        )
    };
    let out = agent("/var/lib/kiln/bundles/current");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("once, now (no splay)"), "{text}");
    assert!(text.contains("nodes/attr01.example.com.toml"), "{text}");
    assert!(text.contains("converged: 0 resource(s) updated"), "{text}");
    assert!(text.contains("verify: 1/1 checks passed"), "{text}");
    assert_eq!(conf(), "hello from the inventory\n");
    let kept = read(&root, "/var/lib/kiln/agent/last_run.json");
    assert!(kept.contains("\"checks\""), "{kept}");

    // And the next push finds nothing to put back: no flapping.
    let o = f.kiln(&["converge", "--json"]).repo(&repo).run().success();
    let r: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(r["totals"]["unchanged"], 1, "{}", o.stdout);

    // A published bundle made with the inventory carries the node file too.
    let publish = |key: &Path| {
        kiln()
            .repo(&repo)
            .args(["fleet", "bundle", "--out"])
            .arg(root.join("srv/pub"))
            .arg("--inventory")
            .arg(f.inventory())
            .arg("--signing-key")
            .arg(key)
            .run()
            .success();
    };
    publish(&f.dir.path().join("signing_key"));
    let out = agent("/srv/pub/bundle.tar");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("converged: 0 resource(s) updated"), "{text}");

    // A new bundle signed by a key the host does not trust is refused: the
    // last good bundle converges (its node unchanged), and the exit code
    // says that the new one was refused.
    let other = tempfile::tempdir().unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "mallory", "-f"])
        .arg(other.path().join("key"))
        .status()
        .unwrap();
    assert!(st.success());
    set_greeting(&f.inventory(), "an untrusted signer");
    publish(&other.path().join("key"));
    let out = agent("/srv/pub/bundle.tar");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("converging with the last good bundle"),
        "{text}"
    );
    assert!(text.contains("converged: 0 resource(s) updated"), "{text}");
    assert_eq!(conf(), "hello from the inventory\n");
}
