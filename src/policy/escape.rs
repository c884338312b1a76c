//! Escaping helpers for values that templates write into line-oriented
//! files: `{{systemd_arg x}}` and `{{systemd_value x}}` (unit files),
//! `{{deb822 x}}` (sources), `{{ini x}}` (ini files) and `{{line x}}`
//! (any `key value` file). A newline in such a value starts a line of its
//! own choosing (an `ExecStartPre=`, a `Trusted: yes`), so a control
//! character there is an error unless the attribute's declared type
//! allows one; what the format gives a meaning to is escaped.

use std::sync::{Arc, Mutex};

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};

use super::types::{Origins, Types};

/// The node's attribute types and where each value came from, for the
/// helpers' decisions and messages.
#[derive(Debug, Default)]
pub struct Typing {
    pub types: Types,
    pub origins: Origins,
}

/// The fix of the last helper failure: handlebars carries only a message.
pub type LastFix = Arc<Mutex<Option<String>>>;

#[derive(Clone, Copy)]
enum Format {
    Line,
    Ini,
    Deb822,
    SystemdValue,
    SystemdArg,
}

impl Format {
    fn file(self) -> &'static str {
        match self {
            Format::Line => "a line-oriented file",
            Format::Ini => "an ini file",
            Format::Deb822 => "a deb822 file",
            Format::SystemdValue | Format::SystemdArg => "a systemd unit",
        }
    }
}

pub const HELPERS: &[&str] = &["line", "ini", "deb822", "systemd_value", "systemd_arg"];

/// Registers every escaping helper on `hb`.
pub fn register(hb: &mut Handlebars<'static>, typing: &Arc<Typing>, fix: &LastFix) {
    for (name, format) in [
        ("line", Format::Line),
        ("ini", Format::Ini),
        ("deb822", Format::Deb822),
        ("systemd_value", Format::SystemdValue),
        ("systemd_arg", Format::SystemdArg),
    ] {
        let typing = typing.clone();
        let fix = fix.clone();
        hb.register_helper(
            name,
            Box::new(
                move |h: &Helper,
                      _: &Handlebars,
                      _: &Context,
                      _: &mut RenderContext,
                      out: &mut dyn Output|
                      -> HelperResult {
                    let (text, path) = match (h.param(0), h.param(1)) {
                        (Some(p), None) => (scalar(p.value()), p.relative_path().cloned()),
                        _ => {
                            return Err(RenderErrorReason::Other(format!(
                                "{name} takes one value: {{{{{name} cookbook.attribute}}}}"
                            ))
                            .into());
                        }
                    };
                    let Some(text) = text else {
                        return Err(RenderErrorReason::Other(format!(
                            "{name}: {} is not a string, number or boolean",
                            path.as_deref().unwrap_or("the value")
                        ))
                        .into());
                    };
                    match escape(format, &text, path.as_deref(), &typing) {
                        Ok(s) => {
                            out.write(&s)?;
                            Ok(())
                        }
                        Err((message, f)) => {
                            *fix.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                            Err(RenderErrorReason::Other(message).into())
                        }
                    }
                },
            ),
        );
    }
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `text` as `format` writes it, or the message and fix of why it cannot.
fn escape(
    format: Format,
    text: &str,
    path: Option<&str>,
    typing: &Typing,
) -> Result<String, (String, String)> {
    let what = match path {
        Some(p) => format!("attribute {p}"),
        None => "the value".to_string(),
    };
    // Where the value was set, for a message only: finding its line reads
    // the file again, which a value that escapes cleanly never needs.
    let from = || {
        path.and_then(|p| {
            typing
                .origins
                .get(p)
                .map(|o| format!(" (set in {})", o.shown(p)))
        })
        .unwrap_or_default()
    };
    let allowed = path
        .and_then(|p| typing.types.get(p))
        .is_some_and(|d| d.ty.allows_control());
    if let Some(c) = text.chars().find(|c| c.is_control())
        && !allowed
    {
        return Err((
            format!(
                "{what}{} holds a control character ({}), which in {} would start a line or field of its own",
                from(),
                c.escape_debug(),
                format.file()
            ),
            format!(
                "give {what} on one line of printable text, or declare its type as \"text\" under [types] in its cookbook's attributes.toml if it may span lines"
            ),
        ));
    }
    match format {
        // A backslash at the end of a line continues it in Apache, MariaDB
        // and systemd files alike.
        Format::Line | Format::Ini | Format::SystemdValue if text.ends_with('\\') => Err((
            format!(
                "{what}{} ends with a backslash, which joins the next line to it",
                from()
            ),
            format!("remove the trailing backslash from {what}"),
        )),
        Format::Line | Format::Deb822 => Ok(text.to_string()),
        Format::Ini => Ok(ini(text)),
        // `%` starts a specifier in unit files.
        Format::SystemdValue => Ok(text.replace('%', "%%")),
        Format::SystemdArg => Ok(systemd_arg(text)),
    }
}

/// An ini value: quoted when a character would end or change it there.
fn ini(text: &str) -> String {
    let special = |c: char| ";#\"'=[]{}$&|^!~()".contains(c);
    if !text.chars().any(special) && text.trim() == text {
        return text.to_string();
    }
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One word of an `Exec*=` command line: specifiers and variables kept
/// literal, and quoted when it would otherwise split into several.
fn systemd_arg(text: &str) -> String {
    let mut s = String::new();
    for c in text.chars() {
        match c {
            '%' => s.push_str("%%"),
            '$' => s.push_str("$$"),
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'\\;".contains(c));
    if plain { s } else { format!("\"{s}\"") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_for_their_format() {
        let t = Typing::default();
        assert_eq!(escape(Format::SystemdArg, "30m", None, &t).unwrap(), "30m");
        assert_eq!(
            escape(Format::SystemdArg, "a b --x", None, &t).unwrap(),
            "\"a b --x\""
        );
        assert_eq!(
            escape(Format::SystemdArg, "50%$X", None, &t).unwrap(),
            "50%%$$X"
        );
        assert_eq!(escape(Format::SystemdArg, "", None, &t).unwrap(), "\"\"");
        assert_eq!(escape(Format::SystemdValue, "5%", None, &t).unwrap(), "5%%");
        assert_eq!(escape(Format::Ini, "128M", None, &t).unwrap(), "128M");
        assert_eq!(escape(Format::Ini, "a;b", None, &t).unwrap(), "\"a;b\"");
        for f in [
            Format::Line,
            Format::Ini,
            Format::Deb822,
            Format::SystemdValue,
            Format::SystemdArg,
        ] {
            let (m, fix) =
                escape(f, "30m\nExecStartPre=/bin/sh", Some("kiln.interval"), &t).unwrap_err();
            assert!(m.contains("attribute kiln.interval"), "{m}");
            assert!(m.contains("control character"), "{m}");
            assert!(fix.contains("\"text\""), "{fix}");
        }
        assert!(escape(Format::Line, "x \\", None, &t).is_err());
    }

    #[test]
    fn a_refused_value_names_the_file_and_line_that_set_it() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("attributes.toml");
        std::fs::write(&file, "[kiln]\nmode = 1\ninterval = \"x\"\n").unwrap();
        let mut t = Typing::default();
        t.origins.insert(
            "kiln.interval".into(),
            super::super::types::Origin::file(&file),
        );
        let at = format!("(set in {}:3)", file.display());
        let (m, _) = escape(Format::Line, "a\nb", Some("kiln.interval"), &t).unwrap_err();
        assert!(m.contains(&at), "{m}");
        let (m, _) = escape(Format::Ini, "a\\", Some("kiln.interval"), &t).unwrap_err();
        assert!(m.contains(&at), "{m}");
    }
}
