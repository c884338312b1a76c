//! A secret goes into content only: a `{{secret}}` anywhere else (a name,
//! a label, a link target, a repository URI, a user comment, an action, a
//! notification, a mode, an owner, a node attribute) is refused by
//! `kiln check` and by converge, naming file, resource and field; and the
//! value of a secret used where it may go never shows in output, reports
//! or command lines. Each test plants one route, runs the real binary
//! against a Debian root, and looks for the cleartext everywhere.

use std::path::{Path, PathBuf};

use crate::support::*;

const NAME: &str = "app/pw";
/// The cleartext; nothing kiln prints or keeps may hold it.
const VALUE: &str = "Zq8leakySecret4711";

/// A target whose host key can decrypt `app/pw`, a policy with role `app`
/// running `recipe[app]`, and a sentinel directory outside both.
struct Planted {
    repo: Repo,
    root: TestRoot,
    sentinel: tempfile::TempDir,
    sentinel_hash: String,
}

/// Plants `recipe` (and `extra` repository files) with the secret set to
/// `value` for the target's host key.
fn plant_with(recipe: &str, value: &str, extra: &[(&str, &str)]) -> Planted {
    let root = TestRoot::new();
    let key = at(&root, "/etc/ssh/ssh_host_ed25519_key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut repo = Repo::new()
        .role("app", "run_list = [\"recipe[app]\"]\n")
        .recipe("app", "default", recipe)
        .file(
            "secrets/recipients.toml",
            format!(
                "[people]\nhost = \"{}\"\n\n[secrets.\"{NAME}\"]\nroles = [\"app\"]\n",
                public.trim()
            ),
        );
    for (path, text) in extra {
        repo = repo.file(path, text);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value");
    std::fs::write(&file, value).unwrap();
    kiln()
        .args(["secret", "set", NAME, "--file"])
        .arg(&file)
        .repo(&repo)
        .run()
        .success();
    let sentinel = tempfile::tempdir().unwrap();
    std::fs::write(sentinel.path().join("keep"), "outside the target\n").unwrap();
    let sentinel_hash = tree_hash(sentinel.path());
    Planted {
        repo,
        root,
        sentinel,
        sentinel_hash,
    }
}

fn plant(recipe: &str) -> Planted {
    plant_with(recipe, VALUE, &[])
}

impl Planted {
    /// Rewrites a file of the policy.
    fn write(&self, path: &str, text: &str) {
        let full = self.repo.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    fn check(&self) -> Outcome {
        kiln().arg("check").repo(&self.repo).run()
    }

    fn converge(&self, args: &[&str]) -> Outcome {
        kiln()
            .arg("converge")
            .args(["--role", "app", "--fqdn", "app01.example.com"])
            .args(args)
            .repo(&self.repo)
            .root(&self.root)
            .run()
    }

    /// Neither the outcomes nor anything kiln keeps on the target holds
    /// the secret (or any line of it), and the sentinel is as it was.
    #[track_caller]
    fn assert_no_leak(&self, outcomes: &[&Outcome], value: &str) {
        let needles: Vec<&str> = std::iter::once(value)
            .chain(value.lines().filter(|l| l.trim().len() >= 6))
            .collect();
        for o in outcomes {
            for n in &needles {
                assert!(
                    !o.stdout.contains(n) && !o.stderr.contains(n),
                    "the secret shows in the output of {}:\n{}\n{}",
                    o.command,
                    o.stdout,
                    o.stderr
                );
            }
        }
        let kept = at(&self.root, "/var/lib/kiln");
        for n in &needles {
            assert_eq!(
                files_containing(&kept, n),
                Vec::<PathBuf>::new(),
                "the secret is in kiln's reports"
            );
        }
        assert_eq!(tree_hash(self.sentinel.path()), self.sentinel_hash);
    }
}

/// Every file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .map(|e| e.into_path())
        .collect()
}

/// Command lines of every process now running that contain `needle`.
fn cmdlines_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

/// A converge that must be refused before it changes anything: the target
/// is unchanged and the refusal names the recipe, the resource and `field`.
#[track_caller]
fn refused(p: &Planted, resource: &str, field: &str) {
    let before = tree_hash(&p.root);
    let check = p
        .check()
        .failure()
        .stderr_contains("recipes/default.toml")
        .stderr_contains(resource)
        .stderr_contains(field)
        .stderr_contains("secret");
    let why = p.converge(&["--why-run", "--json"]).failure();
    let real = p.converge(&["--json"]).failure();
    let plain = p.converge(&[]).failure().stderr_contains(field);
    assert_eq!(tree_hash(&p.root), before, "the target changed");
    p.assert_no_leak(&[&check, &why, &real, &plain], VALUE);
}

#[test]
fn a_secret_in_a_resource_name_is_refused() {
    need!(DebianRoot);
    let p = plant(
        r#"[[resource]]
file = '/etc/app-{{secret "app/pw"}}'
content = "x\n"
"#,
    );
    refused(&p, "file[/etc/app-{{secret", "name");
}

#[test]
fn a_secret_in_an_execute_label_is_refused() {
    need!(DebianRoot);
    let p = plant(
        r#"[[resource]]
execute = 'set the password to {{secret "app/pw"}}'
command = "true"
"#,
    );
    refused(&p, "execute[set the password to", "name");
}

#[test]
fn a_secret_in_a_link_target_is_refused() {
    need!(DebianRoot);
    let p = plant(
        r#"[[resource]]
link = "/etc/app-link"
to = '/etc/{{secret "app/pw"}}'
"#,
    );
    refused(&p, "link[/etc/app-link]", "property to");
}

#[test]
fn a_secret_in_an_apt_repository_uri_is_refused_and_names_stay_as_they_are() {
    need!(DebianRoot);
    let p = plant(
        r#"[[resource]]
apt_repository = "r"
uri = 'http://127.0.0.1:9/{{secret "app/pw"}}/debian'
suite = "stable"
components = ["main"]
"#,
    );
    refused(&p, "apt_repository[r]", "property uri");
}

#[test]
fn a_secret_in_a_user_comment_is_refused_and_never_in_argv() {
    need!(DebianRoot);
    let p = plant(
        r#"[[resource]]
user = "leaky"
comment = 'Leaky {{secret "app/pw"}}'
"#,
    );
    // Watch every command line while a real converge runs.
    let root = p.root.path().to_path_buf();
    let repo = p.repo.path().to_path_buf();
    let running = std::thread::spawn(move || {
        kiln()
            .args(["converge", "--role", "app", "--fqdn", "app01.example.com"])
            .arg("--repo")
            .arg(&repo)
            .arg("--root")
            .arg(&root)
            .run()
    });
    let mut in_argv = Vec::new();
    while !running.is_finished() {
        in_argv.extend(cmdlines_with(VALUE));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let watched = running.join().unwrap();
    assert!(in_argv.is_empty(), "secret in argv: {in_argv:?}");
    assert!(passwd_entry(&p.root, "leaky").is_none());
    p.assert_no_leak(&[&watched], VALUE);
    refused(&p, "user[leaky]", "property comment");
}

#[test]
fn a_secret_in_action_notifies_mode_or_owner_is_refused_without_quoting_it() {
    need!(DebianRoot);
    for (field, line) in [
        ("action", r#"action = '{{secret "app/pw"}}'"#),
        ("notifies", r#"notifies = ['{{secret "app/pw"}}']"#),
        ("mode", r#"mode = '{{secret "app/pw"}}'"#),
        ("owner", r#"owner = '{{secret "app/pw"}}'"#),
    ] {
        let p = plant(&format!(
            "[[resource]]\nfile = \"/etc/app.conf\"\ncontent = \"x\\n\"\n{line}\n"
        ));
        refused(&p, "file[/etc/app.conf]", &format!("property {field}"));
    }
}

#[test]
fn no_diff_is_shown_for_a_path_a_sensitive_resource_managed_in_the_last_run() {
    need!(DebianRoot);
    let p = plant(
        r#"[[resource]]
file = "/etc/app.conf"
content = '''
password = {{secret "app/pw"}}
'''
mode = "0600"
"#,
    );
    let first = p.converge(&[]).success();
    assert_eq!(
        read(&p.root, "/etc/app.conf"),
        format!("password = {VALUE}\n")
    );
    // The content stops using the secret: the diff would show the old one.
    p.write(
        "cookbooks/app/recipes/default.toml",
        "[[resource]]\nfile = \"/etc/app.conf\"\ncontent = \"password = none\\n\"\nmode = \"0600\"\n",
    );
    let stops = p.converge(&["--why-run"]).success();
    let stops_json = p.converge(&["--why-run", "--json"]).success();
    // Another resource (a template) manages the path now.
    p.write(
        "cookbooks/app/recipes/default.toml",
        "[[resource]]\ntemplate = \"/etc/app.conf\"\nsource = \"app.conf.hbs\"\nmode = \"0600\"\n",
    );
    p.write(
        "cookbooks/app/templates/app.conf.hbs",
        "password = {{node.fqdn}}\n",
    );
    let other = p.converge(&["--why-run"]).success();
    assert!(
        stops.stdout.contains("diff suppressed") && other.stdout.contains("diff suppressed"),
        "{}\n{}",
        stops.stdout,
        other.stdout
    );
    p.assert_no_leak(&[&first, &stops, &stops_json, &other], VALUE);
    // The real run that ends the secret's use keeps the path hidden once more.
    let real = p.converge(&[]).success();
    let after = p.converge(&["--why-run"]).success();
    p.assert_no_leak(&[&real, &after], VALUE);
    // That run wrote the path without a secret: later diffs show again.
    p.write(
        "cookbooks/app/templates/app.conf.hbs",
        "password = changed\n",
    );
    p.converge(&["--why-run"])
        .success()
        .stdout_contains("+password = changed");
}

#[test]
fn node_and_inventory_attributes_cannot_use_secrets() {
    need!(DebianRoot);
    let p = plant_with(
        r#"[[resource]]
template = "/etc/motd"
source = "motd.hbs"
"#,
        VALUE,
        &[
            ("cookbooks/app/templates/motd.hbs", "{{app.motd}}\n"),
            ("cookbooks/app/attributes.toml", "[app]\nmotd = \"hello\"\n"),
            (
                "node.toml",
                "[attributes.app]\nmotd = \"{{secret \\\"app/pw\\\"}}\"\n",
            ),
            (
                "hosts.toml",
                "known_hosts = \"known_hosts\"\n[hosts.\"app01.example.com\"]\naddress = \"127.0.0.9\"\nroles = [\"app\"]\nattributes = { app = { motd = \"{{secret \\\"app/pw\\\"}}\" } }\n",
            ),
            ("known_hosts", ""),
        ],
    );
    let node = p.repo.path().join("node.toml");
    let before = tree_hash(&p.root);
    let with_node = p
        .converge(&["--node", node.to_str().unwrap()])
        .failure()
        .stderr_contains("node.toml")
        .stderr_contains("secret");
    assert_eq!(tree_hash(&p.root), before, "the target changed");
    assert!(!at(&p.root, "/etc/motd").exists() || !read(&p.root, "/etc/motd").contains(VALUE));
    let inv = p.repo.path().join("hosts.toml");
    let check = kiln()
        .args(["check", "--inventory", inv.to_str().unwrap()])
        .repo(&p.repo)
        .run()
        .failure()
        .stderr_contains("hosts.toml")
        .stderr_contains("app01.example.com")
        .stderr_contains("secret");
    p.assert_no_leak(&[&with_node, &check], VALUE);
}

#[test]
fn a_rendered_file_holding_a_secret_is_0600_unless_the_policy_sets_a_mode() {
    need!(DebianRoot);
    let p = plant_with(
        r#"[[resource]]
template = "/etc/app.conf"
source = "app.conf.hbs"

[[resource]]
file = "/etc/app.existing"
content = '''
{{secret "app/pw"}}
'''
"#,
        VALUE,
        &[(
            "cookbooks/app/templates/app.conf.hbs",
            "password = {{secret \"app/pw\"}}\n",
        )],
    );
    // A file that is there already, readable by all.
    std::fs::write(at(&p.root, "/etc/app.existing"), "old\n").unwrap();
    std::fs::set_permissions(
        at(&p.root, "/etc/app.existing"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let check = p.check().success();
    let run = p.converge(&[]).success();
    assert_eq!(mode(&p.root, "/etc/app.conf") & 0o7777, 0o600);
    assert_eq!(mode(&p.root, "/etc/app.existing") & 0o7777, 0o600);
    assert_eq!(
        read(&p.root, "/etc/app.conf"),
        format!("password = {VALUE}\n")
    );
    p.assert_no_leak(&[&check, &run], VALUE);

    // A mode the policy sets wins; wider than 0640 is a warning.
    p.write(
        "cookbooks/app/recipes/default.toml",
        "[[resource]]\ntemplate = \"/etc/app.conf\"\nsource = \"app.conf.hbs\"\nmode = \"0644\"\n",
    );
    p.check()
        .success()
        .stderr_contains("warning")
        .stderr_contains("recipes/default.toml")
        .stderr_contains("template[/etc/app.conf]")
        .stderr_contains("0644");
}

#[test]
fn a_secret_is_redacted_by_value_wherever_it_turns_up() {
    need!(DebianRoot);
    // A multi-line secret that a plain (not sensitive) command prints in
    // its failure: the value and each of its lines are taken out.
    let value = "first-line-Zq8leaky\nsecond-line-Zq8leaky\n";
    let p = plant_with(
        r#"[[resource]]
file = "/etc/app.pw"
content = '{{secret "app/pw"}}'

[[resource]]
execute = "show it"
command = "cat /etc/app.pw; tail -n 1 /etc/app.pw >&2; exit 3"
"#,
        value,
        &[],
    );
    let run = p.converge(&[]).failure();
    let json = p.converge(&["--json"]).failure();
    assert!(
        run.stdout.contains("execute[show it]"),
        "the name is shown as it is: {}\n{}",
        run.stdout,
        run.stderr
    );
    p.assert_no_leak(&[&run, &json], value);
}
