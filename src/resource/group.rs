//! `group`: an entry of /etc/group, managed with groupadd, groupmod, gpasswd
//! and groupdel so that /etc/gshadow follows. `members` is the exact member
//! list unless `append = true`, as Chef's default.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::state::clean;
use super::user::{check_account_name, de_bool, de_id, de_names, run};
use super::{
    BuildEnv, Context, Converge, Item, Resource, ResourceResult, Spec, State, TypeDef, actions,
};
use crate::error::{PolicyError, RunError};
use crate::platform::accounts::{Accounts, Group as GroupEntry};

pub const TYPE: TypeDef =
    TypeDef::of::<Group>("group", &["gid", "members", "append", "system"], build);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    #[serde(default, deserialize_with = "de_id")]
    gid: Option<u32>,
    /// `None` leaves membership alone; `Some([])` empties the group.
    #[serde(default, deserialize_with = "de_some_names")]
    members: Option<Vec<String>>,
    /// Only add `members`, never remove others.
    #[serde(default, deserialize_with = "de_bool")]
    append: bool,
    #[serde(default, deserialize_with = "de_bool")]
    system: bool,
}

fn de_some_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    de_names(d).map(Some)
}

#[derive(Debug)]
pub struct Group {
    name: String,
    p: Props,
}

fn build(spec: &Spec, _env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    check_account_name("group", &spec.name, false)?;
    for m in p.members.iter().flatten() {
        check_account_name("user", m, false)?;
    }
    if p.append && p.members.is_none() {
        return Err(
            PolicyError::new(format!("group {:?} sets append but no members", spec.name))
                .fix("add members = [\"user\", ...] or remove append"),
        );
    }
    Ok(Box::new(Group {
        name: spec.name.clone(),
        p,
    }))
}

actions! {
    pub enum GroupAction {
        Create = "create",
        Remove = "remove",
    }
}

/// One difference of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupChange {
    /// A new group; `members` is the list it gets (empty: none).
    Create {
        summary: String,
        members: Vec<String>,
    },
    Remove(String),
    Gid {
        from: u32,
        to: u32,
    },
    /// `append`: only `missing` are added; `list` is the member list to set.
    MembersAdd {
        missing: Vec<String>,
        list: Vec<String>,
    },
    Members {
        have: Vec<String>,
        want: Vec<String>,
    },
}

impl fmt::Display for GroupChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |s: &[String]| {
            if s.is_empty() {
                "(none)".to_string()
            } else {
                s.join(", ")
            }
        };
        match self {
            GroupChange::Create { summary, .. } => write!(f, "{summary}"),
            GroupChange::Remove(name) => write!(f, "remove group {name}"),
            GroupChange::Gid { from, to } => write!(f, "gid {from} -> {to}"),
            GroupChange::MembersAdd { missing, .. } => {
                write!(f, "members += {}", missing.join(", "))
            }
            GroupChange::Members { have, want } => {
                write!(f, "members {} -> {}", show(have), show(want))
            }
        }
    }
}

impl Item for GroupChange {}

impl Converge for Group {
    type Action = GroupAction;
    type Item = GroupChange;

    fn check(&self, action: GroupAction, cx: &mut Context) -> ResourceResult<Vec<GroupChange>> {
        let acc = cx.accounts();
        Ok(match action {
            GroupAction::Create => match acc.groups.get(&self.name) {
                None => vec![GroupChange::Create {
                    summary: self.create_summary(),
                    members: self.wanted_members(None).unwrap_or_default(),
                }],
                Some(g) => self.changes(g),
            },
            GroupAction::Remove => {
                if acc.groups.contains_key(&self.name) {
                    vec![GroupChange::Remove(self.name.clone())]
                } else {
                    Vec::new()
                }
            }
        })
    }

    fn apply(&self, _: GroupAction, diff: &[GroupChange], cx: &mut Context) -> ResourceResult<()> {
        let target = cx.target;
        if let [GroupChange::Remove(_)] = diff {
            return run(target, &["groupdel", &self.name]);
        }
        self.require_members(cx.accounts())?;
        for c in diff {
            let members = match c {
                GroupChange::Create { members, .. } => {
                    let gid = self.p.gid.map(|g| g.to_string());
                    let mut argv = vec!["groupadd"];
                    if self.p.system {
                        argv.push("-r");
                    }
                    if let Some(gid) = &gid {
                        argv.extend(["-g", gid]);
                    }
                    argv.push(&self.name);
                    run(target, &argv)?;
                    if members.is_empty() {
                        continue;
                    }
                    members
                }
                GroupChange::Gid { to, .. } => {
                    run(target, &["groupmod", "-g", &to.to_string(), &self.name])?;
                    continue;
                }
                GroupChange::MembersAdd { list, .. } => list,
                GroupChange::Members { want, .. } => want,
                GroupChange::Remove(_) => continue,
            };
            run(target, &["gpasswd", "-M", &members.join(","), &self.name])?;
        }
        Ok(())
    }

    fn fingerprint(name: &str, state: &mut State) -> Option<String> {
        let Some(g) = state.accounts().groups.get(name) else {
            return Some("absent".to_string());
        };
        // The order of /etc/group's member list is how they were added, not state.
        let members: BTreeSet<&str> = g.members.iter().map(String::as_str).collect();
        let members: Vec<&str> = members.into_iter().collect();
        Some(format!(
            "gid={} members={}",
            g.gid,
            clean(&members.join(","))
        ))
    }
}

impl Group {
    fn create_summary(&self) -> String {
        let mut details = Vec::new();
        if let Some(gid) = self.p.gid {
            details.push(format!("gid {gid}"));
        }
        if let Some(m) = self.p.members.as_ref().filter(|m| !m.is_empty()) {
            details.push(format!("members {}", m.join(", ")));
        }
        if self.p.system {
            details.push("system".to_string());
        }
        let mut s = format!("create group {}", self.name);
        if !details.is_empty() {
            s.push_str(&format!(" ({})", details.join(", ")));
        }
        s
    }

    /// The member list the group must end up with, if the policy manages it.
    fn wanted_members(&self, current: Option<&GroupEntry>) -> Option<Vec<String>> {
        let want = self.p.members.as_ref()?;
        let mut list: Vec<String> = Vec::new();
        if self.p.append {
            list.extend(current.iter().flat_map(|g| g.members.iter().cloned()));
        }
        list.extend(want.iter().cloned());
        list.sort();
        list.dedup();
        Some(list)
    }

    fn changes(&self, g: &GroupEntry) -> Vec<GroupChange> {
        let mut out = Vec::new();
        if let Some(gid) = self.p.gid.filter(|gid| *gid != g.gid) {
            out.push(GroupChange::Gid {
                from: g.gid,
                to: gid,
            });
        }
        if let Some(want) = &self.p.members {
            let have: BTreeSet<&str> = g.members.iter().map(String::as_str).collect();
            let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
            let owned = |s: &BTreeSet<&str>| s.iter().map(|m| m.to_string()).collect::<Vec<_>>();
            if self.p.append {
                let missing: Vec<&str> = want.difference(&have).copied().collect();
                if !missing.is_empty() {
                    out.push(GroupChange::MembersAdd {
                        missing: missing.iter().map(|m| m.to_string()).collect(),
                        list: self.wanted_members(Some(g)).unwrap_or_default(),
                    });
                }
            } else if want != have {
                out.push(GroupChange::Members {
                    have: owned(&have),
                    want: owned(&want),
                });
            }
        }
        out
    }

    /// gpasswd refuses unknown users; say which resource is missing.
    fn require_members(&self, acc: &Accounts) -> ResourceResult<()> {
        for m in self.p.members.iter().flatten() {
            if !acc.users.contains_key(m) {
                return Err(RunError::precondition(format!(
                    "user {m:?}, a member of group {}, does not exist on the target",
                    self.name
                ))
                .fix("declare it before this group, or list the group in the user's `groups` instead"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::user::tests::{NoEnv, spec};
    use super::*;
    use crate::platform::target::Target;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          web:x:1001:1001::/srv/web:/bin/sh\n\
                          deploy:x:1002:1002::/home/deploy:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:1500:web,root\nempty:x:1600:\n";

    fn group(name: &str, props: &str) -> Group {
        let s = spec(name, props);
        Group {
            name: s.name.clone(),
            p: s.props().unwrap(),
        }
    }

    fn diff(g: &Group) -> Vec<String> {
        let acc = Accounts::parse(PASSWD, GROUP);
        g.changes(&acc.groups[&g.name])
            .into_iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn props_parse_and_validate() {
        let g = group(
            "www",
            "gid = \"1500\"\nmembers = \"web, root\"\nsystem = true",
        );
        assert_eq!(g.p.gid, Some(1500));
        assert_eq!(
            g.p.members.as_deref(),
            Some(&["web".into(), "root".into()][..])
        );
        let err = |props: &str| build(&spec("www", props), &NoEnv).unwrap_err().message;
        assert!(err("gid = 1.5").contains("numeric id"));
        assert!(err("append = true").contains("append"));
        assert!(err("members = [1]").contains("list of names"));
        assert!(build(&spec("a:b", ""), &NoEnv).is_err());
        assert!(build(&spec("www", "members = []"), &NoEnv).is_ok());
    }

    #[test]
    fn members_are_exact_by_default() {
        assert!(diff(&group("www", "gid = 1500\nmembers = [\"root\", \"web\"]")).is_empty());
        assert!(diff(&group("www", "")).is_empty());
        assert_eq!(
            diff(&group("www", "gid = 1700\nmembers = [\"deploy\", \"web\"]")),
            ["gid 1500 -> 1700", "members root, web -> deploy, web"]
        );
        assert_eq!(
            diff(&group("www", "members = []")),
            ["members root, web -> (none)"]
        );
    }

    #[test]
    fn append_only_adds() {
        assert!(diff(&group("www", "append = true\nmembers = [\"web\"]")).is_empty());
        assert_eq!(
            diff(&group("empty", "append = true\nmembers = [\"deploy\"]")),
            ["members += deploy"]
        );
        let acc = Accounts::parse(PASSWD, GROUP);
        let g = group("www", "append = true\nmembers = [\"deploy\"]");
        assert_eq!(
            g.wanted_members(acc.groups.get("www")).unwrap(),
            ["deploy", "root", "web"]
        );
    }

    #[test]
    fn unknown_members_are_named() {
        let acc = Accounts::parse(PASSWD, GROUP);
        let e = group("www", "members = [\"ghost\"]")
            .require_members(&acc)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ghost\""), "{e}");
    }

    #[test]
    fn check_reads_the_target_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        let target = Target::at_root(dir.path());
        let mut cx = Context::new(&target);
        let c = group("ops", "gid = 2000\nmembers = [\"web\"]")
            .plan("create", &mut cx)
            .unwrap()
            .changes;
        assert_eq!(c[0].summary, "create group ops (gid 2000, members web)");
        assert_eq!(
            group("www", "")
                .check(GroupAction::Remove, &mut cx)
                .unwrap()
                .len(),
            1
        );
        assert!(
            group("ops", "")
                .check(GroupAction::Remove, &mut cx)
                .unwrap()
                .is_empty()
        );
    }
}
