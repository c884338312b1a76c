//! The dashboard of `kiln server`: a small fleet of Debian roots converges
//! with `--report-to`, and Debian's Chromium, headless, opens the five
//! pages as a person would (logging in with the form), reads what they
//! show and saves a screenshot of each under `target/dashboard-screenshots/`.
//! A host and a resource whose names hold `<script>` are shown as text and
//! never run; a page without a valid login is a 401 and no data.

use crate::support::apt_repo::AptRepo;
use crate::support::browser::Browser;
use crate::support::postgres::Backend;
use crate::support::report_server::*;
use crate::support::*;

const EVIL_HOST: &str = "<script>alert('host')</script>.kiln.test";
const EVIL_FILE: &str = "/etc/<img src=x onerror=alert('file')>";
const SECRET: &str = "hunter2-not-for-reports";

/// The fleet's policy: web and db hosts install kiln-hello and write a
/// motd (and a sensitive file); `rollout` adds `hello-2`, which names
/// db01 (its canary) and takes every web host to 2.0-1; `broken` makes
/// db hosts run a command that fails.
fn policy(motd: &str, rollout: bool, broken: bool) -> Repo {
    let mut whitelist = String::from("[packages]\nkiln-hello = \"1.0-1\"\n");
    if rollout {
        whitelist.push_str(
            "\n[rollouts.hello-2]\nhosts = [\"db01.kiln.test\"]\nroles = [\"web\"]\n\
             packages = { kiln-hello = \"2.0-1\" }\n",
        );
    }
    let db = if broken {
        r#"run_list = ["recipe[site]", "recipe[broken]"]"#
    } else {
        r#"run_list = ["recipe[site]"]"#
    };
    Repo::new()
        .role("web", r#"run_list = ["recipe[site]"]"#)
        .role("db", db)
        .role("odd", r#"run_list = ["recipe[odd]"]"#)
        .recipe(
            "site",
            "default",
            &format!(
                "[[resource]]\npackage = \"kiln-hello\"\n\n\
                 [[resource]]\nfile = \"/etc/motd\"\ncontent = \"{motd}\\n\"\n\n\
                 [[resource]]\nfile = \"/etc/kiln-secret\"\ncontent = \"{SECRET}\\n\"\nsensitive = true\n"
            ),
        )
        .recipe(
            "broken",
            "default",
            "[[resource]]\nexecute = \"fail on purpose\"\ncommand = \"false\"\n",
        )
        .recipe(
            "odd",
            "default",
            &format!(
                "[[resource]]\nfile = \"{EVIL_FILE}\"\ncontent = \"<script>alert('content')</script>\\n\"\n"
            ),
        )
        .whitelist(&whitelist)
}

/// A test root with a host key, the test apt repository as its source.
fn fleet_root() -> (TestRoot, String) {
    let (root, key) = host_root();
    AptRepo::new()
        .package("kiln-hello", "1.0-1")
        .package("kiln-hello", "2.0-1")
        .install_into(root.path());
    (root, key)
}

/// JavaScript that reads the text of every element `selector` matches.
fn texts(selector: &str) -> String {
    format!(
        "[...document.querySelectorAll({})].map(e => e.textContent.trim())",
        serde_json::to_string(selector).unwrap()
    )
}

fn strings(v: serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_fleet_s_pages_show_in_a_real_browser_what_the_hosts_reported() {
    need!(DebianRoot, Chromium);
    let hosts = [
        ("web01.kiln.test", "web"),
        ("web02.kiln.test", "web"),
        ("web03.kiln.test", "web"),
        ("db01.kiln.test", "db"),
        (EVIL_HOST, "odd"),
    ];
    let roots: Vec<(TestRoot, String)> = hosts.iter().map(|_| fleet_root()).collect();
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<(&str, &str, &str)> = hosts
        .iter()
        .zip(&roots)
        .map(|((f, r), (_, k))| (*f, *r, k.as_str()))
        .collect();
    let inv = inventory(dir.path(), &entries);
    // The server reads the policy as it is now: with the rollout, which
    // only its canary has converged so far.
    let now = policy("hello", true, true);
    let before = policy("hello", false, false);
    let server = Server::start(
        Backend::Sqlite,
        &inv,
        &["--repo", now.path().to_str().unwrap()],
    );
    let url = server.url.clone();
    let root = |i: usize| &roots[i].0;
    converge(root(0), &before, "web01.kiln.test", "web", &url).success();
    converge(root(0), &before, "web01.kiln.test", "web", &url).success();
    converge(root(1), &before, "web02.kiln.test", "web", &url).success();
    // web03 converged an older motd: it drifts from web01 and web02.
    converge(
        root(2),
        &policy("old", false, false),
        "web03.kiln.test",
        "web",
        &url,
    )
    .success();
    converge(
        root(3),
        &policy("hello", true, false),
        "db01.kiln.test",
        "db",
        &url,
    )
    .success();
    converge(root(3), &now, "db01.kiln.test", "db", &url).failure();
    converge(root(4), &now, EVIL_HOST, "odd", &url).success();
    assert_eq!(server.runs_of("web01.kiln.test").len(), 2);

    let mut b = Browser::start();
    // Without a login: the form, and none of the fleet.
    b.open(&format!("{url}/fleet"));
    let text = b.text();
    assert!(text.contains("Log in"), "{text}");
    assert!(!text.contains("web01"), "{text}");
    b.screenshot("login");
    b.submit_form(&[("input[name=token]", TOKEN)], "button[type=submit]");

    // Fleet: every host by name, the counts, and a filter.
    assert_eq!(b.eval("location.pathname"), "/fleet");
    let names = strings(b.eval(&texts("table.hosts a.host")));
    let mut expected: Vec<String> = hosts.iter().map(|(f, _)| f.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "the host names, as text");
    let count = |b: &mut Browser, class: &str| {
        b.eval(&format!(
            "document.querySelector('.count.{class} b').textContent"
        ))
    };
    assert_eq!(count(&mut b, "all"), "5");
    assert_eq!(count(&mut b, "failed"), "1");
    assert_eq!(
        count(&mut b, "changed"),
        "3",
        "web02, web03 and the odd host changed"
    );
    assert_eq!(
        count(&mut b, "ok"),
        "1",
        "web01's second run changed nothing"
    );
    assert_eq!(
        strings(b.eval(&texts(".releases .count b"))),
        ["5"],
        "one release, bookworm"
    );
    let fingerprints = strings(b.eval(&texts("table.hosts td:last-child")));
    assert_eq!(fingerprints.iter().filter(|f| *f == "differs").count(), 1);
    b.screenshot("fleet");
    b.open(&format!("{url}/fleet?role=web&name=web0*"));
    assert_eq!(
        strings(b.eval(&texts("table.hosts a.host"))),
        ["web01.kiln.test", "web02.kiln.test", "web03.kiln.test"]
    );

    // A host: a point per run, the changes with their diff, packages
    // against their pins, and no secret.
    b.open(&format!("{url}/host?name=web01.kiln.test"));
    assert_eq!(
        b.eval("document.querySelectorAll('svg.chart circle.run').length"),
        2
    );
    let changed = strings(b.eval(&texts("ul.changes code.resource")));
    assert!(
        changed.contains(&"file[/etc/motd]".to_string()),
        "{changed:?}"
    );
    assert!(
        changed.contains(&"package[kiln-hello]".to_string()),
        "{changed:?}"
    );
    assert!(
        changed.iter().any(|c| c.contains("sensitive #")),
        "{changed:?}"
    );
    let text = b.text();
    assert!(text.contains("+hello"), "the motd's diff: {text}");
    assert!(!text.contains(SECRET), "{text}");
    let pkg = strings(b.eval(&texts("table.packages tbody td")));
    assert_eq!(pkg[0], "kiln-hello");
    assert_eq!(pkg[1], "1.0-1");
    assert_eq!(pkg[2], "held");
    assert!(pkg[3].starts_with("2.0-1 (rollouts.hello-2)"), "{pkg:?}");
    assert_eq!(pkg[4], "not at its pin");
    b.screenshot("host");

    // Rollouts: the canary first, done; the web hosts left.
    b.open(&format!("{url}/rollouts"));
    assert_eq!(
        b.eval("document.querySelector('[data-rollout=\"hello-2\"] .figure').textContent"),
        "1 of 4 hosts at its versions (25%)"
    );
    let rows = strings(b.eval(&texts("[data-rollout=\"hello-2\"] tbody tr")));
    assert!(
        rows[0].starts_with("db01.kiln.test") && rows[0].contains("canary"),
        "{rows:?}"
    );
    assert_eq!(
        b.eval("document.querySelector('[data-rollout=\"hello-2\"] .tally').textContent"),
        "1 failed 3 left"
    );
    assert_eq!(
        b.eval("document.querySelector('[data-rollout=\"hello-2\"] progress').value"),
        1
    );
    b.screenshot("rollouts");

    // Packages: the versions in the fleet with their host counts.
    b.open(&format!("{url}/packages?name=hello"));
    let versions = strings(b.eval(&texts(
        "[data-package=\"kiln-hello\"] table.versions tbody td",
    )));
    assert_eq!(versions[..2], ["1.0-1", "3"], "{versions:?}");
    assert_eq!(versions[3..5], ["2.0-1", "1"], "{versions:?}");
    let text = b.text();
    assert!(text.contains("Pin: 1.0-1 (every release)"), "{text}");
    assert!(text.contains("hello-2 → 2.0-1"), "{text}");
    b.screenshot("packages");

    // Drift: web03 and the part that differs.
    b.open(&format!("{url}/drift"));
    assert_eq!(
        strings(b.eval(&texts("section.drift h2"))),
        ["web03.kiln.test"]
    );
    assert_eq!(
        strings(b.eval(&texts("section.drift code.resource"))),
        ["file[/etc/motd]"]
    );
    b.screenshot("drift");

    // The hostile names are text: on the fleet page and on their host's.
    b.open(&format!("{url}/host?name={}", urlencode(EVIL_HOST)));
    assert_eq!(
        b.eval("document.querySelector('h1').textContent"),
        EVIL_HOST
    );
    let changed = strings(b.eval(&texts("ul.changes code.resource")));
    assert_eq!(changed, [format!("file[{EVIL_FILE}]")]);
    assert_eq!(b.eval("document.querySelectorAll('script').length"), 0);
    assert!(!b.dialog_opened(), "a script from a report ran");

    // Logging out ends the session.
    b.submit_form(&[], "header form button");
    b.open(&format!("{url}/fleet"));
    assert!(b.text().contains("Log in"));
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// GET `path` with `headers`, no redirect followed: (status, headers, body).
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut rq = agent.get(url);
    for (k, v) in headers {
        rq = rq.header(*k, *v);
    }
    let mut resp = rq.call().unwrap();
    let hs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = resp.status().as_u16();
    (
        status,
        hs,
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// POSTs a login form: (status, Location, Set-Cookie).
fn login(url: &str, form: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let resp = agent
        .post(&format!("{url}/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (resp.status().as_u16(), h("location"), h("set-cookie"))
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> &'a str {
    hs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn pages_need_a_login_and_never_take_the_token_from_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let key = host_key(&dir.path().join("keys"));
    let inv = inventory(dir.path(), &[("web01.kiln.test", "web", &key.public)]);
    let server = Server::start(Backend::Sqlite, &inv, &[]);
    let url = &server.url;
    let token_q = urlencode(TOKEN);
    for page in [
        "/",
        "/fleet",
        "/host?name=web01.kiln.test",
        "/rollouts",
        "/packages",
        "/drift",
    ] {
        let (status, hs, body) = get(&format!("{url}{page}"), &[]);
        assert_eq!(status, 401, "{page}");
        assert!(body.contains("name=\"token\""), "{page}: the login form");
        assert!(!body.contains("<table"), "{page}: no data");
        assert!(header(&hs, "content-security-policy").contains("default-src 'none'"));
        let sep = if page.contains('?') { '&' } else { '?' };
        for key in ["token", "access_token", "bearer"] {
            let (status, _, _) = get(&format!("{url}{page}{sep}{key}={token_q}"), &[]);
            assert_eq!(status, 401, "{page} with the token as {key} in the URL");
        }
        let (status, _, _) = get(
            &format!("{url}{page}"),
            &[("Cookie", "kiln_session=9999999999.00")],
        );
        assert_eq!(status, 401, "{page}, a forged cookie");
    }
    // The stylesheet holds no data and needs no login.
    assert_eq!(get(&format!("{url}/static/kiln.css"), &[]).0, 200);

    // A wrong token: the form again, no cookie.
    let (status, _, cookie) = login(url, "token=not-the-token&next=%2Ffleet");
    assert_eq!((status, cookie.as_str()), (401, ""));
    // The right one: a cookie, and back to where the person was going,
    // only ever on this server.
    let (status, location, cookie) = login(url, &format!("token={token_q}&next=%2Fdrift"));
    assert_eq!((status, location.as_str()), (303, "/drift"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let (_, location, _) = login(url, &format!("token={token_q}&next=%2F%2Fevil.example%2F"));
    assert_eq!(location, "/fleet");
    let session = cookie.split(';').next().unwrap().to_string();
    let (status, hs, body) = get(&format!("{url}/fleet"), &[("Cookie", &session)]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("No host matches"), "{body}");
    assert_eq!(header(&hs, "cache-control"), "no-store");
    // Scripts may send the bearer token instead.
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        get(&format!("{url}/drift"), &[("Authorization", &bearer)]).0,
        200
    );
    // A cookie of another token (a server whose token changed) is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let other = kiln::server::dashboard::session::issue(&[0u8; 32], now);
    let (status, _, _) = get(
        &format!("{url}/fleet"),
        &[("Cookie", &format!("kiln_session={other}"))],
    );
    assert_eq!(status, 401);
}
