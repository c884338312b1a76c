//! Resource types. Each lives in its own file behind [`Converge`]: `check`
//! reads the current state once and returns a typed difference, `apply`
//! carries out exactly that difference, and `fingerprint` reads the state
//! `kiln fingerprint` hashes. The engine sees them erased, as [`Resource`],
//! and never needs to know a type's internals.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{PolicyError, RunError};
use crate::platform::accounts::Accounts;
use crate::platform::dpkg::Dpkg;
use crate::platform::mariadb;
use crate::platform::target::Target;
use crate::policy::whitelist::Pin;
pub use state::State;

pub mod apt_repository;
pub mod directory;
pub mod execute;
pub mod file;
pub mod group;
pub mod link;
pub mod mariadb_database;
pub mod mariadb_seed;
pub mod mariadb_user;
pub mod package;
pub mod service;
pub mod template;
pub mod user;

pub mod fsmeta;
pub mod state;

/// One difference between the target and the policy, as people and
/// reports see it (rendered from a type's [`Item`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub summary: String,
    /// A unified diff of file content, when there is one.
    pub diff: Option<String>,
    /// Not done on purpose (a service start in a `--root` target): reported,
    /// but not counted as an update.
    pub skipped: bool,
    /// Whether the resources this one notifies hear of it (see [`Item::notifies`]).
    pub notifies: bool,
}

/// State read from the target, shared by all resources of a run and read
/// at most once between changes.
pub struct Context<'a> {
    pub target: &'a Target,
    accounts: Option<Accounts>,
    dpkg: Option<Dpkg>,
    /// Versions that stand in for pins no source offers this run
    /// (see [`crate::platform::pins`]), by package.
    pub substitutes: std::collections::BTreeMap<String, String>,
    mariadb: Option<mariadb::Client>,
}

impl<'a> Context<'a> {
    pub fn new(target: &'a Target) -> Self {
        Context {
            target,
            accounts: None,
            dpkg: None,
            substitutes: Default::default(),
            mariadb: None,
        }
    }

    /// The MariaDB server listening at `socket` on the target, connected
    /// once a run (again after a restart dropped the connection). A
    /// `--root` tree has no server to ask: [`ServerAt::Root`].
    pub fn mariadb(&mut self, socket: &std::path::Path) -> ServerAt<'_> {
        if self.target.is_chroot() {
            return ServerAt::Root;
        }
        let kept = self
            .mariadb
            .as_mut()
            .is_some_and(|c| c.socket() == socket && c.alive());
        if !kept {
            match mariadb::Client::connect(socket) {
                Ok(c) => self.mariadb = Some(c),
                Err(e) => {
                    self.mariadb = None;
                    return ServerAt::Unreachable(e);
                }
            }
        }
        ServerAt::Up(self.mariadb.as_mut().expect("connected above"))
    }

    pub fn accounts(&mut self) -> &Accounts {
        self.accounts
            .get_or_insert_with(|| Accounts::read(self.target))
    }

    /// The dpkg status database, read once until something changes.
    pub fn dpkg(&mut self) -> &Dpkg {
        self.dpkg.get_or_insert_with(|| Dpkg::read(self.target))
    }

    /// Forget cached state after something on the target changed.
    pub fn invalidate(&mut self) {
        self.accounts = None;
        self.dpkg = None;
    }
}

/// Where a MariaDB resource's server is (see [`Context::mariadb`]).
pub enum ServerAt<'a> {
    Up(&'a mut mariadb::Client),
    /// A `--root` tree: nothing runs there to connect to.
    Root,
    /// Not listening (yet): a check plans the whole change, an apply fails.
    Unreachable(mariadb::MariadbError),
}

impl<'a> ServerAt<'a> {
    /// The server, or the error an apply reports.
    pub fn required(self) -> ResourceResult<&'a mut mariadb::Client> {
        match self {
            ServerAt::Up(c) => Ok(c),
            ServerAt::Unreachable(e) => Err(RunError::platform(e)),
            ServerAt::Root => Err(RunError::precondition(
                "a --root tree has no MariaDB server to change",
            )),
        }
    }
}

pub type ResourceResult<T> = Result<T, RunError>;

/// A type's actions as an enum, so that resources match on variants and
/// compile checks names against one list.
pub trait Action: Copy + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Every action, the default first.
    const ALL: &'static [Self];
    /// Their names, in the same order.
    const NAMES: &'static [&'static str];
    fn name(self) -> &'static str;
    fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }
}

/// Declares a type's `Action` enum from `Variant = "name"` pairs.
macro_rules! actions {
    ($(#[$m:meta])* $vis:vis enum $E:ident { $($V:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $E { $($V),+ }
        impl serde::Serialize for $E {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::resource::Action::name(*self))
            }
        }
        impl $crate::resource::Action for $E {
            const ALL: &'static [Self] = &[$($E::$V),+];
            const NAMES: &'static [&'static str] = &[$($s),+];
            fn name(self) -> &'static str {
                match self { $($E::$V => $s),+ }
            }
        }
    };
}
pub(crate) use actions;

/// One item of a type's difference: it says itself for people (Display)
/// and for machines (Serialize); `apply` matches on it to know what to do.
pub trait Item: fmt::Debug + fmt::Display + serde::Serialize + Send + Sync + 'static {
    /// A unified diff of file content, when there is one.
    fn diff(&self) -> Option<String> {
        None
    }
    /// Not done on purpose (reported, not counted as an update).
    fn skipped(&self) -> bool {
        false
    }
    /// Whether this change fires the resource's notifications. Most do; a
    /// bookkeeping change that leaves what runs as it was (a package held
    /// at the version it already has) is an update that restarts nothing.
    fn notifies(&self) -> bool {
        true
    }
}

/// A resource type's check and apply over one typed difference: `check`
/// reads the target once and says what differs, `apply` carries out
/// exactly that difference, so the two never disagree.
pub trait Converge: fmt::Debug + Send + Sync + Sized + 'static {
    type Action: Action;
    /// One difference; `check` returns all of them, empty when converged.
    type Item: Item;
    fn check(&self, action: Self::Action, cx: &mut Context) -> ResourceResult<Vec<Self::Item>>;
    /// Called only with a non-empty difference `check` just returned.
    fn apply(
        &self,
        action: Self::Action,
        diff: &[Self::Item],
        cx: &mut Context,
    ) -> ResourceResult<()>;
    /// The state of the resource `name` on the target as one line for
    /// `kiln fingerprint` (`None`: the type has no state). Read from the
    /// target, never from the policy, so that drift shows.
    fn fingerprint(name: &str, state: &mut State) -> Option<String>;
    /// Whether consecutive resources of this type are applied together by
    /// [`Converge::apply_batch`] (one apt transaction for packages).
    const BATCHES: bool = false;
    /// Applies several resources of this type at once; one result each.
    fn apply_batch(items: &[BatchItem<'_, Self>], cx: &mut Context) -> Vec<ResourceResult<()>> {
        items.iter().map(|(r, a, d)| r.apply(*a, d, cx)).collect()
    }
}

/// One member of a batch: the resource, its action and planned difference.
pub type BatchItem<'a, T> = (&'a T, <T as Converge>::Action, &'a [<T as Converge>::Item]);

/// What `check` found for one action of one resource: rendered for people
/// and reports, and kept typed for `apply`.
#[derive(Debug)]
pub struct Planned {
    pub action: &'static str,
    pub changes: Vec<Change>,
    typed: Box<dyn Any + Send + Sync>,
    /// Renders `typed` for machines.
    json: fn(&(dyn Any + Send + Sync)) -> serde_json::Value,
}

impl Planned {
    /// Whether anything is to be done (skipped items are not).
    pub fn is_real(&self) -> bool {
        self.changes.iter().any(|c| !c.skipped)
    }

    /// Whether carrying it out fires the resource's notifications.
    pub fn notifies(&self) -> bool {
        self.changes.iter().any(|c| !c.skipped && c.notifies)
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The typed difference for machines: `{action, changes: [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "action": self.action,
            "changes": (self.json)(&*self.typed),
        })
    }
}

struct Typed<T: Converge> {
    action: T::Action,
    diff: Vec<T::Item>,
}

/// The engine's view of a resource: any [`Converge`] type, erased.
pub trait Resource: fmt::Debug + Send + Sync {
    /// Checks `action`, a name `compile` validated against the type's actions.
    fn plan(&self, action: &str, cx: &mut Context) -> ResourceResult<Planned>;
    /// Carries out what `plan` found.
    fn apply_plan(&self, planned: &Planned, cx: &mut Context) -> ResourceResult<()>;
    /// Resources that share a key may go through one [`Resource::apply_batch`].
    fn batch_key(&self) -> Option<TypeId>;
    /// Applies this resource's plan together with `rest` (same batch key).
    fn apply_batch(
        &self,
        planned: &Planned,
        rest: &[(&dyn Resource, &Planned)],
        cx: &mut Context,
    ) -> Vec<ResourceResult<()>>;
    fn as_any(&self) -> &dyn Any;
}

fn typed<T: Converge>(p: &Planned) -> &Typed<T> {
    p.typed
        .downcast_ref::<Typed<T>>()
        .expect("a plan is applied by the resource that made it")
}

impl<T: Converge> Resource for T {
    fn plan(&self, action: &str, cx: &mut Context) -> ResourceResult<Planned> {
        let a = T::Action::parse(action).ok_or_else(|| {
            RunError::precondition(format!("this resource has no action {action:?}"))
        })?;
        let diff = Converge::check(self, a, cx)?;
        let changes = diff
            .iter()
            .map(|i| Change {
                summary: i.to_string(),
                diff: i.diff(),
                skipped: i.skipped(),
                notifies: i.notifies(),
            })
            .collect();
        Ok(Planned {
            action: a.name(),
            changes,
            typed: Box::new(Typed::<T> { action: a, diff }),
            json: |t| {
                let t = t.downcast_ref::<Typed<T>>().expect("planned by T");
                serde_json::to_value(&t.diff).unwrap_or_default()
            },
        })
    }

    fn apply_plan(&self, planned: &Planned, cx: &mut Context) -> ResourceResult<()> {
        let t = typed::<T>(planned);
        Converge::apply(self, t.action, &t.diff, cx)
    }

    fn batch_key(&self) -> Option<TypeId> {
        T::BATCHES.then(TypeId::of::<T>)
    }

    fn apply_batch(
        &self,
        planned: &Planned,
        rest: &[(&dyn Resource, &Planned)],
        cx: &mut Context,
    ) -> Vec<ResourceResult<()>> {
        let first = typed::<T>(planned);
        let mut items: Vec<BatchItem<'_, T>> = vec![(self, first.action, first.diff.as_slice())];
        for (r, p) in rest {
            let r = r
                .as_any()
                .downcast_ref::<T>()
                .expect("a batch holds one type");
            let t = typed::<T>(p);
            items.push((r, t.action, t.diff.as_slice()));
        }
        T::apply_batch(&items, cx)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `type[name]`, how notifications and reports name a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    pub kind: String,
    pub name: String,
}

impl ResourceId {
    /// Parses `service[apache2]`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let open = s.find('[')?;
        let name = s[open + 1..].strip_suffix(']')?;
        let kind = &s[..open];
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(ResourceId {
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind, self.name)
    }
}

/// What a cookbook-relative `source` and template rendering need at build time.
pub trait BuildEnv {
    /// Contents of `files/<source>` or `templates/<source>` of the resource's
    /// cookbook, shared: resources that name one source hold one copy.
    fn cookbook_file(&self, dir: &str, source: &str) -> Result<Arc<[u8]>, PolicyError>;
    /// The whitelist's version of a package for this node.
    fn pin(&self, package: &str) -> Option<Pin>;
    /// The whitelist's fallback sources, when it names any.
    fn fallback(&self) -> Option<std::sync::Arc<crate::policy::whitelist::FallbackSource>> {
        None
    }
    /// Renders `templates/<source>` with the node's attributes and `variables`.
    fn render_template(
        &self,
        source: &str,
        variables: Option<&toml::Table>,
    ) -> Result<String, PolicyError>;
    /// Whether the template just rendered used a secret: its file's
    /// content then holds one, whatever the spec says.
    fn template_used_secret(&self) -> bool {
        false
    }
}

/// A resource as the recipe declares it, with strings already rendered and
/// the common properties taken out.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub props: toml::Table,
    pub sensitive: bool,
    /// Its content holds a secret (a file without a mode is then 0600).
    pub secret: bool,
    pub actions: Vec<String>,
}

impl Spec {
    /// The type-specific properties as a typed struct.
    pub fn props<T: DeserializeOwned>(&self) -> Result<T, PolicyError> {
        toml::Value::Table(self.props.clone())
            .try_into()
            .map_err(|e: toml::de::Error| PolicyError::new(e.message().trim().to_string()))
    }
}

pub type BuildFn = fn(&Spec, &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError>;

/// A resource type: its actions (the first is the default), its properties,
/// constructor and fingerprint reader.
#[derive(Debug)]
pub struct TypeDef {
    pub name: &'static str,
    pub actions: &'static [&'static str],
    pub properties: &'static [&'static str],
    /// The properties that may hold a `{{secret}}`: those whose value
    /// only ever goes into content or onto stdin (a file's content, an
    /// execute's command). A secret anywhere else is a policy error, since
    /// names, paths, argv and messages are printed, reported or visible
    /// to every user of the host.
    pub secret_properties: &'static [&'static str],
    pub build: BuildFn,
    pub fingerprint: FingerprintFn,
}

pub type FingerprintFn = fn(&str, &mut State) -> Option<String>;

impl TypeDef {
    /// The definition of a type implemented by `T`: actions and fingerprint come from it.
    pub const fn of<T: Converge>(
        name: &'static str,
        properties: &'static [&'static str],
        build: BuildFn,
    ) -> TypeDef {
        TypeDef {
            name,
            actions: <T::Action as Action>::NAMES,
            properties,
            secret_properties: &[],
            build,
            fingerprint: T::fingerprint,
        }
    }

    /// The same type, whose `properties` may hold a secret.
    pub const fn secrets_in(self, properties: &'static [&'static str]) -> TypeDef {
        TypeDef {
            secret_properties: properties,
            ..self
        }
    }
}

/// Properties every resource type accepts.
pub const COMMON_PROPERTIES: &[&str] = &[
    "action",
    "notifies",
    "notifies_immediately",
    "subscribes",
    "only_if",
    "not_if",
    "ignore_failure",
    "sensitive",
    "only_in_rollout",
    "not_in_rollout",
];

/// Every resource type kiln knows. `package` and `apt_repository` join with the whitelist.
pub fn types() -> &'static [TypeDef] {
    &[
        file::TYPE,
        template::TYPE,
        directory::TYPE,
        link::TYPE,
        user::TYPE,
        group::TYPE,
        service::TYPE,
        execute::TYPE,
        package::TYPE,
        apt_repository::TYPE,
        mariadb_database::TYPE,
        mariadb_user::TYPE,
        mariadb_seed::TYPE,
    ]
}

pub fn type_def(name: &str) -> Option<&'static TypeDef> {
    types().iter().find(|t| t.name == name)
}

/// Parses a mode given as `"0644"`, `"644"` or an integer written in octal digits.
pub fn parse_mode(v: &toml::Value) -> Result<u32, PolicyError> {
    let s = match v {
        toml::Value::String(s) => s,
        // `0o644` and `644` are both TOML integers and cannot be told
        // apart (0o644 is 420): guessing wrote 0420 files. Refuse.
        toml::Value::Integer(i) => {
            return Err(PolicyError::new(format!(
                "mode is the TOML integer {i} (octal {i:o}), not a file mode"
            ))
            .fix("quote the mode as an octal string, e.g. mode = \"0644\""));
        }
        other => {
            return Err(PolicyError::new(format!(
                "mode must be a string such as \"0644\", not {}",
                other.type_str()
            ))
            .fix("quote the mode as an octal string, e.g. mode = \"0644\""));
        }
    };
    // Octal digits only: no sign, no spaces, no other radix.
    let digits = s.strip_prefix("0o").unwrap_or(s);
    Some(digits)
        .filter(|d| !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .and_then(|d| u32::from_str_radix(d, 8).ok())
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            PolicyError::new(format!("mode {s:?} is not an octal file mode"))
                .fix("write the mode as a quoted octal string, e.g. mode = \"0644\"")
        })
}

/// Deserializes an optional mode property.
pub fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize;
    let v = Option::<toml::Value>::deserialize(d)?;
    v.map(|v| {
        parse_mode(&v).map_err(|e| {
            let fix = e.fix.map(|f| format!("; {f}")).unwrap_or_default();
            serde::de::Error::custom(format!("{}{fix}", e.message))
        })
    })
    .transpose()
}

/// A string or list of strings, as `action` and `notifies` accept.
pub fn string_list(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse() {
        let id = ResourceId::parse("service[apache2]").unwrap();
        assert_eq!((id.kind.as_str(), id.name.as_str()), ("service", "apache2"));
        assert_eq!(id.to_string(), "service[apache2]");
        assert!(ResourceId::parse("service apache2").is_none());
        assert!(ResourceId::parse("[x]").is_none());
    }

    #[test]
    fn modes() {
        let m = |s: &str| parse_mode(&toml::Value::String(s.into()));
        assert_eq!(m("0644").unwrap(), 0o644);
        assert_eq!(m("755").unwrap(), 0o755);
        assert!(m("0999").is_err());
        assert_eq!(m("0o640").unwrap(), 0o640);
        for bad in ["+0644", "-644", " 644", "0x1a4", "", "0o", "1_0", "77777"] {
            assert!(m(bad).is_err(), "{bad:?}");
        }
        let e = parse_mode(&toml::Value::Integer(0o644)).unwrap_err();
        assert!(e.fix.unwrap().contains("\"0644\""));
    }

    /// The rows of README.md's resource table: type, properties, actions.
    fn readme_table() -> Vec<(String, Vec<String>, Vec<String>)> {
        let readme = include_str!("../../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|l| !l.starts_with("| type (name is) | properties | actions"))
            .skip(2);
        let mut rows = Vec::new();
        while let Some(l) = lines.next().filter(|l| l.starts_with('|')) {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let [kind, props, actions] = cells[..] else {
                panic!("a row of three cells: {l}");
            };
            let kind = kind.split('`').nth(1).expect("a `type`").to_string();
            rows.push((kind, names_outside_parentheses(props), words(actions)));
        }
        assert!(!rows.is_empty(), "README.md has the resource table");
        rows
    }

    /// The `quoted` names of a cell, leaving out what parentheses explain.
    fn names_outside_parentheses(cell: &str) -> Vec<String> {
        let mut depth = 0;
        let mut outside = String::new();
        for c in cell.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => outside.push(c),
                _ => {}
            }
        }
        outside
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    fn words(cell: &str) -> Vec<String> {
        cell.split(',').map(|w| w.trim().to_string()).collect()
    }

    #[test]
    fn the_readme_table_matches_the_registered_types() {
        let rows = readme_table();
        let documented: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let registered: Vec<&str> = types().iter().map(|t| t.name).collect();
        assert_eq!(documented, registered, "the README's types, in order");
        for ((kind, props, actions), t) in rows.iter().zip(types()) {
            let mut want: Vec<&str> = t.properties.to_vec();
            let mut have: Vec<&str> = props.iter().map(String::as_str).collect();
            want.sort_unstable();
            have.sort_unstable();
            assert_eq!(have, want, "properties of {kind} in README.md");
            assert_eq!(
                actions, t.actions,
                "actions of {kind} in README.md (default first)"
            );
        }
    }

    #[test]
    fn every_type_has_a_default_action() {
        for t in types() {
            assert!(!t.actions.is_empty(), "{}", t.name);
        }
    }
}
