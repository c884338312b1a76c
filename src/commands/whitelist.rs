//! `kiln whitelist explain | promote | audit`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::engine::{self, Request};
use crate::error::{Error, PolicyError};
use crate::platform::dpkg::Dpkg;
use crate::platform::facts::Facts;
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::runlist::expand;
use crate::policy::whitelist::Whitelist;
use crate::resource::fsmeta::{Ids, atomic_write};

/// For each package, the version a node gets and the rule it comes from.
pub fn explain(
    repo: &Path,
    fqdn: Option<&str>,
    roles: &[String],
    json: bool,
) -> Result<i32, Error> {
    let repo = Repository::open(repo)?;
    let wl = Whitelist::load(&repo)?;
    let items: Vec<String> = roles.iter().map(|r| format!("role[{r}]")).collect();
    let expanded = expand(&repo, &items)?;
    let fqdn = fqdn.unwrap_or("");
    let pins = wl.resolve(fqdn, &expanded.role_names())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&pins).unwrap_or_default()
        );
        return Ok(0);
    }
    let matched: Vec<&String> = wl
        .rollouts
        .iter()
        .filter(|(_, r)| Whitelist::matches(r, fqdn, &expanded.role_names()))
        .map(|(n, _)| n)
        .collect();
    let width = pins.keys().map(String::len).max().unwrap_or(7).max(7);
    println!("{:<width$}  {:<24}  rule", "package", "version");
    for (name, pin) in &pins {
        println!("{name:<width$}  {:<24}  {}", pin.version, pin.rule);
    }
    if !matched.is_empty() {
        let names: Vec<&str> = matched.iter().map(|s| s.as_str()).collect();
        println!("rollouts matching this node: {}", names.join(", "));
    }
    Ok(0)
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
    let (new_text, moved) =
        promote_text(&text, name).map_err(|e| PolicyError::new(e).in_file(&shown))?;
    atomic_write(&path, new_text.as_bytes(), file_mode(&path), Ids::default())?;
    for (pkg, from, to) in &moved {
        match from {
            Some(f) => println!("  {pkg}: {f} -> {to}"),
            None => println!("  {pkg}: {to} (new pin)"),
        }
    }
    println!(
        "kiln whitelist: promoted rollout {name} ({} package(s)) into [packages]",
        moved.len()
    );
    Ok(0)
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0o644, |m| m.mode() & 0o7777)
}

type Moved = Vec<(String, Option<String>, String)>;

/// The edit itself, on the text: `(new text, [(package, old pin, new pin)])`.
pub fn promote_text(text: &str, name: &str) -> Result<(String, Moved), String> {
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
    if !doc.contains_key("packages") {
        doc["packages"] = toml_edit::table();
    }
    let packages = doc["packages"]
        .as_table_like_mut()
        .ok_or("[packages] is not a table")?;
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

/// Compares a target's packages with its pins, and lists what was installed by hand.
pub fn audit(
    repo: &Path,
    root: Option<&PathBuf>,
    fqdn: Option<&str>,
    roles: &[String],
    json: bool,
) -> Result<i32, Error> {
    let repo = Repository::open(repo)?;
    let target = match root {
        Some(r) => Target::at_root(r),
        None => Target::host(),
    };
    // The node as kiln last converged it, unless told otherwise.
    let last: serde_json::Value =
        std::fs::read_to_string(target.path("/var/lib/kiln/last_run.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let mut roles: Vec<String> = roles.to_vec();
    if roles.is_empty()
        && let Some(r) = last["roles"].as_array()
    {
        // Only the top-level roles matter; expansion finds the rest again.
        roles = r
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
    }
    if roles.is_empty() {
        return Err(PolicyError::new(
            "no role to audit against: this target has no kiln run recorded",
        )
        .fix("pass --role NAME (and --fqdn) as for kiln converge")
        .into());
    }
    let fqdn = fqdn
        .map(str::to_string)
        .or_else(|| last["fqdn"].as_str().map(str::to_string));
    let facts = Facts::gather(&target, fqdn.as_deref());
    let req = Request {
        run_list: roles.iter().map(|r| format!("role[{r}]")).collect(),
        ..Request::default()
    };
    let policy = engine::compile(&repo, &req, &facts)?;
    let managed: BTreeSet<String> = policy
        .resources
        .iter()
        .filter(|r| r.id.kind == "package" && r.actions.iter().any(|a| a == "install"))
        .map(|r| r.id.name.clone())
        .collect();
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
    // By hand: installed on request (not as a dependency), needed by no
    // other package, not part of the base system, and managed by nothing.
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
            "kiln whitelist audit: {} managed package(s), {} finding(s)",
            managed.len(),
            findings.len()
        );
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}

/// Packages apt installed as dependencies (`Auto-Installed: 1`).
fn auto_installed(target: &Target) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(target.path("/var/lib/apt/extended_states")).unwrap_or_default();
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
        let (out, moved) = promote_text(text, "mc-sec").unwrap();
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
}
