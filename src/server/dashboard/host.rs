//! A host's page: its runs over time as a chart, what each run changed
//! (with the diffs its reports carried), its packages against their pins,
//! and its fingerprint's parts against the majority of its peers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::chart::{self, Point};
use super::html::{self, Nav, esc};
use super::{PageError, View};
use crate::store::drift::{differing, groups, majority};
use crate::store::{HostQuery, HostRow};

/// The period the chart and the run list cover.
const DAYS: u64 = 7;
/// Runs listed with their changes, newest first.
const LISTED: usize = 50;

pub fn page(v: &mut View) -> Result<String, PageError> {
    let fqdn = v.arg("name").to_string();
    let hosts = v.store.hosts(&HostQuery::default(), v.now, v.stale_after)?;
    let Some(host) = hosts.iter().find(|h| h.fqdn == fqdn) else {
        return Err(PageError::NoHost(fqdn));
    };
    let since = v.now.saturating_sub(DAYS * 86_400).min(host.started_at);
    let runs = v.store.runs(&fqdn, since)?;
    let mut body = String::new();

    let result = super::fleet::RunResult::of(host);
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Roles</dt><dd>{}</dd><dt>Release</dt><dd>{}</dd>\
         <dt>Last run</dt><dd>{}</dd><dt>Result</dt><dd><span class=\"result {r}\">{r}</span></dd>\
         <dt>Fingerprint</dt><dd>{}</dd></dl>",
        esc(&host.roles.join(", ")),
        esc(&host.release),
        html::when(v.now, host.started_at),
        host.fingerprint
            .as_deref()
            .map_or("none".into(), html::short),
        r = result.name(),
    );

    let points: Vec<Point> = runs
        .iter()
        .map(|r| Point {
            started_at: r.started_at,
            elapsed_ms: r.elapsed_ms,
            changes: r.updated,
            failed: !r.success,
        })
        .collect();
    let _ = write!(
        body,
        "<h2>Runs of the last {DAYS} days</h2><p class=\"legend\"><span class=\"duration\">duration</span> \
         <span class=\"bar\">resources changed</span> <span class=\"bar failed\">failed run</span></p>{}",
        chart::runs(&points)
    );

    body.push_str("<h2>Changes</h2>");
    let changed: Vec<_> = runs
        .iter()
        .rev()
        .filter(|r| !r.changes.is_empty() || !r.success)
        .take(LISTED)
        .collect();
    if changed.is_empty() {
        body.push_str("<p class=\"empty\">No run of this period changed anything.</p>");
    }
    for r in changed {
        let _ = write!(
            body,
            "<details class=\"run\" open><summary>{} · {} · {} changed{}</summary><ul class=\"changes\">",
            html::when(v.now, r.started_at),
            esc(&chart::format_ms(r.elapsed_ms)),
            r.updated,
            if r.success {
                String::new()
            } else {
                format!(", <span class=\"result failed\">{} failed</span>", r.failed)
            },
        );
        for c in &r.changes {
            let _ = write!(
                body,
                "<li><span class=\"status {s}\">{s}</span> <code class=\"resource\">{}</code>",
                esc(&c.resource),
                s = esc(&c.status)
            );
            for line in &c.changes {
                let _ = write!(body, "<div class=\"change\">{}</div>", esc(line));
            }
            if let Some(e) = &c.error {
                let _ = write!(body, "<div class=\"error\">{}</div>", esc(e));
            }
            if let Some(d) = &c.diff {
                let _ = write!(body, "<pre class=\"diff\">{}</pre>", diff_lines(d));
            }
            body.push_str("</li>");
        }
        body.push_str("</ul></details>");
    }

    body.push_str("<h2>Packages</h2>");
    let packages = v.store.host_packages(&fqdn)?;
    let pins = match v.whitelist() {
        Ok(w) => w
            .resolve(&host.fqdn, &host.roles, &host.release)
            .map_err(super::NoPolicy::from),
        Err(e) => Err(e),
    };
    if let Err(e) = &pins {
        let _ = write!(
            body,
            "<p class=\"note\">Pins not shown: {}</p>",
            esc(&e.to_string())
        );
    }
    let pins = pins.unwrap_or_default();
    let rows = packages.iter().map(|p| {
        let pin = pins.get(&p.name);
        let state = match pin {
            Some(pin) if pin.version == p.version => {
                "<span class=\"agrees\">at its pin</span>".to_string()
            }
            Some(_) if p.version.is_empty() => {
                "<span class=\"differs\">not installed</span>".into()
            }
            Some(_) => "<span class=\"differs\">not at its pin</span>".into(),
            None => "<span class=\"none\">no pin</span>".into(),
        };
        vec![
            format!(
                "<a href=\"{}\">{}</a>",
                html::link("/packages", &[("name", &p.name)]),
                esc(&p.name)
            ),
            esc(if p.version.is_empty() {
                "(not installed)"
            } else {
                &p.version
            }),
            if p.held { "held".into() } else { String::new() },
            pin.map_or(String::new(), |p| {
                format!("{} <small>({})</small>", esc(&p.version), esc(&p.rule))
            }),
            state,
        ]
    });
    body.push_str(&html::table(
        "packages",
        &["Package", "Version", "Hold", "Pin", ""],
        rows,
    ));
    if packages.is_empty() {
        body.push_str("<p class=\"empty\">Its latest run reported no managed package.</p>");
    }

    body.push_str("<h2>Fingerprint against its peers</h2>");
    body.push_str(&parts_against_peers(v, host, &hosts)?);
    Ok(html::page(&fqdn, Nav::None, &body, None))
}

/// The host's fingerprint parts beside the majority's, among the hosts of
/// its roles and release.
fn parts_against_peers(
    v: &mut View,
    host: &HostRow,
    hosts: &[HostRow],
) -> Result<String, PageError> {
    let Some(fp) = host.fingerprint.as_deref() else {
        return Ok("<p class=\"empty\">The host sent no fingerprint.</p>".into());
    };
    let mut roles = host.roles.clone();
    roles.sort();
    let all = groups(hosts);
    let peers = all
        .get(&(roles, host.release.clone()))
        .map_or(&[][..], Vec::as_slice);
    let Some((major, count)) = majority(peers.iter().filter_map(|h| h.fingerprint.as_deref()))
    else {
        return Ok(format!(
            "<p class=\"note\">No fingerprint is shared by more than half of the {} hosts of its roles and release.</p>",
            peers.len()
        ));
    };
    if major == fp {
        return Ok(format!(
            "<p class=\"agrees\">Agrees with the majority: {count} of {} hosts of its roles and release.</p>",
            peers.len()
        ));
    }
    let found: BTreeMap<String, String> = v.store.parts(fp)?.into_iter().collect();
    let expected: BTreeMap<String, String> = v.store.parts(major)?.into_iter().collect();
    let rows = differing(&found, &expected)
        .into_iter()
        .map(|p| super::drift::part_row(&p));
    Ok(format!(
        "<p class=\"differs\">Differs from the majority ({count} of {} hosts of its roles and release have {}):</p>{}",
        peers.len(),
        html::short(major),
        html::table("parts", &["Resource", "This host", "Majority"], rows)
    ))
}

/// A unified diff's lines, each marked for its colour.
fn diff_lines(diff: &str) -> String {
    let mut out = String::new();
    for line in diff.lines() {
        let class = match line.as_bytes().first() {
            Some(b'+') if !line.starts_with("+++") => "add",
            Some(b'-') if !line.starts_with("---") => "del",
            Some(b'@') => "hunk",
            _ => "ctx",
        };
        let _ = writeln!(out, "<span class=\"{class}\">{}</span>", esc(line));
    }
    out
}
