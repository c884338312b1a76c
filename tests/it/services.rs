//! Services follow their packages. A daemon keeps running the program it
//! was started from: when an upgrade replaces that file, the old process
//! runs on from a deleted inode, and a health check that only asks "does
//! it answer" passes. So a `package` notifies the service it carries, and
//! only a change of version does (a hold alone restarts nothing).

use std::path::Path;
use std::process::Command;

use crate::support::apt_repo::{AptRepo, PackageFile};
use crate::support::fleet::{Fleet, TestHost, spec};
use crate::support::*;

/// The notified command appends the version dpkg now has, once per run
/// that notifies it: the log is the list of notifications.
const LOG: &str = "/var/lib/kiln-notified";

fn notify_policy(pin: &str) -> Repo {
    Repo::new()
        .role("web", "run_list = [\"recipe[pkgs]\"]")
        .recipe(
            "pkgs",
            "default",
            &format!(
                r#"[[resource]]
package = "kiln-hello"
notifies = ["run execute[record]"]

[[resource]]
execute = "record"
command = "dpkg-query -W -f '${{Version}}\n' kiln-hello >> {LOG}"
action = "nothing"
"#
            ),
        )
        .whitelist(&format!("[packages]\nkiln-hello = \"{pin}\"\n"))
}

fn converge_root(repo: &Repo, root: &TestRoot) -> Outcome {
    kiln()
        .arg("converge")
        .repo(repo)
        .root(root)
        .args(["--role", "web", "--detailed-exitcodes"])
        .run()
}

/// The engine's side, in a throwaway root: install, upgrade and downgrade
/// notify; a converged package and one that is only held again do not.
#[test]
fn a_package_notifies_when_its_version_moves_and_not_when_only_held() {
    need!(DebianRoot);
    let root = TestRoot::new();
    AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "2.0-1")
        .install_into(root.path());

    let repo = notify_policy("1.0-1");
    converge_root(&repo, &root)
        .code(2)
        .stdout_contains("install 1.0-1");
    assert_eq!(read(&root, LOG), "1.0-1\n");
    converge_root(&repo, &root).code(0);
    assert_eq!(read(&root, LOG), "1.0-1\n");

    // Someone lifted the hold by hand: kiln holds it again, an update
    // that replaces no file and so notifies nothing.
    let out = in_root(&root, &["apt-mark", "unhold", "kiln-hello"]);
    assert!(out.status.success(), "{out:?}");
    converge_root(&repo, &root)
        .code(2)
        .stdout_contains("hold at 1.0-1")
        .stdout_lacks("execute[record]");
    assert_eq!(read(&root, LOG), "1.0-1\n");

    let repo = notify_policy("2.0-1");
    converge_root(&repo, &root)
        .code(2)
        .stdout_contains("upgrade 1.0-1 -> 2.0-1")
        .stdout_contains("execute[record]");
    assert_eq!(read(&root, LOG), "1.0-1\n2.0-1\n");

    let repo = notify_policy("1.0-1");
    converge_root(&repo, &root)
        .code(2)
        .stdout_contains("downgrade 2.0-1 -> 1.0-1");
    assert_eq!(read(&root, LOG), "1.0-1\n2.0-1\n1.0-1\n");
}

/// A daemon package as Debian ships one: the program in /usr/sbin (a copy
/// of this machine's `sleep`, so each upgrade unpacks a new inode over it)
/// and an LSB init script that starts it with start-stop-daemon. The
/// package's maintainer scripts restart nothing: that is kiln's job here.
fn daemon(repo: &mut AptRepo, name: &str, version: &str) {
    let sleep = std::fs::read("/bin/sleep").expect("this machine has /bin/sleep");
    let init = format!(
        r#"#!/bin/sh
### BEGIN INIT INFO
# Provides: {name}
# Required-Start:
# Required-Stop:
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
# Short-Description: kiln test daemon {name}
### END INIT INFO
PID=/run/{name}.pid
case "$1" in
  start) exec start-stop-daemon --start --oknodo --background --make-pidfile --pidfile $PID --exec /usr/sbin/{name} -- infinity ;;
  # By pid file alone: after an upgrade the old process's program is a
  # deleted file, which --exec would not recognize.
  stop) exec start-stop-daemon --stop --oknodo --retry TERM/5 --pidfile $PID --remove-pidfile ;;
  restart|force-reload) "$0" stop && exec "$0" start ;;
  status) exec start-stop-daemon --status --pidfile $PID ;;
  *) exit 3 ;;
esac
"#
    );
    repo.package_files(
        name,
        version,
        "",
        &[
            PackageFile::executable(format!("/usr/sbin/{name}"), sleep),
            PackageFile::executable(format!("/etc/init.d/{name}"), init),
        ],
    );
}

/// `kiln-daemon` notifies its service; `kiln-quiet`, the same daemon,
/// does not (the contrast: what the fleet saw before).
fn daemon_policy(pin: &str) -> Repo {
    Repo::new()
        .role("cache", "run_list = [\"recipe[daemons]\"]")
        .recipe(
            "daemons",
            "default",
            r#"[[resource]]
package = "kiln-daemon"
notifies = ["restart service[kiln-daemon]"]

[[resource]]
package = "kiln-quiet"

[[resource]]
service = "kiln-daemon"
action = ["enable", "start"]

[[resource]]
service = "kiln-quiet"
action = ["enable", "start"]

[[verify]]
service = "kiln-daemon"
"#,
        )
        .whitelist(&pins(pin))
}

fn pins(pin: &str) -> String {
    format!("[packages]\nkiln-daemon = \"{pin}\"\nkiln-quiet = \"{pin}\"\n")
}

/// Runs `script` inside the host (its PID namespace, where the daemons'
/// pids mean something) over ssh, as the fleet's operator would.
fn inside(f: &Fleet, h: &TestHost, script: &str) -> String {
    let dir = f.dir.path();
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
        .arg("ControlPath=none")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", f.known_hosts().display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-i"])
        .arg(dir.join("id_ed25519"))
        .arg(format!("root@{}", h.address))
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The daemon's pid and the program it runs (`readlink /proc/PID/exe`).
fn running(f: &Fleet, h: &TestHost, name: &str) -> (u32, String) {
    let line = inside(
        f,
        h,
        &format!("p=$(cat /run/{name}.pid) && echo \"$p $(readlink /proc/$p/exe)\""),
    );
    let (pid, exe) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("{name}: no pid and program in {line:?}"));
    (pid.parse().unwrap(), exe.to_string())
}

/// On a fleet host, where SysV services really run: an upgrade restarts
/// the daemon onto the new program, a daemon whose package does not
/// notify keeps the deleted one, and a rollback pin restarts it again.
#[test]
fn a_package_version_change_restarts_its_daemon_on_the_new_program() {
    need!(Sshd);
    let mut apt = AptRepo::new();
    for name in ["kiln-daemon", "kiln-quiet"] {
        for version in ["1.0-1", "2.0-1"] {
            daemon(&mut apt, name, version);
        }
    }
    let mut f = Fleet::new(
        vec![spec("cache01.example.com", &["cache"])],
        |root: &Path| {
            apt.install_into(root);
        },
    );
    f.start();
    let h = &f.hosts[0];
    let repo = daemon_policy("1.0-1");
    let set_pin =
        |pin: &str| std::fs::write(repo.path().join("whitelist.toml"), pins(pin)).unwrap();
    let push = || f.kiln(&["converge"]).repo(&repo).run().success();

    push();
    let (d1, exe) = running(&f, h, "kiln-daemon");
    assert_eq!(exe, "/usr/sbin/kiln-daemon");
    let (q1, exe) = running(&f, h, "kiln-quiet");
    assert_eq!(exe, "/usr/sbin/kiln-quiet");

    // Held again by kiln after a hand-made unhold: the daemon runs on.
    h.sh("apt-mark unhold kiln-daemon");
    push().stdout_contains("hold at 1.0-1");
    assert_eq!(running(&f, h, "kiln-daemon").0, d1);

    set_pin("2.0-1");
    push();
    assert_eq!(h.version("kiln-daemon").as_deref(), Some("2.0-1"));
    let (d2, exe) = running(&f, h, "kiln-daemon");
    assert_ne!(d2, d1, "the upgrade restarts kiln-daemon");
    assert_eq!(exe, "/usr/sbin/kiln-daemon", "it runs the new program");
    // Without the notification: the same process, on the deleted program.
    let (q2, exe) = running(&f, h, "kiln-quiet");
    assert_eq!(q2, q1);
    assert!(exe.ends_with("(deleted)"), "{exe}");

    // Rolling back is a downgrade, and restarts it again.
    set_pin("1.0-1");
    push();
    assert_eq!(h.version("kiln-daemon").as_deref(), Some("1.0-1"));
    let (d3, exe) = running(&f, h, "kiln-daemon");
    assert_ne!(d3, d2, "the rollback restarts kiln-daemon");
    assert_eq!(exe, "/usr/sbin/kiln-daemon");
}
