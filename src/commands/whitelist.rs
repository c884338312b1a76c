//! `kiln whitelist explain | promote | audit | outdated | stage | mirror`:
//! each asks [`crate::pins`] or [`crate::policy::whitelist_edit`] and
//! prints the answer.

use std::path::Path;

use crate::error::Error;
use crate::pins::{self, Explained};
use crate::platform::target::Target;
use crate::policy::Repository;
use crate::policy::whitelist_edit;

/// The name `cli.rs` builds it by.
pub use crate::pins::TargetNode as Node;
pub use crate::policy::whitelist_edit::Stage;

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
    let question = pins::explain(repo, fqdn, roles, release, siblings_of.as_ref())?;
    let mut all_json = serde_json::Map::new();
    for codename in &question.releases {
        let one = question.release(codename)?;
        if json {
            all_json.insert(codename.clone(), explained_json(&one));
        } else {
            print_explained(&one);
        }
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

fn explained_json(e: &Explained) -> serde_json::Value {
    match &e.siblings {
        Some(s) => serde_json::json!({"pins": e.pins, "siblings": s}),
        None => serde_json::to_value(&e.pins).unwrap_or_default(),
    }
}

fn print_explained(e: &Explained) {
    if e.per_release {
        println!("release {}:", e.release);
    }
    let width = e.pins.keys().map(String::len).max().unwrap_or(7).max(7);
    println!("{:<width$}  {:<24}  rule", "package", "version");
    for (name, pin) in &e.pins {
        println!("{name:<width$}  {:<24}  {}", pin.version, pin.rule);
        for s in e.siblings.iter().flatten().filter(|s| &s.follows == name) {
            let now = match &s.installed {
                Some(v) if v == &s.version => format!("{} (installed)", s.version),
                Some(v) => format!("{v} -> {}", s.version),
                None => format!("{} (when installed)", s.version),
            };
            println!("  {} follows {name}: {now}", s.name);
        }
    }
    if !e.rollouts.is_empty() {
        println!("rollouts matching this node: {}", e.rollouts.join(", "));
    }
}

/// Which hosts of an inventory a rollout reaches, each with the reason.
pub fn explain_rollout(
    repo: &Path,
    name: &str,
    inventory: &Path,
    release: Option<&str>,
    json: bool,
) -> Result<i32, Error> {
    let repo = Repository::open(repo)?;
    let inv = crate::fleet::inventory::Inventory::load(inventory)?;
    let hosts: Vec<(String, Vec<String>)> = inv
        .hosts
        .iter()
        .map(|h| (h.fqdn.clone(), h.roles.clone()))
        .collect();
    let found = crate::policy::rollout::explain(&repo, name, &hosts, release)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).unwrap_or_default()
        );
        return Ok(0);
    }
    let width = found.hosts.iter().map(|h| h.fqdn.len()).max().unwrap_or(4);
    for h in &found.hosts {
        let state = if h.is_in { "in " } else { "out" };
        println!("  {state}  {:<width$}  {}", h.fqdn, h.reason);
    }
    let inside = found.hosts.iter().filter(|h| h.is_in).count();
    println!(
        "kiln whitelist explain: {inside} of {} host(s) in rollout {name}{}",
        found.hosts.len(),
        found
            .percent
            .map_or(String::new(), |p| format!(" (percent = {p})"))
    );
    if !found.unasked_releases.is_empty() {
        println!(
            "  the rollout reaches hosts of {} only: those listed in are in when they run it (--release decides)",
            found.unasked_releases.join(", ")
        );
    }
    Ok(0)
}

/// Moves a rollout's versions into the base pins and deletes the rollout,
/// keeping the file's comments and layout.
pub fn promote(
    repo: &Path,
    name: &str,
    to: Option<&crate::policy::rollout_edit::Destination>,
) -> Result<i32, Error> {
    let repo = Repository::open(repo)?;
    let done = whitelist_edit::promote(&repo, name, to)?;
    if let Some(c) = &done.carried {
        for a in &c.attributes {
            println!("  attribute {a} -> {}", c.shown.display());
        }
        for r in &c.recipes {
            println!("  {r} -> {} run_list", c.shown.display());
        }
    }
    for m in &done.moved {
        match &m.from {
            Some(f) => println!("  {}: {f} -> {}", m.package, m.to),
            None => println!("  {}: {} (new pin)", m.package, m.to),
        }
    }
    let pins = done.into.as_ref().map_or("[packages]".to_string(), |r| {
        format!("[releases.{r}.packages]")
    });
    match &done.carried {
        Some(c) => println!(
            "kiln whitelist: promoted rollout {name} ({} package(s) into {pins}, {} attribute(s) and {} recipe(s) into {}); the rollout is deleted",
            done.moved.len(),
            c.attributes.len(),
            c.recipes.len(),
            c.shown.display()
        ),
        None => println!(
            "kiln whitelist: promoted rollout {name} ({} package(s)) into {pins}",
            done.moved.len()
        ),
    }
    Ok(0)
}

/// Compares a target's packages with its pins, and lists what was installed
/// by hand since kiln first ran there.
pub fn audit(repo: &Path, node: &Node, json: bool) -> Result<i32, Error> {
    let audit = pins::audit(repo, node)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&audit.findings).unwrap_or_default()
        );
    } else {
        for f in &audit.findings {
            println!("  {}: {}", f.package, f.problem);
        }
        println!(
            "kiln whitelist audit: release {}, {} managed package(s), {} finding(s)",
            audit.release,
            audit.managed,
            audit.findings.len()
        );
    }
    Ok(if audit.findings.is_empty() { 0 } else { 1 })
}

/// For each pin in force on a target: the newer versions its sources
/// offer (security updates marked), and pins no source offers any more.
pub fn outdated(repo: &Path, node: &Node, json: bool) -> Result<i32, Error> {
    let found = pins::outdated(repo, node, &|m| eprintln!("kiln whitelist: {m}"))?;
    let vanished = found.vanished();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found.rows).unwrap_or_default()
        );
    } else {
        for r in &found.rows {
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
        let security = found.security();
        println!(
            "kiln whitelist outdated: release {}, {} pin(s), {security} with a security update, {vanished} vanished",
            found.release,
            found.rows.len()
        );
        if security > 0 {
            println!("  stage them for canaries: kiln whitelist stage NAME --hosts 'GLOB'");
        }
    }
    Ok(if vanished == 0 { 0 } else { 1 })
}

/// Writes `[rollouts.NAME]` with newer versions from the target's sources:
/// by default every security update of a pin in force, else the newest
/// version of each named package. Keeps the file's comments and layout.
pub fn stage(repo_dir: &Path, node: &Node, stage: &Stage) -> Result<i32, Error> {
    if stage.carries_change() && stage.packages.is_empty() {
        let repo = Repository::open(repo_dir)?;
        whitelist_edit::stage_change(&repo, stage)?;
        for a in stage.attributes {
            println!("  attribute {}", a.trim());
        }
        for r in stage.run_list {
            println!("  recipe {r}");
        }
        println!(
            "kiln whitelist: staged rollout {name}; see who is in: kiln whitelist explain --rollout {name} --inventory FILE; \
             then: kiln fleet converge --rollout {name}, and kiln whitelist promote {name} --to role:NAME",
            name = stage.name
        );
        return Ok(0);
    }
    let staged = pins::stage(repo_dir, node, stage, &|m| eprintln!("kiln whitelist: {m}"))?;
    for (package, pin) in &staged.newest {
        println!("  {package}: {pin} is the newest version offered");
    }
    if staged.chosen.is_empty() {
        println!("kiln whitelist stage: nothing newer to stage; whitelist.toml unchanged");
        return Ok(0);
    }
    for m in &staged.chosen {
        println!(
            "  {}: {} -> {}",
            m.package,
            m.from.as_deref().unwrap_or_default(),
            m.to
        );
    }
    println!(
        "kiln whitelist: staged rollout {} for release {} ({} package(s)); converge the canaries, then: kiln whitelist promote {}",
        stage.name,
        staged.release,
        staged.chosen.len(),
        stage.name
    );
    Ok(0)
}

/// Writes an apt repository of the pinned versions (and each rollout's) of
/// the packages `roles` install (default: every role), with their siblings
/// and what they pull in beyond a base Debian root.
pub fn mirror(
    repo_dir: &Path,
    out: &Path,
    roles: &[String],
    release: Option<&str>,
) -> Result<i32, Error> {
    let done = pins::mirror(repo_dir, out, roles, release, &|m| {
        eprintln!("kiln whitelist mirror: {m}")
    })?;
    println!(
        "kiln whitelist mirror: {} package file(s) for {} pinned package(s) of {} role(s) in {}",
        done.files,
        done.packages,
        done.roles,
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
