//! Handlebars rendering in strict mode: a missing attribute is an error,
//! never an empty string. Output is not HTML-escaped: it is config text.

use handlebars::{Handlebars, RenderErrorReason};

/// Why a string or template did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    /// The attribute path that does not exist, when that is the reason.
    pub missing: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

pub struct Renderer {
    hb: Handlebars<'static>,
    context: serde_json::Value,
}

impl Renderer {
    pub fn new(attributes: &toml::Table) -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        let context = serde_json::to_value(attributes).unwrap_or_default();
        Renderer { hb, context }
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
        self.hb.render_template(text, ctx).map_err(|e| {
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
            RenderFailure {
                missing,
                line,
                message,
            }
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
}
