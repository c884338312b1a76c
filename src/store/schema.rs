//! The store's one schema, as numbered migrations, and the statements the
//! store runs. Everything here is SQL that SQLite and PostgreSQL both
//! take as it is: BIGINT for integers and flags (0/1), TEXT for strings,
//! DOUBLE PRECISION for times in ms, `$n` parameters numbered in the order
//! they first appear (SQLite numbers `$name` parameters by first
//! appearance; a test checks the order), `ON CONFLICT` for upserts. The
//! tests run every statement on both (tests/it/store.rs). What one backend
//! does on its own stays in its module: PostgreSQL's advisory locks, per
//! host for writes and for its migrations (`pg.rs`), SQLite's
//! IMMEDIATE transactions (`sqlite.rs`); only storage settings that
//! SQLite has no words for are PostgreSQL's here ([`POSTGRES_ONLY`]).
//!
//! Large, repeated parts of a run are kept once: a fingerprint's parts
//! under the fingerprint, a package list under its digest. A fleet whose
//! hosts converge every 30 minutes then adds one narrow row per run.

/// Migration `n` (from 1) brings a database at version `n - 1` to `n`.
/// Append only: a released migration is never edited.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs, the latest state of each host, and refusals.
    "
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        fqdn TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        received_us BIGINT NOT NULL,
        elapsed_ms DOUBLE PRECISION NOT NULL,
        release TEXT NOT NULL,
        roles TEXT NOT NULL,
        success BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        total BIGINT NOT NULL,
        bundle_serial BIGINT,
        kiln_version TEXT NOT NULL,
        fingerprint TEXT,
        package_set TEXT,
        interval_secs BIGINT
    );
    CREATE INDEX runs_by_host ON runs (fqdn, started_at, received_us);
    CREATE INDEX runs_by_time ON runs (started_at);
    CREATE TABLE run_changes (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        resource TEXT NOT NULL,
        status TEXT NOT NULL,
        changes TEXT NOT NULL,
        error TEXT,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE run_checks (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        check_name TEXT NOT NULL,
        origin TEXT NOT NULL,
        ok BIGINT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE run_substitutions (
        run_id TEXT NOT NULL,
        package TEXT NOT NULL,
        pin TEXT NOT NULL,
        substitute TEXT NOT NULL,
        PRIMARY KEY (run_id, package)
    );
    CREATE TABLE fingerprint_parts (
        fingerprint TEXT NOT NULL,
        resource TEXT NOT NULL,
        part TEXT NOT NULL,
        PRIMARY KEY (fingerprint, resource)
    );
    CREATE TABLE package_sets (
        set_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        held BIGINT NOT NULL,
        PRIMARY KEY (set_id, name)
    );
    CREATE INDEX package_sets_by_name ON package_sets (name, version);
    CREATE TABLE hosts (
        fqdn TEXT PRIMARY KEY,
        latest_run TEXT NOT NULL,
        started_at BIGINT NOT NULL
    );
    CREATE TABLE host_roles (
        fqdn TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (fqdn, role)
    );
    CREATE TABLE refusals (
        reason TEXT PRIMARY KEY,
        count BIGINT NOT NULL,
        last_at BIGINT NOT NULL,
        last_detail TEXT NOT NULL
    );
    ",
    // 2: each change's diff, for the dashboard's run pages (redacted by the
    // host as in its report).
    "ALTER TABLE run_changes ADD COLUMN diff TEXT;",
    // 3: the latest run's row on its host, so that the reads of the
    // fleet's latest state (hosts, a package's hosts) read `hosts` alone:
    // joined to `runs`, PostgreSQL hashed every run kept to find 10,000
    // of them, and those reads grew with the runs kept.
    "
    ALTER TABLE hosts ADD COLUMN release TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE hosts ADD COLUMN elapsed_ms DOUBLE PRECISION NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN success BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN updated BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN failed BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE hosts ADD COLUMN bundle_serial BIGINT;
    ALTER TABLE hosts ADD COLUMN fingerprint TEXT;
    ALTER TABLE hosts ADD COLUMN package_set TEXT;
    ALTER TABLE hosts ADD COLUMN interval_secs BIGINT;
    UPDATE hosts SET (release, roles, elapsed_ms, success, updated, failed, bundle_serial,
        fingerprint, package_set, interval_secs) =
        (SELECT r.release, r.roles, r.elapsed_ms, r.success, r.updated, r.failed,
            r.bundle_serial, r.fingerprint, r.package_set, r.interval_secs
         FROM runs r WHERE r.run_id = hosts.latest_run);
    ",
    // 4: storage of `hosts` on PostgreSQL ([`POSTGRES_ONLY`]); nothing on SQLite.
    "",
    // 5: drift's history read from the index alone on PostgreSQL ([`POSTGRES_ONLY`]).
    "",
];

/// What a migration does on PostgreSQL besides [`MIGRATIONS`], by the
/// version it reaches: storage settings SQLite has no words for. Append
/// only, as [`MIGRATIONS`].
pub const POSTGRES_ONLY: &[(i64, &str)] = &[
    (
        4,
        // Every report rewrites its host's row. An update that finds room on
        // the row's page writes no index entry (HOT; no indexed column of
        // `hosts` changes, a test holds it), and pages filled to the brim by
        // migration 3 left none. CLUSTER rewrites the rows at the new fill.
        "ALTER TABLE hosts SET (fillfactor = 70); CLUSTER hosts USING hosts_pkey;",
    ),
    (
        5,
        // HISTORIES reads ~50 runs of each odd host, each on a page of its
        // own: the index that orders them carries what the read returns, so
        // that no page of `runs` is read (once autovacuum has marked them
        // all-visible, as runs are never updated). It serves runs_by_host's
        // reads too.
        "CREATE INDEX runs_by_host_covering ON runs (fqdn, started_at, received_us) \
         INCLUDE (run_id, fingerprint); DROP INDEX runs_by_host;",
    ),
];

/// Where the schema's version is kept; created before any migration.
pub const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS kiln_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
pub const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM kiln_schema";
pub const RECORD_VERSION: &str = "INSERT INTO kiln_schema (version, applied_at) VALUES ($1, $2)";

/// What keeping a run must know first, in one read (each read is a round
/// trip, and a fleet sends many reports a second): whether its id is
/// stored, the host's newest start and the roles of its latest run, and
/// whether the run's fingerprint parts and package list are kept already.
/// Those two are written whole in one transaction under their digest, so
/// one row means all, and a run of an unchanged host writes neither again.
pub const BEFORE_KEEP: &str = "SELECT \
     (SELECT COUNT(*) FROM runs WHERE run_id = $1), \
     (SELECT started_at FROM hosts WHERE fqdn = $2), \
     (SELECT roles FROM hosts WHERE fqdn = $2), \
     (SELECT COUNT(*) FROM fingerprint_parts WHERE fingerprint = $3), \
     (SELECT COUNT(*) FROM package_sets WHERE set_id = $4)";
pub const INSERT_RUN: &str = "INSERT INTO runs (run_id, fqdn, started_at, received_us, elapsed_ms, \
     release, roles, success, updated, failed, total, bundle_serial, kiln_version, fingerprint, \
     package_set, interval_secs) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";
pub const INSERT_CHANGE: &str = "INSERT INTO run_changes (run_id, seq, resource, status, changes, error, diff) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const INSERT_CHECK: &str = "INSERT INTO run_checks (run_id, seq, check_name, origin, ok, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub const INSERT_SUBSTITUTION: &str = "INSERT INTO run_substitutions (run_id, package, pin, substitute) \
     VALUES ($1, $2, $3, $4)";
pub const INSERT_PART: &str = "INSERT INTO fingerprint_parts (fingerprint, resource, part) \
     VALUES ($1, $2, $3) ON CONFLICT (fingerprint, resource) DO NOTHING";
pub const INSERT_PACKAGE: &str = "INSERT INTO package_sets (set_id, name, version, held) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (set_id, name) DO NOTHING";
/// A host's row is its latest run's: a run older than the host's newest
/// is refused before this.
pub const UPSERT_HOST: &str = "INSERT INTO hosts (fqdn, latest_run, started_at, release, roles, \
     elapsed_ms, success, updated, failed, bundle_serial, fingerprint, package_set, interval_secs) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (fqdn) DO UPDATE SET latest_run = excluded.latest_run, \
     started_at = excluded.started_at, release = excluded.release, roles = excluded.roles, \
     elapsed_ms = excluded.elapsed_ms, success = excluded.success, updated = excluded.updated, \
     failed = excluded.failed, bundle_serial = excluded.bundle_serial, \
     fingerprint = excluded.fingerprint, package_set = excluded.package_set, \
     interval_secs = excluded.interval_secs";
pub const CLEAR_ROLES: &str = "DELETE FROM host_roles WHERE fqdn = $1";
pub const INSERT_ROLE: &str =
    "INSERT INTO host_roles (fqdn, role) VALUES ($1, $2) ON CONFLICT (fqdn, role) DO NOTHING";
pub const COUNT_REFUSAL: &str = "INSERT INTO refusals (reason, count, last_at, last_detail) \
     VALUES ($1, 1, $2, $3) ON CONFLICT (reason) DO UPDATE SET count = refusals.count + 1, \
     last_at = excluded.last_at, last_detail = excluded.last_detail";
pub const REFUSALS: &str =
    "SELECT reason, count, last_at, last_detail FROM refusals ORDER BY reason";

/// The latest run of every host, from `hosts` alone; filters are
/// appended by the query.
pub const HOSTS: &str = "SELECT h.fqdn, h.release, h.roles, h.started_at, h.success, h.updated, \
     h.failed, h.fingerprint, h.interval_secs, h.latest_run, h.elapsed_ms, h.bundle_serial \
     FROM hosts h";
pub const PACKAGE: &str = "SELECT h.fqdn, p.version, p.held FROM hosts h \
     JOIN package_sets p ON p.set_id = h.package_set WHERE p.name = $1";
pub const RUNS: &str = "SELECT run_id, started_at, elapsed_ms, success, updated, failed, fingerprint, \
     release, roles FROM runs WHERE fqdn = $1 AND started_at >= $2 ORDER BY started_at, received_us";
pub const RUN_CHANGES: &str = "SELECT c.run_id, c.resource, c.status, c.changes, c.error, c.diff \
     FROM run_changes c JOIN runs r ON r.run_id = c.run_id \
     WHERE r.fqdn = $1 AND r.started_at >= $2 ORDER BY c.run_id, c.seq";
/// The packages of a host's latest run.
pub const HOST_PACKAGES: &str = "SELECT p.name, p.version, p.held FROM hosts h \
     JOIN package_sets p ON p.set_id = h.package_set WHERE h.fqdn = $1 ORDER BY p.name";
/// Names of kept packages that match a LIKE pattern (`\\` escapes).
pub const PACKAGE_NAMES: &str = "SELECT DISTINCT name FROM package_sets \
     WHERE name LIKE $1 ESCAPE '\\' ORDER BY name LIMIT $2";
pub const COUNT_RUNS: &str = "SELECT COUNT(*) FROM runs";
pub const PARTS: &str =
    "SELECT resource, part FROM fingerprint_parts WHERE fingerprint = $1 ORDER BY resource";
/// The runs of the hosts in `{in}` (placeholders), each host's newest first.
pub const HISTORIES: &str = "SELECT fqdn, run_id, started_at, fingerprint FROM runs WHERE fqdn IN ({in}) \
     ORDER BY fqdn, started_at DESC, received_us DESC";
/// The parts of the fingerprints in `{in}` (placeholders).
pub const PARTS_OF: &str = "SELECT fingerprint, resource, part FROM fingerprint_parts \
     WHERE fingerprint IN ({in}) ORDER BY fingerprint, resource";

/// `sql` with `{in}` replaced by `n` placeholders, `$1` to `$n`.
pub fn with_list(sql: &str, n: usize) -> String {
    let list: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    sql.replace("{in}", &list.join(", "))
}

/// Runs older than `$1` that are no host's latest, for retention.
const OLD: &str = "SELECT run_id FROM runs WHERE started_at < $1 AND run_id NOT IN (SELECT latest_run FROM hosts)";

/// Retention, in order: the children of old runs, the runs, then the
/// fingerprints and package lists no run refers to any more.
pub fn prune() -> Vec<String> {
    let mut out: Vec<String> = ["run_changes", "run_checks", "run_substitutions"]
        .iter()
        .map(|t| format!("DELETE FROM {t} WHERE run_id IN ({OLD})"))
        .collect();
    out.push(
        "DELETE FROM runs WHERE started_at < $1 AND run_id NOT IN (SELECT latest_run FROM hosts)"
            .into(),
    );
    // DISTINCT: PostgreSQL hashes a NOT IN list only when it expects it
    // to fit in work_mem, and a list of every run's fingerprint does not;
    // it then scanned the runs again for each row: 6 s for the 30 parts
    // of one unused fingerprint at 478,800 runs. The few distinct values
    // are hashed (and SQLite builds its index of the list either way).
    out.push(
        "DELETE FROM fingerprint_parts WHERE fingerprint NOT IN \
         (SELECT DISTINCT fingerprint FROM runs WHERE fingerprint IS NOT NULL)"
            .into(),
    );
    out.push(
        "DELETE FROM package_sets WHERE set_id NOT IN \
         (SELECT DISTINCT package_set FROM runs WHERE package_set IS NOT NULL)"
            .into(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite numbers `$n` by first appearance: `$2` before `$1` would
    /// bind the wrong values there and the right ones on PostgreSQL.
    #[test]
    fn parameters_appear_in_order() {
        let mut all: Vec<String> = [
            RECORD_VERSION,
            BEFORE_KEEP,
            INSERT_RUN,
            INSERT_CHANGE,
            INSERT_CHECK,
            INSERT_SUBSTITUTION,
            INSERT_PART,
            INSERT_PACKAGE,
            UPSERT_HOST,
            CLEAR_ROLES,
            INSERT_ROLE,
            COUNT_REFUSAL,
            PACKAGE,
            HOST_PACKAGES,
            PACKAGE_NAMES,
            RUNS,
            RUN_CHANGES,
            PARTS,
            &with_list(HISTORIES, 3),
            &with_list(PARTS_OF, 2),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(prune());
        for sql in all {
            let mut seen = 0;
            for (i, _) in sql.match_indices('$') {
                let n: usize = sql[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap();
                assert!(n <= seen + 1, "{sql}: ${n} before ${}", seen + 1);
                seen = seen.max(n);
            }
        }
    }
}
