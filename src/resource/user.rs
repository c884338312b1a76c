//! `user`: a login in /etc/passwd. Changes go through useradd, usermod and
//! userdel (the `passwd` package) so that /etc/shadow, /etc/gshadow, the
//! skeleton files and the user's private group stay as Debian keeps them.
//! State is read from the files, so a converged user costs no process.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::state::clean;
use super::{
    BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef, actions,
    string_list,
};
use crate::error::{CommandFailed, PolicyError, RunError};
use crate::platform::accounts::{Accounts, Passwd};
use crate::platform::target::{Target, output_tail};

pub const TYPE: TypeDef = TypeDef::of::<User>(
    "user",
    &[
        "uid",
        "group",
        "groups",
        "home",
        "shell",
        "system",
        "manage_home",
        "comment",
    ],
    build,
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    #[serde(default, deserialize_with = "de_id")]
    uid: Option<u32>,
    /// Primary group, by name or gid.
    #[serde(default, deserialize_with = "de_name_or_id")]
    group: Option<String>,
    /// Supplementary groups the user must be in (others are left alone).
    #[serde(default, deserialize_with = "de_names")]
    groups: Vec<String>,
    home: Option<String>,
    shell: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    system: bool,
    #[serde(default, deserialize_with = "de_bool")]
    manage_home: bool,
    comment: Option<String>,
}

#[derive(Debug)]
pub struct User {
    name: String,
    p: Props,
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    check_account_name("user", &spec.name, false)?;
    for g in p.group.iter().chain(&p.groups) {
        check_account_name("group", g, true)?;
    }
    for (key, v) in [("home", &p.home), ("shell", &p.shell)] {
        if let Some(v) = v
            && (!v.starts_with('/') || v.contains(':') || v.contains('\n'))
        {
            return Err(PolicyError::new(format!(
                "{key} {v:?} of user {:?} must be an absolute path without ':'",
                spec.name
            ))
            .fix(format!("write {key} as a path such as \"/bin/sh\"")));
        }
    }
    if let Some(c) = &p.comment
        && (c.contains(':') || c.contains('\n'))
    {
        return Err(PolicyError::new(format!(
            "comment {c:?} of user {:?} cannot contain ':' or a newline (it is a field of /etc/passwd)",
            spec.name
        )));
    }
    Ok(Box::new(User {
        name: spec.name.clone(),
        p,
    }))
}

actions! {
    pub enum UserAction {
        Create = "create",
        Remove = "remove",
    }
}

/// One difference of an account; `apply` turns these into one useradd,
/// usermod or userdel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserChange {
    /// A new account; the text lists what is set.
    Create(String),
    Remove(String),
    Uid {
        from: u32,
        to: u32,
    },
    Group {
        from: String,
        to: String,
    },
    /// Supplementary groups the user is not in yet.
    Groups(Vec<String>),
    Home {
        from: String,
        to: String,
        moves: bool,
    },
    CreateHome(String),
    Shell {
        from: String,
        to: String,
    },
    Comment {
        from: String,
        to: String,
    },
}

impl fmt::Display for UserChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserChange::Create(s) => write!(f, "{s}"),
            UserChange::Remove(name) => write!(f, "remove user {name}"),
            UserChange::Uid { from, to } => write!(f, "uid {from} -> {to}"),
            UserChange::Group { from, to } => write!(f, "group {from} -> {to}"),
            UserChange::Groups(g) => write!(f, "groups += {}", g.join(", ")),
            UserChange::Home { from, to, moves } => {
                let how = if *moves { " (moved)" } else { "" };
                write!(f, "home {from} -> {to}{how}")
            }
            UserChange::CreateHome(h) => write!(f, "create home directory {h}"),
            UserChange::Shell { from, to } => write!(f, "shell {from} -> {to}"),
            UserChange::Comment { from, to } => write!(f, "comment {from:?} -> {to:?}"),
        }
    }
}

impl Item for UserChange {}

impl Converge for User {
    type Action = UserAction;
    type Item = UserChange;

    fn check(&self, action: UserAction, cx: &mut Context) -> ResourceResult<Vec<UserChange>> {
        match action {
            UserAction::Create => {
                let target = cx.target;
                let acc = cx.accounts();
                let Some(pw) = acc.users.get(&self.name) else {
                    return Ok(vec![UserChange::Create(self.create_summary())]);
                };
                // The comment (GECOS) is not in `Passwd`; read it only when it matters.
                let gecos = self
                    .p
                    .comment
                    .as_ref()
                    .map(|_| read_gecos(target, &self.name).unwrap_or_default());
                let home = self.p.home.as_deref().unwrap_or(&pw.home);
                let home_present = target.fs().is_dir(home);
                Ok(self.changes(pw, acc, gecos.as_deref(), home_present))
            }
            UserAction::Remove => Ok(if cx.accounts().users.contains_key(&self.name) {
                vec![UserChange::Remove(self.name.clone())]
            } else {
                Vec::new()
            }),
        }
    }

    fn apply(&self, _: UserAction, diff: &[UserChange], cx: &mut Context) -> ResourceResult<()> {
        if let [UserChange::Remove(_)] = diff {
            let mut argv = vec!["userdel"];
            if self.p.manage_home {
                argv.push("-r");
            }
            argv.push(&self.name);
            return run(cx.target, &argv);
        }
        let acc = cx.accounts().clone();
        self.require_groups(&acc)?;
        if let [UserChange::Create(_)] = diff {
            return self.useradd(cx.target, &acc);
        }
        self.usermod(cx.target, diff)
    }

    fn fingerprint(login: &str, state: &mut State) -> Option<String> {
        let acc = state.accounts();
        let Some(u) = acc.users.get(login) else {
            return Some("absent".to_string());
        };
        // Sorted: `groups_of` walks the groups by name.
        let groups = acc.groups_of(login);
        Some(format!(
            "uid={} gid={} home={} shell={} groups={}",
            u.uid,
            u.gid,
            clean(&u.home),
            clean(&u.shell),
            clean(&groups.join(","))
        ))
    }
}

impl User {
    fn create_summary(&self) -> String {
        let p = &self.p;
        let mut details = Vec::new();
        if let Some(uid) = p.uid {
            details.push(format!("uid {uid}"));
        }
        if let Some(g) = &p.group {
            details.push(format!("group {g}"));
        }
        if !p.groups.is_empty() {
            details.push(format!("groups {}", p.groups.join(", ")));
        }
        if let Some(h) = &p.home {
            details.push(format!("home {h}"));
        }
        if let Some(s) = &p.shell {
            details.push(format!("shell {s}"));
        }
        if p.system {
            details.push("system".to_string());
        }
        let mut s = format!("create user {}", self.name);
        if !details.is_empty() {
            s.push_str(&format!(" ({})", details.join(", ")));
        }
        s
    }

    /// Per-property differences between an existing account and the policy.
    /// `gecos` is the current comment, read only when `comment` is set;
    /// `home_present` says whether the home directory exists on the target.
    fn changes(
        &self,
        pw: &Passwd,
        acc: &Accounts,
        gecos: Option<&str>,
        home_present: bool,
    ) -> Vec<UserChange> {
        let p = &self.p;
        let mut out = Vec::new();
        if let Some(uid) = p.uid
            && uid != pw.uid
        {
            out.push(UserChange::Uid {
                from: pw.uid,
                to: uid,
            });
        }
        if let Some(g) = &p.group
            && acc.gid(g) != Some(pw.gid)
        {
            let cur = acc
                .group_name(pw.gid)
                .map_or_else(|| pw.gid.to_string(), str::to_string);
            out.push(UserChange::Group {
                from: cur,
                to: g.clone(),
            });
        }
        let missing = self.missing_groups(acc);
        if !missing.is_empty() {
            out.push(UserChange::Groups(missing));
        }
        let mut home_moves = false;
        if let Some(h) = &p.home
            && *h != pw.home
        {
            home_moves = p.manage_home;
            out.push(UserChange::Home {
                from: pw.home.clone(),
                to: h.clone(),
                moves: home_moves,
            });
        }
        if p.manage_home && !home_present && !home_moves {
            let h = p.home.as_deref().unwrap_or(&pw.home);
            out.push(UserChange::CreateHome(h.to_string()));
        }
        if let Some(s) = &p.shell
            && *s != pw.shell
        {
            out.push(UserChange::Shell {
                from: pw.shell.clone(),
                to: s.clone(),
            });
        }
        if let (Some(c), Some(cur)) = (&p.comment, gecos)
            && c != cur
        {
            out.push(UserChange::Comment {
                from: cur.to_string(),
                to: c.clone(),
            });
        }
        out
    }

    /// Supplementary groups from the policy that the user is not listed in yet.
    fn missing_groups(&self, acc: &Accounts) -> Vec<String> {
        self.p
            .groups
            .iter()
            .filter(|g| {
                let name = match g.parse::<u32>() {
                    Ok(gid) => acc.group_name(gid),
                    Err(_) => Some(g.as_str()),
                };
                !name
                    .and_then(|n| acc.groups.get(n))
                    .is_some_and(|grp| grp.members.contains(&self.name))
            })
            .cloned()
            .collect()
    }

    /// Fails early, with a fix, when a group the user needs does not exist:
    /// useradd's own message does not say which resource to add.
    fn require_groups(&self, acc: &Accounts) -> ResourceResult<()> {
        for g in self.p.group.iter().chain(&self.p.groups) {
            if acc.gid(g).is_none() {
                return Err(RunError::precondition(format!(
                    "group {g:?} of user {} does not exist on the target",
                    self.name
                ))
                .fix(format!(
                    "declare a `group = \"{g}\"` resource before this user"
                )));
            }
        }
        Ok(())
    }

    fn useradd(&self, target: &Target, acc: &Accounts) -> ResourceResult<()> {
        let p = &self.p;
        let uid = p.uid.map(|u| u.to_string());
        let groups = p.groups.join(",");
        let mut argv: Vec<&str> = vec!["useradd"];
        if p.system {
            argv.push("-r");
        }
        if let Some(uid) = &uid {
            argv.extend(["-u", uid]);
        }
        match &p.group {
            Some(g) => argv.extend(["-g", g]),
            // useradd refuses to create the user's private group when a group
            // of that name exists already (often declared just before): use it.
            None if acc.groups.contains_key(&self.name) => argv.extend(["-g", &self.name]),
            None => {}
        }
        if !groups.is_empty() {
            argv.extend(["-G", &groups]);
        }
        if let Some(h) = &p.home {
            argv.extend(["-d", h]);
        }
        if let Some(s) = &p.shell {
            argv.extend(["-s", s]);
        }
        if let Some(c) = &p.comment {
            argv.extend(["-c", c]);
        }
        argv.push(if p.manage_home { "-m" } else { "-M" });
        argv.push(&self.name);
        run(target, &argv)
    }

    /// One usermod for the differences `check` found, then the home
    /// directory if it is managed and still missing.
    fn usermod(&self, target: &Target, diff: &[UserChange]) -> ResourceResult<()> {
        let p = &self.p;
        let mut args: Vec<String> = Vec::new();
        let mut home = None;
        for c in diff {
            match c {
                UserChange::Uid { to, .. } => args.extend(["-u".into(), to.to_string()]),
                UserChange::Group { to, .. } => args.extend(["-g".into(), to.clone()]),
                UserChange::Groups(g) => args.extend(["-a".into(), "-G".into(), g.join(",")]),
                UserChange::Home { to, .. } => {
                    args.extend(["-d".into(), to.clone()]);
                    // usermod -m refuses to move onto an existing directory; one that
                    // exists already (a directory resource made it) is simply adopted.
                    if p.manage_home && !target.fs().exists(to) {
                        args.push("-m".into());
                    }
                    home = Some(to.as_str());
                }
                UserChange::CreateHome(h) => home = Some(h.as_str()),
                UserChange::Shell { to, .. } => args.extend(["-s".into(), to.clone()]),
                UserChange::Comment { to, .. } => args.extend(["-c".into(), to.clone()]),
                UserChange::Create(_) | UserChange::Remove(_) => {}
            }
        }
        if !args.is_empty() {
            let mut argv: Vec<&str> = vec!["usermod"];
            argv.extend(args.iter().map(String::as_str));
            argv.push(&self.name);
            run(target, &argv)?;
        }
        if p.manage_home
            && let Some(home) = home
            && !target.fs().is_dir(home)
        {
            // Also covers a move whose old home did not exist (usermod
            // then creates nothing).
            run(target, &["mkhomedir_helper", &self.name])?;
        }
        Ok(())
    }
}

/// The GECOS field of a user, from the target's /etc/passwd.
fn read_gecos(target: &Target, name: &str) -> Option<String> {
    let text = target.fs().read_to_string("/etc/passwd").ok()?;
    gecos_in(&text, name)
}

fn gecos_in(passwd: &str, name: &str) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| f[4].to_string())
    })
}

/// Runs an account tool on the target; a failure quotes its stderr.
pub(super) fn run(target: &Target, argv: &[&str]) -> ResourceResult<()> {
    let out = target.run(argv).map_err(|e| RunError::spawn(argv[0], e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CommandFailed::new(argv, out.status, output_tail(&out)).into())
    }
}

/// Names useradd and groupadd accept on Debian: no separators, no leading
/// dash, not all digits (that would read as an id).
pub(super) fn check_account_name(kind: &str, name: &str, id_ok: bool) -> Result<(), PolicyError> {
    let numeric = name.chars().all(|c| c.is_ascii_digit());
    if id_ok && numeric && name.parse::<u32>().is_ok() {
        return Ok(());
    }
    let bad = name.is_empty()
        || name.len() > 32
        || name.starts_with('-')
        || name == "."
        || name == ".."
        || numeric
        || name
            .chars()
            .any(|c| c == ':' || c == ',' || c == '/' || c.is_whitespace() || c.is_control());
    if bad {
        Err(
            PolicyError::new(format!("{name:?} is not a valid {kind} name")).fix(format!(
                "use at most 32 characters such as \"www-data\", without ':', ',', '/' or spaces{}",
                if id_ok { " (or a numeric id)" } else { "" }
            )),
        )
    } else {
        Ok(())
    }
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.type_str().to_string(),
    }
}

/// A numeric uid or gid, written as an integer or as a string of digits
/// (what a `{{attribute}}` template renders to).
pub(super) fn de_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    let id = match &v {
        toml::Value::Integer(i) => u32::try_from(*i).ok(),
        toml::Value::String(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    };
    // 4294967295 is (uid_t)-1, which the shadow tools reject.
    id.filter(|i| *i != u32::MAX).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "expected a numeric id such as 1500, not {}",
            describe(&v)
        ))
    })
}

/// A group given by name or by number.
fn de_name_or_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    match &v {
        toml::Value::String(s) => Ok(Some(s.trim().to_string())),
        toml::Value::Integer(i) if u32::try_from(*i).is_ok() => Ok(Some(i.to_string())),
        _ => Err(serde::de::Error::custom(format!(
            "expected a group name or gid, not {}",
            describe(&v)
        ))),
    }
}

/// A list of names; a single string may hold several, comma-separated
/// (what a rendered attribute often looks like).
pub(super) fn de_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    let list = string_list(&v).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "expected a list of names such as [\"adm\", \"www-data\"], not {}",
            describe(&v)
        ))
    })?;
    let mut names: Vec<String> = Vec::new();
    for n in list.iter().flat_map(|s| s.split(',')) {
        let n = n.trim();
        if !n.is_empty() && !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// A boolean, also as the strings "true"/"false" a template renders to.
pub(super) fn de_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = toml::Value::deserialize(d)?;
    match &v {
        toml::Value::Boolean(b) => Ok(*b),
        toml::Value::String(s) if s.trim() == "true" => Ok(true),
        toml::Value::String(s) if s.trim() == "false" => Ok(false),
        _ => Err(serde::de::Error::custom(format!(
            "expected true or false, not {}",
            describe(&v)
        ))),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::resource) struct NoEnv;

    impl BuildEnv for NoEnv {
        fn cookbook_file(&self, _: &str, _: &str) -> Result<std::sync::Arc<[u8]>, PolicyError> {
            unreachable!()
        }
        fn render_template(&self, _: &str, _: Option<&toml::Table>) -> Result<String, PolicyError> {
            unreachable!()
        }
        fn pin(&self, _: &str) -> Option<crate::policy::whitelist::Pin> {
            None
        }
    }

    pub(in crate::resource) fn spec(name: &str, props: &str) -> Spec {
        Spec {
            name: name.to_string(),
            props: toml::from_str(props).unwrap(),
            sensitive: false,
            secret: false,
            actions: vec![],
        }
    }

    fn user(name: &str, props: &str) -> User {
        let s = spec(name, props);
        User {
            name: s.name.clone(),
            p: s.props().unwrap(),
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          web:x:1001:1001:Web App:/srv/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:web\nweb:x:1001:\nwww-data:x:33:\nstaff:x:50:\n";

    fn diff(u: &User) -> Vec<String> {
        let acc = Accounts::parse(PASSWD, GROUP);
        let gecos = gecos_in(PASSWD, &u.name);
        let pw = &acc.users[&u.name];
        u.changes(pw, &acc, gecos.as_deref(), true)
            .into_iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn props_parse_and_validate() {
        let u = user(
            "web",
            r#"uid = "1500"
               group = 33
               groups = "adm, staff"
               system = "true"
               manage_home = true"#,
        );
        assert_eq!(u.p.uid, Some(1500));
        assert_eq!(u.p.group.as_deref(), Some("33"));
        assert_eq!(u.p.groups, ["adm", "staff"]);
        assert!(u.p.system && u.p.manage_home);

        let err = |name: &str, props: &str| build(&spec(name, props), &NoEnv).unwrap_err();
        assert!(err("web", "uid = \"abc\"").message.contains("numeric id"));
        assert!(err("web", "uid = -1").message.contains("numeric id"));
        assert!(err("web", "home = \"srv\"").message.contains("absolute"));
        assert!(err("web", "comment = \"a:b\"").message.contains("':'"));
        assert!(
            err("web", "system = \"yes\"")
                .message
                .contains("true or false")
        );
        assert!(err("web", "colour = 1").message.contains("colour"));
        assert!(err("a b", "").message.contains("not a valid user name"));
        assert!(err("1234", "").message.contains("not a valid user name"));
        assert!(build(&spec("web", "group = \"1001\""), &NoEnv).is_ok());
    }

    #[test]
    fn converged_user_has_no_changes() {
        let u = user(
            "web",
            r#"uid = 1001
               group = "web"
               groups = ["adm"]
               home = "/srv/web"
               shell = "/bin/sh"
               comment = "Web App""#,
        );
        assert!(diff(&u).is_empty());
        // The primary group by number is the same group.
        assert!(diff(&user("web", "group = 1001")).is_empty());
    }

    #[test]
    fn changes_are_listed_per_property() {
        let u = user(
            "web",
            r#"uid = 1500
               group = "www-data"
               groups = ["adm", "staff", "33"]
               home = "/home/web"
               manage_home = true
               shell = "/bin/bash"
               comment = "Shop""#,
        );
        assert_eq!(
            diff(&u),
            [
                "uid 1001 -> 1500",
                "group web -> www-data",
                "groups += staff, 33",
                "home /srv/web -> /home/web (moved)",
                "shell /bin/sh -> /bin/bash",
                "comment \"Web App\" -> \"Shop\"",
            ]
        );
        // A group that does not exist yet is a change, not an error: an
        // earlier resource may create it.
        assert_eq!(
            diff(&user("web", "group = \"nosuch\"")),
            ["group web -> nosuch"]
        );
    }

    #[test]
    fn a_missing_home_is_created_when_managed() {
        let acc = Accounts::parse(PASSWD, GROUP);
        let pw = &acc.users["web"];
        let u = user("web", "manage_home = true");
        let c = u.changes(pw, &acc, None, false);
        assert_eq!(c[0].to_string(), "create home directory /srv/web");
        assert!(user("web", "").changes(pw, &acc, None, false).is_empty());
    }

    #[test]
    fn missing_groups_are_named_before_useradd_runs() {
        let acc = Accounts::parse(PASSWD, GROUP);
        let e = user("new", "groups = [\"docker\"]")
            .require_groups(&acc)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"docker\"") && e.contains("group = \"docker\""),
            "{e}"
        );
        assert!(user("new", "group = 33").require_groups(&acc).is_ok());
    }

    #[test]
    fn create_summary_lists_what_is_set() {
        let u = user("app", "uid = 1500\nshell = \"/bin/sh\"\nsystem = true");
        assert_eq!(
            u.create_summary(),
            "create user app (uid 1500, shell /bin/sh, system)"
        );
    }

    #[test]
    fn check_reads_the_target_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        let target = Target::at_root(dir.path());
        let mut cx = Context::new(&target);
        let u = user("web", "comment = \"Web App\"\nshell = \"/bin/sh\"");
        assert!(u.check(UserAction::Create, &mut cx).unwrap().is_empty());
        let c = user("nobody2", "").plan("create", &mut cx).unwrap().changes;
        assert_eq!(c[0].summary, "create user nobody2");
        assert_eq!(u.check(UserAction::Remove, &mut cx).unwrap().len(), 1);
        assert!(
            user("nobody2", "")
                .check(UserAction::Remove, &mut cx)
                .unwrap()
                .is_empty()
        );
    }
}
