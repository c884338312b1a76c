//! Placeholder: being written.
use super::TypeDef;
pub const TYPE: TypeDef = TypeDef { name: "group", actions: &["x"], properties: &[], build: |_, _| Err(crate::error::PolicyError::new("not yet")) };
