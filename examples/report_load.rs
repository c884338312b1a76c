//! The load of `bench/report-store` (a program, not a test): a synthetic
//! fleet that reports to a running `kiln server` the way hosts do, then
//! the read queries timed, then the database's size per run.
//!
//!   report_load inventory DIR HOSTS
//!       writes DIR/inventory.toml and DIR/known_hosts for HOSTS hosts;
//!   report_load run URL TOKEN_FILE DATABASE HOSTS DAYS INTERVAL_MINS QUERIES
//!       sends DAYS of runs of each host, one every INTERVAL_MINS, ending
//!       now, with 64 senders; then times each read QUERIES times; then
//!       reads the size of DATABASE (the server's --database). Prints one
//!       `metric<TAB>value` line per figure.
//!
//! Each host's ed25519 key comes from a seed derived from its number, so
//! both commands make the same keys without writing them. Reports are
//! signed with `record::sign` and sent with `client::post_report`, as a
//! host does (a connection per report). Signing happens before the
//! sending is timed, a batch of time slots at a time so that memory stays
//! bounded, and is reported apart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln::engine::{ResourceReport, Status};
use kiln::fingerprint::{Fingerprint, Part};
use kiln::server::client::{Reader, post_report};
use kiln::store::record;
use kiln::store::{Envelope, ManagedPackage, RunRecord};
use sha2::{Digest as _, Sha256};
use ssh_key::private::Ed25519Keypair;
use ssh_key::{LineEnding, PrivateKey};

const SENDERS: usize = 64;
/// Reports signed and held at once, at most: a few kB each.
const BATCH: usize = 20_000;
const ROLES: [&str; 3] = ["web", "db", "cache"];
const PACKAGE: &str = "php8.2-common";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> Result<u64> {
        let a = args.get(i).ok_or("too few arguments (see the header)")?;
        Ok(a.parse().map_err(|e| format!("{a}: {e}"))?)
    };
    match args.first().map(String::as_str) {
        Some("inventory") if args.len() == 3 => inventory(Path::new(&args[1]), num(2)? as usize),
        Some("run") if args.len() == 8 => run(&Load {
            url: args[1].clone(),
            token: std::fs::read_to_string(&args[2])?.trim().to_string(),
            database: args[3].clone(),
            hosts: num(4)? as usize,
            days: num(5)?,
            interval: num(6)? * 60,
            queries: num(7)? as usize,
        }),
        _ => Err("usage: report_load inventory DIR HOSTS | run URL TOKEN_FILE DATABASE HOSTS DAYS INTERVAL_MINS QUERIES".into()),
    }
}

/// One synthetic host: what stays the same from run to run.
struct Host {
    fqdn: String,
    role: &'static str,
    release: &'static str,
    key: String,
    packages: Vec<ManagedPackage>,
    fingerprint: Fingerprint,
    /// Its runs stop this long before now (a few hosts went silent).
    silent_for: u64,
    /// Where in the interval its agent wakes up.
    phase: u64,
}

fn fqdn(i: usize) -> String {
    format!("{}{i:05}.bench.kiln.test", ROLES[i % ROLES.len()])
}

fn key(i: usize) -> PrivateKey {
    let seed: [u8; 32] = Sha256::digest(format!("kiln bench host {i}").as_bytes()).into();
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

fn inventory(dir: &Path, hosts: usize) -> Result<()> {
    let mut inv = String::from("known_hosts = \"known_hosts\"\n");
    let mut known = String::new();
    for i in 0..hosts {
        let f = fqdn(i);
        inv.push_str(&format!(
            "[hosts.\"{f}\"]\naddress = \"127.{}.{}.{}\"\nroles = [\"{}\"]\n",
            1 + i / 65536,
            (i / 256) % 256,
            i % 256,
            ROLES[i % ROLES.len()]
        ));
        known.push_str(&format!("{f} {}\n", key(i).public_key().to_openssh()?));
    }
    std::fs::write(dir.join("known_hosts"), known)?;
    std::fs::write(dir.join("inventory.toml"), inv)?;
    Ok(())
}

/// The minority's version of [`PACKAGE`] (one web host in 20).
fn php_version(i: usize) -> &'static str {
    if i.is_multiple_of(60) {
        "8.2.20-1~deb12u1"
    } else {
        "8.2.26-1~deb12u1"
    }
}

fn host(i: usize, interval: u64) -> Result<Host> {
    let role = ROLES[i % ROLES.len()];
    let release = if i % 4 == 3 { "trixie" } else { "bookworm" };
    let v = |base: &str| format!("{base}{}", if release == "trixie" { "+t1" } else { "" });
    let mut packages: Vec<ManagedPackage> = [
        "openssh-server",
        "chrony",
        "rsyslog",
        "unattended-upgrades",
        "ca-certificates",
        "curl",
        "sudo",
        "vim-tiny",
        "less",
        "logrotate",
        "prometheus-node-exporter",
        "apt-transport-https",
        "gnupg",
        "cron",
    ]
    .iter()
    .chain(match role {
        "web" => &[
            "nginx",
            PACKAGE,
            "php8.2-fpm",
            "php8.2-cli",
            "php8.2-mysql",
            "certbot",
        ],
        "db" => &[
            "mariadb-server",
            "mariadb-client",
            "mariadb-backup",
            "xtrabackup",
            "sysstat",
            "lvm2",
        ],
        _ => &[
            "redis-server",
            "redis-tools",
            "memcached",
            "sysstat",
            "tuned",
            "numactl",
        ],
    })
    .enumerate()
    .map(|(n, name)| ManagedPackage {
        name: name.to_string(),
        version: if *name == PACKAGE {
            php_version(i).to_string()
        } else {
            v(&format!("{}.{}-{}", 1 + n % 5, n % 10, 1 + n % 3))
        },
        held: name.starts_with("mariadb-server") || name.starts_with("redis-server"),
    })
    .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let mut parts: Vec<Part> = packages
        .iter()
        .map(|p| Part {
            resource: format!("package[{}]", p.name),
            part: format!("version={} held={}", p.version, p.held),
        })
        .collect();
    for f in [
        "/etc/motd",
        "/etc/ssh/sshd_config",
        "/etc/chrony/chrony.conf",
        "/etc/rsyslog.conf",
    ]
    .into_iter()
    .chain(match role {
        "web" => ["/etc/nginx/nginx.conf", "/etc/php/8.2/fpm/php.ini"],
        "db" => ["/etc/mysql/my.cnf", "/etc/mysql/conf.d/kiln.cnf"],
        _ => ["/etc/redis/redis.conf", "/etc/memcached.conf"],
    }) {
        // One host in 97 has an sshd_config of its own: drift.
        let content = if f == "/etc/ssh/sshd_config" && i % 97 == 5 {
            format!("{f} edited by hand on {i}")
        } else {
            format!("{f} {role} {release}")
        };
        parts.push(Part {
            resource: format!("file[{f}]"),
            part: format!(
                "sha256={} owner=root group=root mode=0644",
                hex::encode(Sha256::digest(content.as_bytes()))
            ),
        });
    }
    let service = match role {
        "web" => "nginx",
        "db" => "mariadb",
        _ => "redis-server",
    };
    for s in ["ssh", "chrony", "cron", service] {
        parts.push(Part {
            resource: format!("service[{s}]"),
            part: "enabled=true running=true".into(),
        });
    }
    parts.sort_by_key(Part::line);
    Ok(Host {
        fqdn: fqdn(i),
        role,
        release,
        key: key(i).to_openssh(LineEnding::LF)?.to_string(),
        packages,
        fingerprint: Fingerprint {
            fingerprint: kiln::fingerprint::hash(&parts),
            parts,
            substitutions: Vec::new(),
        },
        // One host in 50 stopped reporting three hours ago: stale.
        silent_for: if i % 50 == 7 { 3 * 3600 } else { 0 },
        phase: (i as u64 * 7919) % interval,
    })
}

/// The run of `host` started at `at` (its `n`th), signed.
fn signed(host: &Host, at: u64, n: u64, interval: u64) -> Result<Envelope> {
    let resource = |name: &str, origin: &str, status: Status, elapsed_ms: f64| {
        let mut r = ResourceReport::default();
        r.resource = name.to_string();
        r.origin = format!("{}::{origin}", host.role);
        r.status = status;
        r.elapsed_ms = elapsed_ms;
        r
    };
    let mut resources: Vec<ResourceReport> = host
        .fingerprint
        .parts
        .iter()
        .map(|p| resource(&p.resource, "default", Status::UpToDate, 1.5))
        .collect();
    // A few changes per run: the app's state file and its reload, and now
    // and then a failure.
    let failed = n % 200 == 13;
    let mut state = resource("file[/var/lib/app/state.json]", "app", Status::Updated, 4.2);
    state.actions = vec!["create".into()];
    state.changes = vec![format!("content: sha256 {:016x} -> {:016x}", n, n + 1)];
    state.diff = Some(format!("-generation = {n}\n+generation = {}\n", n + 1));
    resources.push(state);
    let status = if failed {
        Status::Failed
    } else {
        Status::Updated
    };
    let mut reload = resource("execute[reload app]", "app", status, 120.0);
    reload.actions = vec!["run".into()];
    reload.error = failed.then(|| "exit status 1: app reload timed out".into());
    reload.note = Some("notified by file[/var/lib/app/state.json]".into());
    resources.push(reload);
    let report = kiln::engine::Report {
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        started_at: at,
        elapsed_ms: 900.0 + (n % 17) as f64 * 31.0,
        target: "/".into(),
        fqdn: host.fqdn.clone(),
        roles: vec![host.role.into()],
        run_list: vec![format!("role[{}]", host.role)],
        managed: Some(
            host.fingerprint
                .parts
                .iter()
                .map(|p| p.resource.clone())
                .collect(),
        ),
        total: resources.len(),
        updated: if failed { 1 } else { 2 },
        failed: usize::from(failed),
        success: !failed,
        resources,
        ..Default::default()
    };
    let mut run = RunRecord::new(report, host.release.into());
    run.interval_secs = Some(interval);
    run.fingerprint = Some(host.fingerprint.clone());
    run.packages = host.packages.clone();
    let payload = serde_json::to_string(&run)?;
    Ok(record::sign(&payload, &host.key, "bench host key")?)
}

struct Load {
    url: String,
    token: String,
    database: String,
    hosts: usize,
    days: u64,
    interval: u64,
    queries: usize,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `q` quantile of sorted `v`, in ms.
fn quantile(v: &[Duration], q: f64) -> f64 {
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn run(load: &Load) -> Result<()> {
    let now = unix_now();
    // What the store held before (PostgreSQL's catalog alone is ~7 MB, and
    // bench/report-store-filled fills it first) is left out of the size
    // per run sent.
    let (empty, runs_before) = size(&load.database)?;
    let t0 = Instant::now();
    let hosts: Vec<Host> = (0..load.hosts)
        .map(|i| host(i, load.interval))
        .collect::<Result<_>>()?;
    let setup = t0.elapsed();
    let slots = load.days * 86_400 / load.interval;
    let start = now - slots * load.interval;
    let per_batch = (BATCH / load.hosts).max(1) as u64;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (mut signing, mut sending) = (Duration::ZERO, Duration::ZERO);
    let mut latencies: Vec<Duration> = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut slot = 0;
    while slot < slots {
        let end = (slot + per_batch).min(slots);
        // Each sender's queue: its hosts (host i goes to sender i % 64),
        // their runs in time order.
        let t = Instant::now();
        let queues: Vec<Vec<Envelope>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..cores)
                .map(|c| {
                    let hosts = &hosts;
                    s.spawn(move || -> Result<Vec<(usize, Envelope)>> {
                        let mut out = Vec::new();
                        for k in slot..end {
                            for (i, h) in hosts.iter().enumerate().skip(c).step_by(cores) {
                                let at = start + k * load.interval + h.phase;
                                if at + h.silent_for > now {
                                    continue;
                                }
                                out.push((i, signed(h, at, k, load.interval)?));
                            }
                        }
                        Ok(out)
                    })
                })
                .collect();
            let mut queues = vec![Vec::new(); SENDERS];
            for w in workers {
                for (i, env) in w.join().expect("a signing thread panicked")? {
                    queues[i % SENDERS].push(env);
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(queues)
        })?;
        signing += t.elapsed();
        let t = Instant::now();
        let results: Vec<(Vec<Duration>, Vec<String>)> = std::thread::scope(|s| {
            let senders: Vec<_> = queues
                .into_iter()
                .map(|q| {
                    s.spawn(move || {
                        let (mut took, mut errors) = (Vec::new(), Vec::new());
                        for env in q {
                            let t = Instant::now();
                            match post_report(&load.url, &env) {
                                Ok(()) => took.push(t.elapsed()),
                                Err(e) => errors.push(e.to_string()),
                            }
                        }
                        (took, errors)
                    })
                })
                .collect();
            senders
                .into_iter()
                .map(|s| s.join().expect("a sender panicked"))
                .collect()
        });
        sending += t.elapsed();
        for (took, errors) in results {
            latencies.extend(took);
            for e in errors {
                *failures.entry(e).or_default() += 1;
            }
        }
        slot = end;
    }
    for (e, n) in &failures {
        eprintln!("report_load: {n} reports refused or lost: {e}");
    }
    let sent = latencies.len();
    latencies.sort();
    let out = |k: &str, v: String| println!("{k}\t{v}");
    out("hosts", load.hosts.to_string());
    out("runs sent", sent.to_string());
    out("runs failed", failures.values().sum::<usize>().to_string());
    out(
        "setup (keys, hosts), s",
        format!("{:.1}", setup.as_secs_f64()),
    );
    out(
        "signing, reports/s (1 thread per core)",
        format!("{:.0}", sent as f64 / signing.as_secs_f64()),
    );
    out(
        "ingest, reports/s (64 senders)",
        format!("{:.0}", sent as f64 / sending.as_secs_f64()),
    );
    out(
        "ingest POST p50, ms",
        format!("{:.1}", quantile(&latencies, 0.5)),
    );
    out(
        "ingest POST p99, ms",
        format!("{:.1}", quantile(&latencies, 0.99)),
    );

    let reader = Reader {
        base: load.url.clone(),
        token: load.token.clone(),
    };
    let minority = php_version(0).to_string();
    let since = (now - 86_400).to_string();
    type Query = (&'static str, String, Vec<(&'static str, String)>);
    let queries: Vec<Query> = vec![
        ("hosts (fleet status)", "/api/v1/hosts".into(), vec![]),
        (
            "hosts?stale=1",
            "/api/v1/hosts".into(),
            vec![("stale", "1".into())],
        ),
        (
            "packages/NAME",
            format!("/api/v1/packages/{PACKAGE}"),
            vec![],
        ),
        (
            "packages/NAME?version=V",
            format!("/api/v1/packages/{PACKAGE}"),
            vec![("version", minority)],
        ),
        (
            "hosts/FQDN/runs?since=24h",
            String::new(),
            vec![("since", since)],
        ),
        ("drift", "/api/v1/drift".into(), vec![]),
        (
            "drift?since=0 (fleet status)",
            "/api/v1/drift".into(),
            vec![("since", "0".into())],
        ),
    ];
    for (label, path, query) in &queries {
        let mut took = Vec::new();
        let mut rows = 0;
        // Three rounds unmeasured first: caches warm, as on a server
        // that has been up.
        for n in 0..load.queries + 3 {
            let path = if path.is_empty() {
                format!("/api/v1/hosts/{}/runs", fqdn(n * 7919 % load.hosts))
            } else {
                path.clone()
            };
            let t = Instant::now();
            let v: serde_json::Value = reader.get(&path, query)?;
            if n >= 3 {
                took.push(t.elapsed());
            }
            rows = v.as_array().map_or(0, Vec::len);
        }
        took.sort();
        out(
            &format!("{label} p50 / p99, ms ({rows} rows)"),
            format!("{:.1} / {:.1}", quantile(&took, 0.5), quantile(&took, 0.99)),
        );
    }

    // The dashboard's pages: time to first byte (the server renders a
    // page whole, then sends it) and the whole page.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let pages = [
        ("dashboard /fleet", "/fleet".to_string()),
        ("dashboard /host", String::new()),
        ("dashboard /rollouts", "/rollouts".into()),
        ("dashboard /drift", "/drift".into()),
    ];
    for (label, page) in &pages {
        let (mut first, mut whole, mut size) = (Vec::new(), Vec::new(), 0);
        for n in 0..load.queries + 3 {
            let page = if page.is_empty() {
                format!("/host?name={}", fqdn(n * 7919 % load.hosts))
            } else {
                page.clone()
            };
            let t = Instant::now();
            let mut resp = agent
                .get(&format!("{}{page}", load.url))
                .header("Authorization", &format!("Bearer {}", load.token))
                .call()?;
            let ttfb = t.elapsed();
            if resp.status() != 200 {
                return Err(format!("{page}: HTTP {}", resp.status()).into());
            }
            size = resp.body_mut().read_to_vec()?.len();
            if n >= 3 {
                first.push(ttfb);
                whole.push(t.elapsed());
            }
        }
        first.sort();
        whole.sort();
        out(
            &format!("{label} first byte p50 / p99, ms ({size} bytes)"),
            format!(
                "{:.1} / {:.1}",
                quantile(&first, 0.5),
                quantile(&first, 0.99)
            ),
        );
        out(
            &format!("{label} whole page p50 / p99, ms"),
            format!(
                "{:.1} / {:.1}",
                quantile(&whole, 0.5),
                quantile(&whole, 0.99)
            ),
        );
    }

    let (bytes, runs) = size(&load.database)?;
    out("runs stored", runs.to_string());
    out("database, MB", format!("{:.1}", bytes as f64 / 1e6));
    out(
        "database per run sent (growth / runs sent), bytes",
        format!(
            "{:.0}",
            bytes.saturating_sub(empty) as f64 / runs.saturating_sub(runs_before).max(1) as f64
        ),
    );
    out(
        "database per run stored (size / runs), bytes",
        format!("{:.0}", bytes as f64 / runs.max(1) as f64),
    );
    Ok(())
}

/// The database's size in bytes and the runs it holds.
fn size(database: &str) -> Result<(u64, u64)> {
    const RUNS: &str = "SELECT COUNT(*) FROM runs";
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let mut c = postgres::Client::connect(database, postgres::NoTls)?;
        let bytes: i64 = c
            .query_one("SELECT pg_database_size(current_database())", &[])?
            .get(0);
        let runs: i64 = c.query_one(RUNS, &[])?.get(0);
        Ok((bytes as u64, runs as u64))
    } else {
        // The pages as a reader sees them, the WAL's included.
        let c = rusqlite::Connection::open_with_flags(
            database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let runs: i64 = c.query_row(RUNS, [], |r| r.get(0))?;
        Ok(((pages * page) as u64, runs as u64))
    }
}
