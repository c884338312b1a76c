//! The packages page: search kept packages by name, and for each the
//! versions the fleet runs with their host counts, holds, the pins of the
//! whitelist and the rollouts that pin it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::{self, Nav, esc, link};
use super::{PageError, View};

/// Packages shown for one search.
const FOUND: u64 = 50;

pub fn page(v: &mut View) -> Result<String, PageError> {
    let name = v.arg("name").trim().to_string();
    let whitelist = v.whitelist();
    let mut body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/packages\">\
         <label>Package <input name=\"name\" value=\"{}\" placeholder=\"php, redis…\" autofocus></label>\
         <button>Search</button></form>",
        esc(&name)
    );
    if let Err(e) = &whitelist {
        let _ = write!(
            body,
            "<p class=\"note\">Pins not shown: {}</p>",
            esc(&e.to_string())
        );
    }
    if name.is_empty() {
        // Nothing asked yet: the whitelist's packages are where to start.
        if let Ok(w) = &whitelist {
            let mut names: Vec<&String> = w.packages.keys().collect();
            names.extend(w.releases.values().flat_map(|r| r.packages.keys()));
            names.sort();
            names.dedup();
            body.push_str("<p class=\"pinned\">Pinned: ");
            let links: Vec<String> = names
                .iter()
                .map(|n| {
                    format!(
                        "<a href=\"{}\">{}</a>",
                        link("/packages", &[("name", n)]),
                        esc(n)
                    )
                })
                .collect();
            body.push_str(&links.join(" "));
            body.push_str("</p>");
        }
        return Ok(html::page("Packages", Nav::Packages, &body, None));
    }
    let names = v.store.package_names(&name, FOUND)?;
    if names.is_empty() {
        let _ = write!(
            body,
            "<p class=\"empty\">No host reports a package whose name holds {}.</p>",
            esc(&name)
        );
    }
    for n in &names {
        let hosts = v.store.package(n, None)?;
        if hosts.is_empty() {
            continue;
        }
        // version -> (hosts, held)
        let mut versions: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for h in &hosts {
            let e = versions.entry(h.version.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(h.held);
        }
        let _ = write!(
            body,
            "<section class=\"package\" data-package=\"{0}\"><h2>{0}</h2>",
            esc(n)
        );
        let rows = versions.iter().map(|(ver, (count, held))| {
            vec![
                esc(if ver.is_empty() {
                    "(not installed)"
                } else {
                    ver
                }),
                format!("<span class=\"hosts\">{count}</span>"),
                format!("{held}"),
            ]
        });
        body.push_str(&html::table(
            "versions",
            &["Version", "Hosts", "Held"],
            rows,
        ));
        if let Ok(w) = &whitelist {
            let mut pins: Vec<String> = Vec::new();
            if let Some(e) = w.packages.get(n) {
                pins.push(format!("<code>{}</code> (every release)", esc(&e.version)));
            }
            for (rel, r) in &w.releases {
                if let Some(e) = r.packages.get(n) {
                    pins.push(format!("<code>{}</code> ({})", esc(&e.version), esc(rel)));
                }
            }
            let rollouts: Vec<String> = w
                .rollouts
                .iter()
                .filter_map(|(rn, r)| {
                    r.packages.get(n).map(|e| {
                        format!(
                            "<a href=\"/rollouts#{0}\">{0}</a> → <code>{1}</code>",
                            esc(rn),
                            esc(&e.version)
                        )
                    })
                })
                .collect();
            let _ = write!(
                body,
                "<p class=\"pins\">Pin: {}</p><p class=\"rollouts\">Rollouts: {}</p>",
                if pins.is_empty() {
                    "none".into()
                } else {
                    pins.join(", ")
                },
                if rollouts.is_empty() {
                    "none".into()
                } else {
                    rollouts.join(", ")
                },
            );
        }
        body.push_str("</section>");
    }
    Ok(html::page("Packages", Nav::Packages, &body, None))
}
