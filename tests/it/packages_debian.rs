//! Debian's real packages from the real archive: a package pinned at its
//! older version (bookworm), then rolled to the newer one (usually from
//! bookworm-security), both read from the archive when the test runs.

use std::process::Command;

use crate::support::*;

fn installed_version(root: &TestRoot, name: &str) -> Option<String> {
    let out = in_root(
        root,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Version} ${db:Status-Want}",
            name,
        ],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_package_rolls_from_its_older_to_its_newer_archive_version() {
    need!(DebianRoot, Network);
    let root = TestRoot::new();
    // Packages with no exact-version siblings, so one pin moves alone.
    let (package, older, newer) = archive_pair(&root, &["memcached", "tzdata"]);
    let repo = |rollout: &str| {
        Repo::one_package(
            "cache",
            &package,
            &format!("[packages]\n{package} = \"{older}\"\n{rollout}"),
        )
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
    let installed = converge(&base).code(2);
    // tzdata comes with the base root: then the pin is a downgrade.
    assert!(
        installed.stdout.contains(&format!("install {older}"))
            || installed.stdout.contains(&format!("-> {older}")),
        "{}",
        installed.stdout
    );
    assert_eq!(
        installed_version(&root, &package),
        Some(format!("{older} hold"))
    );
    // Installing in a --root target started no daemon on the host (a
    // `kiln test` of another test may run one in its own PID namespace).
    let ps = Command::new("pgrep")
        .args(["-x", &package])
        .output()
        .unwrap();
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let on_host: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ours)
        })
        .map(String::from)
        .collect();
    assert!(
        on_host.is_empty(),
        "{package} was started on the build host: {on_host:?}"
    );
    converge(&base).code(0);

    let rolled = repo(&format!(
        "\n[rollouts.security]\nhosts = [\"cache01.*\"]\npackages = {{ {package} = \"{newer}\" }}\n"
    ));
    converge(&rolled)
        .code(2)
        .stdout_contains(&format!("upgrade {older} -> {newer}"));
    assert_eq!(
        installed_version(&root, &package),
        Some(format!("{newer} hold"))
    );
    converge(&rolled).code(0);
    let sim = in_root(&root, &["apt-get", "-s", "upgrade"]);
    let sim = String::from_utf8_lossy(&sim.stdout);
    assert!(
        !sim.lines()
            .any(|l| l.starts_with(&format!("Inst {package} "))),
        "{sim}"
    );
}
