//! Attribute types, declared by a cookbook in its attributes.toml under
//! `[types.COOKBOOK]`, and where each final attribute value came from.
//!
//! Values from roles, node files and inventories end up in unit files,
//! deb822 sources and config files on a host. A type says what a value may
//! be (a duration, a URL, a port), so that a value which would add a line
//! or an argument is refused before anything is written, with the file
//! that set it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex_automata::meta::Regex;

use crate::error::PolicyError;

/// What a typed attribute's value may be.
#[derive(Debug, Clone)]
pub enum AttrType {
    /// Any single-line string (no control character).
    String,
    /// Any string, lines included: the one type that lets a control
    /// character through the escaping helpers.
    Text,
    /// A duration as `kiln agent --interval` reads it (`30m`, `1h 30m`).
    Duration,
    /// An `http://` or `https://` URL without whitespace.
    Url,
    /// An absolute path without whitespace.
    Path,
    /// An integer, within `[min, max]` when given.
    Integer { min: Option<i64>, max: Option<i64> },
    /// A string that the regular expression matches whole.
    Pattern { source: String, re: Regex },
    /// One of a list of values.
    OneOf(Vec<toml::Value>),
    /// Any of several types (`["url", "path"]`).
    Any(Vec<AttrType>),
}

/// A declared type, and where.
#[derive(Debug, Clone)]
pub struct Declared {
    pub ty: AttrType,
    pub file: PathBuf,
}

/// The types of a node's attributes, by dotted path (`kiln.interval`).
pub type Types = BTreeMap<String, Declared>;

const SPEC_KEYS: &[&str] = &["pattern", "integer", "one_of"];
const FIX: &str = "declare a type as \"string\", \"text\", \"duration\", \"url\", \"path\", \"integer\", { pattern = 'REGEX' }, { integer = [MIN, MAX] }, { one_of = [...] }, or a list of these";

/// Takes `[types]` out of a cookbook's attributes (the second reserved
/// top-level key, beside `releases`) and parses it.
pub fn split_types(attributes: &mut toml::Table, file: &Path) -> Result<Types, PolicyError> {
    let mut out = Types::new();
    let Some(value) = attributes.remove("types") else {
        return Ok(out);
    };
    let toml::Value::Table(t) = value else {
        return Err(
            PolicyError::new("types must be a table: [types.COOKBOOK] with KEY = TYPE")
                .in_file(file)
                .fix(FIX),
        );
    };
    collect(&t, "", file, &mut out)?;
    Ok(out)
}

fn collect(t: &toml::Table, prefix: &str, file: &Path, out: &mut Types) -> Result<(), PolicyError> {
    for (k, v) in t {
        let path = join(prefix, k);
        match v {
            toml::Value::Table(inner) if !inner.keys().any(|k| SPEC_KEYS.contains(&k.as_str())) => {
                collect(inner, &path, file, out)?
            }
            _ if prefix.is_empty() => {
                return Err(PolicyError::new(format!(
                    "types.{k}: a type needs an attribute under a cookbook's name"
                ))
                .in_file(file)
                .fix(format!(
                    "write [types.COOKBOOK] and under it KEY = TYPE: {FIX}"
                )));
            }
            _ => {
                let ty = parse(v).map_err(|m| {
                    let e = PolicyError::new(format!("types.{path}: {m}"))
                        .in_file(file)
                        .fix(FIX);
                    match line_of(file, &format!("types.{path}")) {
                        Some(l) => e.at_line(l, None),
                        None => e,
                    }
                })?;
                out.insert(
                    path,
                    Declared {
                        ty,
                        file: file.to_path_buf(),
                    },
                );
            }
        }
    }
    Ok(())
}

/// `prefix.key`, or `key` at the top.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// What is wrong with one type declaration, worded to follow its key
/// (`types.apache2.port: unknown type "prot"`).
#[derive(Debug, thiserror::Error)]
enum TypeProblem {
    #[error("unknown type {0:?}")]
    UnknownName(String),
    #[error("pattern {pattern:?} is not a regular expression: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("integer takes [MIN, MAX], two integers with MIN <= MAX")]
    IntegerRange,
    #[error("{0} is not a type")]
    NotAType(String),
}

/// One type declaration: a name, a one-key table, or a list of either.
fn parse(v: &toml::Value) -> Result<AttrType, TypeProblem> {
    match v {
        toml::Value::String(s) => match s.as_str() {
            "string" => Ok(AttrType::String),
            "text" => Ok(AttrType::Text),
            "duration" => Ok(AttrType::Duration),
            "url" => Ok(AttrType::Url),
            "path" => Ok(AttrType::Path),
            "integer" => Ok(AttrType::Integer {
                min: None,
                max: None,
            }),
            other => Err(TypeProblem::UnknownName(other.to_string())),
        },
        toml::Value::Array(a) if !a.is_empty() => Ok(AttrType::Any(
            a.iter().map(parse).collect::<Result<_, _>>()?,
        )),
        toml::Value::Table(t) if t.len() == 1 => {
            let (k, v) = t.iter().next().expect("one key");
            match (k.as_str(), v) {
                ("pattern", toml::Value::String(p)) => {
                    let re = whole(p).map_err(|source| TypeProblem::Pattern {
                        pattern: p.clone(),
                        source,
                    })?;
                    Ok(AttrType::Pattern {
                        source: p.clone(),
                        re,
                    })
                }
                ("integer", toml::Value::Array(r)) => match r.as_slice() {
                    [toml::Value::Integer(min), toml::Value::Integer(max)] if min <= max => {
                        Ok(AttrType::Integer {
                            min: Some(*min),
                            max: Some(*max),
                        })
                    }
                    _ => Err(TypeProblem::IntegerRange),
                },
                ("one_of", toml::Value::Array(vs)) if !vs.is_empty() => {
                    Ok(AttrType::OneOf(vs.clone()))
                }
                _ => Err(TypeProblem::NotAType(format!("{k} = {v}"))),
            }
        }
        other => Err(TypeProblem::NotAType(other.to_string())),
    }
}

/// A regex that matches `pattern` against a whole value. Compiled once
/// per process: every compile loads the cookbooks anew, and `kiln check`
/// compiles each role for each release. Built as `regex::Regex::new`
/// builds it (the same syntax, limits and matches), without the lazy and
/// one-pass DFAs: their builds (with a reverse NFA) were most of each
/// compile, for values a few bytes long.
fn whole(pattern: &str) -> Result<Regex, regex::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(re.clone());
    }
    let full = format!("^(?:{pattern})$");
    let config = regex_automata::meta::Config::new()
        .nfa_size_limit(Some(10 << 20))
        .match_kind(regex_automata::MatchKind::LeftmostFirst)
        .utf8_empty(true)
        .hybrid(false)
        .dfa(false)
        .onepass(false)
        .pool_capacity(1);
    let built = regex_automata::meta::Builder::new()
        .configure(config)
        .syntax(regex_automata::util::syntax::Config::new().utf8(true))
        .build(&full);
    let re = match built {
        Ok(re) => re,
        // The regex crate's own words for it (the same parser and limits).
        Err(e) => {
            return Err(regex::Regex::new(&full)
                .err()
                .unwrap_or_else(|| regex::Error::Syntax(e.to_string())));
        }
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pattern.to_string(), re.clone());
    Ok(re)
}

impl AttrType {
    /// Why `v` is not of this type, or None when it is.
    pub fn problem(&self, v: &toml::Value) -> Option<String> {
        let s = v.as_str();
        let single = |s: &str| !s.chars().any(char::is_control);
        match self {
            AttrType::String => match s {
                Some(s) if single(s) => None,
                Some(_) => Some("contains a control character (a newline, tab or escape)".into()),
                None => Some("not a string".into()),
            },
            AttrType::Text => s.is_none().then(|| "not a string".into()),
            AttrType::Duration => match s {
                Some(s) if single(s) && humantime::parse_duration(s).is_ok() => None,
                _ => Some("not a duration".into()),
            },
            AttrType::Url => match s {
                Some(s) if is_url(s) => None,
                _ => Some("not an http:// or https:// URL without spaces".into()),
            },
            AttrType::Path => match s {
                Some(s) if is_path(s) => None,
                _ => Some("not an absolute path without spaces".into()),
            },
            AttrType::Integer { min, max } => {
                let n = match v {
                    toml::Value::Integer(n) => Some(*n),
                    toml::Value::String(s) => s.parse::<i64>().ok(),
                    _ => None,
                };
                let Some(n) = n else {
                    return Some("not an integer".into());
                };
                let low = min.is_some_and(|m| n < m);
                let high = max.is_some_and(|m| n > m);
                (low || high).then(|| {
                    format!(
                        "not between {} and {}",
                        min.map_or("any".into(), |m| m.to_string()),
                        max.map_or("any".into(), |m| m.to_string())
                    )
                })
            }
            AttrType::Pattern { source, re } => match s {
                Some(s) if re.is_match(s) => None,
                _ => Some(format!("does not match the pattern {source:?}")),
            },
            AttrType::OneOf(vs) => {
                let same = |o: &toml::Value| {
                    o == v
                        || (o.as_str().is_some() && o.as_str() == s)
                        || matches!((o, s), (toml::Value::Integer(n), Some(s)) if n.to_string() == s)
                };
                (!vs.iter().any(same)).then(|| {
                    let list: Vec<String> = vs.iter().map(ToString::to_string).collect();
                    format!("not one of {}", list.join(", "))
                })
            }
            AttrType::Any(ts) => {
                let problems: Vec<String> = ts.iter().filter_map(|t| t.problem(v)).collect();
                (problems.len() == ts.len()).then(|| problems.join(", and "))
            }
        }
    }

    /// What a good value looks like, for the fix.
    pub fn describe(&self) -> String {
        match self {
            AttrType::String => "a string on one line".into(),
            AttrType::Text => "a string".into(),
            AttrType::Duration => "a duration such as \"30m\" or \"1h 30m\"".into(),
            AttrType::Url => "an http:// or https:// URL without spaces".into(),
            AttrType::Path => "an absolute path without spaces, such as \"/srv/app\"".into(),
            AttrType::Integer {
                min: Some(a),
                max: Some(b),
            } => format!("an integer from {a} to {b}"),
            AttrType::Integer { .. } => "an integer".into(),
            AttrType::Pattern { source, .. } => format!("a string that matches {source:?} whole"),
            AttrType::OneOf(vs) => {
                let list: Vec<String> = vs.iter().map(ToString::to_string).collect();
                format!("one of {}", list.join(", "))
            }
            AttrType::Any(ts) => ts
                .iter()
                .map(AttrType::describe)
                .collect::<Vec<_>>()
                .join(", or "),
        }
    }

    /// Whether a value of this type may hold a control character (then
    /// the escaping helpers write it as it is).
    pub fn allows_control(&self) -> bool {
        match self {
            AttrType::Text => true,
            AttrType::Pattern { re, .. } => ["\n", "\t", "\r"].iter().any(|c| re.is_match(c)),
            AttrType::Any(ts) => ts.iter().any(AttrType::allows_control),
            _ => false,
        }
    }
}

/// An `http://` or `https://` URL with a host, and no whitespace.
pub fn is_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

fn is_path(s: &str) -> bool {
    s.starts_with('/') && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Where an attribute's final value came from: the file that set it last,
/// in precedence order, and the line when one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// The table the layer's attributes live under in the file
    /// (`default_attributes`, `releases.trixie`; empty for the top).
    pub table: String,
    /// The line when the key's own cannot be found (an inventory host's).
    pub line: Option<usize>,
}

impl Origin {
    /// Attributes at the top of `file`.
    pub fn file(file: &Path) -> Origin {
        Origin::under(file, "")
    }

    /// Attributes under `[table]` of `file`.
    pub fn under(file: &Path, table: &str) -> Origin {
        Origin {
            file: file.to_path_buf(),
            table: table.to_string(),
            line: None,
        }
    }

    /// The line of `path`'s key in the file, when it can be told.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        line_of(&self.file, &join(&self.table, path)).or(self.line)
    }

    /// `FILE:LINE` (or `FILE`) for a message.
    pub fn shown(&self, path: &str) -> String {
        match self.line_of(path) {
            Some(l) => format!("{}:{l}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// The origin of every value of a merged attribute table, by dotted path.
pub type Origins = BTreeMap<String, Origin>;

/// Records `origin` for every value of `layer`, as [`super::attributes::merge`]
/// lays it over what is there.
pub fn record(origins: &mut Origins, layer: &toml::Table, origin: &Origin) {
    fn walk(t: &toml::Table, prefix: &str, origins: &mut Origins, origin: &Origin) {
        for (k, v) in t {
            let path = join(prefix, k);
            // A table too: a typed attribute that a layer made a table
            // names that layer.
            if let toml::Value::Table(inner) = v {
                walk(inner, &path, origins, origin);
            }
            origins.insert(path, origin.clone());
        }
    }
    walk(layer, "", origins, origin);
}

/// The value at a dotted path of a table.
pub fn lookup<'a>(t: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// A node's own untyped attributes (a node file, an inventory host) hold
/// no control character: a template that writes such a value without an
/// escaping helper would take its lines as its own. A typed one answers
/// to its type ([`check`]).
pub fn check_node(node: &toml::Table, types: &Types, origin: &Origin) -> Vec<PolicyError> {
    fn walk(v: &toml::Value, path: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) if s.chars().any(char::is_control) => out.push(path.to_string()),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, path, out)),
            toml::Value::Table(t) => t.iter().for_each(|(k, x)| walk(x, &join(path, k), out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    node.iter().for_each(|(k, v)| walk(v, k, &mut found));
    found.dedup();
    found
        .into_iter()
        .filter(|path| !types.contains_key(path))
        .map(|path| {
            let e = PolicyError::new(format!(
                "attribute {path}: a node's attribute holds a control character (a newline, tab or escape)"
            ))
            .in_file(&origin.file)
            .fix(format!(
                "give {path} on one line of printable text, or declare its type (\"text\" if it may span lines) under [types] in its cookbook's attributes.toml"
            ));
            match origin.line_of(&path) {
                Some(l) => e.at_line(l, None),
                None => e,
            }
        })
        .collect()
}

/// Every problem of the typed attributes' final values, each naming the
/// file (and line) that set the value, the attribute, what is wrong and
/// the fix. A secret's value is not known here and is not checked.
pub fn check(attributes: &toml::Table, types: &Types, origins: &Origins) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    for (path, d) in types {
        let Some(v) = lookup(attributes, path) else {
            continue;
        };
        if v.as_str().is_some_and(crate::secrets::Resolver::has_marker) {
            continue;
        }
        let Some(problem) = d.ty.problem(v) else {
            continue;
        };
        let origin = origins
            .get(path)
            .cloned()
            .unwrap_or_else(|| Origin::file(&d.file));
        // On one line, control characters escaped, as TOML would write it.
        let shown = match v {
            toml::Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let mut e = PolicyError::new(format!(
            "attribute {path} = {shown}: {problem} (its type is declared in {})",
            d.file.display()
        ))
        .in_file(&origin.file)
        .fix(format!("set {path} to {}", d.ty.describe()));
        if let Some(line) = origin.line_of(path) {
            e = e.at_line(line, None);
        }
        errors.push(e);
    }
    errors
}

/// The line of the key of the dotted `path` in a TOML file: a `key =`
/// line whose table header and dotted key make up the path (`[a.b]` then
/// `c =`, or `b.c =` under `[a]`), else an inline table's `{ c =` (an
/// inventory's `attributes = {...}`). Only a line that is the one
/// candidate counts.
fn line_of(file: &Path, path: &str) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let last = path.rsplit('.').next()?;
    let unquote = |k: &str| -> String {
        k.split('.')
            .map(|p| p.trim().trim_matches(['"', '\'']))
            .collect::<Vec<_>>()
            .join(".")
    };
    let needles = [format!("{{ {last} ="), format!(", {last} =")];
    let mut header = String::new();
    let (mut exact, mut inline) = (Vec::new(), Vec::new());
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            header = unquote(t.trim_matches(['[', ']']));
            continue;
        }
        if let Some((key, _)) = t.split_once('=')
            && !key.contains(['{', '[', '#'])
            && join(&header, &unquote(key)) == path
        {
            exact.push(i + 1);
        }
        if needles.iter().any(|n| l.contains(n.as_str())) {
            inline.push(i + 1);
        }
    }
    match (exact.as_slice(), inline.as_slice()) {
        ([one], _) | ([], [one]) => Some(*one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pattern matches what the regex crate's own build matches, and an
    /// invalid one is refused in its words.
    #[test]
    fn patterns_match_as_the_regex_crate_matches() {
        let patterns = [
            r#"[^\s"<>\\]+"#,
            "[A-Za-z0-9.:-]+",
            "[^'\\\\\\p{Cc}]*",
            "[a-z_][a-z0-9_-]{0,31}",
            r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):[0-9]{1,5}|",
            r"\w+\b",
            "a|ab",
            "",
        ];
        let values = [
            "",
            "a",
            "ab",
            "web01",
            "x y",
            "é",
            "naïve",
            "host:8125",
            "[::1]:8125",
            "a\nb",
            "\t",
            "it's",
            "back\\slash",
            "<b>",
            "\u{7f}",
            "Ünïcödé_1",
        ];
        for p in patterns {
            let ours = whole(p).unwrap();
            let theirs = regex::Regex::new(&format!("^(?:{p})$")).unwrap();
            for v in values {
                assert_eq!(ours.is_match(v), theirs.is_match(v), "{p:?} on {v:?}");
            }
        }
        for bad in ["[a-", "(", "a{2,1}", "\\p{Nope}"] {
            let e = whole(bad).unwrap_err();
            let theirs = regex::Regex::new(&format!("^(?:{bad})$")).unwrap_err();
            assert_eq!(e.to_string(), theirs.to_string());
        }
    }

    fn ty(s: &str) -> AttrType {
        let t: toml::Table = toml::from_str(&format!("t = {s}")).unwrap();
        parse(&t["t"]).unwrap()
    }

    #[test]
    fn each_type_accepts_and_refuses() {
        let ok = |t: &str, v: &str| {
            let v: toml::Table = toml::from_str(&format!("v = {v}")).unwrap();
            ty(t).problem(&v["v"])
        };
        assert_eq!(ok("\"duration\"", "\"30m\""), None);
        assert!(ok("\"duration\"", "\"30m\\nExecStartPre=/bin/sh\"").is_some());
        assert_eq!(ok("\"url\"", "\"https://x/b.tar\""), None);
        assert!(ok("\"url\"", "\"https://x/b.tar --allowed-signers /x\"").is_some());
        assert_eq!(ok("[\"url\", \"path\"]", "\"/var/lib/kiln\""), None);
        assert!(ok("[\"url\", \"path\"]", "\"var\"").is_some());
        assert_eq!(ok("{ integer = [1, 10] }", "10"), None);
        assert_eq!(ok("{ integer = [1, 10] }", "\"3\""), None);
        assert!(ok("{ integer = [1, 10] }", "11").is_some());
        assert_eq!(ok("{ pattern = '[a-z]+' }", "\"abc\""), None);
        assert!(ok("{ pattern = '[a-z]+' }", "\"abc\\n\"").is_some());
        assert_eq!(ok("{ one_of = [\"yes\", \"no\"] }", "\"no\""), None);
        assert!(ok("{ one_of = [\"yes\", \"no\"] }", "\"on\"").is_some());
        assert!(ty("\"text\"").allows_control());
        assert!(!ty("\"string\"").allows_control());
    }

    #[test]
    fn types_are_taken_out_of_the_attributes() {
        let mut t: toml::Table = toml::from_str(
            "[kiln]\ninterval = \"30m\"\n[types.kiln]\ninterval = \"duration\"\n[types.mariadb.app]\nhost = { pattern = '.*' }\n",
        )
        .unwrap();
        let types = split_types(&mut t, Path::new("a.toml")).unwrap();
        assert!(!t.contains_key("types"));
        assert!(types.contains_key("kiln.interval"));
        assert!(types.contains_key("mariadb.app.host"));
        let mut bad: toml::Table = toml::from_str("[types.kiln]\ninterval = \"later\"\n").unwrap();
        let e = split_types(&mut bad, Path::new("a.toml")).unwrap_err();
        assert!(e.message.contains("unknown type \"later\""), "{e}");
    }
}
