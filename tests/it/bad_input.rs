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
    need!(DebianRoot);
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
    need!(DebianRoot);
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
    need!(DebianRoot);
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
    need!(DebianRoot);
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
    need!(DebianRoot);
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
    need!(DebianRoot);
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
    need!(DebianRoot);
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
    need!(DebianRoot);
    let repo = Repo::new()
        .role("a", "run_list = [\"recipe[cb]\", \"role[b]\"]")
        .role("b", "run_list = [\"role[a]\"]")
        .recipe("cb", "default", GOOD);
    refused(&repo, "role[a]").stderr_contains("run-list cycle: role[a] -> role[b] -> role[a]");
}

#[test]
fn source_that_escapes_the_cookbook() {
    need!(DebianRoot);
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

/// `kiln check`, `kiln converge --why-run` and `kiln converge` all refuse
/// the repository with every needle in the message; the target is untouched.
#[track_caller]
fn refused_everywhere(repo: &Repo, needles: &[&str]) {
    let check = kiln().arg("check").repo(repo).run().code(1);
    let root = TestRoot::new();
    let before = tree_hash(&root);
    let why = kiln()
        .args(["converge", "--why-run"])
        .repo(repo)
        .root(&root)
        .args(["--run-list", "role[node]"])
        .run()
        .code(1);
    assert_eq!(tree_hash(&root), before, "--why-run changed the target");
    let run = refused(repo, "role[node]");
    for n in needles {
        for out in [&check, &why, &run] {
            assert!(
                out.stderr.contains(n),
                "{n:?} not in {}:\n{}",
                out.command,
                out.stderr
            );
        }
    }
}

/// A repository whose role `node` runs `recipe[cb]` = GOOD + `extra`.
fn node(extra: &str) -> Repo {
    Repo::new()
        .role("node", "run_list = [\"recipe[cb]\"]")
        .recipe("cb", "default", &format!("{GOOD}{extra}"))
}

#[test]
fn deep_role_chains_are_refused_once() {
    need!(DebianRoot);
    let mut repo = Repo::new().recipe("cb", "default", GOOD);
    for i in 0..10_000 {
        repo = repo.role(
            &format!("r{i}"),
            &format!("run_list = [\"role[r{}]\"]", i + 1),
        );
    }
    repo = repo.role("r10000", "run_list = [\"recipe[cb]\"]");
    let out = kiln()
        .arg("check")
        .repo(&repo)
        .run()
        .code(1)
        .stderr_contains("roles/r63.toml: roles nest more than 64 deep: role[r0] -> ...")
        .stderr_contains("fix: flatten the chain")
        .stderr_contains("kiln check: 1 problem(s)");
    // One error for the chain, not one per level.
    assert_eq!(
        out.stderr.matches("nest more than").count(),
        1,
        "{}",
        out.stderr
    );
    refused(&repo, "role[r0]").stderr_contains("roles nest more than 64 deep");
}

#[test]
fn recursive_partial_is_refused() {
    need!(DebianRoot);
    let repo = node("[[resource]]\ntemplate = \"/etc/t\"\nsource = \"t.hbs\"\n").template(
        "cb",
        "t.hbs",
        "{{#*inline \"p\"}}{{> p}}{{/inline}}\n{{> p}}\n",
    );
    refused_everywhere(
        &repo,
        &["templates/t.hbs line 1", "partial \"p\" calls itself"],
    );
}

#[test]
fn integer_and_signed_modes_are_refused() {
    need!(DebianRoot);
    let repo = node("[[resource]]\nfile = \"/etc/m\"\ncontent = \"\"\nmode = 0o644\n");
    refused_everywhere(
        &repo,
        &["default.toml:5", "TOML integer 420", "mode = \"0644\""],
    );
    let repo = node("[[resource]]\nfile = \"/etc/m\"\ncontent = \"\"\nmode = \"+0644\"\n");
    refused_everywhere(
        &repo,
        &["default.toml:5", "\"+0644\" is not an octal file mode"],
    );
}

#[test]
fn converge_validates_the_whitelist_as_check_does() {
    need!(DebianRoot);
    for (wl, needle) in [
        (
            "[packages]\ncurl = \"not a version!\"\n",
            "is not a valid Debian version",
        ),
        (
            "[packages]\ncurl = \"1.0-1\"\n[rollouts.x]\nhosts = [\"web[\"]\npackages = { curl = \"2.0-1\" }\n",
            "rollout \"x\": host pattern \"web[\"",
        ),
        (
            "[packages]\ncurl = \"1.0-1\"\n[rollouts.x]\nroles = [\"canary\"]\npackages = { curl = \"2.0-1\" }\n",
            "role \"canary\" does not exist",
        ),
        (
            "[packages]\ncurl = \"1.0-1\"\n[rollouts.x]\nroles = [\"node\"]\npackages = { curll = \"2.0-1\" }\n",
            "package \"curll\" is not in [packages]",
        ),
    ] {
        refused_everywhere(&node("").whitelist(wl), &["whitelist.toml:", needle]);
    }
}

#[test]
fn self_notification_and_conflicting_duplicates() {
    need!(DebianRoot);
    let repo = node(
        "[[resource]]\nfile = \"/etc/y\"\ncontent = \"\"\nnotifies = [\"create file[/etc/y]\"]\n",
    );
    refused_everywhere(&repo, &["default.toml:5", "file[/etc/y] notifies itself"]);
    let repo = node("[[resource]]\nfile = \"/etc/kiln-good\"\ncontent = \"y\\n\"\n");
    refused_everywhere(
        &repo,
        &[
            "default.toml:5",
            "file[/etc/kiln-good] is declared twice with different properties (first at",
            "default.toml:1)",
        ],
    );
    // An identical duplicate is allowed (it converges once, then is a no-op).
    kiln().arg("check").repo(&node(GOOD)).run().success();
}

#[test]
fn verify_status_out_of_range() {
    need!(DebianRoot);
    let repo = node("[[verify]]\nhttp = \"http://127.0.0.1/\"\nstatus = 65736\n");
    refused_everywhere(&repo, &["65736 is not an HTTP status", "100 to 599"]);
}

#[test]
fn cookbook_names_cannot_leave_cookbooks() {
    need!(DebianRoot);
    let repo = Repo::new()
        .role("node", "run_list = [\"recipe[..]\"]")
        .recipe("cb", "default", GOOD)
        .file("metadata.toml", "name = \"..\"\nversion = \"1\"\n");
    refused_everywhere(&repo, &["\"recipe[..]\" is not role[NAME]"]);
    let repo = node("")
        .metadata(
            "cb",
            "name = \"cb\"\nversion = \"1.0.0\"\ndepends = [\"..\"]\n",
        )
        .file("metadata.toml", "name = \"..\"\nversion = \"1\"\n");
    refused_everywhere(&repo, &["cookbook \"cb\" depends on \"..\""]);
}

#[test]
fn cookbook_files_linking_out_are_refused() {
    need!(DebianRoot);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s3cr3t\n").unwrap();
    for (folder, res) in [
        (
            "templates",
            "[[resource]]\ntemplate = \"/etc/t\"\nsource = \"t.hbs\"\n",
        ),
        (
            "files",
            "[[resource]]\nfile = \"/etc/t\"\nsource = \"t.hbs\"\n",
        ),
    ] {
        let repo = node(res);
        let dir = repo.path().join("cookbooks/cb").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.join("t.hbs")).unwrap();
        refused_everywhere(
            &repo,
            &[
                &format!("cookbooks/cb/{folder}/t.hbs is a symbolic link to"),
                "outside the cookbook",
            ],
        );
    }
}

#[test]
fn empty_names_and_nul_bytes() {
    need!(DebianRoot);
    let repo = node("[[resource]]\nexecute = \"\"\ncommand = \"true\"\n");
    refused_everywhere(&repo, &["default.toml:5", "execute[]: the name is empty"]);
    let repo = node("[[resource]]\nfile = \"/etc/a\\u0000b\"\ncontent = \"\"\n");
    refused_everywhere(&repo, &["default.toml:5", "contains a NUL byte"]);
    let repo = node("[[resource]]\nexecute = \"x\"\ncommand = \"echo \\u0000\"\n");
    refused_everywhere(
        &repo,
        &["default.toml:5", "property command: contains a NUL byte"],
    );
}

#[test]
fn bundles_refuse_symbolic_links() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s3cr3t\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    // A link out of the repository, and one inside it: a bundle carries
    // plain files, never what a link points to.
    for (link, to) in [
        ("cookbooks/cb/files/passwd", outside.path().join("secret")),
        ("roles/alias.toml", "node.toml".into()),
    ] {
        let repo = node("");
        std::fs::create_dir_all(repo.path().join(link).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&to, repo.path().join(link)).unwrap();
        let message = format!("{link}: is a symbolic link (to {})", to.display());
        kiln()
            .arg("check")
            .repo(&repo)
            .run()
            .failure()
            .stderr_contains(&message);
        let dest = out.path().join(link.replace('/', "_"));
        kiln()
            .repo(&repo)
            .args(["fleet", "bundle", "--allow-unsigned", "--out"])
            .arg(&dest)
            .run()
            .failure()
            .stderr_contains(&format!("{link}: is a symbolic link (to {})", to.display()))
            .stderr_contains("fix: replace the link with a copy of what it points to");
        assert!(!dest.join("bundle.tar").exists());
    }
}

/// A newline in a value kiln writes into a line-oriented file (a deb822
/// source, passwd, a unit) would add a line of the value's choosing: every
/// single-line property refuses control characters, whatever resource
/// type and however the value arrives (here through an attribute).
#[test]
fn control_characters_in_single_line_properties_are_refused() {
    need!(DebianRoot);
    for (resource, property) in [
        (
            "apt_repository = \"x\"\nuri = \"{{evil.value}}\"\nsuite = \"./\"\ntrusted = false",
            "uri",
        ),
        ("user = \"app\"\ncomment = \"{{evil.value}}\"", "comment"),
        ("link = \"/etc/l\"\nto = \"{{evil.value}}\"", "to"),
        (
            "directory = \"/srv/x\"\nowner = \"{{evil.value}}\"",
            "owner",
        ),
    ] {
        let repo = Repo::new()
            .recipe(
                "cb",
                "default",
                &format!("{GOOD}[[resource]]\n{resource}\n"),
            )
            .attributes("cb", "[evil]\nvalue = \"http://x/\\nTrusted: yes\"\n");
        refused(&repo, "recipe[cb]")
            .stderr_contains(&format!(
                "property {property}: contains a control character"
            ))
            .stderr_contains("fix: give it on one line");
    }
    let repo = Repo::new().recipe(
        "cb",
        "default",
        &format!("{GOOD}[[resource]]\nexecute = \"two\\nlines\"\ncommand = \"true\"\n"),
    );
    refused(&repo, "recipe[cb]").stderr_contains("the name contains a control character");
}

/// What was accepted without a word: an empty action list, a whitelist
/// name that is no Debian package (an apt option, here), and a rollout
/// release that is no codename.
#[test]
fn empty_actions_foreign_package_names_and_unknown_releases_are_refused() {
    need!(DebianRoot);
    let repo = node("[[resource]]\nfile = \"/etc/x\"\ncontent = \"x\"\naction = []\n");
    refused_everywhere(
        &repo,
        &[
            "default.toml:5",
            "file[/etc/x]: action = [] names no action",
        ],
    );
    let repo = node("").whitelist("[packages]\n\"-oDpkg::Pre-Invoke::=x\" = \"1.0-1\"\n");
    refused_everywhere(
        &repo,
        &[
            "whitelist.toml:2",
            "\"-oDpkg::Pre-Invoke::=x\" is not a Debian package name",
        ],
    );
    let repo = node("")
        .whitelist("[packages]\n\n[rollouts.r]\nreleases = [\"bookwrom\"]\npackages = {}\n");
    refused_everywhere(
        &repo,
        &["rollout \"r\": \"bookwrom\" is not a Debian release codename"],
    );
}
