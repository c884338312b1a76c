//! Limits on a template's shape, enforced on handlebars' parsed template
//! before it renders. handlebars renders blocks and partials by recursion
//! on the stack, with no limit of its own: a partial that calls itself, or
//! a few thousand nested blocks, overflowed it and aborted kiln. Scanning
//! the text for `{{> p}}` was fooled by comments and string literals, so
//! the walk here sees only what the parser saw.

use std::collections::HashMap;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Template, TemplateErrorReason};

/// Why a string or template did not render (here: parse, or kiln's limits;
/// the renderer returns it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    /// The attribute path that does not exist, when that is the reason.
    pub missing: Option<String>,
    pub line: Option<usize>,
    pub message: String,
    /// The fix, when the failure knows it (an escaping helper's).
    pub fix: Option<String>,
}

/// How deep inline partials may call each other (`{{> a}}` in `a` calling
/// `b`, and so on).
pub const MAX_PARTIAL_DEPTH: usize = 32;

/// How deep one rendering may nest: blocks (`{{#if}}`, `{{#each}}`, partial
/// blocks), `{{else if}}` links, subexpressions and partial calls, counted
/// along the way a render takes through the partials it calls.
pub const MAX_NESTING: usize = 100;

/// The most parsing work a template may ask for, in tags times bytes:
/// handlebars' parser finds the line of each tag by counting from the top,
/// so its time grows with that product (1,000 tags in 64 KiB, or 100 in
/// 640 KiB, are at the limit; 10,000 nested blocks took minutes).
pub const MAX_PARSE_WORK: usize = 64 << 20;

/// Texts with no more than this many `{`, `[` and `(` are parsed on the
/// caller's stack: each level the parser nests into starts with one of
/// them, so they cannot nest deeper than that. Others are parsed on a
/// thread of [`PARSE_STACK`] bytes.
const SHALLOW: usize = 256;

/// The stack of the thread that parses a text that might nest deeply. The
/// parser stops with an error before it runs out of stack (64 KiB before);
/// a large stack lets it reach the end of any text kiln would accept, and
/// gives a nested result room to be taken apart.
const PARSE_STACK: usize = 64 << 20;

/// Parses `text` and refuses it, before it is ever rendered, if a partial
/// could call itself (directly or through others, inline partials and
/// partial blocks alike), partial calls nest deeper than
/// [`MAX_PARTIAL_DEPTH`], or rendering would nest deeper than
/// [`MAX_NESTING`]. The template returned renders within those limits.
pub fn parse(text: &str) -> Result<Template, RenderFailure> {
    precheck(text)?;
    let openers = text.bytes().filter(|b| b"{[(".contains(b)).count();
    if openers <= SHALLOW {
        return parse_here(text);
    }
    let owned = text.to_string();
    std::thread::Builder::new()
        .name("kiln-template".into())
        .stack_size(PARSE_STACK)
        .spawn(move || parse_here(&owned))
        .map_err(|e| {
            failure(
                None,
                format!("cannot start the template parser: {e}"),
                "free memory or raise the process limits, and run kiln again",
            )
        })?
        .join()
        .unwrap_or_else(|_| {
            Err(failure(
                None,
                "the template parser failed".into(),
                "report this template to kiln's maintainers",
            ))
        })
}

fn failure(line: Option<usize>, message: String, fix: &str) -> RenderFailure {
    RenderFailure {
        missing: None,
        line,
        message,
        fix: Some(fix.to_string()),
    }
}

const FLATTEN: &str = "nest fewer blocks inside blocks, and call fewer partials from partials";

/// Refuses, before the parser sees it, a text that would take the parser
/// more than [`MAX_PARSE_WORK`], or that nests blocks deeper than
/// [`MAX_NESTING`] by a count of its `{{#` and `{{/` tags. That count is a
/// quick answer for the common case, not the guard: tags in comments can
/// push it either way. What keeps kiln safe from deep input is the
/// parser's own stack check, the large stack, and the walk of the result.
/// A text rendered without the parser is held to the same limits, so that
/// what a template may be does not depend on which way it renders.
pub(super) fn precheck(text: &str) -> Result<(), RenderFailure> {
    let (mut depth, mut tags, mut line) = (0usize, 0usize, 1usize);
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => line += 1,
            b'(' | b'[' => tags += 1,
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                tags += 1;
                let rest = &bytes[i + 2..];
                let rest = rest.strip_prefix(b"~").unwrap_or(rest);
                match rest.first() {
                    Some(b'#') => {
                        depth += 1;
                        if depth > MAX_NESTING {
                            return Err(too_deep(line, None));
                        }
                    }
                    Some(b'/') => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let work = tags.saturating_mul(text.len());
    if work > MAX_PARSE_WORK {
        return Err(failure(
            None,
            format!(
                "the template is too large to parse: {tags} tags in {} bytes (tags times bytes may be at most {MAX_PARSE_WORK})",
                text.len()
            ),
            "split the template into smaller ones, or move large fixed text into a cookbook file",
        ));
    }
    Ok(())
}

fn parse_here(text: &str) -> Result<Template, RenderFailure> {
    let template = Template::compile(text).map_err(|e| {
        let message = match e.reason() {
            TemplateErrorReason::InvalidSyntax(m) if m.contains("limit reached") => {
                return failure(
                    e.pos().map(|p| p.0),
                    format!(
                        "the template nests too deep to parse (at most {MAX_NESTING} levels render)"
                    ),
                    FLATTEN,
                );
            }
            reason => {
                // The reason may quote the whole of a long parameter.
                let reason = reason.to_string();
                let cut = (0..=reason.len().min(200))
                    .rev()
                    .find(|&i| reason.is_char_boundary(i))
                    .unwrap_or(0);
                let more = if cut < reason.len() { "..." } else { "" };
                format!("template syntax: {}{more}", &reason[..cut])
            }
        };
        failure(
            e.pos().map(|p| p.0),
            message,
            "correct the handlebars syntax in the template",
        )
    })?;
    match check(&template) {
        Ok(()) => Ok(template),
        Err(e) => {
            dismantle(template);
            Err(e)
        }
    }
}

/// What one scope (the top level, or the body of one `{{#*inline}}`)
/// renders: how deep it nests on its own, and the partials it calls.
#[derive(Default)]
struct Scope {
    name: String,
    /// The deepest element of the scope itself, counted from 0.
    deepest: usize,
    calls: Vec<Call>,
}

struct Call {
    partial: String,
    /// The nesting at the call: the partial's body renders one deeper.
    depth: usize,
    line: usize,
}

/// One element still to visit, with where it renders.
struct Visit<'a> {
    element: &'a TemplateElement,
    line: usize,
    scope: usize,
    depth: usize,
}

/// Walks the parsed template (with a stack of its own, so that a deep
/// template cannot overflow this walk either), then the call graph of its
/// partials.
fn check(template: &Template) -> Result<(), RenderFailure> {
    let mut scopes = vec![Scope::default()];
    let mut todo: Vec<Visit> = Vec::new();
    push_template(&mut todo, template, 0, 1, 0);
    while let Some(Visit {
        element,
        line,
        scope,
        depth,
    }) = todo.pop()
    {
        if depth > MAX_NESTING {
            return Err(too_deep(line, None));
        }
        scopes[scope].deepest = scopes[scope].deepest.max(depth);
        let (name, params, hash, body, inverse) = match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => continue,
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => (
                &h.name,
                &h.params,
                &h.hash,
                h.template.as_ref(),
                h.inverse.as_ref(),
            ),
            TemplateElement::DecoratorExpression(d)
            | TemplateElement::DecoratorBlock(d)
            | TemplateElement::PartialExpression(d)
            | TemplateElement::PartialBlock(d) => {
                (&d.name, &d.params, &d.hash, d.template.as_ref(), None)
            }
            _ => {
                return Err(failure(
                    Some(line),
                    "a template element this version of kiln does not know".into(),
                    "write the template without it",
                ));
            }
        };
        let mut body_scope = scope;
        let mut body_depth = depth + 1;
        match element {
            TemplateElement::DecoratorBlock(_) if as_name(name).as_deref() == Some("inline") => {
                // A definition renders where it is called, not here.
                let defined = match params.first() {
                    Some(Parameter::Literal(serde_json::Value::String(s))) => key(s),
                    _ => {
                        return Err(failure(
                            Some(line),
                            "an inline partial without a quoted name".into(),
                            "name it in quotes: {{#*inline \"NAME\"}}",
                        ));
                    }
                };
                scopes.push(Scope {
                    name: defined,
                    ..Scope::default()
                });
                body_scope = scopes.len() - 1;
                body_depth = 0;
            }
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                let Some(partial) = as_name(name) else {
                    return Err(failure(
                        Some(line),
                        "dynamic partials ({{> (...)}}) are not supported".into(),
                        "name the partial: {{> NAME}}",
                    ));
                };
                // `@partial-block` writes the caller's block, already
                // rendered where the caller is (or its own fallback).
                if partial != "@partial-block" {
                    scopes[scope].calls.push(Call {
                        partial: key(&partial),
                        depth,
                        line,
                    });
                }
            }
            _ => {}
        }
        let subexpressions = std::iter::once(name)
            .chain(params)
            .chain(hash.values())
            .filter_map(|p| match p {
                Parameter::Subexpression(s) => Some(s.as_element()),
                _ => None,
            });
        for element in subexpressions {
            todo.push(Visit {
                element,
                line,
                scope,
                depth: depth + 1,
            });
        }
        for t in body.into_iter().chain(inverse) {
            push_template(&mut todo, t, body_scope, line, body_depth);
        }
    }
    Graph::new(&scopes).check()
}

fn push_template<'a>(
    todo: &mut Vec<Visit<'a>>,
    t: &'a Template,
    scope: usize,
    line: usize,
    depth: usize,
) {
    for (i, element) in t.elements.iter().enumerate() {
        let line = t.mapping.get(i).map_or(line, |m| m.0);
        todo.push(Visit {
            element,
            line,
            scope,
            depth,
        });
    }
}

/// The name a partial or decorator is called by, when it is written out
/// rather than computed.
fn as_name(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(
            handlebars::Path::Relative((_, raw)) | handlebars::Path::Local((_, _, raw)),
        ) => Some(raw.clone()),
        Parameter::Literal(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Partial names as the call graph keys them: without quotes or brackets,
/// so that every spelling handlebars might resolve to one partial lands on
/// one key (merging two names only adds calls, never hides one).
fn key(name: &str) -> String {
    name.trim_matches(|c: char| c.is_whitespace() || "\"'[]".contains(c))
        .to_string()
}

fn too_deep(line: usize, through: Option<&[String]>) -> RenderFailure {
    let through = through
        .map(|p| format!(" (through partials {})", p.join(" -> ")))
        .unwrap_or_default();
    failure(
        Some(line),
        format!(
            "blocks, else-if links, subexpressions and partial calls nest more than {MAX_NESTING} deep{through}"
        ),
        FLATTEN,
    )
}

/// The partials' call graph: every definition of a name counts (inline
/// partials are scoped by block at render time, which only removes calls).
struct Graph<'a> {
    scopes: &'a [Scope],
    by_name: HashMap<&'a str, Vec<usize>>,
    /// Per name, once explored: the deepest nesting a call of it renders
    /// (counting its body from 1) and the longest chain of partials it
    /// starts (itself included).
    done: HashMap<&'a str, (usize, usize)>,
    path: Vec<String>,
}

impl<'a> Graph<'a> {
    fn new(scopes: &'a [Scope]) -> Self {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, s) in scopes.iter().enumerate().skip(1) {
            by_name.entry(s.name.as_str()).or_default().push(i);
        }
        Graph {
            scopes,
            by_name,
            done: HashMap::new(),
            path: Vec::new(),
        }
    }

    fn check(mut self) -> Result<(), RenderFailure> {
        self.scope_reach(0).map(|_| ())
    }

    /// The deepest nesting and longest chain below the calls of one scope.
    fn scope_reach(&mut self, scope: usize) -> Result<(usize, usize), RenderFailure> {
        let scopes = self.scopes;
        let mut deepest = (scopes[scope].deepest, 0);
        for call in &scopes[scope].calls {
            let Some((depth, chain)) = self.reach(&call.partial, call.line)? else {
                continue;
            };
            let depth = call.depth + depth;
            if depth > MAX_NESTING {
                let mut through = self.path.clone();
                through.push(call.partial.clone());
                return Err(too_deep(call.line, Some(&through)));
            }
            deepest = (deepest.0.max(depth), deepest.1.max(chain));
        }
        Ok(deepest)
    }

    /// What calling `name` adds (None: no such inline partial, which
    /// handlebars reports when it renders).
    fn reach(&mut self, name: &str, line: usize) -> Result<Option<(usize, usize)>, RenderFailure> {
        let Some((name, defs)) = self.by_name.get_key_value(name) else {
            return Ok(None);
        };
        if let Some(&known) = self.done.get(name) {
            if self.path.len() + known.1 > MAX_PARTIAL_DEPTH {
                return Err(self.chain_too_long(line));
            }
            return Ok(Some(known));
        }
        if let Some(pos) = self.path.iter().position(|p| p == name) {
            let mut cycle = self.path[pos..].to_vec();
            cycle.push(name.to_string());
            return Err(failure(
                Some(line),
                format!(
                    "partial {name:?} calls itself ({}): it would recurse forever",
                    cycle.join(" -> ")
                ),
                "end the cycle: a partial may not call itself, directly or through other partials",
            ));
        }
        if self.path.len() >= MAX_PARTIAL_DEPTH {
            return Err(self.chain_too_long(line));
        }
        let (name, defs) = (*name, defs.clone());
        self.path.push(name.to_string());
        let mut reach = (0, 0);
        for scope in defs {
            let (depth, chain) = self.scope_reach(scope)?;
            reach = (reach.0.max(depth), reach.1.max(chain));
        }
        self.path.pop();
        // The call itself, and the body one deeper than the call.
        let reach = (reach.0 + 1, reach.1 + 1);
        self.done.insert(name, reach);
        Ok(Some(reach))
    }

    fn chain_too_long(&self, line: usize) -> RenderFailure {
        failure(
            Some(line),
            format!(
                "partials nest more than {MAX_PARTIAL_DEPTH} deep ({} -> ...)",
                self.path.join(" -> ")
            ),
            "call fewer partials from partials",
        )
    }
}

/// Drops a parsed template piece by piece: dropping it whole recurses once
/// per level, and the parser accepts levels by the thousand.
fn dismantle(template: Template) {
    let mut todo: Vec<TemplateElement> = template.elements;
    let mut params: Vec<Parameter> = Vec::new();
    while let Some(mut element) = todo.pop() {
        let (name, own, hash, bodies) = match &mut element {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => (
                &mut h.name,
                &mut h.params,
                &mut h.hash,
                [h.template.take(), h.inverse.take()],
            ),
            TemplateElement::DecoratorExpression(d)
            | TemplateElement::DecoratorBlock(d)
            | TemplateElement::PartialExpression(d)
            | TemplateElement::PartialBlock(d) => (
                &mut d.name,
                &mut d.params,
                &mut d.hash,
                [d.template.take(), None],
            ),
            _ => continue,
        };
        for t in bodies.into_iter().flatten() {
            todo.extend(t.elements);
        }
        params.push(std::mem::replace(name, Parameter::Name(String::new())));
        params.append(own);
        params.extend(hash.drain().map(|(_, v)| v));
        for p in params.drain(..) {
            if let Parameter::Subexpression(s) = p {
                todo.push(*s.element);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::render::Renderer;

    fn refused(text: &str) -> RenderFailure {
        match parse(text) {
            Ok(_) => panic!("accepted: {text:.200}"),
            Err(e) => e,
        }
    }

    fn renderer() -> Renderer<'static> {
        Renderer::new(
            &toml::from_str("[cb]\nt = true\nf = false\nlist = [1, 2]\nname = \"x\"").unwrap(),
        )
    }

    #[test]
    fn recursion_hidden_from_a_text_scan_is_found() {
        for text in [
            // The review's input: a comment holding `{{/inline}}`.
            "{{#*inline \"p\"}}{{!-- }} {{/inline}} --}}{{> p}}{{/inline}}{{> p}}",
            "{{#*inline \"p\"}}{{! {{/inline}} }}{{> p}}{{/inline}}{{> p}}",
            "{{#*inline \"p\"}}{{lookup cb \"{{/inline}}\"}}{{> p}}{{/inline}}{{> p}}",
            "{{#*inline \"p\"}}{{{{raw}}}}{{/inline}}{{{{/raw}}}}{{> p}}{{/inline}}{{> p}}",
            "{{#*inline 'p'}}{{> p}}{{/inline}}{{> p}}",
            "{{#*inline \"p\"}}{{> 'p'}}{{/inline}}{{> p}}",
            "{{#*inline \"p\"}}{{> [p]}}{{/inline}}{{> p}}",
            "{{#*inline \"@x\"}}{{> @x}}{{/inline}}{{> @x}}",
            "{{#*inline \"p\"}}{{#> p}}x{{/p}}{{/inline}}{{> p}}",
            "{{#*inline \"p\"}}{{#> q}}{{> p}}{{/q}}{{/inline}}{{#*inline \"q\"}}{{> @partial-block}}{{/inline}}{{> p}}",
            "{{#*inline \"p\"}}{{#if cb.t}}{{#each cb.list}}{{> p}}{{/each}}{{/if}}{{/inline}}{{> p}}",
        ] {
            let e = refused(text);
            assert!(e.message.contains("calls itself"), "{text}: {e:?}");
        }
    }

    #[test]
    fn mutual_recursion_names_the_cycle_and_line() {
        let e = refused(
            "{{#*inline \"a\"}}{{> b}}{{/inline}}\n{{#*inline \"b\"}}\n{{> a}}{{/inline}}\n{{> a}}",
        );
        assert!(e.message.contains("(a -> b -> a)"), "{e:?}");
        assert_eq!(e.line, Some(3));
        assert!(e.fix.is_some());
    }

    #[test]
    fn deep_blocks_and_subexpressions_are_refused_without_overflow() {
        let ifs = |n: usize| "{{#if cb.t}}".repeat(n) + "x" + &"{{/if}}".repeat(n);
        assert_eq!(
            renderer().render(&ifs(MAX_NESTING)).unwrap(),
            "x",
            "the limit itself renders"
        );
        for n in [MAX_NESTING + 1, 10_000, 100_000] {
            let e = refused(&ifs(n));
            assert!(e.message.contains("nest"), "{n}: {e:?}");
        }
        let subs =
            |n: usize| "{{lookup ".to_string() + &"(lookup ".repeat(n) + &")".repeat(n) + "}}";
        assert!(refused(&subs(2_000)).message.contains("nest more than"));
        assert!(
            refused(&subs(100_000))
                .message
                .contains("too large to parse")
        );
        let arrays = "{{lookup cb ".to_string() + &"[".repeat(2_000) + &"]".repeat(2_000) + "}}";
        let e = refused(&arrays);
        assert!(
            e.message.contains("syntax") && e.message.len() < 300,
            "{e:?}"
        );
        let chain = |n: usize| {
            "{{#if cb.f}}a".to_string() + &"{{else if cb.f}}b".repeat(n) + "{{else}}c{{/if}}"
        };
        assert_eq!(renderer().render(&chain(50)).unwrap(), "c");
        let e = refused(&chain(500));
        assert!(e.message.contains("else-if"), "{e:?}");
    }

    #[test]
    fn nesting_counts_through_partials() {
        // Eleven partials, each ten blocks deep, calling the next inside.
        let mut text = partials(0..11, |next| {
            let ifs = "{{#if cb.t}}".repeat(10);
            format!("{ifs}{{{{> p{next}}}}}{}", "{{/if}}".repeat(10))
        });
        text += "{{#*inline \"p11\"}}x{{/inline}}{{> p0}}";
        let e = refused(&text);
        assert!(e.message.contains("through partials p0 -> p1"), "{e:?}");
        // The same, five deep, renders.
        let short = text.replace("{{> p5}}", "");
        assert_eq!(renderer().render(&short).unwrap(), "");
    }

    #[test]
    fn long_and_wide_partial_graphs_are_checked_once_per_partial() {
        // Every partial calls the next one twice: 2^30 paths, 31 partials.
        let mut text = partials(0..30, |next| format!("{{{{> p{next}}}}}{{{{> p{next}}}}}"));
        text += "{{#*inline \"p30\"}}.{{/inline}}";
        parse(&(text.clone() + "{{> p0}}")).unwrap();
        // Made 41 long, it is refused at the 33rd.
        let mut long = text.replace("p30\"}}.", "p30\"}}{{> p31}}");
        long += &partials(31..40, |next| format!("{{{{> p{next}}}}}"));
        long += "{{#*inline \"p40\"}}.{{/inline}}{{> p0}}";
        let e = refused(&long);
        assert!(e.message.contains("more than 32 deep"), "{e:?}");
    }

    #[test]
    fn names_must_be_written_out() {
        assert!(
            refused("{{> (lookup cb \"name\")}}")
                .message
                .contains("dynamic")
        );
        assert!(
            refused("{{#*inline cb.name}}x{{/inline}}")
                .message
                .contains("quoted name")
        );
    }

    #[test]
    fn ordinary_partials_render() {
        let r = renderer();
        let t = "{{#*inline \"item\"}}<{{this}}>{{/inline}}{{#each cb.list}}{{> item}}{{/each}}";
        assert_eq!(r.render(t).unwrap(), "<1><2>");
        let t =
            "{{#*inline \"wrap\"}}[{{> @partial-block}}]{{/inline}}{{#> wrap}}{{cb.name}}{{/wrap}}";
        assert_eq!(r.render(t).unwrap(), "[x]");
        let t = "{{#> missing}}fallback{{/missing}}";
        assert_eq!(r.render(t).unwrap(), "fallback");
        let t = "{{#*inline \"a\"}}A{{> b}}{{/inline}}{{#*inline \"b\"}}B{{/inline}}{{> a}}{{> a}}";
        assert_eq!(r.render(t).unwrap(), "ABAB");
    }

    /// Inline partials `p{i}` for each i, with the body `body(i + 1)`.
    fn partials(range: std::ops::Range<usize>, body: impl Fn(usize) -> String) -> String {
        range
            .map(|i| format!("{{{{#*inline \"p{i}\"}}}}{}{{{{/inline}}}}", body(i + 1)))
            .collect()
    }

    /// xorshift64*: a fixed sequence, so that a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    const NAMES: &[&str] = &["a", "b", "c", "'a'", "[b]", "@x", "\"c\""];

    /// Fragments that wrap others: a block, comments and a raw block.
    const WRAPS: &[(&str, &str)] = &[
        ("{{#each cb.list}}", "{{/each}}"),
        ("{{!-- ", " --}}"),
        ("{{! ", " }}"),
        ("{{{{raw}}}}", "{{{{/raw}}}}"),
    ];

    /// A random template of handlebars fragments, `budget` levels at most.
    fn fragment(rng: &mut Rng, budget: usize, out: &mut String) {
        for _ in 0..1 + rng.below(4) {
            let kind = if budget == 0 {
                rng.below(6)
            } else {
                rng.below(17)
            };
            match kind {
                0 => out.push_str(rng.pick(&["text", "}}", "{", "\\{{cb.t}}", "\n", " {{ ", "("])),
                1 => out.push_str(rng.pick(&["{{cb.name}}", "{{cb.t}}", "{{this}}", "{{@index}}"])),
                2 => {
                    let name = rng.pick(NAMES);
                    out.push_str(&format!("{{{{> {name}}}}}"));
                }
                3 => out.push_str("{{> @partial-block}}"),
                4 => out.push_str(&format!(
                    "{{{{lookup cb {}}}}}",
                    rng.pick(&[
                        "\"{{/if}}\"",
                        "'}}{{> a}}'",
                        "\"name\"",
                        "(lookup cb \"t\")"
                    ])
                )),
                5 => {
                    out.push_str(rng.pick(&["{{", "{{#if", "{{/each}}", "{{else}}", "{{/inline}}"]))
                }
                6 | 7 => {
                    let name = rng.pick(NAMES).trim_matches(['\'', '[', ']', '"']);
                    out.push_str(&format!("{{{{#*inline \"{name}\"}}}}"));
                    fragment(rng, budget - 1, out);
                    out.push_str("{{/inline}}");
                }
                8 => {
                    let name = rng.pick(&["a", "b", "c"]);
                    out.push_str(&format!("{{{{#> {name}}}}}"));
                    fragment(rng, budget - 1, out);
                    out.push_str(&format!("{{{{/{name}}}}}"));
                }
                9 | 10 => {
                    out.push_str("{{#if cb.t}}");
                    fragment(rng, budget - 1, out);
                    if rng.below(2) == 0 {
                        out.push_str("{{else if cb.f}}");
                        fragment(rng, budget - 1, out);
                    }
                    out.push_str("{{else}}");
                    fragment(rng, budget - 1, out);
                    out.push_str("{{/if}}");
                }
                11..=14 => {
                    let (open, close) = WRAPS[rng.below(WRAPS.len())];
                    out.push_str(open);
                    fragment(rng, budget - 1, out);
                    out.push_str(close);
                }
                15 => {
                    // A burst of nesting, sometimes past the limit.
                    let n = rng.below(2 * MAX_NESTING);
                    out.push_str(&"{{#with cb}}".repeat(n));
                    fragment(rng, budget - 1, out);
                    out.push_str(&"{{/with}}".repeat(n));
                }
                _ => {
                    let n = rng.below(300);
                    out.push_str(&"(lookup ".repeat(n));
                }
            }
        }
    }

    #[test]
    fn random_templates_never_crash() {
        let mut rng = Rng(0x6b69_6c6e_2021);
        let (mut rendered, mut refused) = (0, 0);
        for _ in 0..1500 {
            let mut text = String::new();
            fragment(&mut rng, 4, &mut text);
            let text = if rng.below(8) == 0 {
                let mut cut = rng.below(text.len() + 1);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text[..cut].to_string()
            } else {
                text
            };
            // A thread with the default stack: an overflow aborts the test.
            let shown = text.clone();
            let ok = std::thread::spawn(move || renderer().render(&text).is_ok())
                .join()
                .unwrap_or_else(|_| panic!("panicked on {shown:?}"));
            if ok {
                rendered += 1;
            } else {
                refused += 1;
            }
        }
        // Both outcomes occur, so the grammar reaches both sides.
        assert!(
            rendered > 100 && refused > 100,
            "{rendered} rendered, {refused} refused"
        );
    }

    #[test]
    fn a_panic_on_the_parser_thread_unwinds_to_its_join() {
        // kiln links its unwinder statically (build.rs): a panic there is
        // still an error the caller handles, not an abort of the process.
        let joined = std::thread::Builder::new()
            .stack_size(PARSE_STACK)
            .spawn(|| -> Result<(), RenderFailure> { panic!("a parser bug") })
            .unwrap()
            .join();
        assert!(joined.is_err());
        assert!(std::panic::catch_unwind(|| panic!("here too")).is_err());
    }
}
