//! Commands that write into the policy repository (whitelist promote,
//! secret set and rekey, fleet bundle --out; stage is in workflow.rs, devvm
//! box in devvm.rs) write where the user said: `--repo` left at `.`, a relative `--repo` and an absolute one all
//! edit the repository's own files (as `git diff` shows) and nothing
//! appears at `/`, which a target's confined view of the running system
//! would have resolved them against.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const WHITELIST: &str = "[packages]\nkiln-hello = \"1.0-1\"\n\n\
    # staged for canaries\n[rollouts.hello-2]\nhosts = [\"web01.*\"]\n\
    packages = { kiln-hello = \"2.0-1\" }\n";

/// A git checkout of a small policy with one rollout, inside `parent/repo`.
fn checkout(parent: &Path, people: &str) -> std::path::PathBuf {
    let dir = parent.join("repo");
    std::fs::create_dir_all(dir.join("roles")).unwrap();
    std::fs::create_dir_all(dir.join("cookbooks/site/recipes")).unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(
        dir.join("roles/web.toml"),
        "run_list = [\"recipe[site]\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("cookbooks/site/metadata.toml"),
        "name = \"site\"\nversion = \"1.0.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("cookbooks/site/recipes/default.toml"),
        "[[resource]]\npackage = \"kiln-hello\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("whitelist.toml"), WHITELIST).unwrap();
    std::fs::write(
        dir.join("secrets/recipients.toml"),
        format!("[people]\nops = \"{people}\"\n\n[secrets.\"app/token\"]\n"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {ok:?}");
        String::from_utf8_lossy(&ok.stdout).into_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "policy"]);
    dir
}

fn git_diff(dir: &Path) -> String {
    let out = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Another person's age recipient (its identity is not needed here).
const CAROL: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

#[test]
fn writers_edit_the_repository_with_any_repo_path() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("ops");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let value = keys.path().join("value");
    std::fs::write(&value, "token\n").unwrap();

    // (working directory, --repo) as a user would give them.
    for case in ["default", "relative", "absolute"] {
        let parent = tempfile::tempdir().unwrap();
        let dir = checkout(parent.path(), public.trim());
        let (cwd, repo_arg): (&Path, Option<String>) = match case {
            "default" => (&dir, None),
            "relative" => (parent.path(), Some("repo".into())),
            _ => (Path::new("/tmp"), Some(dir.display().to_string())),
        };
        let run = |args: &[&str]| {
            let mut k = kiln().current_dir(cwd);
            if let Some(r) = &repo_arg {
                k = k.arg("--repo").arg(r);
            }
            k.args(args).run()
        };
        run(&["whitelist", "promote", "hello-2"])
            .success()
            .stdout_contains("kiln-hello: 1.0-1 -> 2.0-1");
        let text = std::fs::read_to_string(dir.join("whitelist.toml")).unwrap();
        assert!(text.contains("kiln-hello = \"2.0-1\""), "{case}: {text}");
        assert!(!text.contains("[rollouts.hello-2]"), "{case}: {text}");
        run(&[
            "secret",
            "set",
            "app/token",
            "--file",
            value.to_str().unwrap(),
        ])
        .success();
        let sealed = dir.join("secrets/app/token.age");
        assert!(sealed.is_file(), "{case}");
        // A second person: rekey rewrites the file in the repository.
        let before = std::fs::read_to_string(&sealed).unwrap();
        let recipients = dir.join("secrets/recipients.toml");
        let text = std::fs::read_to_string(&recipients)
            .unwrap()
            .replace("[people]\n", &format!("[people]\ncarol = \"{CAROL}\"\n"));
        std::fs::write(&recipients, text).unwrap();
        run(&["secret", "rekey", "--identity", key.to_str().unwrap()]).success();
        assert_ne!(std::fs::read_to_string(&sealed).unwrap(), before, "{case}");
        // A published bundle goes where --out says, relative to the working directory.
        let (out, published) = match case {
            "absolute" => {
                let p = parent.path().join("published");
                (p.display().to_string(), p)
            }
            _ => ("published".to_string(), cwd.join("published")),
        };
        run(&["fleet", "bundle", "--allow-unsigned", "--out", &out]).success();
        assert!(published.join("bundle.tar").is_file(), "{case}");
        let diff = git_diff(&dir);
        assert!(diff.contains(" M whitelist.toml"), "{case}: {diff}");
        assert!(diff.contains("?? secrets/app/"), "{case}: {diff}");
        assert!(
            diff.contains(" M secrets/recipients.toml"),
            "{case}: {diff}"
        );
        for stray in ["/whitelist.toml", "/secrets", "/published"] {
            assert!(!Path::new(stray).exists(), "{case}: {stray} was written");
        }
    }
}
