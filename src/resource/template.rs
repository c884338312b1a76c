//! `template`: a file whose content is a handlebars template from the
//! cookbook, rendered at compile time so that a missing attribute stops the
//! run before anything changes.

use serde::Deserialize;

use super::file::{File, check_absolute, secret_mode};
use super::fsmeta::Meta;
use super::{BuildEnv, Resource, Spec, TypeDef};
use crate::error::PolicyError;

/// A `file` in all but how its content is made: same actions, same fingerprint.
pub const TYPE: TypeDef = TypeDef::of::<File>(
    "template",
    &["source", "variables", "owner", "group", "mode"],
    build,
)
// Variables go into the rendered content, and only there.
.secrets_in(&["variables"]);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    source: String,
    variables: Option<toml::Table>,
    #[serde(flatten)]
    meta: Meta,
}

fn build(spec: &Spec, env: &dyn BuildEnv) -> Result<Box<dyn Resource>, PolicyError> {
    let p: Props = spec.props()?;
    check_absolute(&spec.name)?;
    let text = env.render_template(&p.source, p.variables.as_ref())?;
    let marked;
    let spec = if env.template_used_secret() {
        marked = Spec {
            sensitive: true,
            secret: true,
            ..spec.clone()
        };
        &marked
    } else {
        spec
    };
    Ok(Box::new(File {
        path: spec.name.clone(),
        content: Some(text.into_bytes().into()),
        meta: secret_mode(p.meta, spec),
        sensitive: spec.sensitive,
    }))
}
