//! The dpkg status database of a target, read in one pass per run.

use std::collections::HashMap;

use super::target::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    /// `hold` when `apt-mark hold` (or dpkg --set-selections) holds it.
    pub want: String,
    /// dpkg's state: `installed`, `config-files`, `half-configured`, ...
    pub state: String,
    pub priority: String,
    /// Names in Depends and Pre-Depends, every alternative included.
    pub depends: Vec<String>,
    /// The source package it was built from (its own name when the same).
    pub source: String,
}

impl Installed {
    pub fn is_installed(&self) -> bool {
        self.state == "installed"
    }

    pub fn is_held(&self) -> bool {
        self.want == "hold"
    }
}

#[derive(Debug, Clone, Default)]
pub struct Dpkg {
    pub packages: HashMap<String, Installed>,
}

impl Dpkg {
    pub fn read(target: &Target) -> Self {
        let text = target
            .fs()
            .read_to_string("/var/lib/dpkg/status")
            .unwrap_or_default();
        Dpkg::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let mut packages = HashMap::new();
        for stanza in text.split("\n\n") {
            let (mut name, mut version, mut status, mut priority) = ("", "", "", "");
            let mut source = "";
            let mut depends = Vec::new();
            for line in stanza.lines() {
                if let Some(v) = line
                    .strip_prefix("Depends: ")
                    .or_else(|| line.strip_prefix("Pre-Depends: "))
                {
                    depends.extend(dependency_names(v));
                }
                if let Some(v) = line.strip_prefix("Package: ") {
                    name = v.trim();
                } else if let Some(v) = line.strip_prefix("Version: ") {
                    version = v.trim();
                } else if let Some(v) = line.strip_prefix("Status: ") {
                    status = v.trim();
                } else if let Some(v) = line.strip_prefix("Priority: ") {
                    priority = v.trim();
                } else if let Some(v) = line.strip_prefix("Source: ") {
                    source = v.split_whitespace().next().unwrap_or_default();
                }
            }
            if name.is_empty() {
                continue;
            }
            let mut words = status.split_whitespace();
            let want = words.next().unwrap_or_default().to_string();
            let state = words.nth(1).unwrap_or_default().to_string();
            packages.insert(
                name.to_string(),
                Installed {
                    version: version.to_string(),
                    want,
                    state,
                    priority: priority.to_string(),
                    depends,
                    source: if source.is_empty() { name } else { source }.to_string(),
                },
            );
        }
        Dpkg { packages }
    }

    /// The installed package of that name, if it is fully installed.
    pub fn installed(&self, name: &str) -> Option<&Installed> {
        self.packages.get(name).filter(|p| p.is_installed())
    }
}

/// `libc6 (>= 2.34), foo | bar:any` -> libc6, foo, bar.
fn dependency_names(field: &str) -> impl Iterator<Item = String> + '_ {
    field.split([',', '|']).filter_map(|d| {
        let name = d.split_whitespace().next()?;
        Some(name.split(':').next().unwrap_or(name).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_stanzas() {
        let d = Dpkg::parse(
            "Package: memcached\nStatus: hold ok installed\nPriority: optional\nVersion: 1.6.18-1\nDescription: x\n long\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\nSource: gone-src (0.9)\n",
        );
        assert_eq!(d.packages["memcached"].source, "memcached");
        assert_eq!(d.packages["gone"].source, "gone-src");
        let m = d.installed("memcached").unwrap();
        assert_eq!(m.version, "1.6.18-1");
        assert!(m.is_held());
        assert!(d.installed("gone").is_none());
        assert_eq!(d.packages["gone"].state, "config-files");
        let names: Vec<String> = dependency_names("libc6 (>= 2.34), foo | bar:any").collect();
        assert_eq!(names, ["libc6", "foo", "bar"]);
    }
}
