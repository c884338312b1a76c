//! deb822, the format of apt's and dpkg's own files, read and written in
//! this one place through the `deb822-fast` crate: dpkg's status database
//! and the records of `apt-cache show` are read, `.sources` entries and the
//! fields kiln adds to a flat repository's index are written. Its borrowed
//! parser reads a host's whole status file without copying it.

use std::borrow::Cow;

use deb822_fast::borrowed::{BorrowedParagraph, iter_paragraphs_borrowed};

/// One paragraph (stanza) as read.
pub struct Paragraph<'a>(BorrowedParagraph<'a>);

impl<'a> Paragraph<'a> {
    /// The value of field `name` (any case), trimmed; a folded field's
    /// lines (a long Depends) joined by spaces. None when absent.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.0.get(name).map(value)
    }

    /// The fields in the order of the file, each value joined only when
    /// asked for.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a, '_>> {
        self.0.iter().map(Field)
    }
}

/// One field of a [`Paragraph`].
pub struct Field<'a, 'p>(&'p deb822_fast::borrowed::BorrowedField<'a>);

impl<'a> Field<'a, '_> {
    pub fn name(&self) -> &'a str {
        self.0.name()
    }

    /// As [`Paragraph::get`] gives it.
    pub fn value(&self) -> Cow<'a, str> {
        value(self.0.lines())
    }
}

fn value<'a>(lines: &[&'a str]) -> Cow<'a, str> {
    match lines {
        [one] => Cow::Borrowed(one.trim()),
        _ => Cow::Owned(
            lines
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// The paragraphs of `text`. Reading stops at a paragraph that is not
/// deb822 (a line that is neither a field nor a continuation): dpkg and
/// apt refuse such a file too, so nothing after it is trusted.
pub fn paragraphs(text: &str) -> impl Iterator<Item = Paragraph<'_>> {
    iter_paragraphs_borrowed(text)
        .map_while(Result::ok)
        .map(Paragraph)
}

/// One paragraph to write, a field a line, in the order given.
pub fn paragraph<'a>(fields: impl IntoIterator<Item = (&'a str, String)>) -> String {
    fields
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect::<deb822_fast::Paragraph>()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_by_name_with_folded_lines_joined() {
        let text = "Package: a\nversion:  1.0 \nDepends: x,\n y (>= 2)\nDescription: d\n Depends: no\n\n\
                    Package: b\n";
        let ps: Vec<Paragraph> = paragraphs(text).collect();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("Package").as_deref(), Some("a"));
        assert_eq!(ps[0].get("Version").as_deref(), Some("1.0"));
        assert_eq!(ps[0].get("Depends").as_deref(), Some("x, y (>= 2)"));
        assert_eq!(ps[1].get("Package").as_deref(), Some("b"));
        assert_eq!(ps[1].get("Version"), None);
    }

    #[test]
    fn a_paragraph_is_written_a_field_a_line() {
        let p = paragraph([
            ("Types", "deb".to_string()),
            ("URIs", "http://x/".to_string()),
        ]);
        assert_eq!(p, "Types: deb\nURIs: http://x/\n");
    }
}
