//! Bad policy is refused at compile time with a message that names the
//! file, the line where known, and the fix; the target is left untouched.

use crate::support::*;

/// A good resource first, so that a partial run would show on the target.
const GOOD: &str = "[[resource]]\nfile = \"/etc/kiln-good\"\ncontent = \"x\\n\"\n\n";

/// Converges `recipe[cb]` and asserts it fails without touching the root.
#[track_caller]
fn refused(repo: &Repo, run_list: &str) -> Outcome {
    let root = TestRoot::new();
    let before = tree_hash(&root);
    let out = kiln()
        .arg("converge")
        .repo(repo)
        .root(&root)
        .args(["--run-list", run_list])
        .run()
        .code(1);
    assert_eq!(tree_hash(&root), before, "a refused run changed the target");
    assert!(!at(&root, "/etc/kiln-good").exists());
    out
}

#[test]
fn malformed_toml_names_file_line_and_column() {
    let repo = Repo::new().recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\nfile = \"/x\ncontent = 1\n"),
    );
    refused(&repo, "recipe[cb]")
        .stderr_contains("cookbooks/cb/recipes/default.toml:6:")
        .stderr_contains("fix:");
}

#[test]
fn unknown_resource_type_lists_the_valid_ones() {
    let repo = Repo::new().recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\npakage = \"curl\"\n"),
    );
    refused(&repo, "recipe[cb]")
        .stderr_contains("default.toml:5")
        .stderr_contains("unknown resource type \"pakage\"")
        .stderr_contains("file, template, directory, link");
}

#[test]
fn unknown_property_lists_the_valid_ones() {
    let repo = Repo::new().recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\nfile = \"/etc/y\"\ncontents = \"typo\"\n"),
    );
    refused(&repo, "recipe[cb]")
        .stderr_contains("file[/etc/y]: unknown property \"contents\"")
        .stderr_contains("valid properties of file: content, source, owner, group, mode");
}

#[test]
fn missing_attribute_names_recipe_resource_and_attribute() {
    let repo = Repo::new().recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\nfile = \"/etc/y\"\ncontent = \"{{{{app.port}}}}\"\n"),
    );
    refused(&repo, "recipe[cb]")
        .stderr_contains("cookbooks/cb/recipes/default.toml:5")
        .stderr_contains("file[/etc/y], property content")
        .stderr_contains("\"app.port\" is not defined");
}

#[test]
fn missing_attribute_in_a_template_names_the_template() {
    let repo = Repo::new()
        .template("cb", "t.hbs", "line one\nport={{app.port}}\n")
        .recipe(
            "cb",
            "default",
            &format!("{GOOD}[[resource]]\ntemplate = \"/etc/t\"\nsource = \"t.hbs\"\n"),
        );
    refused(&repo, "recipe[cb]")
        .stderr_contains("template[/etc/t]")
        .stderr_contains("templates/t.hbs")
        .stderr_contains("\"app.port\" is not defined");
}

#[test]
fn missing_template_file_is_named() {
    let repo = Repo::new().recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\ntemplate = \"/etc/t\"\nsource = \"nope.hbs\"\n"),
    );
    refused(&repo, "recipe[cb]")
        .stderr_contains("source \"nope.hbs\" not found")
        .stderr_contains("fix: add");
}

#[test]
fn notification_to_a_missing_resource() {
    let repo = Repo::new().recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\nfile = \"/etc/y\"\ncontent = \"\"\nnotifies = [\"restart service[apache2]\"]\n"),
    );
    refused(&repo, "recipe[cb]")
        .stderr_contains("default.toml:5")
        .stderr_contains("notifies service[apache2], which is not in the run list");
}

#[test]
fn run_list_cycle_is_printed() {
    let repo = Repo::new()
        .role("a", "run_list = [\"recipe[cb]\", \"role[b]\"]")
        .role("b", "run_list = [\"role[a]\"]")
        .recipe("cb", "default", GOOD);
    refused(&repo, "role[a]").stderr_contains("run-list cycle: role[a] -> role[b] -> role[a]");
}

#[test]
fn source_that_escapes_the_cookbook() {
    let repo = Repo::new().file("secret.txt", "s").recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\nfile = \"/etc/y\"\nsource = \"../../../secret.txt\"\n"),
    );
    refused(&repo, "recipe[cb]").stderr_contains("escapes the cookbook's files/ folder");
}

#[test]
fn check_reports_every_problem_at_once() {
    let repo = Repo::new()
        .role("web", "run_list = [\"recipe[cb]\", \"recipe[missing]\"]")
        .role("loop", "run_list = [\"role[loop]\"]")
        .recipe(
            "cb",
            "default",
            "[[resource]]\nfile = \"/etc/y\"\ncontent = \"{{nope}}\"\n\n[[resource]]\nfiel = \"/x\"\n",
        )
        .recipe("other", "default", "[[resource]\n");
    kiln()
        .arg("check")
        .repo(&repo)
        .run()
        .code(1)
        .stderr_contains("\"nope\" is not defined")
        .stderr_contains("unknown resource type \"fiel\"")
        .stderr_contains("cookbook \"missing\" not found")
        .stderr_contains("run-list cycle: role[loop] -> role[loop]")
        .stderr_contains("cookbooks/other/recipes/default.toml:1");
}

#[test]
fn check_passes_a_good_repository() {
    let repo = Repo::new()
        .role("web", "run_list = [\"recipe[cb]\"]")
        .recipe("cb", "default", GOOD);
    kiln()
        .arg("check")
        .repo(&repo)
        .run()
        .success()
        .stdout_contains("ok");
}
