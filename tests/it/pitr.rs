//! Physical backups and point-in-time restore against real PostgreSQL 15
//! servers: `wal stream` archives continuously, `backup` takes a base backup
//! while rows are written, and `restore --pgdata … --start` brings up a new
//! server at a target (time, LSN, restore point, end of a later timeline).
//!
//! Oracles (DESIGN.md §4, STYLE.md habit 10): a marker row written before the
//! target is there and one written after it is not; a table dropped after
//! the target is back with its rows; `pg_verifybackup` passes on the restored
//! directory before it starts, `pg_amcheck` on the running server, and
//! `pg_waldump` reads every archived segment of the range.
//!
//! As root, restored servers run as the `postgres` OS user: every restore
//! target and repository lives under a 0755 temp dir in /tmp, and the
//! restored server reuses the source cluster's socket dir (owned by
//! postgres) with a port of its own. Helpers here are shared with
//! `physical_errors.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::cli::{pgtide, CliOutput, PGTIDE_BIN};
use crate::harness::pg::{pg_tool, PgCluster};

/// PostgreSQL's default segment size; every test cluster uses it.
const SEG_SIZE: u64 = 16 << 20;
/// How long to wait for WAL to reach the archive, a process to exit, …
const DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Helpers (shared with physical_errors.rs)
// ---------------------------------------------------------------------------

/// A temp dir in /tmp that the `postgres` OS user may traverse (0755).
pub fn work_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir in /tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    dir
}

/// `dir/name` as a string (pgtide creates what does not exist).
pub fn path_in(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path()
        .join(name)
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// The JSON document a `--json` run printed.
pub fn json(out: &CliOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"))
}

/// A free TCP port on 127.0.0.1 (the kernel's choice) for a restored server.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `(timeline, segment number)` of a segment name (16 MiB segments).
pub fn parse_segment(name: &str) -> (u32, u64) {
    assert_eq!(name.len(), 24, "not a segment name: {name}");
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or_else(|_| panic!("bad name {name}"));
    let per_log = 0x1_0000_0000 / SEG_SIZE;
    (
        hex(&name[..8]) as u32,
        hex(&name[8..16]) * per_log + hex(&name[16..]),
    )
}

/// The segment name of `(timeline, segment number)` (16 MiB segments).
pub fn segment_name(tli: u32, segno: u64) -> String {
    let per_log = 0x1_0000_0000 / SEG_SIZE;
    format!("{tli:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

/// `pgtide list --json` of a repository.
pub fn listing(repo: &str) -> serde_json::Value {
    let out = pgtide(&["list", "--json", "--repo", repo]);
    out.assert_ok();
    json(&out)
}

/// Waits until the repository lists segment `name` (or a later one of its
/// timeline) as archived; panics with the listing after [`DEADLINE`].
pub fn wait_archived(repo: &str, name: &str) {
    let (tli, segno) = parse_segment(name);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let l = listing(repo);
        let done = l["wal"].as_array().into_iter().flatten().any(|w| {
            w["timeline"].as_u64() == Some(u64::from(tli))
                && w["last"]
                    .as_str()
                    .is_some_and(|last| parse_segment(last).1 >= segno)
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "segment {name} was not archived within {DEADLINE:?}; the repository lists:\n{l:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `SELECT pg_walfile_name(pg_switch_wal())`: the segment just completed.
pub fn switch_wal(query_one: impl Fn(&str) -> String) -> String {
    query_one("SELECT pg_walfile_name(pg_switch_wal())")
}

/// Waits until `query` (on the source cluster) returns "t".
pub fn wait_until(pg: &PgCluster, what: &str, query: &str) {
    let deadline = Instant::now() + DEADLINE;
    while pg.query_one("postgres", query) != "t" {
        assert!(
            Instant::now() < deadline,
            "{what}: `{query}` still false after {DEADLINE:?}\n--- server log ---\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A command for a PostgreSQL tool or pgtide with libpq's `PG*` variables,
/// pgtide's `PGTIDE_*` (but not `PGTIDE_TEST_*`) and `RUST_LOG` removed, so
/// only its arguments decide what it does.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("PG") && !k.starts_with("PGTIDE_TEST_")) || k == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// `host=127.0.0.1 port=PORT user=postgres dbname=postgres`.
pub fn conninfo_at(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")
}

/// A background `pgtide wal stream`; stopped with SIGTERM by [`Streamer::stop`]
/// (killed on drop if a test panics first).
pub struct Streamer {
    child: Option<Child>,
    log: PathBuf,
    cmdline: String,
}

impl Streamer {
    /// `pgtide wal stream --db CONN --repo REPO --slot SLOT --create-slot
    /// --partial-interval 1s --status-interval 1s`, stdout and stderr into
    /// files under `dir`.
    pub fn start(conn: &str, repo: &str, slot: &str, dir: &Path) -> Streamer {
        let args = [
            "wal",
            "stream",
            "--db",
            conn,
            "--repo",
            repo,
            "--slot",
            slot,
            "--create-slot",
            "--partial-interval",
            "1s",
            "--status-interval",
            "1s",
        ];
        let log = dir.join(format!("stream-{slot}-{}.log", fastrand::u32(..)));
        let file = fs::File::create(&log).expect("create the streamer's log");
        let child = clean_command(PGTIDE_BIN)
            .args(args)
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("start pgtide wal stream");
        Streamer {
            child: Some(child),
            log,
            cmdline: format!("pgtide {}", args.join(" ")),
        }
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait: it must exit 0. Returns what it printed.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("streamer not stopped yet");
        if let Some(status) = child.try_wait().expect("wait for wal stream") {
            panic!(
                "`{}` exited on its own ({status}) before SIGTERM\n{}",
                self.cmdline,
                self.output()
            );
        }
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for wal stream") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{}` did not exit within {DEADLINE:?} of SIGTERM\n{}",
                    self.cmdline,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = self.output();
        assert_eq!(
            status.code(),
            Some(0),
            "`{}` must exit 0 on SIGTERM\n{out}",
            self.cmdline
        );
        out
    }

    /// Waits (bounded) until it exits on its own: `Ok((exit code, output))`,
    /// or `Err(output)` (after killing it) when it still runs at `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> Result<(Option<i32>, String), String> {
        let mut child = self.child.take().expect("streamer not stopped yet");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = child.try_wait().expect("wait for wal stream") {
                return Ok((s.code(), self.output()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A data directory restored by `pgtide restore --pgdata`, and the server
/// `--start` started on it (stopped, `-m immediate`, on drop).
pub struct Restored {
    pub pgdata: PathBuf,
    pub port: u16,
    /// The `--json` report of the restore.
    pub report: serde_json::Value,
    // Dropped after the server is stopped.
    _dir: tempfile::TempDir,
}

impl Restored {
    /// Rows of `sql` on the restored server, through psql, one line each
    /// with `|` between columns.
    pub fn psql(&self, sql: &str) -> String {
        let out = clean_command(pg_tool(15, "psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql `{sql}` on the restored server failed: {}\n--- recovery log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// The server log pgtide wrote for `--start`.
    pub fn log(&self) -> String {
        fs::read_to_string(self.pgdata.join("pgtide-recovery.log")).unwrap_or_default()
    }

    /// The markers in table `m`, sorted.
    pub fn markers(&self) -> Vec<String> {
        let text = self.psql("SELECT v FROM m ORDER BY v");
        text.lines().map(str::to_string).collect()
    }

    /// The timeline of the last checkpoint (the promoted server's timeline).
    pub fn timeline(&self) -> u32 {
        self.psql("SELECT timeline_id FROM pg_control_checkpoint()")
            .parse()
            .expect("timeline id")
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        stop_server(&self.pgdata);
    }
}

/// `pg_ctl stop -m immediate` (as postgres) if a server runs on `pgdata`.
pub fn stop_server(pgdata: &Path) {
    if !pgdata.join("postmaster.pid").exists() {
        return;
    }
    let _ = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_tool(15, "pg_ctl"))
        .args(["stop", "-w", "-t", "60", "-m", "immediate", "-D"])
        .arg(pgdata)
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `pgtide restore --json ID --repo REPO --pgdata DIR/data EXTRA…`, and with
/// `start` also `--start --set port=… --set unix_socket_directories=SOCKET`.
/// Asserts success.
pub fn restore(repo: &str, id: &str, extra: &[&str], start: Option<&Path>) -> Restored {
    let dir = work_dir("pgtide-pitr-restore-");
    let pgdata = dir.path().join("data");
    let port = free_port();
    let mut args: Vec<String> = [
        "restore",
        "--json",
        id,
        "--repo",
        repo,
        "--pgdata",
        pgdata.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    if let Some(socket_dir) = start {
        args.push("--start".into());
        args.push("--set".into());
        args.push(format!("port={port}"));
        args.push("--set".into());
        args.push(format!("unix_socket_directories={}", socket_dir.display()));
    }
    let out = pgtide(&args);
    let report = if out.status.success() {
        json(&out)
    } else {
        serde_json::Value::Null
    };
    let restored = Restored {
        pgdata,
        port,
        report,
        _dir: dir,
    };
    assert!(
        out.status.success(),
        "restore failed\n{out}\n--- recovery log ---\n{}",
        restored.log()
    );
    restored
}

/// `pg_verifybackup -n DIR` (WAL is not in the directory: recovery fetches it).
pub fn assert_verifybackup(pgdata: &Path) {
    let out = clean_command(pg_tool(15, "pg_verifybackup"))
        .arg("-n")
        .arg(pgdata)
        .output()
        .expect("run pg_verifybackup");
    assert!(
        out.status.success(),
        "pg_verifybackup -n {} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        pgdata.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pg_amcheck --all --heapallindexed --install-missing` against a server.
pub fn assert_amcheck(r: &Restored) {
    let out = clean_command(pg_tool(15, "pg_amcheck"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "--all"])
        .args(["--heapallindexed", "--install-missing"])
        .arg("-p")
        .arg(r.port.to_string())
        .output()
        .expect("run pg_amcheck");
    assert!(
        out.status.success(),
        "pg_amcheck failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fetches segments `first..=last` with `pgtide wal fetch` into a fresh
/// pg_wal-like dir and has `pg_waldump` read all of them.
pub fn assert_waldump(repo: &str, first: &str, last: &str) {
    let dir = work_dir("pgtide-waldump-");
    let (tli, a) = parse_segment(first);
    let (tli_b, b) = parse_segment(last);
    assert_eq!(tli, tli_b, "one timeline at a time: {first}..{last}");
    for segno in a..=b {
        let name = segment_name(tli, segno);
        let dest = dir.path().join(&name);
        pgtide(&[
            "wal",
            "fetch",
            "--repo",
            repo,
            "--prefetch",
            "0",
            &name,
            dest.to_str().expect("utf-8 path"),
        ])
        .assert_ok();
        assert_eq!(
            fs::metadata(&dest).expect("fetched segment").len(),
            SEG_SIZE,
            "{name}"
        );
    }
    let out = clean_command(pg_tool(15, "pg_waldump"))
        .arg("-p")
        .arg(dir.path())
        .args([first, last])
        .output()
        .expect("run pg_waldump");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().count() > 0,
        "pg_waldump {first} {last} failed\n--- stderr ---\n{}\n--- last stdout lines ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        stdout.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// `pgtide backup --json --db CONN --repo REPO EXTRA…`, asserted ok.
pub fn backup(conn: &str, repo: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["backup", "--json", "--db", conn, "--repo", repo];
    args.extend_from_slice(extra);
    let out = pgtide(&args);
    out.assert_ok();
    json(&out)
}

pub fn s(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v:#}"))
        .to_string()
}

/// Tables of the PITR scenarios: `t` (written during the backup), `keep`
/// (dropped after the target), `m` (markers).
pub fn create_tables(pg: &PgCluster) {
    pg.execute(
        "postgres",
        "CREATE TABLE t (id serial PRIMARY KEY, v text);
         INSERT INTO t (v) SELECT 'seed ' || g FROM generate_series(1, 5000) g;
         CREATE TABLE keep (a int PRIMARY KEY, b text);
         INSERT INTO keep SELECT g, md5(g::text) FROM generate_series(1, 300) g;
         CREATE INDEX ON keep (b);
         CREATE TABLE m (v text);",
    );
}

pub fn marker(pg: &PgCluster, v: &str) {
    pg.execute("postgres", &format!("INSERT INTO m VALUES ('{v}')"));
}

/// Starts a streamer on slot `s` and waits until the slot is active.
/// A PostgreSQL 15 cluster with the test tables, a local repository in a
/// fresh work directory, and `wal stream` running on slot `s` into it.
struct Scene {
    pg: PgCluster,
    work: tempfile::TempDir,
    repo: String,
    conn: String,
    streamer: Streamer,
}

impl Scene {
    fn streaming() -> Scene {
        let pg = PgCluster::start(15);
        create_tables(&pg);
        let work = work_dir("pgtide-pitr-");
        let repo = path_in(&work, "repo");
        let conn = pg.conninfo("postgres", "postgres");
        let streamer = stream_from(&conn, &repo, "s", work.path(), &pg);
        Scene {
            pg,
            work,
            repo,
            conn,
            streamer,
        }
    }
}

pub fn stream_from(pg_conn: &str, repo: &str, slot: &str, dir: &Path, pg: &PgCluster) -> Streamer {
    let st = Streamer::start(pg_conn, repo, slot, dir);
    wait_until(
        pg,
        "the streamer's slot becomes active",
        &format!("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}' AND active)"),
    );
    st
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// Backup under write load, markers around a target time, a table dropped
/// after it: the restored server has exactly the rows committed before it.
#[test]
fn pitr_to_a_time_brings_back_a_dropped_table() {
    let Scene {
        pg,
        work: _work,
        repo,
        conn,
        streamer,
    } = Scene::streaming();

    // The backup while a writer inserts rows.
    let stop = AtomicBool::new(false);
    let b = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pg.execute(
                    "postgres",
                    "INSERT INTO t (v) SELECT 'during ' || g FROM generate_series(1, 50) g",
                );
                n += 1;
            }
            n
        });
        let b = backup(&conn, &repo, &[]);
        stop.store(true, Ordering::Relaxed);
        let batches = writer.join().expect("writer thread");
        assert!(batches > 0, "the writer wrote nothing");
        b
    });
    let id = s(&b, "id");
    let rows_t = pg.query_one("postgres", "SELECT count(*) || ':' || sum(id) FROM t");
    let rows_keep = pg.query_one(
        "postgres",
        "SELECT count(*) || ':' || md5(string_agg(b, ',' ORDER BY a)) FROM keep",
    );

    marker(&pg, "before");
    std::thread::sleep(Duration::from_millis(1500));
    let target = pg.query_one("postgres", "SELECT now()");
    std::thread::sleep(Duration::from_millis(1500));
    marker(&pg, "after");
    pg.execute("postgres", "DROP TABLE keep");
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &switched);

    // Before starting: PostgreSQL's own check of the restored files.
    let files = restore(&repo, "latest", &["--target-time", &target], None);
    assert_eq!(files.report["backup"], id.as_str(), "{:#}", files.report);
    assert!(files.pgdata.join("recovery.signal").is_file());
    assert_verifybackup(&files.pgdata);
    drop(files);

    let r = restore(
        &repo,
        "latest",
        &["--target-time", &target, "--target-action", "promote"],
        Some(pg.socket_dir()),
    );
    assert_eq!(r.report["started"], true, "{:#}", r.report);
    assert_eq!(r.report["timeline"], 2, "{:#}", r.report);
    assert_eq!(r.psql("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(r.markers(), ["before"], "target {target}\n{}", r.log());
    assert_eq!(
        r.psql("SELECT count(*) || ':' || md5(string_agg(b, ',' ORDER BY a)) FROM keep"),
        rows_keep,
        "the dropped table comes back with its rows"
    );
    assert_eq!(
        r.psql("SELECT count(*) || ':' || sum(id) FROM t"),
        rows_t,
        "rows written during the backup"
    );
    assert_amcheck(&r);
    drop(r);

    // Every archived segment from the backup's start to the switch.
    assert_eq!(parse_segment(&s(&b, "wal_start")).0, 1);
    assert_waldump(&repo, &s(&b, "wal_start"), &switched);
    streamer.stop();
}

/// `--target-lsn` (taken after one marker), `--target-name` (a restore
/// point between two markers) and `--target-xid` from the same backup, with
/// each `--target-action`: promote, pause (still in recovery, paused) and
/// shutdown (the server stops at the target).
#[test]
fn pitr_to_an_lsn_a_restore_point_and_an_xid() {
    let Scene {
        pg,
        work: _work,
        repo,
        conn,
        streamer,
    } = Scene::streaming();
    backup(&conn, &repo, &[]);

    marker(&pg, "1-before-lsn");
    let lsn = pg.query_one("postgres", "SELECT pg_current_wal_insert_lsn()");
    marker(&pg, "2-after-lsn");
    pg.execute("postgres", "SELECT pg_create_restore_point('rp1')");
    let xid = pg.query_one(
        "postgres",
        "INSERT INTO m VALUES ('3-after-rp1') RETURNING txid_current()",
    );
    marker(&pg, "4-after-xid");
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &switched);

    let r = restore(
        &repo,
        "latest",
        &["--target-lsn", &lsn],
        Some(pg.socket_dir()),
    );
    assert_eq!(r.markers(), ["1-before-lsn"], "target {lsn}\n{}", r.log());
    assert_eq!(r.timeline(), 2);
    drop(r);

    let r = restore(
        &repo,
        "latest",
        &["--target-name", "rp1", "--target-action", "promote"],
        Some(pg.socket_dir()),
    );
    assert_eq!(
        r.markers(),
        ["1-before-lsn", "2-after-lsn"],
        "target rp1\n{}",
        r.log()
    );
    assert_amcheck(&r);
    drop(r);

    let r = restore(
        &repo,
        "latest",
        &["--target-xid", &xid, "--target-action", "pause"],
        Some(pg.socket_dir()),
    );
    assert_eq!(
        r.markers(),
        ["1-before-lsn", "2-after-lsn", "3-after-rp1"],
        "target xid {xid}\n{}",
        r.log()
    );
    assert_eq!(r.psql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(r.psql("SELECT pg_get_wal_replay_pause_state()"), "paused");
    drop(r);

    let r = restore(
        &repo,
        "latest",
        &["--target-immediate", "--target-action", "shutdown"],
        Some(pg.socket_dir()),
    );
    assert_eq!(r.report["started"], true, "{:#}", r.report);
    // The log says "shut down" a moment before the postmaster removes its pid file.
    let deadline = Instant::now() + DEADLINE;
    while r.pgdata.join("postmaster.pid").exists() {
        assert!(
            Instant::now() < deadline,
            "the server must have shut down at the target\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        r.log().contains("database system is shut down"),
        "{}",
        r.log()
    );
    drop(r);
    streamer.stop();
}

/// Restore + promote makes timeline 2; stream and back up that server into
/// the same repository; a restore to the newest point lands on timeline 3
/// with the rows of timeline 2, and so does one from the timeline-1 backup,
/// which crosses the switch through 00000002.history.
#[test]
fn pitr_across_a_timeline_switch() {
    let Scene {
        pg,
        work,
        repo,
        conn,
        streamer,
    } = Scene::streaming();
    let b1 = backup(&conn, &repo, &[]);
    marker(&pg, "tl1-kept");
    pg.execute("postgres", "SELECT pg_create_restore_point('fork')");
    marker(&pg, "tl1-lost");
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &switched);
    streamer.stop();

    // Timeline 2: the promoted copy, archived into the same repository.
    let tl2 = restore(
        &repo,
        "latest",
        &["--target-name", "fork"],
        Some(pg.socket_dir()),
    );
    assert_eq!(tl2.timeline(), 2, "{}", tl2.log());
    assert_eq!(tl2.markers(), ["tl1-kept"]);
    let conn2 = conninfo_at(tl2.port);
    let streamer2 = Streamer::start(&conn2, &repo, "s2", work.path());
    let deadline = Instant::now() + DEADLINE;
    while tl2.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's2' AND active")
        != "1"
    {
        assert!(
            Instant::now() < deadline,
            "slot s2 never became active\n{}",
            streamer2.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let b2 = backup(&conn2, &repo, &[]);
    assert_eq!(b2["timeline"], 2, "{b2:#}");
    tl2.psql("INSERT INTO m VALUES ('tl2-a')");
    tl2.psql("INSERT INTO m VALUES ('tl2-b')");
    let switched2 = tl2.psql("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(switched2.starts_with("00000002"), "{switched2}");
    wait_archived(&repo, &switched2);

    let l = listing(&repo);
    let tlis: Vec<u64> = l["wal"]
        .as_array()
        .expect("wal list")
        .iter()
        .filter_map(|w| w["timeline"].as_u64())
        .collect();
    assert!(tlis.contains(&1) && tlis.contains(&2), "{l:#}");
    assert!(
        Path::new(&repo).join("wal/00000002.history").is_file(),
        "no 00000002.history in the repository"
    );
    assert_eq!(l["backups"].as_array().map(Vec::len), Some(2), "{l:#}");

    // The newest point: the timeline-2 backup, then a new timeline.
    let r = restore(&repo, "latest", &[], Some(pg.socket_dir()));
    assert_eq!(r.report["backup"], b2["id"], "{:#}", r.report);
    assert!(r.timeline() >= 3, "{}", r.log());
    assert_eq!(r.report["timeline"].as_u64(), Some(u64::from(r.timeline())));
    assert_eq!(r.markers(), ["tl1-kept", "tl2-a", "tl2-b"], "{}", r.log());
    drop(r);

    // From the timeline-1 backup to the end of timeline 2.
    let id1 = s(&b1, "id");
    let r = restore(&repo, &id1, &[], Some(pg.socket_dir()));
    assert_eq!(r.report["backup"], id1.as_str());
    assert!(r.timeline() >= 3, "{}", r.log());
    assert_eq!(r.markers(), ["tl1-kept", "tl2-a", "tl2-b"], "{}", r.log());
    assert_amcheck(&r);
    drop(r);

    streamer2.stop();
    drop(tl2);
}

/// archive_command = `pgtide wal push` and restore_command's
/// `pgtide wal fetch`: archiving, idempotent re-push, conflicts, absence
/// (exit 1, silent) and damage (exit 126), and a backup that takes its WAL
/// from the running archiver.
#[test]
fn archive_command_and_restore_command() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-archive-");
    let repo = path_in(&work, "repo");
    // archive_command runs as the postgres OS user: it owns the repository.
    fs::create_dir(&repo).expect("create repo dir");
    let ok = Command::new("chown")
        .args(["postgres:", &repo])
        .status()
        .expect("run chown")
        .success();
    assert!(ok, "chown postgres {repo}");
    pg.set_conf("archive_mode", "on");
    pg.set_conf(
        "archive_command",
        &format!("'{PGTIDE_BIN}' wal push --repo '{repo}' %p"),
    );
    pg.restart();
    create_tables(&pg);

    let archived_before: u64 = pg
        .query_one("postgres", "SELECT archived_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_until(
        &pg,
        "archive_command archives the switched segment",
        &format!(
            "SELECT archived_count > {archived_before} AND last_archived_wal >= '{switched}' FROM pg_stat_archiver"
        ),
    );
    wait_archived(&repo, &switched);
    assert_eq!(
        pg.query_one("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "archive_command failed\n{}",
        pg.log()
    );

    // A backup whose WAL comes from archive_command.
    let b = backup(
        &pg.conninfo("postgres", "postgres"),
        &repo,
        &["--wal", "archive", "--wal-wait", "2m"],
    );
    let id = s(&b, "id");
    pgtide(&["verify", &id, "--repo", &repo]).assert_ok();

    // The same bytes again: fine. Other bytes under the name: refused.
    let copies = work_dir("pgtide-archive-copies-");
    let copy = copies.path().join(&switched);
    pgtide(&[
        "wal",
        "fetch",
        "--repo",
        &repo,
        "--prefetch",
        "0",
        &switched,
        copy.to_str().unwrap(),
    ])
    .assert_ok();
    let out = pgtide(&[
        "wal",
        "push",
        "--json",
        "--repo",
        &repo,
        copy.to_str().unwrap(),
    ]);
    out.assert_ok();
    assert_eq!(json(&out)["outcome"], "already-archived", "{out}");
    let mut bytes = fs::read(&copy).unwrap();
    let mid = bytes.len() / 2 + 17;
    bytes[mid] ^= 0x5a;
    let other_dir = work_dir("pgtide-archive-other-");
    let other = other_dir.path().join(&switched);
    fs::write(&other, &bytes).unwrap();
    pgtide(&["wal", "push", "--repo", &repo, other.to_str().unwrap()])
        .assert_one_line_error(6, "different contents");

    // Absent: exit 1 and nothing on stderr (PostgreSQL asks past the end).
    let missing = segment_name(1, parse_segment(&switched).1 + 1000);
    let dest = copies.path().join("missing");
    let out = pgtide(&[
        "wal",
        "fetch",
        "--repo",
        &repo,
        &missing,
        dest.to_str().unwrap(),
    ]);
    out.assert_exit(1);
    assert_eq!(out.stderr, "", "{out}");
    assert!(!dest.exists());

    // Damaged: exit 126, so that recovery stops instead of ending early.
    let stored = Path::new(&repo).join("wal/00000001").join(&switched);
    let mut obj = fs::read(&stored).expect("stored WAL object");
    let at = obj.len() - 100;
    obj[at] ^= 0xff;
    fs::write(&stored, &obj).unwrap();
    let dest = copies.path().join("damaged");
    pgtide(&[
        "wal",
        "fetch",
        "--repo",
        &repo,
        "--prefetch",
        "0",
        &switched,
        dest.to_str().unwrap(),
    ])
    .assert_one_line_error(126, "damaged");
    assert!(!dest.exists(), "a damaged segment must not be served");
}

/// The old primary keeps running on timeline 1 and takes a newer backup
/// after a restore forked timeline 2 off it: recovery along timeline 2 (the
/// default, `latest`) cannot start from that backup. Restoring it by id is
/// refused before anything is written; the backup taken before the fork
/// reaches the end of timeline 2; `restore latest` (when `latest`) must pick
/// that one rather than the newest backup.
fn abandoned_branch(latest: bool) {
    let Scene {
        pg,
        work,
        repo,
        conn,
        streamer,
    } = Scene::streaming();
    let b1 = backup(&conn, &repo, &[]);
    marker(&pg, "tl1-kept");
    pg.execute("postgres", "SELECT pg_create_restore_point('fork')");
    marker(&pg, "tl1-lost");
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &switched);

    let tl2 = restore(
        &repo,
        "latest",
        &["--target-name", "fork"],
        Some(pg.socket_dir()),
    );
    let streamer2 = Streamer::start(&conninfo_at(tl2.port), &repo, "s2", work.path());
    tl2.psql("INSERT INTO m VALUES ('tl2-a')");
    let switched2 = tl2.psql("SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(&repo, &switched2);
    assert!(Path::new(&repo).join("wal/00000002.history").is_file());

    // The abandoned branch goes on and takes the newest backup.
    marker(&pg, "tl1-later");
    let b3 = backup(&conn, &repo, &[]);
    assert_eq!(b3["timeline"], 1);

    let refused = work_dir("pgtide-pitr-refused-");
    let refused_data = refused.path().join("data");
    pgtide(&[
        "restore",
        b3["id"].as_str().unwrap(),
        "--repo",
        &repo,
        "--pgdata",
        refused_data.to_str().unwrap(),
    ])
    .assert_one_line_error(2, "abandoned");
    assert!(!refused_data.exists(), "a refused restore wrote files");
    // Along timeline 1 it is fine (no start: the files are enough).
    let tl1 = restore(
        &repo,
        b3["id"].as_str().unwrap(),
        &["--target-timeline", "1"],
        None,
    );
    assert_verifybackup(&tl1.pgdata);
    drop(tl1);

    // The library's choice for `latest` (what restore_physical should use).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let chosen = rt.block_on(async {
        use pgtide::jobs::physical_restore::{choose, select::Target};
        let r = pgtide::repo::Repository::open(&repo, false)
            .await
            .expect("open the repository");
        let latest = choose(&r, &Target::End, "latest").await.expect("read");
        let on_tl1 = choose(&r, &Target::End, "1").await.expect("read");
        (
            latest.expect("a backup fits"),
            on_tl1.expect("a backup fits"),
        )
    });
    assert_eq!(
        (chosen.0.as_str(), chosen.1.as_str()),
        (b1["id"].as_str().unwrap(), b3["id"].as_str().unwrap())
    );

    let id = if latest {
        "latest"
    } else {
        b1["id"].as_str().unwrap()
    };
    let r = restore(&repo, id, &[], Some(pg.socket_dir()));
    assert_eq!(r.report["backup"], b1["id"], "{:#}", r.report);
    assert!(r.timeline() >= 3, "{}", r.log());
    assert_eq!(r.markers(), ["tl1-kept", "tl2-a"], "{}", r.log());
    drop(r);
    streamer2.stop();
    streamer.stop();
    drop(tl2);
}

#[test]
fn pitr_refuses_a_backup_of_an_abandoned_branch() {
    abandoned_branch(false);
}

#[test]
fn pitr_latest_skips_a_backup_of_an_abandoned_branch() {
    abandoned_branch(true);
}

/// A tablespace, moved with `--tablespace-map` (by oid, and by its original
/// path): its table comes back, `pg_tblspc/OID` points at the new place, and
/// the source's own tablespace dir is left alone.
#[test]
fn pitr_moves_a_tablespace_with_tablespace_map() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-pitr-ts-");
    let ts_dir = work.path().join("ts");
    fs::create_dir(&ts_dir).unwrap();
    let ok = Command::new("chown")
        .arg("postgres:")
        .arg(&ts_dir)
        .status()
        .expect("run chown")
        .success();
    assert!(ok);
    pg.execute(
        "postgres",
        &format!("CREATE TABLESPACE ts LOCATION '{}'", ts_dir.display()),
    );
    pg.execute(
        "postgres",
        "CREATE TABLE tt (id int PRIMARY KEY, v text) TABLESPACE ts;
         INSERT INTO tt SELECT g, repeat('v', g % 50) FROM generate_series(1, 20000) g;
         CREATE TABLE m (v text) TABLESPACE ts;
         INSERT INTO m VALUES ('in ts');",
    );
    let oid = pg.query_one(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'",
    );
    let rows = pg.query_one("postgres", "SELECT count(*) || ':' || sum(id) FROM tt");
    let repo = path_in(&work, "repo");
    let b = backup(&pg.conninfo("postgres", "postgres"), &repo, &[]);
    let id = s(&b, "id");
    let source_files = fs::read_dir(&ts_dir).unwrap().count();

    // By original path, files only: pg_verifybackup follows the link.
    let moved = work_dir("pgtide-pitr-ts-moved-");
    let by_path = moved.path().join("by-path");
    let map = format!("{}={}", ts_dir.display(), by_path.display());
    let r = restore(&repo, &id, &["--tablespace-map", &map], None);
    assert_eq!(
        fs::read_link(r.pgdata.join("pg_tblspc").join(&oid)).unwrap(),
        by_path
    );
    assert_verifybackup(&r.pgdata);
    drop(r);

    // By oid, started.
    let by_oid = moved.path().join("by-oid");
    let map = format!("{oid}={}", by_oid.display());
    let r = restore(
        &repo,
        &id,
        &["--tablespace-map", &map],
        Some(pg.socket_dir()),
    );
    assert_eq!(
        r.psql(&format!("SELECT pg_tablespace_location({oid})")),
        by_oid.display().to_string()
    );
    assert_eq!(r.psql("SELECT count(*) || ':' || sum(id) FROM tt"), rows);
    assert_eq!(r.markers(), ["in ts"]);
    assert_amcheck(&r);
    drop(r);
    assert_eq!(fs::read_dir(&ts_dir).unwrap().count(), source_files);
    assert_eq!(pg.query_one("postgres", "SELECT count(*) FROM m"), "1");
}

/// A cluster that keeps its configuration outside its data directory (as
/// Debian's packages do) is backed up without postgresql.conf, pg_hba.conf
/// and pg_ident.conf: `restore --start` writes minimal ones, says so, and
/// the server recovers.
#[test]
fn restore_start_of_a_backup_without_its_configuration_files() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE TABLE kept (v int); INSERT INTO kept SELECT generate_series(1, 100);",
    );
    for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        fs::remove_file(pg.data_dir().join(f)).unwrap();
    }
    let work = work_dir("pgtide-pitr-noconf-");
    let repo = path_in(&work, "repo");
    backup(&pg.conninfo("postgres", "postgres"), &repo, &[]);
    let socket = work_dir("pgtide-pitr-noconf-sock-");
    crate::harness::pg::give_to_server_user(socket.path());
    let r = restore(&repo, "latest", &[], Some(socket.path()));
    assert!(r.report["recovery"].is_string(), "{:#}", r.report);
    for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        assert!(r.pgdata.join(f).is_file(), "{f} was not written");
    }
    let hba = fs::read_to_string(r.pgdata.join("pg_hba.conf")).unwrap();
    assert!(hba.contains("Written by pgtide restore --start"), "{hba}");
}
