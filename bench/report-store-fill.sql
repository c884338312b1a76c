-- A synthetic report store for bench/report-store-filled, written straight into
-- PostgreSQL (seconds, where sending the same runs as signed reports takes an hour):
-- the shape of `bench/report-store HOSTS 1 30` (examples/report_load.rs): HOSTS hosts
-- (web, db, cache; one in 4 on trixie), SLOTS runs each, one every 30 minutes, stored
-- slot by slot as the senders send them, ending 25 hours ago (so that report_load can
-- send newer runs on top), 8 package lists of ~20 packages, a fingerprint of 30 parts
-- per role and release (one host in 97 has its own: drift), two changes per run, one
-- host in 50 silent for its last 6 slots (3 hours).
--
-- It writes the schema at version 2, as released (migrations are append only): the
-- kiln server started on it then migrates it as it would a real store.
--
--   psql -v HOSTS=10000 -v SLOTS=48 -f bench/report-store-fill.sql DATABASE
\set ON_ERROR_STOP 1
BEGIN;
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
ALTER TABLE run_changes ADD COLUMN diff TEXT;
CREATE TABLE IF NOT EXISTS kiln_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);
INSERT INTO kiln_schema VALUES (1, 0), (2, 0);
CREATE TEMP TABLE h AS
SELECT i,
       (ARRAY['web','db','cache'])[i % 3 + 1] || lpad(i::text, 5, '0') || '.bench.kiln.test' AS fqdn,
       (ARRAY['web','db','cache'])[i % 3 + 1] AS role,
       CASE WHEN i % 4 = 3 THEN 'trixie' ELSE 'bookworm' END AS release,
       (i * 7919) % 1800 AS phase,
       CASE WHEN i % 50 = 7 THEN 6 ELSE 0 END AS silent_slots
FROM generate_series(0, :HOSTS - 1) i;
ALTER TABLE h ADD COLUMN set_id TEXT, ADD COLUMN fp TEXT;
UPDATE h SET set_id = md5('set' || role || release || CASE WHEN role = 'web' AND i % 60 = 0 THEN 'old' ELSE '' END),
             fp = md5('fp' || role || release || CASE WHEN i % 97 = 5 THEN i::text ELSE '' END);
INSERT INTO package_sets (set_id, name, version, held)
SELECT DISTINCT h.set_id, p.name,
       CASE WHEN p.name = 'php8.2-common' THEN CASE WHEN h.set_id = md5('set' || h.role || h.release || 'old') THEN '8.2.20-1~deb12u1' ELSE '8.2.26-1~deb12u1' END
            ELSE '1.' || p.n || '-1' || CASE WHEN h.release = 'trixie' THEN '+t1' ELSE '' END END,
       CASE WHEN p.name IN ('mariadb-server', 'redis-server') THEN 1 ELSE 0 END
FROM h JOIN LATERAL (
  SELECT n, name FROM unnest(ARRAY['openssh-server','chrony','rsyslog','unattended-upgrades','ca-certificates','curl','sudo','vim-tiny','less','logrotate','prometheus-node-exporter','apt-transport-https','gnupg','cron']
     || CASE h.role WHEN 'web' THEN ARRAY['nginx','php8.2-common','php8.2-fpm','php8.2-cli','php8.2-mysql','certbot']
                    WHEN 'db' THEN ARRAY['mariadb-server','mariadb-client','mariadb-backup','xtrabackup','sysstat','lvm2']
                    ELSE ARRAY['redis-server','redis-tools','memcached','sysstat','tuned','numactl'] END) WITH ORDINALITY AS u(name, n)
) p ON true;
INSERT INTO fingerprint_parts (fingerprint, resource, part)
SELECT DISTINCT h.fp, 'file[/etc/part' || k || ']', 'sha256=' || md5(h.fp || k) || ' owner=root group=root mode=0644'
FROM h, generate_series(1, 30) k;
INSERT INTO runs (run_id, fqdn, started_at, received_us, elapsed_ms, release, roles, success, updated,
                  failed, total, bundle_serial, kiln_version, fingerprint, package_set, interval_secs)
SELECT md5(h.fqdn || '/' || s), h.fqdn,
       extract(epoch FROM now())::bigint - 90000 - (:SLOTS - s) * 1800 + h.phase,
       (extract(epoch FROM now())::bigint - 90000 - (:SLOTS - s) * 1800 + h.phase) * 1000000 + 5000,
       900 + (s % 17) * 31, h.release, '["' || h.role || '"]',
       CASE WHEN s % 200 = 13 THEN 0 ELSE 1 END, CASE WHEN s % 200 = 13 THEN 1 ELSE 2 END,
       CASE WHEN s % 200 = 13 THEN 1 ELSE 0 END, 32, NULL, '0.1.0', h.fp, h.set_id, 1800
FROM generate_series(0, :SLOTS - 1) s, h
WHERE s < :SLOTS - h.silent_slots
ORDER BY s, h.i;
INSERT INTO run_changes (run_id, seq, resource, status, changes, error, diff)
SELECT r.run_id, k, CASE k WHEN 0 THEN 'file[/var/lib/app/state.json]' ELSE 'execute[reload app]' END,
       CASE WHEN k = 1 AND r.success = 0 THEN 'failed' ELSE 'updated' END,
       '["content: sha256 ' || substr(r.run_id, 1, 16) || ' -> ' || substr(r.run_id, 17, 16) || '"]',
       CASE WHEN k = 1 AND r.success = 0 THEN 'exit status 1: app reload timed out' END,
       CASE WHEN k = 0 THEN '-generation = ' || r.started_at || E'\n+generation = ' || r.started_at + 1 || E'\n' END
FROM runs r, generate_series(0, 1) k;
INSERT INTO hosts (fqdn, latest_run, started_at)
SELECT DISTINCT ON (fqdn) fqdn, run_id, started_at FROM runs ORDER BY fqdn, started_at DESC;
INSERT INTO host_roles (fqdn, role) SELECT fqdn, role FROM h;
COMMIT;
