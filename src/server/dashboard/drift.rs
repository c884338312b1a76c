//! The drift page: hosts whose fingerprint differs from the majority of
//! the hosts of their roles and release, the parts that differ, and since
//! which run.

use std::fmt::Write as _;

use super::html::{self, Nav, esc};
use super::{PageError, View};
use crate::store::drift::PartDrift;

pub fn page(v: &mut View) -> Result<String, PageError> {
    let role = v.arg("role").to_string();
    let host = v.arg("host").to_string();
    let mut drifted = crate::store::drift::drift(
        &mut *v.store,
        (!role.is_empty()).then_some(role.as_str()),
        true,
    )?;
    if !host.is_empty() {
        drifted.retain(|d| d.fqdn == host);
    }
    let mut body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/drift\">\
         <label>Role <input name=\"role\" value=\"{}\"></label><button>Filter</button></form>\
         <p class=\"tally\"><b>{}</b> {} from their peers</p>",
        esc(&role),
        drifted.len(),
        if drifted.len() == 1 {
            "host differs"
        } else {
            "hosts differ"
        }
    );
    if drifted.is_empty() {
        body.push_str("<p class=\"empty agrees\">Every host agrees with the majority of its roles and release.</p>");
    }
    for d in &drifted {
        let _ = write!(
            body,
            "<section class=\"drift\" data-host=\"{}\"><h2>{}</h2>\
             <p>{} · {} · unlike the majority ({} of {} hosts) since {} (run <code>{}</code>)</p>",
            esc(&d.fqdn),
            html::host_link(&d.fqdn),
            esc(&d.roles.join(", ")),
            esc(&d.release),
            d.with_majority,
            d.group_size,
            html::when(v.now, d.since.unwrap_or_default()),
            esc(d.since_run.as_deref().unwrap_or_default()),
        );
        let rows = d.parts.iter().map(part_row);
        body.push_str(&html::table(
            "parts",
            &["Resource", "This host", "Majority"],
            rows,
        ));
        body.push_str("</section>");
    }
    Ok(html::page("Drift", Nav::Drift, &body, Some(60)))
}

/// A part that differs, as a row: the resource, this host's, the majority's.
pub fn part_row(p: &PartDrift) -> Vec<String> {
    let cell = |p: &Option<String>| {
        p.as_deref()
            .map_or("<span class=\"none\">absent</span>".into(), html::short)
    };
    vec![
        format!("<code class=\"resource\">{}</code>", esc(&p.resource)),
        cell(&p.found),
        cell(&p.expected),
    ]
}
