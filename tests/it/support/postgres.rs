//! A real PostgreSQL for the store's tests: a cluster of Debian's server
//! package in a temporary directory, listening on a free loopback port
//! and on a socket in that directory, one per test (initdb takes about a
//! second), stopped when dropped. initdb refuses root, so as root the
//! cluster belongs to Debian's `postgres` user. [`Postgres::start_tls`]
//! turns TLS on with a CA and certificate made by openssl for the test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// A password in every URL of the tests' clusters, which they ignore
/// (trust): no message may show it.
pub const PASSWORD: &str = "s3cret-pw";

/// The report store's backends, for the tests that run once on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// For each `fn body(Backend)` named, a module `body` with one test per
/// backend, `body::sqlite` and `body::postgres`; the latter needs a
/// PostgreSQL server to start.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($body:ident),+ $(,)?) => {$(
        mod $body {
            #[test]
            fn sqlite() {
                super::$body($crate::support::postgres::Backend::Sqlite);
            }

            #[test]
            fn postgres() {
                need!(Postgres);
                super::$body($crate::support::postgres::Backend::Postgres);
            }
        }
    )+};
}

/// The newest installed server's programs: Debian keeps them off PATH,
/// in /usr/lib/postgresql/VERSION/bin.
pub fn bin_dir() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .flatten()
        .filter_map(|v| {
            let major: u32 = v.file_name().to_str()?.parse().ok()?;
            let bin = v.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// A running cluster whose superuser `kiln` needs no password.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run the server's programs as `postgres` (the tests run as root).
    as_postgres: bool,
    /// The CA that signed the server's certificate, when TLS is on.
    ca: Option<PathBuf>,
    dir: TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// A cluster that offers TLS (and still takes plain connections),
    /// with a certificate for 127.0.0.1 signed by [`Postgres::ca`].
    pub fn start_tls() -> Postgres {
        Postgres::start_with(true)
    }

    /// The PEM file of the CA of the server's certificate.
    pub fn ca(&self) -> &Path {
        self.ca
            .as_deref()
            .expect("a cluster started with start_tls")
    }

    fn start_with(tls: bool) -> Postgres {
        let bin =
            bin_dir().expect("no PostgreSQL server: make need!(Postgres) the test's first line");
        let dir = tempfile::Builder::new()
            .prefix("kiln-pg")
            .tempdir()
            .unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres {}", dir.path().display());
        }
        let data = dir.path().join("data");
        let mut ssl = String::new();
        let mut ca = None;
        if tls {
            let certs = dir.path().join("tls");
            let authority = TestCa::new(&certs, "kiln-test-ca");
            let (cert, key) = authority.issue("server", "IP:127.0.0.1");
            if as_postgres {
                let ok = Command::new("chown")
                    .arg("-R")
                    .arg("postgres:postgres")
                    .arg(&certs)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "chown postgres {}", certs.display());
            }
            ssl = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            );
            ca = Some(authority.pem);
        }
        let mut pg = Postgres {
            bin,
            data,
            port: 0,
            as_postgres,
            ca,
            dir,
        };
        let data = pg.data.clone();
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "kiln".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C.UTF-8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        // A port another process takes between here and the start is
        // unlikely on loopback; a second port then makes it certain.
        let mut failures = String::new();
        for _ in 0..3 {
            pg.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off{ssl}",
                pg.port,
                pg.dir.path().display()
            );
            let log = pg.dir.path().join("log");
            let started = pg
                .command("pg_ctl")
                .arg("-D")
                .arg(&pg.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output()
                .unwrap();
            if started.status.success() {
                return pg;
            }
            failures.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
        }
        panic!("PostgreSQL did not start:\n{failures}");
    }

    /// The cluster's database `postgres`, as `kiln server --database`
    /// takes it, with [`PASSWORD`].
    pub fn url(&self) -> String {
        format!(
            "postgres://kiln:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A program of the server's, as the user that owns the cluster.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.stdin(Stdio::null()).current_dir(self.dir.path());
        c
    }

    fn run(&self, program: &str, args: &[&OsStr]) {
        super::succeed(self.command(program).args(args));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: the data goes with the directory anyway.
        let data = self.data.clone();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A certificate authority of one test's, made with Debian's openssl.
pub struct TestCa {
    /// Its certificate, as sslrootcert takes it.
    pub pem: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// A new P-256 key, unencrypted, in a certificate or a request.
const NEW_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

impl TestCa {
    /// A CA named `name`, its files in `dir` (made if missing).
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let (pem, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        super::succeed(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2"])
                .args(NEW_KEY)
                .args(["-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&pem),
        );
        TestCa {
            pem,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate and key named `name`, for the names in `san` (as
    /// openssl's subjectAltName: `IP:127.0.0.1`, `DNS:localhost`).
    pub fn issue(&self, name: &str, san: &str) -> (PathBuf, PathBuf) {
        let file = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        let (cert, key, csr) = (file("pem"), file("key"), file("csr"));
        super::succeed(
            Command::new("openssl")
                .arg("req")
                .args(NEW_KEY)
                .args(["-subj", &format!("/CN={name}")])
                .args(["-addext", &format!("subjectAltName={san}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        super::succeed(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .args(["-copy_extensions", "copy"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.pem)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-out")
                .arg(&cert),
        );
        (cert, key)
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
