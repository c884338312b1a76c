//! The dpkg status database of a target, read in one pass per run.

use std::collections::HashMap;

use super::deb822;
use super::target::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    /// `hold` when `apt-mark hold` (or dpkg --set-selections) holds it.
    pub want: String,
    /// dpkg's state: `installed`, `config-files`, `half-configured`, ...
    pub state: String,
    pub priority: String,
    /// Depends and Pre-Depends as written, joined: split only by the
    /// few readers that need the names ([`Installed::depends`]).
    pub relations: String,
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

    /// Names in Depends and Pre-Depends, every alternative included.
    pub fn depends(&self) -> impl Iterator<Item = &str> {
        dependency_names(&self.relations)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Dpkg {
    pub packages: HashMap<String, Installed>,
}

impl Dpkg {
    /// The database as dpkg itself sees it: `status`, then the journal of
    /// changes a dpkg run killed before its checkpoint left in `updates/`,
    /// in order (each record replaces the package's earlier one).
    pub fn read(target: &Target) -> Self {
        let fs = target.fs();
        let mut text = fs
            .read_to_string("/var/lib/dpkg/status")
            .unwrap_or_default();
        for name in journal(fs.read_dir(UPDATES).unwrap_or_default()) {
            if let Ok(record) = fs.read_to_string(format!("{UPDATES}/{name}")) {
                text.push_str("\n\n");
                text.push_str(&record);
            }
        }
        Dpkg::parse(&text)
    }

    /// Every converge that manages a package reads the whole database, so
    /// this is one pass over each stanza's fields, and only the values
    /// kept are joined or copied.
    pub fn parse(text: &str) -> Self {
        let mut packages = HashMap::new();
        for p in deb822::paragraphs(text) {
            let [mut name, mut version, mut status, mut priority, mut source] = [const { None }; 5];
            let mut relations = String::new();
            for f in p.fields() {
                let slot = match f.name() {
                    n if n.eq_ignore_ascii_case("Package") => &mut name,
                    n if n.eq_ignore_ascii_case("Version") => &mut version,
                    n if n.eq_ignore_ascii_case("Status") => &mut status,
                    n if n.eq_ignore_ascii_case("Priority") => &mut priority,
                    n if n.eq_ignore_ascii_case("Source") => &mut source,
                    n if n.eq_ignore_ascii_case("Depends")
                        || n.eq_ignore_ascii_case("Pre-Depends") =>
                    {
                        if !relations.is_empty() {
                            relations.push_str(", ");
                        }
                        relations.push_str(&f.value());
                        continue;
                    }
                    _ => continue,
                };
                // The first of a repeated field counts, as a lookup finds it.
                slot.get_or_insert_with(|| f.value());
            }
            let name = name.unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            let status = status.unwrap_or_default();
            let mut words = status.split_whitespace();
            let want = words.next().unwrap_or_default().to_string();
            let state = words.nth(1).unwrap_or_default().to_string();
            let source = source.unwrap_or_default();
            let source = source.split_whitespace().next().unwrap_or(&name);
            packages.insert(
                name.to_string(),
                Installed {
                    version: version.unwrap_or_default().into_owned(),
                    want,
                    state,
                    priority: priority.unwrap_or_default().into_owned(),
                    relations,
                    source: source.to_string(),
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

/// dpkg's journal of status changes not yet folded into `status`.
const UPDATES: &str = "/var/lib/dpkg/updates";

/// The journal's records in the order dpkg applies them: files named by
/// a sequence number only (`0000`, `0001`; not dpkg's `tmp.i`).
fn journal(names: Vec<std::ffi::OsString>) -> Vec<String> {
    let mut numbered: Vec<(u64, String)> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter_map(|n| {
            Some((
                n.parse()
                    .ok()
                    .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))?,
                n,
            ))
        })
        .collect();
    numbered.sort();
    numbered.into_iter().map(|(_, n)| n).collect()
}

/// `libc6 (>= 2.34), foo | bar:any` -> libc6, foo, bar.
fn dependency_names(field: &str) -> impl Iterator<Item = &str> {
    field.split([',', '|']).filter_map(|d| {
        let name = d.split_whitespace().next()?;
        Some(name.split(':').next().unwrap_or(name))
    })
}

/// When dpkg last installed each package (not upgraded: a base image's
/// package that a security update moved was still there first), in seconds
/// since the epoch, from `/var/log/dpkg.log` and its first rotation (the
/// compressed older ones are not read). dpkg logs local time; the host's
/// own time zone (this process's) reads it back.
pub fn install_times(target: &Target) -> HashMap<String, i64> {
    let mut times = HashMap::new();
    // Oldest first, so that a later install (after a removal) wins.
    for log in ["/var/log/dpkg.log.1", "/var/log/dpkg.log"] {
        let text = target.fs().read_to_string(log).unwrap_or_default();
        for (name, t) in text.lines().filter_map(install_line) {
            times.insert(name, t);
        }
    }
    times
}

/// `2024-05-01 10:00:00 install openssh-server:amd64 <none> 1:9.2p1-2`:
/// the package and when.
fn install_line(line: &str) -> Option<(String, i64)> {
    let mut w = line.split_whitespace();
    let (date, time, what, pkg) = (w.next()?, w.next()?, w.next()?, w.next()?);
    if what != "install" {
        return None;
    }
    let name = pkg.split_once(':').map_or(pkg, |(n, _)| n);
    let num =
        |s: &str, sep: char| -> Option<Vec<i32>> { s.split(sep).map(|x| x.parse().ok()).collect() };
    let (d, t) = (num(date, '-')?, num(time, ':')?);
    let [y, mo, da] = d[..] else { return None };
    let [h, mi, se] = t[..] else { return None };
    // SAFETY: `tm` is a plain C struct, fully initialised here (zeroed,
    // then every field mktime reads), and mktime only reads and
    // normalises it.
    let t = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = da;
        tm.tm_hour = h;
        tm.tm_min = mi;
        tm.tm_sec = se;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    (t != -1).then(|| (name.to_string(), t))
}

/// When dpkg last unpacked each of `names` (its file list's mtime): the
/// fallback for a package whose install left the logs. An upgrade rewrites
/// the list too, so this errs towards "later", which an audit may.
pub fn unpack_times(target: &Target, names: &[&str]) -> HashMap<String, i64> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = "/var/lib/dpkg/info";
    let fs = target.fs();
    let mut out = HashMap::new();
    for f in fs.read_dir(dir).unwrap_or_default() {
        let Some(f) = f.to_str() else { continue };
        let Some(stem) = f.strip_suffix(".list") else {
            continue;
        };
        let name = stem.split_once(':').map_or(stem, |(n, _)| n);
        if names.contains(&name)
            && let Ok(m) = fs.metadata(format!("{dir}/{f}"))
        {
            out.insert(name.to_string(), m.mtime());
        }
    }
    out
}

/// Debian version order; a version that does not parse sorts lowest.
pub fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (
        a.parse::<debversion::Version>(),
        b.parse::<debversion::Version>(),
    ) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
        (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_read_in_dpkg_s_order_and_its_records_win() {
        let names = ["0010", "tmp.i", "0002", "x1", "0001"].map(std::ffi::OsString::from);
        assert_eq!(journal(names.to_vec()), ["0001", "0002", "0010"]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("var/lib/dpkg");
        std::fs::create_dir_all(d.join("updates")).unwrap();
        let record = |v: &str, status: &str| {
            format!("Package: hello\nStatus: {status}\nVersion: {v}\nArchitecture: all\n")
        };
        std::fs::write(d.join("status"), record("1.0-1", "hold ok installed")).unwrap();
        std::fs::write(
            d.join("updates/0000"),
            record("2.0-1", "install ok unpacked"),
        )
        .unwrap();
        std::fs::write(
            d.join("updates/0001"),
            record("2.0-1", "install ok installed"),
        )
        .unwrap();
        std::fs::write(
            d.join("updates/tmp.i"),
            record("3.0-1", "install ok half-installed"),
        )
        .unwrap();
        let db = Dpkg::read(&Target::at_root(dir.path()));
        let hello = db.installed("hello").unwrap();
        assert_eq!((hello.version.as_str(), hello.is_held()), ("2.0-1", false));
    }

    #[test]
    fn install_lines_are_installs_only() {
        let (name, t) =
            install_line("2024-05-01 10:00:00 install openssh-server:amd64 <none> 1:9.2p1-2")
                .unwrap();
        assert_eq!(name, "openssh-server");
        let (_, later) =
            install_line("2024-05-01 10:00:07 install openssh-server:amd64 <none> 1:9.2p1-2")
                .unwrap();
        assert_eq!(later - t, 7);
        assert!(install_line("2024-05-01 10:00:00 upgrade openssh-server:amd64 1 2").is_none());
        assert!(install_line("2024-05-01 10:00:00 status installed x:amd64 1").is_none());
        assert!(install_line("garbage").is_none());
    }

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
        let names: Vec<&str> = dependency_names("libc6 (>= 2.34), foo | bar:any").collect();
        assert_eq!(names, ["libc6", "foo", "bar"]);
    }

    #[test]
    fn depends_and_pre_depends_are_both_read_whatever_their_case() {
        let d = Dpkg::parse(
            "Package: a\nStatus: install ok installed\nVersion: 1\n\
             pre-depends: libc6 (>= 2.34)\nDepends: foo | bar:any,\n baz\nVersion: 2\n",
        );
        let a = d.installed("a").unwrap();
        assert_eq!(
            a.depends().collect::<Vec<_>>(),
            ["libc6", "foo", "bar", "baz"]
        );
        assert_eq!(a.version, "1");
        assert_eq!(a.source, "a");
        assert!(
            Dpkg::parse("Package: b\n").packages["b"]
                .depends()
                .next()
                .is_none()
        );
    }
}
