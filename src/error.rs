//! Errors a person can act on: each names where the problem is and, where
//! kiln knows it, how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in the policy repository, found before anything on the target changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub fix: Option<String>,
}

impl PolicyError {
    pub fn new(message: impl Into<String>) -> Self {
        PolicyError {
            file: None,
            line: None,
            column: None,
            message: message.into(),
            fix: None,
        }
    }

    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }

    pub fn at_line(mut self, line: usize, column: Option<usize>) -> Self {
        self.line = Some(line);
        self.column = column;
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// A TOML syntax or type error, with the line and column toml reports.
    pub fn toml(file: &Path, text: &str, err: &toml::de::Error) -> Self {
        let mut e = PolicyError::new(err.message().trim().to_string()).in_file(file);
        if let Some(span) = err.span() {
            let (line, col) = line_col(text, span.start);
            e = e.at_line(line, Some(col));
        }
        e.fix("correct the TOML syntax at that position")
    }
}

/// Where each line of a text starts, so that the lines of many offsets
/// cost a binary search each: [`line_col`] per item of a long file made
/// parsing it quadratic.
pub struct Lines(Vec<usize>);

impl Lines {
    pub fn new(text: &str) -> Lines {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines(starts)
    }

    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found while compiling, reported together.
#[derive(Debug)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// An error of a layer above this module (a signature refused, an ssh
/// host unreachable), carried whole: its own type stays reachable through
/// `source()` and downcasting, its text is shown as it is.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why kiln stopped: one variant per kind of failure, so that how it is
/// shown and the exit code ([`Error::exit_code`]) follow from the kind and
/// never from reading its text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy repository is wrong; nothing on the target changed.
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    /// A step on the target failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A bundle, a signature or a serial was refused (`trust`, `serial`).
    #[error("{0}")]
    Trust(Cause),
    /// A fleet host could not be reached or spoken to over ssh.
    #[error("{0}")]
    Ssh(Cause),
    /// A dev VM could not be found, built, booted or reached (`devvm`).
    #[error("{0}")]
    DevVm(Cause),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The command line asks for something kiln cannot do: a flag value,
    /// a missing argument, an option that does not fit the others. Not for
    /// failures at run time ([`Error::Run`], [`Error::Io`]).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The process exit code for this error: the one place that decides it.
    /// Every kind is 1 today (the `--detailed-exitcodes` codes of a converge
    /// that ran are results, not errors).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Policy(_)
            | Error::Run(_)
            | Error::Trust(_)
            | Error::Ssh(_)
            | Error::DevVm(_)
            | Error::Io { .. }
            | Error::Usage(_) => 1,
        }
    }

    /// The text shown on stderr: policy errors carry their own `error:`
    /// prefix on each line, every other kind gets one.
    pub fn render(&self) -> String {
        let text = self.to_string();
        match self {
            Error::Policy(_) => text,
            _ => format!("error: {text}"),
        }
    }
}

impl From<PolicyError> for Error {
    fn from(e: PolicyError) -> Self {
        Error::Policy(PolicyErrors(vec![e]))
    }
}

/// A problem on the target, below the policy layer: what resources,
/// platform tools and the engine return, typed so that callers can tell a
/// failed command from a missing precondition without reading prose.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Command(#[from] CommandFailed),
    /// A program could not be started at all.
    #[error("could not run {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// A path on the target leads through a symlink loop or a chain longer
    /// than the kernel follows (40 links): refused, never resolved otherwise.
    #[error(
        "cannot {op} {path}: a symlink loop or a chain of more than 40 links on the way; \
         replace the links on that path with a shorter chain or the real directory"
    )]
    LinkLoop { op: &'static str, path: String },
    /// Something the resource needs is missing; `fix` says what to do.
    #[error("{problem}{}", fix.as_ref().map(|f| format!("; {f}")).unwrap_or_default())]
    Precondition {
        problem: String,
        fix: Option<String>,
    },
    /// A platform step with an error type of its own (siblings, fallback
    /// sources, kiln's package cache, the archive's offers), carried whole.
    #[error(transparent)]
    Platform(std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// An error with what kiln was doing when it happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<RunError>,
    },
}

impl RunError {
    pub fn spawn(what: impl Into<String>, source: std::io::Error) -> Self {
        RunError::Spawn {
            what: what.into(),
            source: source.into(),
        }
    }

    /// An I/O error on `path`; `ELOOP` becomes [`RunError::LinkLoop`].
    pub fn io(op: &'static str, path: impl fmt::Display, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ELOOP) {
            return RunError::LinkLoop {
                op,
                path: path.to_string(),
            };
        }
        RunError::Io {
            op,
            path: path.to_string(),
            source: source.into(),
        }
    }

    pub fn precondition(problem: impl Into<String>) -> Self {
        RunError::Precondition {
            problem: problem.into(),
            fix: None,
        }
    }

    /// Adds the fix to a precondition (other kinds are left as they are).
    pub fn fix(mut self, how: impl Into<String>) -> Self {
        if let RunError::Precondition { fix, .. } = &mut self {
            *fix = Some(how.into());
        }
        self
    }

    /// Wraps a platform module's own error (see [`RunError::Platform`]).
    pub fn platform(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        RunError::Platform(std::sync::Arc::new(e))
    }

    pub fn context(self, context: impl Into<String>) -> Self {
        RunError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}

/// A command that ran and failed: the one place that words
/// "`cmd` failed with status N: tail".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailed {
    /// The command as people may see it (argv joined, or a masked stand-in).
    pub command: String,
    /// Whether `command` is shown in backquotes (a masked one is prose).
    pub quoted: bool,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Extra words after the status, e.g. the accepted exit codes.
    pub note: String,
    /// The last lines of its output, or why they are not shown.
    pub tail: String,
}

impl CommandFailed {
    pub fn new(argv: &[&str], status: std::process::ExitStatus, tail: impl Into<String>) -> Self {
        use std::os::unix::process::ExitStatusExt;
        CommandFailed {
            command: argv.join(" "),
            quoted: true,
            code: status.code(),
            signal: status.signal(),
            note: String::new(),
            tail: tail.into(),
        }
    }
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            write!(f, "`{}`", self.command)?;
        } else {
            write!(f, "{}", self.command)?;
        }
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, " failed with status {c}")?,
            (None, Some(s)) => write!(f, " was killed by signal {s}")?,
            (None, None) => write!(f, " failed")?,
        }
        write!(f, "{}", self.note)?;
        if !self.tail.is_empty() {
            write!(f, ": {}", self.tail)?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandFailed {}

/// Attaches a description of what was being done to an I/O error.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        let text = "ab\ncd\n\nx";
        let lines = Lines::new(text);
        for offset in 0..=text.len() + 1 {
            assert_eq!(lines.line(offset), line_col(text, offset).0, "{offset}");
        }
    }

    #[test]
    fn one_wording_for_failed_commands() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(3 << 8);
        let e = CommandFailed::new(&["usermod", "-s", "/bin/sh", "web"], status, "no such user");
        assert_eq!(
            e.to_string(),
            "`usermod -s /bin/sh web` failed with status 3: no such user"
        );
        let killed = CommandFailed::new(&["sleep", "9"], std::process::ExitStatus::from_raw(9), "");
        assert_eq!(killed.to_string(), "`sleep 9` was killed by signal 9");
        let e = RunError::from(e).context("added repository x, but its index did not update");
        assert!(
            e.to_string()
                .starts_with("added repository x, but its index did not update: `usermod")
        );
        let p = RunError::precondition("group \"web\" does not exist").fix("declare it first");
        assert_eq!(
            p.to_string(),
            "group \"web\" does not exist; declare it first"
        );
    }

    #[test]
    fn the_kind_chooses_the_exit_code_and_the_prefix() {
        let run = Error::from(RunError::precondition("no index").fix("run apt-get update"));
        assert!(matches!(run, Error::Run(RunError::Precondition { .. })));
        assert_eq!(run.render(), "error: no index; run apt-get update");
        assert_eq!(run.exit_code(), 1);
        // Policy errors carry their own prefix, one a line.
        let policy = Error::from(PolicyErrors(vec![
            PolicyError::new("a"),
            PolicyError::new("b"),
        ]));
        assert_eq!(policy.render(), "error: a\nerror: b");
        assert_eq!(policy.exit_code(), 1);
        let trust = Error::Trust(Box::new(CommandFailed {
            command: "ssh-keygen".into(),
            quoted: true,
            code: Some(255),
            signal: None,
            note: String::new(),
            tail: String::new(),
        }));
        assert_eq!(trust.render(), "error: `ssh-keygen` failed with status 255");
    }

    #[test]
    fn display_names_file_line_and_fix() {
        let e = PolicyError::new("bad")
            .in_file(Path::new("roles/x.toml"))
            .at_line(3, Some(7))
            .fix("do this");
        assert_eq!(e.to_string(), "roles/x.toml:3:7: bad\n  fix: do this");
    }
}
