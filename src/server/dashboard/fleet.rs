//! The fleet page: counts by result and release, and a table of hosts,
//! filtered by role, release, result and name. It reloads on its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::{self, Nav, esc, link};
use super::{PageError, View};
use crate::store::drift::{Agreement, agreement};
use crate::store::{HostQuery, HostRow};

/// Rows per page of the table; the counts cover every host.
const PER_PAGE: usize = 500;
const REFRESH_SECS: u32 = 30;

/// What a host's latest run says, as the page counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunResult {
    Ok,
    Changed,
    Failed,
    /// No report within twice its interval, whatever the last one said.
    Stale,
}

impl RunResult {
    pub const ALL: [RunResult; 4] = [
        RunResult::Ok,
        RunResult::Changed,
        RunResult::Failed,
        RunResult::Stale,
    ];

    pub fn of(h: &HostRow) -> RunResult {
        if h.stale {
            RunResult::Stale
        } else if !h.success {
            RunResult::Failed
        } else if h.updated > 0 {
            RunResult::Changed
        } else {
            RunResult::Ok
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Changed => "changed",
            RunResult::Failed => "failed",
            RunResult::Stale => "stale",
        }
    }

    fn parse(s: &str) -> Option<RunResult> {
        RunResult::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// A name filter: a glob when it has a wildcard, else a part of the name.
fn name_matcher(pattern: &str) -> Box<dyn Fn(&str) -> bool> {
    if pattern.is_empty() {
        return Box::new(|_| true);
    }
    if pattern.contains(['*', '?', '['])
        && let Ok(g) = globset::Glob::new(pattern)
    {
        let m = g.compile_matcher();
        return Box::new(move |n| m.is_match(n));
    }
    let part = pattern.to_string();
    Box::new(move |n| n.contains(&part))
}

pub fn page(v: &mut View) -> Result<String, PageError> {
    let (role, release, result, name) = (
        v.arg("role"),
        v.arg("release"),
        v.arg("result"),
        v.arg("name"),
    );
    let wanted = RunResult::parse(result);
    let q = HostQuery {
        role: (!role.is_empty()).then(|| role.to_string()),
        ..HostQuery::default()
    };
    let all = v.store.hosts(&q, v.now, v.stale_after)?;
    // Agreement is judged among all the hosts, whatever the filters show.
    let every = if q.role.is_some() {
        v.store.hosts(&HostQuery::default(), v.now, v.stale_after)?
    } else {
        all.clone()
    };
    let agree = agreement(&every);
    let named = name_matcher(name);
    let selected: Vec<&HostRow> = all
        .iter()
        .filter(|h| release.is_empty() || h.release == release)
        .filter(|h| named(&h.fqdn))
        .collect();
    let mut counts: BTreeMap<RunResult, usize> = RunResult::ALL.iter().map(|r| (*r, 0)).collect();
    let mut releases: BTreeMap<&str, usize> = BTreeMap::new();
    for h in &selected {
        *counts.entry(RunResult::of(h)).or_default() += 1;
        *releases.entry(h.release.as_str()).or_default() += 1;
    }
    let shown: Vec<&&HostRow> = selected
        .iter()
        .filter(|h| wanted.is_none_or(|w| RunResult::of(h) == w))
        .collect();

    let keep = |k: &str, val: &str| -> Vec<(&str, String)> {
        let mut pairs: Vec<(&str, String)> = vec![
            ("role", role.to_string()),
            ("release", release.to_string()),
            ("result", result.to_string()),
            ("name", name.to_string()),
        ];
        for p in &mut pairs {
            if p.0 == k {
                p.1 = val.to_string();
            }
        }
        pairs
    };
    let href = |pairs: Vec<(&str, String)>| {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        link("/fleet", &refs)
    };

    let mut body = String::new();
    body.push_str("<section class=\"counts\">");
    let _ = write!(
        body,
        "<a class=\"count all{}\" href=\"{}\"><b>{}</b> hosts</a>",
        if wanted.is_none() { " here" } else { "" },
        href(keep("result", "")),
        selected.len()
    );
    for (r, n) in &counts {
        let _ = write!(
            body,
            "<a class=\"count {name}{here}\" href=\"{href}\" data-result=\"{name}\"><b>{n}</b> {name}</a>",
            name = r.name(),
            here = if wanted == Some(*r) { " here" } else { "" },
            href = href(keep("result", r.name())),
        );
    }
    body.push_str("</section><section class=\"counts releases\">");
    for (rel, n) in &releases {
        let _ = write!(
            body,
            "<a class=\"count release{}\" href=\"{}\" data-release=\"{}\"><b>{n}</b> {}</a>",
            if *rel == release { " here" } else { "" },
            href(keep("release", rel)),
            esc(rel),
            esc(rel)
        );
    }
    body.push_str("</section>");

    // The filters, as a form that GETs this page.
    let mut roles: Vec<&str> = every
        .iter()
        .flat_map(|h| h.roles.iter().map(String::as_str))
        .collect();
    roles.sort_unstable();
    roles.dedup();
    let mut all_releases: Vec<&str> = every.iter().map(|h| h.release.as_str()).collect();
    all_releases.sort_unstable();
    all_releases.dedup();
    let options = |items: &[&str], current: &str, any: &str| {
        let mut o = format!("<option value=\"\">{any}</option>");
        for i in items {
            let sel = if *i == current { " selected" } else { "" };
            let _ = write!(o, "<option value=\"{0}\"{sel}>{0}</option>", esc(i));
        }
        o
    };
    let results: Vec<&str> = RunResult::ALL.iter().map(|r| r.name()).collect();
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/fleet\">\
         <label>Role <select name=\"role\">{}</select></label>\
         <label>Release <select name=\"release\">{}</select></label>\
         <label>Result <select name=\"result\">{}</select></label>\
         <label>Name <input name=\"name\" value=\"{}\" placeholder=\"web* or part of a name\"></label>\
         <button>Filter</button></form>",
        options(&roles, role, "any"),
        options(&all_releases, release, "any"),
        options(&results, result, "any"),
        esc(name)
    );

    let page_no: usize = v.arg("page").parse().unwrap_or(1).max(1);
    let pages = shown.len().div_ceil(PER_PAGE).max(1);
    let page_no = page_no.min(pages);
    let rows = shown
        .iter()
        .skip((page_no - 1) * PER_PAGE)
        .take(PER_PAGE)
        .map(|h| {
            let r = RunResult::of(h);
            let fp = match agree.get(h.fqdn.as_str()) {
                Some(Agreement::Agrees) => "<span class=\"agrees\">agrees</span>".to_string(),
                Some(Agreement::Differs) => format!(
                    "<a class=\"differs\" href=\"{}\">differs</a>",
                    link("/drift", &[("host", &h.fqdn)])
                ),
                Some(Agreement::NoMajority) => {
                    "<span class=\"nomajority\">no majority</span>".into()
                }
                _ => "<span class=\"none\">none</span>".into(),
            };
            vec![
                html::host_link(&h.fqdn),
                esc(&h.roles.join(", ")),
                esc(&h.release),
                html::when(v.now, h.started_at),
                format!("<span class=\"result {0}\">{0}</span>", r.name()),
                format!(
                    "{}{}",
                    h.updated,
                    if h.failed > 0 {
                        format!(" ({} failed)", h.failed)
                    } else {
                        String::new()
                    }
                ),
                fp,
            ]
        });
    body.push_str(&html::table(
        "hosts",
        &[
            "Host",
            "Roles",
            "Release",
            "Last run",
            "Result",
            "Changes",
            "Fingerprint",
        ],
        rows,
    ));
    if pages > 1 {
        body.push_str("<nav class=\"pages\">");
        for n in 1..=pages {
            let mut pairs = keep("", "");
            pairs.push(("page", n.to_string()));
            let class = if n == page_no { " class=\"here\"" } else { "" };
            let _ = write!(body, "<a{class} href=\"{}\">{n}</a>", href(pairs));
        }
        body.push_str("</nav>");
    }
    if shown.is_empty() {
        body.push_str("<p class=\"empty\">No host matches. Hosts appear once they send a report (--report-to).</p>");
    }
    Ok(html::page("Fleet", Nav::Fleet, &body, Some(REFRESH_SECS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_filter_is_a_glob_or_a_part() {
        assert!(name_matcher("web*")("web01.kiln.test"));
        assert!(!name_matcher("web*")("db01.kiln.test"));
        assert!(name_matcher("01")("db01.kiln.test"));
        assert!(name_matcher("")("anything"));
        assert!(!name_matcher("x")("db01"));
    }
}
