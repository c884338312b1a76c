//! `kiln server`: the report store behind an HTTP API and a dashboard.
//! Hosts write their run reports, signed with their ssh host key and
//! checked against the inventory's known_hosts (the trust the fleet
//! already has); tools read with a bearer token, people through the
//! dashboard's pages after logging in with the same token. Plain HTTP on
//! loopback by default, HTTPS with `--tls-cert` and `--tls-key`.

pub mod admit;
pub mod client;
pub mod dashboard;
pub mod tls;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tiny_http::{Header, Method, Request, Response};

use crate::store::{HostQuery, Store};
pub use admit::{Refused, Trust};
pub use tls::TlsFiles;

/// Where the embedded store lives unless `--database` says otherwise.
pub const DEFAULT_DATABASE: &str = "/var/lib/kiln/server/kiln.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8741";
/// A report is a few kB; diffs of large files make it more.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// How often old runs are pruned while the server runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Requests handled at once: signature checks and parsing run side by
/// side, and on PostgreSQL the store's transactions too (see [`Stores`]).
const WORKERS: usize = 4;

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub database: crate::store::Database,
    pub inventory: PathBuf,
    pub token_file: PathBuf,
    pub retention_days: u64,
    pub max_body: usize,
    /// A host with no interval is stale after this long without a report.
    pub stale_after: Duration,
    /// `--tls-cert` and `--tls-key`: HTTPS instead of HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// The policy repository, for the dashboard's pins and rollouts.
    pub repo: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Inventory(crate::error::PolicyError),
    #[error(
        "the token file {path}: {reason}; write a long random token into it (e.g. head -c 32 /dev/urandom | base64)"
    )]
    Token { path: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot take SIGTERM and SIGINT to stop the server: {0}")]
    Signals(std::io::Error),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The store's connections: one for SQLite, which takes one writer at a
/// time anyway, and one per worker for PostgreSQL, whose transactions then
/// commit side by side (and share their disk flushes).
struct Stores {
    all: Vec<Mutex<Box<dyn Store>>>,
    next: AtomicUsize,
}

impl Stores {
    /// A free connection, or the next one in turn when all are busy.
    fn get(&self) -> MutexGuard<'_, Box<dyn Store>> {
        for s in &self.all {
            match s.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.all.len();
        self.all[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Shared {
    store: Stores,
    /// Replaced whole when the inventory changes; checks hold their copy.
    trust: Mutex<Arc<Trust>>,
    token: [u8; 32],
    opts: Options,
    last_prune: Mutex<u64>,
}

/// Runs the server until the process is stopped; `ready` gets the address
/// it listens on (port 0 picks a free one). The store is opened (`open`)
/// only once the token and the inventory read, so that a mistake there
/// leaves no database behind.
pub fn serve(
    opts: Options,
    open: &dyn Fn() -> Result<Box<dyn Store>, crate::store::StoreError>,
    ready: &mut dyn FnMut(SocketAddr),
) -> Result<(), ServerError> {
    let token = read_token(&opts.token_file)?;
    let trust = Trust::load(&opts.inventory)?;
    let tls = opts.tls.as_ref().map(tls::Terminator::load).transpose()?;
    let connections = match opts.database {
        crate::store::Database::Postgres(_) => WORKERS,
        crate::store::Database::Sqlite(_) => 1,
    };
    let stores = (0..connections)
        .map(|_| open().map(Mutex::new))
        .collect::<Result<Vec<_>, _>>()?;
    let listen_error = |e: &dyn std::fmt::Display| ServerError::Listen {
        addr: opts.listen,
        reason: e.to_string(),
    };
    // With TLS, the HTTP server listens on a unix socket in a private
    // directory (kept for as long as the server runs), and only the TLS
    // listener faces the network.
    let mut _private = None;
    let (server, addr) = match tls {
        None => {
            let server = tiny_http::Server::http(opts.listen).map_err(|e| listen_error(&e))?;
            let addr = server.server_addr().to_ip().unwrap_or(opts.listen);
            (server, addr)
        }
        Some(t) => {
            let listener =
                std::net::TcpListener::bind(opts.listen).map_err(|e| listen_error(&e))?;
            let addr = listener.local_addr().map_err(|e| listen_error(&e))?;
            let dir = tempfile::Builder::new()
                .prefix("kiln-server-")
                .tempdir()
                .map_err(|e| listen_error(&e))?;
            let socket = dir.path().join("http.sock");
            let server = tiny_http::Server::http_unix(&socket).map_err(|e| listen_error(&e))?;
            t.accept(listener, socket);
            _private = Some(dir);
            (server, addr)
        }
    };
    let shared = Arc::new(Shared {
        store: Stores {
            all: stores,
            next: AtomicUsize::new(0),
        },
        trust: Mutex::new(Arc::new(trust)),
        token,
        opts,
        last_prune: Mutex::new(0),
    });
    shared.prune_if_due()?;
    let server = Arc::new(server);
    let stopping = stop_on_signal(&server).map_err(ServerError::Signals)?;
    ready(addr);
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (server, shared, stopping) = (server.clone(), shared.clone(), stopping.clone());
            std::thread::spawn(move || {
                loop {
                    match server.recv() {
                        Ok(rq) => shared.handle(rq),
                        Err(_) if stopping.load(Ordering::SeqCst) => break,
                        // A connection that failed to be accepted; the next may not.
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// SIGTERM (a service manager's stop) or SIGINT ends the server as a
/// return from [`serve`] would: the requests already taken are answered,
/// then the workers stop and what `serve` holds is let go, the TLS side's
/// private socket directory included. A second signal exits at once.
fn stop_on_signal(server: &Arc<tiny_http::Server>) -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stopping = Arc::new(AtomicBool::new(false));
    // Registered first, so that each sees the flag as the signal before left it.
    flag::register_conditional_shutdown(SIGINT, 130, stopping.clone())?;
    flag::register_conditional_shutdown(SIGTERM, 143, stopping.clone())?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let (server, flag) = (server.clone(), stopping.clone());
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            flag.store(true, Ordering::SeqCst);
            // One wake-up per worker, queued after the requests already in.
            for _ in 0..WORKERS {
                server.unblock();
            }
        }
    });
    Ok(stopping)
}

fn read_token(path: &std::path::Path) -> Result<[u8; 32], ServerError> {
    let bad = |reason: String| ServerError::Token {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(bad("it holds fewer than 16 characters".into()));
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

fn json_response(status: u16, body: &impl Serialize) -> Response<std::io::Cursor<Vec<u8>>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let header = Header::from_bytes("Content-Type", "application/json").expect("a valid header");
    Response::from_data(bytes)
        .with_status_code(status)
        .with_header(header)
}

fn with_headers(
    mut r: Response<std::io::Cursor<Vec<u8>>>,
    headers: &[(&str, &str)],
) -> Response<std::io::Cursor<Vec<u8>>> {
    for (k, v) in headers {
        if let Ok(h) = Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            r.add_header(h);
        }
    }
    r
}

/// What every page is sent with: nothing may run or load from elsewhere,
/// whatever a value in it holds, and nothing of it is cached or framed.
const PAGE_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "text/html; charset=utf-8"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
];

fn html(status: u16, page: String) -> Response<std::io::Cursor<Vec<u8>>> {
    with_headers(
        Response::from_data(page.into_bytes()).with_status_code(status),
        PAGE_HEADERS,
    )
}

/// A 303 to `to` (a path of this server).
fn redirect(to: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    with_headers(
        Response::from_data(Vec::new()).with_status_code(303),
        &[("Location", to), ("Cache-Control", "no-store")],
    )
}

/// The value of `key` in decoded pairs, empty without one.
fn arg(pairs: &[(String, String)], key: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn error(status: u16, reason: &str, message: String) -> Response<std::io::Cursor<Vec<u8>>> {
    json_response(
        status,
        &ErrorBody {
            error: reason,
            message,
        },
    )
}

impl Shared {
    fn handle(&self, mut rq: Request) {
        let url = rq.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let path = path.to_string();
        let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let response = match (rq.method(), path.as_str()) {
            (Method::Post, "/api/v1/reports") => self.ingest(&mut rq),
            (Method::Get, p) if p.starts_with("/api/v1/") => match self.authorized(&rq) {
                Err(r) => r,
                Ok(()) => self.read(p, &query),
            },
            (Method::Get, "/static/kiln.css") => with_headers(
                Response::from_data(dashboard::CSS.as_bytes().to_vec()),
                &[
                    ("Content-Type", "text/css; charset=utf-8"),
                    ("Cache-Control", "max-age=3600"),
                ],
            ),
            (Method::Get, "/login") => {
                let next = arg(&query, "next");
                html(
                    200,
                    dashboard::html::login(dashboard::session::safe_next(&next), None),
                )
            }
            (Method::Post, "/login") => self.login(&mut rq),
            (Method::Post, "/logout") => with_headers(
                redirect("/login"),
                &[(
                    "Set-Cookie",
                    &dashboard::session::clear_cookie(self.opts.tls.is_some()),
                )],
            ),
            (Method::Get, p) if dashboard::is_page(p) => {
                if self.logged_in(&rq) {
                    self.page(p, &query)
                } else {
                    // Never data: the login form, which brings the person
                    // back here.
                    let next = if url == "/" { "/fleet" } else { url.as_str() };
                    let problem = "Log in with the server's read token to see the fleet.";
                    html(
                        401,
                        dashboard::html::login(dashboard::session::safe_next(next), Some(problem)),
                    )
                }
            }
            _ => error(404, "not_found", format!("no such endpoint: {path}")),
        };
        let _ = rq.respond(response);
    }

    /// A valid session cookie, or the bearer token (for scripts).
    fn logged_in(&self, rq: &Request) -> bool {
        let cookie = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Cookie"))
            .map(|h| h.value.as_str());
        let session = cookie.and_then(|c| dashboard::session::find(c, dashboard::session::COOKIE));
        if session.is_some_and(|c| dashboard::session::valid(&self.token, c, unix_now())) {
            return true;
        }
        self.authorized(rq).is_ok()
    }

    /// The login form's POST: the right token sets the session cookie and
    /// goes on to the page the person asked for.
    fn login(&self, rq: &mut Request) -> Response<std::io::Cursor<Vec<u8>>> {
        let mut body = Vec::new();
        // A token and a path: anything longer is no login.
        if rq.as_reader().take(8192).read_to_end(&mut body).is_err() {
            return html(
                400,
                dashboard::html::login("/fleet", Some("The form could not be read.")),
            );
        }
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let token = arg(&form, "token");
        let next = arg(&form, "next");
        let next = dashboard::session::safe_next(&next);
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        if token.is_empty() || digest != self.token {
            eprintln!("kiln server: a dashboard login with a wrong token");
            return html(
                401,
                dashboard::html::login(next, Some("That is not the server's read token.")),
            );
        }
        let cookie = dashboard::session::issue(&self.token, unix_now());
        with_headers(
            redirect(next),
            &[(
                "Set-Cookie",
                &dashboard::session::set_cookie(&cookie, self.opts.tls.is_some()),
            )],
        )
    }

    fn page(&self, path: &str, query: &[(String, String)]) -> Response<std::io::Cursor<Vec<u8>>> {
        if path == "/" {
            return redirect("/fleet");
        }
        let mut store = self.store.get();
        let mut view = dashboard::View {
            store: store.as_mut(),
            now: unix_now(),
            stale_after: self.opts.stale_after.as_secs(),
            repo: self.opts.repo.as_ref(),
            query,
        };
        match dashboard::render(path, &mut view) {
            Ok(page) => html(200, page),
            Err(e) => {
                if e.status() >= 500 {
                    eprintln!("kiln server: {e}");
                }
                html(e.status(), e.page())
            }
        }
    }

    fn authorized(&self, rq: &Request) -> Result<(), Response<std::io::Cursor<Vec<u8>>>> {
        let given = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
            .map(|t| Sha256::digest(t.trim().as_bytes()));
        // Digests are compared, not tokens: how long a comparison takes
        // then tells nothing about the token.
        match given {
            Some(d) if d.as_slice() == self.token => Ok(()),
            Some(_) => Err(error(
                403,
                "bad_token",
                "the bearer token is not the server's".into(),
            )),
            None => Err(error(
                401,
                "no_token",
                "reads need Authorization: Bearer TOKEN (the server's --token-file)".into(),
            )),
        }
    }

    fn ingest(&self, rq: &mut Request) -> Response<std::io::Cursor<Vec<u8>>> {
        let max = self.opts.max_body;
        let now = unix_now();
        let outcome = match rq.body_length() {
            Some(n) if n > max => Err(Refused::too_large(n, max)),
            _ => {
                let mut body = Vec::new();
                match rq.as_reader().take(max as u64 + 1).read_to_end(&mut body) {
                    Err(e) => Err(Refused::malformed(format!("cannot read the body: {e}"))),
                    Ok(n) if n > max => Err(Refused::too_large(n, max)),
                    Ok(_) => {
                        let trust = {
                            let mut t = self.trust.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(new) = t.refreshed() {
                                *t = Arc::new(new);
                            }
                            t.clone()
                        };
                        let checked = admit::check(&body, &trust);
                        checked.and_then(|run| {
                            let mut store = self.store.get();
                            let received_us = SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .map_or(0, |d| d.as_micros() as u64);
                            admit::keep(&run, store.as_mut(), received_us)
                        })
                    }
                }
            }
        };
        match outcome {
            Ok(run_id) => {
                if let Err(e) = self.prune_if_due() {
                    eprintln!("kiln server: {e}");
                }
                json_response(201, &serde_json::json!({ "stored": run_id }))
            }
            Err(r) => {
                if r.counted {
                    let mut store = self.store.get();
                    if let Err(e) = store.refuse(r.reason, &r.message, now) {
                        eprintln!("kiln server: {e}");
                    }
                }
                eprintln!(
                    "kiln server: refused a report ({}): {}",
                    r.reason, r.message
                );
                error(r.status, r.reason, r.message)
            }
        }
    }

    fn read(&self, path: &str, query: &[(String, String)]) -> Response<std::io::Cursor<Vec<u8>>> {
        let arg = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let flag = |k: &str| arg(k).is_some_and(|v| v == "1" || v == "true");
        let mut store = self.store.get();
        let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
        let answer = match parts.as_slice() {
            ["hosts"] => {
                let q = HostQuery {
                    role: arg("role"),
                    release: arg("release"),
                    failed: flag("failed"),
                    stale: flag("stale"),
                };
                store
                    .hosts(&q, unix_now(), self.opts.stale_after.as_secs())
                    .map(|v| serde_json::to_vec(&v).unwrap_or_default())
            }
            ["packages", name] => store
                .package(name, arg("version").as_deref())
                .map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            ["hosts", fqdn, "runs"] => {
                let since = arg("since").and_then(|s| s.parse().ok()).unwrap_or(0);
                store
                    .runs(fqdn, since)
                    .map(|v| serde_json::to_vec(&v).unwrap_or_default())
            }
            // `since=0`: without the run each host began to differ at.
            ["drift"] => {
                let since = arg("since").is_none_or(|v| v != "0" && v != "false");
                crate::store::drift::drift(store.as_mut(), arg("role").as_deref(), since)
            }
            .map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            ["refusals"] => store
                .refusals()
                .map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            _ => return error(404, "not_found", format!("no such endpoint: {path}")),
        };
        match answer {
            // Written straight to bytes: a fleet's hosts are megabytes,
            // and a tree of values first would double the work.
            Ok(bytes) => with_headers(
                Response::from_data(bytes),
                &[("Content-Type", "application/json")],
            ),
            Err(e) => error(500, "store", e.to_string()),
        }
    }

    /// Prunes when the last pruning is older than [`PRUNE_EVERY`].
    fn prune_if_due(&self) -> Result<(), ServerError> {
        let now = unix_now();
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|p| p.into_inner());
            if now.saturating_sub(*last) < PRUNE_EVERY.as_secs() {
                return Ok(());
            }
            *last = now;
        }
        let cutoff = now.saturating_sub(self.opts.retention_days.saturating_mul(86_400));
        let mut store = self.store.get();
        let gone = store.prune(cutoff)?;
        if gone > 0 {
            eprintln!(
                "kiln server: pruned {gone} runs older than {} days",
                self.opts.retention_days
            );
        }
        Ok(())
    }
}
