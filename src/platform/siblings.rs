//! Siblings follow the pin. Debian builds several binary packages from one
//! source package and ties them with versioned dependencies, exact
//! (`php8.2-common (= 8.2.32-1~deb12u1)`) or a range that admits binNMUs
//! (`nginx-common (>= V), nginx-common (<< V.1~)`), so pinning one of them
//! to a version that is not the archive's candidate breaks unless its
//! siblings move with it. kiln names each sibling at the version built from
//! the pin's own source upload in the same apt transaction; then it is held
//! like the pin.
//!
//! The siblings come from the target's package index (`apt-cache show`, the
//! Source, Depends and Pre-Depends fields), not from a simulated `apt-get
//! install`: the simulation fails for exactly the reason siblings exist
//! (`X-cli : Depends: X-common (= OLD) but NEW is to be installed`), so on a
//! host where the pinned package is not installed yet it names nothing.
//!
//! Explicit `name=version` pairs, rather than apt preferences on `src:NAME`,
//! because binNMUs and binaries versioned apart from their source (a
//! library's own version) do not carry the source's version, and because
//! every sibling then shows in the plan and in the report by name.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::dpkg::{Dpkg, compare};
use super::target::{Target, capture, output_tail};
use crate::error::{Error, RunError};

/// Why the siblings of a set of pins cannot be named. Each says what to
/// change: a pin, the sources, or the target's index.
#[derive(Debug, thiserror::Error)]
pub enum SiblingError {
    #[error("cannot read the dependency {text:?}: {problem}")]
    Relation { text: String, problem: &'static str },
    /// A record of the index whose dependencies do not parse.
    #[error("{package} {version}: {source}")]
    Record {
        package: String,
        version: String,
        #[source]
        source: Box<SiblingError>,
    },
    #[error("cannot run apt-cache show: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "apt-cache show cannot read the package index: {tail}. \
         Fix: repair the target's apt index (apt-get update) and run again"
    )]
    Index { tail: String },
    #[error(
        "{pin} and {other} are built from {source_name} at different versions \
         ({source_version} and {other_version}); apt cannot install them together. \
         Fix: pin both at versions of the same {source_name} upload"
    )]
    TwoUploads {
        /// `name version` of the pin.
        pin: String,
        other: String,
        source_name: String,
        source_version: String,
        other_version: String,
    },
    #[error(
        "{name} is built from {source_name} like {follows}, but no source offers a \
         {name} built from {source_name} {source_version} (offered: {offered}). \
         Fix: pin {follows} at a version whose siblings are all available, \
         or add a fallback source that carries them"
    )]
    NotOffered {
        name: String,
        source_name: String,
        follows: String,
        source_version: String,
        offered: String,
    },
    #[error(
        "the dependencies of {pins} that are not installed yet go beyond {limit}; kiln \
         stops looking for their siblings there rather than guess. Fix: install part \
         of those dependencies in an earlier run, or pin the siblings in the \
         whitelist too"
    )]
    TooFar { pins: String, limit: String },
}

impl From<SiblingError> for RunError {
    fn from(e: SiblingError) -> Self {
        RunError::platform(e)
    }
}

impl From<SiblingError> for Error {
    fn from(e: SiblingError) -> Self {
        Error::Run(e.into())
    }
}

/// A binary package that moves with a pin because it shares its source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sibling {
    pub name: String,
    /// The version built from the same source version as the pin.
    pub version: String,
    /// The pinned package it follows.
    pub follows: String,
    /// Installed now, if it is (else apt would pull it in).
    pub installed: Option<String>,
}

/// One version of a binary package as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    package: String,
    version: String,
    source: String,
    source_version: String,
    /// Depends and Pre-Depends: every group must hold, one alternative of
    /// each is enough.
    depends: Vec<Vec<Relation>>,
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Relation {
    name: String,
    /// `any`, `native` or an architecture. Read apart from the name so that
    /// `python3:any` looks up `python3`; the host's own index answers for
    /// the name alone.
    arch: Option<String>,
    constraint: Option<(Op, String)>,
}

/// Every operator counts: siblings are tied by `=` or by a `>=`/`<<` range
/// (binNMUs), and another source's version is chosen by what its
/// dependents allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Earlier,
    EarlierOrEqual,
    Equal,
    LaterOrEqual,
    Later,
}

impl Relation {
    /// Whether `version` of this package meets the relation.
    fn allows(&self, version: &str) -> bool {
        let Some((op, wanted)) = &self.constraint else {
            return true;
        };
        let order = compare(version, wanted);
        match op {
            Op::Earlier => order == Ordering::Less,
            Op::EarlierOrEqual => order != Ordering::Greater,
            Op::Equal => order == Ordering::Equal,
            Op::LaterOrEqual => order != Ordering::Less,
            Op::Later => order == Ordering::Greater,
        }
    }
}

/// A Depends-style field: groups separated by commas, alternatives by `|`.
fn parse_relations(field: &str) -> Result<Vec<Vec<Relation>>, SiblingError> {
    field
        .split(',')
        .map(str::trim)
        .filter(|group| !group.is_empty())
        .map(|group| group.split('|').map(parse_relation).collect())
        .collect()
}

fn parse_relation(text: &str) -> Result<Relation, SiblingError> {
    let bad = |problem: &'static str| SiblingError::Relation {
        text: text.trim().to_string(),
        problem,
    };
    let text = text.trim();
    let name_end = text
        .find(|c: char| c.is_whitespace() || c == '(' || c == ':' || c == '[' || c == '<')
        .unwrap_or(text.len());
    let (name, mut rest) = text.split_at(name_end);
    if name.is_empty() {
        return Err(bad("no package name"));
    }
    let mut arch = None;
    if let Some(after) = rest.strip_prefix(':') {
        let end = after
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(after.len());
        if end == 0 {
            return Err(bad("an empty architecture after ':'"));
        }
        arch = Some(after[..end].to_string());
        rest = &after[end..];
    }
    let rest = rest.trim_start();
    let mut constraint = None;
    if let Some(inner) = rest.strip_prefix('(') {
        let Some((inner, _)) = inner.split_once(')') else {
            return Err(bad("no closing ')'"));
        };
        let inner = inner.trim();
        // Longest operators first; `<` and `>` are dpkg's old spellings of
        // `<=` and `>=`.
        let (op, version) = [
            ("<<", Op::Earlier),
            ("<=", Op::EarlierOrEqual),
            (">>", Op::Later),
            (">=", Op::LaterOrEqual),
            ("=", Op::Equal),
            ("<", Op::EarlierOrEqual),
            (">", Op::LaterOrEqual),
        ]
        .into_iter()
        .find_map(|(spelled, op)| inner.strip_prefix(spelled).map(|v| (op, v.trim())))
        .ok_or_else(|| bad("no relation operator (<<, <=, =, >=, >>)"))?;
        if version.is_empty() || version.contains(char::is_whitespace) {
            return Err(bad("no single version after the operator"));
        }
        constraint = Some((op, version.to_string()));
    } else if !rest.is_empty() && !rest.starts_with('[') && !rest.starts_with('<') {
        // Architecture lists and build profiles only appear in source
        // packages' build dependencies; anything else is not a relation.
        return Err(bad("unexpected text after the package name"));
    }
    Ok(Relation {
        name: name.to_string(),
        arch,
        constraint,
    })
}

/// Where the walk reads the index: `apt-cache show` on a target, or fixed
/// records in the unit tests.
trait Index {
    /// Every version of each of `names` the index knows; a purely virtual
    /// or unknown name has none.
    fn show(&mut self, names: &[String]) -> Result<Vec<Record>, SiblingError>;
}

/// The target's index through `apt-cache show`, each name asked once while
/// the index stays as it was (see [`Shown`]).
struct AptCache<'a> {
    target: &'a Target,
    shown: Shown,
}

impl<'a> AptCache<'a> {
    /// Takes over what earlier walks of this process read, if the target's
    /// index is still the one they read.
    fn open(target: &'a Target) -> Self {
        let stamp = Stamp::of(target);
        let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        let shown = match memo.take() {
            Some(m) if m.stamp == stamp => m,
            _ => Shown {
                stamp,
                names: BTreeMap::new(),
            },
        };
        AptCache { target, shown }
    }
}

impl Drop for AptCache<'_> {
    fn drop(&mut self) {
        let shown = std::mem::replace(
            &mut self.shown,
            Shown {
                stamp: Stamp::default(),
                names: BTreeMap::new(),
            },
        );
        *MEMO.lock().unwrap_or_else(|e| e.into_inner()) = Some(shown);
    }
}

impl Index for AptCache<'_> {
    fn show(&mut self, names: &[String]) -> Result<Vec<Record>, SiblingError> {
        let new: Vec<String> = names
            .iter()
            .filter(|n| !self.shown.names.contains_key(*n))
            .cloned()
            .collect();
        let mut fresh = Vec::new();
        if !new.is_empty() {
            fresh = apt_cache_show(self.target, &new)?;
            for name in &new {
                let records = fresh.iter().filter(|r| &r.package == name).cloned();
                self.shown.names.insert(name.clone(), records.collect());
            }
        }
        // Records of a name not asked for stay with this answer only: the
        // memo keeps complete answers.
        let old = names
            .iter()
            .filter(|n| !new.contains(n))
            .filter_map(|n| self.shown.names.get(n))
            .flatten()
            .cloned();
        Ok(fresh.into_iter().chain(old).collect())
    }
}

fn apt_cache_show(target: &Target, names: &[String]) -> Result<Vec<Record>, SiblingError> {
    let mut argv = vec!["apt-cache", "show"];
    argv.extend(names.iter().map(String::as_str));
    let out = capture(target.command(&argv)).map_err(SiblingError::Spawn)?;
    // A name the index does not know (a virtual package) makes
    // apt-cache fail, but it still prints the others; only a failure
    // that is not about names means the index itself is unreadable.
    let records = parse_records(&String::from_utf8_lossy(&out.stdout))?;
    let broken = String::from_utf8_lossy(&out.stderr)
        .lines()
        .any(|l| l.starts_with("E: ") && !l.contains("No packages found"));
    if !out.status.success() && records.is_empty() && broken {
        return Err(SiblingError::Index {
            tail: output_tail(&out),
        });
    }
    Ok(records)
}

/// What `apt-cache show` answered for each name asked, on the index of
/// `stamp`. A run walks the same dependencies for every pin, in the plan
/// and again in the transaction: kept, a name costs one process a run,
/// not one a walk.
struct Shown {
    stamp: Stamp,
    names: BTreeMap<String, Vec<Record>>,
}

static MEMO: std::sync::Mutex<Option<Shown>> = std::sync::Mutex::new(None);

/// Which index `apt-cache show` reads: the target, and the size and
/// modification time of every file it reads records from (the lists, the
/// sources that make them count, and dpkg's status, which adds the
/// installed versions). An update, a new source or a transaction changes it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stamp {
    root: std::path::PathBuf,
    files: Vec<(String, u64, Option<std::time::SystemTime>)>,
}

impl Stamp {
    fn of(target: &Target) -> Stamp {
        let fs = target.fs();
        let mut paths = vec![
            "/etc/apt/sources.list".to_string(),
            "/var/lib/dpkg/status".to_string(),
        ];
        for dir in ["/var/lib/apt/lists", "/etc/apt/sources.list.d"] {
            let mut names = fs.read_dir(dir).unwrap_or_default();
            names.sort();
            paths.extend(
                names
                    .iter()
                    .map(|n| format!("{dir}/{}", n.to_string_lossy())),
            );
        }
        let files = paths
            .into_iter()
            .filter_map(|p| {
                let m = fs.metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()))
            })
            .collect();
        Stamp {
            root: target.root().to_path_buf(),
            files,
        }
    }
}

/// How many `apt-cache show` processes one resolve may start: one a level
/// of the dependency graph below the pins, and real graphs are a dozen
/// levels deep over what a host has installed.
const MAX_ROUNDS: usize = 32;
/// How many packages the transaction may install, the pins' whole closure
/// of not yet installed dependencies; a full desktop is about 2000.
const MAX_PACKAGES: usize = 5000;

/// The siblings of `pins` that the transaction would install or that are
/// installed, each at the version that matches its pin, including those
/// already at it (they are held with the pin). Pins the index does not know
/// are skipped: the caller reports those as vanished pins.
pub fn resolve(
    target: &Target,
    pins: &[(String, String)],
    dpkg: &Dpkg,
) -> Result<Vec<Sibling>, SiblingError> {
    if pins.is_empty() {
        return Ok(Vec::new());
    }
    walk(&mut AptCache::open(target), pins, dpkg)
}

/// Whether the target's index lists every `name=version` of `pins`, read
/// with the walks' own answers; `None` when the index cannot be read so.
pub fn index_lists(target: &Target, pins: &[(String, String)]) -> Option<bool> {
    let names: BTreeSet<String> = pins.iter().map(|(n, _)| n.clone()).collect();
    let names: Vec<String> = names.into_iter().collect();
    let records = AptCache::open(target).show(&names).ok()?;
    Some(
        pins.iter()
            .all(|(n, v)| records.iter().any(|r| &r.package == n && &r.version == v)),
    )
}

/// `pins` and their siblings, for callers outside a converge (prefetching
/// for `kiln test`, mirrors), against the target's dpkg database.
pub fn with_pins(
    target: &Target,
    pins: &[(String, String)],
) -> Result<Vec<(String, String)>, SiblingError> {
    let mut all = pins.to_vec();
    for s in resolve(target, pins, &Dpkg::read(target))? {
        all.push((s.name, s.version));
    }
    Ok(all)
}

/// What the walk still has to settle.
enum Todo {
    /// An installed package of a pinned source: it moves to the upload.
    Installed(String),
    /// A dependency group of a package the transaction installs.
    Group(Vec<Relation>),
}

/// The walk over the index, as apt's transaction would go: from each pin
/// at its version through Depends and Pre-Depends to every package not yet
/// installed (of any source: another source's package that apt pulls in
/// may depend on a sibling), plus every installed package of a pinned
/// source. A package of a pinned source is put at the version built from
/// the pin's upload; another at the newest version its dependency allows,
/// as apt's candidate would be. One `apt-cache show` a round, for every
/// name that round needs.
fn walk(
    index: &mut dyn Index,
    pins: &[(String, String)],
    dpkg: &Dpkg,
) -> Result<Vec<Sibling>, SiblingError> {
    let mut known: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    let mut rounds = 0;
    let mut look_up = |names: BTreeSet<String>,
                       known: &mut BTreeMap<String, Vec<Record>>|
     -> Result<(), SiblingError> {
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| !known.contains_key(n))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(too_far(pins, &format!("{MAX_ROUNDS} levels deep")));
        }
        for name in &names {
            known.insert(name.clone(), Vec::new());
        }
        for r in index.show(&names)? {
            let list = known.entry(r.package.clone()).or_default();
            if !list.iter().any(|o| o.version == r.version) {
                list.push(r);
            }
        }
        Ok(())
    };

    look_up(pins.iter().map(|(n, _)| n.clone()).collect(), &mut known)?;
    // source name -> (source version, the pin that decides it)
    let mut sources: BTreeMap<String, (String, String)> = BTreeMap::new();
    // What the transaction installs, at which version.
    let mut planned: BTreeMap<String, Record> = BTreeMap::new();
    let mut todo: Vec<Todo> = Vec::new();
    for (name, version) in pins {
        let Some(r) = versions(&known, name)
            .iter()
            .find(|r| &r.version == version)
        else {
            continue;
        };
        if let Some((other_version, other)) = sources.get(&r.source)
            && other_version != &r.source_version
        {
            return Err(SiblingError::TwoUploads {
                pin: format!("{name} {version}"),
                other: other.clone(),
                source_name: r.source.clone(),
                source_version: r.source_version.clone(),
                other_version: other_version.clone(),
            });
        }
        sources.insert(r.source.clone(), (r.source_version.clone(), name.clone()));
        todo.extend(r.depends.iter().cloned().map(Todo::Group));
        planned.insert(name.clone(), r.clone());
    }
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    // By name, as the database keeps them.
    let installed: Vec<String> = dpkg
        .iter()
        .filter(|(name, p)| {
            p.is_installed() && sources.contains_key(&p.source) && !planned.contains_key(*name)
        })
        .map(|(name, _)| name.to_string())
        .collect();
    todo.splice(0..0, installed.into_iter().map(Todo::Installed));

    while !todo.is_empty() {
        let mut wanted = BTreeSet::new();
        for item in &todo {
            match item {
                Todo::Installed(name) => {
                    wanted.insert(name.clone());
                }
                Todo::Group(group) => {
                    if !satisfied(group, &planned, dpkg, &sources) {
                        wanted.extend(group.iter().map(|r| r.name.clone()));
                    }
                }
            }
        }
        look_up(wanted, &mut known)?;
        let mut next = Vec::new();
        for item in std::mem::take(&mut todo) {
            let chosen = match item {
                Todo::Installed(name) => {
                    let sibling = upload_of(&name, versions(&known, &name), &sources)?;
                    // An installed package no longer in the index stays as it is.
                    sibling.map(|r| (name, r))
                }
                Todo::Group(group) => {
                    if satisfied(&group, &planned, dpkg, &sources) {
                        continue;
                    }
                    choose(&group, &known, &sources)?
                }
            };
            let Some((name, record)) = chosen else {
                continue;
            };
            if planned.contains_key(&name) {
                continue;
            }
            next.extend(record.depends.iter().cloned().map(Todo::Group));
            planned.insert(name, record);
            if planned.len() > MAX_PACKAGES {
                return Err(too_far(pins, &format!("{MAX_PACKAGES} packages")));
            }
        }
        todo = next;
    }

    let pinned: BTreeSet<&str> = pins.iter().map(|(n, _)| n.as_str()).collect();
    Ok(planned
        .into_values()
        .filter(|r| !pinned.contains(r.package.as_str()))
        .filter_map(|r| {
            let (_, follows) = sources.get(&r.source)?;
            Some(Sibling {
                installed: dpkg.installed(&r.package).map(|i| i.version.clone()),
                follows: follows.clone(),
                name: r.package,
                version: r.version,
            })
        })
        .collect())
}

fn versions<'a>(known: &'a BTreeMap<String, Vec<Record>>, name: &str) -> &'a [Record] {
    known.get(name).map_or(&[], Vec::as_slice)
}

/// Whether the transaction needs nothing more for `group`: one of its
/// alternatives is planned at a version it allows, or installed at one and
/// not about to move (installed packages of a pinned source are planned).
fn satisfied(
    group: &[Relation],
    planned: &BTreeMap<String, Record>,
    dpkg: &Dpkg,
    sources: &BTreeMap<String, (String, String)>,
) -> bool {
    group.iter().any(|rel| match planned.get(&rel.name) {
        Some(r) => rel.allows(&r.version),
        None => dpkg
            .installed(&rel.name)
            .is_some_and(|i| !sources.contains_key(&i.source) && rel.allows(&i.version)),
    })
}

/// The alternative apt would install for an unmet group, at its version:
/// the first the index has a version of that fits (a sibling at its
/// upload's version whatever the relation says, since apt has no other
/// choice for it). None when only virtual packages remain: apt picks a
/// provider, and kiln follows no further.
fn choose(
    group: &[Relation],
    known: &BTreeMap<String, Vec<Record>>,
    sources: &BTreeMap<String, (String, String)>,
) -> Result<Option<(String, Record)>, SiblingError> {
    for rel in group {
        let versions = versions(known, &rel.name);
        if let Some(r) = upload_of(&rel.name, versions, sources)? {
            return Ok(Some((rel.name.clone(), r)));
        }
        let newest = versions
            .iter()
            .filter(|r| rel.allows(&r.version))
            .max_by(|a, b| compare(&a.version, &b.version));
        if let Some(r) = newest {
            return Ok(Some((rel.name.clone(), r.clone())));
        }
    }
    Ok(None)
}

/// `name`'s version built from a pinned source's upload, if some version
/// of `name` comes from a pinned source; an error if that upload's is not
/// among them.
fn upload_of(
    name: &str,
    versions: &[Record],
    sources: &BTreeMap<String, (String, String)>,
) -> Result<Option<Record>, SiblingError> {
    let Some((source, (source_version, follows))) = versions
        .iter()
        .find_map(|r| sources.get_key_value(&r.source))
    else {
        return Ok(None);
    };
    match versions
        .iter()
        .find(|r| &r.source == source && &r.source_version == source_version)
    {
        Some(r) => Ok(Some(r.clone())),
        None => {
            let offered: Vec<&str> = versions.iter().map(|r| r.version.as_str()).collect();
            Err(SiblingError::NotOffered {
                name: name.to_string(),
                source_name: source.clone(),
                follows: follows.clone(),
                source_version: source_version.clone(),
                offered: offered.join(", "),
            })
        }
    }
}

fn too_far(pins: &[(String, String)], limit: &str) -> SiblingError {
    let pins: Vec<String> = pins.iter().map(|(n, v)| format!("{n}={v}")).collect();
    SiblingError::TooFar {
        pins: pins.join(" "),
        limit: limit.to_string(),
    }
}

/// The records of `apt-cache show`; the Source field gives the upload
/// (`mariadb (1:10.11.18-0+deb12u1)`, or the package's own name and
/// version when absent or unversioned).
fn parse_records(text: &str) -> Result<Vec<Record>, SiblingError> {
    let mut records = Vec::new();
    for p in super::deb822::paragraphs(text) {
        let (Some(package), Some(version)) = (p.get("Package"), p.get("Version")) else {
            continue;
        };
        let (package, version) = (package.as_ref(), version.as_ref());
        let source_field = p.get("Source");
        let (source, source_version) = match source_field.as_deref() {
            None => (package, version),
            Some(s) => match s.split_once(' ') {
                Some((name, v)) => (name, v.trim().trim_start_matches('(').trim_end_matches(')')),
                None => (s, version),
            },
        };
        let mut depends = Vec::new();
        for key in ["Pre-Depends", "Depends"] {
            if let Some(f) = p.get(key) {
                depends.extend(parse_relations(&f).map_err(|e| SiblingError::Record {
                    package: package.to_string(),
                    version: version.to_string(),
                    source: Box::new(e),
                })?);
            }
        }
        records.push(Record {
            package: package.to_string(),
            version: version.to_string(),
            source: source.to_string(),
            source_version: source_version.to_string(),
            depends,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_source_version_and_dependencies() {
        let text = "Package: php8.2-common\nVersion: 8.2.32-1~deb12u1\nSource: php8.2\n\n\
                    Package: libmariadb3\nVersion: 1:10.11.18-0+deb12u1\nSource: mariadb (1:10.11.18-0+deb12u1)\n\n\
                    Package: memcached\nVersion: 1.6.18-1+b1\nSource: memcached (1.6.18-1)\n\
                    Pre-Depends: init-system-helpers (>= 1.54~)\n\
                    Depends: libc6 (>= 2.34), adduser | passwd\n\
                    Description: a cache\n Depends: not a field\n";
        let r = parse_records(text).unwrap();
        assert_eq!(
            (r[0].source.as_str(), r[0].source_version.as_str()),
            ("php8.2", "8.2.32-1~deb12u1")
        );
        assert_eq!(r[1].source, "mariadb");
        assert_eq!(
            (r[2].source.as_str(), r[2].source_version.as_str()),
            ("memcached", "1.6.18-1")
        );
        let names: Vec<Vec<&str>> = r[2]
            .depends
            .iter()
            .map(|g| g.iter().map(|rel| rel.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            [
                vec!["init-system-helpers"],
                vec!["libc6"],
                vec!["adduser", "passwd"]
            ]
        );
    }

    fn rel(name: &str, arch: Option<&str>, op: Option<(Op, &str)>) -> Relation {
        Relation {
            name: name.into(),
            arch: arch.map(Into::into),
            constraint: op.map(|(o, v)| (o, v.into())),
        }
    }

    #[test]
    fn relations_have_every_operator_qualifier_and_alternative() {
        let groups = parse_relations(
            "libc6 (>= 2.34), python3:any, foo:amd64 (=1:2.0-1) | bar (<< 1.2-3.1~),\
             baz (<= 2), qux (>>2~rc1), old (< 1) | older (> 2),\n nginx-abi-1.22.1-7",
        )
        .unwrap();
        use Op::*;
        assert_eq!(
            groups,
            [
                vec![rel("libc6", None, Some((LaterOrEqual, "2.34")))],
                vec![rel("python3", Some("any"), None)],
                vec![
                    rel("foo", Some("amd64"), Some((Equal, "1:2.0-1"))),
                    rel("bar", None, Some((Earlier, "1.2-3.1~"))),
                ],
                vec![rel("baz", None, Some((EarlierOrEqual, "2")))],
                vec![rel("qux", None, Some((Later, "2~rc1")))],
                vec![
                    rel("old", None, Some((EarlierOrEqual, "1"))),
                    rel("older", None, Some((LaterOrEqual, "2"))),
                ],
                vec![rel("nginx-abi-1.22.1-7", None, None)],
            ]
        );
        assert!(parse_relations("").unwrap().is_empty());
    }

    #[test]
    fn malformed_relations_are_errors() {
        for bad in [
            "foo (>= 1",
            "foo (~ 1)",
            "foo (>= )",
            "foo (= 1 2)",
            "foo bar",
            "foo:",
            "(= 1)",
            "a, | b",
        ] {
            assert!(parse_relations(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn relations_compare_in_debian_order() {
        let r = |op, v: &str| rel("x", None, Some((op, v)));
        assert!(r(Op::Earlier, "1.0-1.1~").allows("1.0-1"));
        assert!(r(Op::Earlier, "1.0-1.1~").allows("1.0-1+b1"));
        assert!(!r(Op::Earlier, "1.0-1.1~").allows("1.0-1.1"));
        assert!(r(Op::LaterOrEqual, "1.0-1").allows("1:0.9"));
        assert!(!r(Op::Later, "1.0").allows("1.0"));
        assert!(r(Op::EarlierOrEqual, "1.0").allows("1.0~rc1"));
        assert!(r(Op::Equal, "2.0-1").allows("2.0-1"));
        assert!(rel("x", None, None).allows("anything"));
    }

    /// The walks' answers are kept only while the index they came from
    /// is unchanged: a refreshed list, a new source or a transaction
    /// (dpkg's status) each make a new stamp.
    #[test]
    fn an_index_change_makes_a_new_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let put = |path: &str, text: &str| {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("var/lib/apt/lists/deb_main_Packages", "Package: a\n");
        put("var/lib/dpkg/status", "");
        let target = Target::at_root(dir.path());
        let first = Stamp::of(&target);
        assert_eq!(first, Stamp::of(&target));
        for (path, text) in [
            (
                "var/lib/apt/lists/deb_main_Packages",
                "Package: a\nPackage: b\n",
            ),
            ("etc/apt/sources.list.d/kiln.list", "deb file:/x ./\n"),
            ("var/lib/dpkg/status", "Package: a\n"),
        ] {
            let before = Stamp::of(&target);
            put(path, text);
            assert_ne!(before, Stamp::of(&target), "{path} changed");
        }
    }

    /// A fixed index that records what each round asked for.
    struct Fixed {
        records: Vec<Record>,
        rounds: Vec<Vec<String>>,
    }

    impl Index for Fixed {
        fn show(&mut self, names: &[String]) -> Result<Vec<Record>, SiblingError> {
            self.rounds.push(names.to_vec());
            Ok(self
                .records
                .iter()
                .filter(|r| names.contains(&r.package))
                .cloned()
                .collect())
        }
    }

    /// `package version source source_version depends...` lines.
    fn index(text: &str) -> Fixed {
        let records = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut words = l.splitn(5, ' ');
                let mut w = || words.next().unwrap_or_default().to_string();
                let (package, version, source, source_version) = (w(), w(), w(), w());
                Record {
                    depends: parse_relations(&w()).unwrap(),
                    package,
                    version,
                    source,
                    source_version,
                }
            })
            .collect();
        Fixed {
            records,
            rounds: Vec::new(),
        }
    }

    fn installed(lines: &[(&str, &str, &str)]) -> Dpkg {
        let text: Vec<String> = lines
            .iter()
            .map(|(name, version, source)| {
                format!(
                    "Package: {name}\nStatus: install ok installed\nVersion: {version}\nSource: {source}\n"
                )
            })
            .collect();
        Dpkg::parse(&text.join("\n"))
    }

    fn pin(name: &str, version: &str) -> Vec<(String, String)> {
        vec![(name.into(), version.into())]
    }

    fn found(siblings: &[Sibling]) -> Vec<(&str, &str, Option<&str>)> {
        siblings
            .iter()
            .map(|s| (s.name.as_str(), s.version.as_str(), s.installed.as_deref()))
            .collect()
    }

    /// The archive of a fresh bookworm host pinned below bookworm-security:
    /// an `=` tie, a `<< V.1~` range tie, and a sibling reached only
    /// through a package of another source that is not installed.
    const ARCHIVE: &str = "
        x-cli 2.0-1 x 2.0-1 x-common (= 2.0-1), libc6 (>= 2.34), helper
        x-cli 2.0-2 x 2.0-2 x-common (= 2.0-2), libc6 (>= 2.34), helper
        x-common 2.0-1 x 2.0-1 x-data (>= 2.0-1), x-data (<< 2.0-1.1~)
        x-common 2.0-2 x 2.0-2 x-data (>= 2.0-2), x-data (<< 2.0-2.1~)
        x-data 2.0-1 x 2.0-1
        x-data 2.0-2 x 2.0-2
        x-plugin 2.0-1+b1 x 2.0-1 x-common (>= 2.0-1)
        x-plugin 2.0-2 x 2.0-2 x-common (>= 2.0-2)
        x-doc 2.0-1 x 2.0-1
        x-doc 2.0-2 x 2.0-2
        helper 1.0 helper 1.0 x-plugin | x-doc
        helper 1.1 helper 1.1 x-plugin | x-doc
        libc6 2.36 glibc 2.36
    ";

    #[test]
    fn a_fresh_host_installs_every_reached_sibling_at_the_upload() {
        let mut index = index(ARCHIVE);
        let dpkg = installed(&[("libc6", "2.36", "glibc")]);
        let siblings = walk(&mut index, &pin("x-cli", "2.0-1"), &dpkg).unwrap();
        // x-plugin through helper (another source), at the binNMU of 2.0-1;
        // x-doc is an alternative apt does not take.
        assert_eq!(
            found(&siblings),
            [
                ("x-common", "2.0-1", None),
                ("x-data", "2.0-1", None),
                ("x-plugin", "2.0-1+b1", None),
            ]
        );
        assert!(siblings.iter().all(|s| s.follows == "x-cli"));
        // One process a level, never one a package; installed libc6 is
        // not asked about.
        assert_eq!(
            index.rounds,
            [
                vec!["x-cli"],
                vec!["helper", "x-common"],
                vec!["x-data", "x-doc", "x-plugin"],
            ]
        );
    }

    #[test]
    fn installed_siblings_move_whether_reached_or_not() {
        let mut index = index(ARCHIVE);
        let dpkg = installed(&[
            ("libc6", "2.36", "glibc"),
            ("helper", "1.1", "helper"),
            ("x-cli", "2.0-2", "x"),
            ("x-common", "2.0-2", "x"),
            ("x-data", "2.0-2", "x"),
            ("x-doc", "2.0-2", "x"),
        ]);
        let siblings = walk(&mut index, &pin("x-cli", "2.0-1"), &dpkg).unwrap();
        // helper is installed, so nothing pulls x-plugin in.
        assert_eq!(
            found(&siblings),
            [
                ("x-common", "2.0-1", Some("2.0-2")),
                ("x-data", "2.0-1", Some("2.0-2")),
                ("x-doc", "2.0-1", Some("2.0-2")),
            ]
        );
        assert_eq!(index.rounds.len(), 2, "{:?}", index.rounds);
    }

    #[test]
    fn a_sibling_the_sources_lack_is_an_error_before_apt() {
        let mut index = index(
            "x-cli 2.0-1 x 2.0-1 x-common (= 2.0-1)\n\
             x-common 2.0-2 x 2.0-2\n",
        );
        let e = walk(&mut index, &pin("x-cli", "2.0-1"), &Dpkg::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x-common is built from x like x-cli, but no source offers a x-common built from x 2.0-1 (offered: 2.0-2)")
                && e.contains("Fix: pin x-cli"),
            "{e}"
        );
    }

    #[test]
    fn other_sources_take_the_newest_version_their_dependency_allows() {
        let mut index = index(
            "x-cli 2.0-1 x 2.0-1 lib (<< 3)\n\
             lib 2.5 lib 2.5 x-data\n\
             lib 3.0 lib 3.0\n\
             x-data 2.0-1 x 2.0-1\n",
        );
        let siblings = walk(&mut index, &pin("x-cli", "2.0-1"), &Dpkg::default()).unwrap();
        assert_eq!(found(&siblings), [("x-data", "2.0-1", None)]);
    }

    #[test]
    fn virtual_names_unknown_pins_and_no_pins_end_quietly() {
        let mut index = index("x-cli 2.0-1 x 2.0-1 virtual-thing | x-data\nx-data 2.0-1 x 2.0-1\n");
        let siblings = walk(&mut index, &pin("x-cli", "2.0-1"), &Dpkg::default()).unwrap();
        assert_eq!(found(&siblings), [("x-data", "2.0-1", None)]);
        let mut index = self::index(ARCHIVE);
        assert!(
            walk(&mut index, &pin("gone", "1"), &Dpkg::default())
                .unwrap()
                .is_empty()
        );
        assert!(
            walk(&mut index, &pin("x-cli", "9"), &Dpkg::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn pins_of_one_source_at_two_uploads_are_refused() {
        let mut index = index(ARCHIVE);
        let pins = [
            ("x-cli".to_string(), "2.0-1".to_string()),
            ("x-doc".to_string(), "2.0-2".to_string()),
        ];
        let e = walk(&mut index, &pins, &Dpkg::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Fix: pin both at versions of the same x upload"),
            "{e}"
        );
    }

    #[test]
    fn the_walk_is_bounded() {
        let chain: String = (0..=MAX_ROUNDS + 1)
            .map(|i| format!("p{i} 1 p{i} 1 p{}\n", i + 1))
            .collect();
        let mut index = index(&chain);
        let e = walk(&mut index, &pin("p0", "1"), &Dpkg::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("32 levels deep") && e.contains("Fix:"), "{e}");
        // Carried whole up to the top, where it reads the same.
        let top = Error::from(too_far(&pin("p0", "1"), "32 levels deep"));
        assert!(matches!(top, Error::Run(RunError::Platform(_))));
        assert_eq!(top.to_string(), e);
        assert_eq!(index.rounds.len(), MAX_ROUNDS);
    }
}
