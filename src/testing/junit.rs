//! JUnit XML, as Jenkins and most CI systems read it: one testsuite per
//! role and release, one testcase per step and per verify check, each
//! named with both (`web on trixie: converge`). Written with `quick-xml`,
//! which escapes; the attributes keep the order CI dashboards and kiln's
//! tests read (`name`, `tests`, `failures` of a suite; `classname` before
//! `name` of a case), which `quick-junit`'s fixed order does not.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::RoleOutcome;

/// Text XML 1.0 can carry: control characters other than newline and tab
/// are not allowed in a document at all, escaped or not.
fn xml_text(s: &str) -> String {
    s.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect()
}

fn start<'a>(name: &'a str, attributes: &[(&str, &str)]) -> BytesStart<'a> {
    let mut tag = BytesStart::new(name);
    for (k, v) in attributes {
        tag.push_attribute((*k, xml_text(v).as_str()));
    }
    tag
}

pub fn render(outcomes: &[RoleOutcome]) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write(&mut w, outcomes).expect("writing XML to memory cannot fail");
    let mut xml = String::from_utf8(w.into_inner()).expect("the writer was given UTF-8");
    xml.push('\n');
    xml
}

fn write(w: &mut Writer<Vec<u8>>, outcomes: &[RoleOutcome]) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.write_event(Event::Start(start("testsuites", &[("name", "kiln test")])))?;
    for o in outcomes {
        let cases = o.cases();
        let failures = cases.iter().filter(|c| c.failure.is_some()).count();
        let suite = format!("role[{}] on {}", o.role, o.release);
        let (tests, failures) = (cases.len().to_string(), failures.to_string());
        let time = format!("{:.3}", o.elapsed.as_secs_f64());
        w.write_event(Event::Start(start(
            "testsuite",
            &[
                ("name", &suite),
                ("tests", &tests),
                ("failures", &failures),
                ("errors", "0"),
                ("time", &time),
            ],
        )))?;
        if !o.inside.substitutions.is_empty() {
            w.write_event(Event::Start(BytesStart::new("properties")))?;
            for s in &o.inside.substitutions {
                let name = format!("kiln.substituted.{}", s.package);
                let value = format!("{} -> {}", s.pin, s.substitute);
                w.write_event(Event::Empty(start(
                    "property",
                    &[("name", &name), ("value", &value)],
                )))?;
            }
            w.write_event(Event::End(BytesEnd::new("properties")))?;
        }
        let classname = format!("kiln.{}.role.{}", o.release, o.role);
        for c in cases {
            let name = format!("{} on {}: {}", o.role, o.release, c.name);
            let case = start("testcase", &[("classname", &classname), ("name", &name)]);
            match c.failure {
                None => w.write_event(Event::Empty(case))?,
                Some(f) => {
                    w.write_event(Event::Start(case))?;
                    let first = f.lines().next().unwrap_or_default();
                    w.write_event(Event::Start(start("failure", &[("message", first)])))?;
                    w.write_event(Event::Text(BytesText::new(&xml_text(&f))))?;
                    w.write_event(Event::End(BytesEnd::new("failure")))?;
                    w.write_event(Event::End(BytesEnd::new("testcase")))?;
                }
            }
        }
        w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuites")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::inside::InsideOutcome;

    #[test]
    fn escapes_markup_and_drops_what_xml_cannot_carry() {
        let mut tag = start("x", &[("a", "a<b & \"c\"\u{1}")]);
        tag.push_attribute(("b", "1"));
        let mut w = Writer::new(Vec::new());
        w.write_event(Event::Empty(tag)).unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "<x a=\"a&lt;b &amp; &quot;c&quot;\" b=\"1\"/>"
        );
    }

    #[test]
    fn suites_and_cases_keep_their_attribute_order_and_layout() {
        let o = RoleOutcome {
            role: "web".into(),
            release: "trixie".into(),
            elapsed: std::time::Duration::from_millis(1500),
            error: Some("role web on trixie: it <broke>\nsecond line".into()),
            inside: InsideOutcome::default(),
            kept: None,
            log: None,
            start: None,
        };
        let xml = render(&[o]);
        assert!(
            xml.starts_with(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kiln test\">\n  \
                 <testsuite name=\"role[web] on trixie\" tests=\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains("\" failures=\"2\" errors=\"0\" time=\"1.500\">\n"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "    <testcase classname=\"kiln.trixie.role.web\" name=\"web on trixie: converge\">\n      \
                 <failure message=\"role web on trixie: it &lt;broke&gt;\">role web on trixie: it &lt;broke&gt;\nsecond line</failure>\n    \
                 </testcase>\n"
            ),
            "{xml}"
        );
        assert!(xml.ends_with("  </testsuite>\n</testsuites>\n"), "{xml}");
    }
}
