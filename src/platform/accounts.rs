//! /etc/passwd and /etc/group of a target, read once per run.

use std::collections::BTreeMap;

use super::target::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Accounts {
    pub users: BTreeMap<String, Passwd>,
    pub groups: BTreeMap<String, Group>,
}

impl Accounts {
    pub fn read(target: &Target) -> Self {
        let passwd = target
            .fs()
            .read_to_string("/etc/passwd")
            .unwrap_or_default();
        let group = target.fs().read_to_string("/etc/group").unwrap_or_default();
        Accounts::parse(&passwd, &group)
    }

    pub fn parse(passwd: &str, group: &str) -> Self {
        let mut a = Accounts::default();
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                continue;
            }
            let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) else {
                continue;
            };
            a.users.insert(
                f[0].to_string(),
                Passwd {
                    name: f[0].to_string(),
                    uid,
                    gid,
                    home: f[5].to_string(),
                    shell: f[6].to_string(),
                },
            );
        }
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                continue;
            }
            let Ok(gid) = f[2].parse() else { continue };
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            a.groups.insert(
                f[0].to_string(),
                Group {
                    name: f[0].to_string(),
                    gid,
                    members,
                },
            );
        }
        a
    }

    /// A user given by name or numeric id.
    pub fn uid(&self, user: &str) -> Option<u32> {
        match user.parse() {
            Ok(n) => Some(n),
            Err(_) => self.users.get(user).map(|u| u.uid),
        }
    }

    /// A group given by name or numeric id.
    pub fn gid(&self, group: &str) -> Option<u32> {
        match group.parse() {
            Ok(n) => Some(n),
            Err(_) => self.groups.get(group).map(|g| g.gid),
        }
    }

    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.groups
            .values()
            .find(|g| g.gid == gid)
            .map(|g| g.name.as_str())
    }

    /// The supplementary groups a user belongs to.
    pub fn groups_of(&self, user: &str) -> Vec<String> {
        self.groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let a = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\nweb:x:1001:1002::/srv:/bin/sh\n",
            "root:x:0:\nadm:x:4:web,root\nwebg:x:1002:\n",
        );
        assert_eq!(a.uid("web"), Some(1001));
        assert_eq!(a.uid("77"), Some(77));
        assert_eq!(a.gid("adm"), Some(4));
        assert_eq!(a.group_name(1002), Some("webg"));
        assert_eq!(a.groups_of("web"), vec!["adm".to_string()]);
        assert_eq!(a.uid("nobody"), None);
    }
}
