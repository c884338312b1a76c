//! What counts as drift in a dev VM. The app share is the engineer's to
//! edit, from the host or inside: a resource under it is recorded as the
//! mount, never its content, so only what the role manages outside the
//! share can drift.

use std::path::Path;

use crate::fingerprint::{self, Fingerprint, Part};
use crate::resource::ResourceId;

/// `fp` with every part of a resource at or under `mount` replaced by one
/// part for the share itself, and hashed again.
pub fn share_as_mount(fp: &Fingerprint, mount: &str) -> Fingerprint {
    let under = |p: &Part| {
        ResourceId::parse(&p.resource)
            .is_some_and(|id| id.name.starts_with('/') && Path::new(&id.name).starts_with(mount))
    };
    let mut parts: Vec<Part> = fp.parts.iter().filter(|p| !under(p)).cloned().collect();
    if parts.len() != fp.parts.len() {
        parts.push(Part {
            resource: format!("mount[{mount}]"),
            part: format!(
                "9p tag={} (the engineer's: content not recorded)",
                super::guest::APP_TAG
            ),
        });
        parts.sort_by_key(Part::line);
    }
    Fingerprint {
        fingerprint: fingerprint::hash(&parts),
        parts,
        substitutions: fp.substitutions.clone(),
    }
}

/// The resources whose parts differ between `then` and `now` (changed,
/// gone or new), each once, sorted.
pub fn moved(then: &[Part], now: &[Part]) -> Vec<String> {
    let mut out: Vec<String> = then
        .iter()
        .filter(|p| !now.contains(p))
        .chain(now.iter().filter(|p| !then.contains(p)))
        .map(|p| p.resource.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(resource: &str, part: &str) -> Part {
        Part {
            resource: resource.into(),
            part: part.into(),
        }
    }

    fn print(parts: Vec<Part>) -> Fingerprint {
        Fingerprint {
            fingerprint: fingerprint::hash(&parts),
            parts,
            substitutions: Vec::new(),
        }
    }

    #[test]
    fn an_edit_in_the_share_is_not_drift_and_one_outside_is_named() {
        let first = print(vec![
            part("directory[/var/www/shop]", "owner=www-data mode=0755"),
            part("file[/etc/motd]", "sha256=aa"),
            part("file[/var/www/shop/index.php]", "sha256=11"),
            part("file[/var/www/shopping]", "sha256=22"),
        ]);
        let edited = print(vec![
            part("directory[/var/www/shop]", "owner=root mode=0777"),
            part("file[/etc/motd]", "sha256=aa"),
            part("file[/var/www/shop/index.php]", "sha256=99"),
            part("file[/var/www/shopping]", "sha256=22"),
        ]);
        assert_ne!(first.fingerprint, edited.fingerprint);
        let (a, b) = (
            share_as_mount(&first, "/var/www/shop"),
            share_as_mount(&edited, "/var/www/shop"),
        );
        assert_eq!(a.fingerprint, b.fingerprint, "{a:?}");
        assert!(a.parts.iter().any(|p| p.resource == "mount[/var/www/shop]"));
        // A sibling whose name only starts alike is outside the share.
        assert!(
            a.parts
                .iter()
                .any(|p| p.resource == "file[/var/www/shopping]")
        );
        assert_eq!(a.fingerprint, fingerprint::hash(&a.parts));

        let drifted = print(vec![
            part("directory[/var/www/shop]", "owner=www-data mode=0755"),
            part("file[/etc/motd]", "sha256=bb"),
            part("file[/var/www/shop/index.php]", "sha256=11"),
            part("package[curl]", "version=1"),
        ]);
        let c = share_as_mount(&drifted, "/var/www/shop");
        assert_eq!(
            moved(&a.parts, &c.parts),
            [
                "file[/etc/motd]",
                "file[/var/www/shopping]",
                "package[curl]"
            ]
        );
        // Nothing in the share: nothing replaced.
        let plain = share_as_mount(&first, "/srv/none");
        assert_eq!(plain.fingerprint, first.fingerprint);
    }
}
