//! Smoke tests of the integration-test harness itself (tests/support).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::browser::Browser;
use crate::support::{
    Outcome, Repo, TestRoot, at, base_root, group_entry, mode, passwd_entry, tree_hash,
};

#[test]
fn base_root_has_the_tools_kiln_needs() {
    need!(DebianRoot);
    let base = base_root();
    for tool in [
        "usr/sbin/useradd",
        "usr/sbin/groupadd",
        "usr/sbin/update-rc.d",
        "usr/bin/pgrep",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
    ] {
        assert!(
            base.join(tool).is_file(),
            "{tool} missing in {}",
            base.display()
        );
    }
    let root = passwd_entry(&base, "root").expect("root in /etc/passwd");
    assert_eq!(root[2], "0");
    assert_eq!(
        group_entry(&base, "root").expect("root in /etc/group")[2],
        "0"
    );
    assert_eq!(passwd_entry(&base, "no-such-user"), None);
}

#[test]
fn test_roots_are_independent() {
    need!(DebianRoot);
    let a = TestRoot::new();
    let b = TestRoot::new();
    assert_ne!(a.path(), b.path());
    fs::write(at(&a, "/etc/only-in-a"), "a\n").unwrap();
    fs::remove_file(at(&a, "/etc/debian_version")).unwrap();

    assert_eq!(crate::support::read(&a, "/etc/only-in-a"), "a\n");
    assert!(!at(&b, "/etc/only-in-a").exists());
    assert!(!base_root().join("etc/only-in-a").exists());
    assert!(at(&b, "/etc/debian_version").is_file());
    assert!(base_root().join("etc/debian_version").is_file());

    let path = a.path().to_owned();
    drop(a);
    assert!(!path.exists(), "{} survived its TestRoot", path.display());
}

/// Bind-mounts `source` on `target`, as a test that chroots might do.
fn bind_mount(source: &Path, target: &Path) {
    let source = CString::new(source.as_os_str().as_bytes()).unwrap();
    let target = CString::new(target.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated paths; null type and data are allowed
    // for a bind mount.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "bind mount: {}", std::io::Error::last_os_error());
}

#[test]
fn dropping_a_test_root_unmounts_before_removing() {
    need!(DebianRoot);
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("canary"), "still here").unwrap();
    let root = TestRoot::new();
    bind_mount(host.path(), &at(&root, "/mnt"));
    assert!(at(&root, "/mnt/canary").is_file());

    let path = root.path().to_owned();
    drop(root);
    assert!(!path.exists(), "{} survived its TestRoot", path.display());
    assert_eq!(
        fs::read_to_string(host.path().join("canary")).unwrap(),
        "still here",
        "removing a test root reached into a mount inside it"
    );
}

#[test]
fn tree_hash_sees_modes_but_not_scratch_space() {
    need!(DebianRoot);
    let root = TestRoot::new();
    let before = tree_hash(&root);
    assert_eq!(tree_hash(&root), before, "tree_hash is not deterministic");

    fs::write(at(&root, "/tmp/scratch"), "ignored").unwrap();
    fs::create_dir_all(at(&root, "/var/lib/kiln")).unwrap();
    fs::write(at(&root, "/var/lib/kiln/last-run.json"), "{}").unwrap();
    assert_eq!(
        tree_hash(&root),
        before,
        "scratch and report paths are hashed"
    );

    let file = "/etc/debian_version";
    let original = mode(&root, file);
    let changed = original ^ 0o020;
    fs::set_permissions(at(&root, file), fs::Permissions::from_mode(changed)).unwrap();
    assert_eq!(mode(&root, file), changed);
    assert_ne!(
        tree_hash(&root),
        before,
        "a mode change left tree_hash unchanged"
    );
    assert_eq!(mode(base_root(), file), original, "the base root changed");

    fs::set_permissions(at(&root, file), fs::Permissions::from_mode(original)).unwrap();
    assert_eq!(tree_hash(&root), before);
}

#[test]
fn repo_builder_writes_the_policy_layout() {
    let repo = Repo::new()
        .role("web", "run_list = [\"recipe[motd]\"]\n")
        .recipe("motd", "default", "[[resource]]\nfile = \"/etc/motd\"\n")
        .template("motd", "motd.hbs", "{{node.fqdn}}\n")
        .cookbook_file("motd", "logo.bin", [0u8, 1, 2]);
    let dir = repo.path();
    assert_eq!(
        fs::read_to_string(dir.join("whitelist.toml")).unwrap(),
        "[packages]\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("cookbooks/motd/metadata.toml")).unwrap(),
        "name = \"motd\"\nversion = \"0.1.0\"\n"
    );
    assert!(dir.join("roles/web.toml").is_file());
    assert!(dir.join("cookbooks/motd/recipes/default.toml").is_file());
    assert!(dir.join("cookbooks/motd/templates/motd.hbs").is_file());
    assert_eq!(
        fs::read(dir.join("cookbooks/motd/files/logo.bin")).unwrap(),
        [0, 1, 2]
    );

    // Explicit metadata is not overwritten by a later recipe.
    let repo = Repo::new()
        .metadata("app", "name = \"app\"\nversion = \"2.0.0\"\n")
        .recipe("app", "default", "")
        .whitelist("[packages]\nmemcached = \"1.6.18-1\"\n");
    assert!(
        fs::read_to_string(repo.path().join("cookbooks/app/metadata.toml"))
            .unwrap()
            .contains("2.0.0")
    );
    assert!(
        fs::read_to_string(repo.path().join("whitelist.toml"))
            .unwrap()
            .contains("memcached")
    );
}

#[test]
#[should_panic(expected = "--- stdout ---\nthe output\n")]
fn outcome_assertions_show_the_output() {
    Outcome {
        command: "kiln check".into(),
        status: 1,
        stdout: "the output\n".into(),
        stderr: String::new(),
    }
    .failure()
    .code(1)
    .stdout_contains("output")
    .success();
}

/// A page server for the browser test, on 127.0.0.1: `/` a form that posts
/// `who` to `/done`, which greets the posted value; `/alert` a script that
/// opens an alert; `/private` a 401 with a login page, `/denied` one without
/// a body; `/old` a redirect to `/`. One thread per connection, since
/// Chromium may hold a preconnected socket idle while it asks on another.
/// Stopped when dropped.
struct PageServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    fn start() -> PageServer {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    std::thread::spawn(move || PageServer::answer(conn));
                }
            }
        });
        PageServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn answer(mut conn: std::net::TcpStream) {
        use std::io::{BufRead, BufReader, Read, Write};
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) if header.trim().is_empty() => break,
                Ok(_) => {}
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let page = |title: &str, body: &str| {
            format!(
                "<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>"
            )
        };
        let mut words = request.split_whitespace();
        let (status, extra, html) = match (words.next(), words.next()) {
            (Some("GET"), Some("/")) => (
                "200 OK",
                "",
                page(
                    "form",
                    "<h1>Sign in</h1><form method=post action=/done>\
                     <input id=who name=who><button id=go type=submit>Go</button></form>",
                ),
            ),
            (Some("POST"), Some("/done")) => {
                let who = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "who")
                    .map(|(_, v)| v.replace('&', "&amp;").replace('<', "&lt;"))
                    .unwrap_or_default();
                ("200 OK", "", page("done", &format!("<p>hello, {who}</p>")))
            }
            (Some("GET"), Some("/alert")) => (
                "200 OK",
                "",
                page("alert", "<p>script</p><script>alert(1)</script>"),
            ),
            (Some("GET"), Some("/private")) => {
                ("401 Unauthorized", "", page("login", "<p>log in first</p>"))
            }
            (Some("GET"), Some("/denied")) => ("401 Unauthorized", "", String::new()),
            (Some("GET"), Some("/old")) => ("302 Found", "Location: /\r\n", String::new()),
            _ => ("404 Not Found", "", String::new()),
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\n{extra}Content-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{html}",
            html.len()
        );
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_headless_browser_opens_a_loopback_page_reads_it_and_saves_a_screenshot() {
    need!(Chromium);
    let started = std::time::Instant::now();
    let server = PageServer::start();
    let mut browser = Browser::start();
    let profile = browser.profile().to_path_buf();

    browser.open(&server.url("/"));
    assert_eq!(browser.status(), 200);
    assert!(
        browser.dom().contains("<input id=\"who\""),
        "{}",
        browser.dom()
    );
    assert!(browser.text().contains("Sign in"), "{}", browser.text());

    browser.submit_form(&[("#who", "kiln <tester>")], "#go");
    assert_eq!(browser.eval("location.pathname"), "/done");
    assert_eq!(browser.text(), "hello, kiln <tester>");

    // The whole page, past the window's 900 pixels.
    browser.eval("document.body.style.height = '2000px'");
    let shot = browser.screenshot("harness-browser");
    let png = fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        shot.display()
    );
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    // IHDR: width, then height.
    assert_eq!(size(16), 1280, "the screenshot's width");
    assert!(size(20) > 2000, "the screenshot's height: {}", size(20));

    // A 401 and a redirect load as pages, as a login wall will.
    browser.open(&server.url("/private"));
    assert_eq!(browser.status(), 401);
    assert_eq!(browser.text(), "log in first");
    browser.open(&server.url("/denied"));
    assert!(
        browser.text().contains("HTTP ERROR 401"),
        "{}",
        browser.text()
    );
    browser.open(&server.url("/old"));
    assert_eq!(browser.eval("location.pathname"), "/");
    assert!(browser.text().contains("Sign in"));

    // An alert is seen (and dismissed): the proof an injected script ran.
    assert!(!browser.dialog_opened());
    browser.open(&server.url("/alert"));
    assert!(browser.dialog_opened());
    assert_eq!(browser.dialogs(), ["1"]);
    assert_eq!(browser.text(), "script");

    // Nothing outside loopback is reached, by name or by address: both go
    // to a proxy where nothing listens.
    for url in ["http://deb.debian.org/", "http://192.0.2.1/"] {
        assert_eq!(
            browser.try_open(url),
            Err("net::ERR_PROXY_CONNECTION_FAILED".into()),
            "{url}"
        );
    }

    drop(browser);
    let left = Command::new("pgrep")
        .arg("-af")
        .arg(&profile)
        .output()
        .expect("running pgrep");
    assert!(
        left.stdout.is_empty(),
        "Chromium outlived its Browser:\n{}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(
        !profile.exists(),
        "{} survived its Browser",
        profile.display()
    );
    eprintln!("browser test: {:.1} s", started.elapsed().as_secs_f64());
}
