//! `whitelist.toml`: the only source of package versions. Base pins, the
//! pins of each Debian release (`[releases.NAME]`, chosen by the target's
//! own os-release), plus staged rollouts that give matching hosts other
//! versions first, and other attributes and recipes (see
//! [`super::rollout`] for which hosts a rollout reaches).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Repository;
use crate::error::{Lines, PolicyError};
pub use crate::platform::fallback::{Fallback, Mirror, SNAPSHOT_URI_FIX, check_snapshot_uri};
use crate::platform::fallback::{UriProblem, http_rest};

#[derive(Debug, Clone, Default)]
pub struct Whitelist {
    pub file: PathBuf,
    /// Pins every release shares.
    pub packages: BTreeMap<String, Entry>,
    /// The releases the whitelist pins, by codename, with the pins that
    /// differ there. None: `[packages]` applies to whatever release a target runs.
    pub releases: BTreeMap<String, Release>,
    pub rollouts: BTreeMap<String, Rollout>,
    pub fallback: Fallback,
}

/// `[releases.NAME]`: a Debian release (its codename) the fleet runs, and
/// the pins that differ there from `[packages]`.
#[derive(Debug, Clone, Default)]
pub struct Release {
    pub packages: BTreeMap<String, Entry>,
    /// Replaces `[fallback]` for targets of this release, when given.
    pub fallback: Option<Fallback>,
    pub line: usize,
}

/// The fallback sources with the repository that holds their key files.
#[derive(Debug, Clone)]
pub struct FallbackSource {
    pub fallback: Fallback,
    pub repo: PathBuf,
}

/// A pinned version and the line it is written on.
#[derive(Debug, Clone)]
pub struct Entry {
    pub version: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// `[rollouts.NAME]`: also the key of its percentage's hash.
    pub name: String,
    /// Host patterns (fnmatch on the fqdn); a pattern without wildcards
    /// names a host, which is in whatever the percentage.
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
    /// Only targets of these releases (empty: any). With neither hosts nor
    /// roles, every host of these releases.
    pub releases: Vec<String>,
    /// A stable share of the hosts its patterns, roles and releases allow,
    /// as written (`kiln check` refuses one outside 0-100); none: all.
    pub percent: Option<i64>,
    pub percent_line: usize,
    pub packages: BTreeMap<String, Entry>,
    /// Laid over the attributes of the hosts in it, above role overrides.
    pub attributes: toml::Table,
    /// The line of each value `attributes` sets, by dotted path.
    pub attribute_lines: BTreeMap<String, usize>,
    /// Recipes appended to the run lists of the hosts in it.
    pub run_list: Vec<String>,
    pub run_list_line: usize,
    pub line: usize,
}

/// The version that applies to a node, and which rule gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub version: String,
    /// `packages`, `releases.NAME.packages` or `rollouts.NAME`.
    pub rule: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    packages: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    releases: BTreeMap<String, toml::Spanned<RawRelease>>,
    #[serde(default)]
    rollouts: BTreeMap<String, toml::Spanned<RawRollout>>,
    #[serde(default)]
    fallback: Option<toml::Spanned<RawFallback>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    #[serde(default)]
    packages: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    fallback: Option<toml::Spanned<RawFallback>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    snapshot_uri: Option<String>,
    #[serde(default)]
    snapshot_key: Option<String>,
    #[serde(default)]
    mirrors: Vec<Mirror>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    releases: Vec<String>,
    #[serde(default)]
    percent: Option<toml::Spanned<i64>>,
    #[serde(default)]
    packages: BTreeMap<String, toml::Spanned<String>>,
    #[serde(default)]
    attributes: Option<toml::Spanned<toml::Table>>,
    #[serde(default)]
    run_list: Option<toml::Spanned<Vec<String>>>,
}

impl Whitelist {
    /// Loads the repository's whitelist. A repository without one is refused
    /// rather than read as pinning nothing: that is what a wrong `--repo` or
    /// a lost file looks like, and every package would then be refused.
    pub fn load(repo: &Repository) -> Result<Whitelist, PolicyError> {
        let path = repo.dir.join("whitelist.toml");
        let file = repo.display_path("whitelist.toml");
        if !path.is_file() {
            return Err(PolicyError::new(
                "the file is missing: the repository has no package whitelist",
            )
            .in_file(&file)
            .fix(format!(
                "create it (an empty file pins nothing: touch {}), or point --repo at the policy repository",
                file.display()
            )));
        }
        let text = crate::platform::hostfile::read_to_string(&path)
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&file))?;
        Whitelist::parse(&text, file)
    }

    pub fn parse(text: &str, file: PathBuf) -> Result<Whitelist, PolicyError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            PolicyError::toml(&file, text, &e)
                .fix("the whitelist holds [packages] NAME = \"VERSION\", [releases.CODENAME.packages], [rollouts.NAME] and [fallback] tables")
        })?;
        let lines = Lines::new(text);
        let entries = |m: BTreeMap<String, toml::Spanned<String>>| {
            m.into_iter()
                .map(|(k, v)| {
                    let line = lines.line(v.span().start);
                    (
                        k,
                        Entry {
                            version: v.into_inner(),
                            line,
                        },
                    )
                })
                .collect()
        };
        let rollouts = raw
            .rollouts
            .into_iter()
            .map(|(name, r)| {
                let line = lines.line(r.span().start);
                let r = r.into_inner();
                let at = |span: std::ops::Range<usize>| lines.line(span.start);
                let percent_line = r.percent.as_ref().map_or(line, |p| at(p.span()));
                let run_list_line = r.run_list.as_ref().map_or(line, |l| at(l.span()));
                let (attributes, attributes_line) =
                    r.attributes.map_or((toml::Table::new(), line), |a| {
                        let l = at(a.span());
                        (a.into_inner(), l)
                    });
                let attribute_lines =
                    super::rollout::value_lines(text, &name, &attributes, attributes_line);
                (
                    name.clone(),
                    Rollout {
                        name,
                        hosts: r.hosts,
                        roles: r.roles,
                        releases: r.releases,
                        percent: r.percent.map(toml::Spanned::into_inner),
                        percent_line,
                        packages: entries(r.packages),
                        attributes,
                        attribute_lines,
                        run_list: r
                            .run_list
                            .map(toml::Spanned::into_inner)
                            .unwrap_or_default(),
                        run_list_line,
                        line,
                    },
                )
            })
            .collect();
        let fallback = |f: toml::Spanned<RawFallback>| {
            let line = lines.line(f.span().start);
            let f = f.into_inner();
            Fallback {
                snapshot: f.snapshot,
                snapshot_uri: f.snapshot_uri,
                snapshot_key: f.snapshot_key,
                mirrors: f.mirrors,
                line,
            }
        };
        let releases = raw
            .releases
            .into_iter()
            .map(|(name, r)| {
                let line = release_line(text, &name).unwrap_or_else(|| lines.line(r.span().start));
                let r = r.into_inner();
                (
                    name,
                    Release {
                        packages: entries(r.packages),
                        fallback: r.fallback.map(fallback),
                        line,
                    },
                )
            })
            .collect();
        Ok(Whitelist {
            file,
            packages: entries(raw.packages),
            releases,
            rollouts,
            fallback: raw.fallback.map(fallback).unwrap_or_default(),
        })
    }

    /// Problems `kiln check` reports: versions that are not Debian versions,
    /// host patterns that do not compile, rollouts that match nothing.
    pub fn validate(&self) -> Vec<PolicyError> {
        let mut errors = Vec::new();
        let version = |pkg: &str, e: &Entry, errors: &mut Vec<PolicyError>| {
            if !is_package_name(pkg) {
                errors.push(
                    PolicyError::new(format!("{pkg:?} is not a Debian package name"))
                        .in_file(&self.file)
                        .at_line(e.line, None)
                        .fix("name the binary package as apt does: lower-case letters, digits, '+', '-' and '.', starting with a letter or digit"),
                );
            }
            if let Err(why) = valid_version(&e.version) {
                errors.push(
                    PolicyError::new(format!(
                        "package {pkg:?}: {:?} is not a valid Debian version ({why})",
                        e.version
                    ))
                    .in_file(&self.file)
                    .at_line(e.line, None)
                    .fix("write the exact version apt shows, e.g. \"1.6.18-1\" (apt-cache policy NAME)"),
                );
            }
        };
        for (p, e) in &self.packages {
            version(p, e, &mut errors);
        }
        for (name, r) in &self.releases {
            for (p, e) in &r.packages {
                version(p, e, &mut errors);
            }
            if !is_codename(name) {
                errors.push(
                    PolicyError::new(format!(
                        "[releases.{name}]: {name:?} is not a Debian release codename"
                    ))
                    .in_file(&self.file)
                    .at_line(r.line, None)
                    .fix("name releases as os-release's VERSION_CODENAME does: [releases.bookworm], [releases.trixie]"),
                );
            }
            if let Some(f) = &r.fallback {
                errors.extend(f.validate(&self.file));
            }
        }
        for (name, r) in &self.rollouts {
            for (p, e) in &r.packages {
                version(p, e, &mut errors);
            }
            for rel in &r.releases {
                if self.releases.is_empty() && !DEBIAN_CODENAMES.contains(&rel.as_str()) {
                    errors.push(
                        PolicyError::new(format!(
                            "rollout {name:?}: {rel:?} is not a Debian release codename"
                        ))
                        .in_file(&self.file)
                        .at_line(r.line, None)
                        .fix(
                            "name releases as os-release's VERSION_CODENAME does: bookworm, trixie",
                        ),
                    );
                }
                if !self.releases.is_empty() && !self.releases.contains_key(rel) {
                    errors.push(
                        PolicyError::new(format!(
                            "rollout {name:?}: release {rel:?} is not pinned (no [releases.{rel}])"
                        ))
                        .in_file(&self.file)
                        .at_line(r.line, None)
                        .fix(format!("use one of: {}", self.pinned_releases().join(", "))),
                    );
                }
            }
            for h in &r.hosts {
                if let Err(e) = globset::Glob::new(h) {
                    errors.push(
                        PolicyError::new(format!("rollout {name:?}: host pattern {h:?}: {e}"))
                            .in_file(&self.file)
                            .at_line(r.line, None),
                    );
                }
            }
            if r.hosts.is_empty()
                && r.roles.is_empty()
                && r.releases.is_empty()
                && r.percent.is_none()
            {
                errors.push(
                    PolicyError::new(format!("rollout {name:?} matches no host"))
                        .in_file(&self.file)
                        .at_line(r.line, None)
                        .fix("give it hosts = [\"PATTERN\"], roles = [\"ROLE\"], releases = [\"CODENAME\"] or percent = N (a share of every host)"),
                );
            }
            errors.extend(r.validate(&self.file));
        }
        errors.extend(super::rollout::static_conflicts(self));
        errors.extend(self.fallback.validate(&self.file));
        errors
    }

    /// [`Whitelist::validate`] plus what needs the repository: a rollout
    /// must name roles that exist and packages on `[packages]`, or it
    /// silently never applies. `kiln check` and every compile run this.
    pub fn validate_in(&self, repo: &Repository) -> Vec<PolicyError> {
        let mut errors = self.validate();
        // A missing key would otherwise surface only on a host, mid-run,
        // the day a pin first needs the snapshot.
        let fallbacks = std::iter::once(&self.fallback)
            .chain(self.releases.values().filter_map(|r| r.fallback.as_ref()));
        for f in fallbacks {
            if let Some(k) = &f.snapshot_key
                && !k.starts_with('/')
                && !repo.dir.join(k).is_file()
            {
                errors.push(
                    PolicyError::new(format!(
                        "[fallback] snapshot_key {k:?} is not a file of the repository"
                    ))
                    .in_file(&self.file)
                    .at_line(f.line, None)
                    .fix("add the key the snapshot copy is signed with (gpg --export --armor KEYID > keys/snapshot.asc), or correct the path"),
                );
            }
        }
        let roles = repo.names_in("roles");
        let cookbooks = repo.names_in("cookbooks");
        for (name, r) in &self.rollouts {
            for item in &r.run_list {
                if let Ok(super::runlist::Item::Recipe(cb, _)) = super::runlist::Item::parse(item)
                    && !cookbooks.contains(&cb)
                {
                    errors.push(
                        PolicyError::new(format!(
                            "rollout {name:?}: run_list item {item:?}: cookbook {cb:?} does not exist (no cookbooks/{cb})"
                        ))
                        .in_file(&self.file)
                        .at_line(r.run_list_line, None)
                        .fix(format!("add cookbooks/{cb}, or use one of: {}", cookbooks.join(", "))),
                    );
                }
            }
            for role in &r.roles {
                if !roles.contains(role) {
                    errors.push(
                        PolicyError::new(format!(
                            "rollout {name:?}: role {role:?} does not exist (no roles/{role}.toml)"
                        ))
                        .in_file(&self.file)
                        .at_line(r.line, None)
                        .fix(format!("use one of: {}", roles.join(", "))),
                    );
                }
            }
            // Every release the rollout can reach must pin the package, or
            // hosts of that release outside the rollout have no version.
            let reach: Vec<&String> = self
                .releases
                .keys()
                .filter(|rel| r.releases.is_empty() || r.releases.contains(rel))
                .collect();
            for (p, e) in &r.packages {
                let unpinned: Vec<&str> = reach
                    .iter()
                    .filter(|rel| !self.releases[rel.as_str()].packages.contains_key(p))
                    .map(|rel| rel.as_str())
                    .collect();
                if !self.packages.contains_key(p) && (reach.is_empty() || !unpinned.is_empty()) {
                    let where_ = if unpinned.is_empty() {
                        "[packages]".to_string()
                    } else {
                        format!(
                            "[packages] nor in {}",
                            unpinned
                                .iter()
                                .map(|r| format!("[releases.{r}.packages]"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    errors.push(
                        PolicyError::new(format!(
                            "rollout {name:?}: package {p:?} is not in {where_}"
                        ))
                        .in_file(&self.file)
                        .at_line(e.line, None)
                        .fix(format!(
                            "pin {p:?} in [packages] (or each release's packages) first (the version hosts outside the rollout get), or correct the name"
                        )),
                    );
                }
            }
        }
        errors
    }

    /// The releases this whitelist pins (`[releases.NAME]`), in name order.
    pub fn pinned_releases(&self) -> Vec<String> {
        self.releases.keys().cloned().collect()
    }

    /// The releases a command speaks of: the one asked for (which must be
    /// pinned, when any is), else every pinned release, else the one given
    /// as the default (a whitelist without `[releases]`).
    pub fn releases_or(
        &self,
        asked: Option<&str>,
        default: &str,
    ) -> Result<Vec<String>, PolicyError> {
        match asked {
            Some(r) => {
                self.release(r)?;
                Ok(vec![r.to_string()])
            }
            None if self.releases.is_empty() => Ok(vec![default.to_string()]),
            None => Ok(self.pinned_releases()),
        }
    }

    /// Checks that `codename` is a release this whitelist pins (any is,
    /// when it pins none).
    pub fn release(&self, codename: &str) -> Result<Option<&Release>, PolicyError> {
        if self.releases.is_empty() {
            return Ok(None);
        }
        match self.releases.get(codename) {
            Some(r) => Ok(Some(r)),
            None => Err(PolicyError::new(format!(
                "release {:?} is not pinned: the whitelist pins {}",
                if codename.is_empty() { "unknown" } else { codename },
                self.pinned_releases().join(", ")
            ))
            .in_file(&self.file)
            .fix(format!(
                "add [releases.{}] with the versions of that release (kiln whitelist outdated --release lists them), or run the target on a pinned release",
                if codename.is_empty() { "CODENAME" } else { codename }
            ))),
        }
    }

    /// The fallback sources for targets of `codename`.
    pub fn fallback_for(&self, codename: &str) -> &Fallback {
        self.releases
            .get(codename)
            .and_then(|r| r.fallback.as_ref())
            .unwrap_or(&self.fallback)
    }

    /// Whether a rollout applies to a node of release `codename`.
    pub fn matches(rollout: &Rollout, fqdn: &str, roles: &[String], codename: &str) -> bool {
        rollout.reason(fqdn, roles, Some(codename)).is_in()
    }

    /// The rollouts a node of release `codename` is in, in name order.
    pub fn rollouts_of(&self, fqdn: &str, roles: &[String], codename: &str) -> Vec<&Rollout> {
        self.rollouts
            .values()
            .filter(|r| Whitelist::matches(r, fqdn, roles, codename))
            .collect()
    }

    /// Every package's version for a node of release `codename` (its
    /// os-release VERSION_CODENAME). Two matching rollouts that pin the
    /// same package are a conflict, named.
    pub fn resolve(
        &self,
        fqdn: &str,
        roles: &[String],
        codename: &str,
    ) -> Result<BTreeMap<String, Pin>, PolicyError> {
        let entry = |rule: &str| {
            let rule = rule.to_string();
            move |(k, e): (&String, &Entry)| {
                (
                    k.clone(),
                    Pin {
                        version: e.version.clone(),
                        rule: rule.clone(),
                    },
                )
            }
        };
        let mut pins: BTreeMap<String, Pin> = self.packages.iter().map(entry("packages")).collect();
        if let Some(release) = self.release(codename)? {
            pins.extend(
                release
                    .packages
                    .iter()
                    .map(entry(&format!("releases.{codename}.packages"))),
            );
        }
        let mut from_rollout: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, r) in &self.rollouts {
            if !Whitelist::matches(r, fqdn, roles, codename) {
                continue;
            }
            for (p, e) in &r.packages {
                if let Some(other) = from_rollout.insert(p, name) {
                    return Err(PolicyError::new(format!(
                        "rollouts {other:?} and {name:?} both match {fqdn} and both pin {p:?}"
                    ))
                    .in_file(&self.file)
                    .at_line(r.line, None)
                    .fix("narrow their hosts/roles so that one host gets one version, or promote one of them"));
                }
                pins.insert(
                    p.clone(),
                    Pin {
                        version: e.version.clone(),
                        rule: format!("rollouts.{name}"),
                    },
                );
            }
        }
        Ok(pins)
    }
}

impl Fallback {
    fn validate(&self, file: &std::path::Path) -> Vec<PolicyError> {
        let mut errors = Vec::new();
        let at = |e: PolicyError| e.in_file(file).at_line(self.line, None);
        if let Some(s) = &self.snapshot
            && !is_snapshot_stamp(s)
        {
            errors.push(at(PolicyError::new(format!(
                "[fallback] snapshot {s:?} is not a snapshot.debian.org timestamp"
            ))
            .fix(
                "write it as YYYYMMDDTHHMMSSZ, e.g. snapshot = \"20261121T000000Z\"",
            )));
        }
        if let Some(u) = &self.snapshot_uri
            && let Err(why) = check_snapshot_uri(u)
        {
            errors.push(at(PolicyError::new(format!(
                "[fallback] snapshot_uri {u:?} {why}"
            ))
            .fix(SNAPSHOT_URI_FIX)));
        }
        if let Some(k) = &self.snapshot_key {
            if k.starts_with('/') || k.split('/').any(|c| c == "..") {
                errors.push(at(PolicyError::new(format!(
                    "[fallback] snapshot_key {k:?} must be a path inside the repository"
                ))
                .fix("keep the key in the policy repository, e.g. snapshot_key = \"keys/snapshot.asc\"")));
            } else if !(k.ends_with(".asc") || k.ends_with(".gpg")) {
                errors.push(at(PolicyError::new(format!(
                    "[fallback] snapshot_key {k:?} ends in neither .asc nor .gpg"
                ))
                .fix("apt tells the key's format by its name: call an armored key *.asc, a binary one *.gpg")));
            }
        }
        if self.snapshot.is_none() {
            for (field, value) in [
                ("snapshot_uri", &self.snapshot_uri),
                ("snapshot_key", &self.snapshot_key),
            ] {
                if value.is_some() {
                    errors.push(at(PolicyError::new(format!(
                        "[fallback] {field} is given without a snapshot, so nothing uses it"
                    ))
                    .fix("name the snapshot in the same table: snapshot = \"YYYYMMDDTHHMMSSZ\" (a release's [releases.CODENAME.fallback] replaces [fallback] whole)")));
                }
            }
        }
        for m in &self.mirrors {
            if let Err(why) = check_mirror_uri(&m.uri) {
                errors.push(at(PolicyError::new(format!(
                    "[fallback] mirror uri {:?} {why}",
                    m.uri
                ))
                .fix(
                    "serve the mirror over http(s): uri = \"https://apt.example.com/kiln\"",
                )));
            }
            let words = std::iter::once(("suite", &m.suite))
                .chain(m.components.iter().map(|c| ("component", c)));
            for (what, w) in words {
                if !is_archive_word(w) {
                    errors.push(at(PolicyError::new(format!(
                        "[fallback] mirror {what} {w:?} is not a suite or component name"
                    ))
                    .fix("use letters, digits and . _ - / only, e.g. suite = \"trixie\", components = [\"main\"]")));
                }
            }
            if m.key.is_none() && !m.trusted {
                errors.push(at(PolicyError::new(format!(
                    "[fallback] mirror {} has no signing key",
                    m.uri
                ))
                .fix("name its key file (key = \"keys/mirror.asc\", a file of this repository), or, for an unsigned mirror on a network you trust, trusted = true")));
            }
            if m.key
                .as_deref()
                .is_some_and(|k| k.starts_with('/') || k.split('/').any(|c| c == ".."))
            {
                errors.push(at(PolicyError::new(format!(
                    "[fallback] mirror key {:?} must be a path inside the repository",
                    m.key.as_deref().unwrap_or_default()
                ))));
            }
        }
        errors
    }
}

/// A Debian codename as os-release spells it: lowercase letters.
/// Debian's release codenames, the future ones included (Debian names
/// them years ahead): a rollout in a whitelist without `[releases]` can
/// only be checked against these.
pub const DEBIAN_CODENAMES: &[&str] = &[
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
];

pub fn is_codename(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase())
}

/// The line of `[releases.NAME]` or `[releases.NAME.packages]`, whichever
/// comes first: a table only implied by its subtable has no span of its own.
fn release_line(text: &str, name: &str) -> Option<usize> {
    let heads = [
        format!("[releases.{name}]"),
        format!("[releases.{name}."),
        format!("[releases.\"{name}\""),
    ];
    text.lines()
        .position(|l| heads.iter().any(|h| l.trim_start().starts_with(h.as_str())))
        .map(|i| i + 1)
}

/// A fallback mirror's URI: http(s) only. A `file:` source would be a
/// directory on each target, and whoever can write there (on a `trusted`
/// mirror, anyone) would choose the packages root installs.
fn check_mirror_uri(u: &str) -> Result<(), UriProblem> {
    http_rest(u)?;
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UriProblem::Unquotable);
    }
    Ok(())
}

/// A suite or component as a deb822 source carries it: one word.
fn is_archive_word(w: &str) -> bool {
    !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

/// `YYYYMMDDTHHMMSSZ`, as snapshot.debian.org names its archive states.
pub fn is_snapshot_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Debian policy: optional numeric epoch, an upstream part starting with a
/// digit, an optional revision.
pub fn valid_version(v: &str) -> Result<debversion::Version, VersionProblem> {
    let parsed = match plain_version(v) {
        Some(p) => p,
        None => v.parse()?,
    };
    if !parsed
        .upstream_version
        .starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(VersionProblem::UpstreamNotDigit);
    }
    Ok(parsed)
}

/// `v` as debversion parses it, for the plain shape every pin has
/// (`[EPOCH:]UPSTREAM[-REVISION]` in ASCII, upstream and revision
/// non-empty); None for anything else, which debversion's own parser then
/// reads (and words the error of). Its regular expression took a no-op
/// converge ~0.2 ms to compile, and the thread count of the machine
/// (cgroup files) to size its cache.
fn plain_version(v: &str) -> Option<debversion::Version> {
    let upstream_char = |c: u8| c.is_ascii_alphanumeric() || b".+:~-".contains(&c);
    let revision_char = |c: u8| c.is_ascii_alphanumeric() || b"+.~".contains(&c);
    if !v.bytes().all(upstream_char) {
        return None;
    }
    // debversion takes an epoch when the text starts with digits and a
    // colon and something follows; a number too large is its error.
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
            (Some(e.parse::<u32>().ok()?), rest)
        }
        _ => (None, v),
    };
    // The revision is what follows the last hyphen, when that is neither
    // the first character nor empty and holds only revision characters;
    // otherwise the whole rest is upstream.
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) if !u.is_empty() && !r.is_empty() && r.bytes().all(revision_char) => {
            (u, Some(r.to_string()))
        }
        _ => (rest, None),
    };
    if upstream.is_empty() {
        return None;
    }
    Some(debversion::Version {
        epoch,
        upstream_version: upstream.to_string(),
        debian_revision: revision,
    })
}

/// Why a string is not a Debian version, worded to go in parentheses
/// after it.
#[derive(Debug, thiserror::Error)]
pub enum VersionProblem {
    #[error("{0}")]
    Syntax(#[from] debversion::ParseError),
    #[error("the upstream version must start with a digit")]
    UpstreamNotDigit,
}

/// A Debian binary package name (Policy 5.6.1, without its two-character
/// minimum): what apt can be asked for, never an option (`-o...`) on its
/// command line.
pub fn is_package_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_sources_parse_and_validate() {
        let w = Whitelist::parse(
            "[packages]\nx = \"1.0\"\n\n[fallback]\nsnapshot = \"20261121T000000Z\"\n\n[[fallback.mirrors]]\nuri = \"http://127.0.0.1:9/\"\ntrusted = true\n",
            "whitelist.toml".into(),
        )
        .unwrap();
        assert_eq!(w.fallback.snapshot.as_deref(), Some("20261121T000000Z"));
        assert_eq!(w.fallback.mirrors[0].suite, "./");
        assert_eq!(w.fallback.line, 4);
        assert!(w.validate().is_empty());
        let bad = Whitelist::parse(
            "[fallback]\nsnapshot = \"2026-11-21\"\n[[fallback.mirrors]]\nuri = \"ftp://x\"\n",
            "whitelist.toml".into(),
        )
        .unwrap();
        let errors: Vec<String> = bad.validate().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("whitelist.toml:1") && errors[0].contains("YYYYMMDDTHHMMSSZ"));
        assert!(errors[2].contains("no signing key") && errors[2].contains("trusted = true"));
    }

    #[test]
    fn a_snapshot_copy_is_named_by_uri_and_key() {
        let w = Whitelist::parse(
            "[fallback]\nsnapshot = \"20261121T000000Z\"\nsnapshot_uri = \"http://snap.example.com:8080/debian-snapshot\"\nsnapshot_key = \"keys/snapshot.asc\"\n",
            "whitelist.toml".into(),
        )
        .unwrap();
        assert_eq!(
            w.fallback.snapshot_uri.as_deref(),
            Some("http://snap.example.com:8080/debian-snapshot")
        );
        assert_eq!(
            w.fallback.snapshot_key.as_deref(),
            Some("keys/snapshot.asc")
        );
        assert!(w.validate().is_empty(), "{:?}", w.validate());

        let bad = Whitelist::parse(
            "[packages]\nx = \"1.0\"\n\n[fallback]\nsnapshot = \"20261121T000000Z\"\nsnapshot_uri = \"snapshot.example.com\"\nsnapshot_key = \"/etc/snapshot.asc\"\n\n[releases.trixie.fallback]\nsnapshot_uri = \"https://snap.example.com/archive/debian/\"\nsnapshot_key = \"keys/snapshot.key\"\n",
            "whitelist.toml".into(),
        )
        .unwrap();
        let errors: Vec<String> = bad.validate().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 6, "{errors:?}");
        let has = |line: &str, what: &str, fix: &str| {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(line) && e.contains(what) && e.contains(fix)),
                "no {line} {what:?} with {fix:?} in {errors:?}"
            )
        };
        has(
            "whitelist.toml:4",
            "is not an http(s) URL",
            "http://snapshot.example.com",
        );
        has(
            "whitelist.toml:4",
            "must be a path inside the repository",
            "keys/snapshot.asc",
        );
        has("whitelist.toml:9", "already holds /archive/", "base URL");
        has(
            "whitelist.toml:9",
            "neither .asc nor .gpg",
            "armored key *.asc",
        );
        has(
            "whitelist.toml:9",
            "snapshot_uri is given without a snapshot",
            "snapshot = ",
        );
        has(
            "whitelist.toml:9",
            "snapshot_key is given without a snapshot",
            "snapshot = ",
        );
        assert!(check_snapshot_uri("https://").is_err());
        assert!(check_snapshot_uri("http://127.0.0.1:9/").is_ok());
        assert!(check_snapshot_uri("http://h/a b").is_err());
    }

    const TEXT: &str = r#"
# pins
[packages]
memcached = "1.6.18-1"
redis = "5:7.0.15-1~deb12u1"

[rollouts.mc-new]
hosts = ["web01.*", "devvm-*"]
roles = ["canary"]
packages = { memcached = "1.6.18-1+deb12u1" }
"#;

    fn wl(text: &str) -> Whitelist {
        Whitelist::parse(text, "whitelist.toml".into()).unwrap()
    }

    #[test]
    fn rollouts_match_by_host_or_role() {
        let w = wl(TEXT);
        let p = w.resolve("web01.example.com", &[], "bookworm").unwrap();
        assert_eq!(p["memcached"].version, "1.6.18-1+deb12u1");
        assert_eq!(p["memcached"].rule, "rollouts.mc-new");
        let p = w.resolve("web02.example.com", &[], "bookworm").unwrap();
        assert_eq!(p["memcached"].version, "1.6.18-1");
        assert_eq!(p["memcached"].rule, "packages");
        let p = w.resolve("db01", &["canary".into()], "bookworm").unwrap();
        assert_eq!(p["memcached"].rule, "rollouts.mc-new");
    }

    #[test]
    fn conflicting_rollouts_are_named() {
        let text = format!(
            "{TEXT}\n[rollouts.other]\nhosts = [\"web*\"]\npackages = {{ memcached = \"1.6.19-1\" }}\n"
        );
        let e = wl(&text).resolve("web01.x", &[], "bookworm").unwrap_err();
        assert!(e.message.contains("\"mc-new\" and \"other\""), "{e}");
    }

    #[test]
    fn plain_versions_parse_as_debversion_parses_them() {
        let cases = [
            "1.0",
            "1.0-1",
            "2:1.0~rc1-3+deb12u1",
            "1:10.11.6-0+deb12u1",
            "8.2.36-1~deb12u1",
            "1.2-3-4",
            "1.2-3:4",
            "1.0-",
            "-1",
            "1:",
            ":1",
            "1:2:3-4",
            "1:-1",
            "a1:2-3",
            "00:1.0-1",
            "99999999999:1.0",
            "4294967296:1",
            "1.0-1-",
            "1.0--1",
            "1.0-a-b",
            "1 0",
            "1.0_1",
            "1.0-é",
            "",
            "-",
            "0:0",
            "3.0.11-1~deb12u2",
            "1.6.18-1+deb12u1",
            "2:4.17.12+dfsg-0+deb12u1",
        ];
        for v in cases {
            let theirs = v.parse::<debversion::Version>().ok();
            if let Some(ours) = plain_version(v) {
                assert_eq!(Some(&ours), theirs.as_ref(), "{v}");
                assert_eq!(ours.epoch, theirs.as_ref().unwrap().epoch, "{v}");
                assert_eq!(
                    ours.upstream_version,
                    theirs.as_ref().unwrap().upstream_version,
                    "{v}"
                );
                assert_eq!(
                    ours.debian_revision,
                    theirs.as_ref().unwrap().debian_revision,
                    "{v}"
                );
            }
            assert_eq!(
                valid_version(v).ok().map(|p| p.to_string()),
                theirs
                    .filter(|t| t.upstream_version.starts_with(|c: char| c.is_ascii_digit()))
                    .map(|t| t.to_string()),
                "{v}"
            );
        }
        // The plain shape is the common one: pins do not need the fallback.
        assert!(plain_version("2:1.0~rc1-3+deb12u1").is_some());
        assert!(plain_version("1.0").is_some());
    }

    #[test]
    fn versions_are_validated_with_their_line() {
        let w = wl("[packages]\na = \"1.0-1\"\nb = \"not a version\"\nc = \"v2\"\n");
        let errs = w.validate();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].line, Some(3));
        assert!(valid_version("2:1.0~rc1-3+deb12u1").is_ok());
    }

    const RELEASES: &str = r#"
[packages]
common = "1.0-1"

[releases.bookworm]
packages = { php = "8.2.36-1~deb12u1", memcached = "1.6.18-1+deb12u1" }

[releases.trixie.packages]
php = "8.4.28-1~deb13u1"
memcached = "1.6.38-1"

[rollouts.mc-trixie]
releases = ["trixie"]
hosts = ["web01.*"]
packages = { memcached = "1.6.39-1" }

[rollouts.all-trixie]
releases = ["trixie"]
packages = { php = "8.4.29-1~deb13u1" }
"#;

    #[test]
    fn each_release_gets_its_own_pins_over_the_common_ones() {
        let w = wl(RELEASES);
        assert!(w.validate().is_empty(), "{:?}", w.validate());
        assert_eq!(w.pinned_releases(), ["bookworm", "trixie"]);
        assert_eq!(w.releases["bookworm"].line, 5);
        assert_eq!(w.releases["trixie"].line, 8);
        let b = w.resolve("web01.x", &[], "bookworm").unwrap();
        assert_eq!(b["php"].version, "8.2.36-1~deb12u1");
        assert_eq!(b["php"].rule, "releases.bookworm.packages");
        assert_eq!(b["common"].rule, "packages");
        assert_eq!(b["memcached"].version, "1.6.18-1+deb12u1");
        // Rollouts of trixie reach trixie hosts only; one without hosts or
        // roles reaches every host of its release.
        let t = w.resolve("web01.x", &[], "trixie").unwrap();
        assert_eq!(t["memcached"].rule, "rollouts.mc-trixie");
        assert_eq!(t["php"].version, "8.4.29-1~deb13u1");
        let t2 = w.resolve("db01.x", &[], "trixie").unwrap();
        assert_eq!(t2["memcached"].version, "1.6.38-1");
        assert_eq!(t2["php"].rule, "rollouts.all-trixie");
    }

    #[test]
    fn an_unpinned_release_is_refused_by_name() {
        let w = wl(RELEASES);
        let e = w.resolve("h", &[], "forky").unwrap_err();
        assert!(e.message.contains("\"forky\" is not pinned"), "{e}");
        assert!(e.to_string().contains("[releases.forky]"), "{e}");
        assert_eq!(w.releases_or(None, "x").unwrap(), ["bookworm", "trixie"]);
        assert_eq!(w.releases_or(Some("trixie"), "x").unwrap(), ["trixie"]);
        assert!(w.releases_or(Some("buster"), "x").is_err());
        // Without [releases], [packages] serves whatever a target runs.
        let plain = wl(TEXT);
        assert!(plain.resolve("h", &[], "trixie").is_ok());
        assert_eq!(plain.releases_or(None, "bookworm").unwrap(), ["bookworm"]);
    }

    #[test]
    fn release_mistakes_are_named_with_their_line() {
        let w = wl(
            "[releases.Trixie.packages]\nx = \"1\"\n\n[releases.bookworm.packages]\nx = \"1\"\n\n[rollouts.r]\nreleases = [\"sid\"]\npackages = { x = \"2\" }\n",
        );
        let errors: Vec<String> = w.validate().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("whitelist.toml:1") && errors[0].contains("codename"));
        assert!(
            errors[1].contains("release \"sid\" is not pinned"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_release_may_replace_the_fallback() {
        let w = wl(
            "[fallback]\nsnapshot = \"20261121T000000Z\"\n\n[releases.bookworm]\n\n[releases.trixie.fallback]\nsnapshot = \"20261122T000000Z\"\n",
        );
        assert!(w.validate().is_empty());
        assert_eq!(
            w.fallback_for("trixie").snapshot.as_deref(),
            Some("20261122T000000Z")
        );
        assert_eq!(
            w.fallback_for("bookworm").snapshot.as_deref(),
            Some("20261121T000000Z")
        );
    }
}
