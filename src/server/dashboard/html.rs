//! The pieces every page is made of. Every value that came from a host or
//! from a request goes through [`esc`] (text and attributes) or [`link`]
//! (query strings) before it reaches the markup, so that a host named
//! `<script>` is shown, never run.

use std::fmt::Write as _;

/// `s` as HTML text or a quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `path?k=v&…`, each pair encoded, for an `href` (escaped, since `&` is
/// markup).
pub fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        esc(path)
    } else {
        esc(&format!("{path}?{q}"))
    }
}

/// A link to a host's page, showing its name.
pub fn host_link(fqdn: &str) -> String {
    format!(
        "<a class=\"host\" href=\"{}\">{}</a>",
        link("/host", &[("name", fqdn)]),
        esc(fqdn)
    )
}

/// A UTC time as `2026-12-04 03:21`, for titles.
pub fn utc(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// A time shown as its age, with the UTC time on hover.
pub fn when(now: u64, t: u64) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{} UTC\">{}</time>",
        esc(&utc(t)),
        esc(&utc(t)),
        esc(&crate::store::ago(now, t))
    )
}

/// A digest shortened to what a person compares.
pub fn short(digest: &str) -> String {
    let d: String = digest.chars().take(12).collect();
    format!("<code title=\"{}\">{}</code>", esc(digest), esc(&d))
}

/// The page's section, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Fleet,
    Rollouts,
    Packages,
    Drift,
    None,
}

const SECTIONS: [(Nav, &str, &str); 4] = [
    (Nav::Fleet, "/fleet", "Fleet"),
    (Nav::Rollouts, "/rollouts", "Rollouts"),
    (Nav::Packages, "/packages", "Packages"),
    (Nav::Drift, "/drift", "Drift"),
];

/// A whole page: `body` is markup made with the helpers above.
/// `refresh` reloads it every so many seconds (a meta refresh: the
/// pages carry no script).
pub fn page(title: &str, nav: Nav, body: &str, refresh: Option<u32>) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(s) = refresh {
        let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{s}\">");
    }
    let _ = write!(
        out,
        "<title>{} · kiln</title><link rel=\"stylesheet\" href=\"/static/kiln.css\"></head><body>",
        esc(title)
    );
    out.push_str("<header><a class=\"brand\" href=\"/fleet\">kiln</a><nav>");
    for (n, href, name) in SECTIONS {
        let class = if n == nav { " class=\"here\"" } else { "" };
        let _ = write!(out, "<a href=\"{href}\"{class}>{name}</a>");
    }
    out.push_str(
        "</nav><form method=\"post\" action=\"/logout\"><button>Log out</button></form></header><main>",
    );
    let _ = write!(out, "<h1>{}</h1>", esc(title));
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

/// The login form; `problem` says why the last attempt failed.
pub fn login(next: &str, problem: Option<&str>) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Log in · kiln</title><link rel=\"stylesheet\" href=\"/static/kiln.css\"></head>\
         <body class=\"login\"><main><h1>kiln</h1>",
    );
    if let Some(p) = problem {
        let _ = write!(out, "<p class=\"problem\">{}</p>", esc(p));
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/login\">\
         <label>Read token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label>\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token is the one in the file the server was given with --token-file.</p>\
         </main></body></html>",
        esc(next)
    );
    out.push('\n');
    out
}

/// A table: `head` is plain text, each row's cells are markup.
pub fn table(class: &str, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = format!("<table class=\"{}\"><thead><tr>", esc(class));
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped_in_text_and_attributes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(
            link("/host", &[("name", "a&b\"<x>")]),
            "/host?name=a%26b%22%3Cx%3E"
        );
        assert_eq!(link("/fleet", &[("role", "")]), "/fleet");
        let h = host_link("<img src=x onerror=alert(1)>");
        assert!(!h.contains("<img"), "{h}");
    }

    #[test]
    fn times_read_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
    }
}
