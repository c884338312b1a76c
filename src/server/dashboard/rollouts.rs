//! The rollouts page: for each rollout of the policy's whitelist, how
//! many of the hosts it matches report its versions, canaries (hosts it
//! names) first, then the hosts that failed and those still to go.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::{self, Nav, esc};
use super::{PageError, View};
use crate::policy::rollout::Reason;
use crate::store::rollout::progress;
use crate::store::{HostQuery, HostRow, PackageHost};

pub fn page(v: &mut View) -> Result<String, PageError> {
    let whitelist = match v.whitelist() {
        Ok(w) => w,
        Err(e) => {
            let body = format!("<p class=\"problem\">{}</p>", esc(&e.to_string()));
            return Ok(html::page("Rollouts", Nav::Rollouts, &body, None));
        }
    };
    let hosts = v.store.hosts(&HostQuery::default(), v.now, v.stale_after)?;
    let by_fqdn: BTreeMap<&str, &HostRow> = hosts.iter().map(|h| (h.fqdn.as_str(), h)).collect();
    let mut installed: BTreeMap<String, Vec<PackageHost>> = BTreeMap::new();
    for r in whitelist.rollouts.values() {
        for p in r.packages.keys() {
            if !installed.contains_key(p) {
                installed.insert(p.clone(), v.store.package(p, None)?);
            }
        }
    }
    let mut body = String::new();
    if whitelist.rollouts.is_empty() {
        body.push_str("<p class=\"empty\">The whitelist has no rollout.</p>");
    }
    for (name, rollout) in &whitelist.rollouts {
        let p = progress(name, rollout, &hosts, &installed);
        let total = p.hosts.len();
        let percent = (p.done * 100).checked_div(total).unwrap_or(0);
        let _ = write!(
            body,
            "<section class=\"rollout\" id=\"{id}\" data-rollout=\"{id}\"><h2>{id}</h2>",
            id = esc(name)
        );
        let what: Vec<String> = p
            .packages
            .iter()
            .map(|(k, ver)| format!("<code>{} {}</code>", esc(k), esc(ver)))
            .collect();
        let mut scope: Vec<String> = Vec::new();
        if !rollout.hosts.is_empty() {
            scope.push(format!("hosts {}", esc(&rollout.hosts.join(", "))));
        }
        if !rollout.roles.is_empty() {
            scope.push(format!("roles {}", esc(&rollout.roles.join(", "))));
        }
        if !rollout.releases.is_empty() {
            scope.push(format!("releases {}", esc(&rollout.releases.join(", "))));
        }
        if let Some(pc) = rollout.percent {
            scope.push(format!("{pc}% of them"));
        }
        // A rollout of attributes or recipes alone has no versions to
        // look for: its hosts take it at their next run.
        let figure = if p.packages.is_empty() {
            format!("{total} hosts in it")
        } else {
            format!("{} of {total} hosts at its versions ({percent}%)", p.done)
        };
        let _ = write!(
            body,
            "<p class=\"scope\">{} · {}</p>\
             <p class=\"progress\"><progress max=\"{total}\" value=\"{done}\"></progress> \
             <span class=\"figure\">{figure}</span></p>",
            if what.is_empty() {
                "no package pins (attributes or recipes only)".into()
            } else {
                what.join(" ")
            },
            if scope.is_empty() {
                "every host".into()
            } else {
                scope.join(" · ")
            },
            done = p.done,
        );
        // Canaries first: the hosts the rollout names.
        let mut rows: Vec<(bool, &crate::store::rollout::RolloutHost, &HostRow)> = p
            .hosts
            .iter()
            .filter_map(|h| {
                let row = by_fqdn.get(h.fqdn.as_str())?;
                let canary = matches!(
                    rollout.reason(&row.fqdn, &row.roles, Some(&row.release)),
                    Reason::Named
                );
                Some((canary, h, *row))
            })
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.fqdn.cmp(&b.1.fqdn)));
        let failed = rows.iter().filter(|(_, _, r)| !r.success).count();
        let left = rows.iter().filter(|(_, h, _)| !h.done).count();
        let _ = write!(
            body,
            "<p class=\"tally\"><span class=\"result failed\">{failed} failed</span> <span class=\"left\">{left} left</span></p>"
        );
        let table = rows.iter().map(|(canary, h, row)| {
            let found: Vec<String> = h
                .found
                .iter()
                .map(|(k, ver)| {
                    format!(
                        "{} {}",
                        esc(k),
                        esc(if ver.is_empty() { "(none)" } else { ver })
                    )
                })
                .collect();
            let state = if !row.success {
                "<span class=\"result failed\">failed</span>"
            } else if h.done {
                "<span class=\"agrees\">done</span>"
            } else {
                "<span class=\"left\">left</span>"
            };
            vec![
                html::host_link(&h.fqdn),
                if *canary {
                    "<span class=\"canary\">canary</span>".into()
                } else {
                    String::new()
                },
                found.join("<br>"),
                state.into(),
                html::when(v.now, row.started_at),
            ]
        });
        body.push_str(&html::table(
            "rollout-hosts",
            &["Host", "", "Reports", "State", "Last run"],
            table,
        ));
        body.push_str("</section>");
    }
    Ok(html::page("Rollouts", Nav::Rollouts, &body, Some(30)))
}
