//! `execute`: a shell command run on the target. It is not idempotent by
//! itself: `creates` (or the common `only_if`/`not_if`) is how a recipe
//! says when it has already been done.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef, actions,
};
use crate::error::{CommandFailed, PolicyError, RunError};
use crate::platform::target::{ShellOpts, output_tail};

pub const TYPE: TypeDef = TypeDef::of::<Execute>(
    "execute",
    &[
        "command",
        "cwd",
        "environment",
        "user",
        "creates",
        "returns",
    ],
    build,
)
// A command (and its guards) that uses a secret is sensitive: it goes to the
// shell on stdin, never in argv, and is never printed. The mariadb cookbook
// checks an account's password in a guard.
.secrets_in(&["command", "only_if", "not_if"]);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    command: String,
    cwd: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, toml::Value>,
    user: Option<String>,
    creates: Option<String>,
    #[serde(default, deserialize_with = "de_returns")]
    returns: Option<Vec<i32>>,
}

/// `returns = 0` or `returns = [0, 2]`.
fn de_returns<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<i32>>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    let items = match &v {
        toml::Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    items
        .iter()
        .map(|i| match i {
            toml::Value::Integer(n) => u8::try_from(*n).ok().map(i32::from),
            toml::Value::String(s) => s.trim().parse::<u8>().ok().map(i32::from),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom("expected exit codes (0 to 255), such as returns = [0, 2]")
        })
}

#[derive(Debug)]
pub struct Execute {
    label: String,
    command: String,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    user: Option<String>,
    /// Absolute path on the target.
    creates: Option<String>,
    returns: Vec<i32>,
    sensitive: bool,
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    let label = &spec.name;
    if p.command.trim().is_empty() {
        return Err(PolicyError::new(format!(
            "execute {label:?} has an empty command"
        )));
    }
    if let Some(cwd) = &p.cwd
        && !cwd.starts_with('/')
    {
        return Err(PolicyError::new(format!(
            "cwd {cwd:?} of execute {label:?} must be an absolute path"
        )));
    }
    if p.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(PolicyError::new(format!(
            "execute {label:?} has an empty user"
        )));
    }
    // Relative `creates` is relative to `cwd`, as in Chef.
    let creates = match (p.creates, &p.cwd) {
        (Some(c), _) if c.starts_with('/') => Some(c),
        (Some(c), Some(cwd)) => Some(format!("{}/{c}", cwd.trim_end_matches('/'))),
        (Some(c), None) => {
            return Err(PolicyError::new(format!(
                "creates {c:?} of execute {label:?} is a relative path and there is no cwd"
            ))
            .fix("write creates as an absolute path on the target, or set cwd"));
        }
        (None, _) => None,
    };
    let mut env = Vec::new();
    for (k, v) in p.environment {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(PolicyError::new(format!(
                "environment variable name {k:?} of execute {label:?} is not valid"
            )));
        }
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(PolicyError::new(format!(
                    "environment.{k} of execute {label:?} must be a string, not {}",
                    other.type_str()
                )));
            }
        };
        env.push((k, v));
    }
    Ok(Box::new(Execute {
        label: label.clone(),
        command: p.command,
        cwd: p.cwd,
        env,
        user: p.user,
        creates,
        returns: p.returns.unwrap_or_else(|| vec![0]),
        sensitive: spec.sensitive,
    }))
}

impl Execute {
    /// The command as reports show it: its first line, or nothing when sensitive.
    fn shown(&self) -> String {
        if self.sensitive {
            return "(sensitive command)".to_string();
        }
        let mut lines = self.command.trim().lines();
        let first = lines.next().unwrap_or_default();
        if lines.next().is_some() {
            format!("{first} ...")
        } else {
            first.to_string()
        }
    }
}

actions! {
    pub enum ExecuteAction {
        Run = "run",
        Nothing = "nothing",
    }
}

/// The one thing an execute does: run its command (shown as people may see it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunCommand(String);

impl fmt::Display for RunCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {}", self.0)
    }
}

impl Item for RunCommand {}

impl Converge for Execute {
    type Action = ExecuteAction;
    type Item = RunCommand;

    fn check(&self, action: ExecuteAction, cx: &mut Context) -> ResourceResult<Vec<RunCommand>> {
        if action == ExecuteAction::Nothing {
            return Ok(Vec::new());
        }
        if let Some(c) = &self.creates {
            // symlink_metadata: a dangling link still counts as created.
            if cx.target.fs().symlink_metadata(c).is_ok() {
                return Ok(Vec::new());
            }
        }
        Ok(vec![RunCommand(self.shown())])
    }

    fn apply(&self, _: ExecuteAction, _: &[RunCommand], cx: &mut Context) -> ResourceResult<()> {
        let opts = ShellOpts {
            cwd: self.cwd.as_deref(),
            env: &self.env,
            user: self.user.as_deref(),
        };
        let out = cx.target.shell(&self.command, &opts).map_err(|e| {
            let what = if self.sensitive {
                "/bin/sh for a sensitive execute".to_string()
            } else {
                format!("/bin/sh for execute[{}]", self.label)
            };
            RunError::spawn(what, e)
        })?;
        if out.status.code().is_some_and(|c| self.returns.contains(&c)) {
            return Ok(());
        }
        let mut failed = CommandFailed::new(&[], out.status, String::new());
        if self.returns != [0] {
            let list: Vec<String> = self.returns.iter().map(i32::to_string).collect();
            failed.note = format!(" (accepted: {})", list.join(", "));
        }
        if self.sensitive {
            failed.command = "the sensitive command".to_string();
            failed.quoted = false;
            failed.tail = "output hidden: the resource is sensitive".to_string();
        } else {
            failed.command = self.shown();
            failed.tail = output_tail(&out);
            if failed.tail.is_empty() {
                failed.tail = "no output".to_string();
            }
        }
        Err(failed.into())
    }

    /// A command has no state to read.
    fn fingerprint(_: &str, _: &mut State) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::user::tests::{NoEnv, spec};
    use super::*;
    use crate::platform::target::Target;
    use crate::resource::Change;

    /// Checks and carries out `action`: the changes, then the outcome.
    trait Run {
        fn check(&self, action: &str, cx: &mut Context) -> ResourceResult<Vec<Change>>;
        fn apply(&self, action: &str, cx: &mut Context) -> ResourceResult<()>;
    }

    impl Run for Box<dyn Resource> {
        fn check(&self, action: &str, cx: &mut Context) -> ResourceResult<Vec<Change>> {
            self.plan(action, cx).map(|p| p.changes)
        }
        fn apply(&self, action: &str, cx: &mut Context) -> ResourceResult<()> {
            let planned = self.plan(action, cx)?;
            self.apply_plan(&planned, cx)
        }
    }

    fn exec(props: &str) -> Box<dyn Resource> {
        build(&spec("label", props), &NoEnv).unwrap()
    }

    fn sensitive(props: &str) -> Box<dyn Resource> {
        let mut s = spec("label", props);
        s.sensitive = true;
        build(&s, &NoEnv).unwrap()
    }

    fn host_cx() -> (Target, tempfile::TempDir) {
        (Target::host(), tempfile::tempdir().unwrap())
    }

    #[test]
    fn props_parse_and_validate() {
        let err = |props: &str| build(&spec("x", props), &NoEnv).unwrap_err().message;
        assert!(err("cwd = \"/tmp\"").contains("command"));
        assert!(err("command = \"true\"\nreturns = [300]").contains("exit codes"));
        assert!(err("command = \"true\"\ncwd = \"tmp\"").contains("absolute"));
        assert!(err("command = \"true\"\ncreates = \"x\"").contains("relative"));
        assert!(err("command = \"true\"\nenvironment = { A = [1] }").contains("environment.A"));
        assert!(err("command = \"true\"\nfoo = 1").contains("foo"));
        build(
            &spec(
                "x",
                "command = \"true\"\nreturns = 3\nenvironment = { PORT = 8080, A = \"b\" }",
            ),
            &NoEnv,
        )
        .unwrap();
    }

    #[test]
    fn creates_and_nothing_skip_the_run() {
        let (target, dir) = host_cx();
        let mut cx = Context::new(&target);
        let marker = dir.path().join("done");
        let e = exec(&format!(
            "command = \"touch done\"\ncwd = {:?}\ncreates = \"done\"",
            dir.path().display().to_string()
        ));
        assert!(e.check("nothing", &mut cx).unwrap().is_empty());
        let c = e.check("run", &mut cx).unwrap();
        assert_eq!(c[0].summary, "run touch done");
        e.apply("run", &mut cx).unwrap();
        assert!(marker.exists());
        assert!(e.check("run", &mut cx).unwrap().is_empty());
    }

    #[test]
    fn environment_reaches_the_command() {
        let (target, dir) = host_cx();
        let mut cx = Context::new(&target);
        let out = dir.path().join("out");
        let e = exec(&format!(
            "command = 'echo \"$GREETING $N\" > {}'\nenvironment = {{ GREETING = \"hi\", N = 2 }}",
            out.display()
        ));
        e.apply("run", &mut cx).unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "hi 2\n");
    }

    #[test]
    fn failures_quote_status_and_stderr() {
        let (target, _dir) = host_cx();
        let mut cx = Context::new(&target);
        let e = exec("command = 'echo boom >&2; exit 3'");
        let msg = e.apply("run", &mut cx).unwrap_err().to_string();
        assert!(msg.contains("status 3") && msg.contains("boom"), "{msg}");
        exec("command = 'exit 3'\nreturns = [0, 3]")
            .apply("run", &mut cx)
            .unwrap();
        let msg = exec("command = 'exit 1'\nreturns = [0, 3]")
            .apply("run", &mut cx)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("accepted: 0, 3"), "{msg}");
    }

    #[test]
    fn sensitive_commands_are_masked() {
        let (target, _dir) = host_cx();
        let mut cx = Context::new(&target);
        let e = sensitive("command = 'echo s3cret >&2; exit 1'");
        let c = e.check("run", &mut cx).unwrap();
        assert_eq!(c[0].summary, "run (sensitive command)");
        let msg = e.apply("run", &mut cx).unwrap_err().to_string();
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[test]
    fn multi_line_commands_show_their_first_line() {
        let (target, _dir) = host_cx();
        let mut cx = Context::new(&target);
        let e = exec("command = '''\nset -e\ntrue\n'''");
        assert_eq!(
            e.check("run", &mut cx).unwrap()[0].summary,
            "run set -e ..."
        );
    }
}
