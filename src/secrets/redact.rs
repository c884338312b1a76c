//! Redaction by value. Every secret value this process resolves is noted
//! here, and everything kiln prints, reports or keeps (terminal text, run
//! reports, `--json`, errors) passes through [`text`] or [`json`], which
//! replace each occurrence of a value, and of each long line of a
//! multi-line value, with [`MARKER`]. Names are never rewritten: only what
//! holds a secret's value is.

use std::borrow::Cow;
use std::sync::RwLock;

/// What stands in for a secret's value.
pub const MARKER: &str = "(secret)";

/// Lines of a multi-line value shorter than this are not redacted alone:
/// `}` or an empty line would rewrite every output.
const MIN_LINE: usize = 6;

/// The strings to replace, longest first, so that a whole value goes
/// before any of its lines.
static NEEDLES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Notes a resolved secret value: from now on it is redacted everywhere.
pub fn register(value: &str) {
    let mut add: Vec<String> = Vec::new();
    let whole = value.trim();
    if !whole.is_empty() {
        add.push(value.to_string());
        add.push(whole.to_string());
    }
    if value.contains('\n') {
        add.extend(
            value
                .lines()
                .map(str::trim)
                .filter(|l| l.chars().count() >= MIN_LINE)
                .map(str::to_string),
        );
    }
    // As `{:?}` quotes it in a message: escaped quotes, backslashes, newlines.
    let escaped: Vec<String> = add
        .iter()
        .map(|s| s.escape_debug().to_string())
        .filter(|e| !add.contains(e))
        .collect();
    add.extend(escaped);
    let mut needles = NEEDLES.write().unwrap_or_else(|e| e.into_inner());
    for s in add {
        if !s.is_empty() && !needles.contains(&s) {
            needles.push(s);
        }
    }
    needles.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Whether any secret value was noted: without one, nothing needs a walk.
pub fn any() -> bool {
    !NEEDLES.read().unwrap_or_else(|e| e.into_inner()).is_empty()
}

/// `s` with every registered secret value replaced by [`MARKER`].
pub fn text(s: &str) -> Cow<'_, str> {
    replaced(s, &NEEDLES.read().unwrap_or_else(|e| e.into_inner()))
}

fn replaced<'a>(s: &'a str, needles: &[String]) -> Cow<'a, str> {
    if !needles.iter().any(|n| s.contains(n.as_str())) {
        return Cow::Borrowed(s);
    }
    let mut out = s.to_string();
    for n in needles {
        if out.contains(n.as_str()) {
            out = out.replace(n.as_str(), MARKER);
        }
    }
    Cow::Owned(out)
}

/// Redacts `s` in place.
pub fn in_place(s: &mut String) {
    if let Cow::Owned(o) = text(s) {
        *s = o;
    }
}

/// Redacts every string (and object key) of a JSON value, before it is
/// serialized: a value's JSON escaping would otherwise hide it from [`text`].
/// A run that resolved no secret (most) leaves the value as it is.
pub fn json(v: &mut serde_json::Value) {
    let needles = NEEDLES.read().unwrap_or_else(|e| e.into_inner());
    if !needles.is_empty() {
        json_with(v, &needles);
    }
}

fn json_with(v: &mut serde_json::Value, needles: &[String]) {
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(o) = replaced(s, needles) {
                *s = o;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| json_with(x, needles)),
        serde_json::Value::Object(o) => {
            let keys: Vec<String> = (o.keys())
                .filter(|k| replaced(k, needles) != **k)
                .cloned()
                .collect();
            for k in keys {
                if let Some(x) = o.remove(&k) {
                    o.insert(replaced(&k, needles).into_owned(), x);
                }
            }
            o.values_mut().for_each(|x| json_with(x, needles));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_their_lines_are_replaced_names_are_not() {
        register("pw-Redact-Unit-1");
        register("line-one-Redact-Unit\n}\nline-two-Redact-Unit\n");
        assert_eq!(
            text("apt_repository[r]: pw-Redact-Unit-1"),
            format!("apt_repository[r]: {MARKER}")
        );
        assert_eq!(
            text("a line-two-Redact-Unit } b"),
            format!("a {MARKER} }} b")
        );
        assert_eq!(
            text("\"line-one-Redact-Unit\\n}\\nline-two-Redact-Unit\\n\""),
            format!("\"{MARKER}\"")
        );
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({"e": ["x pw-Redact-Unit-1 y"], "pw-Redact-Unit-1": 1});
        json(&mut v);
        let shown = v.to_string();
        assert!(!shown.contains("pw-Redact-Unit-1"), "{shown}");
        assert!(shown.contains(MARKER), "{shown}");
    }
}
