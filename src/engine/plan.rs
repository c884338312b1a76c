//! The plan: what every resource would change, read from the target once
//! before anything changes, with the notifications those changes fire
//! resolved. `--why-run` renders it and a run carries it out (see
//! [`super::apply`]); neither decides anything the plan did not.

use std::time::{Duration, Instant};

use super::compile::{Compiled, Policy, Timing};
use super::guards::{self, Guards};
use crate::resource::{Context, Planned, ResourceResult};

/// Every resource's difference from the target, in policy order. It owns
/// all it says, and serializes (redacted) as `--why-run --json` prints it.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The notified actions that the planned changes fire, each checked
    /// once; [`Notice::check`] points into this list.
    pub notified: Vec<Step>,
}

/// What one resource (or one notified action of it) would do.
#[derive(Debug)]
pub struct Step {
    /// The resource's index in the policy.
    pub index: usize,
    /// How reports name it (see [`Policy::shown_id`]).
    pub resource: String,
    /// Why the resource is skipped (a guard), if it is.
    pub guard: Option<String>,
    pub actions: Vec<ResourceResult<Planned>>,
    /// The resources it notifies, resolved.
    pub notifies: Vec<Notice>,
    /// Time spent reading state and running guards.
    pub took: Duration,
    /// Its path held a secret: the plan never shows its diffs.
    hide_diff: bool,
}

/// One notification of a step: whom, what, when, and whether it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The notified resource's index in the policy.
    pub target: usize,
    pub resource: String,
    pub action: String,
    pub timing: Timing,
    /// When the step's planned change fires it: its check, an index into
    /// [`Plan::notified`].
    pub check: Option<usize>,
}

impl Step {
    /// Whether carrying the step out as planned fires its notifications:
    /// no guard skips it, every action could be checked, and one of them
    /// changes something that is news to the resources it notifies.
    pub fn fires(&self) -> bool {
        self.guard.is_none()
            && self.actions.iter().all(Result::is_ok)
            && self.actions.iter().flatten().any(Planned::notifies)
    }

    /// Whether `other` (the same step checked again) says the same: the
    /// same guard and, action by action, the same changes or errors.
    pub fn same_as(&self, other: &Step) -> bool {
        self.guard == other.guard
            && self.actions.len() == other.actions.len()
            && (self.actions.iter().zip(&other.actions)).all(|(a, b)| same(a, b))
    }

    fn to_json(&self) -> serde_json::Value {
        let actions: Vec<serde_json::Value> = self
            .actions
            .iter()
            .map(|a| match a {
                Ok(p) => p.to_json(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .map(|mut a| {
                if self.hide_diff {
                    hide_diffs(&mut a);
                }
                a
            })
            .collect();
        serde_json::json!({
            "resource": self.resource,
            "guard": self.guard,
            "actions": actions,
        })
    }
}

/// Whether two checks of one action say the same.
pub(super) fn same(a: &ResourceResult<Planned>, b: &ResourceResult<Planned>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a.action == b.action && a.changes == b.changes,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

impl Plan {
    /// The delayed notifications the plan fires at the end of the run, once
    /// each, in the order they are first fired.
    pub fn delayed(&self) -> Vec<&Notice> {
        let mut out: Vec<&Notice> = Vec::new();
        let fired = self.steps.iter().flat_map(|s| &s.notifies);
        for n in fired.filter(|n| n.timing == Timing::Delayed && n.check.is_some()) {
            if !out
                .iter()
                .any(|o| o.target == n.target && o.action == n.action)
            {
                out.push(n);
            }
        }
        out
    }

    /// The plan for machines, with every secret value this run resolved
    /// taken out: per resource, the guard that skips it or each action's
    /// typed difference (or why it could not be checked), and whom it
    /// notifies; then the delayed notifications, as they would run.
    pub fn to_json(&self) -> serde_json::Value {
        let notice = |n: &Notice| {
            let mut v = serde_json::json!({
                "resource": n.resource,
                "action": n.action,
                "timing": n.timing,
                "fires": n.check.is_some(),
            });
            if let Some(c) = n.check.and_then(|c| self.notified.get(c)) {
                v["check"] = c.to_json();
            }
            v
        };
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut v = s.to_json();
                v["notifies"] = s.notifies.iter().map(notice).collect();
                v
            })
            .collect();
        let delayed: Vec<serde_json::Value> = self.delayed().into_iter().map(notice).collect();
        let mut v = serde_json::json!({ "steps": steps, "delayed": delayed });
        crate::secrets::redact::json(&mut v);
        v
    }
}

impl serde::Serialize for Plan {
    /// As [`Plan::to_json`]: never without its redactions.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// Withholds every diff of a planned difference, as
/// [`super::ResourceReport::redact`] does for a path that held a secret.
fn hide_diffs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Array(a) => a.iter_mut().for_each(hide_diffs),
        serde_json::Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "diff" && x.is_string() {
                    *x = crate::resource::fsmeta::SUPPRESSED.into();
                } else {
                    hide_diffs(x);
                }
            }
        }
        _ => {}
    }
}

/// Plans every resource of `policy` against the target as it is now.
pub fn plan(policy: &Policy, cx: &mut Context) -> Plan {
    let each = policy
        .resources
        .iter()
        .flat_map(|r| r.only_if.iter().chain(r.not_if.iter()));
    let known = guards::in_parallel(each, cx.target);
    plan_with(&policy.resources, &|i| names(policy, i), &known, cx)
}

/// Checks `actions` of resource `i` of `policy` again, now: the target has
/// changed since the plan, so its guards run again too.
pub(super) fn recheck(policy: &Policy, i: usize, actions: &[String], cx: &mut Context) -> Step {
    let r = &policy.resources[i];
    check(i, r, actions, names(policy, i), &Guards::new(), cx)
}

fn names(policy: &Policy, i: usize) -> (String, bool) {
    let hidden = policy.hides_content(&policy.resources[i]);
    (policy.shown_id(i), hidden)
}

/// How reports name resource `i`, and whether its diffs are withheld.
type Names<'a> = dyn Fn(usize) -> (String, bool) + 'a;

/// [`plan`] over `resources`, with guard verdicts already known.
fn plan_with(resources: &[Compiled], names: &Names, known: &Guards, cx: &mut Context) -> Plan {
    let mut plan = Plan::default();
    for (i, r) in resources.iter().enumerate() {
        let mut step = check(i, r, &r.actions, names(i), known, cx);
        let fires = step.fires();
        for n in &r.notifies {
            let check = fires.then(|| {
                let seen = (plan.steps.iter().chain([&step]))
                    .flat_map(|s| &s.notifies)
                    .filter(|o| o.target == n.target && o.action == n.action)
                    .find_map(|o| o.check);
                seen.unwrap_or_else(|| {
                    let t = &resources[n.target];
                    let action = std::slice::from_ref(&n.action);
                    let s = check(n.target, t, action, names(n.target), known, cx);
                    plan.notified.push(s);
                    plan.notified.len() - 1
                })
            });
            step.notifies.push(Notice {
                target: n.target,
                resource: names(n.target).0,
                action: n.action.clone(),
                timing: n.timing,
                check,
            });
        }
        plan.steps.push(step);
    }
    plan
}

/// Checks `actions` of resource `i` (`r`), unless a guard skips it.
fn check(
    i: usize,
    r: &Compiled,
    actions: &[String],
    (resource, hide_diff): (String, bool),
    known: &Guards,
    cx: &mut Context,
) -> Step {
    let start = Instant::now();
    let guard = guards::skips(r.only_if.as_ref(), r.not_if.as_ref(), cx.target, known);
    let actions = match guard {
        Some(_) => Vec::new(),
        None => actions.iter().map(|a| r.imp.plan(a, cx)).collect(),
    };
    Step {
        index: i,
        resource,
        guard,
        actions,
        notifies: Vec::new(),
        took: start.elapsed(),
        hide_diff,
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::path::Path;

    use super::*;
    use crate::engine::compile::Notification;
    use crate::engine::guards::Guard;
    use crate::error::RunError;
    use crate::platform::target::Target;
    use crate::resource::{Converge, Item, ResourceId, State, actions};

    actions! {
        enum Act { Apply = "apply", Restart = "restart", Nothing = "nothing" }
    }

    #[derive(Debug, serde::Serialize)]
    struct Would {
        summary: String,
        diff: Option<String>,
    }

    impl fmt::Display for Would {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.summary)
        }
    }

    impl Item for Would {
        fn diff(&self) -> Option<String> {
            self.diff.clone()
        }
    }

    /// A test double of the target's state: what a resource would change,
    /// by action, given instead of read.
    #[derive(Debug)]
    struct Fake(Vec<(&'static str, &'static str)>);

    impl Converge for Fake {
        type Action = Act;
        type Item = Would;
        fn check(&self, a: Act, _: &mut Context) -> ResourceResult<Vec<Would>> {
            use crate::resource::Action as _;
            Ok((self.0.iter())
                .filter(|(n, _)| *n == a.name())
                .map(|(_, c)| Would {
                    summary: c.to_string(),
                    diff: Some(format!("+{c}\n")),
                })
                .collect())
        }
        fn apply(&self, _: Act, _: &[Would], _: &mut Context) -> ResourceResult<()> {
            Err(RunError::precondition("a plan never applies"))
        }
        fn fingerprint(_: &str, _: &mut State) -> Option<String> {
            None
        }
    }

    fn resource(
        name: &str,
        state: Fake,
        actions: &[&str],
        notifies: Vec<Notification>,
    ) -> Compiled {
        Compiled {
            id: ResourceId {
                kind: "fake".into(),
                name: name.into(),
            },
            origin: "recipe[t::default]".into(),
            file: "recipes/default.toml".into(),
            line: 1,
            actions: actions.iter().map(|a| a.to_string()).collect(),
            notifies,
            only_if: None,
            not_if: None,
            ignore_failure: false,
            sensitive: false,
            imp: Box::new(state),
        }
    }

    fn notify(target: usize, action: &str, timing: Timing) -> Notification {
        Notification {
            action: action.into(),
            target,
            timing,
        }
    }

    /// Plans `resources` against nothing: every state is the doubles'.
    fn plan_of(resources: &[Compiled], known: &Guards, hidden: &[usize]) -> Plan {
        let target = Target::at_root(Path::new("/nonexistent/kiln-plan-test"));
        let mut cx = Context::new(&target);
        let names = |i: usize| (resources[i].id.to_string(), hidden.contains(&i));
        plan_with(resources, &names, known, &mut cx)
    }

    fn summaries(s: &Step) -> Vec<&str> {
        (s.actions.iter().flatten())
            .flat_map(|p| &p.changes)
            .map(|c| c.summary.as_str())
            .collect()
    }

    #[test]
    fn a_plan_resolves_which_changes_notify_whom_and_when() {
        let resources = [
            resource(
                "conf",
                Fake(vec![("apply", "write content")]),
                &["apply"],
                vec![
                    notify(3, "restart", Timing::Delayed),
                    notify(2, "apply", Timing::Immediately),
                ],
            ),
            resource(
                "unchanged",
                Fake(vec![]),
                &["apply"],
                vec![notify(3, "restart", Timing::Delayed)],
            ),
            resource("hook", Fake(vec![("apply", "run")]), &["nothing"], vec![]),
            resource(
                "svc",
                Fake(vec![("restart", "restart")]),
                &["apply"],
                vec![],
            ),
            resource(
                "conf2",
                Fake(vec![("apply", "write content")]),
                &["apply"],
                vec![notify(3, "restart", Timing::Delayed)],
            ),
        ];
        let plan = plan_of(&resources, &Guards::new(), &[]);
        assert_eq!(plan.steps.len(), 5);
        assert_eq!(summaries(&plan.steps[0]), ["write content"]);
        assert!(plan.steps[0].fires());
        assert!(summaries(&plan.steps[1]).is_empty() && !plan.steps[1].fires());
        assert!(
            summaries(&plan.steps[3]).is_empty(),
            "svc's own action changes nothing"
        );

        // Only a change fires: the unchanged resource's notice is resolved, not fired.
        let [later, now] = &plan.steps[0].notifies[..] else {
            panic!("two notices: {:?}", plan.steps[0].notifies);
        };
        assert_eq!(
            (later.resource.as_str(), later.timing),
            ("fake[svc]", Timing::Delayed)
        );
        assert_eq!(
            (now.resource.as_str(), now.timing),
            ("fake[hook]", Timing::Immediately)
        );
        assert!(later.check.is_some() && now.check.is_some());
        assert_eq!(plan.steps[1].notifies[0].check, None);
        // One check per notified action, shared by every change that fires it.
        assert_eq!(plan.steps[4].notifies[0].check, later.check);
        assert_eq!(plan.notified.len(), 2);
        let restart = &plan.notified[later.check.unwrap()];
        assert_eq!((restart.index, summaries(restart)), (3, vec!["restart"]));
        assert_eq!(summaries(&plan.notified[now.check.unwrap()]), ["run"]);

        // Delayed notifications run once, at the end.
        let delayed: Vec<(&str, &str)> = (plan.delayed().into_iter())
            .map(|n| (n.resource.as_str(), n.action.as_str()))
            .collect();
        assert_eq!(delayed, [("fake[svc]", "restart")]);
    }

    #[test]
    fn a_notified_action_is_checked_once_whoever_fires_it() {
        let restart = || vec![notify(3, "restart", Timing::Delayed)];
        let resources = [
            resource("unchanged", Fake(vec![]), &["apply"], restart()),
            resource("one", Fake(vec![("apply", "write")]), &["apply"], restart()),
            resource("two", Fake(vec![("apply", "write")]), &["apply"], restart()),
            resource(
                "svc",
                Fake(vec![("restart", "restart")]),
                &["apply"],
                vec![],
            ),
        ];
        let plan = plan_of(&resources, &Guards::new(), &[]);
        let checks: Vec<Option<usize>> = (plan.steps.iter())
            .map(|s| s.notifies.first().and_then(|n| n.check))
            .collect();
        assert_eq!(checks, [None, Some(0), Some(0), None]);
        assert_eq!(plan.notified.len(), 1);
    }

    #[test]
    fn known_guards_skip_steps_and_notified_actions_without_running_anything() {
        let mut guarded = resource(
            "guarded",
            Fake(vec![("apply", "write")]),
            &["apply"],
            vec![],
        );
        guarded.only_if = Some(Guard::Shell("probe one".into()));
        let mut svc = resource(
            "svc",
            Fake(vec![("restart", "restart")]),
            &["apply"],
            vec![],
        );
        svc.not_if = Some(Guard::Shell("probe two".into()));
        let notifier = resource(
            "conf",
            Fake(vec![("apply", "write")]),
            &["apply"],
            vec![notify(1, "restart", Timing::Immediately)],
        );
        let resources = [guarded, svc, notifier];
        // The double's verdicts: a command not in it would run on the target.
        let known: Guards = [
            (Guard::Shell("probe one".into()), false),
            (Guard::Shell("probe two".into()), true),
        ]
        .into();
        let plan = plan_of(&resources, &known, &[]);
        assert_eq!(plan.steps[0].guard.as_deref(), Some("only_if false"));
        assert!(plan.steps[0].actions.is_empty() && !plan.steps[0].fires());
        assert_eq!(plan.steps[1].guard.as_deref(), Some("not_if true"));
        let fired = &plan.notified[plan.steps[2].notifies[0].check.unwrap()];
        assert_eq!(fired.guard.as_deref(), Some("not_if true"));
    }

    #[test]
    fn the_json_plan_withholds_hidden_diffs_and_says_what_fires() {
        let resources = [
            resource(
                "secret",
                Fake(vec![("apply", "write")]),
                &["apply"],
                vec![notify(1, "restart", Timing::Delayed)],
            ),
            resource(
                "svc",
                Fake(vec![("restart", "restart")]),
                &["apply"],
                vec![],
            ),
        ];
        let plan = plan_of(&resources, &Guards::new(), &[0]);
        let v = serde_json::to_value(&plan).unwrap();
        let step = &v["steps"][0];
        assert_eq!(step["resource"], "fake[secret]");
        assert_eq!(step["actions"][0]["action"], "apply");
        let change = &step["actions"][0]["changes"][0];
        assert_eq!(change["summary"], "write");
        assert_eq!(change["diff"], crate::resource::fsmeta::SUPPRESSED);
        assert_eq!(step["notifies"][0]["fires"], true);
        assert_eq!(step["notifies"][0]["timing"], "delayed");
        let check = &step["notifies"][0]["check"];
        assert_eq!(check["actions"][0]["changes"][0]["diff"], "+restart\n");
        assert_eq!(v["delayed"][0]["resource"], "fake[svc]");
        assert_eq!(v["steps"][1]["notifies"], serde_json::json!([]));
    }

    #[test]
    fn a_step_checked_again_is_compared_with_the_plan() {
        let before = [resource(
            "f",
            Fake(vec![("apply", "create")]),
            &["apply"],
            vec![],
        )];
        let after = [resource(
            "f",
            Fake(vec![("apply", "update content")]),
            &["apply"],
            vec![],
        )];
        let same_again = [resource(
            "f",
            Fake(vec![("apply", "create")]),
            &["apply"],
            vec![],
        )];
        let plan = |r: &[Compiled]| plan_of(r, &Guards::new(), &[]).steps.remove(0);
        let planned = plan(&before);
        assert!(planned.same_as(&plan(&same_again)));
        assert!(!planned.same_as(&plan(&after)));
    }
}
