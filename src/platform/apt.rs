//! apt transactions on a target: non-interactive, with the target's own apt
//! configuration, pins held afterwards.

use std::path::PathBuf;
use std::process::Output;

use super::target::{Durability, Target, capture, output_tail};
use crate::error::{CommandFailed, RunError};

/// Keeps package maintainer scripts from starting services inside a
/// `--root` tree (a tree is converged, not booted: a daemon would bind the
/// build host's ports and die with its sandbox), for as long as it lives.
struct NoServiceStarts {
    /// The target while kiln's policy-rc.d is in place, and the dangling
    /// link it replaced (put back afterwards).
    placed: Option<(Target, Option<PathBuf>)>,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStarts {
    fn new(target: &Target) -> Self {
        let tfs = target.fs();
        // One that leads to a file inside the target is the tree's own.
        if !target.is_chroot() || tfs.exists(POLICY_RC_D) {
            return NoServiceStarts { placed: None };
        }
        // A dangling link is replaced (in the target, never followed) and restored.
        let link = tfs.read_link(POLICY_RC_D).ok();
        let script = "#!/bin/sh\n# kiln: no service starts in a --root target\nexit 101\n";
        let ok = tfs.write_atomic(POLICY_RC_D, script.as_bytes(), 0o755, Default::default());
        NoServiceStarts {
            placed: ok.ok().map(|_| (target.clone(), link)),
        }
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some((target, link)) = &self.placed {
            let _ = target.fs().remove_file(POLICY_RC_D);
            if let Some(to) = link {
                let _ = target.fs().symlink(to, POLICY_RC_D);
            }
        }
    }
}

/// apt keeps what dpkg's status said in a binary cache (`pkgcache.bin`),
/// trusted while the status file has the size and the whole-second mtime it
/// had then. A change within that second by anything but apt (`dpkg -i`, a
/// killed run's dpkg) can leave apt sure of a state dpkg no longer has: an
/// install "already at" the old version (a rollback that does nothing), a
/// hold "already set". So the apt programs that change what is installed or
/// held read the status afresh, in memory (about 50 ms more against a full
/// index); the cache of the index itself (`srcpkgcache.bin`) is kept, and
/// queries of what the archive offers keep using both.
const FRESH_STATUS: [&str; 2] = ["-o", "Dir::Cache::pkgcache="];

/// `argv` with [`FRESH_STATUS`] after the program when it acts on dpkg's
/// state: `apt-get` (but `update`) and `apt-mark`.
fn fresh<'a>(argv: &[&'a str]) -> Vec<&'a str> {
    let acts = match argv {
        ["apt-get", "update", ..] => false,
        ["apt-get", ..] | ["apt-mark", ..] => true,
        _ => false,
    };
    let mut out = argv.to_vec();
    if acts {
        out.splice(1..1, FRESH_STATUS);
    }
    out
}

fn apt(target: &Target, argv: &[&str]) -> std::io::Result<Output> {
    capture(target.command_env(
        &fresh(argv),
        &[
            ("DEBIAN_FRONTEND", "noninteractive"),
            ("APT_LISTCHANGES_FRONTEND", "none"),
        ],
    ))
}

fn checked(target: &Target, argv: &[&str]) -> Result<String, RunError> {
    let mut out = apt(target, argv).map_err(|e| RunError::spawn(argv[0], e))?;
    // A run killed in the middle of dpkg leaves it "interrupted"; the next
    // run repairs that, as dpkg asks, and tries once more.
    if !out.status.success() && apt_reason(&out).contains("dpkg was interrupted") {
        let _ = apt(target, &["dpkg", "--configure", "-a"]);
        out = apt(target, argv).map_err(|e| RunError::spawn(argv[0], e))?;
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CommandFailed::new(argv, out.status, apt_reason(&out)).into())
    }
}

/// apt's own words: the unmet dependencies it lists (which say what is
/// wrong) and its `E:` lines, else the output's tail.
pub fn apt_reason(out: &Output) -> String {
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<&str> = Vec::new();
    let mut in_unmet = false;
    for line in all.lines() {
        if line.starts_with("The following packages have unmet dependencies") {
            in_unmet = true;
            lines.push(line);
        } else if in_unmet && line.starts_with(' ') {
            lines.push(line);
        } else {
            in_unmet = false;
            if line.starts_with("E: ") || line.starts_with("dpkg: error") {
                lines.push(line);
            }
        }
    }
    if lines.is_empty() {
        return output_tail(out);
    }
    let mut reason = lines.join("\n");
    if reason.contains("unmet dependencies") && reason.contains("(= ") {
        reason.push_str(
            "\nfix: packages built from one source must be at one version; pin the \
             package named above at a version whose siblings the sources still offer \
             (kiln whitelist outdated lists them)",
        );
    }
    reason
}

/// Whether the target's package index knows every `name=version`.
pub fn index_knows(target: &Target, pins: &[(String, String)]) -> bool {
    let has_index = target
        .fs()
        .read_dir("/var/lib/apt/lists")
        .map(|d| d.iter().any(|n| n.to_string_lossy().contains("_Packages")))
        .unwrap_or(false);
    if !has_index {
        return false;
    }
    if pins.is_empty() {
        return true;
    }
    if let Some(known) = super::siblings::index_lists(target, pins) {
        return known;
    }
    let args: Vec<String> = pins.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut argv = vec!["apt-cache", "show", "--no-all-versions"];
    argv.extend(args.iter().map(String::as_str));
    // apt-cache exits 0 for a version it does not know and prints nothing
    // for it: what counts is which records come back.
    let Ok(out) = apt(target, &argv) else {
        return false;
    };
    let shown = shown_versions(&String::from_utf8_lossy(&out.stdout));
    pins.iter()
        .all(|(n, v)| shown.iter().any(|(sn, sv)| sn == n && sv == v))
}

/// `(Package, Version)` of each record `apt-cache show` printed.
fn shown_versions(text: &str) -> Vec<(String, String)> {
    super::deb822::paragraphs(text)
        .filter_map(|p| {
            Some((
                p.get("Package")?.into_owned(),
                p.get("Version")?.into_owned(),
            ))
        })
        .collect()
}

pub fn update(target: &Target) -> Result<(), RunError> {
    checked(target, &["apt-get", "update", "-q"]).map(|_| ())
}

/// Refreshes the index of one sources file only, leaving the others' lists alone.
pub fn update_one(target: &Target, sources: &str) -> Result<(), RunError> {
    checked(
        target,
        &[
            "apt-get",
            "update",
            "-q",
            "-o",
            &format!("Dir::Etc::SourceList={sources}"),
            "-o",
            "Dir::Etc::SourceParts=-",
            "-o",
            "APT::Get::List-Cleanup=0",
        ],
    )
    .map(|_| ())
}

pub fn set_hold(target: &Target, names: &[String], hold: bool) -> Result<(), RunError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut argv = vec!["apt-mark", if hold { "hold" } else { "unhold" }];
    argv.extend(names.iter().map(String::as_str));
    checked(target, &argv).map(|_| ())
}

/// One apt transaction: installs at exact versions (downgrades allowed),
/// keeping existing config files.
pub fn install(target: &Target, pins: &[(String, String)]) -> Result<(), RunError> {
    let _guard = NoServiceStarts::new(target);
    let argv = install_command(target.durability(), pins);
    checked(target, &argv.iter().map(String::as_str).collect::<Vec<_>>()).map(|_| ())
}

fn install_command(durability: Durability, pins: &[(String, String)]) -> Vec<String> {
    let mut extra = vec![
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ];
    extra.extend(dpkg_speed(durability));
    install_argv(pins, &extra)
}

/// apt options for dpkg on a target of this durability: a throwaway tree
/// skips the sync before each unpacked file's rename (`--force-unsafe-io`),
/// since a crash discards the whole tree anyway. Nothing for any other.
fn dpkg_speed(durability: Durability) -> &'static [&'static str] {
    match durability {
        Durability::Durable => &[],
        Durability::Throwaway => &["-o", "Dpkg::Options::=--force-unsafe-io"],
    }
}

/// Fetches the packages of `pins` into the target's apt cache without
/// installing them, so that a later install needs no network.
pub fn download(target: &Target, pins: &[(String, String)]) -> Result<(), RunError> {
    if pins.is_empty() {
        return Ok(());
    }
    if !index_knows(target, pins) {
        update(target)?;
    }
    apt_get_install(
        target,
        pins,
        &["--download-only", "--allow-change-held-packages"],
    )
}

/// `apt-get install` of exact versions, non-interactive, with `extra` options.
fn apt_get_install(
    target: &Target,
    pins: &[(String, String)],
    extra: &[&str],
) -> Result<(), RunError> {
    let argv = install_argv(pins, extra);
    checked(target, &argv.iter().map(String::as_str).collect::<Vec<_>>()).map(|_| ())
}

fn install_argv(pins: &[(String, String)], extra: &[&str]) -> Vec<String> {
    let fixed = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--allow-downgrades",
    ];
    let pins = pins.iter().map(|(n, v)| format!("{n}={v}"));
    fixed
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .chain(pins)
        .collect()
}

/// `remove` or `purge`.
pub fn remove(target: &Target, names: &[String], purge: bool) -> Result<(), RunError> {
    let _guard = NoServiceStarts::new(target);
    let argv = remove_argv(target.durability(), names, purge);
    checked(target, &argv).map(|_| ())
}

fn remove_argv(durability: Durability, names: &[String], purge: bool) -> Vec<&str> {
    let mut argv = vec![
        "apt-get",
        if purge { "purge" } else { "remove" },
        "-y",
        "-q",
    ];
    argv.extend(dpkg_speed(durability));
    argv.extend(names.iter().map(String::as_str));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_reason_keeps_the_unmet_dependencies() {
        let out = Output {
            status: std::process::ExitStatus::from_raw(100 << 8),
            stdout: b"Reading package lists...\nSome packages could not be installed.\nThe following packages have unmet dependencies:\n php8.2-fpm : Depends: php8.2-common (= 8.2.32-1~deb12u1) but 8.2.36-1~deb12u1 is to be installed\n              Depends: php8.2-opcache (= 8.2.32-1~deb12u1)\n".to_vec(),
            stderr: b"E: Unable to correct problems, you have held broken packages.\n".to_vec(),
        };
        let reason = apt_reason(&out);
        assert!(reason.contains("php8.2-fpm : Depends: php8.2-common (= 8.2.32-1~deb12u1) but 8.2.36-1~deb12u1 is to be installed"), "{reason}");
        assert!(reason.contains("Depends: php8.2-opcache"), "{reason}");
        assert!(reason.contains("E: Unable to correct problems"), "{reason}");
        assert!(
            reason.contains("fix: packages built from one source"),
            "{reason}"
        );
    }

    #[test]
    fn what_changes_packages_or_holds_reads_dpkg_s_status_afresh() {
        for argv in [
            &["apt-get", "install", "x=1"][..],
            &["apt-get", "remove", "x"],
            &["apt-mark", "hold", "x"],
        ] {
            let got = fresh(argv);
            assert_eq!(
                got[..3],
                [argv[0], "-o", "Dir::Cache::pkgcache="],
                "{argv:?}"
            );
            assert_eq!(got[3..], argv[1..], "{argv:?}");
        }
        for argv in [
            &["apt-get", "update", "-q"][..],
            &["apt-cache", "show", "x"],
            &["dpkg", "--configure", "-a"],
            &[],
        ] {
            assert_eq!(fresh(argv), argv, "{argv:?}");
        }
    }

    #[test]
    fn only_a_throwaway_target_gets_unsafe_io() {
        let pins = [("sudo".to_string(), "1.9.13p3-1+deb12u4".to_string())];
        let names = ["sudo".to_string()];
        let unsafe_io = "Dpkg::Options::=--force-unsafe-io";
        let durable = install_command(Durability::Durable, &pins);
        assert!(
            durable
                .iter()
                .any(|a| a == "Dpkg::Options::=--force-confold")
        );
        assert!(!durable.iter().any(|a| a == unsafe_io), "{durable:?}");
        for purge in [false, true] {
            let durable = remove_argv(Durability::Durable, &names, purge);
            assert!(!durable.contains(&unsafe_io), "{durable:?}");
            let throwaway = remove_argv(Durability::Throwaway, &names, purge);
            assert_eq!(throwaway[4..], ["-o", unsafe_io, "sudo"], "{throwaway:?}");
        }
        let throwaway = install_command(Durability::Throwaway, &pins);
        assert_eq!(
            throwaway[throwaway.len() - 3..],
            ["-o", unsafe_io, "sudo=1.9.13p3-1+deb12u4"],
            "{throwaway:?}"
        );
        // What a user's tree or the host gets, unless a command says otherwise.
        assert_eq!(Target::host().durability(), Durability::Durable);
        let tree = Target::at_root(std::path::Path::new("/tmp"));
        assert_eq!(tree.durability(), Durability::Durable);
        let read_only = Target::at_root_read_only(std::path::Path::new("/tmp"));
        assert_eq!(read_only.durability(), Durability::Durable);
    }
}
