//! The system being converged: the running host, or a directory tree
//! (`--root`) whose commands run through chroot.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::tfs::Tfs;

/// Where kiln's files and commands land.
#[derive(Debug, Clone)]
pub struct Target {
    root: PathBuf,
    fs: Tfs,
}

/// How a shell command is run on the target.
#[derive(Debug, Default, Clone)]
pub struct ShellOpts<'a> {
    pub cwd: Option<&'a str>,
    pub env: &'a [(String, String)],
    pub user: Option<&'a str>,
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Target {
    pub fn host() -> Self {
        Target {
            root: PathBuf::from("/"),
            fs: Tfs::new(Path::new("/"), false),
        }
    }

    pub fn at_root(dir: &Path) -> Self {
        Target {
            root: dir.to_path_buf(),
            fs: Tfs::new(dir, dir != Path::new("/")),
        }
    }

    /// True for a `--root` tree: services are enabled there, never started.
    pub fn is_chroot(&self) -> bool {
        self.root != Path::new("/")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The target's files, every path resolved inside the target.
    pub fn fs(&self) -> &Tfs {
        &self.fs
    }

    /// A program with arguments, run on the target.
    pub fn command(&self, argv: &[&str]) -> duct::Expression {
        let (prog, args): (&str, Vec<String>) = if self.is_chroot() {
            let mut a = vec![self.root.display().to_string()];
            a.extend(argv.iter().map(|s| s.to_string()));
            ("chroot", a)
        } else {
            (argv[0], argv[1..].iter().map(|s| s.to_string()).collect())
        };
        duct::cmd(prog, args)
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .unchecked()
    }

    /// Runs a program and captures its output; a non-zero exit is not an error here.
    pub fn run(&self, argv: &[&str]) -> io::Result<Output> {
        capture(self.command(argv))
    }

    /// Runs `script` with /bin/sh on the target. The script goes to `sh -s`
    /// on standard input, never into argv, so that `ps` (world-readable
    /// /proc/*/cmdline) shows no secret a command or guard carries.
    pub fn shell(&self, script: &str, opts: &ShellOpts) -> io::Result<Output> {
        let mut argv: Vec<&str> = Vec::new();
        if let Some(user) = opts.user {
            argv.extend(["runuser", "-u", user, "--"]);
        }
        argv.extend(["/bin/sh", "-s"]);
        let mut cmd = self.command(&argv);
        for (k, v) in opts.env {
            cmd = cmd.env(k, v);
        }
        capture_with_stdin(cmd, stdin_script(script, opts.cwd).into_bytes())
    }
    /// Whether systemd manages services on this target.
    pub fn uses_systemd(&self) -> bool {
        if self.is_chroot() {
            // An image being built: systemd will run it if it is installed.
            self.fs.exists("/bin/systemctl") || self.fs.exists("/usr/bin/systemctl")
        } else {
            Path::new("/run/systemd/system").is_dir()
        }
    }
}

/// What `sh -s` reads: the script as one brace group, parsed whole before
/// any of it runs, with an empty here-document as its standard input, so
/// that a command reading stdin sees end-of-file (as with `sh -c` and a
/// null stdin) rather than the rest of the script. A here-document needs
/// no /dev/null, which an image root may lack.
fn stdin_script(script: &str, cwd: Option<&str>) -> String {
    let cd = match cwd {
        Some(cwd) => format!("cd {} || exit\n", shell_quote(cwd)),
        None => String::new(),
    };
    format!("{{\n{cd}{script}\n}} <<'KILN_NO_INPUT'\nKILN_NO_INPUT\n")
}

/// Runs `cmd` with its output in temporary files rather than pipes, so that
/// a daemon it leaves behind holding stdout does not keep kiln waiting.
pub fn capture(cmd: duct::Expression) -> io::Result<Output> {
    capture_output(cmd.stdin_null())
}

/// [`capture`], with `input` as the command's standard input.
pub fn capture_with_stdin(cmd: duct::Expression, input: Vec<u8>) -> io::Result<Output> {
    capture_output(cmd.stdin_bytes(input))
}

fn capture_output(cmd: duct::Expression) -> io::Result<Output> {
    use std::io::{Read, Seek};
    let mut out = tempfile::tempfile()?;
    let mut err = tempfile::tempfile()?;
    let status = cmd
        .stdout_file(out.try_clone()?)
        .stderr_file(err.try_clone()?)
        .run()?
        .status;
    let read = |f: &mut std::fs::File| -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        f.rewind()?;
        f.read_to_end(&mut v)?;
        Ok(v)
    };
    Ok(Output {
        status,
        stdout: read(&mut out)?,
        stderr: read(&mut err)?,
    })
}

/// Quotes a word for /bin/sh.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The last lines of a command's stderr (or stdout), for error messages.
pub fn output_tail(out: &Output) -> String {
    let text = if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let s = String::from_utf8_lossy(text);
    let lines: Vec<&str> = s.trim_end().lines().collect();
    let start = lines.len().saturating_sub(5);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_child_does_not_hold_the_run() {
        let start = std::time::Instant::now();
        let out = Target::host()
            .shell("sleep 3 & echo started", &ShellOpts::default())
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn scripts_go_on_stdin_and_their_commands_read_end_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ShellOpts {
            cwd: Some(dir.path().to_str().unwrap()),
            ..ShellOpts::default()
        };
        let script = "set -e\nwc -c\npwd\nexit 4\necho unreachable";
        let out = Target::host().shell(script, &opts).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout, format!("0\n{}\n", dir.path().display()));
        assert_eq!(out.status.code(), Some(4));
        // The script is not in sh's argv, where ps would show it.
        let out = Target::host()
            .shell("tr '\\0' ' ' < /proc/$$/cmdline", &ShellOpts::default())
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/bin/sh -s");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a"), "/tmp/a");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
    }
}
