//! `kiln check`: every role compiled, every cookbook parsed, every problem
//! printed at once. Static: touches no host.

use std::path::Path;
use std::time::Instant;

use crate::error::{Error, PolicyErrors};
use crate::policy::Repository;

/// With an inventory (`--inventory`, the recipients file's, or the
/// repository's `inventory.toml`), also checks that every host can read
/// the secrets its roles use.
pub fn run(dir: &Path, inventory: Option<&Path>) -> Result<i32, Error> {
    let started = Instant::now();
    let repo = Repository::open(dir)?;
    let (mut errors, warnings) = crate::engine::check_and_warn(&repo);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    errors.extend(crate::fleet::secrets::check_devvm_roles(&repo));
    match crate::secrets::RecipientsFile::load(dir) {
        Err(e) => errors.push(e),
        Ok(recipients) => {
            errors.extend(crate::fleet::secrets::check_files(&repo, &recipients));
            if let Some(inv) = crate::fleet::secrets::inventory_path(dir, &recipients, inventory) {
                match crate::fleet::inventory::Inventory::load(&inv) {
                    Ok(inv) => {
                        if let Err(e) = inv.check_roles(&repo) {
                            errors.push(e);
                        }
                        errors.extend(crate::fleet::secrets::check(&repo, &inv));
                        errors.extend(crate::fleet::inventory::check_attributes(&repo, &inv));
                        let hosts: Vec<(String, Vec<String>)> = inv
                            .hosts
                            .iter()
                            .map(|h| (h.fqdn.clone(), h.roles.clone()))
                            .collect();
                        errors.extend(crate::policy::rollout::fleet_conflicts(&repo, &hosts));
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    let roles = repo.names_in("roles").len();
    let cookbooks = repo.names_in("cookbooks").len();
    // Roles compile once per pinned release (a problem names its release).
    let releases = crate::policy::whitelist::Whitelist::load(&repo)
        .map(|w| w.pinned_releases())
        .unwrap_or_default();
    let on = if releases.is_empty() {
        String::new()
    } else {
        format!(" on {}", releases.join(", "))
    };
    if errors.is_empty() {
        println!(
            "kiln check: {roles} roles{on}, {cookbooks} cookbooks: ok in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(0)
    } else {
        let n = errors.len();
        eprintln!("{}", PolicyErrors(errors));
        eprintln!("kiln check: {n} problem(s) in {roles} roles{on}, {cookbooks} cookbooks");
        Ok(1)
    }
}
