//! Debian's real packages from the real archive: memcached pinned at the
//! bookworm version, then rolled to the bookworm-security version.

mod support;

use std::process::Command;

use support::*;

fn installed_version(root: &TestRoot, name: &str) -> Option<String> {
    let out = Command::new("chroot")
        .arg(root.path())
        .args([
            "dpkg-query",
            "-W",
            "-f",
            "${Version} ${db:Status-Want}",
            name,
        ])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn memcached_rolls_from_bookworm_to_bookworm_security() {
    let root = TestRoot::new();
    let repo = |rollout: &str| {
        Repo::new()
            .role("cache", "run_list = [\"recipe[memcached]\"]")
            .recipe(
                "memcached",
                "default",
                "[[resource]]\npackage = \"memcached\"\n",
            )
            .whitelist(&format!("[packages]\nmemcached = \"1.6.18-1\"\n{rollout}"))
    };
    let converge = |repo: &Repo| {
        kiln()
            .arg("converge")
            .repo(repo)
            .root(&root)
            .args([
                "--role",
                "cache",
                "--fqdn",
                "cache01.example.com",
                "--detailed-exitcodes",
            ])
            .run()
    };
    let base = repo("");
    converge(&base).code(2).stdout_contains("install 1.6.18-1");
    assert_eq!(
        installed_version(&root, "memcached").as_deref(),
        Some("1.6.18-1 hold")
    );
    // Installing in a --root target started no daemon on the host.
    let ps = Command::new("pgrep")
        .args(["-x", "memcached"])
        .output()
        .unwrap();
    assert!(
        !ps.status.success(),
        "memcached was started on the build host"
    );
    converge(&base).code(0);

    let rolled = repo(
        "\n[rollouts.memcached-security]\nhosts = [\"cache01.*\"]\npackages = { memcached = \"1.6.18-1+deb12u1\" }\n",
    );
    converge(&rolled)
        .code(2)
        .stdout_contains("upgrade 1.6.18-1 -> 1.6.18-1+deb12u1");
    assert_eq!(
        installed_version(&root, "memcached").as_deref(),
        Some("1.6.18-1+deb12u1 hold")
    );
    converge(&rolled).code(0);
    let sim = Command::new("chroot")
        .arg(root.path())
        .args(["apt-get", "-s", "upgrade"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let sim = String::from_utf8_lossy(&sim.stdout);
    assert!(
        !sim.lines().any(|l| l.starts_with("Inst memcached")),
        "{sim}"
    );
}
