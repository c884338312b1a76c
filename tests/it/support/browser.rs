//! A real browser for the dashboard's tests: Debian's headless Chromium,
//! driven over the DevTools protocol on two pipes
//! (`--remote-debugging-pipe`), so that a test opens kiln server's pages,
//! logs in and reads the DOM as a user's browser does, with the page's own
//! Content-Security-Policy in force. No TCP port and no websocket: commands
//! go to the browser on its fd 3 and its messages come back on its fd 4,
//! each one JSON terminated by a NUL byte.
//!
//! Every wait has a deadline ([`TIMEOUT`]), so a hung browser fails the test
//! instead of hanging it, and dropping a [`Browser`] kills every process of
//! it, so no Chromium outlives its test.

use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long any one wait on the browser may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The browser's fixed window, so that screenshots compare across runs.
const WINDOW: (u32, u32) = (1280, 900);

/// The Chromium program to start: Debian's binary itself, not the
/// `/usr/bin/chromium` launcher, which adds flags of its own from
/// /etc/chromium.d (remote extensions among them); the launcher's `chromium`
/// on PATH elsewhere. `None` when Chromium is not installed.
pub fn chromium_program() -> Option<PathBuf> {
    let debian = Path::new("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    which::which("chromium").ok()
}

/// One headless Chromium with one page, driven synchronously. Every method
/// panics, with what the browser said, when something fails.
pub struct Browser {
    child: Child,
    /// The user-data-dir, HOME and log of this browser; removed on drop,
    /// once every process of the browser is gone.
    profile: TempDir,
    /// Commands to the browser (its fd 3).
    commands: std::io::PipeWriter,
    /// The browser's messages (its fd 4), one JSON value each, read by a
    /// thread; disconnected when the browser has exited.
    messages: Receiver<Value>,
    /// The session of the page this browser drives.
    session: String,
    next_id: u64,
    /// Whether the page fired its load event since the last navigation.
    loaded: bool,
    /// The messages of the JavaScript dialogs (alert, confirm, prompt) the
    /// page opened, each dismissed as it opened.
    dialogs: Vec<String>,
}

impl Browser {
    /// Starts Chromium headless and attaches to its page.
    pub fn start() -> Browser {
        let program = chromium_program()
            .expect("Chromium is not installed; make `need!(Chromium);` the test's first line");
        let profile = tempfile::Builder::new()
            .prefix("kiln-chromium-")
            .tempdir()
            .expect("a temporary directory for Chromium's profile");
        let log = File::create(profile.path().join("chromium.log")).unwrap();
        let home = profile.path().join("home");
        fs::create_dir(&home).unwrap();

        // Both ends close on exec (std::io::pipe), so that no other program
        // a test starts meanwhile holds them; the child dups its two ends
        // to 3 and 4 just before exec.
        let (to_browser, commands) = std::io::pipe().expect("a pipe for commands to Chromium");
        let (messages, from_browser) = std::io::pipe().expect("a pipe for Chromium's messages");
        let (to_browser, from_browser) = (OwnedFd::from(to_browser), OwnedFd::from(from_browser));
        let (child_in, child_out) = (to_browser.as_raw_fd(), from_browser.as_raw_fd());

        let mut command = Command::new(&program);
        command
            .args(flags(profile.path()))
            .arg("about:blank")
            // Nothing of the browser's lands in the real HOME (~/.pki, caches).
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and
        // exec. The ends are first moved to fds above 4, so that neither
        // can be overwritten by the other's dup2; dup2 clears close-on-exec
        // on 3 and 4 only.
        unsafe {
            command.pre_exec(move || {
                let child_in = libc::fcntl(child_in, libc::F_DUPFD_CLOEXEC, 5);
                let child_out = libc::fcntl(child_out, libc::F_DUPFD_CLOEXEC, 5);
                if child_in < 0
                    || child_out < 0
                    || libc::dup2(child_in, 3) < 0
                    || libc::dup2(child_out, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        // The browser's ends are its own now: its exit closes fd 4, which
        // ends the reader below.
        drop((to_browser, from_browser));

        let (send, receive) = mpsc::channel();
        std::thread::Builder::new()
            .name("chromium-messages".into())
            .spawn(move || {
                let mut reader = BufReader::new(messages);
                let mut message = Vec::new();
                loop {
                    message.clear();
                    match reader.read_until(0, &mut message) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if message.last() == Some(&0) {
                        message.pop();
                    }
                    let value = serde_json::from_slice(&message).unwrap_or_else(|e| {
                        json!({"unparsed": format!("{e}: {}", String::from_utf8_lossy(&message))})
                    });
                    if send.send(value).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread to read Chromium's messages");

        let mut browser = Browser {
            child,
            profile,
            commands,
            messages: receive,
            session: String::new(),
            next_id: 0,
            loaded: false,
            dialogs: Vec::new(),
        };
        // A page of our own, attached before anything is loaded in it; the
        // window the command line opens is left alone.
        let page =
            browser.call_browser("Target.createTarget", json!({"url": "about:blank"}))["targetId"]
                .clone();
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.attachToTarget answered no sessionId: {attached}"))
            .to_string();
        // Load events and JavaScript dialogs. Page.setBypassCSP stays off:
        // tests see the page's own Content-Security-Policy at work.
        browser.call("Page.enable", json!({}));
        browser
    }

    /// The browser's profile directory (`--user-data-dir`, and HOME): it is
    /// in the command line of every process of this browser.
    pub fn profile(&self) -> &Path {
        self.profile.path()
    }

    /// Opens `url` and waits for its load event. An HTTP error (a 401 login
    /// page) or a redirect loads like any other page; a network error
    /// (nothing listening, a host outside loopback) panics.
    pub fn open(&mut self, url: &str) {
        if let Err(error) = self.try_open(url) {
            panic!("opening {url}: {error}{}", self.log_tail());
        }
    }

    /// [`Browser::open`], with a network error as `Err` (Chromium's
    /// `net::ERR_…` name) instead of a panic.
    pub fn try_open(&mut self, url: &str) -> Result<(), String> {
        self.loaded = false;
        let navigated = self.call("Page.navigate", json!({"url": url}));
        match navigated["errorText"].as_str() {
            // An HTTP error status without a body: Chromium's error page
            // loads, as a user would see it.
            None | Some("net::ERR_HTTP_RESPONSE_CODE_FAILURE") => {}
            Some(error) => return Err(error.to_string()),
        }
        // A navigation within the document (a #fragment) loads nothing.
        if navigated["loaderId"].is_string() {
            self.wait_for_load(&format!("the load of {url}"));
        }
        Ok(())
    }

    /// The HTTP status of the current page's document (200, 401, …): the
    /// status of the last response, after redirects.
    pub fn status(&mut self) -> u16 {
        let status =
            self.eval("performance.getEntriesByType('navigation')[0]?.responseStatus ?? 0");
        status.as_u64().unwrap_or(0) as u16
    }

    /// The value of the JavaScript expression `js` in the page (a promise is
    /// awaited). A thrown exception panics with its message.
    pub fn eval(&mut self, js: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            let message = exception["exception"]["description"]
                .as_str()
                .or(exception["text"].as_str())
                .unwrap_or("(no message)");
            panic!("JavaScript threw in the page: {message}\n--- script ---\n{js}\n--- end ---");
        }
        result["result"]["value"].clone()
    }

    /// The page's HTML as the browser holds it now
    /// (`document.documentElement.outerHTML`).
    pub fn dom(&mut self) -> String {
        let html = self.eval("document.documentElement.outerHTML");
        html.as_str().unwrap_or_default().to_string()
    }

    /// The page's text as a user reads it (`document.body.innerText`).
    pub fn text(&mut self) -> String {
        let text = self.eval("document.body ? document.body.innerText : ''");
        text.as_str().unwrap_or_default().to_string()
    }

    /// Sets each input that a CSS selector matches to its value, clicks the
    /// element `submit` matches, and waits for the page that the submission
    /// loads.
    pub fn submit_form(&mut self, fields: &[(&str, &str)], submit: &str) {
        let fields = serde_json::to_string(fields).unwrap();
        let button = serde_json::to_string(submit).unwrap();
        let js = format!(
            "(() => {{
                for (const [selector, value] of {fields}) {{
                    const input = document.querySelector(selector);
                    if (!input) throw new Error(`no element matches ${{selector}}`);
                    input.focus();
                    input.value = value;
                    input.dispatchEvent(new Event('input', {{bubbles: true}}));
                    input.dispatchEvent(new Event('change', {{bubbles: true}}));
                }}
                const button = document.querySelector({button});
                if (!button) throw new Error(`no element matches ${{{button}}}`);
                button.click();
            }})()"
        );
        self.loaded = false;
        self.eval(&js);
        self.wait_for_load(&format!("the page loaded by clicking {submit}"));
    }

    /// Whether the page opened a JavaScript dialog (`alert(1)`, the usual
    /// proof that an injected script ran) since the browser started.
    pub fn dialog_opened(&self) -> bool {
        !self.dialogs.is_empty()
    }

    /// The messages of the dialogs the page opened, oldest first.
    pub fn dialogs(&self) -> &[String] {
        &self.dialogs
    }

    /// A PNG of the whole page, beyond the window, written to
    /// `target/dashboard-screenshots/NAME.png`; returns its path.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty() && !name.contains('/'),
            "a screenshot's name is a file name without .png, got {name:?}"
        );
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = |content: &str, viewport: &str| {
            let content = metrics["cssContentSize"][content].as_f64().unwrap_or(0.0);
            let viewport = metrics["cssLayoutViewport"][viewport]
                .as_f64()
                .unwrap_or(0.0);
            content.max(viewport).ceil()
        };
        let (width, height) = (size("width", "clientWidth"), size("height", "clientHeight"));
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("Page.captureScreenshot's data is not base64: {e}"));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// A command to the page's session; its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.command(Some(&session), method, params)
    }

    /// A command to the browser itself (the Target domain); its result.
    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.command(None, method, params)
    }

    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.send(session, method, params);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let message = self.receive(deadline, &format!("Chromium's answer to {method}"));
            if message["id"] != id {
                continue;
            }
            if let Some(error) = message.get("error") {
                panic!("Chromium refused {method}: {error}");
            }
            return message["result"].clone();
        }
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut message = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("sending {method} to Chromium: {e}{}", self.log_tail()));
        self.next_id
    }

    fn wait_for_load(&mut self, what: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.loaded {
            self.receive(deadline, what);
        }
    }

    /// The browser's next message, after the events it carries are dealt
    /// with: a load noted, a dialog dismissed (else the page would hang on
    /// it), a crash turned into a panic.
    fn receive(&mut self, deadline: Instant, what: &str) -> Value {
        let wait = deadline.saturating_duration_since(Instant::now());
        let message = match self.messages.recv_timeout(wait) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => panic!(
                "timed out after {} s waiting for {what}{}",
                TIMEOUT.as_secs(),
                self.log_tail()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "Chromium exited while the test waited for {what}{}",
                    self.log_tail()
                )
            }
        };
        match message["method"].as_str() {
            Some("Page.loadEventFired") => self.loaded = true,
            Some("Page.javascriptDialogOpening") => {
                let text = message["params"]["message"].as_str().unwrap_or_default();
                self.dialogs.push(text.to_string());
                let session = self.session.clone();
                // The answer is skipped like any other unawaited id.
                self.send(
                    Some(&session),
                    "Page.handleJavaScriptDialog",
                    json!({"accept": false}),
                );
            }
            Some("Inspector.targetCrashed") => {
                panic!(
                    "the page crashed while the test waited for {what}{}",
                    self.log_tail()
                )
            }
            Some("Target.detachedFromTarget") => {
                panic!(
                    "the page went away while the test waited for {what}{}",
                    self.log_tail()
                )
            }
            _ => {}
        }
        if let Some(unparsed) = message.get("unparsed") {
            panic!("Chromium sent a message that is no JSON: {unparsed}");
        }
        message
    }

    /// The end of Chromium's own output, for a failure's message.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default();
        let start = log.len().saturating_sub(3000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "\n--- chromium's output (end) ---\n{}\n--- end ---",
            &log[start..]
        )
    }
}

impl Drop for Browser {
    /// Kills the browser's whole process group (its zygotes, renderers and
    /// utility processes are in it), and any process that names the
    /// profile: Chromium's crashpad handler starts in a session of its own,
    /// with its database below the profile's HOME. Waits until none of them
    /// runs any more, before the profile directory goes. (The orphans' exit
    /// statuses are init's to reap, which may take it a moment.)
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: the process group this browser started.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let running = running(group, self.profile.path());
            if running.is_empty() {
                return;
            }
            for &pid in &running {
                // SAFETY: a process of this browser's group, or one whose
                // command line names its own temporary profile.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                let _ = writeln!(
                    std::io::stderr(),
                    "kiln tests: Chromium processes {running:?} of {} outlived SIGKILL by 10 s",
                    self.profile.path().display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The processes that still run (zombies aside) in process group `group`
/// or with `profile` in their command line.
fn running(group: libc::pid_t, profile: &Path) -> Vec<libc::pid_t> {
    let needle = profile.as_os_str().as_bytes();
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|pid: &libc::pid_t| {
            // After the command name in parentheses: state, ppid, pgrp.
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
            if fields.first().is_none_or(|&state| state == "Z") {
                return false;
            }
            fields.get(2) == Some(&group.to_string().as_str())
                || fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Chromium's command line, besides the first URL.
fn flags(profile: &Path) -> Vec<String> {
    let (width, height) = WINDOW;
    [
        "--headless",
        // DevTools on fds 3 and 4: no port another process could reach.
        "--remote-debugging-pipe",
        // Tests run as root, where Chromium's sandbox refuses to start.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        // No traffic of the browser's own: updates, sync, field trials,
        // component downloads, crash uploads.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--metrics-recording-only",
        "--disable-breakpad",
        // No keyring (no D-Bus session in tests).
        "--password-store=basic",
        // Loopback only: every request but one to loopback (which Chromium
        // never proxies) goes to a proxy where nothing listens, an address
        // in a URL as much as a name; and for anything that bypasses the
        // proxy, no name but loopback's resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
        "--proxy-server=http://127.0.0.1:9",
        // Screenshots that do not depend on the machine.
        "--hide-scrollbars",
        "--mute-audio",
    ]
    .into_iter()
    .map(str::to_string)
    .chain([
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={width},{height}"),
    ])
    .collect()
}
