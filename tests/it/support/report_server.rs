//! A `kiln server` of a test's own, and what reports to it needs: host
//! keys made by ssh-keygen where a host has them, and an inventory whose
//! known_hosts trusts them. Shared by the report store's tests and the
//! dashboard's.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use tempfile::TempDir;

use super::postgres::{self, Backend, Postgres};
use super::*;

pub const TOKEN: &str = "a-test-token-of-enough-length";

/// An ed25519 key pair made by ssh-keygen, as a host has.
pub struct HostKey {
    pub private: PathBuf,
    pub public: String,
}

pub fn host_key(dir: &Path) -> HostKey {
    std::fs::create_dir_all(dir).unwrap();
    let private = dir.join("ssh_host_ed25519_key");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&private)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen");
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    let public = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    HostKey { private, public }
}

/// An inventory of `hosts` (fqdn, role, public key) and its known_hosts.
pub fn inventory(dir: &Path, hosts: &[(&str, &str, &str)]) -> PathBuf {
    let mut inv = String::from("known_hosts = \"known_hosts\"\n");
    let mut known = String::new();
    for (i, (fqdn, role, key)) in hosts.iter().enumerate() {
        inv.push_str(&format!(
            "[hosts.\"{fqdn}\"]\naddress = \"127.0.9.{}\"\nroles = [\"{role}\"]\n",
            i + 1
        ));
        known.push_str(&format!("{fqdn} {key}\n"));
    }
    std::fs::write(dir.join("known_hosts"), known).unwrap();
    std::fs::write(dir.join("inventory.toml"), inv).unwrap();
    dir.join("inventory.toml")
}

/// What a server keeps across a restart: its directory (token, stderr,
/// the SQLite file) and, on PostgreSQL, the test's cluster.
pub struct Kept {
    pub dir: TempDir,
    pub pg: Option<Arc<Postgres>>,
}

impl Kept {
    pub fn new(backend: Backend) -> Kept {
        Kept {
            dir: tempfile::tempdir().unwrap(),
            pg: (backend == Backend::Postgres).then(|| Arc::new(Postgres::start())),
        }
    }

    /// Another server's directory on the same database.
    pub fn share(&self) -> Kept {
        Kept {
            dir: tempfile::tempdir().unwrap(),
            pg: self.pg.clone(),
        }
    }

    pub fn database(&self) -> std::ffi::OsString {
        match &self.pg {
            Some(pg) => pg.url().into(),
            None => self.dir.path().join("store/kiln.db").into(),
        }
    }
}

/// A `kiln server` process on a free loopback port; stopped when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub token_file: PathBuf,
    pub kept: Kept,
}

impl Kept {
    /// The server's own temporary directory (its TMPDIR).
    pub fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
}

impl Server {
    pub fn start(backend: Backend, inventory: &Path, extra: &[&str]) -> Server {
        Server::start_in(Kept::new(backend), inventory, extra)
    }

    /// A server on the store and token of `kept` (a restart keeps them).
    pub fn start_in(kept: Kept, inventory: &Path, extra: &[&str]) -> Server {
        let dir = &kept.dir;
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        std::fs::create_dir_all(kept.tmp()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("TMPDIR", kept.tmp())
            .args(["server", "--listen", "127.0.0.1:0", "--database"])
            .arg(kept.database())
            .arg("--inventory")
            .arg(inventory)
            .arg("--token-file")
            .arg(&token_file)
            .args(extra)
            .stdout(Stdio::piped())
            // A file, not a pipe: a server that logs much never blocks on it.
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line
            .strip_prefix("kiln server: listening on ")
            .and_then(|l| l.split_whitespace().next())
        else {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
            panic!("kiln server did not start: {line}{err}");
        };
        assert!(!line.contains(postgres::PASSWORD), "{line}");
        Server {
            url: url.to_string(),
            child,
            token_file,
            kept,
        }
    }

    /// `kiln report ARGS --json` against this server, parsed.
    pub fn report(&self, args: &[&str]) -> serde_json::Value {
        let out = kiln()
            .args(["report", "--server", &self.url, "--token-file"])
            .arg(&self.token_file)
            .args(args)
            .arg("--json")
            .run()
            .success();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    pub fn runs_of(&self, fqdn: &str) -> Vec<serde_json::Value> {
        self.report(&["runs", fqdn]).as_array().unwrap().clone()
    }

    /// POSTs raw bytes as a report: (status, body).
    pub fn post(&self, body: &[u8]) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&format!("{}/api/v1/reports", self.url))
            .send(body)
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl Server {
    /// Stops the process and hands back its directory, store included.
    pub fn stop(mut self) -> Kept {
        self.terminate();
        std::mem::replace(&mut self.kept, Kept::new(Backend::Sqlite))
    }

    /// Sends `signal` to the server unless it has ended; how it ended if so.
    pub fn signal(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: the pid of a child not yet waited for is still ours.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        None
    }

    /// SIGTERM, as a service manager stops it; SIGKILL if it is still
    /// there 10 s later. The status it ended with.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(ended) = self.signal(libc::SIGTERM) {
            return Some(ended);
        }
        if let Some(ended) = self.wait_for(std::time::Duration::from_secs(10)) {
            return Some(ended);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// How the server ended, if it does within `time`.
    pub fn wait_for(&mut self, time: std::time::Duration) -> Option<std::process::ExitStatus> {
        let t = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if t.elapsed() >= time {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A test root with a host key where a host has it.
pub fn host_root() -> (TestRoot, String) {
    let root = TestRoot::new();
    let key = host_key(&root.path().join("etc/ssh"));
    (root, key.public)
}

/// `kiln converge` of `root` as `fqdn` in `role`, reporting to `url`.
pub fn converge(root: &TestRoot, repo: &Repo, fqdn: &str, role: &str, url: &str) -> Outcome {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--fqdn", fqdn, "--role", role, "--report-to", url])
        .run()
}
