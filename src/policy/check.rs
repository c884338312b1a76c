//! Static validation of a whole repository: every role compiled (in each
//! of its sizes), every cookbook parsed, every problem collected at once.
//! `kiln check` prints them; `kiln fleet` refuses to roll out a policy with any.

use std::collections::HashSet;

use super::Repository;
use super::runlist::{Item, is_too_deep};
use super::whitelist::Whitelist;
use crate::error::{PolicyError, PolicyErrors};

/// Compiles the run list `role[NAME]` in a size (None: none), as a node
/// would. The engine's compiler, passed in so that the policy layer does
/// not depend on the engine (see `engine::check`).
pub type CompileRole<'a> =
    dyn Fn(&Repository, &str, Option<String>) -> Result<(), PolicyErrors> + 'a;

impl Repository {
    /// All problems in the repository, each once.
    pub fn check(&self, compile: &CompileRole) -> Vec<PolicyError> {
        check(self, compile)
    }
}

fn check(repo: &Repository, compile: &CompileRole) -> Vec<PolicyError> {
    let mut errors: Vec<PolicyError> = Vec::new();
    let add = |e: PolicyError, errors: &mut Vec<PolicyError>| {
        if !errors.contains(&e) {
            errors.push(e);
        }
    };
    match Whitelist::load(repo) {
        Ok(w) => {
            for e in w.validate_in(repo) {
                add(e, &mut errors);
            }
        }
        Err(e) => add(e, &mut errors),
    }
    // What a bundle would carry: a link in it is refused there, so here too.
    if let Err(e) = repo.files() {
        add(e, &mut errors);
    }
    // Every cookbook parses, even one no role uses yet.
    for name in repo.names_in("cookbooks") {
        match repo.cookbook(&name) {
            Ok(cb) => {
                for r in cb.recipe_names() {
                    if let Err(e) = cb.recipe(&r) {
                        add(e, &mut errors);
                    }
                }
            }
            Err(e) => add(e, &mut errors),
        }
    }
    let mut compiled = Vec::new();
    for name in repo.names_in("roles") {
        let role = match repo.role(&name) {
            Ok(r) => r,
            Err(e) => {
                add(e, &mut errors);
                continue;
            }
        };
        let mut sizes: Vec<Option<String>> = vec![None];
        sizes.extend(role.sizes.keys().cloned().map(Some));
        let mut found = Vec::new();
        for size in sizes {
            if let Err(PolicyErrors(es)) = compile(repo, &name, size) {
                found.extend(es.into_iter().map(|e| {
                    if e.file.is_none() {
                        e.in_file(&role.file)
                    } else {
                        e
                    }
                }));
            }
        }
        compiled.push((role, found));
    }
    // A chain too deep is too deep from each of its roles down to the last
    // 64: report it once, from the role that starts it.
    let too_deep: HashSet<&str> = compiled
        .iter()
        .filter(|(_, es)| es.iter().any(is_too_deep))
        .map(|(r, _)| r.name.as_str())
        .collect();
    let within_deeper: HashSet<String> = compiled
        .iter()
        .filter(|(r, _)| too_deep.contains(r.name.as_str()))
        .flat_map(|(r, _)| r.run_list.iter())
        .filter_map(|item| match Item::parse(item) {
            Ok(Item::Role(child)) => Some(child),
            _ => None,
        })
        .collect();
    for (role, es) in compiled {
        let repeats_parent = within_deeper.contains(&role.name);
        for e in es {
            if !(repeats_parent && is_too_deep(&e)) {
                add(e, &mut errors);
            }
        }
    }
    errors
}
