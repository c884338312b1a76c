//! The node a policy is compiled for: its name, run list, size, own
//! attributes (with where they come from) and release. Every command
//! builds one through the constructors here, so that the defaults (the
//! placeholder names, the release of the target) live in one place.

use std::path::Path;

use crate::error::Error;
use crate::platform::facts::Facts;
use crate::platform::target::Target;
use crate::policy::load_toml;
use crate::policy::types::Origin;

/// The name `kiln check` compiles roles for: no host has it.
pub const CHECK_FQDN: &str = "check.kiln.invalid";
/// The name a dev VM role is compiled for when only its secrets matter.
pub const DEVVM_FQDN: &str = "devvm.kiln.invalid";

/// What to compile the policy for.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// The node's name; none: the target's own (its `/etc/hostname`).
    pub fqdn: Option<String>,
    pub run_list: Vec<String>,
    /// The size whose attributes apply (a role's `[sizes.NAME]`).
    pub size: Option<String>,
    /// The node's own attributes, above role defaults, below overrides.
    pub attributes: toml::Table,
    /// Where `attributes` come from (a node file, an inventory host), so
    /// that a bad value names it; none: `--node`.
    pub origin: Option<Origin>,
    /// The Debian release to compile for; none: the target's own.
    pub release: Option<String>,
}

impl Node {
    /// A node of `roles`, in order, with no attributes of its own.
    pub fn roles(roles: &[String]) -> Node {
        Node {
            run_list: roles.iter().map(|r| format!("role[{r}]")).collect(),
            ..Node::default()
        }
    }

    /// A node of one role.
    pub fn role(role: &str) -> Node {
        Node::roles(&[role.to_string()])
    }

    /// The node no host is, which `kiln check` compiles roles as.
    pub fn placeholder() -> Node {
        Node::default().named(CHECK_FQDN)
    }

    /// A role of size `size` (when given), compiled as `kiln check` does.
    pub fn check(role: &str, size: Option<String>) -> Node {
        Node {
            run_list: Node::role(role).run_list,
            size,
            ..Node::placeholder()
        }
    }

    /// A host of an inventory: its name, roles and attributes, which
    /// `origin` names in messages.
    pub fn inventory_host(
        fqdn: &str,
        roles: &[String],
        attributes: &toml::Table,
        origin: Option<Origin>,
    ) -> Node {
        Node {
            attributes: attributes.clone(),
            origin,
            ..Node::roles(roles).named(fqdn)
        }
    }

    /// A node file (`--node`, or a bundle's `nodes/FQDN.toml`). Facts may
    /// not be set there: they are the target's.
    pub fn file(path: &Path) -> Result<Node, Error> {
        let (node, text): (super::NodeFile, String) = load_toml(path)?;
        crate::policy::attributes::refuse_facts(&node.attributes, &text, path, &["attributes"])?;
        Ok(Node {
            fqdn: node.fqdn,
            run_list: node.run_list,
            size: node.size,
            attributes: node.attributes,
            origin: Some(Origin::under(path, "attributes")),
            release: None,
        })
    }

    /// The same node under the name `fqdn`.
    pub fn named(self, fqdn: &str) -> Node {
        Node {
            fqdn: Some(fqdn.to_string()),
            ..self
        }
    }

    /// The same node of size `size`, when given.
    pub fn sized(self, size: Option<String>) -> Node {
        Node { size, ..self }
    }

    /// The same node compiled for Debian release `codename`.
    pub fn on(self, codename: &str) -> Node {
        Node {
            release: Some(codename.to_string()),
            ..self
        }
    }

    /// The facts of `target` as this node has them: its name, its release.
    pub fn facts(&self, target: &Target) -> Facts {
        self.facts_from(&Facts::gather(target, self.fqdn.as_deref()))
    }

    /// Facts gathered once (for this node's name) and shared by nodes of
    /// several releases, as this node has them.
    pub fn facts_from(&self, gathered: &Facts) -> Facts {
        match &self.release {
            Some(r) => gathered.on_release(r),
            None => gathered.clone(),
        }
    }

    /// Where the node attributes come from, for messages.
    pub fn origin(&self) -> Origin {
        self.origin
            .clone()
            .unwrap_or_else(|| Origin::under("--node".as_ref(), "attributes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_share_the_defaults() {
        let n = Node::check("web", Some("small".into()));
        assert_eq!(n.run_list, ["role[web]"]);
        assert_eq!(n.fqdn.as_deref(), Some(CHECK_FQDN));
        assert_eq!(n.size.as_deref(), Some("small"));
        assert!(n.release.is_none() && n.attributes.is_empty());
        let attrs: toml::Table = toml::from_str("[app]\nport = 1").unwrap();
        let h = Node::inventory_host("web01", &["base".into(), "web".into()], &attrs, None);
        assert_eq!(h.run_list, ["role[base]", "role[web]"]);
        assert_eq!(h.attributes, attrs);
        assert_eq!(h.origin(), Node::default().origin());
    }

    #[test]
    fn a_node_file_names_itself_and_keeps_facts_out() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("web01.toml");
        std::fs::write(
            &path,
            "fqdn = \"web01.example.com\"\nrun_list = [\"role[web]\"]\nsize = \"small\"\n[attributes.app]\nport = 8080\n",
        )
        .unwrap();
        let n = Node::file(&path).unwrap();
        assert_eq!(n.fqdn.as_deref(), Some("web01.example.com"));
        assert_eq!(n.run_list, ["role[web]"]);
        assert_eq!(n.size.as_deref(), Some("small"));
        assert_eq!(n.origin(), Origin::under(&path, "attributes"));
        assert_eq!(n.attributes["app"]["port"].as_integer(), Some(8080));
        std::fs::write(&path, "[attributes.node]\nfqdn = \"other\"\n").unwrap();
        assert!(Node::file(&path).is_err());
    }

    #[test]
    fn a_release_is_laid_over_the_facts_gathered() {
        let host = Facts::gather(&Target::host(), Some("x.example.com"));
        let f = Node::role("web").on("trixie").facts_from(&host);
        assert_eq!(
            (f.codename.as_str(), f.platform_version.as_str()),
            ("trixie", "13")
        );
        assert_eq!(f.fqdn, "x.example.com");
        let same = Node::role("web").facts_from(&host);
        assert_eq!(same.codename, host.codename);
    }
}
