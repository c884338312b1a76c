//! Rollouts beyond packages, as Etsy's chef-whitelist meant them: which
//! hosts a `[rollouts.NAME]` reaches (by name, host pattern, role, release
//! or a stable percentage), and what a node asks of the rollouts it is in
//! besides pins: gates on resources (`only_in_rollout`, `not_in_rollout`),
//! `{{#if (in_rollout "NAME")}}` in templates, and the attributes two
//! rollouts must not both set on one host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};

use super::Repository;
use super::escape::LastFix;
use super::runlist::Item;
use super::whitelist::{Rollout, Whitelist};
use crate::error::PolicyError;

/// What lets a host into a rollout before any percentage is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// A host pattern with wildcards matches its fqdn.
    Pattern(String),
    /// Its expanded run list has the role.
    Role(String),
    /// The rollout names no hosts or roles, only releases: every host of them.
    Release,
    /// The rollout names nothing but a percentage: every host.
    Everyone,
}

/// Why a host is in a rollout, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `hosts` names it (a pattern without wildcards): in at any percentage.
    Named,
    /// Allowed, and the rollout has no percentage.
    Allowed(Allow),
    /// Allowed, and its share is below the percentage.
    Within { by: Allow, share: u8, percent: u8 },
    /// Allowed, but its share is not below the percentage.
    Beyond { by: Allow, share: u8, percent: u8 },
    /// It runs a release the rollout does not name.
    OtherRelease(String),
    /// No host pattern or role of the rollout matches it.
    NotMatched,
}

impl Reason {
    pub fn is_in(&self) -> bool {
        matches!(
            self,
            Reason::Named | Reason::Allowed(_) | Reason::Within { .. }
        )
    }

    /// The host's share (0-99) when a percentage decided.
    pub fn share(&self) -> Option<u8> {
        match self {
            Reason::Within { share, .. } | Reason::Beyond { share, .. } => Some(*share),
            _ => None,
        }
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allow::Pattern(p) => write!(f, "host pattern {p:?} matches"),
            Allow::Role(r) => write!(f, "has role {r}"),
            Allow::Release => f.write_str("runs a release it names"),
            Allow::Everyone => f.write_str("every host"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Named => f.write_str("named in hosts (in at any percent)"),
            Reason::Allowed(by) => write!(f, "{by}"),
            Reason::Within { by, share, percent } => {
                write!(f, "{by}; share {share} is below {percent}%")
            }
            Reason::Beyond { by, share, percent } => {
                write!(f, "{by}, but share {share} is not below {percent}%")
            }
            Reason::OtherRelease(r) => write!(f, "runs {r}, a release it does not name"),
            Reason::NotMatched => f.write_str("no host pattern or role of it matches"),
        }
    }
}

/// A host pattern without wildcards names one host.
fn names_a_host(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

fn pattern_matches(pattern: &str, fqdn: &str) -> bool {
    globset::Glob::new(pattern).is_ok_and(|g| g.compile_matcher().is_match(fqdn))
}

/// A host's share of a rollout, 0-99: HMAC-SHA256 keyed by the rollout's
/// name over the fqdn. The same host keeps its share while the rollout
/// keeps its name, so raising the percentage only adds hosts; another
/// rollout shuffles the fleet anew.
pub fn share(rollout: &str, fqdn: &str) -> u8 {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(rollout.as_bytes()).expect("any key length");
    mac.update(fqdn.as_bytes());
    let digest = mac.finalize().into_bytes();
    let head: [u8; 8] = digest[..8].try_into().expect("32 bytes");
    (u64::from_be_bytes(head) % 100) as u8
}

impl Rollout {
    /// Why a host is in this rollout or not. Without `codename` (a host
    /// whose release is not known), the rollout's releases are not asked.
    pub fn reason(&self, fqdn: &str, roles: &[String], codename: Option<&str>) -> Reason {
        if let Some(c) = codename
            && !self.releases.is_empty()
            && !self.releases.iter().any(|r| r == c)
        {
            return Reason::OtherRelease(c.to_string());
        }
        if self
            .hosts
            .iter()
            .any(|h| names_a_host(h) && h.as_str() == fqdn)
        {
            return Reason::Named;
        }
        let by = if let Some(p) = self
            .hosts
            .iter()
            .find(|h| !names_a_host(h) && pattern_matches(h, fqdn))
        {
            Allow::Pattern(p.clone())
        } else if let Some(r) = self.roles.iter().find(|r| roles.contains(r)) {
            Allow::Role(r.clone())
        } else if self.hosts.is_empty() && self.roles.is_empty() && !self.releases.is_empty() {
            Allow::Release
        } else if self.hosts.is_empty() && self.roles.is_empty() && self.percent.is_some() {
            Allow::Everyone
        } else {
            return Reason::NotMatched;
        };
        match self.percent {
            None => Reason::Allowed(by),
            Some(p) => {
                let percent = p.clamp(0, 100) as u8;
                let share = share(&self.name, fqdn);
                if share < percent {
                    Reason::Within { by, share, percent }
                } else {
                    Reason::Beyond { by, share, percent }
                }
            }
        }
    }

    /// What `kiln check` refuses in this rollout's percentage, recipes and
    /// attributes, each at its line.
    pub(super) fn validate(&self, file: &Path) -> Vec<PolicyError> {
        let name = &self.name;
        let mut errors = Vec::new();
        if let Some(p) = self.percent
            && !(0..=100).contains(&p)
        {
            errors.push(
                PolicyError::new(format!("rollout {name:?}: percent = {p} is outside 0-100"))
                    .in_file(file)
                    .at_line(self.percent_line, None)
                    .fix("give the share of hosts as a whole number from 0 to 100, e.g. percent = 10"),
            );
        }
        for item in &self.run_list {
            let e = match Item::parse(item) {
                Ok(Item::Recipe(..)) => continue,
                Ok(Item::Role(role)) => PolicyError::new(format!(
                    "rollout {name:?}: run_list item {item:?}: a rollout appends recipes, not roles"
                ))
                .fix(format!(
                    "list the role's recipes (recipe[COOKBOOK::RECIPE]), or choose hosts by the role: roles = [{role:?}]"
                )),
                Err(e) => PolicyError {
                    message: format!("rollout {name:?}: {}", e.message),
                    ..e
                },
            };
            errors.push(e.in_file(file).at_line(self.run_list_line, None));
        }
        if self.attributes.contains_key(super::attributes::FACTS) {
            let line = self
                .attribute_lines
                .iter()
                .find(|(k, _)| k.split('.').next() == Some(super::attributes::FACTS))
                .map_or(self.line, |(_, l)| *l);
            errors.push(
                PolicyError::new(format!(
                    "rollout {name:?}: attributes.node is the facts kiln gathers on the target (node.fqdn, ...): policy cannot set them"
                ))
                .in_file(file)
                .at_line(line, None)
                .fix("set the cookbook's own attributes instead, e.g. attributes = { mariadb = { innodb_buffer_pool_mb = 512 } }"),
            );
        }
        errors
    }

    /// The paths of values both rollouts set (one path, or one below the
    /// other), as `other` writes them.
    fn shared_attributes<'a>(&self, other: &'a Rollout) -> Vec<&'a str> {
        let overlap = |p: &str, q: &str| {
            p == q
                || q.strip_prefix(p).is_some_and(|r| r.starts_with('.'))
                || p.strip_prefix(q).is_some_and(|r| r.starts_with('.'))
        };
        other
            .attribute_lines
            .keys()
            .filter(|q| self.attribute_lines.keys().any(|p| overlap(p, q)))
            .map(String::as_str)
            .collect()
    }

    /// The line of the first of `paths`, for messages.
    fn line_of(&self, paths: &[&str]) -> usize {
        paths
            .first()
            .and_then(|p| self.attribute_lines.get(*p))
            .copied()
            .unwrap_or(self.line)
    }
}

/// The line of every value an attribute table sets, by dotted path: where
/// `[rollouts.NAME.attributes]` (or its inline table) writes it in `text`,
/// else `fallback`.
pub fn value_lines(
    text: &str,
    name: &str,
    attributes: &toml::Table,
    fallback: usize,
) -> BTreeMap<String, usize> {
    fn walk(t: &toml::Table, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (k, v) in t {
            path.push(k.clone());
            match v {
                toml::Value::Table(inner) => walk(inner, path, out),
                _ => out.push(path.clone()),
            }
            path.pop();
        }
    }
    let mut leaves = Vec::new();
    walk(attributes, &mut Vec::new(), &mut leaves);
    leaves
        .into_iter()
        .map(|leaf| {
            let mut at: Vec<&str> = vec!["rollouts", name, "attributes"];
            at.extend(leaf.iter().map(String::as_str));
            let line = super::spans::key_line(text, &at).unwrap_or(fallback);
            (leaf.join("."), line)
        })
        .collect()
}

/// Where two rollouts may both reach one host without knowing the fleet:
/// a role both name, a host one names that the other matches, or one
/// that reaches every host of its releases. None: only hosts can tell.
fn may_share_a_host(a: &Rollout, b: &Rollout) -> Option<String> {
    if !a.releases.is_empty()
        && !b.releases.is_empty()
        && !a.releases.iter().any(|r| b.releases.contains(r))
    {
        return None;
    }
    if let Some(role) = a.roles.iter().find(|r| b.roles.contains(r)) {
        return Some(format!("hosts of role {role}"));
    }
    for (x, y) in [(a, b), (b, a)] {
        if let Some(h) = x
            .hosts
            .iter()
            .find(|h| names_a_host(h) && y.hosts.iter().any(|p| pattern_matches(p, h)))
        {
            return Some(h.clone());
        }
        if x.hosts.is_empty() && x.roles.is_empty() {
            return Some(format!(
                "every host of rollout {:?} (it names no hosts or roles)",
                x.name
            ));
        }
    }
    None
}

fn conflict(file: &Path, a: &Rollout, b: &Rollout, paths: &[&str], on: &str) -> PolicyError {
    let shown = paths.join(", ");
    PolicyError::new(format!(
        "rollouts {:?} (line {}) and {:?} both set {shown} on {on}",
        a.name,
        a.line_of(paths),
        b.name
    ))
    .in_file(file)
    .at_line(b.line_of(paths), None)
    .fix(format!(
        "set {shown} in one of them only, or give them hosts and roles that no host shares"
    ))
}

/// Pairs of rollouts that set one attribute and may both reach a host, as
/// far as the whitelist alone tells (see [`host_conflicts`] for the rest).
pub fn static_conflicts(wl: &Whitelist) -> Vec<PolicyError> {
    let all: Vec<&Rollout> = wl.rollouts.values().collect();
    let mut errors = Vec::new();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let paths = a.shared_attributes(b);
            if paths.is_empty() {
                continue;
            }
            if let Some(on) = may_share_a_host(a, b) {
                errors.push(conflict(&wl.file, a, b, &paths, &on));
            }
        }
    }
    errors
}

/// Two rollouts a host is in, and the attributes both set there.
type Clash<'w> = (&'w Rollout, &'w Rollout, Vec<&'w str>);

/// The pairs of rollouts this host is in that set one attribute, beyond
/// those [`static_conflicts`] already names.
fn clashes<'w>(wl: &'w Whitelist, fqdn: &str, roles: &[String], codename: &str) -> Vec<Clash<'w>> {
    let within = wl.rollouts_of(fqdn, roles, codename);
    let mut out = Vec::new();
    for (i, a) in within.iter().enumerate() {
        for b in &within[i + 1..] {
            let paths = a.shared_attributes(b);
            if !paths.is_empty() && may_share_a_host(a, b).is_none() {
                out.push((*a, *b, paths));
            }
        }
    }
    out
}

/// Pairs of rollouts that set one attribute on this host, beyond those
/// [`static_conflicts`] already names: which of two differing values
/// would win is nobody's decision.
pub fn host_conflicts(
    wl: &Whitelist,
    fqdn: &str,
    roles: &[String],
    codename: &str,
) -> Vec<PolicyError> {
    clashes(wl, fqdn, roles, codename)
        .into_iter()
        .map(|(a, b, paths)| conflict(&wl.file, a, b, &paths, fqdn))
        .collect()
}

/// [`host_conflicts`] over a fleet (each host's fqdn and top-level roles),
/// on every release the whitelist or a rollout names: each pair once, on
/// the first host where the two meet. `kiln check --inventory` runs it.
pub fn fleet_conflicts(repo: &Repository, hosts: &[(String, Vec<String>)]) -> Vec<PolicyError> {
    let Ok(wl) = Whitelist::load(repo) else {
        return Vec::new();
    };
    let mut releases: BTreeSet<&str> = wl.releases.keys().map(String::as_str).collect();
    releases.extend(
        wl.rollouts
            .values()
            .flat_map(|r| r.releases.iter().map(String::as_str)),
    );
    if releases.is_empty() {
        releases.insert("");
    }
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for (fqdn, roles) in hosts {
        let Ok(expanded) = super::runlist::expand(repo, &role_items(roles)) else {
            continue;
        };
        let roles = expanded.role_names();
        for codename in &releases {
            for (a, b, paths) in clashes(&wl, fqdn, &roles, codename) {
                if seen.insert((a.name.clone(), b.name.clone())) {
                    errors.push(conflict(&wl.file, a, b, &paths, fqdn));
                }
            }
        }
    }
    errors
}

fn role_items(roles: &[String]) -> Vec<String> {
    roles.iter().map(|r| format!("role[{r}]")).collect()
}

/// One host of a fleet against a rollout, as `kiln whitelist explain
/// --rollout` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub fqdn: String,
    #[serde(rename = "in")]
    pub is_in: bool,
    pub reason: String,
    /// The host's share (0-99) when a percentage decided.
    pub share: Option<u8>,
    /// `hosts` names it: a canary of the rollout.
    pub named: bool,
}

/// A rollout against a fleet: `kiln whitelist explain --rollout`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explained {
    pub rollout: String,
    pub percent: Option<i64>,
    /// The releases the rollout names, when no `--release` decided them:
    /// the hosts listed in are in only if they run one of these.
    pub unasked_releases: Vec<String>,
    pub hosts: Vec<Verdict>,
}

/// Each host of a fleet (fqdn and top-level roles, expanded here) in or
/// out of rollout `name`, with why; `release` is the one they run, when
/// known.
pub fn explain(
    repo: &Repository,
    name: &str,
    hosts: &[(String, Vec<String>)],
    release: Option<&str>,
) -> Result<Explained, PolicyError> {
    let wl = Whitelist::load(repo)?;
    let Some(rollout) = wl.rollouts.get(name) else {
        let known: Vec<&str> = wl.rollouts.keys().map(String::as_str).collect();
        return Err(PolicyError::new(format!("no rollout {name:?}"))
            .in_file(&wl.file)
            .fix(if known.is_empty() {
                "the whitelist has no [rollouts.*] tables".to_string()
            } else {
                format!("name one of: {}", known.join(", "))
            }));
    };
    let mut verdicts = Vec::new();
    for (fqdn, roles) in hosts {
        let roles = super::runlist::expand(repo, &role_items(roles))?.role_names();
        let reason = rollout.reason(fqdn, &roles, release);
        verdicts.push(Verdict {
            fqdn: fqdn.clone(),
            is_in: reason.is_in(),
            reason: reason.to_string(),
            share: reason.share(),
            named: reason == Reason::Named,
        });
    }
    Ok(Explained {
        rollout: name.to_string(),
        percent: rollout.percent,
        unasked_releases: if release.is_none() {
            rollout.releases.clone()
        } else {
            Vec::new()
        },
        hosts: verdicts,
    })
}

/// The rollouts one node is in, and the names of all: what gates and
/// templates ask.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// Every rollout of the whitelist; none when the whitelist could not
    /// be read (its error is reported, and no name is judged unknown).
    pub known: Option<BTreeSet<String>>,
    /// The rollouts this node is in.
    pub names: BTreeSet<String>,
    file: PathBuf,
}

/// The properties that gate a resource on a rollout.
pub const GATES: &[&str] = &["only_in_rollout", "not_in_rollout"];

impl Membership {
    /// The rollouts of `wl` a node of release `codename` is in.
    pub fn of(wl: &Whitelist, fqdn: &str, roles: &[String], codename: &str) -> Membership {
        Membership {
            known: Some(wl.rollouts.keys().cloned().collect()),
            names: wl
                .rollouts_of(fqdn, roles, codename)
                .into_iter()
                .map(|r| r.name.clone())
                .collect(),
            file: wl.file.clone(),
        }
    }

    /// Whether the node is in rollout `name`, which must exist: a gate on
    /// a misspelt name would silently never open.
    pub fn is_in(&self, name: &str) -> Result<bool, PolicyError> {
        match &self.known {
            Some(known) if !known.contains(name) => Err(PolicyError::new(format!(
                "rollout {name:?} is not defined in {}",
                self.file.display()
            ))
            .fix(if known.is_empty() {
                format!("add [rollouts.{name}] to the whitelist, with the hosts, roles or percent it reaches")
            } else {
                format!(
                    "add [rollouts.{name}] to the whitelist, or name one of: {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })),
            _ => Ok(self.names.contains(name)),
        }
    }

    /// Whether a resource with these (unrendered) properties is part of
    /// this node's policy: `only_in_rollout = "NAME"` keeps it on hosts in
    /// the rollout, `not_in_rollout = "NAME"` on hosts outside.
    pub fn admits(&self, table: &toml::Table) -> Result<bool, PolicyError> {
        let mut admitted = true;
        for (key, wanted) in GATES.iter().zip([true, false]) {
            let Some(v) = table.get(*key) else {
                continue;
            };
            let Some(name) = v.as_str() else {
                return Err(
                    PolicyError::new(format!("{key} must be a rollout's name (a string)")).fix(
                        format!("write {key} = \"NAME\", a [rollouts.NAME] of the whitelist"),
                    ),
                );
            };
            let inside = self.is_in(name).map_err(|e| PolicyError {
                message: format!("{key}: {}", e.message),
                ..e
            })?;
            admitted &= inside == wanted;
        }
        Ok(admitted)
    }
}

/// `{{#if (in_rollout "NAME")}}`: whether the node is in the rollout.
struct InRollout {
    membership: Arc<Membership>,
    fix: LastFix,
}

impl HelperDef for InRollout {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let name = match (h.param(0).and_then(|p| p.value().as_str()), h.param(1)) {
            (Some(n), None) => n,
            _ => {
                return Err(RenderErrorReason::Other(
                    "in_rollout takes one quoted name: {{#if (in_rollout \"bufpool\")}}".into(),
                )
                .into());
            }
        };
        match self.membership.is_in(name) {
            Ok(inside) => Ok(ScopedJson::Derived(serde_json::Value::Bool(inside))),
            Err(e) => {
                *self.fix.lock().unwrap_or_else(|e| e.into_inner()) = e.fix;
                Err(RenderErrorReason::Other(format!("in_rollout: {}", e.message)).into())
            }
        }
    }
}

/// Registers `in_rollout` on `hb`, answering for `membership`.
pub fn register(hb: &mut Handlebars<'static>, membership: Arc<Membership>, fix: &LastFix) {
    hb.register_helper(
        "in_rollout",
        Box::new(InRollout {
            membership,
            fix: fix.clone(),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(text: &str) -> Whitelist {
        Whitelist::parse(text, "whitelist.toml".into()).unwrap()
    }

    #[test]
    fn raising_the_percentage_keeps_every_host() {
        let hosts: Vec<String> = (0..400).map(|i| format!("db{i:03}.example.com")).collect();
        let at = |p: i64| -> BTreeSet<&String> {
            let w = wl(&format!(
                "[rollouts.buf]\nroles = [\"db\"]\npercent = {p}\n"
            ));
            let r = &w.rollouts["buf"];
            hosts
                .iter()
                .filter(|h| r.reason(h, &["db".into()], Some("trixie")).is_in())
                .collect()
        };
        let (ten, quarter, all) = (at(10), at(25), at(100));
        assert!(ten.is_subset(&quarter) && quarter.is_subset(&all));
        assert_eq!(all.len(), 400);
        assert!(at(0).is_empty());
        // A share, not an exact count: 400 hosts land near 10% and 25%.
        assert!((20..=60).contains(&ten.len()), "{}", ten.len());
        assert!((70..=130).contains(&quarter.len()), "{}", quarter.len());
    }

    #[test]
    fn a_named_host_is_in_at_any_percent_and_others_by_share() {
        let w = wl(
            "[rollouts.buf]\nhosts = [\"db01.example.com\", \"web*\"]\nroles = [\"db\"]\npercent = 0\n",
        );
        let r = &w.rollouts["buf"];
        assert_eq!(r.reason("db01.example.com", &[], None), Reason::Named);
        let web = r.reason("web07.example.com", &[], None);
        assert!(
            matches!(&web, Reason::Beyond { by: Allow::Pattern(p), percent: 0, .. } if p == "web*"),
            "{web:?}"
        );
        assert_eq!(
            r.reason("cache1", &["cache".into()], None),
            Reason::NotMatched
        );
        assert!(web.to_string().contains("share"), "{web}");
        let other = wl("[rollouts.t]\nreleases = [\"trixie\"]\npercent = 100\n");
        let t = &other.rollouts["t"];
        assert_eq!(
            t.reason("x", &[], Some("bookworm")),
            Reason::OtherRelease("bookworm".into())
        );
        assert!(t.reason("x", &[], Some("trixie")).is_in());
        // The share is the rollout's own: another name, another order.
        assert_eq!(share("a", "h1"), share("a", "h1"));
        let differ = (0..50).any(|i| share("a", &format!("h{i}")) != share("b", &format!("h{i}")));
        assert!(differ);
    }

    #[test]
    fn gates_and_templates_ask_for_rollouts_that_exist() {
        let w = wl("[rollouts.buf]\nhosts = [\"db01\"]\n\n[rollouts.other]\nroles = [\"web\"]\n");
        let m = Membership::of(&w, "db01", &[], "trixie");
        let table = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
        assert!(m.admits(&table("only_in_rollout = \"buf\"")).unwrap());
        assert!(!m.admits(&table("not_in_rollout = \"buf\"")).unwrap());
        assert!(!m.admits(&table("only_in_rollout = \"other\"")).unwrap());
        assert!(m.admits(&table("file = \"/x\"")).unwrap());
        let e = m.admits(&table("only_in_rollout = \"bfu\"")).unwrap_err();
        assert!(e.message.contains("\"bfu\" is not defined"), "{e}");
        assert!(e.fix.as_deref().unwrap().contains("buf, other"), "{e}");
        assert!(m.admits(&table("only_in_rollout = 3")).is_err());

        let r =
            crate::policy::render::Renderer::new(&toml::Table::new()).with_rollouts(Arc::new(m));
        let t = "{{#if (in_rollout \"buf\")}}in{{else}}out{{/if}} {{#if (in_rollout \"other\")}}in{{else}}out{{/if}}";
        assert_eq!(r.render(t).unwrap(), "in out");
        let f = r
            .render("{{#if (in_rollout \"nope\")}}x{{/if}}")
            .unwrap_err();
        assert!(
            f.message.contains("\"nope\" is not defined"),
            "{}",
            f.message
        );
        assert!(f.fix.unwrap().contains("[rollouts.nope]"));
    }

    #[test]
    fn check_refuses_bad_percentages_recipes_and_facts_at_their_line() {
        let w = wl(
            "[rollouts.a]\nroles = [\"db\"]\npercent = 150\nrun_list = [\"role[web]\"]\n\n[rollouts.a.attributes.node]\nfqdn = \"x\"\n",
        );
        let errors: Vec<String> = w.validate().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("whitelist.toml:3") && errors[0].contains("outside 0-100"));
        assert!(errors[1].contains("whitelist.toml:4") && errors[1].contains("roles = [\"web\"]"));
        assert!(errors[2].contains("whitelist.toml:7") && errors[2].contains("facts"));
    }

    #[test]
    fn two_rollouts_setting_one_attribute_on_one_host_are_refused() {
        let text = "[rollouts.a]\nroles = [\"db\"]\nattributes = { mariadb = { buffer = 1 } }\n\n[rollouts.b]\nroles = [\"db\", \"web\"]\n[rollouts.b.attributes.mariadb]\nbuffer = 2\n\n[rollouts.c]\nhosts = [\"db9*\"]\nattributes = { mariadb = { buffer = 3 } }\n";
        let w = wl(text);
        let errors: Vec<String> = w.validate().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("whitelist.toml:8")
                && errors[0].contains(
                    "\"a\" (line 3) and \"b\" both set mariadb.buffer on hosts of role db"
                ),
            "{errors:?}"
        );
        // A pattern and a role meet only on a host.
        let on = host_conflicts(&w, "db90.example.com", &["db".into()], "trixie");
        assert_eq!(on.len(), 2, "{on:?}");
        assert!(
            on[0]
                .message
                .contains("\"a\" (line 3) and \"c\" both set mariadb.buffer on db90.example.com")
        );
        assert_eq!(on[0].line, Some(12));
        assert!(host_conflicts(&w, "db10", &["db".into()], "trixie").is_empty());
    }
}
