//! JUnit XML, as Jenkins and most CI systems read it: one testsuite per
//! role and release, one testcase per step and per verify check, each
//! named with both (`web on trixie: converge`).

use std::fmt::Write as _;

use super::RoleOutcome;

fn esc(s: &str) -> String {
    s.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

pub fn render(outcomes: &[RoleOutcome]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kiln test\">\n",
    );
    for o in outcomes {
        let cases = o.cases();
        let failures = cases.iter().filter(|c| c.failure.is_some()).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"role[{}] on {}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">",
            esc(&o.role),
            esc(&o.release),
            cases.len(),
            o.elapsed.as_secs_f64()
        );
        if !o.inside.substitutions.is_empty() {
            x.push_str("    <properties>\n");
            for s in &o.inside.substitutions {
                let _ = writeln!(
                    x,
                    "      <property name=\"kiln.substituted.{}\" value=\"{}\"/>",
                    esc(&s.package),
                    esc(&format!("{} -> {}", s.pin, s.substitute))
                );
            }
            x.push_str("    </properties>\n");
        }
        for c in cases {
            let _ = write!(
                x,
                "    <testcase classname=\"kiln.{}.role.{}\" name=\"{} on {}: {}\"",
                esc(&o.release),
                esc(&o.role),
                esc(&o.role),
                esc(&o.release),
                esc(&c.name)
            );
            match c.failure {
                None => x.push_str("/>\n"),
                Some(f) => {
                    let first = f.lines().next().unwrap_or_default();
                    let _ = writeln!(
                        x,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        esc(first),
                        esc(&f)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
