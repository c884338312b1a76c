//! Hostile templates: recursion that a text scan cannot see, nesting deep
//! enough to overflow a stack, and templates too large to parse in time.
//! `kiln check` refuses each with the template's file and a fix, and never
//! aborts (a stack overflow is exit 134).

use crate::support::*;

/// A repository whose role `node` renders `t.hbs`, holding `text`.
fn with_template(text: &str) -> Repo {
    Repo::new()
        .role("node", "run_list = [\"recipe[cb]\"]")
        .recipe(
            "cb",
            "default",
            "[[resource]]\ntemplate = \"/etc/t\"\nsource = \"t.hbs\"\n",
        )
        .attributes("cb", "[cb]\nt = true\nname = \"x\"\n")
        .template("cb", "t.hbs", text)
}

/// `kiln check` refuses the repository with a message naming the template.
#[track_caller]
fn check_refuses(text: &str, needle: &str) -> Outcome {
    kiln()
        .arg("check")
        .repo(&with_template(text))
        .run()
        .code(1)
        .stderr_contains("cookbooks/cb/templates/t.hbs line ")
        .stderr_contains(needle)
        .stderr_contains("fix: ")
}

/// The review's input: `{{/inline}}` in a comment ended the text scan's
/// partial early, and the `{{> p}}` after it looked like a call from the
/// top level. Rendering it overflowed the stack.
const REVIEWED: &str = "{{#*inline \"p\"}}{{!-- }} {{/inline}} --}}{{> p}}{{/inline}}{{> p}}";

#[test]
fn recursion_hidden_from_a_text_scan_is_refused() {
    for text in [
        REVIEWED,
        "{{#*inline \"p\"}}{{lookup cb \"{{/inline}}\"}}{{> p}}{{/inline}}{{> p}}",
        "{{#*inline \"p\"}}{{{{raw}}}}{{/inline}}{{{{/raw}}}}{{> p}}{{/inline}}{{> p}}",
        "{{#*inline \"a\"}}{{#> b}}{{/b}}{{/inline}}{{#*inline \"b\"}}{{> a}}{{/inline}}{{> a}}",
        "{{#*inline \"@x\"}}{{> @x}}{{/inline}}{{> @x}}",
    ] {
        check_refuses(text, "calls itself");
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let ifs = |n: usize| "{{#if cb.t}}".repeat(n) + "x" + &"{{/if}}".repeat(n);
    kiln()
        .arg("check")
        .repo(&with_template(&ifs(100)))
        .run()
        .success();
    for n in [2_000, 10_000, 100_000] {
        check_refuses(&ifs(n), "nest more than 100 deep");
    }
    let subexpressions = |n: usize| {
        "{{lookup cb ".to_string() + &"(lookup cb ".repeat(n) + "\"t\"" + &")".repeat(n) + "}}"
    };
    check_refuses(&subexpressions(2_000), "nest more than 100 deep");
    let many = "{{cb.name}}\n".repeat(100_000);
    kiln()
        .arg("check")
        .repo(&with_template(&many))
        .run()
        .code(1)
        .stderr_contains("cookbooks/cb/templates/t.hbs")
        .stderr_contains("too large to parse");
}

#[test]
fn recursion_in_an_attribute_value_is_refused() {
    // Attribute values that use a secret are rendered too, to mark it.
    let repo = with_template("{{cb.name}}").attributes(
        "cb",
        &format!("[cb]\nname = 'x'\nevil = '{REVIEWED}{{{{secret \"a\"}}}}'\n"),
    );
    kiln()
        .arg("check")
        .repo(&repo)
        .run()
        .code(1)
        .stderr_contains("calls itself");
}

#[test]
fn a_refused_template_changes_nothing_on_the_target() {
    need!(DebianRoot);
    let repo = with_template(REVIEWED);
    let root = TestRoot::new();
    let before = tree_hash(&root);
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--role", "node"])
        .run()
        .code(1)
        .stderr_contains("calls itself");
    assert_eq!(tree_hash(&root), before);
    assert!(!at(&root, "/etc/t").exists());
}
