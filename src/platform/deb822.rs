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

/// Where each paragraph of `text` lies, found from its lines alone: the
/// rules of [`paragraphs`] (comments and blank lines between paragraphs,
/// reading stops at a line that is neither a field nor a continuation)
/// without taking any field apart. A reader that wants a few paragraphs of
/// a large file (dpkg's status on a host: 700 KB) parses just those.
pub fn spans(text: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let bytes = text.as_bytes();
    let mut pos = 0;
    // The end of the line at `at`, past its newline.
    let next_line = move |at: usize| newline(&bytes[at..]).map_or(bytes.len(), |i| at + i + 1);
    std::iter::from_fn(move || {
        // Between paragraphs: blank lines, lines of blanks and comments.
        loop {
            match *bytes.get(pos)? {
                b'#' => pos = next_line(pos),
                b'\n' | b'\r' => pos += 1,
                b' ' | b'\t' => {
                    let rest = &bytes[pos..];
                    let blank = rest.iter().position(|b| !matches!(b, b' ' | b'\t'));
                    match blank.map(|i| rest[i]) {
                        None => pos = bytes.len(),
                        Some(b'\n' | b'\r') => pos += blank? + 1,
                        // Indented text outside a paragraph.
                        Some(_) => {
                            pos = bytes.len();
                            return None;
                        }
                    }
                }
                _ => break,
            }
        }
        let start = pos;
        let mut end = pos;
        while let Some(&b) = bytes.get(pos) {
            if b == b'\n' {
                pos += 1;
                break;
            }
            let next = next_line(pos);
            // A comment or a continuation is not looked into: the first
            // line of a paragraph is always a field, so one came before.
            // A field is a name and a colon, which comes early in a line.
            if !matches!(b, b'#' | b' ' | b'\t') {
                let line = &bytes[pos..next];
                let colon = line.iter().position(|&c| c == b':' || c == b'\n');
                if colon.is_none_or(|i| i == 0 || line[i] != b':') {
                    pos = bytes.len();
                    return None;
                }
            }
            pos = next;
            end = next;
        }
        Some(start..end)
    })
}

/// Where the first newline in `bytes` is. On x86_64 by SSE2, which every
/// such CPU has: the memchr crate's own choice (AVX2 when there) asks the
/// CPU on its first call, and a virtual machine answers that slowly (2% of
/// a no-op converge). Its portable search elsewhere.
fn newline(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(one) = memchr::arch::x86_64::sse2::memchr::One::new(b'\n') {
        return one.find(bytes);
    }
    memchr::arch::all::memchr::One::new(b'\n').find(bytes)
}

/// The value of field `name` in one paragraph's text (a span), as
/// [`Paragraph::get`] gives it: the lines are read up to that field, and a
/// value folded over lines is left to the parser.
pub fn find<'a>(paragraph: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let mut lines = paragraph.split_inclusive('\n');
    while let Some(line) = lines.next() {
        if matches!(line.as_bytes()[0], b'#' | b' ' | b'\t' | b'\n') {
            continue;
        }
        let (field, value) = line.split_once(':')?;
        if !field.eq_ignore_ascii_case(name) {
            continue;
        }
        let folded = lines
            .find(|l| !l.starts_with('#'))
            .is_some_and(|l| l.starts_with([' ', '\t']));
        if folded {
            return paragraphs(paragraph).next()?.get(name);
        }
        return Some(Cow::Borrowed(value.trim()));
    }
    None
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

    /// Spans agree with the parser on every rule it has, each paragraph
    /// parsed alone giving what the whole parse gave, and a field found in
    /// a span is the one the parser gives.
    #[test]
    fn spans_mark_the_paragraphs_the_parser_reads() {
        let texts = [
            "Package: a\nVersion: 1\n\nPackage: b\n",
            "\n\n# c\n  \t\n\r\nPackage: a\n# inner\nDescription: x\n y\n \n\n\n",
            "Package: a\nDescription: x\n long\n\n  stray\nPackage: b\n",
            "Package: a\n\nno colon here\nPackage: c\n\nPackage: d\n",
            "Package: a\n\n: empty name\n",
            "Package: a\n\nPackage: b\r\nVersion: 2\r\n\r\nPackage: c\n",
            "Package: a",
            "",
            "   ",
            "# only\n",
            "Package: a\nVersion:\n\nPackage:b\nX:y:z\n",
        ];
        let names = ["Package", "p", "V", "Description", "X"];
        let fields = |p: &Paragraph| -> Vec<(String, String)> {
            p.fields()
                .map(|f| (f.name().to_string(), f.value().into_owned()))
                .collect()
        };
        // And every text of up to four of these lines.
        let pieces = [
            "Package: a\n",
            "V: 1\n",
            " more\n",
            "\n",
            "# c\n",
            "  \n",
            "\r\n",
            ": x\n",
            "bad\n",
            "\t t\n",
            "Package: b",
            "P:q:r\n",
            "package:  c \n",
            "Description: d\n",
        ];
        let mut made = Vec::new();
        for n in 0..pieces.len().pow(4) {
            let mut text = String::new();
            let mut k = n;
            while k > 0 {
                text.push_str(pieces[k % pieces.len()]);
                k /= pieces.len();
            }
            made.push(text);
        }
        for text in texts.iter().copied().chain(made.iter().map(String::as_str)) {
            let whole: Vec<_> = paragraphs(text).map(|p| fields(&p)).collect();
            let alone: Vec<_> = spans(text)
                .map(|r| {
                    let ps: Vec<_> = paragraphs(&text[r.clone()]).collect();
                    assert_eq!(ps.len(), 1, "{text:?}");
                    for name in names {
                        assert_eq!(
                            find(&text[r.clone()], name),
                            ps[0].get(name),
                            "{text:?} {name}"
                        );
                    }
                    fields(&ps[0])
                })
                .collect();
            assert_eq!(alone, whole, "{text:?}");
        }
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
