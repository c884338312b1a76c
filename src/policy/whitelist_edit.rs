//! Edits of `whitelist.toml` that keep its comments and layout: promoting a
//! rollout into the base pins, and appending a staged rollout. People edit
//! this file by hand too, so kiln changes only the lines it must.

use std::path::{Path, PathBuf};

use crate::error::{Error, PolicyError, RunError};
use crate::policy::Repository;
use crate::policy::rollout_edit::{Carried, Destination, carry};
use crate::policy::whitelist::Whitelist;

/// One pin an edit moved: its package, the version before (none for a new
/// pin) and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMove {
    pub package: String,
    pub from: Option<String>,
    pub to: String,
}

/// Why the text of a whitelist could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{0}")]
    Syntax(#[from] toml_edit::TomlError),
    #[error("no rollout {0:?}")]
    NoRollout(String),
    /// A key that must hold a table holds a value (named as in TOML).
    #[error("{0} is not a table")]
    NotATable(String),
    /// An `--attribute` that cannot be written.
    #[error("{0}")]
    Attribute(String),
}

impl EditError {
    /// The error in `file`, with what to change there.
    pub fn in_file(self, file: &Path) -> PolicyError {
        let fix = match &self {
            EditError::Syntax(_) => "correct the TOML syntax of the whitelist first".to_string(),
            EditError::NoRollout(_) => "name a [rollouts.NAME] table of the whitelist".to_string(),
            EditError::NotATable(what) => format!("make {what} a table in the whitelist"),
            EditError::Attribute(_) => {
                "write --attribute COOKBOOK.KEY=VALUE, e.g. --attribute mariadb.innodb_buffer_pool_mb=512".to_string()
            }
        };
        PolicyError::new(self.to_string()).in_file(file).fix(fix)
    }
}

/// `whitelist.toml` as read for an edit: its text and what it says.
pub struct WhitelistFile {
    pub path: PathBuf,
    /// The path as messages name it.
    pub shown: PathBuf,
    pub text: String,
    pub whitelist: Whitelist,
}

impl WhitelistFile {
    /// Reads and validates the file with the same parser converge uses, so
    /// that nothing is edited in a whitelist kiln would refuse.
    pub fn read(repo: &Repository) -> Result<WhitelistFile, PolicyError> {
        let path = repo.dir.join("whitelist.toml");
        let shown = repo.display_path("whitelist.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&shown))?;
        let whitelist = Whitelist::parse(&text, shown.clone())?;
        Ok(WhitelistFile {
            path,
            shown,
            text,
            whitelist,
        })
    }

    /// Replaces the file atomically, keeping its mode.
    pub fn write(&self, text: &str) -> Result<(), RunError> {
        crate::policy::files::replace(&self.path, text.as_bytes())
            .map_err(|e| RunError::io("write", self.path.display(), e))
    }
}

/// What `promote` did.
pub struct Promoted {
    pub moved: Vec<PinMove>,
    /// The release whose pins took the versions; none for `[packages]`.
    pub into: Option<String>,
    /// Where its attributes and recipes went, and which.
    pub carried: Option<Carried>,
}

/// Moves a rollout's versions into the base pins, and its attributes and
/// recipes into `to`, then deletes the rollout, keeping the files'
/// comments and layout.
pub fn promote(repo: &Repository, name: &str, to: Option<&Destination>) -> Result<Promoted, Error> {
    let file = WhitelistFile::read(repo)?;
    let (wl, shown) = (&file.whitelist, &file.shown);
    if !wl.rollouts.contains_key(name) {
        let known: Vec<&str> = wl.rollouts.keys().map(String::as_str).collect();
        return Err(PolicyError::new(format!("no rollout {name:?}"))
            .in_file(shown)
            .fix(if known.is_empty() {
                "the whitelist has no [rollouts.*] tables".to_string()
            } else {
                format!("promote one of: {}", known.join(", "))
            })
            .into());
    }
    // A rollout of one pinned release is promoted into that release's pins.
    let rollout = &wl.rollouts[name];
    let carries = !rollout.attributes.is_empty() || !rollout.run_list.is_empty();
    let carried = match (carries, to) {
        // Deleting the rollout would drop them without a word.
        (true, None) => {
            return Err(PolicyError::new(format!(
                "rollout {name:?} carries attributes or recipes, and promote was not told where they go"
            ))
            .in_file(shown)
            .at_line(rollout.line, None)
            .fix(format!("kiln whitelist promote {name} --to role:NAME (override_attributes and run_list), or --to cookbook:NAME (attributes.toml)"))
            .into());
        }
        (true, Some(to)) => {
            let doc: toml_edit::DocumentMut = file
                .text
                .parse()
                .map_err(|e| EditError::Syntax(e).in_file(shown))?;
            let written = doc
                .get("rollouts")
                .and_then(|r| r.get(name))
                .and_then(|r| r.get("attributes"));
            Some(carry(repo, rollout, written, to)?)
        }
        (false, _) => None,
    };
    let into = match rollout.releases.as_slice() {
        _ if wl.releases.is_empty() => None,
        [] => None,
        [one] => Some(one.as_str()),
        _ => {
            return Err(PolicyError::new(format!(
                "rollout {name:?} matches several releases ({}): their pins differ, so it has no one table to go into",
                rollout.releases.join(", ")
            ))
            .in_file(shown)
            .at_line(rollout.line, None)
            .fix("split it into one rollout per release (releases = [\"trixie\"]), then promote each")
            .into());
        }
    };
    let (new_text, moved) = promote_text(&file.text, name, into).map_err(|e| e.in_file(shown))?;
    // The change lands in its new place before the rollout goes.
    if let Some(c) = &carried {
        crate::policy::files::replace(&c.path, c.text.as_bytes())
            .map_err(|e| RunError::io("write", c.path.display(), e))?;
    }
    file.write(&new_text)?;
    Ok(Promoted {
        moved,
        into: into.map(str::to_string),
        carried,
    })
}

/// The edit itself, on the text: the new text and the pins it moved.
/// With `release`, the versions go into `[releases.RELEASE.packages]`.
pub fn promote_text(
    text: &str,
    name: &str,
    release: Option<&str>,
) -> Result<(String, Vec<PinMove>), EditError> {
    let not_a_table = |what: String| EditError::NotATable(what);
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let rollout_pkgs: Vec<(String, toml_edit::Value)> = {
        let rollout = doc
            .get("rollouts")
            .and_then(|r| r.get(name))
            .ok_or_else(|| EditError::NoRollout(name.to_string()))?;
        match rollout.get("packages") {
            Some(toml_edit::Item::Value(toml_edit::Value::InlineTable(t))) => {
                t.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
            }
            Some(toml_edit::Item::Table(t)) => t
                .iter()
                .filter_map(|(k, v)| v.as_value().map(|v| (k.to_string(), v.clone())))
                .collect(),
            _ => vec![],
        }
    };
    let mut packages = match release {
        _ if rollout_pkgs.is_empty() => None,
        None => Some({
            if !doc.contains_key("packages") {
                doc["packages"] = toml_edit::table();
            }
            doc["packages"]
                .as_table_like_mut()
                .ok_or_else(|| not_a_table("[packages]".into()))?
        }),
        Some(r) => Some({
            let releases = doc
                .get_mut("releases")
                .and_then(|t| t.as_table_like_mut())
                .ok_or_else(|| not_a_table("[releases]".into()))?;
            let table = releases
                .get_mut(r)
                .and_then(|t| t.as_table_like_mut())
                .ok_or_else(|| not_a_table(format!("[releases.{r}]")))?;
            if table.get("packages").is_none() {
                table.insert("packages", toml_edit::table());
            }
            table
                .get_mut("packages")
                .and_then(|t| t.as_table_like_mut())
                .ok_or_else(|| not_a_table(format!("[releases.{r}.packages]")))?
        }),
    };
    let mut moved = Vec::new();
    for (pkg, value) in rollout_pkgs {
        let Some(packages) = packages.as_mut() else {
            break;
        };
        let version = value.as_str().unwrap_or_default().to_string();
        let old = match packages.get_mut(&pkg) {
            Some(item) => {
                let old = item.as_str().map(str::to_string);
                // Keep the spacing and any comment after the old value.
                let decor = item.as_value().map(|v| v.decor().clone());
                let mut new = toml_edit::Value::from(version.clone());
                if let Some(d) = decor {
                    *new.decor_mut() = d;
                }
                *item = toml_edit::Item::Value(new);
                old
            }
            None => {
                packages.insert(&pkg, toml_edit::value(version.clone()));
                None
            }
        };
        moved.push(PinMove {
            package: pkg,
            from: old,
            to: version,
        });
    }
    if let Some(rollouts) = doc.get_mut("rollouts").and_then(|r| r.as_table_like_mut()) {
        rollouts.remove(name);
        if rollouts.is_empty() {
            doc.remove("rollouts");
        }
    }
    Ok((doc.to_string(), moved))
}

/// What `stage` writes, and where.
#[derive(Default)]
pub struct Stage<'a> {
    pub name: &'a str,
    /// Only these packages (default: every pin with a security update).
    pub packages: &'a [String],
    pub hosts: &'a [String],
    pub rollout_roles: &'a [String],
    /// A stable share of the hosts the rollout's hosts and roles allow.
    pub percent: Option<i64>,
    /// `KEY.PATH=VALUE`, as typed: attributes for the hosts in the rollout.
    pub attributes: &'a [String],
    /// `recipe[...]` items appended to the run lists of the hosts in it.
    pub run_list: &'a [String],
}

/// One `--attribute KEY.PATH=VALUE`: the dotted path and the value, read
/// as TOML (`512`, `true`, `"x"`), else as the string typed.
fn assignment(text: &str) -> Result<(Vec<String>, toml::Value), PolicyError> {
    let bad = |why: &str| {
        PolicyError::new(format!("--attribute {text:?}: {why}"))
            .fix("write --attribute COOKBOOK.KEY=VALUE, e.g. --attribute mariadb.innodb_buffer_pool_mb=512")
    };
    let (key, value) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
    let path: Vec<String> = key.trim().split('.').map(str::to_string).collect();
    let bare = |k: &String| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !path.iter().all(bare) {
        return Err(bad(
            "the key must be dotted names of letters, digits, '_' and '-'",
        ));
    }
    if path.len() < 2 {
        return Err(bad("an attribute lives under its cookbook's name"));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((path, parsed))
}

impl Stage<'_> {
    /// Whether the rollout carries attributes or recipes: such a stage
    /// needs no target to read versions from.
    pub fn carries_change(&self) -> bool {
        !self.attributes.is_empty() || !self.run_list.is_empty()
    }

    /// The attributes as one table, each value typed.
    fn attribute_table(&self) -> Result<toml::Table, PolicyError> {
        let mut table = toml::Table::new();
        for a in self.attributes {
            let (path, value) = assignment(a)?;
            let (leaf, parents) = path.split_last().expect("two names at least");
            let mut at = &mut table;
            for p in parents {
                let next = at
                    .entry(p.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                at = next.as_table_mut().ok_or_else(|| {
                    PolicyError::new(format!("--attribute {a:?}: {p} is a value already"))
                        .fix("give each attribute once, at one depth")
                })?;
            }
            if at.insert(leaf.clone(), value).is_some() {
                return Err(PolicyError::new(format!("--attribute {a:?}: set twice"))
                    .fix("give each attribute once"));
            }
        }
        Ok(table)
    }
}

impl Stage<'_> {
    /// Refuses a stage that cannot be written into `file`, before anything
    /// is read from a target.
    pub fn check(&self, file: &WhitelistFile) -> Result<(), PolicyError> {
        if file.whitelist.rollouts.contains_key(self.name) {
            return Err(
                PolicyError::new(format!("a rollout {:?} exists already", self.name))
                    .in_file(&file.shown)
                    .fix(format!(
                        "choose another name, or promote it first: kiln whitelist promote {}",
                        self.name
                    )),
            );
        }
        if self.hosts.is_empty() && self.rollout_roles.is_empty() && self.percent.is_none() {
            return Err(
                PolicyError::new("a staged rollout needs hosts to go to first").fix(
                    "name canaries with --hosts 'web01.*', --roles canary and/or --percent 10",
                ),
            );
        }
        if let Some(p) = self.percent
            && !(0..=100).contains(&p)
        {
            return Err(PolicyError::new(format!("--percent {p} is outside 0-100"))
                .fix("give the share of hosts as a whole number from 0 to 100"));
        }
        self.attribute_table()?;
        Ok(())
    }
}

/// Appends the rollout table to the whitelist's text; with `release`, the
/// rollout matches hosts of that release only. `chosen` moves each pin
/// from its version in force to the staged one.
pub fn stage_text(
    text: &str,
    stage: &Stage,
    release: Option<&str>,
    chosen: &[PinMove],
) -> Result<String, EditError> {
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    if !doc.contains_key("rollouts") {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        doc["rollouts"] = toml_edit::Item::Table(t);
    }
    let rollouts = doc["rollouts"]
        .as_table_mut()
        .ok_or_else(|| EditError::NotATable("rollouts".into()))?;
    let mut table = toml_edit::Table::new();
    let list = |items: &[String]| {
        let mut a = toml_edit::Array::new();
        for i in items {
            a.push(i.as_str());
        }
        toml_edit::value(a)
    };
    if !stage.hosts.is_empty() {
        table["hosts"] = list(stage.hosts);
    }
    if !stage.rollout_roles.is_empty() {
        table["roles"] = list(stage.rollout_roles);
    }
    if let Some(r) = release {
        table["releases"] = list(&[r.to_string()]);
    }
    if let Some(p) = stage.percent {
        table["percent"] = toml_edit::value(p);
    }
    let mut said: Vec<String> = chosen
        .iter()
        .map(|m| {
            format!(
                "{} {} -> {}",
                m.package,
                m.from.as_deref().unwrap_or_default(),
                m.to
            )
        })
        .collect();
    if !chosen.is_empty() {
        let mut packages = toml_edit::InlineTable::new();
        for m in chosen {
            packages.insert(&m.package, m.to.as_str().into());
        }
        table["packages"] = toml_edit::value(packages);
    }
    if !stage.run_list.is_empty() {
        table["run_list"] = list(stage.run_list);
        said.extend(stage.run_list.iter().cloned());
    }
    if !stage.attributes.is_empty() {
        let attributes = stage
            .attribute_table()
            .map_err(|e| EditError::Attribute(e.to_string()))?;
        table["attributes"] = toml_edit::value(inline(&toml::Value::Table(attributes)));
        said.extend(stage.attributes.iter().map(|a| a.trim().to_string()));
    }
    table.decor_mut().set_prefix(format!(
        "\n# staged by kiln whitelist stage: {}\n",
        said.join(", ")
    ));
    rollouts.insert(stage.name, toml_edit::Item::Table(table));
    Ok(doc.to_string())
}

/// A value as TOML writes it on one line (tables inline).
pub fn inline(v: &toml::Value) -> toml_edit::Value {
    match v {
        toml::Value::String(s) => s.as_str().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d
            .to_string()
            .parse()
            .unwrap_or_else(|_| d.to_string().into()),
        toml::Value::Array(a) => a.iter().map(inline).collect::<toml_edit::Array>().into(),
        toml::Value::Table(t) => {
            let mut out = toml_edit::InlineTable::new();
            for (k, v) in t {
                out.insert(k, inline(v));
            }
            out.into()
        }
    }
}

/// Writes `chosen` into `file` as the rollout `stage`: the new text must
/// read back as a valid whitelist before it replaces the old.
pub fn write_stage(
    file: &WhitelistFile,
    stage: &Stage,
    release: Option<&str>,
    chosen: &[PinMove],
) -> Result<(), Error> {
    let new_text =
        stage_text(&file.text, stage, release, chosen).map_err(|e| e.in_file(&file.shown))?;
    Whitelist::parse(&new_text, file.shown.clone())?;
    file.write(&new_text)?;
    Ok(())
}

/// Writes a rollout that carries attributes or recipes (and no versions,
/// so no target is read). The new whitelist must pass what `kiln check`
/// asks of it, beyond what the old one already failed, before it is written.
pub fn stage_change(repo: &Repository, stage: &Stage) -> Result<(), Error> {
    let file = WhitelistFile::read(repo)?;
    stage.check(&file)?;
    let new_text = stage_text(&file.text, stage, None, &[]).map_err(|e| e.in_file(&file.shown))?;
    let new = Whitelist::parse(&new_text, file.shown.clone())?;
    let before: std::collections::BTreeSet<String> = file
        .whitelist
        .validate_in(repo)
        .iter()
        .map(ToString::to_string)
        .collect();
    let added: Vec<PolicyError> = new
        .validate_in(repo)
        .into_iter()
        .filter(|e| !before.contains(&e.to_string()))
        .collect();
    if !added.is_empty() {
        return Err(crate::error::PolicyErrors(added).into());
    }
    file.write(&new_text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(package: &str, from: &str, to: &str) -> PinMove {
        PinMove {
            package: package.into(),
            from: Some(from.into()),
            to: to.into(),
        }
    }

    #[test]
    fn stage_then_promote_round_trips_with_comments() {
        let text = "# Pins for the fleet.\n[packages]\n# the cache\nmemcached = \"1.6.18-1\"   # bookworm\nsudo = \"1.9\"\n";
        let chosen = vec![moved("memcached", "1.6.18-1", "1.6.18-1+deb12u1")];
        let staged = stage_text(
            text,
            &Stage {
                name: "security-1",
                packages: &[],
                hosts: &["web01.*".to_string()],
                rollout_roles: &["canary".to_string()],
                ..Stage::default()
            },
            None,
            &chosen,
        )
        .unwrap();
        assert!(staged.starts_with(text), "{staged}");
        let w = Whitelist::parse(&staged, "w".into()).unwrap();
        let r = &w.rollouts["security-1"];
        assert_eq!(r.hosts, ["web01.*"]);
        assert_eq!(r.roles, ["canary"]);
        assert_eq!(r.packages["memcached"].version, "1.6.18-1+deb12u1");
        assert!(
            staged.contains(
                "# staged by kiln whitelist stage: memcached 1.6.18-1 -> 1.6.18-1+deb12u1"
            )
        );
        let (promoted, _) = promote_text(&staged, "security-1", None).unwrap();
        assert!(
            promoted.starts_with("# Pins for the fleet.\n[packages]\n# the cache\nmemcached = \"1.6.18-1+deb12u1\"   # bookworm\nsudo = \"1.9\"\n"),
            "{promoted}"
        );
        assert!(!promoted.contains("rollouts"), "{promoted}");
    }

    #[test]
    fn promote_keeps_comments_and_layout() {
        let text = r#"# Pins for the fleet.
[packages]
# the cache
memcached = "1.6.18-1"   # bookworm
redis = "5:7.0.15-1"

# try the security update on canaries
[rollouts.mc-sec]
hosts = ["web01.*"]
packages = { memcached = "1.6.18-1+deb12u1", "libevent-2.1-7" = "2.1.12-stable-8" }

[rollouts.other]
roles = ["canary"]
packages = { redis = "5:7.0.15-1~deb12u1" }
"#;
        let (out, moved_pins) = promote_text(text, "mc-sec", None).unwrap();
        assert!(out.contains("# Pins for the fleet."));
        assert!(
            out.contains("# the cache\nmemcached = \"1.6.18-1+deb12u1\"   # bookworm"),
            "{out}"
        );
        assert!(
            out.contains("\"libevent-2.1-7\" = \"2.1.12-stable-8\"")
                || out.contains("libevent-2.1-7 = \"2.1.12-stable-8\""),
            "{out}"
        );
        assert!(!out.contains("mc-sec"));
        assert!(out.contains("[rollouts.other]"));
        assert_eq!(
            moved_pins[0],
            moved("memcached", "1.6.18-1", "1.6.18-1+deb12u1")
        );
        // Still a whitelist kiln reads.
        let w = Whitelist::parse(&out, "w".into()).unwrap();
        assert_eq!(w.packages["memcached"].version, "1.6.18-1+deb12u1");
    }

    #[test]
    fn a_release_rollout_is_staged_and_promoted_into_its_release() {
        let text = "[packages]\n\n[releases.bookworm.packages]\nmemcached = \"1.6.18-1\"\n\n[releases.trixie.packages]\n# 1.6.38 is trixie's\nmemcached = \"1.6.38-1\"\n";
        let chosen = vec![moved("memcached", "1.6.38-1", "1.6.38-1+deb13u1")];
        let stage = Stage {
            name: "mc",
            packages: &[],
            hosts: &["web01.*".to_string()],
            ..Stage::default()
        };
        let staged = stage_text(text, &stage, Some("trixie"), &chosen).unwrap();
        let w = Whitelist::parse(&staged, "w".into()).unwrap();
        assert_eq!(w.rollouts["mc"].releases, ["trixie"]);
        assert!(w.validate().is_empty());
        let (promoted, moved_pins) = promote_text(&staged, "mc", Some("trixie")).unwrap();
        assert_eq!(moved_pins[0].from.as_deref(), Some("1.6.38-1"));
        let w = Whitelist::parse(&promoted, "w".into()).unwrap();
        assert_eq!(
            w.releases["trixie"].packages["memcached"].version,
            "1.6.38-1+deb13u1"
        );
        assert_eq!(
            w.releases["bookworm"].packages["memcached"].version,
            "1.6.18-1"
        );
        assert!(w.rollouts.is_empty());
        assert!(
            promoted.contains("# 1.6.38 is trixie's\nmemcached = \"1.6.38-1+deb13u1\""),
            "{promoted}"
        );
    }

    #[test]
    fn a_staged_change_is_a_rollout_of_typed_attributes_and_recipes() {
        let text = "# fleet pins\n[packages]\nsudo = \"1.9\"\n";
        let stage = Stage {
            name: "bufpool",
            rollout_roles: &["db".to_string()],
            percent: Some(50),
            attributes: &[
                "mariadb.innodb_buffer_pool_mb=512".to_string(),
                "mariadb.bind_address = 0.0.0.0".to_string(),
                "app.debug=true".to_string(),
            ],
            run_list: &["recipe[mariadb::tuning]".to_string()],
            ..Stage::default()
        };
        let staged = stage_text(text, &stage, None, &[]).unwrap();
        assert!(staged.starts_with(text), "{staged}");
        let w = Whitelist::parse(&staged, "w".into()).unwrap();
        let r = &w.rollouts["bufpool"];
        assert_eq!(r.percent, Some(50));
        assert!(r.packages.is_empty());
        assert_eq!(r.run_list, ["recipe[mariadb::tuning]"]);
        let m = r.attributes["mariadb"].as_table().unwrap();
        assert_eq!(m["innodb_buffer_pool_mb"].as_integer(), Some(512));
        assert_eq!(m["bind_address"].as_str(), Some("0.0.0.0"));
        assert_eq!(r.attributes["app"]["debug"].as_bool(), Some(true));
        for bad in ["nokey", "buffer=1", "mariadb..x=1", "a b.c=1"] {
            let s = Stage {
                name: "x",
                hosts: &["h".to_string()],
                attributes: &[bad.to_string()],
                ..Stage::default()
            };
            assert!(s.attribute_table().is_err(), "{bad}");
        }
    }

    #[test]
    fn edit_errors_name_the_table_and_the_fix() {
        let e = promote_text("[packages]\n", "gone", None).unwrap_err();
        assert_eq!(e.to_string(), "no rollout \"gone\"");
        let text = "packages = 1\n[rollouts.r]\npackages = { a = \"1\" }\n";
        let e = promote_text(text, "r", None).unwrap_err();
        let shown = e.in_file(Path::new("whitelist.toml")).to_string();
        assert_eq!(
            shown,
            "whitelist.toml: [packages] is not a table\n  fix: make [packages] a table in the whitelist"
        );
    }
}
