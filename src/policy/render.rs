//! Handlebars rendering in strict mode: a missing attribute is an error,
//! never an empty string. Output is not HTML-escaped: it is config text.

use std::sync::Arc;

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};

use super::escape::Typing;
use crate::secrets::{Resolver, Source};

/// Why a string or template did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    /// The attribute path that does not exist, when that is the reason.
    pub missing: Option<String>,
    pub line: Option<usize>,
    pub message: String,
    /// The fix, when the failure knows it (an escaping helper's).
    pub fix: Option<String>,
}

pub struct Renderer {
    hb: Handlebars<'static>,
    context: serde_json::Value,
    secrets: Arc<Resolver>,
    /// Set by an escaping helper that refused a value.
    last_fix: super::escape::LastFix,
}

/// `{{secret "NAME"}}`: writes a marker that the renderer replaces with
/// the value once the text is rendered (see [`crate::secrets::resolve`]).
fn secret_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let name = match (h.param(0).and_then(|p| p.value().as_str()), h.param(1)) {
        (Some(n), None) => n,
        _ => {
            return Err(RenderErrorReason::Other(
                "secret takes one quoted name: {{secret \"mariadb/app_password\"}}".into(),
            )
            .into());
        }
    };
    crate::secrets::validate_name(name).map_err(|e| RenderErrorReason::Other(e.message))?;
    out.write(&crate::secrets::resolve::marker(name))?;
    Ok(())
}

fn handlebars(typing: &Arc<Typing>, last_fix: &super::escape::LastFix) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("secret", Box::new(secret_helper));
    super::escape::register(&mut hb, typing, last_fix);
    hb
}

/// Turns `{{secret "NAME"}}` in attribute values into markers, so that an
/// attribute can carry a secret to wherever it is used (and make that
/// resource sensitive) without its value ever being in the attributes.
pub fn mark_secrets(value: &mut toml::Value) -> Result<(), RenderFailure> {
    match value {
        toml::Value::String(s) if s.contains("{{") && s.contains("secret") => {
            let hb = handlebars(&Arc::default(), &Arc::default());
            *s = hb
                .render_template(s, &serde_json::Value::Null)
                .map_err(|e| RenderFailure {
                    missing: None,
                    line: None,
                    message: format!(
                        "attribute value {s:?}: {} (attribute values may use {{{{secret \"NAME\"}}}} only)",
                        e.reason()
                    ),
                    fix: None,
                })?;
            Ok(())
        }
        toml::Value::Array(a) => a.iter_mut().try_for_each(mark_secrets),
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, v)| mark_secrets(v)),
        _ => Ok(()),
    }
}

/// The dotted key of the first value in `table` that calls the secret
/// helper. Node and inventory attributes may not: they are not the
/// policy's own, and would carry any secret into any file. A value that
/// does not render alone and names `secret` counts as one.
pub fn secret_in(table: &toml::Table) -> Option<String> {
    fn walk(v: &toml::Value, at: &str) -> Option<String> {
        match v {
            toml::Value::String(s) if s.contains("{{") && s.contains("secret") => {
                let mut probe = v.clone();
                let uses = mark_secrets(&mut probe)
                    .map_or(true, |()| probe.as_str().is_some_and(Resolver::has_marker));
                uses.then(|| at.to_string())
            }
            toml::Value::Array(a) => a.iter().find_map(|x| walk(x, at)),
            toml::Value::Table(t) => t.iter().find_map(|(k, x)| walk(x, &format!("{at}.{k}"))),
            _ => None,
        }
    }
    table.iter().find_map(|(k, v)| walk(v, k))
}

impl Renderer {
    /// A renderer whose secrets are placeholders (static compiles).
    pub fn new(attributes: &toml::Table) -> Self {
        Self::with_secrets(attributes, Arc::new(Resolver::new(Source::Placeholder)))
    }

    pub fn with_secrets(attributes: &toml::Table, secrets: Arc<Resolver>) -> Self {
        Self::typed(attributes, secrets, Arc::default())
    }

    /// A renderer whose escaping helpers know the attributes' types and
    /// origins.
    pub fn typed(attributes: &toml::Table, secrets: Arc<Resolver>, typing: Arc<Typing>) -> Self {
        let context = serde_json::to_value(attributes).unwrap_or_default();
        let last_fix = super::escape::LastFix::default();
        Renderer {
            hb: handlebars(&typing, &last_fix),
            context,
            secrets,
            last_fix,
        }
    }

    /// Where this renderer's secret values come from, and what it used.
    pub fn secrets(&self) -> &Resolver {
        &self.secrets
    }

    /// The attributes, as templates see them.
    pub fn context(&self) -> &serde_json::Value {
        &self.context
    }

    pub fn render(&self, text: &str) -> Result<String, RenderFailure> {
        self.render_with(text, &self.context)
    }

    /// Renders with the attributes plus `variables` laid over them.
    pub fn render_vars(
        &self,
        text: &str,
        variables: Option<&toml::Table>,
    ) -> Result<String, RenderFailure> {
        match variables {
            None => self.render(text),
            Some(vars) => {
                let mut ctx = self.context.clone();
                if let (Some(obj), Ok(serde_json::Value::Object(v))) =
                    (ctx.as_object_mut(), serde_json::to_value(vars))
                {
                    obj.extend(v);
                }
                self.render_with(text, &ctx)
            }
        }
    }

    fn render_with(&self, text: &str, ctx: &serde_json::Value) -> Result<String, RenderFailure> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        check_partials(text)?;
        let out = self.hb.render_template(text, ctx).map_err(|e| {
            let (missing, message) = match e.reason() {
                RenderErrorReason::MissingVariable(Some(path)) => (
                    Some(path.clone()),
                    format!("attribute {path:?} is not defined"),
                ),
                RenderErrorReason::TemplateError(t) => {
                    (None, format!("template syntax: {}", t.reason()))
                }
                other => (None, other.to_string()),
            };
            let line = match e.reason() {
                RenderErrorReason::TemplateError(t) => t.pos().map(|p| p.0),
                _ => e.line_no,
            };
            let fix = self
                .last_fix
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            RenderFailure {
                missing,
                line,
                message,
                fix,
            }
        })?;
        if !Resolver::has_marker(&out) {
            return Ok(out);
        }
        self.secrets
            .substitute(&out)
            .map_err(|message| RenderFailure {
                missing: None,
                line: None,
                message,
                fix: None,
            })
    }

    /// Renders every string inside a TOML value, in place.
    pub fn render_value(&self, v: &mut toml::Value) -> Result<(), RenderFailure> {
        match v {
            toml::Value::String(s) => {
                if s.contains("{{") {
                    *s = self.render(s)?;
                }
                Ok(())
            }
            toml::Value::Array(a) => a.iter_mut().try_for_each(|x| self.render_value(x)),
            toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, x)| self.render_value(x)),
            _ => Ok(()),
        }
    }
}

/// How deep inline partials may call each other. handlebars recurses on
/// the stack without a limit: a partial that calls itself overflowed it.
pub const MAX_PARTIAL_DEPTH: usize = 32;

/// Refuses, before rendering, partial calls that recurse or nest deeper
/// than [`MAX_PARTIAL_DEPTH`]. Only inline partials exist (kiln registers
/// none), so the call graph is all in `text`.
fn check_partials(text: &str) -> Result<(), RenderFailure> {
    use std::collections::HashMap;
    let fail = |line: usize, message: String| RenderFailure {
        missing: None,
        line: Some(line),
        message,
        fix: None,
    };
    // Calls made at the top level ("") and inside each `{{#*inline}}`.
    let mut calls: HashMap<String, Vec<(String, usize)>> = HashMap::new();
    let mut inside: Vec<String> = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let start = offset + open;
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let tag = after[..close].trim_start_matches(['{', '~']).trim();
        let line = text[..start].matches('\n').count() + 1;
        let word = |t: &str| {
            t.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(['"', '\''])
                .to_string()
        };
        if let Some(def) = tag.strip_prefix("#*inline") {
            inside.push(word(def));
        } else if tag.starts_with("/inline") {
            inside.pop();
        } else if let Some(call) = tag.strip_prefix('>').or_else(|| tag.strip_prefix("#>")) {
            let call = call.trim();
            if call.starts_with('(') {
                return Err(fail(
                    line,
                    "dynamic partials ({{> (...)}}) are not supported: name the partial".into(),
                ));
            }
            let name = word(call);
            if !name.starts_with('@') {
                let from = inside.last().cloned().unwrap_or_default();
                calls.entry(from).or_default().push((name, line));
            }
        }
        offset = start + 2 + close + 2;
        rest = &text[offset..];
    }
    // Depth-first from the top level; the path is the current call chain.
    fn walk(
        calls: &HashMap<String, Vec<(String, usize)>>,
        from: &str,
        path: &mut Vec<String>,
    ) -> Result<(), (usize, String)> {
        for (name, line) in calls.get(from).into_iter().flatten() {
            if let Some(pos) = path.iter().position(|p| p == name) {
                let mut cycle = path[pos..].to_vec();
                cycle.push(name.clone());
                return Err((
                    *line,
                    format!(
                        "partial {name:?} calls itself ({}): it would recurse forever",
                        cycle.join(" -> ")
                    ),
                ));
            }
            if path.len() >= MAX_PARTIAL_DEPTH {
                return Err((
                    *line,
                    format!("partials nest more than {MAX_PARTIAL_DEPTH} deep"),
                ));
            }
            path.push(name.clone());
            walk(calls, name, path)?;
            path.pop();
        }
        Ok(())
    }
    walk(&calls, "", &mut Vec::new()).map_err(|(line, message)| fail(line, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Renderer {
        Renderer::new(&toml::from_str("[apache2]\ndocroot = \"/var/www\"\nhtml = \"<b>\"").unwrap())
    }

    #[test]
    fn renders_nested_attributes_without_escaping() {
        assert_eq!(r().render("{{apache2.docroot}}/x").unwrap(), "/var/www/x");
        assert_eq!(r().render("{{apache2.html}}").unwrap(), "<b>");
    }

    #[test]
    fn missing_attribute_is_named() {
        let e = r().render("{{apache2.port}}").unwrap_err();
        assert_eq!(e.missing.as_deref(), Some("apache2.port"));
    }

    #[test]
    fn variables_overlay_attributes() {
        let vars: toml::Table = toml::from_str("port = 8080").unwrap();
        assert_eq!(r().render_vars("{{port}}", Some(&vars)).unwrap(), "8080");
    }

    #[test]
    fn secrets_render_through_templates_and_attributes() {
        let mut attrs: toml::Table =
            toml::from_str("[db]\npassword = '{{secret \"db/pw\"}}'").unwrap();
        for (_, v) in attrs.iter_mut() {
            mark_secrets(v).unwrap();
        }
        let r = Renderer::with_secrets(&attrs, Arc::new(Resolver::new(Source::Placeholder)));
        assert_eq!(
            r.render("pw={{db.password}}").unwrap(),
            format!("pw={}", crate::secrets::resolve::PLACEHOLDER)
        );
        assert_eq!(r.secrets().uses(), 1);
        r.render("{{secret \"other\"}}").unwrap();
        assert_eq!(r.secrets().used().len(), 2);
        assert!(r.render("{{secret \"../x\"}}").is_err());
        assert!(r.render("{{secret}}").is_err());
        let mut bad = toml::Value::String("{{secret \"a\"}}{{db.x}}".into());
        assert!(mark_secrets(&mut bad).is_err());
    }

    #[test]
    fn secrets_in_node_attributes_are_found_by_key() {
        let t: toml::Table = toml::from_str(
            "[app]\nmotd = \"hi\"\nlist = [\"x\", '{{ secret \"a/b\" }}']\nplain = \"{{not a secret}}\"",
        )
        .unwrap();
        assert_eq!(secret_in(&t).as_deref(), Some("app.list"));
        let t: toml::Table = toml::from_str("motd = '{{~secret \"a\"~}}'").unwrap();
        assert_eq!(secret_in(&t).as_deref(), Some("motd"));
        // What cannot be told apart from a use is refused, plain text is not.
        let t: toml::Table = toml::from_str("motd = '{{x}} secret'").unwrap();
        assert_eq!(secret_in(&t).as_deref(), Some("motd"));
        let t: toml::Table = toml::from_str("motd = 'a secret {x}'").unwrap();
        assert_eq!(secret_in(&t), None);
    }

    #[test]
    fn recursive_and_deep_partials_are_refused() {
        let e = r()
            .render("a\n{{#*inline \"p\"}}{{> p}}{{/inline}}\n{{> p}}")
            .unwrap_err();
        assert!(e.message.contains("calls itself"), "{e:?}");
        let mut deep = String::new();
        for i in 0..40 {
            deep += &format!(
                "{{{{#*inline \"p{i}\"}}}}{{{{> p{}}}}}{{{{/inline}}}}",
                i + 1
            );
        }
        deep += "{{#*inline \"p40\"}}x{{/inline}}{{> p0}}";
        let e = r().render(&deep).unwrap_err();
        assert!(e.message.contains("more than 32 deep"), "{e:?}");
        let ok =
            "{{#*inline \"a\"}}A{{> b}}{{/inline}}{{#*inline \"b\"}}B{{/inline}}{{> a}}{{> a}}";
        assert_eq!(r().render(ok).unwrap(), "ABAB");
    }
}
