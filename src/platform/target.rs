//! The system being converged: the running host, or a directory tree
//! (`--root`) whose programs run only in a sandbox (`sandbox::exec`), with
//! the tree as their `/`, never as host root through chroot.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::sandbox::exec as root_exec;
use super::tfs::Tfs;

/// Where kiln's files and commands land.
#[derive(Debug, Clone)]
pub struct Target {
    root: PathBuf,
    fs: Tfs,
    /// A `--root` tree that the tree's programs may read, never change.
    read_only: bool,
    durability: Durability,
}

/// Whether the target must survive a crash of the machine. Only a tree
/// that is thrown away on a crash (a `kiln test` overlay, a dev VM image
/// being built) lets dpkg skip its syncs; a host and a user's `--root`
/// tree are always durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Durable,
    Throwaway,
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
            read_only: false,
            durability: Durability::Durable,
        }
    }

    pub fn at_root(dir: &Path) -> Self {
        Target {
            root: dir.to_path_buf(),
            fs: Tfs::new(dir, dir != Path::new("/")),
            read_only: false,
            durability: Durability::Durable,
        }
    }

    /// The same target, declared durable or throwaway by the command that
    /// owns it (never inferred from the path).
    pub fn with_durability(self, durability: Durability) -> Self {
        Target { durability, ..self }
    }

    /// A `--root` tree for a command that only reads (why-run, whitelist
    /// reports, fingerprint): the tree's programs see it read-only, with no
    /// capability and no network.
    pub fn at_root_read_only(dir: &Path) -> Self {
        Target {
            read_only: true,
            ..Target::at_root(dir)
        }
    }

    /// True for a `--root` tree: services are enabled there, never started.
    pub fn is_chroot(&self) -> bool {
        self.root != Path::new("/")
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// True for a tree whose programs may not change it.
    pub fn is_read_only(&self) -> bool {
        self.read_only
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
        self.command_env(argv, &[])
    }

    /// [`Target::command`] with `env` added to its environment. In a
    /// `--root` tree the program gets PATH, LC_ALL and `env`, nothing of
    /// the caller's: pass variables here, since an `.env()` on the
    /// expression does not reach it there.
    pub fn command_env(&self, argv: &[&str], env: &[(&str, &str)]) -> duct::Expression {
        let fixed = [("PATH", PATH), ("LC_ALL", "C")];
        if self.is_chroot() {
            let all = fixed.iter().chain(env).map(|(k, v)| (*k, *v));
            duct::cmd(
                root_exec::SELF,
                root_exec::args(&self.root, self.read_only, argv),
            )
            .full_env(all.collect::<std::collections::HashMap<_, _>>())
            .unchecked()
        } else {
            env.iter()
                .chain(&fixed)
                .fold(
                    duct::cmd(argv[0], argv[1..].iter().copied()),
                    |c, (k, v)| c.env(k, v),
                )
                .unchecked()
        }
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
        let env: Vec<(&str, &str)> = opts
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cmd = self.command_env(&argv, &env);
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

/// Quotes a word for sh (a target's, or a fleet host's login shell). A NUL
/// cannot travel in a shell word at all; no value kiln puts in a script
/// holds one (paths are refused with one, digests and JSON escape it).
pub fn shell_quote(s: &str) -> String {
    shlex::try_quote(&s.replace('\0', "")).map_or_else(|_| String::new(), |w| w.into_owned())
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
    fn the_environment_kiln_passes_reaches_the_program() {
        let cmd = Target::host().command_env(
            &["/bin/sh", "-c", "echo $KILN_PASSED $LC_ALL"],
            &[("KILN_PASSED", "yes")],
        );
        let out = capture(cmd).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "yes C\n");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a"), "/tmp/a");
        // What sh reads back is the word itself, whatever it holds.
        for word in ["a b'c", "$(id)", "`id`", "x\"y\\z", "a\nb", "-n", "", "*"] {
            let script = format!("printf %s {}", shell_quote(word));
            let out = capture(Target::host().command(&["/bin/sh", "-c", &script])).unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{script}");
        }
    }
}
