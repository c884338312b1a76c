//! Secrets: encrypted in the repository for the hosts whose roles need
//! them (their ssh host keys), decrypted only on those hosts, in clear only
//! in the files the policy writes; a host added after the secret was
//! written is refused before any connection until `kiln secret rekey`.

use std::path::{Path, PathBuf};

use crate::support::fleet::{Fleet, spec};
use crate::support::*;

const NAME: &str = "db/password";

/// A role `db` whose password attribute is a secret, written by a template
/// (through the attribute) and a file (through the helper directly).
fn policy() -> Repo {
    Repo::new()
        .role(
            "db",
            r#"run_list = ["recipe[db]"]
[default_attributes.db]
password = "{{secret \"db/password\"}}"
"#,
        )
        .recipe(
            "db",
            "default",
            r#"[[resource]]
template = "/etc/db.conf"
source = "db.conf.hbs"
mode = "0640"

[[resource]]
file = "/etc/db-password"
content = "{{secret \"db/password\"}}"
mode = "0600"

[[resource]]
file = "/etc/db-motd"
content = "{{db.greeting}}\n"
"#,
        )
        .attributes("db", "[db]\ngreeting = \"not a secret\"\n")
        .template(
            "db",
            "db.conf.hbs",
            "# managed\npassword = {{db.password}}\n",
        )
}

/// An ops person's key pair (ssh-ed25519, no passphrase).
fn person(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("ops_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
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

fn secret(repo: &Repo, args: &[&str]) -> Kiln {
    kiln().arg("secret").args(args).repo(repo)
}

#[test]
fn db_hosts_read_their_secret_a_new_host_is_refused_until_rekey() {
    need!(Sshd);
    let mut f = Fleet::new(
        vec![
            spec("db01.example.com", &["db"]),
            spec("db02.example.com", &["db"]),
            spec("db03.example.com", &["db"]),
        ],
        |_: &Path| {},
    );
    f.start();
    let inventory = f.inventory();
    // Node attributes from the inventory (not secrets) reach the host.
    let full = std::fs::read_to_string(&inventory).unwrap().replace(
        "[hosts.\"db01.example.com\"]\n",
        "[hosts.\"db01.example.com\"]\nattributes = { db = { greeting = \"hello db01\" } }\n",
    );
    let (two, _) = full.split_once("\n[hosts.\"db03.example.com\"]").unwrap();
    std::fs::write(&inventory, two).unwrap();

    let keys = tempfile::tempdir().unwrap();
    let (ops_key, ops_pub) = person(keys.path());
    let repo = policy().file(
        "secrets/recipients.toml",
        format!("[people]\nops = \"{ops_pub}\"\n\n[secrets.\"{NAME}\"]\nroles = [\"db\"]\n"),
    );
    let cleartext = "s3cretKilnPw4711";
    let value = keys.path().join("value");
    std::fs::write(&value, format!("{cleartext}\n")).unwrap();
    let inv = inventory.to_str().unwrap();
    secret(
        &repo,
        &[
            "set",
            NAME,
            "--file",
            value.to_str().unwrap(),
            "--inventory",
            inv,
        ],
    )
    .run()
    .success()
    .stdout_contains("3 recipient(s): person ops, host db01.example.com, host db02.example.com");
    std::fs::remove_file(&value).unwrap();
    let file = repo.path().join("secrets/db/password.age");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        stored.contains("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{stored}"
    );
    assert!(!stored.contains(cleartext));
    secret(
        &repo,
        &["show", NAME, "--identity", ops_key.to_str().unwrap()],
    )
    .run()
    .success()
    .stdout_contains(cleartext);
    secret(&repo, &["list", "--inventory", inv])
        .run()
        .success()
        .stdout_contains("[ok]")
        .stdout_contains("used by roles: db");

    kiln()
        .args(["check", "--inventory", inv])
        .repo(&repo)
        .run()
        .success();
    let o = f.kiln(&["converge", "--json"]).repo(&repo).run().success();
    let mut output = format!("{}{}", o.stdout, o.stderr);
    for h in ["db01.example.com", "db02.example.com"] {
        let root = f.host(h).path();
        assert_eq!(
            read(root, "/etc/db.conf"),
            format!("# managed\npassword = {cleartext}\n")
        );
        assert_eq!(mode(root, "/etc/db.conf") & 0o7777, 0o640);
        assert_eq!(read(root, "/etc/db-password"), cleartext);
        assert_eq!(mode(root, "/etc/db-password") & 0o7777, 0o600);
        // The report names the secret's resources as sensitive.
        let last = read(root, "/var/lib/kiln/last_run.json");
        assert!(last.contains("template[sensitive #1]"), "{last}");
    }
    assert!(
        f.host("db03.example.com")
            .path()
            .join("etc/db-motd")
            .symlink_metadata()
            .is_err()
    );
    assert_eq!(
        read(f.host("db01.example.com").path(), "/etc/db-motd"),
        "hello db01\n"
    );
    assert_eq!(
        read(f.host("db02.example.com").path(), "/etc/db-motd"),
        "not a secret\n"
    );

    // A why-run and the fingerprint say nothing of it either.
    let o = f
        .kiln(&["converge", "--why-run", "--json"])
        .repo(&repo)
        .run()
        .success();
    output.push_str(&o.stdout);
    output.push_str(&o.stderr);
    let o = f.kiln(&["status"]).repo(&repo).run();
    output.push_str(&o.stdout);
    output.push_str(&o.stderr);

    // Never in clear: not in fleet output, the bundle, reports, or
    // anything kiln keeps on the hosts.
    // The fingerprint keys its content hashes: hosts with the same secret
    // agree, and no plain hash of the file lets anyone test a guess.
    let fp = |h: &str| {
        kiln()
            .args(["fingerprint", "--explain", "--root"])
            .arg(f.host(h).path())
            .run()
            .success()
            .stdout
    };
    let (one, two) = (fp("db01.example.com"), fp("db02.example.com"));
    let keyed = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("hmac-sha256="))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(keyed(&one).len(), 2, "{one}");
    assert_eq!(keyed(&one), keyed(&two));
    assert!(one.contains("file[/etc/db-motd] sha256="), "{one}");
    assert!(one.contains("template[/etc/db.conf] hmac-sha256="), "{one}");
    output.push_str(&one);
    assert!(!output.contains(cleartext), "{output}");
    let out = tempfile::tempdir().unwrap();
    kiln()
        .args(["fleet", "bundle", "--allow-unsigned", "--out"])
        .arg(out.path())
        .repo(&repo)
        .run()
        .success();
    assert_eq!(
        files_containing(out.path(), cleartext),
        Vec::<PathBuf>::new()
    );
    for h in ["db01.example.com", "db02.example.com"] {
        let kept = f.host(h).path().join("var/lib/kiln");
        assert!(kept.join("bundles").is_dir());
        assert_eq!(files_containing(&kept, cleartext), Vec::<PathBuf>::new());
        assert!(read(f.host(h).path(), "/var/lib/kiln/last_run.json").contains("sensitive"));
    }
    assert_eq!(
        files_containing(repo.path(), cleartext),
        Vec::<PathBuf>::new()
    );

    // db03 joins the inventory, not yet the secret's recipients: check and
    // fleet converge refuse it before connecting, naming host, secret, fix.
    std::fs::write(&inventory, &full).unwrap();
    for o in [
        kiln().args(["check", "--inventory", inv]).repo(&repo).run(),
        f.kiln(&["converge"]).repo(&repo).run(),
    ] {
        o.failure()
            .stderr_contains("host db03.example.com")
            .stderr_contains(&format!("secret \"{NAME}\""))
            .stderr_contains("kiln secret rekey");
    }
    let db03 = f.host("db03.example.com").path();
    assert!(
        !db03.join("var/lib/kiln/bundles").exists(),
        "nothing was sent"
    );

    // rekey re-encrypts what changed, and only that.
    let rekey = |expect: &str| {
        secret(
            &repo,
            &[
                "rekey",
                "--identity",
                ops_key.to_str().unwrap(),
                "--inventory",
                inv,
            ],
        )
        .run()
        .success()
        .stdout_contains(expect);
    };
    rekey("1 re-encrypted, 0 unchanged");
    let rekeyed = std::fs::read_to_string(&file).unwrap();
    assert_ne!(rekeyed, stored);
    rekey("0 re-encrypted, 1 unchanged");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), rekeyed);

    kiln()
        .args(["check", "--inventory", inv])
        .repo(&repo)
        .run()
        .success();
    f.kiln(&["converge"]).repo(&repo).run().success();
    assert_eq!(
        read(db03, "/etc/db.conf"),
        format!("# managed\npassword = {cleartext}\n")
    );
}

#[test]
fn a_host_that_cannot_decrypt_fails_before_anything_changes() {
    need!(DebianRoot, Sandbox, Network);
    let keys = tempfile::tempdir().unwrap();
    let (_, ops_pub) = person(keys.path());
    let repo = policy().file(
        "secrets/recipients.toml",
        format!("[people]\nops = \"{ops_pub}\"\n\n[secrets.\"{NAME}\"]\nroles = [\"db\"]\n"),
    );
    let value = keys.path().join("value");
    std::fs::write(&value, "anotherPw").unwrap();
    secret(&repo, &["set", NAME, "--file", value.to_str().unwrap()])
        .run()
        .success();
    let root = TestRoot::new();
    let before = tree_hash(root.path());
    kiln()
        .args(["converge", "--role", "db", "--fqdn", "db09.example.com"])
        .root(&root)
        .repo(&repo)
        .run()
        .failure()
        .stderr_contains(&format!(
            "secret \"{NAME}\" cannot be decrypted on host db09.example.com"
        ))
        .stderr_contains("kiln secret rekey");
    assert_eq!(tree_hash(root.path()), before, "the target changed");

    // A dev VM is nobody's recipient: a role with sizes may not use one.
    let vm = policy().role(
        "vm",
        "run_list = [\"role[db]\"]\n[sizes.small]\ncpus = 1\nmemory_mb = 512\ndisk_gb = 4\n",
    );
    kiln()
        .arg("check")
        .repo(&vm)
        .run()
        .failure()
        .stderr_contains("role \"vm\" (dev VM size small) uses secret \"db/password\"");

    // kiln test needs no key: random test values, never the real one.
    kiln().args(["test", "db"]).repo(&repo).run().success();
}
