//! Text from hosts, targets and policies on its way to a terminal: a
//! control character there (an escape sequence in a host's os-release, in
//! a file's diff) would move the cursor, retitle the window or clear the
//! screen. Kept lines and tabs; every other control character is shown as
//! an escape (`\x1b`), so the reader sees what was there. A secret value
//! resolved by this process is replaced on the way (see
//! [`crate::secrets::redact`]).

use std::borrow::Cow;

/// `text` with every control character but newline and tab made visible.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    // No secret value this process resolved reaches a terminal.
    let text = match crate::secrets::redact::text(text) {
        Cow::Borrowed(t) => t,
        Cow::Owned(t) => return Cow::Owned(escape(&t, unsafe_char)),
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(escape(text, unsafe_char))
}

fn escape(text: &str, unsafe_char: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            let n = c as u32;
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_shown_not_sent() {
        assert_eq!(terminal_safe("plain\n\tline"), "plain\n\tline");
        assert_eq!(
            terminal_safe("trixie\x1b]0;owned\x07\x1b[2J\r"),
            "trixie\\x1b]0;owned\\x07\\x1b[2J\\x0d"
        );
        assert_eq!(terminal_safe("a\u{9b}b"), "a\\x9bb");
    }
}
