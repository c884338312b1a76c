//! `service`: a daemon enabled at boot and/or running, through systemd or
//! SysV init scripts. In a `--root` target nothing may be started (there is
//! no running system to start it in), so only enable and disable act there;
//! start, stop, restart and reload are reported as skipped.

use std::fmt;

use std::io;
use std::path::Path;
use std::process::Output;

use serde::{Deserialize, Serialize};

use super::{
    Action, BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef,
    actions,
};
use crate::error::{CommandFailed, PolicyError, RunError};
use crate::platform::target::{Target, output_tail};

pub const TYPE: TypeDef = TypeDef::of::<Service>("service", &["provider", "pattern"], build);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Provider {
    #[default]
    Auto,
    Systemd,
    Sysv,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    #[serde(default)]
    provider: Provider,
    /// A string in the command line of the service's process: with SysV,
    /// whether it runs is read from /proc instead of running the init
    /// script's `status`, which can take a tenth of a second (Chef and
    /// Puppet call this `pattern` too).
    pattern: Option<String>,
}

#[derive(Debug)]
pub struct Service {
    name: String,
    provider: Provider,
    pattern: Option<String>,
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    let name = &spec.name;
    if name.is_empty()
        || name.starts_with('-')
        || name.starts_with('.')
        || name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(
            PolicyError::new(format!("{name:?} is not a valid service name"))
                .fix("name the init script or systemd unit, e.g. service = \"apache2\""),
        );
    }
    if p.pattern.as_deref().is_some_and(str::is_empty) {
        return Err(PolicyError::new("pattern is empty").fix(
            "give a string from the daemon's command line, e.g. pattern = \"/usr/sbin/mariadbd\"",
        ));
    }
    Ok(Box::new(Service {
        name: name.clone(),
        provider: p.provider,
        pattern: p.pattern,
    }))
}

/// Unit types systemctl accepts; any other name gets `.service` appended
/// (so that "php8.2-fpm" is php8.2-fpm.service).
pub(crate) const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
];

pub(crate) const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

impl Service {
    fn provider(&self, target: &Target) -> Provider {
        match self.provider {
            Provider::Auto if target.uses_systemd() => Provider::Systemd,
            Provider::Auto => Provider::Sysv,
            p => p,
        }
    }

    fn unit(&self) -> String {
        if UNIT_SUFFIXES.iter().any(|s| self.name.ends_with(s)) {
            self.name.clone()
        } else {
            format!("{}.service", self.name)
        }
    }

    /// The SysV name, also when the policy says `foo.service`.
    fn sysv_name(&self) -> &str {
        self.name.strip_suffix(".service").unwrap_or(&self.name)
    }

    fn script(&self) -> String {
        format!("/etc/init.d/{}", self.sysv_name())
    }

    /// Whether the unit (or a template for it, or an init script systemd
    /// wraps) is installed; read from files so why-run spawns nothing.
    fn unit_installed(&self, target: &Target) -> bool {
        let unit = self.unit();
        let template = unit
            .split_once('@')
            .and_then(|(head, tail)| Some(format!("{head}@{}", &tail[tail.rfind('.')?..])));
        UNIT_DIRS.iter().any(|d| {
            std::iter::once(&unit)
                .chain(&template)
                .any(|u| exists(target, &format!("{d}/{u}")))
        }) || exists(target, &self.script())
    }

    fn installed(&self, target: &Target, provider: Provider) -> bool {
        match provider {
            Provider::Systemd => self.unit_installed(target),
            _ => exists(target, &self.script()),
        }
    }

    /// What was looked for, for the error about a service that is not installed.
    fn looked_for(&self, provider: Provider) -> String {
        match provider {
            Provider::Systemd => format!(
                "no unit {} in {} and no init script {}",
                self.unit(),
                UNIT_DIRS.join(", "),
                self.script()
            ),
            _ => format!("no init script {}", self.script()),
        }
    }

    fn is_enabled(&self, target: &Target, provider: Provider) -> ResourceResult<Enabled> {
        match provider {
            Provider::Systemd => {
                let unit = self.unit();
                let out = target
                    .run(&["systemctl", "is-enabled", &unit])
                    .map_err(|e| systemctl_missing(&e))?;
                let state = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                Ok(systemd_enabled(out.status.success(), &state))
            }
            _ => Ok(if sysv_enabled(target, self.sysv_name()) {
                Enabled::Yes
            } else {
                Enabled::No
            }),
        }
    }

    fn is_running(&self, target: &Target, provider: Provider) -> ResourceResult<bool> {
        if let (Some(pattern), Provider::Sysv) = (&self.pattern, provider) {
            return Ok(process_matches(target, pattern));
        }
        let out = match provider {
            Provider::Systemd => target.run(&["systemctl", "is-active", "--quiet", &self.unit()]),
            _ => {
                let script = self.script();
                // A script that lost its executable bit still runs through sh.
                target
                    .run(&[&script, "status"])
                    .or_else(|_| target.run(&["/bin/sh", &script, "status"]))
            }
        }
        .map_err(|e| match provider {
            Provider::Systemd => systemctl_missing(&e),
            _ => RunError::spawn(format!("{} status", self.script()), e)
                .context(format!("could not ask whether {} is running", self.name)),
        })?;
        Ok(out.status.success())
    }

    fn act(
        &self,
        target: &Target,
        provider: Provider,
        action: ServiceAction,
    ) -> ResourceResult<()> {
        match provider {
            Provider::Systemd => {
                let unit = self.unit();
                let argv = ["systemctl", action.name(), &unit];
                let out = target.run(&argv).map_err(|e| systemctl_missing(&e))?;
                check_output(&argv, &out)
            }
            _ => match action {
                ServiceAction::Enable => {
                    // `defaults` makes the links from the LSB header if there are
                    // none; `enable` turns K links left by a disable back into S.
                    self.update_rc(target, "defaults")?;
                    self.update_rc(target, "enable")
                }
                ServiceAction::Disable => self.update_rc(target, "disable"),
                ServiceAction::Reload => {
                    let script = self.script();
                    let out = self.init_script(target, "reload")?;
                    // LSB: 3 is "unimplemented feature"; force-reload is mandatory
                    // in Debian (it restarts when the daemon cannot reload).
                    if out.status.code() == Some(3) {
                        let out = self.init_script(target, "force-reload")?;
                        return check_output(&[&script, "force-reload"], &out).map_err(|e| {
                            e.context(format!(
                                "{script} has no reload (status 3), so kiln tried force-reload"
                            ))
                        });
                    }
                    check_output(&[&script, "reload"], &out)
                }
                verb => {
                    let out = self.init_script(target, verb.name())?;
                    check_output(&[&self.script(), verb.name()], &out)
                }
            },
        }
    }

    fn update_rc(&self, target: &Target, verb: &str) -> ResourceResult<()> {
        let out = target
            .run(&["update-rc.d", self.sysv_name(), verb])
            .map_err(|e| RunError::spawn("update-rc.d on the target", e))?;
        check_output(&["update-rc.d", self.sysv_name(), verb], &out)
    }

    /// Runs the init script (`Target::run` keeps a daemon's inherited
    /// stdout from holding the run).
    fn init_script(&self, target: &Target, verb: &str) -> ResourceResult<Output> {
        let script = self.script();
        target
            .run(&[&script, verb])
            .map_err(|e| RunError::spawn(format!("{script} {verb}"), e))
    }
}

/// Whether a live process on the target's system has `pattern` in its
/// command line. A `--root` tree shares the host's processes, so it never matches there.
fn process_matches(target: &Target, pattern: &str) -> bool {
    if target.is_chroot() {
        return false;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    let me = std::process::id().to_string();
    procs.flatten().any(|p| {
        let name = p.file_name();
        let name = name.to_string_lossy();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            return false;
        }
        // A zombie has an empty command line: it does not count as running.
        std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
            let line: Vec<u8> = c.iter().map(|b| if *b == 0 { b' ' } else { *b }).collect();
            String::from_utf8_lossy(&line).contains(pattern)
        })
    })
}

/// Whether a live process on the target's system is named `name` (its
/// command name, as /proc gives it), or `name` and a `d` (mariadb's
/// daemon is mariadbd). Never on a `--root` tree: it shares the host's.
pub fn process_named(target: &Target, name: &str) -> bool {
    if target.is_chroot() {
        return false;
    }
    let daemon = format!("{name}d");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        // `PID (COMM) STATE ...`; a zombie (Z) does not run.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            return false;
        };
        let comm = &stat[open + 1..close];
        let zombie = stat[close..].starts_with(") Z");
        !zombie && (comm == name || comm == daemon)
    })
}

fn systemctl_missing(e: &io::Error) -> RunError {
    RunError::precondition(format!("could not run systemctl on the target ({e})")).fix(
        "with provider = \"systemd\" the target needs systemd installed, or use provider = \"sysv\"",
    )
}

fn check_output(argv: &[&str], out: &Output) -> ResourceResult<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(CommandFailed::new(argv, out.status, output_tail(out)).into())
}

/// Whether `p` is on the target (a dangling link counts).
fn exists(target: &Target, p: &str) -> bool {
    target.fs().symlink_metadata(p).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enabled {
    Yes,
    No,
    /// Static or generated units start as dependencies: nothing to enable or disable.
    NotApplicable,
}

/// Reads `systemctl is-enabled`: it exits 0 for every state that starts at
/// boot, but only "enabled" states can be disabled.
fn systemd_enabled(success: bool, state: &str) -> Enabled {
    match state {
        "enabled" | "enabled-runtime" => Enabled::Yes,
        _ if success => Enabled::NotApplicable,
        _ => Enabled::No,
    }
}

/// The runlevel whose rc directory says whether a SysV script is enabled:
/// 2 (Debian's default), or the first of the script's `Default-Start`
/// (`S` for early-boot scripts).
fn sysv_runlevel(script: &str) -> String {
    let in_header = script
        .lines()
        .skip_while(|l| !l.starts_with("### BEGIN INIT INFO"))
        .take_while(|l| !l.starts_with("### END INIT INFO"));
    for line in in_header {
        if let Some(v) = line
            .trim_start_matches('#')
            .trim()
            .strip_prefix("Default-Start:")
        {
            let levels: Vec<&str> = v.split_whitespace().collect();
            if levels.is_empty() || levels.contains(&"2") {
                return "2".to_string();
            }
            return levels[0].to_string();
        }
    }
    "2".to_string()
}

/// Enabled = a start link `S<NN><name>` in the rc directory of the script's runlevel.
pub(crate) fn sysv_enabled(target: &Target, name: &str) -> bool {
    let script = target
        .fs()
        .read_to_string(format!("/etc/init.d/{name}"))
        .unwrap_or_default();
    let dir = format!("/etc/rc{}.d", sysv_runlevel(&script));
    let Ok(entries) = target.fs().read_dir(dir) else {
        return false;
    };
    entries.iter().any(|e| {
        e.to_str()
            .and_then(|f| f.strip_prefix('S'))
            .map(|f| f.trim_start_matches(|c: char| c.is_ascii_digit()))
            .is_some_and(|f| f == name)
    })
}

actions! {
    pub enum ServiceAction {
        Enable = "enable",
        Start = "start",
        Disable = "disable",
        Stop = "stop",
        Restart = "restart",
        Reload = "reload",
        Nothing = "nothing",
    }
}

impl ServiceAction {
    /// Acts on the running system, not on boot configuration.
    fn runtime(self) -> bool {
        matches!(
            self,
            ServiceAction::Start
                | ServiceAction::Stop
                | ServiceAction::Restart
                | ServiceAction::Reload
        )
    }
}

/// What an action would do to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "change", content = "action", rename_all = "snake_case")]
pub enum ServiceChange {
    Act(ServiceAction),
    /// Not installed when checked: a package earlier in the run may install
    /// it (why-run must be able to plan that); apply says what is missing.
    NotInstalledYet(ServiceAction),
    /// A runtime action in a `--root` target: reported, never done.
    SkippedInRoot(ServiceAction),
}

impl fmt::Display for ServiceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceChange::Act(a) => write!(f, "{}", a.name()),
            ServiceChange::NotInstalledYet(a) => write!(f, "{} (not installed yet)", a.name()),
            ServiceChange::SkippedInRoot(a) => write!(f, "{} skipped: --root target", a.name()),
        }
    }
}

impl Item for ServiceChange {
    fn skipped(&self) -> bool {
        matches!(self, ServiceChange::SkippedInRoot(_))
    }
}

impl Converge for Service {
    type Action = ServiceAction;
    type Item = ServiceChange;

    fn check(&self, action: ServiceAction, cx: &mut Context) -> ResourceResult<Vec<ServiceChange>> {
        use ServiceAction as A;
        let target = cx.target;
        if action == A::Nothing {
            return Ok(Vec::new());
        }
        if action.runtime() && target.is_chroot() {
            return Ok(vec![ServiceChange::SkippedInRoot(action)]);
        }
        let provider = self.provider(target);
        if !self.installed(target, provider) {
            return Ok(match action {
                A::Disable | A::Stop => Vec::new(),
                _ => vec![ServiceChange::NotInstalledYet(action)],
            });
        }
        let change = match action {
            A::Enable => self.is_enabled(target, provider)? == Enabled::No,
            A::Disable => self.is_enabled(target, provider)? == Enabled::Yes,
            A::Start => !self.is_running(target, provider)?,
            A::Stop => self.is_running(target, provider)?,
            // Unconditional, as in Chef: usually the target of a notification.
            A::Restart | A::Reload | A::Nothing => true,
        };
        Ok(if change {
            vec![ServiceChange::Act(action)]
        } else {
            Vec::new()
        })
    }

    fn apply(
        &self,
        _: ServiceAction,
        diff: &[ServiceChange],
        cx: &mut Context,
    ) -> ResourceResult<()> {
        let target = cx.target;
        for c in diff {
            let action = match *c {
                ServiceChange::SkippedInRoot(_) => continue,
                ServiceChange::NotInstalledYet(action) => {
                    let provider = self.provider(target);
                    return Err(RunError::precondition(format!(
                        "cannot {} service {}: {} on the target",
                        action.name(),
                        self.name,
                        self.looked_for(provider)
                    ))
                    .fix("install its package before this resource"));
                }
                ServiceChange::Act(action) => action,
            };
            let provider = self.provider(target);
            // systemctl enables offline, but starting needs a running systemd.
            if provider == Provider::Systemd && action.runtime() && !target.uses_systemd() {
                return Err(RunError::precondition(format!(
                    "cannot {} service {}: it has provider = \"systemd\" but systemd is not running on this host",
                    action.name(),
                    self.name
                )));
            }
            self.act(target, provider, action)?;
            if matches!(action, ServiceAction::Start | ServiceAction::Restart) {
                self.confirm_running(target, provider, action)?;
            }
        }
        Ok(())
    }

    fn fingerprint(name: &str, state: &mut State) -> Option<String> {
        Some(fingerprint_part(state.target, name))
    }
}

impl Service {
    /// An init script can exit 0 for a daemon that dies at once; what
    /// counts is that the service is running a moment later.
    fn confirm_running(
        &self,
        target: &Target,
        provider: Provider,
        action: ServiceAction,
    ) -> ResourceResult<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Give a daemon that dies at once the time to do so.
        std::thread::sleep(std::time::Duration::from_millis(200));
        loop {
            if self.is_running(target, provider)? {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(RunError::precondition(format!(
                    "service {}: {} reported success, but the service is not running 5 s later",
                    self.name,
                    action.name()
                ))
                .fix("check its log and configuration"));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// Whether a service starts at boot: `enabled=yes|no|static|masked`, or
/// `absent` when neither a systemd unit nor an init script is installed.
/// Read from files: systemd's wants/ and requires/ links where systemd is
/// the init system, else the SysV rc links. The provider is left out of the
/// part, so that a service enabled on a systemd host and on a SysV one
/// compares equal.
fn fingerprint_part(target: &Target, name: &str) -> String {
    let unit = if UNIT_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        name.to_string()
    } else {
        format!("{name}.service")
    };
    if target.uses_systemd()
        && let Some(state) = systemd_state(target, &unit)
    {
        return format!("enabled={state}");
    }
    let sysv = name.strip_suffix(".service").unwrap_or(name);
    if !exists(target, &format!("/etc/init.d/{sysv}")) {
        return "absent".to_string();
    }
    if sysv_enabled(target, sysv) {
        "enabled=yes".to_string()
    } else {
        "enabled=no".to_string()
    }
}

/// Directories whose `*.wants/` and `*.requires/` links enable units, and
/// where a link to /dev/null masks one.
const SYSTEMD_CONFIG_DIRS: &[&str] = &["/etc/systemd/system", "/run/systemd/system"];

/// The unit's enablement as `systemctl is-enabled` would put it, from files;
/// `None` when no unit file exists (systemd then runs the SysV script).
fn systemd_state(target: &Target, unit: &str) -> Option<&'static str> {
    for d in SYSTEMD_CONFIG_DIRS {
        if target
            .fs()
            .read_link(format!("{d}/{unit}"))
            .is_ok_and(|t| t == Path::new("/dev/null"))
        {
            return Some("masked");
        }
    }
    // An instance `getty@tty1.service` is enabled as itself, from the template's file.
    let template = unit
        .split_once('@')
        .and_then(|(head, tail)| Some(format!("{head}@{}", &tail[tail.rfind('.')?..])));
    let file = UNIT_DIRS.iter().find_map(|d| {
        std::iter::once(unit)
            .chain(template.as_deref())
            .map(|u| format!("{d}/{u}"))
            .find(|p| exists(target, p))
    })?;
    let wanted = SYSTEMD_CONFIG_DIRS.iter().any(|d| {
        target.fs().read_dir(d).is_ok_and(|entries| {
            entries.iter().any(|e| {
                let dir = e.to_string_lossy();
                (dir.ends_with(".wants") || dir.ends_with(".requires"))
                    && exists(target, &format!("{d}/{dir}/{unit}"))
            })
        })
    });
    if wanted {
        return Some("yes");
    }
    // Read where a link leads, as the kernel resolves it inside the target.
    let text = target.fs().read_to_string(&file).unwrap_or_default();
    Some(if has_install_section(&text) {
        "no"
    } else {
        "static"
    })
}

/// Whether a unit file can be enabled: an `[Install]` section with
/// WantedBy, RequiredBy, Alias or Also. Without one the unit is static.
fn has_install_section(unit: &str) -> bool {
    let mut in_install = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_install = line == "[Install]";
        } else if in_install
            && ["WantedBy", "RequiredBy", "Alias", "Also", "UpheldBy"]
                .iter()
                .any(|k| line.split('=').next().is_some_and(|x| x.trim() == *k))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::user::tests::{NoEnv, spec};
    use super::*;

    fn service(name: &str, props: &str) -> Box<dyn Resource> {
        build(&spec(name, props), &NoEnv).unwrap()
    }

    const SCRIPT: &str = "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: x\n\
                          # Default-Start:     2 3 4 5\n# Default-Stop: 0 1 6\n### END INIT INFO\n";

    /// A `--root` tree with an init script and the given rc links.
    fn root(name: &str, script: &str, links: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("etc/init.d");
        std::fs::create_dir_all(&init).unwrap();
        std::fs::write(init.join(name), script).unwrap();
        for l in links {
            let (rc, link) = l.split_once('/').unwrap();
            let rc = dir.path().join("etc").join(rc);
            std::fs::create_dir_all(&rc).unwrap();
            std::os::unix::fs::symlink(format!("../init.d/{name}"), rc.join(link)).unwrap();
        }
        dir
    }

    fn summaries(r: &dyn Resource, action: &str, target: &Target) -> Vec<(String, bool)> {
        let mut cx = Context::new(target);
        r.plan(action, &mut cx)
            .unwrap()
            .changes
            .into_iter()
            .map(|c| (c.summary, c.skipped))
            .collect()
    }

    #[test]
    fn pattern_finds_a_live_process_on_the_host_only() {
        let mut child = std::process::Command::new("sleep")
            .arg("7.31415")
            .spawn()
            .unwrap();
        // Until the child has exec'd, its command line is still ours.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !process_matches(&Target::host(), "sleep 7.31415") {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never showed up"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!process_matches(
            &Target::at_root(std::path::Path::new("/tmp")),
            "sleep 7.31415"
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!process_matches(&Target::host(), "sleep 7.31415"));
    }

    #[test]
    fn props_parse_and_validate() {
        service("apache2", "provider = \"sysv\"");
        service("php8.2-fpm", "");
        let err = |name: &str, props: &str| build(&spec(name, props), &NoEnv).unwrap_err().message;
        assert!(err("x", "provider = \"upstart\"").contains("upstart"));
        assert!(err("../x", "").contains("not a valid service name"));
        assert!(err("x", "pattern = \"\"").contains("pattern is empty"));
    }

    #[test]
    fn unit_names() {
        let s = |n: &str| Service {
            name: n.into(),
            provider: Provider::Auto,
            pattern: None,
        };
        assert_eq!(s("php8.2-fpm").unit(), "php8.2-fpm.service");
        assert_eq!(s("redis.socket").unit(), "redis.socket");
        assert_eq!(s("cron.service").script(), "/etc/init.d/cron");
    }

    #[test]
    fn sysv_enabled_reads_rc_links() {
        let off = root(
            "memcached",
            SCRIPT,
            &["rc2.d/K01memcached", "rc2.d/S02memcached-other"],
        );
        let on = root(
            "memcached",
            SCRIPT,
            &["rc2.d/S01memcached", "rc0.d/K01memcached"],
        );
        let s = service("memcached", "provider = \"sysv\"");
        let (t_off, t_on) = (Target::at_root(off.path()), Target::at_root(on.path()));
        assert_eq!(summaries(&*s, "enable", &t_off), [("enable".into(), false)]);
        assert!(summaries(&*s, "disable", &t_off).is_empty());
        assert!(summaries(&*s, "enable", &t_on).is_empty());
        assert_eq!(
            summaries(&*s, "disable", &t_on),
            [("disable".into(), false)]
        );
    }

    #[test]
    fn early_boot_scripts_are_enabled_in_rcs() {
        let script = SCRIPT.replace("2 3 4 5", "S");
        assert_eq!(sysv_runlevel(&script), "S");
        assert_eq!(sysv_runlevel("#!/bin/sh\n"), "2");
        let r = root("procps", &script, &["rcS.d/S01procps"]);
        let s = service("procps", "provider = \"sysv\"");
        assert!(summaries(&*s, "enable", &Target::at_root(r.path())).is_empty());
    }

    #[test]
    fn runtime_actions_are_skipped_in_a_root() {
        let r = root("memcached", SCRIPT, &[]);
        let t = Target::at_root(r.path());
        let s = service("memcached", "");
        for a in ["start", "stop", "restart", "reload"] {
            assert_eq!(
                summaries(&*s, a, &t),
                [(format!("{a} skipped: --root target"), true)]
            );
            let mut cx = Context::new(&t);
            let planned = s.plan(a, &mut cx).unwrap();
            s.apply_plan(&planned, &mut cx).unwrap();
        }
        assert!(summaries(&*s, "nothing", &t).is_empty());
    }

    #[test]
    fn a_missing_service_is_planned_then_named_in_the_error() {
        let r = root("other", SCRIPT, &[]);
        let t = Target::at_root(r.path());
        let s = service("memcached", "provider = \"sysv\"");
        assert_eq!(
            summaries(&*s, "enable", &t),
            [("enable (not installed yet)".into(), false)]
        );
        assert!(summaries(&*s, "disable", &t).is_empty());
        let apply = |s: &dyn Resource| {
            let mut cx = Context::new(&t);
            let planned = s.plan("enable", &mut cx).unwrap();
            s.apply_plan(&planned, &mut cx).unwrap_err().to_string()
        };
        let e = apply(&*s);
        assert!(e.contains("/etc/init.d/memcached"), "{e}");
        let s = service("memcached", "provider = \"systemd\"");
        let e = apply(&*s);
        assert!(
            e.contains("memcached.service") && e.contains("/lib/systemd/system"),
            "{e}"
        );
    }

    #[test]
    fn systemd_states() {
        assert_eq!(systemd_enabled(true, "enabled"), Enabled::Yes);
        assert_eq!(systemd_enabled(true, "static"), Enabled::NotApplicable);
        assert_eq!(systemd_enabled(false, "disabled"), Enabled::No);
        assert_eq!(systemd_enabled(false, "masked"), Enabled::No);
    }

    #[test]
    fn systemd_units_and_templates_are_found_in_files() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib/systemd/system");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("getty@.service"), "").unwrap();
        std::fs::write(lib.join("redis-server.service"), "").unwrap();
        let t = Target::at_root(dir.path());
        let s = |n: &str| Service {
            name: n.into(),
            provider: Provider::Systemd,
            pattern: None,
        };
        assert!(s("redis-server").unit_installed(&t));
        assert!(s("getty@tty1").unit_installed(&t));
        assert!(!s("memcached").unit_installed(&t));
    }
}
