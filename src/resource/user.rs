//! Placeholder: being written.
use super::TypeDef;
pub const TYPE: TypeDef = TypeDef { name: "user", actions: &["x"], properties: &[], build: |_, _| Err(crate::error::PolicyError::new("not yet")) };
