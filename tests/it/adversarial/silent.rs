//! What parsed and was accepted without a word now gets a clear error with
//! the file (and the line where there is one), from `kiln check` and from
//! the commands that act, before anything changes.

use crate::support::*;

const GOOD: &str = "[[resource]]\nfile = \"/etc/kiln-good\"\ncontent = \"x\\n\"\n";

/// A repository whose role `node` runs `recipe[cb]`.
fn node() -> Repo {
    Repo::new()
        .role("node", "run_list = [\"recipe[cb]\"]")
        .recipe("cb", "default", GOOD)
}

/// `kiln check` refuses with every needle in its errors, and a converge of
/// role `node` into a root refuses too and leaves it as it was.
#[track_caller]
fn refused(repo: &Repo, needles: &[&str]) {
    let check = kiln().arg("check").repo(repo).run().code(1);
    let root = TestRoot::new();
    let before = tree_hash(&root);
    let run = kiln()
        .arg("converge")
        .repo(repo)
        .root(&root)
        .args(["--role", "node"])
        .run()
        .failure();
    assert_eq!(
        tree_hash(&root),
        before,
        "a refused converge changed the target"
    );
    for n in needles {
        assert!(
            check.stderr.contains(n),
            "{n:?} not in check:\n{}",
            check.stderr
        );
    }
    assert!(
        run.stderr.contains(needles[0]),
        "{:?} not in converge:\n{}",
        needles[0],
        run.stderr
    );
}

#[test]
fn an_empty_role_is_refused_and_one_of_attributes_only_is_not() {
    need!(DebianRoot);
    let repo = node().role("empty", "description = \"nothing yet\"\n");
    refused(
        &repo.role("node", "run_list = [\"role[empty]\", \"recipe[cb]\"]"),
        &["roles/empty.toml: role \"empty\" is empty: no run list and no attributes"],
    );
    let repo = node()
        .role("attrs", "[default_attributes.cb]\nport = 8080\n")
        .role("node", "run_list = [\"role[attrs]\", \"recipe[cb]\"]");
    kiln().arg("check").repo(&repo).run().success();
}

#[test]
fn facts_cannot_be_overridden_by_policy() {
    need!(DebianRoot);
    refused(
        &node().role(
            "node",
            "run_list = [\"recipe[cb]\"]\n\n[override_attributes.node]\nfqdn = \"db01.example.com\"\n",
        ),
        &["roles/node.toml:3: node.fqdn is a fact kiln gathers on the target"],
    );
    refused(
        &node().attributes(
            "cb",
            "[cb]\nport = 1\n\n[releases.trixie.node]\ncodename = \"sid\"\n",
        ),
        &["cookbooks/cb/attributes.toml:4: node.codename is a fact"],
    );
    let dir = tempfile::tempdir().unwrap();
    let node_file = dir.path().join("db01.toml");
    std::fs::write(
        &node_file,
        "run_list = [\"recipe[cb]\"]\n[attributes.node]\nfqdn = \"x\"\n",
    )
    .unwrap();
    let root = TestRoot::new();
    let before = tree_hash(&root);
    kiln()
        .arg("converge")
        .repo(&node())
        .root(&root)
        .arg("--node")
        .arg(&node_file)
        .run()
        .code(1)
        .stderr_contains("db01.toml:2: node.fqdn is a fact");
    assert_eq!(tree_hash(&root), before);
}

/// `depends` makes a cookbook's attributes available to another; two
/// cookbooks may need each other's (apache2 and php do), as in Chef, so a
/// cycle is a documented choice, not an error. Versions must order.
#[test]
fn cookbook_dependency_cycles_are_allowed_and_versions_must_order() {
    need!(DebianRoot);
    let repo = Repo::new()
        .role("node", "run_list = [\"recipe[cb]\"]")
        .metadata(
            "cb",
            "name = \"cb\"\nversion = \"1.0.0\"\ndepends = [\"dd\"]\n",
        )
        .metadata(
            "dd",
            "name = \"dd\"\nversion = \"1.0.0\"\ndepends = [\"cb\"]\n",
        )
        .attributes("dd", "[dd]\ngreeting = \"from dd\"\n")
        .recipe(
            "cb",
            "default",
            "[[resource]]\nfile = \"/etc/kiln-good\"\ncontent = \"{{dd.greeting}}\"\n",
        )
        .recipe("dd", "default", GOOD);
    kiln().arg("check").repo(&repo).run().success();
    let root = TestRoot::new();
    kiln()
        .arg("converge")
        .repo(&repo)
        .root(&root)
        .args(["--role", "node"])
        .run()
        .success();
    assert_eq!(read(&root, "/etc/kiln-good"), "from dd");
    let repo = node().metadata(
        "cb",
        "name = \"cb\"\ndescription = \"x\"\nversion = \"banana\"\n",
    );
    refused(
        &repo,
        &["cookbooks/cb/metadata.toml:3: version \"banana\" is not MAJOR.MINOR.PATCH"],
    );
}

#[test]
fn release_overlays_name_known_releases() {
    need!(DebianRoot);
    let repo = node().attributes("cb", "[cb]\nport = 1\n\n[releases.trixy.cb]\nport = 2\n");
    refused(
        &repo,
        &[
            "cookbooks/cb/attributes.toml:4: [releases.trixy]: \"trixy\" is not a Debian release kiln knows",
        ],
    );
}

#[test]
fn names_that_read_as_options_are_refused() {
    let repo = node()
        .recipe("-rf", "default", GOOD)
        .role("node", "run_list = [\"recipe[cb]\"]");
    kiln()
        .arg("check")
        .repo(&repo)
        .run()
        .code(1)
        .stderr_contains("\"-rf\" is not a cookbook name");
    let repo = node().role("-x", "run_list = [\"recipe[cb]\"]");
    kiln()
        .arg("check")
        .repo(&repo)
        .run()
        .code(1)
        .stderr_contains("roles/-x.toml: \"-x\" is not a role name");
}

#[test]
fn paths_are_written_one_way() {
    need!(DebianRoot);
    for (path, plain) in [
        ("/etc/x/", "/etc/x"),
        ("/etc//x", "/etc/x"),
        ("/etc/./x", "/etc/x"),
    ] {
        let repo = node().recipe(
            "cb",
            "default",
            &format!("{GOOD}\n[[resource]]\nfile = \"{path}\"\ncontent = \"\"\n"),
        );
        refused(
            &repo,
            &[
                &format!(
                    "cookbooks/cb/recipes/default.toml:5: file[{path}]: path {path:?} has a trailing '/'"
                ),
                &format!("fix: write it as \"{plain}\""),
            ],
        );
    }
}

#[test]
fn a_missing_whitelist_is_refused() {
    need!(DebianRoot);
    let repo = node();
    std::fs::remove_file(repo.path().join("whitelist.toml")).unwrap();
    refused(&repo, &["whitelist.toml: the file is missing", "touch"]);
}

#[test]
fn fallback_mirrors_are_http_and_one_word_each() {
    need!(DebianRoot);
    for (mirror, needle) in [
        (
            "uri = \"file:/tmp/debs\"\ntrusted = true",
            "mirror uri \"file:/tmp/debs\" is not an http(s) URL",
        ),
        (
            "uri = \"http://127.0.0.1:9/\\nTrusted: yes\"\ntrusted = true",
            "holds a space or a control character",
        ),
        (
            "uri = \"http://127.0.0.1:9/\"\ntrusted = true\ncomponents = [\"main\\nTrusted: yes\"]",
            "is not a suite or component name",
        ),
        (
            "uri = \"http://127.0.0.1:9/\"\ntrusted = true\nsuite = \"a b\"",
            "mirror suite \"a b\"",
        ),
    ] {
        let repo = node().whitelist(&format!(
            "[packages]\n\n[fallback]\n[[fallback.mirrors]]\n{mirror}\n"
        ));
        refused(&repo, &["whitelist.toml:3:", needle]);
    }
}

#[test]
fn secret_files_and_recipients_are_checked_without_an_inventory() {
    let repo = node()
        .file(
            "secrets/recipients.toml",
            "[secrets.\"db/pw\"]\nroles = [\"db\"]\nhosts = [\"db01.example.com\"]\n",
        )
        .file(
            "secrets/db/pw.age",
            "# recipients: sha256:00\n-----BEGIN AGE ENCRYPTED FILE-----\nbm90IGFnZQ==\n-----END AGE ENCRYPTED FILE-----\n",
        )
        .file("secrets/raw.age", "# recipients: sha256:00\nage-encryption.org/v1\n");
    let out = kiln().arg("check").repo(&repo).run().code(1);
    out.stderr_contains(
        "secrets/recipients.toml:2: secret \"db/pw\" names role \"db\", which is not in roles/",
    )
    .stderr_contains("secrets/db/pw.age: not a readable age file")
    .stderr_contains("secrets/raw.age: not an ASCII-armored age file");
    kiln()
        .args(["secret", "list"])
        .repo(&repo)
        .run()
        .stdout_contains("unreadable: not a readable age file");
}

/// An inventory checked by `kiln check --inventory` as `kiln fleet` checks
/// it, and values ssh or a shell would read as more than one word refused.
#[test]
fn inventories_that_fleet_would_refuse_or_ssh_would_misread() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("known_hosts"), "").unwrap();
    let repo = node();
    let inventory = |body: &str| {
        let inv = dir.path().join("inventory.toml");
        std::fs::write(&inv, format!("known_hosts = \"known_hosts\"\n{body}")).unwrap();
        kiln()
            .arg("check")
            .repo(&repo)
            .arg("--inventory")
            .arg(&inv)
            .run()
    };
    inventory("[hosts.\"a.example.com\"]\naddress = \"127.0.0.1\"\nroles = [\"node\"]\n").success();
    inventory("[hosts.\"a.example.com\"]\naddress = \"127.0.0.1\"\nroles = [\"nope\"]\n")
        .code(1)
        .stderr_contains("inventory.toml:2: host a.example.com: role \"nope\" is not in");
    for (body, needle) in [
        (
            "attributes = { node = { fqdn = \"x\" } }",
            "attributes set node.*",
        ),
        (
            "user = \"root@10.9.9.9\"",
            "user \"root@10.9.9.9\" is not a login name",
        ),
        (
            "address = \"10.0.0.1;touch /tmp/x\"",
            "is not a host name or IP address",
        ),
        ("address = \"$(id)\"", "is not a host name or IP address"),
    ] {
        inventory(&format!(
            "[hosts.\"a.example.com\"]\nroles = [\"node\"]\n{body}\n"
        ))
        .code(1)
        .stderr_contains(needle);
    }
    for (option, needle) in [
        ("Ciphers=+3des-cbc", "3des-cbc is a legacy algorithm"),
        (
            "HostKeyAlgorithms=+ssh-rsa",
            "ssh-rsa is a legacy algorithm",
        ),
        (
            "KexAlgorithms=+diffie-hellman-group1-sha1",
            "diffie-hellman-group1-sha1 is a legacy algorithm",
        ),
        ("ProxyJump=bastion;id", "is not a plain value"),
        ("ProxyJump=$(id)", "is not a plain value"),
        ("BindAddress=\\\"127.0.0.1\\\"", "is not a plain value"),
    ] {
        inventory(&format!(
            "ssh_options = [\"{option}\"]\n[hosts.\"a.example.com\"]\naddress = \"127.0.0.1\"\nroles = [\"node\"]\n"
        ))
        .code(1)
        .stderr_contains(needle);
    }
    inventory(
        "ssh_options = [\"KexAlgorithms=curve25519-sha256\", \"ProxyJump=ops@bastion:2222\"]\n[hosts.\"a.example.com\"]\naddress = \"127.0.0.1\"\nroles = [\"node\"]\n",
    )
    .success();
}

/// Whoever can write above the ssh control directory could swap it for
/// their own: refused before any connection.
#[test]
fn an_ssh_control_directory_under_a_directory_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("known_hosts"), "").unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let inv = dir.path().join("inventory.toml");
    std::fs::write(
        &inv,
        "known_hosts = \"known_hosts\"\n[hosts.\"a.example.com\"]\naddress = \"127.0.0.1\"\nport = 9\nroles = [\"node\"]\n",
    )
    .unwrap();
    kiln()
        .args(["fleet", "status", "--inventory"])
        .arg(&inv)
        .repo(&node())
        .env("KILN_SSH_CONTROL_DIR", open.join("ssh"))
        .run()
        .failure()
        .stderr_contains("others may write to");
    assert!(!open.join("ssh").exists(), "the control directory was made");
}
