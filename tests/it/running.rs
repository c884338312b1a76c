//! The devvm role on a running system: a Debian root (its packages
//! installed by a `--root` converge first) with its own mount,
//! PID, UTS and network namespaces, where kiln runs as it would on the
//! host itself (target `/`), services really start and MariaDB answers on
//! its socket. The MariaDB resources create, repair and leave alone what
//! the server holds, a password shows nowhere, and a no-op converge starts
//! no process at all (counted with `strace -f -e trace=execve`).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::support::fleet::kiln_binary;
use crate::support::*;

/// A root kept running: its namespaces live as long as the `sleep` that is
/// their PID 1; every kiln run and check enters them with nsenter.
struct RunningRoot {
    anchor: Child,
    /// PID 1 of the namespaces, as the host sees it.
    init: u32,
    root: TestRoot,
}

impl RunningRoot {
    fn start(root: TestRoot) -> RunningRoot {
        let mut anchor = Command::new("unshare")
            .args([
                "--mount",
                "--uts",
                "--pid",
                "--net",
                "--fork",
                "--kill-child",
            ])
            .arg(format!(
                "--mount-proc={}",
                root.path().join("proc").display()
            ))
            .arg("chroot")
            .arg(root.path())
            .args([
                "/bin/sh",
                "-c",
                "hostname devvm01.example.com && exec sleep infinity",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("running unshare");
        let children = format!("/proc/{}/task/{0}/children", anchor.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let init = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            if std::time::Instant::now() > deadline {
                let _ = anchor.kill();
                panic!("the namespaces' first process did not start");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let r = RunningRoot { anchor, init, root };
        // Loopback up: the services listen there.
        let up = Command::new("nsenter")
            .arg(format!("--target={}", r.init))
            .args(["--net", "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        r
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// `argv` inside the namespaces, with the root as `/`.
    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.init))
            .args(["--mount", "--uts", "--pid", "--net", "--root", "--wd"])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().unwrap()
    }

    /// A query's output, by the server's own client (the test's check).
    fn sql(&self, args: &[&str]) -> String {
        let mut argv = vec!["mariadb", "-NB"];
        argv.extend(args);
        let out = self.run(&argv);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RunningRoot {
    fn drop(&mut self) {
        // PID 1 of the namespaces gone, the kernel kills everything in
        // them before unshare can reap it; the root is unmounted after.
        // SAFETY: a plain kill(2) of the process this test started.
        unsafe {
            libc::kill(self.init as i32, libc::SIGKILL);
        }
        let _ = self.anchor.kill();
        let _ = self.anchor.wait();
    }
}

const KILN: &str = "/usr/local/sbin/kiln";
const POLICY: &str = "/srv/policy";
const NODE: &str = "/srv/node.toml";

fn install_policy(root: &Path, password: &str) {
    let policy = Repo::own_policy();
    let dest = root.join(&POLICY[1..]);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(policy.path())
        .arg(&dest)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::copy(kiln_binary(), root.join(&KILN[1..])).unwrap();
    set_password(root, password);
}

/// The node file sets the account's password (it wins over the role's).
fn set_password(root: &Path, password: &str) {
    std::fs::write(
        root.join(&NODE[1..]),
        format!("[attributes.mariadb.app]\npassword = \"{password}\"\n"),
    )
    .unwrap();
}

fn converge_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut argv = vec![
        KILN,
        "converge",
        "--repo",
        POLICY,
        "--role",
        "devvm",
        "--node",
        NODE,
        // The repository's pins age: this is about the resources.
        "--substitute-vanished-pins",
        "--detailed-exitcodes",
    ];
    argv.extend(extra);
    argv
}

fn converge(r: &RunningRoot, extra: &[&'static str]) -> (i32, String) {
    let out = r.run(&converge_args(extra));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The programs a no-op converge execs, kiln's own start first.
fn programs_started(r: &RunningRoot, trace: &Path) -> Vec<String> {
    let mut argv = vec!["-f", "-qq", "-e", "trace=execve", "-o"];
    let trace_arg = trace.to_string_lossy().to_string();
    argv.push(&trace_arg);
    let cmd = r.command(&converge_args(&[]));
    let mut strace = Command::new("strace");
    strace
        .args(&argv)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null());
    let out = strace.output().expect("strace (scripts/test installs it)");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the no-op converge: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("execve(") && !l.contains("= -1"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

#[test]
fn the_devvm_role_runs_its_database_in_process_and_a_no_op_starts_nothing() {
    need!(Sshd, Network);
    // Packages come first, from outside: the namespaces have no network.
    let root = TestRoot::new();
    install_policy(root.path(), "first-pass-1");
    kiln()
        .arg("converge")
        .root(&root)
        .arg("--repo")
        .arg(root.path().join(&POLICY[1..]))
        .args(["--role", "devvm", "--node"])
        .arg(root.path().join(&NODE[1..]))
        .arg("--substitute-vanished-pins")
        .run()
        .success()
        .stdout_contains("mariadb_user[shop]: create skipped: --root target");
    let r = RunningRoot::start(root);

    // The running system: services start, the database steps are done.
    let (code, out) = converge(&r, &[]);
    assert_eq!(code, 2, "{out}");
    for line in [
        "mariadb_database[shop]: create database (utf8mb4)",
        "mariadb_user[shop]: create account with password (redacted)",
        "(redacted), grant ALL on shop.*",
        "mariadb_seed[shop.listings]: load schema.sql (the table is missing)",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    assert!(!out.contains("first-pass-1"), "{out}");
    // The server's own view, through its own client.
    let rows: u32 = r
        .sql(&["-e", "SELECT COUNT(*) FROM shop.listings"])
        .parse()
        .unwrap();
    assert!(rows > 0);
    let login = |pw: &str| {
        r.run(&[
            "mariadb",
            "-ushop",
            &format!("-p{pw}"),
            "-NBe",
            "SELECT 1",
            "shop",
        ])
        .status
        .success()
    };
    assert!(login("first-pass-1"));
    assert_eq!(
        r.sql(&["-e", "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop'"]),
        "utf8mb4"
    );

    // Converged: nothing to do, and nothing started to find that out.
    let (code, out) = converge(&r, &[]);
    assert_eq!(code, 0, "{out}");
    let trace = tempfile::NamedTempFile::new().unwrap();
    let programs = programs_started(&r, trace.path());
    assert_eq!(
        programs,
        ["/usr/bin/nsenter", KILN],
        "a no-op converge of devvm started programs; the trace:\n{}",
        std::fs::read_to_string(trace.path()).unwrap()
    );

    // The fingerprint reads the server: the account's privileges, never
    // its password.
    let explain = |r: &RunningRoot| {
        let out = r.run(&[KILN, "fingerprint", "--repo", POLICY, "--explain"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let parts = explain(&r);
    for part in [
        "mariadb_database[shop] charset=utf8mb4",
        "mariadb_seed[shop.listings] table filled",
    ] {
        assert!(parts.contains(part), "{part:?} in:\n{parts}");
    }
    let user = parts
        .lines()
        .find(|l| l.starts_with("mariadb_user[shop]"))
        .unwrap_or_else(|| panic!("mariadb_user[shop] in:\n{parts}"));
    assert!(
        user.contains("host=% shop:") && user.contains("SELECT"),
        "{user}"
    );

    // Emptied by hand: loaded again.
    r.sql(&["-e", "DELETE FROM shop.listings"]);
    let (code, out) = converge(&r, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("load schema.sql (the table is empty)"),
        "{out}"
    );
    assert_ne!(r.sql(&["-e", "SELECT COUNT(*) FROM shop.listings"]), "0");

    // A new password: why-run says so without showing it, converge sets it.
    set_password(r.path(), "second-pass-2");
    let (code, out) = converge(&r, &["--why-run"]);
    assert!(code == 0 || code == 2, "{out}");
    assert!(
        out.contains("mariadb_user[shop]: set password (redacted)"),
        "{out}"
    );
    assert!(
        !out.contains("second-pass-2") && !out.contains("first-pass-1"),
        "{out}"
    );
    assert!(login("first-pass-1"), "why-run changed nothing");
    let (code, out) = converge(&r, &["--json"]);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("second-pass-2"), "{out}");
    assert!(login("second-pass-2") && !login("first-pass-1"));
    let (code, out) = converge(&r, &[]);
    assert_eq!(code, 0, "{out}");
    let mariadb = |parts: &str| {
        let lines: Vec<String> = parts
            .lines()
            .filter(|l| l.starts_with("mariadb_"))
            .map(str::to_string)
            .collect();
        lines
    };
    // (config.php holds the password too: its content hash moves, as it should.)
    assert_eq!(mariadb(&explain(&r)), mariadb(&parts), "the account's part");
}
