//! `kiln whitelist explain | promote | audit | outdated | stage`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::engine::{self, Report};
use crate::error::{Error, PolicyError};
use crate::platform::archive::{self, Offer};
use crate::platform::dpkg::{self, Dpkg};
use crate::platform::facts::Facts;
use crate::platform::rootfs::{self, Overlay};
use crate::platform::siblings;
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::runlist::expand;
use crate::policy::whitelist::{Pin, Whitelist};
use crate::secrets::Placeholder;

/// For each package, the version a node gets and the rule it comes from.
/// With `siblings_of`, the release is that target's own; else `release`,
/// else every release the whitelist pins, one after the other.
pub fn explain(
    repo: &Path,
    fqdn: Option<&str>,
    roles: &[String],
    release: Option<&str>,
    siblings_of: Option<Target>,
    json: bool,
) -> Result<i32, Error> {
    let repo = Repository::open(repo)?;
    let wl = Whitelist::load(&repo)?;
    let own = siblings_of
        .as_ref()
        .map(|t| Facts::gather(t, None).codename)
        .or_else(|| Some(Facts::gather(&Target::host(), None).codename))
        .unwrap_or_default();
    let releases = match (&siblings_of, release) {
        (Some(_), None) => vec![own],
        _ => wl.releases_or(release, &own)?,
    };
    let mut all_json = serde_json::Map::new();
    for codename in &releases {
        let one = explain_release(
            &repo,
            &wl,
            fqdn,
            roles,
            codename,
            siblings_of.as_ref(),
            json,
        )?;
        all_json.insert(codename.clone(), one);
    }
    if json {
        // One release: its pins as before; several: keyed by codename.
        let value = if all_json.len() == 1 {
            all_json
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or_default()
        } else {
            serde_json::Value::Object(all_json)
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }
    Ok(0)
}

/// [`explain`] for one release: printed as text, or returned as JSON.
fn explain_release(
    repo: &Repository,
    wl: &Whitelist,
    fqdn: Option<&str>,
    roles: &[String],
    codename: &str,
    siblings_of: Option<&Target>,
    json: bool,
) -> Result<serde_json::Value, Error> {
    let items: Vec<String> = roles.iter().map(|r| format!("role[{r}]")).collect();
    let expanded = expand(repo, &items)?;
    let fqdn = fqdn.unwrap_or("");
    let mut pins = wl.resolve(fqdn, &expanded.role_names(), codename)?;
    if !roles.is_empty() {
        // The roles' own packages, from their compiled policy (a package
        // name may be a template): a pin no package of theirs uses is
        // another role's business.
        let node = engine::Node {
            fqdn: Some(fqdn.to_string()).filter(|f| !f.is_empty()),
            ..engine::Node::roles(roles).on(codename)
        };
        let facts = node.facts(&Target::host());
        let policy = engine::compile(repo, &node, &facts, &Placeholder)?;
        let used: BTreeSet<&str> = policy
            .resources
            .iter()
            .filter(|r| r.id.kind == "package")
            .map(|r| r.id.name.as_str())
            .collect();
        pins.retain(|name, _| used.contains(name.as_str()));
    }
    // The binary packages that follow each pin, from a target's apt index.
    let sibs = match siblings_of {
        Some(target) => {
            let list: Vec<(String, String)> = pins
                .iter()
                .map(|(n, p)| (n.clone(), p.version.clone()))
                .collect();
            let dpkg = Dpkg::read(target);
            let mut all = Vec::new();
            // One pin at a time: two pins of one source may differ on purpose
            // in a rollout, and each is explained on its own.
            for pin in list {
                all.extend(siblings::resolve(target, &[pin], &dpkg).map_err(Error::Target)?);
            }
            Some(all)
        }
        None => None,
    };
    if json {
        return Ok(match &sibs {
            Some(s) => serde_json::json!({"pins": pins, "siblings": s}),
            None => serde_json::to_value(&pins).unwrap_or_default(),
        });
    }
    let matched: Vec<&String> = wl
        .rollouts
        .iter()
        .filter(|(_, r)| Whitelist::matches(r, fqdn, &expanded.role_names(), codename))
        .map(|(n, _)| n)
        .collect();
    if !wl.releases.is_empty() {
        println!("release {codename}:");
    }
    let width = pins.keys().map(String::len).max().unwrap_or(7).max(7);
    println!("{:<width$}  {:<24}  rule", "package", "version");
    for (name, pin) in &pins {
        println!("{name:<width$}  {:<24}  {}", pin.version, pin.rule);
        for s in sibs.iter().flatten().filter(|s| &s.follows == name) {
            let now = match &s.installed {
                Some(v) if v == &s.version => format!("{} (installed)", s.version),
                Some(v) => format!("{v} -> {}", s.version),
                None => format!("{} (when installed)", s.version),
            };
            println!("  {} follows {name}: {now}", s.name);
        }
    }
    if !matched.is_empty() {
        let names: Vec<&str> = matched.iter().map(|s| s.as_str()).collect();
        println!("rollouts matching this node: {}", names.join(", "));
    }
    Ok(serde_json::Value::Null)
}

/// Moves a rollout's versions into the base pins and deletes the rollout,
/// keeping the file's comments and layout.
pub fn promote(repo: &Path, name: &str) -> Result<i32, Error> {
    let repo = Repository::open(repo)?;
    let path = repo.dir.join("whitelist.toml");
    let shown = repo.display_path("whitelist.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&shown))?;
    // Validate with the same parser converge uses before editing anything.
    let wl = Whitelist::parse(&text, shown.clone())?;
    if !wl.rollouts.contains_key(name) {
        let known: Vec<&str> = wl.rollouts.keys().map(String::as_str).collect();
        return Err(PolicyError::new(format!("no rollout {name:?}"))
            .in_file(&shown)
            .fix(if known.is_empty() {
                "the whitelist has no [rollouts.*] tables".to_string()
            } else {
                format!("promote one of: {}", known.join(", "))
            })
            .into());
    }
    // A rollout of one pinned release is promoted into that release's pins.
    let rollout = &wl.rollouts[name];
    let into = match rollout.releases.as_slice() {
        _ if wl.releases.is_empty() => None,
        [] => None,
        [one] => Some(one.as_str()),
        _ => {
            return Err(PolicyError::new(format!(
                "rollout {name:?} matches several releases ({}): their pins differ, so it has no one table to go into",
                rollout.releases.join(", ")
            ))
            .in_file(&shown)
            .at_line(rollout.line, None)
            .fix("split it into one rollout per release (releases = [\"trixie\"]), then promote each")
            .into());
        }
    };
    let (new_text, moved) =
        promote_text(&text, name, into).map_err(|e| PolicyError::new(e).in_file(&shown))?;
    rewrite(&path, &new_text)?;
    for (pkg, from, to) in &moved {
        match from {
            Some(f) => println!("  {pkg}: {f} -> {to}"),
            None => println!("  {pkg}: {to} (new pin)"),
        }
    }
    println!(
        "kiln whitelist: promoted rollout {name} ({} package(s)) into {}",
        moved.len(),
        into.map_or("[packages]".to_string(), |r| format!(
            "[releases.{r}.packages]"
        ))
    );
    Ok(0)
}

/// Replaces the whitelist file atomically, keeping its mode.
fn rewrite(path: &Path, text: &str) -> Result<(), crate::error::RunError> {
    crate::policy::files::replace(path, text.as_bytes())
        .map_err(|e| crate::error::RunError::io("write", path.display(), e))
}

type Moved = Vec<(String, Option<String>, String)>;

/// The edit itself, on the text: `(new text, [(package, old pin, new pin)])`.
/// With `release`, the versions go into `[releases.RELEASE.packages]`.
pub fn promote_text(
    text: &str,
    name: &str,
    release: Option<&str>,
) -> Result<(String, Moved), String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let rollout_pkgs: Vec<(String, toml_edit::Value)> = {
        let rollout = doc
            .get("rollouts")
            .and_then(|r| r.get(name))
            .ok_or_else(|| format!("no rollout {name:?}"))?;
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
    let packages = match release {
        None => {
            if !doc.contains_key("packages") {
                doc["packages"] = toml_edit::table();
            }
            doc["packages"]
                .as_table_like_mut()
                .ok_or("[packages] is not a table")?
        }
        Some(r) => {
            let releases = doc
                .get_mut("releases")
                .and_then(|t| t.as_table_like_mut())
                .ok_or("[releases] is not a table")?;
            let table = releases
                .get_mut(r)
                .and_then(|t| t.as_table_like_mut())
                .ok_or_else(|| format!("[releases.{r}] is not a table"))?;
            if table.get("packages").is_none() {
                table.insert("packages", toml_edit::table());
            }
            table
                .get_mut("packages")
                .and_then(|t| t.as_table_like_mut())
                .ok_or_else(|| format!("[releases.{r}.packages] is not a table"))?
        }
    };
    let mut moved = Vec::new();
    for (pkg, value) in rollout_pkgs {
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
        moved.push((pkg, old, version));
    }
    if let Some(rollouts) = doc.get_mut("rollouts").and_then(|r| r.as_table_like_mut()) {
        rollouts.remove(name);
        if rollouts.is_empty() {
            doc.remove("rollouts");
        }
    }
    Ok((doc.to_string(), moved))
}

/// Findings of `audit`.
#[derive(Debug, serde::Serialize)]
pub struct Finding {
    pub package: String,
    pub problem: String,
}

/// The target whose packages and sources `audit`, `outdated` and `stage`
/// read: a directory tree or the running system, and the node it is.
pub struct Node<'a> {
    pub root: Option<&'a PathBuf>,
    /// Default: the fqdn of the target's last kiln run.
    pub fqdn: Option<&'a str>,
    /// Default: the roles of the target's last kiln run.
    pub roles: &'a [String],
    /// The release the target must run (default: whatever it runs).
    pub release: Option<&'a str>,
}

/// The policy compiled for a target: its roles and fqdn from the
/// arguments, else from the target's last kiln run.
/// Also returns the target's release (its codename).
///
/// With `archive_only` (what the archive offers, not what is installed), a
/// `--release` other than this system's, without `--root`, reads a
/// throwaway root of that release, kept in `scratch` while it is read.
fn target_policy(
    repo: &Path,
    node: &Node,
    archive_only: bool,
    scratch: &mut Option<Overlay>,
) -> Result<(Target, String, engine::Policy), Error> {
    let Node {
        root,
        fqdn,
        roles,
        release,
    } = *node;
    let repo = Repository::open(repo)?;
    let target = match (root, release) {
        (Some(r), _) => Target::at_root_read_only(r),
        (None, Some(r))
            if archive_only
                && !roles.is_empty()
                && Facts::gather(&Target::host(), None).codename != r =>
        {
            let base = rootfs::base_root(&rootfs::TEST_ROOT.on(r)?, &|m| {
                eprintln!("kiln whitelist: {m}")
            })?;
            let overlay = scratch.insert(Overlay::new(
                &base,
                &std::env::temp_dir().join("kiln-whitelist"),
                r,
            )?);
            Target::at_root(overlay.root())
        }
        (None, _) => Target::host(),
    };
    // The node as kiln last converged it, unless told otherwise.
    let last = Report::load_last(&target)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut roles: Vec<String> = roles.to_vec();
    if roles.is_empty() {
        // Only the top-level roles matter; expansion finds the rest again.
        roles = last.roles;
    }
    if roles.is_empty() {
        return Err(PolicyError::new(
            "no role to compare against: this target has no kiln run recorded",
        )
        .fix("pass --role NAME (and --fqdn) as for kiln converge")
        .into());
    }
    let fqdn = fqdn
        .map(str::to_string)
        .or_else(|| Some(last.fqdn).filter(|f| !f.is_empty()));
    let node = engine::Node {
        fqdn,
        ..engine::Node::roles(&roles)
    };
    let facts = node.facts(&target);
    if let Some(r) = release
        && r != facts.codename
    {
        return Err(PolicyError::new(format!(
            "the target runs {:?}, not {r:?}: its pins are those of its own release",
            facts.codename
        ))
        .fix(format!(
            "point --root at a {r} tree, or drop --root (outdated and stage with --role read a throwaway {r} root), or drop --release"
        ))
        .into());
    }
    let policy = engine::compile(&repo, &node, &facts, &Placeholder)?;
    Ok((target, facts.codename, policy))
}

/// Compares a target's packages with its pins, and lists what was installed
/// by hand since kiln first ran there.
pub fn audit(repo: &Path, node: &Node, json: bool) -> Result<i32, Error> {
    let (target, release, policy) = target_policy(repo, node, false, &mut None)?;
    let managed: BTreeSet<String> = installed_pins(&policy).into_keys().collect();
    let dpkg = Dpkg::read(&target);
    let mut findings = Vec::new();
    for name in &managed {
        let Some(pin) = policy.pins.get(name) else {
            continue;
        };
        let problem = match dpkg.installed(name) {
            None => format!("pinned {} ({}), not installed", pin.version, pin.rule),
            Some(i) if i.version != pin.version => {
                format!(
                    "pinned {} ({}), installed {}",
                    pin.version, pin.rule, i.version
                )
            }
            Some(i) if !i.is_held() => format!("at its pin {} but not held", pin.version),
            Some(_) => continue,
        };
        findings.push(Finding {
            package: name.clone(),
            problem,
        });
    }
    // Siblings that left their pin's upload (moved by hand, or by apt).
    let at_pin: Vec<(String, String)> = installed_pins(&policy)
        .into_iter()
        .filter(|(n, p)| dpkg.installed(n).is_some_and(|i| i.version == p.version))
        .map(|(n, p)| (n, p.version))
        .collect();
    for pin in at_pin {
        for s in siblings::resolve(&target, &[pin], &dpkg).unwrap_or_default() {
            let Some(installed) = &s.installed else {
                continue;
            };
            let held = dpkg.installed(&s.name).is_some_and(|i| i.is_held());
            if installed != &s.version || !held {
                findings.push(Finding {
                    package: s.name.clone(),
                    problem: format!(
                        "follows {} at {}, installed {installed}{}",
                        s.follows,
                        s.version,
                        if held { "" } else { ", not held" }
                    ),
                });
            }
        }
    }
    // By hand: installed on request (not as a dependency), needed by no
    // other package, not part of the base system, managed by nothing, and
    // installed after kiln first ran there: what the image came with
    // (openssh-server, ca-certificates) was there before kiln and is not
    // "by hand". dpkg's log says when each package was installed (an
    // upgrade is not an install); a package whose install left the logs
    // falls back to its file list's mtime.
    let since = Report::first_run(&target).map(|t| t as i64);
    let logged = dpkg::install_times(&target);
    let auto = auto_installed(&target);
    let needed: BTreeSet<&str> = dpkg
        .packages
        .values()
        .filter(|p| p.is_installed())
        .flat_map(|p| p.depends.iter().map(String::as_str))
        .collect();
    let mut by_hand: BTreeMap<&String, &str> = BTreeMap::new();
    for (name, p) in &dpkg.packages {
        let base = matches!(p.priority.as_str(), "required" | "important");
        if p.is_installed()
            && !base
            && !managed.contains(name)
            && !auto.contains(name)
            && !needed.contains(name.as_str())
        {
            by_hand.insert(name, &p.version);
        }
    }
    let unlogged: Vec<&str> = by_hand
        .keys()
        .filter(|n| !logged.contains_key(n.as_str()))
        .map(|n| n.as_str())
        .collect();
    let unpacked = dpkg::unpack_times(&target, &unlogged);
    by_hand.retain(|name, _| {
        let when = logged.get(name.as_str()).or(unpacked.get(name.as_str()));
        match (since, when) {
            // Kiln never ran here: everything predates it.
            (None, _) => false,
            (Some(since), Some(&t)) => t >= since,
            // No trace of when: said, rather than hidden.
            (Some(_), None) => true,
        }
    });
    for (name, version) in by_hand {
        findings.push(Finding {
            package: name.clone(),
            problem: format!("installed by hand ({version}), managed by no package resource"),
        });
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else {
        for f in &findings {
            println!("  {}: {}", f.package, f.problem);
        }
        println!(
            "kiln whitelist audit: release {release}, {} managed package(s), {} finding(s)",
            managed.len(),
            findings.len()
        );
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}

/// The packages a policy installs, with their pins.
fn installed_pins(policy: &engine::Policy) -> BTreeMap<String, Pin> {
    policy
        .resources
        .iter()
        .filter(|r| r.id.kind == "package" && r.actions.iter().any(|a| a == "install"))
        .filter_map(|r| Some((r.id.name.clone(), policy.pins.get(&r.id.name)?.clone())))
        .collect()
}

/// One pin in force on a target, against what its sources offer.
#[derive(Debug, serde::Serialize)]
pub struct Outdated {
    pub package: String,
    pub pin: String,
    pub rule: String,
    pub installed: Option<String>,
    /// Newer than the pin, newest first.
    pub newer: Vec<Offer>,
    /// The newest version a security archive offers above the pin.
    pub security_update: Option<String>,
    /// No configured source offers the pinned version any more.
    pub vanished: bool,
    /// Every version the sources offer, newest first.
    pub offered: Vec<Offer>,
}

fn outdated_rows(target: &Target, policy: &engine::Policy) -> Result<Vec<Outdated>, Error> {
    let pins = installed_pins(policy);
    let names: Vec<String> = pins.keys().cloned().collect();
    let offers = archive::offers(target, &names).map_err(Error::Target)?;
    let dpkg = Dpkg::read(target);
    Ok(pins
        .into_iter()
        .map(|(package, pin)| {
            let offered = offers.get(&package).cloned().unwrap_or_default();
            let newer: Vec<Offer> = offered
                .iter()
                .filter(|o| archive::compare(&o.version, &pin.version).is_gt())
                .cloned()
                .collect();
            Outdated {
                installed: dpkg
                    .installed(&package)
                    .filter(|i| i.is_installed())
                    .map(|i| i.version.clone()),
                security_update: newer
                    .iter()
                    .find(|o| o.is_security())
                    .map(|o| o.version.clone()),
                vanished: !offered.iter().any(|o| o.version == pin.version),
                newer,
                offered,
                package,
                pin: pin.version,
                rule: pin.rule,
            }
        })
        .collect())
}

/// For each pin in force on a target: the newer versions its sources
/// offer (security updates marked), and pins no source offers any more.
pub fn outdated(repo: &Path, node: &Node, json: bool) -> Result<i32, Error> {
    let mut scratch = None;
    let (target, release, policy) = target_policy(repo, node, true, &mut scratch)?;
    let rows = outdated_rows(&target, &policy)?;
    let vanished = rows.iter().filter(|r| r.vanished).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        for r in &rows {
            let newer: Vec<String> = r
                .newer
                .iter()
                .map(|o| {
                    let mark = if o.is_security() { " (security)" } else { "" };
                    format!("{}{mark} from {}", o.version, o.suites.join(", "))
                })
                .collect();
            let state = if r.vanished {
                let all: Vec<&str> = r.offered.iter().map(|o| o.version.as_str()).collect();
                format!(
                    "VANISHED: no source offers {} (offered: {})",
                    r.pin,
                    if all.is_empty() {
                        "nothing".to_string()
                    } else {
                        all.join(", ")
                    }
                )
            } else if newer.is_empty() {
                "current".to_string()
            } else {
                format!("newer: {}", newer.join("; "))
            };
            println!("  {} {} ({}): {state}", r.package, r.pin, r.rule);
        }
        let security = rows.iter().filter(|r| r.security_update.is_some()).count();
        println!(
            "kiln whitelist outdated: release {release}, {} pin(s), {security} with a security update, {vanished} vanished",
            rows.len()
        );
        if security > 0 {
            println!("  stage them for canaries: kiln whitelist stage NAME --hosts 'GLOB'");
        }
    }
    Ok(if vanished == 0 { 0 } else { 1 })
}

/// What `stage` writes, and where.
pub struct Stage<'a> {
    pub name: &'a str,
    /// Only these packages (default: every pin with a security update).
    pub packages: &'a [String],
    pub hosts: &'a [String],
    pub rollout_roles: &'a [String],
}

/// Writes `[rollouts.NAME]` with newer versions from the target's sources:
/// by default every security update of a pin in force, else the newest
/// version of each named package. Keeps the file's comments and layout.
pub fn stage(repo_dir: &Path, node: &Node, stage: &Stage) -> Result<i32, Error> {
    let repo = Repository::open(repo_dir)?;
    let path = repo.dir.join("whitelist.toml");
    let shown = repo.display_path("whitelist.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PolicyError::new(format!("cannot read: {e}")).in_file(&shown))?;
    let wl = Whitelist::parse(&text, shown.clone())?;
    if wl.rollouts.contains_key(stage.name) {
        return Err(
            PolicyError::new(format!("a rollout {:?} exists already", stage.name))
                .in_file(&shown)
                .fix(format!(
                    "choose another name, or promote it first: kiln whitelist promote {}",
                    stage.name
                ))
                .into(),
        );
    }
    if stage.hosts.is_empty() && stage.rollout_roles.is_empty() {
        return Err(
            PolicyError::new("a staged rollout needs hosts to go to first")
                .fix("name canaries with --hosts 'web01.*' and/or --roles canary")
                .into(),
        );
    }
    let mut scratch = None;
    let (target, release, policy) = target_policy(repo_dir, node, true, &mut scratch)?;
    let rows = outdated_rows(&target, &policy)?;
    let mut chosen: Vec<(String, String, String)> = Vec::new();
    for wanted in stage.packages {
        let Some(row) = rows.iter().find(|r| &r.package == wanted) else {
            let known: Vec<&str> = rows.iter().map(|r| r.package.as_str()).collect();
            return Err(
                PolicyError::new(format!("{wanted} is not a package this node installs"))
                    .fix(format!("stage one of: {}", known.join(", ")))
                    .into(),
            );
        };
        match row.newer.first() {
            Some(o) => chosen.push((row.package.clone(), row.pin.clone(), o.version.clone())),
            None => println!("  {wanted}: {} is the newest version offered", row.pin),
        }
    }
    if stage.packages.is_empty() {
        for r in &rows {
            if let Some(v) = &r.security_update {
                chosen.push((r.package.clone(), r.pin.clone(), v.clone()));
            }
        }
    }
    if chosen.is_empty() {
        println!("kiln whitelist stage: nothing newer to stage; whitelist.toml unchanged");
        return Ok(0);
    }
    // Versions read from one release's archive hold for that release only.
    let only = (!wl.releases.is_empty()).then_some(release.as_str());
    let new_text =
        stage_text(&text, stage, only, &chosen).map_err(|e| PolicyError::new(e).in_file(&shown))?;
    // What is written must read back as a valid whitelist.
    Whitelist::parse(&new_text, shown.clone())?;
    rewrite(&path, &new_text).map_err(|e| Error::Target(e.to_string()))?;
    for (package, from, to) in &chosen {
        println!("  {package}: {from} -> {to}");
    }
    println!(
        "kiln whitelist: staged rollout {} for release {release} ({} package(s)); converge the canaries, then: kiln whitelist promote {}",
        stage.name,
        chosen.len(),
        stage.name
    );
    Ok(0)
}

/// Appends the rollout table to the whitelist's text; with `release`, the
/// rollout matches hosts of that release only.
pub fn stage_text(
    text: &str,
    stage: &Stage,
    release: Option<&str>,
    chosen: &[(String, String, String)],
) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    if !doc.contains_key("rollouts") {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        doc["rollouts"] = toml_edit::Item::Table(t);
    }
    let rollouts = doc["rollouts"]
        .as_table_mut()
        .ok_or("rollouts is not a table of [rollouts.NAME] tables")?;
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
    let mut packages = toml_edit::InlineTable::new();
    for (package, _, version) in chosen {
        packages.insert(package, version.as_str().into());
    }
    table["packages"] = toml_edit::value(packages);
    table.decor_mut().set_prefix(format!(
        "\n# staged by kiln whitelist stage: {}\n",
        chosen
            .iter()
            .map(|(p, from, to)| format!("{p} {from} -> {to}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    rollouts.insert(stage.name, toml_edit::Item::Table(table));
    Ok(doc.to_string())
}

/// Writes an apt repository of the pinned versions (and each rollout's) of
/// the packages `roles` install (default: every role), with their siblings
/// and what they pull in beyond a base Debian root.
/// One release's pins: a mirror is read from that release's archive, and
/// goes under `[releases.CODENAME.fallback]` when the fleet runs several.
pub fn mirror(
    repo_dir: &Path,
    out: &Path,
    roles: &[String],
    release: Option<&str>,
) -> Result<i32, Error> {
    let repo = Repository::open(repo_dir)?;
    let wl = Whitelist::load(&repo)?;
    let roles = if roles.is_empty() {
        repo.names_in("roles")
    } else {
        roles.to_vec()
    };
    let on = |node: engine::Node| match release {
        Some(r) => node.on(r),
        None => node,
    };
    let facts = on(engine::Node::default()).facts(&Target::host());
    wl.release(&facts.codename)?;
    let mut packages: BTreeSet<String> = BTreeSet::new();
    for role in &roles {
        let node = on(engine::Node::role(role));
        let policy = engine::compile(&repo, &node, &node.facts_from(&facts), &Placeholder)?;
        packages.extend(installed_pins(&policy).into_keys());
    }
    let pick =
        |versions: &BTreeMap<String, crate::policy::whitelist::Entry>| -> Vec<(String, String)> {
            packages
                .iter()
                .filter_map(|p| Some((p.clone(), versions.get(p)?.version.clone())))
                .collect()
        };
    // The pins of that release: the mirror is built from its archive.
    let mut base = wl.packages.clone();
    if let Some(r) = wl.release(&facts.codename)? {
        base.extend(r.packages.clone());
    }
    let mut sets = vec![pick(&base)];
    for r in wl
        .rollouts
        .values()
        .filter(|r| r.releases.is_empty() || r.releases.contains(&facts.codename))
    {
        let mut set: BTreeMap<String, String> = sets[0].iter().cloned().collect();
        set.extend(pick(&r.packages));
        let set: Vec<(String, String)> = set.into_iter().collect();
        if !sets.contains(&set) {
            sets.push(set);
        }
    }
    let written = crate::platform::mirror::write(out, &facts.codename, &sets, &|m| {
        eprintln!("kiln whitelist mirror: {m}")
    })
    .map_err(Error::Target)?;
    println!(
        "kiln whitelist mirror: {} package file(s) for {} pinned package(s) of {} role(s) in {}",
        written.len(),
        packages.len(),
        roles.len(),
        out.display()
    );
    println!(
        "  publish {} with any HTTP server, and name it in whitelist.toml:\n  \
         [[fallback.mirrors]]\n  uri = \"https://apt.example.com/kiln\"\n  \
         key = \"keys/mirror.asc\"   # after signing: gpg --clearsign -o InRelease Release",
        out.display()
    );
    Ok(0)
}

/// Packages apt installed as dependencies (`Auto-Installed: 1`).
fn auto_installed(target: &Target) -> BTreeSet<String> {
    let text = target
        .fs()
        .read_to_string("/var/lib/apt/extended_states")
        .unwrap_or_default();
    text.split("\n\n")
        .filter(|s| s.lines().any(|l| l.trim() == "Auto-Installed: 1"))
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Package: ").map(|p| p.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_then_promote_round_trips_with_comments() {
        let text = "# Pins for the fleet.\n[packages]\n# the cache\nmemcached = \"1.6.18-1\"   # bookworm\nsudo = \"1.9\"\n";
        let chosen = vec![(
            "memcached".to_string(),
            "1.6.18-1".to_string(),
            "1.6.18-1+deb12u1".to_string(),
        )];
        let staged = stage_text(
            text,
            &Stage {
                name: "security-1",
                packages: &[],
                hosts: &["web01.*".to_string()],
                rollout_roles: &["canary".to_string()],
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
        let (out, moved) = promote_text(text, "mc-sec", None).unwrap();
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
            moved[0],
            (
                "memcached".into(),
                Some("1.6.18-1".into()),
                "1.6.18-1+deb12u1".into()
            )
        );
        // Still a whitelist kiln reads.
        let w = Whitelist::parse(&out, "w".into()).unwrap();
        assert_eq!(w.packages["memcached"].version, "1.6.18-1+deb12u1");
    }

    #[test]
    fn a_release_rollout_is_staged_and_promoted_into_its_release() {
        let text = "[packages]\n\n[releases.bookworm.packages]\nmemcached = \"1.6.18-1\"\n\n[releases.trixie.packages]\n# 1.6.38 is trixie's\nmemcached = \"1.6.38-1\"\n";
        let chosen = vec![(
            "memcached".to_string(),
            "1.6.38-1".to_string(),
            "1.6.38-1+deb13u1".to_string(),
        )];
        let stage = Stage {
            name: "mc",
            packages: &[],
            hosts: &["web01.*".to_string()],
            rollout_roles: &[],
        };
        let staged = stage_text(text, &stage, Some("trixie"), &chosen).unwrap();
        let w = Whitelist::parse(&staged, "w".into()).unwrap();
        assert_eq!(w.rollouts["mc"].releases, ["trixie"]);
        assert!(w.validate().is_empty());
        let (promoted, moved) = promote_text(&staged, "mc", Some("trixie")).unwrap();
        assert_eq!(moved[0].1.as_deref(), Some("1.6.38-1"));
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
}
