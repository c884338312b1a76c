//! Handlebars rendering in strict mode: a missing attribute is an error,
//! never an empty string. Output is not HTML-escaped: it is config text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use handlebars::{
    Context, Handlebars, Helper, HelperResult, JsonRender, Output, RenderContext,
    RenderErrorReason, Renderable, Template,
};

use super::escape::Typing;
use crate::secrets::{Placeholder, Resolver, Secrets};

pub use super::limits::RenderFailure;

pub struct Renderer<'s> {
    hb: Handlebars<'static>,
    /// The attributes, converted for handlebars once (not per render).
    context: Context,
    secrets: Resolver<'s>,
    /// Set by an escaping helper that refused a value.
    last_fix: super::escape::LastFix,
    /// Template files, parsed once: a template that many resources use
    /// would otherwise be parsed once per resource.
    parsed: Mutex<HashMap<String, Parsed>>,
}

type Parsed = Result<Arc<Template>, RenderFailure>;

/// Strings at least this long that need the parser are kept parsed, as
/// template files are; shorter ones (names and properties, mostly unique)
/// are parsed each time.
const KEEP_PARSED: usize = 256;

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
            let shown = format!("{s:?}");
            // Held to the same limits as templates: a partial calling itself
            // in an attribute overflowed the stack here too.
            let template = super::limits::parse(s).map_err(|f| RenderFailure {
                message: format!("attribute value {shown}: {}", f.message),
                ..f
            })?;
            let empty = Context::from(serde_json::Value::Null);
            *s = template
                .renders(&handlebars(&Arc::default(), &Arc::default()), &empty, &mut RenderContext::new(None))
                .map_err(|e| RenderFailure {
                    missing: None,
                    line: None,
                    message: format!(
                        "attribute value {shown}: {} (attribute values may use {{{{secret \"NAME\"}}}} only)",
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

/// Renders, without handlebars' parser, a text whose only tags are plain
/// dotted paths to existing values (`{{apache2.docroot}}/x`): the parser
/// was most of a small policy's compile, and most strings (and template
/// files such as `port={{app.port}}`) are these. None
/// for anything else (a helper, a block, whitespace control, an escape, a
/// missing value, ...), which then takes the parser's way: errors stay its.
/// A value is rendered by handlebars' own [`JsonRender`].
fn substitute(text: &str, ctx: &serde_json::Value) -> Option<String> {
    if text.contains('\\') || text.contains("{{{") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let tag = &rest[open + 2..];
        let close = tag.find("}}")?;
        let value = lookup(ctx, &tag[..close])?;
        match value {
            serde_json::Value::String(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Bool(_) => out.push_str(&value.render()),
            _ => return None,
        }
        rest = &tag[close + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// The value at a path of two or more plain names (`a.b`, `a.b-c.d`).
/// One name alone could be a helper's, and `this`, `true`, a number or an
/// `@` name mean something else to handlebars.
fn lookup<'v>(ctx: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    let plain = |s: &str| {
        let mut b = s.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            && !matches!(s, "this" | "else" | "true" | "false" | "null" | "as")
    };
    let mut at = ctx;
    let mut depth = 0;
    for name in path.split('.') {
        if !plain(name) {
            return None;
        }
        at = at.as_object()?.get(name)?;
        depth += 1;
    }
    (depth >= 2).then_some(at)
}

impl Renderer<'static> {
    /// A renderer whose secrets are placeholders (static compiles).
    pub fn new(attributes: &toml::Table) -> Self {
        Renderer::with_secrets(attributes, &Placeholder)
    }
}

impl<'s> Renderer<'s> {
    pub fn with_secrets(attributes: &toml::Table, secrets: &'s dyn Secrets) -> Self {
        Self::typed(attributes, secrets, Arc::default())
    }

    /// A renderer whose escaping helpers know the attributes' types and
    /// origins; secret values come from `secrets`.
    pub fn typed(attributes: &toml::Table, secrets: &'s dyn Secrets, typing: Arc<Typing>) -> Self {
        let context = Context::from(serde_json::to_value(attributes).unwrap_or_default());
        let last_fix = super::escape::LastFix::default();
        Renderer {
            hb: handlebars(&typing, &last_fix),
            context,
            secrets: Resolver::new(secrets),
            last_fix,
            parsed: Mutex::default(),
        }
    }

    /// Lets templates ask `{{#if (in_rollout "NAME")}}` of this node.
    pub fn with_rollouts(mut self, rollouts: Arc<super::rollout::Membership>) -> Self {
        super::rollout::register(&mut self.hb, rollouts, &self.last_fix);
        self
    }

    /// Where this renderer's secret values come from, and what it used.
    pub fn secrets(&self) -> &Resolver<'s> {
        &self.secrets
    }

    /// The attributes, as templates see them.
    pub fn context(&self) -> &serde_json::Value {
        self.context.data()
    }

    pub fn render(&self, text: &str) -> Result<String, RenderFailure> {
        self.render_with(text, &self.context, text.len() >= KEEP_PARSED)
    }

    /// Renders a template file with the attributes plus `variables` laid
    /// over them.
    pub fn render_vars(
        &self,
        text: &str,
        variables: Option<&toml::Table>,
    ) -> Result<String, RenderFailure> {
        match variables {
            None => self.render_with(text, &self.context, true),
            Some(vars) => {
                let mut ctx = self.context.clone();
                if let (Some(obj), Ok(serde_json::Value::Object(v))) =
                    (ctx.data_mut().as_object_mut(), serde_json::to_value(vars))
                {
                    obj.extend(v);
                }
                self.render_with(text, &ctx, true)
            }
        }
    }

    fn render_with(&self, text: &str, ctx: &Context, keep: bool) -> Result<String, RenderFailure> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        let out = match substitute(text, ctx.data()) {
            // The parser's limits hold for it too (the parser's way checks
            // them itself).
            Some(out) => {
                super::limits::precheck(text)?;
                out
            }
            None => self.render_parsed(text, ctx, keep)?,
        };
        if !Resolver::has_marker(&out) {
            return Ok(out);
        }
        self.secrets.substitute(&out).map_err(|e| RenderFailure {
            missing: None,
            line: None,
            message: e.to_string(),
            fix: None,
        })
    }

    fn render_parsed(
        &self,
        text: &str,
        ctx: &Context,
        keep: bool,
    ) -> Result<String, RenderFailure> {
        // Parsed and held to kiln's limits first: handlebars itself would
        // recurse without end on a partial that calls itself.
        let template = self.parse(text, keep)?;
        let rendered = template.renders(&self.hb, ctx, &mut RenderContext::new(None));
        rendered.map_err(|e| {
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
        })
    }

    fn parse(&self, text: &str, keep: bool) -> Parsed {
        if !keep {
            return super::limits::parse(text).map(Arc::new);
        }
        let known = self.parsed.lock().unwrap().get(text).cloned();
        known.unwrap_or_else(|| {
            let parsed = super::limits::parse(text).map(Arc::new);
            let mut kept = self.parsed.lock().unwrap();
            kept.insert(text.to_string(), parsed.clone());
            parsed
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

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Renderer<'static> {
        Renderer::new(&toml::from_str("[apache2]\ndocroot = \"/var/www\"\nhtml = \"<b>\"").unwrap())
    }

    #[test]
    fn renders_nested_attributes_without_escaping() {
        assert_eq!(r().render("{{apache2.docroot}}/x").unwrap(), "/var/www/x");
        assert_eq!(r().render("{{apache2.html}}").unwrap(), "<b>");
    }

    #[test]
    fn plain_paths_render_as_the_parser_renders_them() {
        let attrs = "[a]\ns = \"x}}y\"\nn = 8080\nf = 1.5\nt = true\nl = [1, \"b\"]\n\
                     \"max-workers\" = 4\n_u = \"u\"\n[a.t2]\nd = \"{{a.s}}\"";
        let r = Renderer::new(&toml::from_str(attrs).unwrap());
        let ctx = Context::from(r.context().clone());
        let taken = [
            "{{a.s}}",
            "{{a.n}}:{{a.f}}/{{a.t}}",
            "pre {{a.max-workers}} }} post",
            "{{a._u}}{{a.t2.d}}",
        ];
        for text in taken {
            let fast = substitute(text, r.context());
            assert!(fast.is_some(), "{text}");
            assert_eq!(
                fast.unwrap(),
                r.render_parsed(text, &ctx, false).unwrap(),
                "{text}"
            );
            assert_eq!(
                r.render(text).unwrap(),
                r.render_parsed(text, &ctx, false).unwrap()
            );
        }
        // Anything else goes to the parser, whose answers (and errors) stay.
        let left = [
            "{{a.l}}",
            "{{a.t2}}",
            "{{a.missing}}",
            "{{a.s.x}}",
            "{{ a.s }}",
            "{{~a.s~}}",
            "{{{a.s}}}",
            "\\{{a.s}}",
            "{{this.a.s}}",
            "{{a}}",
            "{{a.0}}",
            "{{@root.a.s}}",
            "{{a/s}}",
            "{{line a.s}}",
            "{{#if a.t}}{{a.s}}{{/if}}",
            "{{a.s",
            "{{!a.s}}",
        ];
        for text in left {
            assert_eq!(substitute(text, r.context()), None, "{text}");
        }
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
        let r = Renderer::with_secrets(&attrs, &Placeholder);
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
        let mut recursive = toml::Value::String(
            "{{#*inline \"p\"}}{{!-- }} {{/inline}} --}}{{> p}}{{/inline}}{{> p}}{{secret \"a\"}}"
                .into(),
        );
        let e = mark_secrets(&mut recursive).unwrap_err();
        assert!(e.message.contains("calls itself"), "{e:?}");
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
}
