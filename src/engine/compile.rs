//! Compile: expand the run list, merge attributes, render and validate every
//! resource. Every policy error surfaces here, before the target is touched.

use std::collections::{BTreeMap, HashMap};

use super::guards::Guard;
use super::node::Node;
use crate::error::{PolicyError, PolicyErrors};
use crate::platform::facts::Facts;
use crate::policy::attributes::merge;
use crate::policy::escape::Typing;
use crate::policy::recipe::RawResource;
use crate::policy::render::{RenderFailure, Renderer};
use crate::policy::rollout::Membership;
use crate::policy::runlist::{Expanded, expand};
use crate::policy::types::{Origin, Origins, Types, record};
use crate::policy::whitelist::{FallbackSource, Pin, Rollout, Whitelist};
use crate::policy::{Cookbook, Repository};
use crate::resource::{
    BuildEnv, COMMON_PROPERTIES, Resource, ResourceId, Spec, TypeDef, string_list, type_def, types,
};
use crate::secrets::Secrets;
use crate::verify::Check;

/// When a notification fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timing {
    Delayed,
    Immediately,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub action: String,
    /// Index of the notified resource.
    pub target: usize,
    pub timing: Timing,
}

/// A resource ready to converge.
#[derive(Debug)]
pub struct Compiled {
    pub id: ResourceId,
    /// `recipe[cb::r]`, for messages.
    pub origin: String,
    pub file: std::path::PathBuf,
    pub line: usize,
    pub actions: Vec<String>,
    pub notifies: Vec<Notification>,
    pub only_if: Option<Guard>,
    pub not_if: Option<Guard>,
    pub ignore_failure: bool,
    pub sensitive: bool,
    pub imp: Box<dyn Resource>,
}

/// The compiled policy for one node.
#[derive(Debug)]
pub struct Policy {
    pub expanded: Expanded,
    pub attributes: toml::Table,
    /// The whitelist's versions for this node.
    pub pins: BTreeMap<String, Pin>,
    /// The rollouts this node is in, by name.
    pub rollouts: Vec<String>,
    /// The size whose attributes apply (`--size`).
    pub size: Option<String>,
    pub resources: Vec<Compiled>,
    pub verify: Vec<Check>,
    /// The secrets the policy uses, by name.
    pub secrets: std::collections::BTreeSet<String>,
    /// Keys the fingerprint's content hashes when real secrets were used
    /// (see [`crate::secrets::Resolver::fingerprint_key`]).
    pub fingerprint_key: Option<Vec<u8>>,
    /// Where pins the ordinary sources dropped may still be found.
    pub fallback: Option<std::sync::Arc<FallbackSource>>,
    /// The target's Debian release, whose pins apply.
    pub codename: String,
    /// Paths whose content diff is never shown: the sensitive files of
    /// this policy and those the target's last run recorded (see
    /// [`Policy::hide_paths_of_last_run`]).
    pub hidden_diffs: std::collections::BTreeSet<String>,
    /// What `kiln check` warns of without refusing (a secret in a file
    /// others may read).
    pub warnings: Vec<PolicyError>,
}

/// Compiles the policy of `repo` for `node`, as on a target with `facts`,
/// taking secret values from `secrets`. Pure: no target is touched, and
/// every policy problem found is in the error, not only the first.
pub fn compile(
    repo: &Repository,
    node: &Node,
    facts: &Facts,
    secrets: &dyn Secrets,
) -> Result<Policy, PolicyErrors> {
    let expanded = expand(repo, &node.run_list).map_err(|e| PolicyErrors(vec![e]))?;
    let mut errors = Vec::new();
    let (whitelist, valid) = load_whitelist(repo, &mut errors);
    let rollouts = NodeRollouts::of(whitelist.as_ref(), &expanded, facts, &mut errors);
    let expanded = rollouts
        .append_recipes(repo, expanded, node)
        .map_err(|e| PolicyErrors(vec![e]))?;
    let (cookbooks, order) = cookbooks_of(repo, &expanded, &mut errors);
    errors.extend(node_attributes_without_secrets(node));
    let (mut attributes, origins) =
        merge_attributes(&expanded, &cookbooks, &order, node, &rollouts, facts)
            .map_err(|e| PolicyErrors(vec![e]))?;
    errors.extend(mark_attribute_secrets(&mut attributes));
    let types = types_of(&cookbooks, &order);
    errors.extend(crate::policy::types::check(&attributes, &types, &origins));
    errors.extend(crate::policy::types::check_node(
        &node.attributes,
        &types,
        &node.origin(),
    ));
    let renderer = Renderer::typed(
        &attributes,
        secrets,
        std::sync::Arc::new(Typing { types, origins }),
    )
    .with_rollouts(std::sync::Arc::new(rollouts.membership.clone()));
    let valid = whitelist.as_ref().filter(|_| valid);
    let (pins, fallback) = pins_for(repo, valid, &expanded, facts, &mut errors);
    let mut verify = role_checks(&expanded, &renderer, &mut errors);
    let env = PolicyEnv {
        renderer: &renderer,
        pins: &pins,
        fallback: fallback.clone(),
        rollouts: &rollouts.membership,
        sources: Default::default(),
    };
    let built = build_recipes(&expanded, &cookbooks, &env, &mut verify, &mut errors);
    let resources = link_notifications(built.resources, built.pending, &mut errors);
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let mut policy = Policy {
        expanded,
        attributes,
        pins,
        rollouts: rollouts.membership.names.iter().cloned().collect(),
        size: node.size.clone(),
        resources,
        verify,
        secrets: renderer.secrets().used(),
        fingerprint_key: renderer.secrets().fingerprint_key(),
        fallback,
        codename: facts.codename.clone(),
        hidden_diffs: Default::default(),
        warnings: built.warnings,
    };
    policy.hidden_diffs = policy.sensitive_files().into_iter().collect();
    Ok(policy)
}

/// The cookbooks of the run list and everything they depend on, by name,
/// and their names in the order found.
fn cookbooks_of(
    repo: &Repository,
    expanded: &Expanded,
    errors: &mut Vec<PolicyError>,
) -> (HashMap<String, Cookbook>, Vec<String>) {
    let mut cookbooks: HashMap<String, Cookbook> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut todo: Vec<(String, Option<String>)> = expanded
        .recipes
        .iter()
        .map(|(c, _)| (c.clone(), None))
        .collect();
    while let Some((name, wanted_by)) = todo.pop() {
        if cookbooks.contains_key(&name) {
            continue;
        }
        match repo.cookbook(&name) {
            Ok(cb) => {
                for d in &cb.metadata.depends {
                    todo.push((d.clone(), Some(name.clone())));
                }
                order.push(name.clone());
                cookbooks.insert(name, cb);
            }
            Err(e) => errors.push(match wanted_by {
                Some(by) => PolicyError::new(format!(
                    "cookbook {by:?} depends on {name:?}, which is not in the repository"
                ))
                .in_file(&repo.display_path(&format!("cookbooks/{by}/metadata.toml")))
                .fix(format!("add cookbooks/{name}, or remove it from depends")),
                None => e,
            }),
        }
    }
    (cookbooks, order)
}

/// Node attributes may not use a secret: they are not the policy's own,
/// and would carry any secret into any file.
fn node_attributes_without_secrets(node: &Node) -> Option<PolicyError> {
    let key = crate::policy::render::secret_in(&node.attributes)?;
    let e = PolicyError::new(format!(
        "node attribute {key} uses a secret: node attributes cannot (they would carry any secret into any file)"
    ))
    .fix("use the secret in a role's or cookbook's attributes, or in the template itself");
    Some(match &node.origin {
        Some(o) => e.in_file(&o.file),
        None => e,
    })
}

/// Turns `{{secret}}` in attribute values into markers (see
/// [`crate::policy::render::mark_secrets`]); a value that is more than
/// the secret is an error.
fn mark_attribute_secrets(attributes: &mut toml::Table) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    for (key, v) in attributes.iter_mut() {
        if let Err(f) = crate::policy::render::mark_secrets(v) {
            errors.push(
                PolicyError::new(format!("attribute {key}: {}", f.message)).fix(
                    "write the secret as the whole value: password = \"{{secret \\\"NAME\\\"}}\"",
                ),
            );
        }
    }
    errors
}

/// The declared types of attributes, first cookbook first: every typed
/// value is checked where it ended up, whichever file set it.
fn types_of(cookbooks: &HashMap<String, Cookbook>, order: &[String]) -> Types {
    let mut types = Types::new();
    for name in order {
        for (path, d) in &cookbooks[name].types {
            types.entry(path.clone()).or_insert_with(|| d.clone());
        }
    }
    types
}

/// The repository's whitelist, when it can be read, and whether it is
/// valid. Converge refuses what `kiln check` refuses: a version apt cannot
/// parse, or a rollout that can never match, must not pass silently; an
/// invalid one still tells gates which rollouts exist.
fn load_whitelist(repo: &Repository, errors: &mut Vec<PolicyError>) -> (Option<Whitelist>, bool) {
    match Whitelist::load(repo) {
        Ok(w) => {
            let invalid = w.validate_in(repo);
            let valid = invalid.is_empty();
            errors.extend(invalid);
            (Some(w), valid)
        }
        Err(e) => {
            errors.push(e);
            (None, false)
        }
    }
}

/// The rollouts a node is in, and what they bring besides pins.
struct NodeRollouts<'w> {
    membership: Membership,
    within: Vec<&'w Rollout>,
    /// The whitelist, as messages name it.
    file: std::path::PathBuf,
}

impl<'w> NodeRollouts<'w> {
    /// The rollouts of `whitelist` the node is in (none without one). Two
    /// of them that set one attribute are an error.
    fn of(
        whitelist: Option<&'w Whitelist>,
        expanded: &Expanded,
        facts: &Facts,
        errors: &mut Vec<PolicyError>,
    ) -> Self {
        let Some(w) = whitelist else {
            return NodeRollouts {
                membership: Membership::default(),
                within: Vec::new(),
                file: Default::default(),
            };
        };
        let roles = expanded.role_names();
        errors.extend(crate::policy::rollout::host_conflicts(
            w,
            &facts.fqdn,
            &roles,
            &facts.codename,
        ));
        NodeRollouts {
            membership: Membership::of(w, &facts.fqdn, &roles, &facts.codename),
            within: w.rollouts_of(&facts.fqdn, &roles, &facts.codename),
            file: w.file.clone(),
        }
    }

    /// The run list expanded again with the rollouts' recipes appended
    /// (each recipe still runs once, at its first position).
    fn append_recipes(
        &self,
        repo: &Repository,
        expanded: Expanded,
        node: &Node,
    ) -> Result<Expanded, PolicyError> {
        let extra: Vec<&String> = self.within.iter().flat_map(|r| &r.run_list).collect();
        if extra.is_empty() {
            return Ok(expanded);
        }
        let mut items = node.run_list.clone();
        items.extend(extra.into_iter().cloned());
        expand(repo, &items)
    }
}

/// The whitelist's versions for this node, and its fallback sources for
/// the node's release.
fn pins_for(
    repo: &Repository,
    whitelist: Option<&Whitelist>,
    expanded: &Expanded,
    facts: &Facts,
    errors: &mut Vec<PolicyError>,
) -> (
    BTreeMap<String, Pin>,
    Option<std::sync::Arc<FallbackSource>>,
) {
    let Some(w) = whitelist else {
        return (BTreeMap::new(), None);
    };
    let own = w.fallback_for(&facts.codename);
    let fallback = (!own.is_empty()).then(|| {
        std::sync::Arc::new(FallbackSource {
            fallback: own.clone(),
            repo: repo.dir.clone(),
        })
    });
    let pins = match w.resolve(&facts.fqdn, &expanded.role_names(), &facts.codename) {
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            BTreeMap::new()
        }
    };
    (pins, fallback)
}

/// A verify check, refused when it used a secret: checks print what they
/// ran and saw.
fn check_without_secret(
    renderer: &Renderer,
    parse: impl FnOnce() -> Result<Check, PolicyError>,
) -> Result<Check, PolicyError> {
    let before = renderer.secrets().uses();
    let c = parse()?;
    if renderer.secrets().uses() > before {
        return Err(PolicyError::new(format!(
            "a verify check of {} uses a secret, and checks are printed and reported",
            c.origin
        ))
        .fix("check the service without the secret (a port, a page, a status command)"));
    }
    Ok(c)
}

/// The verify checks of the roles, in run-list order.
fn role_checks(
    expanded: &Expanded,
    renderer: &Renderer,
    errors: &mut Vec<PolicyError>,
) -> Vec<Check> {
    let mut verify = Vec::new();
    for role in &expanded.roles {
        for t in &role.verify {
            let origin = format!("role[{}]", role.name);
            match check_without_secret(renderer, || Check::parse(t, renderer, &origin)) {
                Ok(c) => verify.push(c),
                Err(e) => errors.push(e.in_file(&role.file)),
            }
        }
    }
    verify
}

/// The resources of every recipe, before their notifications are linked.
#[derive(Default)]
struct Built {
    resources: Vec<Compiled>,
    /// Each resource's notifications, by its index.
    pending: Vec<(usize, Vec<PendingNotify>)>,
    warnings: Vec<PolicyError>,
}

/// Builds the resources and verify checks of every recipe of the run list,
/// in order. A resource declared twice must be declared the same.
fn build_recipes(
    expanded: &Expanded,
    cookbooks: &HashMap<String, Cookbook>,
    env: &PolicyEnv,
    verify: &mut Vec<Check>,
    errors: &mut Vec<PolicyError>,
) -> Built {
    let mut built = Built::default();
    // Each identity's rendered properties where first declared: an identical
    // duplicate is harmless, a different one would fight it on every run.
    let mut declared: HashMap<ResourceId, (toml::Table, std::path::PathBuf, usize)> =
        HashMap::new();
    for (cb_name, recipe_name) in &expanded.recipes {
        // A missing cookbook is already reported; keep finding other problems.
        let Some(cb) = cookbooks.get(cb_name) else {
            continue;
        };
        let mut recipe = match cb.recipe(recipe_name) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for t in &recipe.verify {
            let origin = format!("recipe[{}]", recipe.id());
            match check_without_secret(env.renderer, || Check::parse(t, env.renderer, &origin)) {
                Ok(c) => verify.push(c),
                Err(e) => errors.push(e.in_file(&recipe.file)),
            }
        }
        let env = CookbookEnv::new(cb, env);
        built.resources.reserve(recipe.resources.len());
        // Taken, not cloned: each resource's table becomes its own spec.
        for raw in std::mem::take(&mut recipe.resources) {
            let at = raw.line;
            match env.policy.rollouts.admits(&raw.table) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    errors.push(e.in_file(&recipe.file).at_line(raw.line, None));
                    continue;
                }
            }
            match compile_one(raw, &env) {
                Ok((c, notes, props, warning)) => {
                    if let Some(w) = warning {
                        built
                            .warnings
                            .push(w.in_file(&recipe.file).at_line(at, None));
                    }
                    if let Some((other, file, line)) = declared.get(&c.id) {
                        if *other != props {
                            errors.push(
                                PolicyError::new(format!(
                                    "{} is declared twice with different properties (first at {}:{line})",
                                    c.id,
                                    file.display()
                                ))
                                .in_file(&recipe.file)
                                .at_line(at, None)
                                .fix("declare it once with the properties it needs, or give the two different names"),
                            );
                            continue;
                        }
                    } else {
                        declared.insert(c.id.clone(), (props, recipe.file.clone(), at));
                    }
                    let c = Compiled {
                        origin: format!("recipe[{}]", recipe.id()),
                        file: recipe.file.clone(),
                        line: at,
                        ..c
                    };
                    built.pending.push((built.resources.len(), notes));
                    built.resources.push(c);
                }
                Err(e) => errors.push(e.in_file(&recipe.file).at_line(at, None)),
            }
        }
    }
    built
}

/// Links each notification and subscription to the resource it names,
/// which must exist, be another one, and have the action.
fn link_notifications(
    mut resources: Vec<Compiled>,
    pending: Vec<(usize, Vec<PendingNotify>)>,
    errors: &mut Vec<PolicyError>,
) -> Vec<Compiled> {
    let index: HashMap<&ResourceId, usize> = resources
        .iter()
        .enumerate()
        .rev()
        .map(|(i, r)| (&r.id, i))
        .collect();
    let mut links: Vec<(usize, Notification)> = Vec::new();
    for (i, notes) in &pending {
        for n in notes {
            let me = &resources[*i];
            let verb = if n.subscribe {
                "subscribes to"
            } else {
                "notifies"
            };
            let Some(&j) = index.get(&n.other) else {
                errors.push(
                    PolicyError::new(format!(
                        "{} {verb} {}, which is not in the run list",
                        me.id, n.other
                    ))
                    .fix(format!(
                        "declare {} in a recipe of the run list, or correct the name",
                        n.other
                    ))
                    .in_file(&me.file)
                    .at_line(me.line, None),
                );
                continue;
            };
            if j == *i {
                errors.push(
                    PolicyError::new(format!("{} {verb} itself", me.id))
                        .fix("remove the entry: a resource's own change cannot trigger it again")
                        .in_file(&me.file)
                        .at_line(me.line, None),
                );
                continue;
            }
            let (source, target) = if n.subscribe { (j, *i) } else { (*i, j) };
            let def = type_def(&resources[target].id.kind).expect("compiled type");
            if !def.actions.contains(&n.action.as_str()) {
                errors.push(
                    PolicyError::new(format!(
                        "{}: action {:?} is not one of {}'s actions",
                        me.id, n.action, def.name
                    ))
                    .fix(format!("use one of: {}", def.actions.join(", ")))
                    .in_file(&me.file)
                    .at_line(me.line, None),
                );
                continue;
            }
            links.push((
                source,
                Notification {
                    action: n.action.clone(),
                    target,
                    timing: n.timing,
                },
            ));
        }
    }
    for (source, n) in links {
        resources[source].notifies.push(n);
    }
    resources
}

impl Policy {
    /// `(package, pin)` of every package the policy installs, in order.
    pub fn install_pins(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in &self.resources {
            if r.id.kind == crate::resource::package::TYPE.name
                && r.actions.iter().any(|a| a == "install")
                && let Some(p) = self.pins.get(&r.id.name)
                && !out.iter().any(|(n, _)| n == &r.id.name)
            {
                out.push((r.id.name.clone(), p.version.clone()));
            }
        }
        out
    }

    /// Whether resource `r` writes content at a path whose diff is withheld.
    pub fn hides_content(&self, r: &Compiled) -> bool {
        is_file_kind(&r.id.kind) && self.hidden_diffs.contains(&r.id.name)
    }

    /// Adds the paths that held a secret in the target's last run (the
    /// report's `sensitive_paths`), so that a why-run never diffs the old,
    /// secret content once the policy stops using the secret there or
    /// another resource takes the path over.
    pub fn hide_paths_of_last_run(&mut self, last: &[String]) {
        self.hidden_diffs.extend(last.iter().cloned());
    }

    /// The paths of the sensitive `file` and `template` resources: those
    /// whose fingerprint is keyed on a host that holds secrets.
    pub fn sensitive_files(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .resources
            .iter()
            .filter(|r| r.sensitive && is_file_kind(&r.id.kind))
            .map(|r| r.id.name.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Whether resources of `kind` write a file's content at their name.
fn is_file_kind(kind: &str) -> bool {
    kind == crate::resource::file::TYPE.name || kind == crate::resource::template::TYPE.name
}

/// Precedence, low to high: cookbook attributes < role defaults (later roles
/// win) < size attributes < node attributes < role overrides < the
/// attributes of the rollouts the node is in < facts. With the file each
/// final value came from.
fn merge_attributes(
    expanded: &Expanded,
    cookbooks: &HashMap<String, Cookbook>,
    order: &[String],
    node: &Node,
    rollouts: &NodeRollouts,
    facts: &Facts,
) -> Result<(toml::Table, Origins), PolicyError> {
    let mut attrs = toml::Table::new();
    let mut origins = Origins::new();
    let mut layer = |attrs: &mut toml::Table, t: &toml::Table, origin: Origin| {
        merge(attrs, t);
        record(&mut origins, t, &origin);
    };
    let mut names: Vec<&String> = order.iter().collect();
    names.sort();
    let file = |name: &str| cookbooks[name].display_dir.join("attributes.toml");
    for name in &names {
        layer(
            &mut attrs,
            &cookbooks[*name].attributes,
            Origin::file(&file(name)),
        );
    }
    // What differs on the target's Debian release, before any role speaks.
    let release = format!("releases.{}", facts.codename);
    for name in &names {
        if let Some(overlay) = cookbooks[*name].release_overlay(&facts.codename) {
            layer(&mut attrs, overlay, Origin::under(&file(name), &release));
        }
    }
    for role in &expanded.roles {
        layer(
            &mut attrs,
            &role.default_attributes,
            Origin::under(&role.file, "default_attributes"),
        );
    }
    if let Some(size) = &node.size {
        let found = expanded
            .roles
            .iter()
            .find_map(|r| r.sizes.get(size).map(|s| (r, s)));
        match found {
            Some((r, s)) => {
                let table = format!("sizes.{size}.attributes");
                layer(&mut attrs, &s.attributes, Origin::under(&r.file, &table))
            }
            None => {
                let known: Vec<String> = expanded
                    .roles
                    .iter()
                    .flat_map(|r| r.sizes.keys().cloned())
                    .collect();
                return Err(PolicyError::new(format!(
                    "size {size:?} is not defined by any role in the run list"
                ))
                .fix(if known.is_empty() {
                    "add [sizes.NAME] to a role, or drop --size".to_string()
                } else {
                    format!("use one of: {}", known.join(", "))
                }));
            }
        }
    }
    layer(&mut attrs, &node.attributes, node.origin());
    for role in &expanded.roles {
        layer(
            &mut attrs,
            &role.override_attributes,
            Origin::under(&role.file, "override_attributes"),
        );
    }
    // Two rollouts that set one value are refused, so their order is moot.
    for r in &rollouts.within {
        let table = format!("rollouts.{}.attributes", r.name);
        layer(
            &mut attrs,
            &r.attributes,
            Origin::under(&rollouts.file, &table),
        );
    }
    let facts = toml::Table::try_from(facts).expect("facts serialize");
    let mut node = toml::Table::new();
    node.insert("node".into(), toml::Value::Table(facts));
    merge(&mut attrs, &node);
    Ok((attrs, origins))
}

struct PendingNotify {
    action: String,
    other: ResourceId,
    timing: Timing,
    /// `subscribes`: `other` notifies this resource.
    subscribe: bool,
}

fn render_error(f: RenderFailure, what: &str, origin: &str) -> PolicyError {
    let e = PolicyError::new(format!("{what}: {}", f.message));
    match (f.missing, f.fix) {
        (Some(attr), _) => e.fix(format!(
            "define {attr} in the cookbook's attributes.toml or a role's default_attributes ({origin})"
        )),
        (None, Some(fix)) => e.fix(fix),
        (None, None) => e,
    }
}

/// A compiled resource, its notifications, its rendered table (to compare
/// duplicates by), and what `kiln check` should warn of.
type CompiledOne = (
    Compiled,
    Vec<PendingNotify>,
    toml::Table,
    Option<PolicyError>,
);

fn compile_one(raw: RawResource, env: &CookbookEnv) -> Result<CompiledOne, PolicyError> {
    let renderer = env.policy.renderer;
    let def = find_type(&raw.table)?;
    let mut table = raw.table;
    let name = render_name(def, &mut table, renderer)?;
    // A resource whose name, properties or template used a secret is
    // sensitive, whatever it says.
    let uses_before = renderer.secrets().uses();
    let id = ResourceId {
        kind: def.name.to_string(),
        name: name.clone(),
    };
    render_properties(def, &id, &mut table, renderer)?;
    check_text(def, &id, &table)?;
    let rendered = table.clone();
    let common = Common::take(def, &id, &mut table)?;
    let spec = Spec {
        name,
        props: table,
        sensitive: common.sensitive || renderer.secrets().uses() > uses_before,
        secret: renderer.secrets().uses() > uses_before,
        actions: common.actions.clone(),
    };
    // Built once: a template that uses a secret makes its file sensitive
    // itself (see [`BuildEnv::template_used_secret`]).
    let imp = (def.build)(&spec, env).map_err(|mut e| {
        e.message = format!("{id}: {}", e.message);
        e
    })?;
    let secret = renderer.secrets().uses() > uses_before;
    let warning = secret.then(|| readable_by_others(&id, &rendered)).flatten();
    Ok((
        Compiled {
            id,
            origin: String::new(),
            file: Default::default(),
            line: 0,
            actions: common.actions,
            notifies: Vec::new(),
            only_if: common.only_if,
            not_if: common.not_if,
            ignore_failure: common.ignore_failure,
            sensitive: common.sensitive || secret,
            imp,
        },
        common.notes,
        rendered,
        warning,
    ))
}

/// Takes the type key out of `table` and renders the resource's name,
/// which may hold no secret, and may not be empty or hold a NUL byte.
fn render_name(
    def: &TypeDef,
    table: &mut toml::Table,
    renderer: &Renderer,
) -> Result<String, PolicyError> {
    let name_value = table.remove(def.name).expect("type key present");
    let toml::Value::String(name_tpl) = name_value else {
        return Err(PolicyError::new(format!(
            "the value of {} must be a string: the resource's name",
            def.name
        )));
    };
    let before_name = renderer.secrets().uses();
    let name = renderer
        .render(&name_tpl)
        .map_err(|f| render_error(f, &format!("{}[{name_tpl}]", def.name), "name"))?;
    if renderer.secrets().uses() > before_name {
        // Named by its template: the rendered name holds the value.
        return Err(secret_out_of_place(
            def,
            &format!("{}[{name_tpl}]", def.name),
            "name",
        ));
    }
    if name.trim().is_empty() {
        return Err(
            PolicyError::new(format!("{}[{name_tpl}]: the name is empty", def.name)).fix(format!(
                "give the {} a name (a path, package or label): {} = \"...\"",
                def.name, def.name
            )),
        );
    }
    if name.contains('\0') {
        return Err(PolicyError::new(format!(
            "{}[{}]: the name contains a NUL byte",
            def.name,
            name.escape_debug()
        ))
        .fix("remove the \\u0000 from the name: no path, package or command can hold one"));
    }
    Ok(name)
}

/// Renders every property in place. Unknown keys are errors, with the
/// valid ones listed; a secret may go only into the type's secret
/// properties.
fn render_properties(
    def: &TypeDef,
    id: &ResourceId,
    table: &mut toml::Table,
    renderer: &Renderer,
) -> Result<(), PolicyError> {
    for key in table.keys() {
        if !def.properties.contains(&key.as_str()) && !COMMON_PROPERTIES.contains(&key.as_str()) {
            let mut valid: Vec<&str> = def.properties.to_vec();
            valid.extend(COMMON_PROPERTIES);
            return Err(
                PolicyError::new(format!("{id}: unknown property {key:?}")).fix(format!(
                    "valid properties of {}: {}",
                    def.name,
                    valid.join(", ")
                )),
            );
        }
    }
    for (k, v) in table.iter_mut() {
        let before = renderer.secrets().uses();
        renderer
            .render_value(v)
            .map_err(|f| render_error(f, &format!("{id}, property {k}"), &id.to_string()))?;
        if renderer.secrets().uses() > before && !def.secret_properties.contains(&k.as_str()) {
            return Err(secret_out_of_place(
                def,
                &id.to_string(),
                &format!("property {k}"),
            ));
        }
    }
    Ok(())
}

/// No NUL byte anywhere, and no control character in a name or a
/// property that is not multi-line text.
fn check_text(def: &TypeDef, id: &ResourceId, table: &toml::Table) -> Result<(), PolicyError> {
    if let Some(key) = table.iter().find_map(|(k, v)| has_nul(v).then_some(k)) {
        return Err(
            PolicyError::new(format!("{id}, property {key}: contains a NUL byte"))
                .fix("remove the \\u0000: no path, name or command can hold one"),
        );
    }
    // Whatever kiln writes from these lands in line-oriented files (deb822
    // sources, passwd, unit files) or argv: a newline there would add a
    // line of the value's choosing. Scripts and contents may span lines.
    if let Some(key) = table.iter().find_map(|(k, v)| {
        (!MULTILINE_PROPERTIES.contains(&k.as_str()) && has_control(v)).then_some(k)
    }) {
        return Err(PolicyError::new(format!(
            "{id}, property {key}: contains a control character (a newline, tab or escape)"
        ))
        .fix("give it on one line of printable text; only content, command, only_if, not_if, variables and environment may span lines"));
    }
    if id.name.chars().any(char::is_control) {
        return Err(PolicyError::new(format!(
            "{}[{}]: the name contains a control character (a newline, tab or escape)",
            def.name,
            id.name.escape_debug()
        ))
        .fix("name it on one line of printable text"));
    }
    Ok(())
}

/// The properties every type has, taken out of a resource's table.
struct Common {
    actions: Vec<String>,
    notes: Vec<PendingNotify>,
    only_if: Option<Guard>,
    not_if: Option<Guard>,
    ignore_failure: bool,
    /// What the recipe says; a secret used makes it sensitive anyway.
    sensitive: bool,
}

impl Common {
    fn take(
        def: &TypeDef,
        id: &ResourceId,
        table: &mut toml::Table,
    ) -> Result<Common, PolicyError> {
        let take_list = |table: &mut toml::Table, key: &str| -> Result<Vec<String>, PolicyError> {
            match table.remove(key) {
                None => Ok(vec![]),
                Some(v) => string_list(&v).ok_or_else(|| {
                    PolicyError::new(format!("{id}: {key} must be a string or a list of strings"))
                }),
            }
        };
        let take_bool = |table: &mut toml::Table, key: &str| -> Result<bool, PolicyError> {
            match table.remove(key) {
                None => Ok(false),
                Some(toml::Value::Boolean(b)) => Ok(b),
                Some(_) => Err(PolicyError::new(format!(
                    "{id}: {key} must be true or false"
                ))),
            }
        };
        let given = table.contains_key("action");
        let mut actions = take_list(table, "action")?;
        if actions.is_empty() && given {
            // An empty list would silently do nothing, unlike a missing key.
            return Err(PolicyError::new(format!("{id}: action = [] names no action"))
                .fix(format!(
                    "name one or more ({}), or action = \"nothing\" where the type has it, or leave action out for {}",
                    def.actions.join(", "),
                    def.actions[0]
                )));
        }
        if actions.is_empty() {
            actions.push(def.actions[0].to_string());
        }
        for a in &actions {
            if !def.actions.contains(&a.as_str()) {
                return Err(
                    PolicyError::new(format!("{id}: unknown action {a:?}")).fix(format!(
                        "{} actions: {}",
                        def.name,
                        def.actions.join(", ")
                    )),
                );
            }
        }
        let mut notes = Vec::new();
        for (key, timing, subscribe) in [
            ("notifies", Timing::Delayed, false),
            ("notifies_immediately", Timing::Immediately, false),
            ("subscribes", Timing::Delayed, true),
        ] {
            for n in take_list(table, key)? {
                notes.push(parse_notification(&n, timing, subscribe).map_err(|e| {
                    PolicyError::new(format!("{id}: {key} entry {n:?}: {e}"))
                        .fix("write it as \"ACTION TYPE[NAME]\", e.g. \"restart service[apache2]\"")
                })?);
            }
        }
        // Already judged before the resource was rendered.
        for gate in crate::policy::rollout::GATES {
            table.remove(*gate);
        }
        Ok(Common {
            actions,
            notes,
            only_if: take_guard(table, id, "only_if")?,
            not_if: take_guard(table, id, "not_if")?,
            ignore_failure: take_bool(table, "ignore_failure")?,
            sensitive: take_bool(table, "sensitive")?,
        })
    }
}

/// A guard: a shell command, or a table kiln answers itself.
fn take_guard(
    table: &mut toml::Table,
    id: &ResourceId,
    key: &str,
) -> Result<Option<Guard>, PolicyError> {
    match table.remove(key) {
        None => Ok(None),
        Some(v) => Guard::parse(key, v).map(Some).map_err(|mut e| {
            // Keep the fix its own field: only the message gets the resource.
            e.message = format!("{id}: {}", e.message);
            e
        }),
    }
}

/// A `{{secret}}` where it may not go: in a name, or a property that is
/// printed, reported, put on a command line or written to a world-readable
/// system file. `what` names the resource as the recipe wrote it.
fn secret_out_of_place(def: &TypeDef, what: &str, field: &str) -> PolicyError {
    let allowed = if def.secret_properties.is_empty() {
        format!("{} resources take no secret", def.name)
    } else {
        format!(
            "of {} resources only {} may hold one",
            def.name,
            def.secret_properties.join(", ")
        )
    };
    PolicyError::new(format!("{what}, {field}: uses a secret; {allowed}"))
    .fix("a secret goes into content only: a file's content, a template, or an execute's command (on stdin); refer to that file here instead")
}

/// A mode wider than 0640 on a file whose content holds a secret: a
/// warning, since the policy may mean it.
fn readable_by_others(id: &ResourceId, rendered: &toml::Table) -> Option<PolicyError> {
    let mode = match rendered.get("mode")? {
        toml::Value::String(s) => u32::from_str_radix(s.trim(), 8).ok()?,
        toml::Value::Integer(n) => u32::try_from(*n).ok()?,
        _ => return None,
    };
    (mode & 0o7137 != 0).then(|| {
        PolicyError::new(format!(
            "{id}: its content holds a secret, and mode {mode:04o} lets more than owner and group read it"
        ))
        .fix("give it mode = \"0600\" (or \"0640\" for a group that needs it), or leave mode out for 0600")
    })
}

/// Whether a string anywhere in the value holds a NUL byte.
/// Properties whose values may span lines: contents, scripts, and what a
/// template or a command's environment receives as data.
const MULTILINE_PROPERTIES: &[&str] = &[
    "content",
    "command",
    "only_if",
    "not_if",
    "variables",
    "environment",
];

fn has_control(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.chars().any(char::is_control),
        toml::Value::Array(a) => a.iter().any(has_control),
        toml::Value::Table(t) => t.values().any(has_control),
        _ => false,
    }
}

fn has_nul(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.contains('\0'),
        toml::Value::Array(a) => a.iter().any(has_nul),
        toml::Value::Table(t) => t.values().any(has_nul),
        _ => false,
    }
}

/// The resource's type: exactly one key of the table names one.
fn find_type(table: &toml::Table) -> Result<&'static TypeDef, PolicyError> {
    // `group` names a type and is also a property of `user` and `file`: the
    // type is the key for which every other type-named key is a property.
    let present: Vec<&'static TypeDef> = types()
        .iter()
        .filter(|t| table.contains_key(t.name))
        .collect();
    let mut found: Vec<&'static TypeDef> = present
        .iter()
        .copied()
        .filter(|t| {
            present
                .iter()
                .all(|o| o.name == t.name || t.properties.contains(&o.name))
        })
        .collect();
    if found.is_empty() {
        found = present;
    }
    let all: Vec<&str> = types().iter().map(|t| t.name).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let unknown: Vec<&String> = table
                .keys()
                .filter(|k| {
                    !COMMON_PROPERTIES.contains(&k.as_str())
                        && !types().iter().any(|t| t.properties.contains(&k.as_str()))
                })
                .collect();
            let what = match unknown.as_slice() {
                [] => "resource has no type key".to_string(),
                keys => format!(
                    "unknown resource type {}",
                    keys.iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            Err(PolicyError::new(what).fix(format!(
                "start the resource with one of: {} (e.g. file = \"/etc/motd\")",
                all.join(", ")
            )))
        }
        many => Err(PolicyError::new(format!(
            "resource has several type keys: {}",
            many.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        ))
        .fix("split it into one [[resource]] per type")),
    }
}

/// Why a `notifies` or `subscribes` entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotificationError {
    /// No space between the action and the resource.
    NoAction,
    /// What follows the action is not `TYPE[NAME]`.
    NotAResource(String),
    /// A timing other than `immediately` or `delayed` after the resource.
    Timing(String),
}

impl std::fmt::Display for NotificationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotificationError::NoAction => f.write_str("expected ACTION TYPE[NAME]"),
            NotificationError::NotAResource(s) => write!(f, "{s:?} is not TYPE[NAME]"),
            NotificationError::Timing(t) => {
                write!(f, "unknown timing {t:?}: use immediately or delayed")
            }
        }
    }
}

fn parse_notification(
    s: &str,
    timing: Timing,
    subscribe: bool,
) -> Result<PendingNotify, NotificationError> {
    // The name inside the brackets may hold spaces (execute labels).
    let s = s.trim();
    let (action, rest) = s
        .split_once(char::is_whitespace)
        .ok_or(NotificationError::NoAction)?;
    let rest = rest.trim();
    let close = rest
        .rfind(']')
        .ok_or_else(|| NotificationError::NotAResource(rest.to_string()))?;
    let (target, tail) = rest.split_at(close + 1);
    let timing = match tail.trim() {
        "" => timing,
        "immediately" | "immediate" => Timing::Immediately,
        "delayed" => Timing::Delayed,
        other => return Err(NotificationError::Timing(other.to_string())),
    };
    let other = ResourceId::parse(target)
        .ok_or_else(|| NotificationError::NotAResource(target.to_string()))?;
    Ok(PendingNotify {
        action: action.to_string(),
        other,
        timing,
        subscribe,
    })
}

/// What every resource of the policy is built with: the renderer and
/// the node's pins.
struct PolicyEnv<'a> {
    renderer: &'a Renderer<'a>,
    pins: &'a BTreeMap<String, Pin>,
    fallback: Option<std::sync::Arc<FallbackSource>>,
    /// Which rollouts the node is in, for gated resources.
    rollouts: &'a Membership,
    /// Cookbook files and templates read so far, by cookbook, folder and
    /// source: ten resources of one source find and read it once.
    sources: SourceCache,
}

/// See [`PolicyEnv::sources`]. Only what was read is kept: a source that
/// failed fails again, with its own error, each time it is named.
type SourceCache =
    std::cell::RefCell<HashMap<(std::path::PathBuf, &'static str, String), std::sync::Arc<[u8]>>>;

/// Cookbook files and templates for the resources of one cookbook.
struct CookbookEnv<'a> {
    cookbook: &'a Cookbook,
    policy: &'a PolicyEnv<'a>,
    /// Whether the last template rendered used a secret.
    template_secret: std::cell::Cell<bool>,
}

impl<'a> CookbookEnv<'a> {
    fn new(cookbook: &'a Cookbook, policy: &'a PolicyEnv<'a>) -> Self {
        CookbookEnv {
            cookbook,
            policy,
            template_secret: Default::default(),
        }
    }
}

impl CookbookEnv<'_> {
    /// A file of the cookbook's `folder` (`files`, `templates`), checked
    /// and read once per compile.
    fn source(
        &self,
        folder: &'static str,
        source: &str,
    ) -> Result<std::sync::Arc<[u8]>, PolicyError> {
        let key = (self.cookbook.dir.clone(), folder, source.to_string());
        if let Some(known) = self.policy.sources.borrow().get(&key) {
            return Ok(known.clone());
        }
        let path = self.cookbook.source_path(folder, source)?;
        // A template is named as the repository shows it, a file by its path.
        let shown = match folder {
            "templates" => self.cookbook.display_dir.join(folder).join(source),
            _ => path.clone(),
        };
        let bytes = crate::platform::hostfile::read_shared(&path)
            .map_err(|e| PolicyError::new(format!("cannot read {}: {e}", shown.display())))?;
        self.policy.sources.borrow_mut().insert(key, bytes.clone());
        Ok(bytes)
    }
}

impl BuildEnv for CookbookEnv<'_> {
    fn pin(&self, package: &str) -> Option<Pin> {
        self.policy.pins.get(package).cloned()
    }

    fn fallback(&self) -> Option<std::sync::Arc<FallbackSource>> {
        self.policy.fallback.clone()
    }

    fn cookbook_file(&self, dir: &str, source: &str) -> Result<std::sync::Arc<[u8]>, PolicyError> {
        match dir {
            "files" => self.source("files", source),
            _ => {
                let path = self.cookbook.source_path(dir, source)?;
                crate::platform::hostfile::read_shared(&path)
                    .map_err(|e| PolicyError::new(format!("cannot read {}: {e}", path.display())))
            }
        }
    }

    fn template_used_secret(&self) -> bool {
        self.template_secret.get()
    }

    fn render_template(
        &self,
        source: &str,
        variables: Option<&toml::Table>,
    ) -> Result<String, PolicyError> {
        let shown = self.cookbook.display_dir.join("templates").join(source);
        let bytes = self.source("templates", source)?;
        // As `read_to_string` says it.
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            PolicyError::new(format!(
                "cannot read {}: stream did not contain valid UTF-8",
                shown.display()
            ))
        })?;
        let renderer = self.policy.renderer;
        let before = renderer.secrets().uses();
        let rendered = renderer.render_vars(text, variables);
        self.template_secret.set(renderer.secrets().uses() > before);
        rendered.map_err(|f| {
            let line = f.line.map(|l| format!(" line {l}")).unwrap_or_default();
            let e = PolicyError::new(format!(
                "template {}{line}: {}",
                shown.display(),
                f.message
            ));
            match (f.missing, f.fix) {
                (Some(attr), _) => e.fix(format!(
                    "define {attr} in the cookbook's attributes.toml, a role's default_attributes, or the resource's variables"
                )),
                (None, Some(fix)) => e.fix(fix),
                (None, None) => e.fix("correct the handlebars syntax in the template"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::file::File;
    use crate::secrets::{Placeholder, SecretError};
    use std::cell::RefCell;

    /// Secrets a test knows, and every name it was asked for.
    #[derive(Default)]
    struct Known {
        asked: RefCell<Vec<String>>,
    }

    impl Secrets for Known {
        fn value(&self, name: &str) -> Result<String, SecretError> {
            self.asked.borrow_mut().push(name.to_string());
            match name {
                // Registered for redaction in this process: a value no
                // other test prints.
                "db/password" => Ok("unit-test-secret-5e1f".into()),
                _ => Err(SecretError::NotText { name: name.into() }),
            }
        }
    }

    /// A repository of one role, `db`: a package, a template that uses a
    /// secret through an attribute (no mode), a file that uses it
    /// directly, a plain file, and a service the template notifies.
    fn repo() -> (tempfile::TempDir, Repository) {
        let d = tempfile::tempdir().unwrap();
        let files = [
            (
                "roles/db.toml",
                "run_list = [\"recipe[db]\"]\n[default_attributes.db]\npassword = '{{secret \"db/password\"}}'\n[sizes.small]\ncpus = 2\nmemory_mb = 2048\ndisk_gb = 12\n[sizes.small.attributes.db]\nport = 3307\n",
            ),
            (
                "cookbooks/db/metadata.toml",
                "name = \"db\"\nversion = \"0.1.0\"\n",
            ),
            (
                "cookbooks/db/attributes.toml",
                "[db]\ngreeting = \"hello\"\nport = 3306\n",
            ),
            (
                "cookbooks/db/recipes/default.toml",
                r#"[[resource]]
package = "mariadb-server"

[[resource]]
template = "/etc/db.conf"
source = "db.conf.hbs"
notifies = ["restart service[mariadb]"]

[[resource]]
file = "/etc/db-password"
content = "{{secret \"db/password\"}}"
mode = "0600"

[[resource]]
file = "/etc/db-motd"
content = "{{db.greeting}} from {{node.fqdn}} on port {{db.port}}\n"

[[resource]]
service = "mariadb"
action = ["enable", "start"]
"#,
            ),
            (
                "cookbooks/db/templates/db.conf.hbs",
                "password = {{db.password}}\n",
            ),
            (
                "whitelist.toml",
                "[packages]\nmariadb-server = \"1:10.11.6-0+deb12u1\"\n",
            ),
        ];
        for (path, text) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let repo = Repository::open(d.path()).unwrap();
        (d, repo)
    }

    /// Facts of a bookworm host, made up: no target is read.
    fn facts(fqdn: &str) -> Facts {
        Facts {
            fqdn: fqdn.into(),
            hostname: fqdn.split('.').next().unwrap().into(),
            platform: "debian".into(),
            platform_version: "12".into(),
            codename: "bookworm".into(),
            cpus: 2,
            memory_mb: 2048,
            ipaddress: "192.0.2.10".into(),
        }
    }

    fn file<'p>(policy: &'p Policy, path: &str) -> (&'p Compiled, &'p File) {
        let r = policy
            .resources
            .iter()
            .find(|r| r.id.name == path)
            .unwrap_or_else(|| panic!("{path} is not compiled"));
        (r, r.imp.as_any().downcast_ref::<File>().unwrap())
    }

    #[test]
    fn a_node_compiles_without_a_target() {
        let (_d, repo) = repo();
        let secrets = Known::default();
        let node = Node::role("db").named("db01.example.com");
        let policy = compile(&repo, &node, &facts("db01.example.com"), &secrets).unwrap();
        let ids: Vec<String> = policy.resources.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "package[mariadb-server]",
                "template[/etc/db.conf]",
                "file[/etc/db-password]",
                "file[/etc/db-motd]",
                "service[mariadb]"
            ]
        );
        assert_eq!(policy.pins["mariadb-server"].version, "1:10.11.6-0+deb12u1");
        assert_eq!(policy.codename, "bookworm");
        // The secret was asked for once, though used twice.
        assert_eq!(*secrets.asked.borrow(), ["db/password"]);
        assert_eq!(policy.secrets.iter().collect::<Vec<_>>(), ["db/password"]);
        assert!(policy.fingerprint_key.is_some());
        let (conf, built) = file(&policy, "/etc/db.conf");
        assert_eq!(
            built.content.as_deref(),
            Some(&b"password = unit-test-secret-5e1f\n"[..])
        );
        assert_eq!(conf.notifies.len(), 1);
        assert_eq!(
            policy.resources[conf.notifies[0].target].id.to_string(),
            "service[mariadb]"
        );
        assert_eq!(conf.origin, "recipe[db::default]");
        let (motd, built) = file(&policy, "/etc/db-motd");
        assert!(!motd.sensitive && !built.sensitive);
        assert_eq!(
            built.content.as_deref(),
            Some(&b"hello from db01.example.com on port 3306\n"[..])
        );
        assert_eq!(
            policy.sensitive_files(),
            ["/etc/db-password", "/etc/db.conf"]
        );
    }

    #[test]
    fn sources_named_twice_render_per_resource_from_their_own_cookbook() {
        let d = tempfile::tempdir().unwrap();
        let recipe = |cb: &str, n: usize| {
            (1..=n)
                .map(|i| {
                    format!(
                        "[[resource]]\ntemplate = \"/etc/{cb}-{i}.conf\"\nsource = \"same.hbs\"\n\
                         variables = {{ n = {i} }}\n\n\
                         [[resource]]\nfile = \"/etc/{cb}-{i}.txt\"\nsource = \"same.txt\"\n\n"
                    )
                })
                .collect::<String>()
        };
        for (cb, n) in [("a", 2), ("b", 1)] {
            let dir = d.path().join("cookbooks").join(cb);
            for sub in ["recipes", "templates", "files"] {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
            let meta = format!("name = \"{cb}\"\nversion = \"0.1.0\"\n");
            std::fs::write(dir.join("metadata.toml"), meta).unwrap();
            std::fs::write(dir.join("recipes/default.toml"), recipe(cb, n)).unwrap();
            std::fs::write(dir.join("templates/same.hbs"), format!("{cb} {{{{n}}}}\n")).unwrap();
            std::fs::write(dir.join("files/same.txt"), format!("file of {cb}\n")).unwrap();
        }
        std::fs::create_dir_all(d.path().join("roles")).unwrap();
        let role = "run_list = [\"recipe[a]\", \"recipe[b]\"]\n";
        std::fs::write(d.path().join("roles/r.toml"), role).unwrap();
        std::fs::write(d.path().join("whitelist.toml"), "").unwrap();
        let repo = Repository::open(d.path()).unwrap();
        let policy = compile(&repo, &Node::role("r"), &facts("h1"), &Known::default()).unwrap();
        let content = |path: &str| {
            String::from_utf8(file(&policy, path).1.content.as_deref().unwrap().to_vec())
        };
        assert_eq!(content("/etc/a-1.conf").unwrap(), "a 1\n");
        assert_eq!(content("/etc/a-2.conf").unwrap(), "a 2\n");
        assert_eq!(content("/etc/b-1.conf").unwrap(), "b 1\n");
        assert_eq!(content("/etc/a-1.txt").unwrap(), "file of a\n");
        assert_eq!(content("/etc/a-2.txt").unwrap(), "file of a\n");
        assert_eq!(content("/etc/b-1.txt").unwrap(), "file of b\n");
    }

    #[test]
    fn a_secret_in_a_template_makes_its_file_sensitive_and_private() {
        let (_d, repo) = repo();
        let policy = compile(&repo, &Node::role("db"), &facts("db01"), &Known::default()).unwrap();
        // The template's own properties hold no secret: its rendering does.
        let (conf, built) = file(&policy, "/etc/db.conf");
        assert!(conf.sensitive && built.sensitive);
        assert_eq!(built.meta.mode, Some(0o600));
        assert!(policy.hides_content(conf));
    }

    #[test]
    fn placeholders_decrypt_nothing_and_key_nothing() {
        let (_d, repo) = repo();
        let node = Node::check("db", Some("small".into()));
        let policy = compile(
            &repo,
            &node,
            &facts(super::super::node::CHECK_FQDN),
            &Placeholder,
        )
        .unwrap();
        let (_, built) = file(&policy, "/etc/db-password");
        assert_eq!(
            built.content.as_deref(),
            Some(crate::secrets::resolve::PLACEHOLDER.as_bytes())
        );
        assert_eq!(policy.fingerprint_key, None);
        assert_eq!(policy.size.as_deref(), Some("small"));
        let (_, motd) = file(&policy, "/etc/db-motd");
        let text = String::from_utf8(motd.content.as_deref().unwrap().to_vec()).unwrap();
        assert!(text.ends_with("on port 3307\n"), "{text}");
    }

    #[test]
    fn node_attributes_lie_between_sizes_and_overrides_and_name_their_file() {
        let (_d, repo) = repo();
        let attrs: toml::Table = toml::from_str("[db]\nport = 4000").unwrap();
        let origin = Origin::under("inventory.toml".as_ref(), "hosts.db01.attributes");
        let node = Node::inventory_host("db01", &["db".into()], &attrs, Some(origin))
            .sized(Some("small".into()));
        let policy = compile(&repo, &node, &facts("db01"), &Placeholder).unwrap();
        let (_, motd) = file(&policy, "/etc/db-motd");
        let text = String::from_utf8(motd.content.as_deref().unwrap().to_vec()).unwrap();
        assert!(text.ends_with("on port 4000\n"), "{text}");

        let bad: toml::Table = toml::from_str("[db]\nx = '{{secret \"db/password\"}}'").unwrap();
        let origin = Origin::under("inventory.toml".as_ref(), "hosts.db01.attributes");
        let node = Node::inventory_host("db01", &["db".into()], &bad, Some(origin));
        let e = compile(&repo, &node, &facts("db01"), &Placeholder).unwrap_err();
        assert!(
            e.0[0].message.contains("node attribute db.x uses a secret"),
            "{e}"
        );
        assert_eq!(e.0[0].file.as_deref(), Some("inventory.toml".as_ref()));
    }

    #[test]
    fn a_secret_that_cannot_be_had_is_a_policy_error_naming_it() {
        let (d, repo) = repo();
        std::fs::write(
            d.path().join("cookbooks/db/templates/db.conf.hbs"),
            "other = {{secret \"db/other\"}}\n",
        )
        .unwrap();
        let e = compile(&repo, &Node::role("db"), &facts("db01"), &Known::default()).unwrap_err();
        assert!(
            e.0.iter().any(|e| e.message.contains("\"db/other\"")),
            "{e}"
        );
    }

    #[test]
    fn notifications_parse() {
        let n = parse_notification("restart service[apache2]", Timing::Delayed, false).unwrap();
        assert_eq!(n.action, "restart");
        assert_eq!(n.other.to_string(), "service[apache2]");
        assert_eq!(n.timing, Timing::Delayed);
        let n =
            parse_notification("reload service[x] immediately", Timing::Delayed, false).unwrap();
        assert_eq!(n.timing, Timing::Immediately);
        assert_eq!(
            parse_notification("restart", Timing::Delayed, false).err(),
            Some(NotificationError::NoAction)
        );
        let e = parse_notification("restart service[x] later", Timing::Delayed, false);
        assert_eq!(
            e.err().unwrap().to_string(),
            "unknown timing \"later\": use immediately or delayed"
        );
        let n = parse_notification(
            "run execute[reload kiln agent] immediately",
            Timing::Delayed,
            false,
        )
        .unwrap();
        assert_eq!(n.other.name, "reload kiln agent");
        assert_eq!(n.timing, Timing::Immediately);
    }

    #[test]
    fn group_is_a_property_of_user_and_file() {
        let t: toml::Table = toml::from_str("user = \"u\"\ngroup = \"g\"").unwrap();
        assert_eq!(find_type(&t).unwrap().name, "user");
        let t: toml::Table = toml::from_str("file = \"/x\"\ngroup = \"g\"").unwrap();
        assert_eq!(find_type(&t).unwrap().name, "file");
        let t: toml::Table = toml::from_str("group = \"g\"").unwrap();
        assert_eq!(find_type(&t).unwrap().name, "group");
        let t: toml::Table = toml::from_str("file = \"/x\"\nlink = \"/y\"").unwrap();
        assert!(find_type(&t).is_err());
    }

    #[test]
    fn type_key_is_found_or_named() {
        let t: toml::Table = toml::from_str("file = \"/x\"\nmode = \"0644\"").unwrap();
        assert_eq!(find_type(&t).unwrap().name, "file");
        let t: toml::Table = toml::from_str("fiel = \"/x\"").unwrap();
        let e = find_type(&t).unwrap_err();
        assert!(e.message.contains("\"fiel\""), "{e}");
        assert!(e.fix.unwrap().contains("template"));
    }
}
