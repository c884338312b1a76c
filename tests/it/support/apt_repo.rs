//! A local apt repository that tests build from scratch: small packages made
//! with dpkg-deb, a flat `Packages` index written here, served to a root as
//! `deb [trusted=yes] file:/srv/kiln-apt ./` so tests never reach a mirror.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Where the repository sits inside a root.
pub const IN_ROOT: &str = "srv/kiln-apt";

/// One file a test package ships.
pub struct PackageFile {
    /// Absolute, as installed.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl PackageFile {
    /// A regular file, mode 0644.
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> PackageFile {
        PackageFile {
            path: path.into(),
            contents: contents.into(),
            mode: 0o644,
        }
    }

    /// The same, executable (0755).
    pub fn executable(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> PackageFile {
        PackageFile {
            mode: 0o755,
            ..PackageFile::new(path, contents)
        }
    }
}

#[derive(Default)]
pub struct AptRepo {
    debs: Vec<(String, String, Vec<u8>)>,
}

impl AptRepo {
    pub fn new() -> AptRepo {
        AptRepo::default()
    }

    /// A package whose file `/usr/share/<name>/version` holds its version.
    pub fn package(mut self, name: &str, version: &str) -> AptRepo {
        self.package_with(name, version, "");
        self
    }

    /// Like [`AptRepo::package`], with extra control fields (e.g. `Depends: x`).
    pub fn package_with(&mut self, name: &str, version: &str, extra: &str) {
        let file = PackageFile::new(format!("/usr/share/{name}/version"), format!("{version}\n"));
        self.package_files(name, version, extra, &[file]);
    }

    /// A package that ships exactly `files` (and the control fields
    /// `extra`): a daemon with its init script, for tests where an upgrade
    /// must replace a running program on disk as a real package does.
    pub fn package_files(&mut self, name: &str, version: &str, extra: &str, files: &[PackageFile]) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg");
        fs::create_dir_all(root.join("DEBIAN")).unwrap();
        for f in files {
            let rel = f
                .path
                .strip_prefix('/')
                .expect("package paths are absolute");
            let path = root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &f.contents).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(f.mode)).unwrap();
        }
        let mut control = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: kiln tests <kiln@localhost>\nPriority: optional\nSection: misc\nDescription: kiln test package {name}\n"
        );
        for line in extra.lines().filter(|l| !l.is_empty()) {
            control.push_str(line);
            control.push('\n');
        }
        fs::write(root.join("DEBIAN/control"), control).unwrap();
        let file = format!("{name}_{}_all.deb", version.replace(':', "%3a"));
        let out = dir.path().join(&file);
        let status = Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zgzip"])
            .arg(&root)
            .arg(&out)
            .output()
            .expect("dpkg-deb runs");
        assert!(
            status.status.success(),
            "dpkg-deb: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        self.debs
            .push((name.to_string(), file, fs::read(&out).unwrap()));
    }

    /// Writes the repository into `root` and makes it the root's only apt source.
    /// The root's package lists are dropped, so kiln must run `apt-get update`.
    pub fn install_into(&self, root: &Path) -> PathBuf {
        let dir = self.write_into(root);
        let apt = root.join("etc/apt");
        let _ = fs::remove_file(apt.join("sources.list"));
        if let Ok(entries) = fs::read_dir(apt.join("sources.list.d")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        fs::write(
            apt.join("sources.list"),
            format!("deb [trusted=yes] file:/{IN_ROOT} ./\n"),
        )
        .unwrap();
        if let Ok(entries) = fs::read_dir(root.join("var/lib/apt/lists")) {
            for e in entries.flatten() {
                if e.path().is_file() && e.file_name() != "lock" {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        dir
    }

    /// Writes the packages and their index into `root`, sources untouched.
    pub fn write_into(&self, root: &Path) -> PathBuf {
        let dir = root.join(IN_ROOT);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let index = self.write_debs(&dir, ".");
        fs::write(dir.join("Packages"), index).unwrap();
        dir
    }

    /// Writes the packages into `archive` as Debian's archive lays them out
    /// (`pool/main/k/NAME/`, `dists/SUITE/main/binary-amd64/Packages`),
    /// with an unsigned `dists/SUITE/Release` that carries `fields` (e.g.
    /// `Valid-Until: ...`). Returns the Release file, for the caller to sign.
    pub fn write_suite(&self, archive: &Path, suite: &str, fields: &str) -> PathBuf {
        let index = self.write_debs(archive, "pool/main");
        let dists = archive.join("dists").join(suite);
        let packages = "main/binary-amd64/Packages";
        fs::create_dir_all(dists.join("main/binary-amd64")).unwrap();
        fs::write(dists.join(packages), &index).unwrap();
        let release = dists.join("Release");
        fs::write(
            &release,
            format!(
                "Suite: {suite}\nCodename: {suite}\nArchitectures: amd64\nComponents: main\n{fields}SHA256:\n {} {} {packages}\n",
                hex::encode(Sha256::digest(index.as_bytes())),
                index.len()
            ),
        )
        .unwrap();
        release
    }

    /// Writes each package file under `dir/prefix` and returns their
    /// `Packages` index, whose `Filename`s are relative to `dir`.
    fn write_debs(&self, dir: &Path, prefix: &str) -> String {
        let mut index = String::new();
        for (name, file, bytes) in &self.debs {
            let filename = match prefix {
                "." => format!("./{file}"),
                _ => format!("{prefix}/{}/{name}/{file}", &name[..1]),
            };
            let path = dir.join(&filename);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
            let control = Command::new("dpkg-deb")
                .arg("-f")
                .arg(&path)
                .output()
                .unwrap();
            index.push_str(String::from_utf8_lossy(&control.stdout).trim_end());
            index.push_str(&format!(
                "\nFilename: {filename}\nSize: {}\nSHA256: {}\n\n",
                bytes.len(),
                hex::encode(Sha256::digest(bytes))
            ));
        }
        index
    }
}
