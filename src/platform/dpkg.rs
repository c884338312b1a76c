//! The dpkg status database of a target, read once per run; a package's
//! record is taken apart when first asked for.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::deb822;
use super::target::Target;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// dpkg's database as read: each package's stanza is found when the file
/// is read and taken apart when first asked for. A no-op converge asks for
/// the few packages its policy names, on a host that has hundreds.
#[derive(Debug, Clone, Default)]
pub struct Dpkg {
    text: std::sync::Arc<String>,
    /// By name; of a name given twice, the last (a journal record).
    stanzas: Vec<Stanza>,
}

#[derive(Debug, Clone)]
struct Stanza {
    name: Box<str>,
    span: std::ops::Range<usize>,
    parsed: OnceLock<Box<Installed>>,
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
        Dpkg::index(text)
    }

    pub fn parse(text: &str) -> Self {
        Dpkg::index(text.to_string())
    }

    /// Each stanza's place and name: only the Package line is read.
    fn index(text: String) -> Self {
        let mut stanzas: Vec<Stanza> = deb822::spans(&text)
            .filter_map(|span| {
                let name = deb822::find(&text[span.clone()], "Package")?;
                (!name.is_empty()).then(|| Stanza {
                    name: name.into(),
                    span,
                    parsed: OnceLock::new(),
                })
            })
            .collect();
        // dpkg writes its status sorted: this is one pass unless a
        // journal record came after. Stable, so the last of a name stays
        // last, and it is the one kept.
        stanzas.sort_by(|a, b| a.name.cmp(&b.name));
        stanzas.dedup_by(|later, earlier| {
            let same = later.name == earlier.name;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Dpkg {
            text: std::sync::Arc::new(text),
            stanzas,
        }
    }

    /// The package of that name in any state dpkg records.
    pub fn get(&self, name: &str) -> Option<&Installed> {
        let i = (self.stanzas)
            .binary_search_by(|s| (*s.name).cmp(name))
            .ok()?;
        Some(self.parsed(&self.stanzas[i]))
    }

    /// The installed package of that name, if it is fully installed.
    pub fn installed(&self, name: &str) -> Option<&Installed> {
        self.get(name).filter(|p| p.is_installed())
    }

    /// Every package dpkg records, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Installed)> {
        (self.stanzas.iter()).map(|s| (&*s.name, self.parsed(s)))
    }

    fn parsed<'a>(&'a self, s: &'a Stanza) -> &'a Installed {
        s.parsed.get_or_init(|| {
            let text = &self.text[s.span.clone()];
            Box::new(
                deb822::paragraphs(text)
                    .next()
                    .map_or_else(Installed::default, |p| Installed::of(&s.name, &p)),
            )
        })
    }
}

impl Installed {
    /// One stanza's fields, read in one pass; only the values kept are
    /// joined or copied.
    fn of(name: &str, p: &deb822::Paragraph) -> Installed {
        let [mut version, mut status, mut priority, mut source] = [const { None }; 4];
        let mut relations = String::new();
        for f in p.fields() {
            let slot = match f.name() {
                n if n.eq_ignore_ascii_case("Version") => &mut version,
                n if n.eq_ignore_ascii_case("Status") => &mut status,
                n if n.eq_ignore_ascii_case("Priority") => &mut priority,
                n if n.eq_ignore_ascii_case("Source") => &mut source,
                n if n.eq_ignore_ascii_case("Depends") || n.eq_ignore_ascii_case("Pre-Depends") => {
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
        let status = status.unwrap_or_default();
        let mut words = status.split_whitespace();
        let want = words.next().unwrap_or_default().to_string();
        let state = words.nth(1).unwrap_or_default().to_string();
        let source = source.unwrap_or_default();
        let source = source.split_whitespace().next().unwrap_or(name);
        Installed {
            version: version.unwrap_or_default().into_owned(),
            want,
            state,
            priority: priority.unwrap_or_default().into_owned(),
            relations,
            source: source.to_string(),
        }
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
        assert_eq!(d.get("memcached").unwrap().source, "memcached");
        assert_eq!(d.get("gone").unwrap().source, "gone-src");
        let m = d.installed("memcached").unwrap();
        assert_eq!(m.version, "1.6.18-1");
        assert!(m.is_held());
        assert!(d.installed("gone").is_none());
        assert_eq!(d.get("gone").unwrap().state, "config-files");
        let names: Vec<&str> = dependency_names("libc6 (>= 2.34), foo | bar:any").collect();
        assert_eq!(names, ["libc6", "foo", "bar"]);
    }

    #[test]
    fn stanzas_in_any_order_are_found_and_the_last_of_a_name_wins() {
        let d = Dpkg::parse(
            "Package: b\nVersion: 1\n\nPackage: a\nVersion: 2\nStatus: install ok installed\n\n\
             package: c\nVersion: 4\n\nPackage: b\nVersion: 3\n\nVersion: 5\n",
        );
        let found: Vec<(&str, &str)> = d.iter().map(|(n, i)| (n, i.version.as_str())).collect();
        assert_eq!(found, [("a", "2"), ("b", "3"), ("c", "4")]);
        assert_eq!(d.installed("a").unwrap().version, "2");
        assert!(d.installed("b").is_none());
        assert!(d.get("d").is_none());
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
            Dpkg::parse("Package: b\n")
                .get("b")
                .unwrap()
                .depends()
                .next()
                .is_none()
        );
    }
}
