//! Values that reach a host cannot change a file's structure: attribute
//! types declared in a cookbook's attributes.toml are enforced on the
//! final value wherever it came from (cookbook, role, node file,
//! inventory), values written into line-oriented files are escaped, and
//! kiln's own resources refuse what would add a line or a field.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

/// A directory outside every target, where the planted commands would
/// write: nothing may touch it.
fn sentinel() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("kiln-sentinel-")
        .tempdir()
        .unwrap();
    fs::write(dir.path().join("keep"), "untouched\n").unwrap();
    dir
}

/// Converges `recipe[cb]` of `repo` into a fresh root, which must refuse
/// and leave the root as it was.
fn refused_in_root(repo: &Repo) -> Outcome {
    let root = TestRoot::new();
    let tree = tree_hash(&root);
    let out = kiln()
        .arg("converge")
        .repo(repo)
        .root(&root)
        .args(["--run-list", "recipe[cb]"])
        .run()
        .code(1);
    assert_eq!(tree_hash(&root), tree, "a refused run changed the target");
    out
}

/// An inventory of one host with `roles` and `attributes` (inline TOML),
/// beside an empty known_hosts (no host here uses a secret).
fn inventory(dir: &Path, roles: &str, attributes: &str) -> PathBuf {
    fs::write(dir.join("known_hosts"), "").unwrap();
    let path = dir.join("inventory.toml");
    fs::write(
        &path,
        format!(
            "known_hosts = \"known_hosts\"\n\n[hosts.\"web01.example.com\"]\naddress = \"127.0.0.9\"\nroles = {roles}\nattributes = {attributes}\n"
        ),
    )
    .unwrap();
    path
}

fn check_inventory(repo: &Repo, inv: &Path) -> Outcome {
    kiln()
        .repo(repo)
        .arg("check")
        .arg("--inventory")
        .arg(inv)
        .run()
}

/// The review's first attack: a newline in the agent's interval, given by
/// an inventory, wrote an `ExecStartPre=` line into kiln-agent.service.
#[test]
fn check_refuses_a_unit_line_in_the_agent_interval_from_an_inventory() {
    let repo = Repo::own_policy();
    let sentinel = sentinel();
    let before = tree_hash(sentinel.path());
    let dir = tempfile::tempdir().unwrap();
    let evil = format!(
        "{{ kiln = {{ interval = \"30m\\nExecStartPre=/bin/sh -c 'touch {}/pwned'\" }} }}",
        sentinel.path().display()
    );
    let inv = inventory(dir.path(), "[\"base\"]", &evil);
    check_inventory(&repo, &inv)
        .code(1)
        .stderr_contains("inventory.toml:6")
        .stderr_contains("kiln.interval")
        .stderr_contains("a duration")
        .stderr_contains("fix:");
    assert_eq!(tree_hash(sentinel.path()), before);
}

/// The second: spaces in the agent's source added arguments to its
/// command line (`--allowed-signers` of the attacker's choosing).
#[test]
fn check_refuses_extra_agent_arguments_in_the_source_from_an_inventory() {
    let repo = Repo::own_policy();
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(
        dir.path(),
        "[\"base\"]",
        "{ kiln = { source = \"https://example.com/b.tar --allowed-signers /tmp/mine\" } }",
    );
    check_inventory(&repo, &inv)
        .code(1)
        .stderr_contains("inventory.toml:6")
        .stderr_contains("kiln.source")
        .stderr_contains("fix:");
    // Nor does a bundle for agents carry it: refused before it is written.
    let out = dir.path().join("out");
    kiln()
        .repo(&repo)
        .args(["fleet", "bundle", "--allow-unsigned", "--out"])
        .arg(&out)
        .arg("--inventory")
        .arg(&inv)
        .run()
        .code(1)
        .stderr_contains("inventory.toml:6")
        .stderr_contains("kiln.source");
    assert!(!out.exists(), "a refused bundle was written");
    // And a push refuses it before any connection.
    kiln()
        .repo(&repo)
        .args(["fleet", "converge", "--allow-unsigned", "--inventory"])
        .arg(&inv)
        .run()
        .code(1)
        .stderr_contains("inventory.toml:6")
        .stderr_contains("kiln.source")
        .stdout_lacks("127.0.0.9");
    // What the cookbook declares is accepted: a URL, or an absolute path.
    for good in ["https://example.com/b.tar", "/srv/kiln/bundle.tar"] {
        let inv = inventory(
            dir.path(),
            "[\"base\"]",
            &format!("{{ kiln = {{ source = \"{good}\" }} }}"),
        );
        check_inventory(&repo, &inv).success();
    }
}

/// The third: a newline in an apt_repository's uri wrote `Trusted: yes`
/// into the deb822 file, and a space adds a URI or a component of the
/// value's choosing. Refused before anything is written.
#[test]
fn apt_repository_fields_that_would_add_a_line_or_a_field_are_refused() {
    need!(DebianRoot);
    let sentinel = sentinel();
    let before = tree_hash(sentinel.path());
    for (uri, components, what) in [
        ("http://x/\\nTrusted: yes", "[\"main\"]", "property uri"),
        ("http://x/ http://evil.example/", "[\"main\"]", "uri"),
        ("http://x/", "[\"main contrib\"]", "components"),
    ] {
        let repo = Repo::new()
            .recipe(
                "cb",
                "default",
                &format!(
                    "[[resource]]\nfile = \"/etc/kiln-good\"\ncontent = \"x\\n\"\n\n[[resource]]\napt_repository = \"x\"\nuri = \"{{{{evil.uri}}}}\"\nsuite = \"stable\"\ncomponents = {components}\n"
                ),
            )
            .attributes("cb", &format!("[evil]\nuri = \"{uri}\"\n"));
        refused_in_root(&repo)
            .stderr_contains("cookbooks/cb/recipes/default.toml:5")
            .stderr_contains("apt_repository[x]")
            .stderr_contains(what);
    }
    assert_eq!(tree_hash(sentinel.path()), before);
}

/// The first attack through a node file on a `--root` converge: the unit
/// an earlier run wrote stays as it was.
#[test]
fn a_hostile_node_file_cannot_write_a_line_into_the_agent_unit() {
    need!(DebianRoot);
    let repo = Repo::own_policy();
    let sentinel = sentinel();
    let before = tree_hash(sentinel.path());
    let root = TestRoot::new();
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.toml");
    let converge = || {
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .arg("--node")
            .arg(&node)
            .run()
    };
    // base's state directory, without base's packages.
    fs::create_dir_all(at(&root, "/var/lib/kiln")).unwrap();
    fs::write(&node, "run_list = [\"recipe[kiln]\"]\n").unwrap();
    converge().success();
    let unit = "/etc/systemd/system/kiln-agent.service";
    let good = read(&root, unit);
    assert!(good.contains("--interval 30m"), "{good}");
    let tree = tree_hash(&root);

    let evil = format!(
        "run_list = [\"recipe[kiln]\"]\n\n[attributes.kiln]\ninterval = \"30m\\nExecStartPre=/bin/sh -c 'touch {}/pwned'\"\n",
        sentinel.path().display()
    );
    fs::write(&node, evil).unwrap();
    converge()
        .code(1)
        .stderr_contains("node.toml:4")
        .stderr_contains("kiln.interval")
        .stderr_contains("fix:");
    assert_eq!(read(&root, unit), good);
    assert_eq!(tree_hash(&root), tree, "a refused run changed the target");
    assert_eq!(tree_hash(sentinel.path()), before);
}

/// `kiln.report_to` puts `--report-to` in the agent's unit; a value that
/// is no URL (an extra argument, a line) is refused and the unit stays.
#[test]
fn the_agent_unit_reports_where_kiln_report_to_says_and_nowhere_else() {
    need!(DebianRoot);
    let repo = Repo::own_policy();
    let root = TestRoot::new();
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.toml");
    let converge = |report_to: &str| {
        fs::write(
            &node,
            format!(
                "run_list = [\"recipe[kiln]\"]\n\n[attributes.kiln]\nreport_to = {report_to:?}\n"
            ),
        )
        .unwrap();
        kiln()
            .arg("converge")
            .repo(&repo)
            .root(&root)
            .arg("--node")
            .arg(&node)
            .run()
    };
    fs::create_dir_all(at(&root, "/var/lib/kiln")).unwrap();
    let unit = "/etc/systemd/system/kiln-agent.service";
    converge("").success();
    assert!(!read(&root, unit).contains("--report-to"));
    converge("https://kiln.example.com:8741").success();
    let good = read(&root, unit);
    assert!(
        good.contains(" --report-to https://kiln.example.com:8741\n"),
        "{good}"
    );
    for bad in [
        "https://kiln.example.com --source /tmp/evil",
        "https://kiln.example.com\nExecStartPre=/bin/true",
        "kiln.example.com",
    ] {
        converge(bad)
            .code(1)
            .stderr_contains("kiln.report_to")
            .stderr_contains("fix:");
        assert_eq!(read(&root, unit), good, "{bad:?} changed the unit");
    }
}

/// A cookbook `t` that declares a type for each of its attributes and
/// writes them all into a `key = value` file.
fn typed(extra_attributes: &str) -> Repo {
    Repo::new()
        .attributes(
            "t",
            &format!(
                r#"[t]
name = "web"
port = 80
every = "30m"
url = "https://example.com/b.tar"
dir = "/srv/t"
mode = "yes"
note = "one\ntwo"
{extra_attributes}
[types.t]
name = {{ pattern = '[a-z]+' }}
port = {{ integer = [1, 65535] }}
every = "duration"
url = "url"
dir = "path"
mode = {{ one_of = ["yes", "no"] }}
note = "text"
"#
            ),
        )
        .template(
            "t",
            "t.conf.hbs",
            "name = {{line t.name}}\nport = {{line t.port}}\nevery = {{line t.every}}\nurl = {{line t.url}}\ndir = {{line t.dir}}\nmode = {{line t.mode}}\n# {{line t.note}}\n",
        )
        .recipe(
            "t",
            "default",
            "[[resource]]\ntemplate = \"/etc/t.conf\"\nsource = \"t.conf.hbs\"\n",
        )
        .role("r", "run_list = [\"recipe[t]\"]\n")
}

fn check(repo: &Repo) -> Outcome {
    kiln().repo(repo).arg("check").run()
}

/// Role `r` renders cookbook `t`'s one template into `/etc/t`.
fn one_template(attributes: &str, template: &str) -> Repo {
    Repo::new()
        .attributes("t", attributes)
        .template("t", "t.hbs", template)
        .recipe(
            "t",
            "default",
            "[[resource]]\ntemplate = \"/etc/t\"\nsource = \"t.hbs\"\n",
        )
        .role("r", "run_list = [\"recipe[t]\"]\n")
}

#[test]
fn each_type_accepts_a_good_value_and_refuses_a_bad_one_naming_file_and_attribute() {
    check(&typed("")).success();
    // Good values of each type, from a role.
    let good = typed("").role(
        "r",
        "run_list = [\"recipe[t]\"]\n\n[default_attributes.t]\nname = \"db\"\nport = 65535\nevery = \"1h 30m\"\nurl = \"http://10.0.0.1:8080/x\"\ndir = \"/var/lib/t\"\nmode = \"no\"\n",
    );
    check(&good).success();

    // Each bad value, from a role's default_attributes: file, line,
    // attribute, the value's problem and the fix.
    for (key, value, problem) in [
        ("name", "\"Web01\"", "does not match"),
        ("port", "70000", "not between 1 and 65535"),
        ("port", "\"eighty\"", "not an integer"),
        ("every", "\"30 fortnights\"", "not a duration"),
        (
            "url",
            "\"ftp://example.com/b.tar\"",
            "not an http:// or https:// URL",
        ),
        (
            "url",
            "\"https://example.com/a b\"",
            "not an http:// or https:// URL",
        ),
        ("dir", "\"srv/t\"", "not an absolute path"),
        ("dir", "\"/srv/t --x\"", "not an absolute path"),
        ("mode", "\"maybe\"", "not one of \"yes\", \"no\""),
    ] {
        let repo = typed("").role(
            "r",
            &format!("run_list = [\"recipe[t]\"]\n\n[default_attributes.t]\n{key} = {value}\n"),
        );
        check(&repo)
            .code(1)
            .stderr_contains("roles/r.toml:4")
            .stderr_contains(&format!("attribute t.{key}"))
            .stderr_contains(problem)
            .stderr_contains("cookbooks/t/attributes.toml")
            .stderr_contains("fix:");
    }

    // Wherever the value comes from: the cookbook's own default, a role's
    // override, and an inventory host.
    check(&typed("").attributes(
        "t",
        "[t]\nname = \"web\"\nport = 0\nevery = \"30m\"\nurl = \"https://x/\"\ndir = \"/srv\"\nmode = \"yes\"\nnote = \"\"\n\n[types.t]\nport = { integer = [1, 65535] }\n",
    ))
    .code(1)
    .stderr_contains("cookbooks/t/attributes.toml:3")
    .stderr_contains("attribute t.port");
    check(&typed("").role(
        "r",
        "run_list = [\"recipe[t]\"]\n\n[override_attributes.t]\nmode = \"on\"\n",
    ))
    .code(1)
    .stderr_contains("roles/r.toml:4")
    .stderr_contains("attribute t.mode");
    // A release's defaults and a dev VM size's attributes.
    let both = "[packages]\n\n[releases.bookworm.packages]\n\n[releases.trixie.packages]\n";
    check(&typed("\n[releases.trixie.t]\nmode = \"maybe\"\n").whitelist(both))
        .code(1)
        .stderr_contains("cookbooks/t/attributes.toml:11")
        .stderr_contains("release trixie: role r: attribute t.mode");
    check(&typed("").role(
        "r",
        "run_list = [\"recipe[t]\"]\n\n[sizes.small]\ncpus = 1\nmemory_mb = 512\ndisk_gb = 4\n[sizes.small.attributes.t]\nport = -1\n",
    ))
    .code(1)
    .stderr_contains("roles/r.toml:8")
    .stderr_contains("attribute t.port");
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), "[\"r\"]", "{ t = { every = \"soon\" } }");
    check_inventory(&typed(""), &inv)
        .code(1)
        .stderr_contains("inventory.toml:6")
        .stderr_contains("host web01.example.com")
        .stderr_contains("attribute t.every");
}

/// An escaping helper refuses a control character in an attribute whose
/// type does not allow one, and says which attribute and template.
#[test]
fn escaping_helpers_refuse_control_characters_unless_the_type_allows_them() {
    let repo = one_template(
        "[t]\nfree = \"a\\nb\"\ntext = \"a\\nb\"\n\n[types.t]\ntext = \"text\"\n",
        "[Service]\nExecStart=/bin/true {{systemd_arg t.free}}\n",
    );
    check(&repo)
        .code(1)
        .stderr_contains("cookbooks/t/templates/t.hbs line 2")
        .stderr_contains("attribute t.free")
        .stderr_contains("control character")
        .stderr_contains("cookbooks/t/attributes.toml:2")
        .stderr_contains("fix:");
    for helper in ["line", "ini", "deb822", "systemd_value"] {
        let repo = one_template(
            "[t]\nfree = \"a\\rb\"\n",
            &format!("x = {{{{{helper} t.free}}}}\n"),
        );
        check(&repo)
            .code(1)
            .stderr_contains("attribute t.free")
            .stderr_contains("control character");
    }
    // A type that allows lines lets them through.
    let repo = one_template(
        "[t]\ntext = \"a\\nb\"\n\n[types.t]\ntext = \"text\"\n",
        "x = {{line t.text}}\n",
    );
    check(&repo).success();
}

/// kiln's own resources refuse what would add a field where they write
/// line-oriented files: a ':' in a passwd field.
#[test]
fn user_fields_that_would_add_a_passwd_field_are_refused() {
    need!(DebianRoot);
    for (prop, value) in [
        ("comment", "x:0:0::/root:/bin/sh"),
        ("home", "/home/x:/bin/sh"),
        ("shell", "/bin/sh:x"),
    ] {
        let repo = Repo::new().recipe(
            "cb",
            "default",
            &format!("[[resource]]\nuser = \"app\"\n{prop} = \"{value}\"\n"),
        );
        refused_in_root(&repo)
            .stderr_contains("cookbooks/cb/recipes/default.toml:1")
            .stderr_contains("user[app]")
            .stderr_contains(prop);
    }
}

/// A template that writes a value without an escaping helper still gets
/// no line from a node's attributes: an inventory's or a node file's value
/// with a control character is refused, typed or not, unless its type is
/// text.
#[test]
fn node_attributes_carry_no_line_of_their_own_into_a_plain_template() {
    let repo = one_template(
        "[t]\nx = \"a\"\nnote = \"a\"\n\n[types.t]\nnote = \"text\"\n",
        "x = {{t.x}}\n# {{t.note}}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), "[\"r\"]", "{ t = { x = \"a\\nx = evil\" } }");
    check_inventory(&repo, &inv)
        .code(1)
        .stderr_contains("inventory.toml:6")
        .stderr_contains("attribute t.x")
        .stderr_contains("control character")
        .stderr_contains("fix:");
    let inv = inventory(dir.path(), "[\"r\"]", "{ t = { note = \"two\\nlines\" } }");
    check_inventory(&repo, &inv).success();
}
