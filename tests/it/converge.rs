//! `kiln converge` against real Debian roots: the core resource types, a
//! second run that changes nothing, why-run, and the run report.

use crate::support::*;

/// A role touching every core resource type.
fn fixture() -> Repo {
    Repo::new()
        .role(
            "fixture",
            r#"
description = "every core resource type"
run_list = ["role[base]", "recipe[app]"]
[default_attributes.app]
greeting = "from the role"
"#,
        )
        .role("base", r#"run_list = ["recipe[accounts]"]"#)
        .recipe(
            "accounts",
            "default",
            r#"
[[resource]]
group = "webops"
gid = 2500

[[resource]]
user = "deploy"
uid = 2501
group = "webops"
groups = ["adm"]
home = "/home/deploy"
shell = "/bin/bash"
manage_home = true
"#,
        )
        .attributes(
            "app",
            r#"
[app]
dir = "/srv/app"
greeting = "from the cookbook"
port = 8080
"#,
        )
        .template("app", "config.ini.hbs", "greeting={{app.greeting}}\nport={{app.port}}\nhost={{node.fqdn}}\n")
        .cookbook_file("app", "static.txt", "static content\n")
        .cookbook_file(
            "app",
            "kiln-demo.init",
            "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: kiln-demo\n# Required-Start:\n# Required-Stop:\n# Default-Start: 2 3 4 5\n# Default-Stop: 0 1 6\n# Short-Description: demo\n### END INIT INFO\nexit 0\n",
        )
        .recipe(
            "app",
            "default",
            r#"
[[resource]]
directory = "{{app.dir}}"
owner = "deploy"
group = "webops"
mode = "0750"

[[resource]]
template = "{{app.dir}}/config.ini"
source = "config.ini.hbs"
owner = "deploy"
mode = "0640"
notifies = ["run execute[record-restart]"]

[[resource]]
directory = "/etc/kiln-test/deep/er"
recursive = true

[[resource]]
file = "/etc/kiln-test/static.txt"
source = "static.txt"

[[resource]]
file = "/etc/kiln-test/inline.txt"
content = "inline\n"
mode = "0600"

[[resource]]
link = "/srv/current"
to = "{{app.dir}}"

[[resource]]
execute = "make-marker"
command = "echo made > /etc/kiln-test/marker"
creates = "/etc/kiln-test/marker"

[[resource]]
execute = "record-restart"
command = "echo restarted >> /etc/kiln-test/restarts"
action = "nothing"

[[resource]]
file = "/etc/init.d/kiln-demo"
source = "kiln-demo.init"
mode = "0755"

[[resource]]
service = "kiln-demo"
action = ["enable", "start"]
"#,
        )
}

fn json(out: &Outcome) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.stdout))
}

#[test]
fn converges_a_debian_root_and_then_changes_nothing() {
    need!(DebianRoot);
    let repo = fixture();
    let root = TestRoot::new();
    let first = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args([
            "--role",
            "fixture",
            "--fqdn",
            "web01.example.com",
            "--detailed-exitcodes",
        ])
        .run()
        .code(2)
        .stdout_contains("updated      template[/srv/app/config.ini]")
        .stdout_contains("start skipped");

    // Accounts, from the root's own passwd and group.
    let deploy = passwd_entry(&root, "deploy").expect("user deploy");
    assert_eq!(deploy[2], "2501");
    assert_eq!(deploy[3], "2500");
    assert_eq!(deploy[5], "/home/deploy");
    assert_eq!(deploy[6], "/bin/bash");
    assert!(
        at(&root, "/home/deploy").is_dir(),
        "manage_home creates the home"
    );
    assert_eq!(group_entry(&root, "webops").expect("group")[2], "2500");
    assert!(
        group_entry(&root, "adm").unwrap()[3]
            .split(',')
            .any(|m| m == "deploy")
    );

    // Files, modes, owners, links.
    assert_eq!(
        read(&root, "/srv/app/config.ini"),
        "greeting=from the role\nport=8080\nhost=web01.example.com\n"
    );
    assert_eq!(mode(&root, "/srv/app/config.ini"), 0o640);
    assert_eq!(owner(&root, "/srv/app/config.ini").0, 2501);
    assert_eq!(mode(&root, "/srv/app"), 0o750);
    assert_eq!(owner(&root, "/srv/app"), (2501, 2500));
    assert_eq!(read(&root, "/etc/kiln-test/static.txt"), "static content\n");
    assert_eq!(mode(&root, "/etc/kiln-test/inline.txt"), 0o600);
    assert!(at(&root, "/etc/kiln-test/deep/er").is_dir());
    assert_eq!(
        std::fs::read_link(at(&root, "/srv/current")).unwrap(),
        std::path::Path::new("/srv/app")
    );
    // execute ran inside the root, and the template's notification fired once.
    assert_eq!(read(&root, "/etc/kiln-test/marker"), "made\n");
    assert_eq!(read(&root, "/etc/kiln-test/restarts"), "restarted\n");
    // The SysV service is enabled in the root, not started.
    let rc2: Vec<String> = std::fs::read_dir(at(&root, "/etc/rc2.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        rc2.iter()
            .any(|n| n.starts_with('S') && n.ends_with("kiln-demo")),
        "{rc2:?}"
    );
    assert!(first.stdout.contains("resources updated, 0 failed"));

    // The second run changes nothing, and says so.
    let second = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args([
            "--role",
            "fixture",
            "--fqdn",
            "web01.example.com",
            "--detailed-exitcodes",
            "--json",
        ])
        .run()
        .code(0);
    let report = json(&second);
    assert_eq!(report["updated"], 0, "{}", second.stdout);
    assert_eq!(report["failed"], 0);
    assert_eq!(read(&root, "/etc/kiln-test/restarts"), "restarted\n");

    // Every run is kept on the target.
    let last: serde_json::Value =
        serde_json::from_str(&read(&root, "/var/lib/kiln/last_run.json")).unwrap();
    assert_eq!(last["updated"], 0);
    assert_eq!(last["fqdn"], "web01.example.com");
    assert_eq!(
        std::fs::read_dir(at(&root, "/var/lib/kiln/runs"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn why_run_shows_exactly_what_the_real_run_then_does() {
    need!(DebianRoot);
    let repo = fixture();
    let root = TestRoot::new();
    let args = ["--role", "fixture", "--fqdn", "web01.example.com"];
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(args)
        .run()
        .success();

    // Drift: content, mode, a removed link, a retargeted owner.
    std::fs::write(
        at(&root, "/srv/app/config.ini"),
        "greeting=edited by hand\n",
    )
    .unwrap();
    std::fs::set_permissions(
        at(&root, "/etc/kiln-test/inline.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(at(&root, "/srv/current")).unwrap();

    let before = tree_hash(&root);
    let plan = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(args)
        .args(["--why-run", "--json"])
        .run()
        .success();
    assert_eq!(tree_hash(&root), before, "why-run changed the root");
    let plan = json(&plan);
    let human = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(args)
        .arg("--why-run")
        .run()
        .success()
        .stdout_contains("-greeting=edited by hand")
        .stdout_contains("+greeting=from the role");
    assert!(human.stdout.contains("would update"));
    assert_eq!(tree_hash(&root), before, "why-run changed the root");

    let real = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(args)
        .arg("--json")
        .run()
        .success();
    let real = json(&real);
    let changed = |r: &serde_json::Value, status: &str| -> Vec<(String, Vec<String>)> {
        r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["status"] == status)
            .map(|x| {
                let changes = x["changes"]
                    .as_array()
                    .map(|c| c.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                (x["resource"].as_str().unwrap().to_string(), changes)
            })
            .collect()
    };
    let planned = changed(&plan, "would_update");
    let done = changed(&real, "updated");
    assert_eq!(planned, done);
    let names: Vec<&str> = done.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"template[/srv/app/config.ini]"),
        "{names:?}"
    );
    assert!(names.contains(&"file[/etc/kiln-test/inline.txt]"));
    assert!(names.contains(&"link[/srv/current]"));
    assert!(
        names.contains(&"execute[record-restart]"),
        "the notification is planned too"
    );
}

#[test]
fn sensitive_content_is_never_printed() {
    need!(DebianRoot);
    let repo = Repo::new()
        .attributes("secret", "[db]\npassword = \"hunter2-s3cret\"\n")
        .recipe(
            "secret",
            "default",
            r#"
[[resource]]
file = "/etc/db.secret"
content = "password={{db.password}}\n"
mode = "0600"
sensitive = true
"#,
        );
    let root = TestRoot::new();
    for extra in [
        vec!["--why-run"],
        vec!["--why-run", "--json"],
        vec![],
        vec!["--json"],
    ] {
        let out = kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--run-list", "recipe[secret]"])
            .args(&extra)
            .run()
            .success();
        assert!(
            !out.stdout.contains("hunter2"),
            "{extra:?} printed the secret:\n{}",
            out.stdout
        );
        assert!(!out.stderr.contains("hunter2"));
    }
    assert_eq!(read(&root, "/etc/db.secret"), "password=hunter2-s3cret\n");
    assert!(!read(&root, "/var/lib/kiln/last_run.json").contains("hunter2"));
}

/// Every place a report of a run against `root` lands that mentions `secret`.
fn leaks(root: &TestRoot, secret: &str, outputs: &[Outcome]) -> Vec<String> {
    let mut found: Vec<String> = outputs
        .iter()
        .filter(|o| o.stdout.contains(secret) || o.stderr.contains(secret))
        .map(|o| format!("output of {}:\n{}\n{}", o.command, o.stdout, o.stderr))
        .collect();
    let mut todo = vec![at(root, "/var/lib/kiln")];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(secret)) {
            found.push(p.display().to_string());
        }
    }
    found
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

#[test]
fn sensitive_names_guards_commands_and_output_are_never_shown() {
    need!(DebianRoot);
    const SECRET: &str = "S3cr3tPW";
    let repo = Repo::new().recipe(
        "pw",
        "default",
        r#"
[[resource]]
execute = "set pw S3cr3tPW"
only_if = "test S3cr3tPW = S3cr3tPW"
not_if = "test -e /etc/pw-set-S3cr3tPW"
command = '''
sleep 3.25 # S3cr3tPW
echo S3cr3tPW; echo S3cr3tPW >&2
: > /etc/pw-set-S3cr3tPW
'''
sensitive = true
notifies_immediately = ["run execute[after the password]"]

[[resource]]
execute = "after the password"
command = "touch /etc/notified"
action = "nothing"
"#,
    );
    let root = TestRoot::new();
    let why = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--run-list", "recipe[pw]", "--why-run", "--json"])
        .run()
        .success();
    assert!(
        why.stdout.contains("execute[sensitive #1]"),
        "{}",
        why.stdout
    );

    // While the command runs, no process shows the secret in its argv (the
    // command itself keeps it out of its programs' argv: builtins and a
    // redirection, as a policy must; a `touch` of that path would show it).
    let run =
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .args(["--run-list", "recipe[pw]", "--json"]);
    let running = std::thread::spawn(move || run.run());
    let (mut saw_sleep, mut in_argv) = (false, Vec::new());
    while !running.is_finished() {
        saw_sleep |= !cmdlines_with("sleep 3.25").is_empty();
        in_argv.extend(cmdlines_with(SECRET));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let json = running.join().unwrap().success();
    assert!(saw_sleep, "the command was never seen running");
    assert!(in_argv.is_empty(), "secret in argv: {in_argv:?}");
    assert!(
        json.stdout.contains("execute[sensitive #1]"),
        "{}",
        json.stdout
    );
    assert!(
        json.stdout.contains("(notified by execute[sensitive #1])"),
        "{}",
        json.stdout
    );
    // The notification still found its resource through the real id.
    assert!(at(&root, "/etc/notified").exists());
    assert!(at(&root, "/etc/pw-set-S3cr3tPW").exists());
    let again = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--run-list", "recipe[pw]"])
        .run()
        .success();

    // A failing sensitive execute names neither its command nor its output.
    let failing = Repo::new().recipe(
        "pw",
        "default",
        r#"
[[resource]]
execute = "set pw S3cr3tPW again"
not_if = "false S3cr3tPW"
command = "echo S3cr3tPW; echo S3cr3tPW >&2; exit 3"
sensitive = true
"#,
    );
    let mut outputs = vec![why, json, again];
    for extra in [&[][..], &["--json"][..]] {
        let out = kiln()
            .arg("converge")
            .repo(&failing)
            .root(&root)
            .args(["--run-list", "recipe[pw]"])
            .args(extra)
            .run()
            .failure();
        let both = format!("{}{}", out.stdout, out.stderr);
        assert!(both.contains("execute[sensitive #1]"), "{both}");
        outputs.push(out);
    }
    assert!(at(&root, "/var/lib/kiln/last_run.json").exists());
    let found = leaks(&root, SECRET, &outputs);
    assert!(found.is_empty(), "the secret leaked: {found:#?}");
}

#[test]
fn a_failed_resource_stops_the_run_and_ignore_failure_does_not() {
    need!(DebianRoot);
    let repo = Repo::new().recipe(
        "f",
        "default",
        r#"
[[resource]]
execute = "tolerated"
command = "exit 3"
ignore_failure = true

[[resource]]
file = "/etc/before"
content = "x\n"

[[resource]]
execute = "broken"
command = "echo to-stderr >&2; exit 7"

[[resource]]
file = "/etc/after"
content = "y\n"
"#,
    );
    let root = TestRoot::new();
    let out = kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--run-list", "recipe[f]", "--detailed-exitcodes"])
        .run()
        .code(6)
        .stdout_contains("failed (ignored) execute[tolerated]")
        .stdout_contains("FAILED")
        .stdout_contains("to-stderr");
    assert!(out.stdout.contains("execute[broken]"));
    assert!(
        at(&root, "/etc/before").exists(),
        "what came before is done"
    );
    assert!(
        !at(&root, "/etc/after").exists(),
        "nothing after the failure runs"
    );
}

#[test]
fn guards_and_attribute_precedence() {
    need!(DebianRoot);
    let repo = Repo::new()
        .role(
            "r",
            r#"
run_list = ["recipe[p]"]
[default_attributes.p]
a = "role-default"
b = "role-default"
c = "role-default"
[override_attributes.p]
c = "role-override"
"#,
        )
        .attributes(
            "p",
            "[p]\na = \"cookbook\"\nb = \"cookbook\"\nc = \"cookbook\"\nd = \"cookbook\"\n",
        )
        .file(
            "node.toml",
            "fqdn = \"n1.example.com\"\n[attributes.p]\nb = \"node\"\nc = \"node\"\n",
        )
        .recipe(
            "p",
            "default",
            r#"
[[resource]]
file = "/etc/p.txt"
content = "{{p.a}} {{p.b}} {{p.c}} {{p.d}} {{node.hostname}}\n"

[[resource]]
file = "/etc/only-if-false"
content = "no\n"
only_if = "test -e /nonexistent"

[[resource]]
file = "/etc/not-if-true"
content = "no\n"
not_if = "test -e /etc/p.txt"
"#,
        );
    let root = TestRoot::new();
    let node = repo.path().join("node.toml");
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--role", "r", "--node"])
        .arg(&node)
        .run()
        .success();
    assert_eq!(
        read(&root, "/etc/p.txt"),
        "role-default node role-override cookbook n1\n"
    );
    assert!(!at(&root, "/etc/only-if-false").exists());
    assert!(!at(&root, "/etc/not-if-true").exists());
}

/// The mariadb cookbook's password goes to the server only as a
/// `mariadb_user`'s password (a bound parameter over the socket): no
/// command or guard of any recipe carries it, so no argv can show it.
#[test]
fn the_mariadb_password_is_only_a_mariadb_user_property() {
    let cookbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/cookbooks");
    let mut seen = Vec::new();
    for entry in walkdir::WalkDir::new(cookbooks) {
        let path = entry.unwrap().into_path();
        if !path.to_string_lossy().contains("/recipes/") {
            continue;
        }
        let recipe: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let resources = recipe.get("resource").and_then(|r| r.as_array());
        for r in resources.into_iter().flatten() {
            for (key, value) in r.as_table().unwrap() {
                if value.to_string().contains("mariadb.app.password") {
                    seen.push((path.clone(), key.clone(), r.get("mariadb_user").is_some()));
                }
            }
        }
    }
    assert!(
        !seen.is_empty(),
        "the mariadb cookbook sets the account's password"
    );
    for (path, key, is_user) in &seen {
        assert!(
            *is_user && key == "password",
            "{}: the password in {key}",
            path.display()
        );
    }
}

/// A new file with sensitive content (declared, or a secret used in it)
/// is 0600 unless the policy names a mode; other new files are 0644.
#[test]
fn sensitive_files_are_created_private_unless_a_mode_is_given() {
    need!(DebianRoot);
    let root = TestRoot::new();
    let repo = Repo::new()
        .recipe(
            "cb",
            "default",
            "[[resource]]\nfile = \"/etc/kiln-private\"\ncontent = \"token\\n\"\nsensitive = true\n\n\
             [[resource]]\nfile = \"/etc/kiln-shared\"\ncontent = \"hello\\n\"\n\n\
             [[resource]]\nfile = \"/etc/kiln-chosen\"\ncontent = \"token\\n\"\nsensitive = true\nmode = \"0640\"\n",
        )
        .role("node", "run_list = [\"recipe[cb]\"]");
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--role", "node"])
        .run()
        .success();
    assert_eq!(mode(&root, "/etc/kiln-private"), 0o600);
    assert_eq!(mode(&root, "/etc/kiln-shared"), 0o644);
    assert_eq!(mode(&root, "/etc/kiln-chosen"), 0o640);
}
