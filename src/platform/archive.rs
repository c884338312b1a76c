//! What a target's apt sources offer today, read with `apt-cache madison`
//! from the target's own index: the archive moves, and a pin is only as
//! good as the sources that still carry it.

use std::collections::BTreeMap;

use super::apt;
use super::target::{Target, capture, output_tail};
use crate::error::RunError;

/// One version of a package and the suites that carry it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offer {
    pub version: String,
    /// `bookworm-security/main`, as apt names the release and component.
    pub suites: Vec<String>,
}

impl Offer {
    /// Whether a security archive carries it (`-security` suites; `/updates`
    /// as Debian named them before bookworm).
    pub fn is_security(&self) -> bool {
        self.suites
            .iter()
            .any(|s| s.contains("-security/") || s.contains("/updates/"))
    }
}

/// The versions the target's sources offer for each package, newest first.
/// A target without a package index gets `apt-get update` first, as a
/// converge would.
pub fn offers(
    target: &Target,
    packages: &[String],
) -> Result<BTreeMap<String, Vec<Offer>>, RunError> {
    if !apt::index_knows(target, &[]) {
        if target.is_read_only() {
            return Err(RunError::precondition(format!(
                "{} has no apt index, and this command does not change the tree: \
                 run `apt-get update` in it (or converge it once), then run again",
                target.root().display()
            )));
        }
        apt::update(target)?;
    }
    let mut by_package: BTreeMap<String, Vec<Offer>> =
        packages.iter().map(|p| (p.clone(), Vec::new())).collect();
    if packages.is_empty() {
        return Ok(by_package);
    }
    let mut argv = vec!["apt-cache", "madison"];
    argv.extend(packages.iter().map(String::as_str));
    let out =
        capture(target.command(&argv)).map_err(|e| RunError::io("run", "apt-cache madison", e))?;
    if !out.status.success() {
        return Err(RunError::precondition(format!(
            "apt-cache madison failed: {}",
            output_tail(&out)
        )));
    }
    for (package, version, suite) in parse_madison(&String::from_utf8_lossy(&out.stdout)) {
        let Some(list) = by_package.get_mut(&package) else {
            continue;
        };
        match list.iter_mut().find(|o| o.version == version) {
            Some(o) if !o.suites.contains(&suite) => o.suites.push(suite),
            Some(_) => {}
            None => list.push(Offer {
                version,
                suites: vec![suite],
            }),
        }
    }
    for list in by_package.values_mut() {
        list.sort_by(|a, b| compare(&b.version, &a.version));
    }
    Ok(by_package)
}

pub use super::dpkg::compare;

/// `(package, version, suite/component)` from madison's
/// ` pkg | version | URI suite/component arch Packages` lines.
fn parse_madison(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('|').map(str::trim);
            let package = fields.next()?;
            let version = fields.next()?;
            let source = fields.next()?;
            // Source packages (deb-src lines) are not what apt installs.
            if source.ends_with("Sources") {
                return None;
            }
            let suite = source.split_whitespace().nth(1)?;
            Some((package.to_string(), version.to_string(), suite.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_lines() {
        let text = " memcached | 1.6.18-1+deb12u1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 memcached |   1.6.18-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
 memcached |   1.6.18-1 | http://deb.debian.org/debian bookworm/main Sources
";
        let rows = parse_madison(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            (
                "memcached".into(),
                "1.6.18-1+deb12u1".into(),
                "bookworm-security/main".into()
            )
        );
        let offer = Offer {
            version: rows[0].1.clone(),
            suites: vec![rows[0].2.clone()],
        };
        assert!(offer.is_security());
        assert!(
            !Offer {
                version: "1".into(),
                suites: vec!["bookworm/main".into()]
            }
            .is_security()
        );
    }

    #[test]
    fn debian_order() {
        use std::cmp::Ordering::*;
        assert_eq!(compare("1.6.18-1+deb12u1", "1.6.18-1"), Greater);
        assert_eq!(compare("1:1.0", "2.0"), Greater);
        assert_eq!(compare("8.2.32-1~deb12u1", "8.2.36-1~deb12u1"), Less);
    }
}
