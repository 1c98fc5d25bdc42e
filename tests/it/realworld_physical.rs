//! Physical backups on real-world-shaped setups the other physical tests do
//! not build: a base backup taken from a streaming standby (PostgreSQL 13,
//! 15 and 18), two tablespaces and thousands of relation files moved with
//! `--tablespace-map` under every backup option (`--compress none`,
//! `--checkpoint spread`, `--max-rate`, `--server-compress`), `wal stream`
//! started late on a slot that has retained WAL for a long time, and
//! `archive_command = pgtide wal push` under write load as the only WAL
//! source of a point-in-time restore, failovers (`wal stream` pointed at a
//! promoted, lagging standby; `wal stream` on a standby that gets promoted
//! under it), and a standby of another cluster refused by a repository.
//!
//! Oracles: `pg_verifybackup` on every restored directory, row hashes
//! computed on the source and on the restored server by the same SQL
//! function (it is in the backup), markers around the targets, and every
//! segment a slot retained being served by `wal fetch` (and read by
//! `pg_waldump` where the version allows).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::cli::{pgtide, Cli, CliOutput, PGTIDE_BIN};
use crate::harness::pg::{give_to_server_user, pg_ctl_stop, pg_tool, query_port, PgCluster};
use crate::pitr::{
    clean_command, conninfo_at, free_port, json, listing, parse_segment, path_in, restore,
    segment_name, switch_wal, wait_archived, wait_until, work_dir, Restored, Streamer,
};

/// How long to wait for replication, archiving, a backup to finish, …
const DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A command run as the `postgres` OS user (we run as root in CI; as
/// another user, as ourselves).
fn as_postgres(program: &Path) -> Command {
    let root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut cmd = if root {
        let mut c = clean_command("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        clean_command(program)
    };
    cmd.current_dir("/tmp");
    cmd
}

fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One value of `sql` on the server at 127.0.0.1:`port`.
fn one_at(port: u16, sql: &str) -> String {
    let rows = query_port(port, "postgres", sql).unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    match rows.last().and_then(|r| r.first()) {
        Some(Some(v)) => v.clone(),
        _ => panic!("`{sql}` returned {rows:?}"),
    }
}

/// A streaming standby of `primary`: `pg_basebackup -X stream` (the
/// PostgreSQL 18 client, which serves every older server) into a dir of its
/// own, started with the primary's binaries on a port of its own.
struct Standby {
    bin_dir: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Standby {
    fn create(primary: &PgCluster) -> Standby {
        let dir = work_dir("pgtide-rw-standby-");
        give_to_server_user(dir.path());
        let data = dir.path().join("data");
        let mut cmd = as_postgres(&pg_tool(18, "pg_basebackup"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "stream"])
            .args(["-c", "fast", "--no-sync", "-p"])
            .arg(primary.port().to_string());
        run_ok(cmd, "pg_basebackup for the standby");
        let port = free_port();
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open the standby's postgresql.conf");
        std::io::Write::write_all(
            &mut conf,
            format!(
                "\nport = {port}\nhot_standby = on\nprimary_conninfo = \
                 'host=127.0.0.1 port={} user=postgres application_name=standby'\n",
                primary.port()
            )
            .as_bytes(),
        )
        .expect("configure the standby");
        // Not `pg_basebackup -R`: version 18 writes `sslnegotiation`, which
        // the libpq of older servers rejects.
        fs::write(data.join("standby.signal"), b"").expect("write standby.signal");
        give_to_server_user(&data.join("standby.signal"));
        let standby = Standby {
            bin_dir: primary.bin_dir().to_path_buf(),
            data,
            port,
            _dir: dir,
        };
        let mut cmd = as_postgres(&standby.bin_dir.join("pg_ctl"));
        cmd.args(["start", "-w", "-t", "120", "-l"])
            .arg(standby.data.with_file_name("standby.log"))
            .arg("-D")
            .arg(&standby.data);
        run_ok(cmd, "pg_ctl start (standby)");
        assert_eq!(standby.one("SELECT pg_is_in_recovery()"), "t");
        standby.catch_up(primary);
        standby
    }

    fn one(&self, sql: &str) -> String {
        one_at(self.port, sql)
    }

    /// Waits until the standby has replayed everything the primary wrote.
    fn catch_up(&self, primary: &PgCluster) {
        let lsn = primary.query_one("postgres", "SELECT pg_current_wal_lsn()");
        let deadline = Instant::now() + DEADLINE;
        while self.one(&format!(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}', false)"
        )) != "t"
        {
            assert!(
                Instant::now() < deadline,
                "the standby did not replay up to {lsn}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.data.with_file_name("standby.log")).unwrap_or_default()
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = pg_ctl_stop(&self.bin_dir, &self.data, "immediate");
    }
}

/// Runs `pgtide ARGS` (a `--json` command); if it has not finished after
/// `patience`, calls `unstick` once (e.g. a WAL switch on a primary) and
/// waits for the rest. Returns the output and whether it had to be unstuck.
fn run_unsticking(
    args: Vec<String>,
    patience: Duration,
    unstick: impl FnOnce(),
) -> (CliOutput, bool) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let out = Cli::new(&args).timeout(Duration::from_secs(240)).run();
        let _ = tx.send(());
        out
    });
    let stuck = rx.recv_timeout(patience).is_err();
    if stuck {
        unstick();
    }
    let out = worker
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    (out, stuck)
}

/// `pg_verifybackup -n` of PostgreSQL 18 (it reads the manifests of every
/// version; 15's refuses the version-2 manifests of 17+).
fn verifybackup(pgdata: &Path) {
    let out = clean_command(pg_tool(18, "pg_verifybackup"))
        .arg("-n")
        .arg(pgdata)
        .output()
        .expect("run pg_verifybackup");
    assert!(
        out.status.success(),
        "pg_verifybackup -n {} failed\n{}{}",
        pgdata.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A function in the source database (so the restored one has it too):
/// the md5 of every user table's rows, by table name.
const HASH_FN: &str = "
CREATE FUNCTION db_hash() RETURNS text LANGUAGE plpgsql AS $$
DECLARE r record; h text; acc text := '';
BEGIN
  FOR r IN SELECT format('%I.%I', n.nspname, c.relname) AS t
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           ORDER BY 1
  LOOP
    EXECUTE format('SELECT count(*)::text || coalesce(md5(string_agg(x::text, '','' ORDER BY x::text)), '''') FROM %s x', r.t) INTO h;
    acc := md5(acc || r.t || h);
  END LOOP;
  RETURN acc;
END $$;";

fn marker_sql(v: &str) -> String {
    format!("INSERT INTO m VALUES ('{v}')")
}

// ---------------------------------------------------------------------------
// A base backup taken from a standby
// ---------------------------------------------------------------------------

/// Primary + streaming standby; more than a segment of WAL written after the
/// standby's last restartpoint (no checkpoint on the primary since); then
/// `pgtide backup --db <standby>` with the primary idle. The backup must end
/// on its own (pg_basebackup does: the standby cannot switch WAL, so the
/// last segment of the range is never completed by an idle primary), carry
/// the primary's system identifier, pass pg_verifybackup and restore with
/// every row.
fn standby_backup(major: u32) {
    let pg = PgCluster::start(major);
    pg.execute(
        "postgres",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
             CREATE TABLE m (v text);
             {HASH_FN}"
        ),
    );
    let standby = Standby::create(&pg);
    // More than a segment of WAL after the standby's last restartpoint.
    pg.execute(
        "postgres",
        "CREATE TABLE big (id int, pad text);
         INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g;",
    );
    pg.execute("postgres", &marker_sql("before-backup"));
    standby.catch_up(&pg);
    let expected = pg.query_one("postgres", "SELECT db_hash()");
    let sysid = pg.query_one(
        "postgres",
        "SELECT system_identifier::text FROM pg_control_system()",
    );

    let work = work_dir("pgtide-rw-sb-");
    let repo = path_in(&work, "repo");
    let conn = conninfo_at(standby.port);
    let args: Vec<String> = ["backup", "--json", "--db", &conn, "--repo", &repo]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (out, stuck) = run_unsticking(args, Duration::from_secs(20), || {
        switch_wal(|q| pg.query_one("postgres", q));
    });
    out.assert_ok();
    let b = json(&out);
    assert_eq!(b["system_identifier"], sysid.as_str(), "{b:#}");
    assert_eq!(b["timeline"], 1, "{b:#}");
    pgtide(&["verify", b["id"].as_str().unwrap(), "--repo", &repo]).assert_ok();

    let pg_bin = pg.bin_dir().to_str().expect("utf-8").to_string();
    let files = restore(&repo, "latest", &["--pg-bin", &pg_bin], None);
    assert!(
        !files.pgdata.join("standby.signal").exists(),
        "standby.signal must not be restored"
    );
    verifybackup(&files.pgdata);
    drop(files);

    let r = restore(
        &repo,
        "latest",
        &["--pg-bin", &pg_bin],
        Some(pg.socket_dir()),
    );
    assert_eq!(r.psql("SELECT pg_is_in_recovery()"), "f", "{}", r.log());
    assert_eq!(r.psql("SELECT db_hash()"), expected, "{}", r.log());
    assert_eq!(r.markers(), ["before-backup"]);
    drop(r);
    assert!(
        !stuck,
        "`pgtide backup --db <standby>` did not finish while the primary was idle: it only \
         finished after a WAL switch on the primary\n{out}"
    );
}

#[test]
fn standby_backup_pg13() {
    standby_backup(13);
}

#[test]
fn standby_backup_pg15() {
    standby_backup(15);
}

#[test]
fn standby_backup_pg18() {
    standby_backup(18);
}

/// The usual split: `wal stream` archives the primary, backups are taken
/// from the standby with `--wal archive` into the same repository (same
/// system identifier), while the primary keeps writing. A PITR to a time
/// after the backup then replays primary WAL on top of the standby's files.
#[test]
fn standby_backup_with_wal_from_the_primary_streamer() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        &format!(
            "CREATE TABLE t (id serial PRIMARY KEY, v text);
             INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 5000) g;
             CREATE TABLE m (v text);
             {HASH_FN}"
        ),
    );
    let standby = Standby::create(&pg);
    let work = work_dir("pgtide-rw-sbarch-");
    let repo = path_in(&work, "repo");
    let streamer = Streamer::start(
        &pg.conninfo("postgres", "postgres"),
        &repo,
        "s",
        work.path(),
    );
    wait_until(
        &pg,
        "the streamer's slot becomes active",
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 's' AND active)",
    );
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                pg.execute(
                    "postgres",
                    "INSERT INTO t (v) SELECT 'during ' || g FROM generate_series(1, 200) g",
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let out = Cli::new([
            "backup",
            "--json",
            "--db",
            &conninfo_at(standby.port),
            "--repo",
            &repo,
            "--wal",
            "archive",
            "--wal-wait",
            "60s",
        ])
        .timeout(Duration::from_secs(200))
        .run();
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer thread");
        out
    });
    out.assert_ok();
    pg.execute("postgres", &marker_sql("after-backup"));
    let expected = pg.query_one("postgres", "SELECT db_hash()");
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &switched);

    let r = restore(&repo, "latest", &[], Some(pg.socket_dir()));
    assert_eq!(r.psql("SELECT db_hash()"), expected, "{}", r.log());
    assert_eq!(r.markers(), ["after-backup"]);
    drop(r);
    streamer.stop();
    drop(standby);
}

/// A failover the usual way: `wal stream` archives the primary, its async
/// standby lags (its receiver is cut off) while the primary writes and
/// `wal stream` archives more segments of timeline 1; the primary dies, the
/// standby is promoted (timeline 2 forks off *before* the end of what the
/// archive holds of timeline 1), and `wal stream --create-slot` is pointed
/// at the new primary, same repository. It must archive timeline 2, and a
/// restore of the newest point must come back with the rows of timeline 2.
fn failover(written_before_streaming: usize) {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE TABLE m (v text); CREATE TABLE w (id int, pad text);",
    );
    let standby = Standby::create(&pg);
    let work = work_dir("pgtide-rw-failover-");
    let repo = path_in(&work, "repo");
    let streamer = Streamer::start(
        &pg.conninfo("postgres", "postgres"),
        &repo,
        "s",
        work.path(),
    );
    wait_until(
        &pg,
        "the streamer's slot becomes active",
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 's' AND active)",
    );
    crate::pitr::backup(&pg.conninfo("postgres", "postgres"), &repo, &[]);
    pg.execute("postgres", &marker_sql("replicated"));
    standby.catch_up(&pg);

    // The standby stops receiving; the primary goes on, and is archived.
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(standby.data.join("postgresql.conf"))
        .unwrap();
    std::io::Write::write_all(&mut conf, b"\nprimary_conninfo = ''\n").unwrap();
    let mut cmd = as_postgres(&standby.bin_dir.join("pg_ctl"));
    cmd.arg("reload").arg("-D").arg(&standby.data);
    run_ok(cmd, "pg_ctl reload (standby)");
    let deadline = Instant::now() + DEADLINE;
    while standby.one("SELECT count(*) FROM pg_stat_wal_receiver") != "0" {
        assert!(Instant::now() < deadline, "the standby still receives");
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.execute("postgres", &marker_sql("lost-in-failover"));
    for _ in 0..2 {
        pg.execute(
            "postgres",
            "INSERT INTO w SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
        );
        switch_wal(|q| pg.query_one("postgres", q));
    }
    let last_tl1 = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &last_tl1);
    streamer.stop();
    pg.crash();

    let mut cmd = as_postgres(&standby.bin_dir.join("pg_ctl"));
    cmd.args(["promote", "-w", "-D"]).arg(&standby.data);
    run_ok(cmd, "pg_ctl promote (standby)");
    assert_eq!(standby.one("SELECT pg_is_in_recovery()"), "f");
    // The new primary may write for a while before `wal stream` is pointed
    // at it (the WAL stays in its pg_wal: wal_keep_size).
    for _ in 0..written_before_streaming {
        standby.one(
            "INSERT INTO w SELECT g, repeat('y', 100) FROM generate_series(1, 20000) g RETURNING 1",
        );
        standby.one("SELECT pg_switch_wal()");
    }
    let streamer = Streamer::start(&conninfo_at(standby.port), &repo, "s", work.path());
    standby.one("INSERT INTO m VALUES ('tl2') RETURNING v");
    let tl2 = standby.one("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(tl2.starts_with("00000002"), "{tl2}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let l = listing(&repo);
        let done = l["wal"].as_array().into_iter().flatten().any(|w| {
            w["timeline"].as_u64() == Some(2)
                && w["last"]
                    .as_str()
                    .is_some_and(|s| parse_segment(s).1 >= parse_segment(&tl2).1)
        });
        if done {
            break;
        }
        let out = streamer.output();
        assert!(
            Instant::now() < deadline && !out.contains("error: "),
            "`wal stream` on the promoted standby did not archive {tl2}\n\
             {l:#}\n--- wal stream ---\n{}",
            out
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = restore(&repo, "latest", &[], Some(pg.socket_dir()));
    assert_eq!(r.markers(), ["replicated", "tl2"], "{}", r.log());
    drop(r);
    streamer.stop();
}

#[test]
fn wal_stream_follows_a_failover_to_a_lagging_standby() {
    failover(0);
}

/// The same, with the new primary writing more than the archive's extra
/// timeline-1 WAL before `wal stream` is pointed at it.
#[test]
fn wal_stream_follows_a_failover_after_the_new_primary_wrote() {
    failover(4);
}

/// Archiving off-loaded to the standby: `wal stream --create-slot` runs
/// against the standby (a slot on the standby, cascading replication), a
/// backup is taken from the standby too (`--wal archive`); then the primary
/// dies and the standby is promoted under the running streamer, which must
/// follow it onto timeline 2 by itself.
fn stream_from_a_standby_through_its_promotion(major: u32) {
    let pg = PgCluster::start(major);
    pg.execute(
        "postgres",
        "CREATE TABLE m (v text); CREATE TABLE w (id int, pad text);",
    );
    let standby = Standby::create(&pg);
    let work = work_dir("pgtide-rw-sbstream-");
    let repo = path_in(&work, "repo");
    let streamer = Streamer::start(&conninfo_at(standby.port), &repo, "s", work.path());
    let deadline = Instant::now() + DEADLINE;
    while standby.one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's' AND active")
        != "1"
    {
        assert!(
            Instant::now() < deadline,
            "slot s on the standby never became active\n{}",
            streamer.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.execute("postgres", &marker_sql("tl1"));
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    standby.catch_up(&pg);
    wait_archived(&repo, &switched);
    let pg_bin = pg.bin_dir().to_str().unwrap().to_string();

    pg.crash();
    let mut cmd = as_postgres(&standby.bin_dir.join("pg_ctl"));
    cmd.args(["promote", "-w", "-D"]).arg(&standby.data);
    run_ok(cmd, "pg_ctl promote (standby)");
    standby.one("INSERT INTO m VALUES ('tl2') RETURNING v");
    let tl2 = standby.one("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(tl2.starts_with("00000002"), "{tl2}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let l = listing(&repo);
        let done = l["wal"].as_array().into_iter().flatten().any(|w| {
            w["timeline"].as_u64() == Some(2)
                && w["last"]
                    .as_str()
                    .is_some_and(|s| parse_segment(s).1 >= parse_segment(&tl2).1)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`wal stream` did not follow the promotion to {tl2}\n{l:#}\n--- wal stream ---\n{}",
            streamer.output()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A backup of the new primary, then the newest point from the oldest WAL.
    crate::pitr::backup(
        &conninfo_at(standby.port),
        &repo,
        &["--wal", "archive", "--wal-wait", "60s"],
    );
    standby.one("INSERT INTO m VALUES ('tl2-after-backup') RETURNING v");
    let last = standby.one("SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(&repo, &last);
    let r = restore(
        &repo,
        "latest",
        &["--pg-bin", &pg_bin],
        Some(pg.socket_dir()),
    );
    assert_eq!(
        r.markers(),
        ["tl1", "tl2", "tl2-after-backup"],
        "{}",
        r.log()
    );
    drop(r);
    streamer.stop();
}

#[test]
fn wal_stream_from_a_standby_follows_its_promotion_pg14() {
    stream_from_a_standby_through_its_promotion(14);
}

#[test]
fn wal_stream_from_a_standby_follows_its_promotion_pg16() {
    stream_from_a_standby_through_its_promotion(16);
}

// ---------------------------------------------------------------------------
// Tablespaces, many files, every backup option
// ---------------------------------------------------------------------------

/// A dir under `work` owned by the server's OS user.
fn server_dir(work: &tempfile::TempDir, name: &str) -> PathBuf {
    let d = work.path().join(name);
    fs::create_dir(&d).expect("create dir");
    give_to_server_user(&d);
    d
}

/// Two user tablespaces (one holding a ~100 MB table, one 1500 small tables
/// with indexes, i.e. several thousand files), a database whose default
/// tablespace is one of them, and 1500 more small tables in the main
/// directory. Backed up with `--compress none --checkpoint spread` and with
/// `--server-compress zstd:3 --max-rate 64MiB --chunk-size 1MiB`; each
/// restored with both tablespaces moved (by oid and by path), checked by
/// pg_verifybackup, one of them started and compared row for row.
#[test]
fn two_tablespaces_and_many_files_under_every_backup_option() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-rw-ts-");
    let ts1 = server_dir(&work, "ts1");
    let ts2 = server_dir(&work, "ts2");
    for (name, dir) in [("ts1", &ts1), ("ts2", &ts2)] {
        pg.execute(
            "postgres",
            &format!("CREATE TABLESPACE {name} LOCATION '{}'", dir.display()),
        );
    }
    pg.execute("postgres", "CREATE DATABASE other TABLESPACE ts2");
    pg.execute(
        "postgres",
        &format!(
            "CREATE TABLE m (v text);
             CREATE TABLE big (id bigint PRIMARY KEY, pad text) TABLESPACE ts1;
             INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 700000) g;
             DO $$ BEGIN
               FOR i IN 1..1500 LOOP
                 EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, v text) TABLESPACE ts2', i);
                 EXECUTE format('INSERT INTO small_%s SELECT g, %L FROM generate_series(1, %s) g', i, i::text, i % 7 + 1);
               END LOOP;
               FOR i IN 1..1500 LOOP
                 EXECUTE format('CREATE TABLE main_%s (id int, v text)', i);
                 EXECUTE format('INSERT INTO main_%s VALUES (%s, %L)', i, i, md5(i::text));
               END LOOP;
             END $$;
             {HASH_FN}"
        ),
    );
    pg.execute("postgres", "VACUUM");
    pg.execute(
        "other",
        "CREATE TABLE o (id int PRIMARY KEY, v text);
         INSERT INTO o SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
    pg.execute("postgres", &marker_sql("in-backup"));
    let expected = pg.query_one("postgres", "SELECT db_hash()");
    let other = pg.query_one(
        "other",
        "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM o",
    );
    let big_size: u64 = pg
        .query_one("postgres", "SELECT pg_relation_size('big')")
        .parse()
        .unwrap();
    assert!(big_size > 80 << 20, "big is only {big_size} bytes");
    let oid1 = pg.query_one(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'",
    );
    let repo = path_in(&work, "repo");
    let conn = pg.conninfo("postgres", "postgres");

    // Spread checkpoint: nothing dirty, so it does not take 0.9 ×
    // checkpoint_timeout.
    pg.execute("postgres", "CHECKPOINT");
    let plain = crate::pitr::backup(
        &conn,
        &repo,
        &[
            "--compress",
            "none",
            "--checkpoint",
            "spread",
            "--name",
            "plain",
        ],
    );
    let squeezed = crate::pitr::backup(
        &conn,
        &repo,
        &[
            "--server-compress",
            "zstd:3",
            "--max-rate",
            "64MiB",
            "--chunk-size",
            "1MiB",
            "--compress",
            "zstd:3",
        ],
    );
    for b in [&plain, &squeezed] {
        assert!(b["files"].as_u64().unwrap() > 6000, "{b:#}");
        pgtide(&["verify", b["id"].as_str().unwrap(), "--repo", &repo]).assert_ok();
    }
    let info = pgtide(&[
        "info",
        "--json",
        plain["id"].as_str().unwrap(),
        "--repo",
        &repo,
    ]);
    info.assert_ok();

    let dest = work_dir("pgtide-rw-ts-dest-");
    for (i, b) in [&plain, &squeezed].into_iter().enumerate() {
        let d1 = dest.path().join(format!("ts1-{i}"));
        let d2 = dest.path().join(format!("ts2-{i}"));
        let map1 = format!("{oid1}={}", d1.display());
        let map2 = format!("{}={}", ts2.display(), d2.display());
        let id = b["id"].as_str().unwrap();
        let start = (i == 1).then(|| pg.socket_dir());
        let r: Restored = restore(
            &repo,
            id,
            &["--tablespace-map", &map1, "--tablespace-map", &map2],
            start,
        );
        assert_eq!(
            fs::read_link(r.pgdata.join("pg_tblspc").join(&oid1)).unwrap(),
            d1
        );
        if start.is_none() {
            verifybackup(&r.pgdata);
            // The big table's files are byte-identical to the source's.
            let rel = pg.query_one("postgres", "SELECT pg_relation_filepath('big')");
            let src = pg.data_dir().join(&rel);
            let src_len = fs::metadata(&src).unwrap().len();
            let dst_len = fs::metadata(r.pgdata.join(&rel)).unwrap().len();
            assert_eq!(src_len, dst_len, "{rel}");
            continue;
        }
        assert_eq!(r.psql("SELECT db_hash()"), expected, "{}", r.log());
        assert_eq!(r.markers(), ["in-backup"]);
        let out = clean_command(pg_tool(15, "psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "other",
            ])
            .arg("-p")
            .arg(r.port.to_string())
            .arg("-c")
            .arg("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM o")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), other);
        assert_eq!(
            r.psql("SELECT string_agg(pg_tablespace_location(oid), ',' ORDER BY spcname) FROM pg_tablespace WHERE spcname LIKE 'ts%'"),
            format!("{},{}", d1.display(), d2.display())
        );
    }
}

/// The same shape, small, on the versions with the old BASE_BACKUP
/// protocol (one tar stream per tablespace, 13) and the newest (18; its
/// PyPI build has no zstd, so no server-side compression): both tablespaces
/// moved, pg_verifybackup, start, every row.
fn two_tablespaces_small(major: u32) {
    let pg = PgCluster::start(major);
    let work = work_dir("pgtide-rw-ts-small-");
    let ts1 = server_dir(&work, "ts1");
    let ts2 = server_dir(&work, "ts2");
    for (name, dir) in [("ts1", &ts1), ("ts2", &ts2)] {
        pg.execute(
            "postgres",
            &format!("CREATE TABLESPACE {name} LOCATION '{}'", dir.display()),
        );
    }
    pg.execute(
        "postgres",
        &format!(
            "CREATE TABLE m (v text) TABLESPACE ts2;
             INSERT INTO m VALUES ('in-backup');
             CREATE TABLE a (id int PRIMARY KEY USING INDEX TABLESPACE ts2, v text) TABLESPACE ts1;
             INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 30000) g;
             {HASH_FN}"
        ),
    );
    let expected = pg.query_one("postgres", "SELECT db_hash()");
    let oids: Vec<String> = ["ts1", "ts2"]
        .iter()
        .map(|n| {
            pg.query_one(
                "postgres",
                &format!("SELECT oid FROM pg_tablespace WHERE spcname = '{n}'"),
            )
        })
        .collect();
    let repo = path_in(&work, "repo");
    let b = crate::pitr::backup(
        &pg.conninfo("postgres", "postgres"),
        &repo,
        &["--compress", "none"],
    );
    let dest = work_dir("pgtide-rw-ts-small-dest-");
    let d1 = dest.path().join("one");
    let d2 = dest.path().join("two");
    let map1 = format!("{}={}", oids[0], d1.display());
    let map2 = format!("{}={}", oids[1], d2.display());
    let pg_bin = pg.bin_dir().to_str().unwrap().to_string();
    let args = [
        "--tablespace-map",
        &map1,
        "--tablespace-map",
        &map2,
        "--pg-bin",
        &pg_bin,
    ];
    let files = restore(&repo, b["id"].as_str().unwrap(), &args, None);
    for (oid, d) in oids.iter().zip([&d1, &d2]) {
        assert_eq!(
            fs::read_link(files.pgdata.join("pg_tblspc").join(oid)).unwrap(),
            *d
        );
    }
    verifybackup(&files.pgdata);
    drop(files);
    fs::remove_dir_all(&d1).unwrap();
    fs::remove_dir_all(&d2).unwrap();
    let r = restore(
        &repo,
        b["id"].as_str().unwrap(),
        &args,
        Some(pg.socket_dir()),
    );
    assert_eq!(r.psql("SELECT db_hash()"), expected, "{}", r.log());
    assert_eq!(r.markers(), ["in-backup"]);
}

#[test]
fn two_tablespaces_moved_pg13() {
    two_tablespaces_small(13);
}

#[test]
fn two_tablespaces_moved_pg18() {
    two_tablespaces_small(18);
}

// ---------------------------------------------------------------------------
// wal stream on a slot that retained WAL long before the streamer started
// ---------------------------------------------------------------------------

/// A slot created (SQL, reserving WAL) long before `wal stream` first runs
/// on it; several segments written and switched meanwhile. The streamer
/// must archive everything from the slot's restart LSN on, with no gap.
fn stream_from_an_old_slot(major: u32) {
    let pg = PgCluster::start(major);
    pg.execute(
        "postgres",
        "SELECT pg_create_physical_replication_slot('old', true);
         CREATE TABLE w (id int, pad text);",
    );
    let restart = pg.query_one(
        "postgres",
        "SELECT pg_walfile_name(restart_lsn) FROM pg_replication_slots WHERE slot_name = 'old'",
    );
    for i in 0..4 {
        pg.execute(
            "postgres",
            &format!("INSERT INTO w SELECT g, repeat('{i}', 100) FROM generate_series(1, 20000) g"),
        );
        switch_wal(|q| pg.query_one("postgres", q));
    }
    pg.execute("postgres", "INSERT INTO w VALUES (-1, 'tail')");
    let last = switch_wal(|q| pg.query_one("postgres", q));
    assert!(
        parse_segment(&last).1 >= parse_segment(&restart).1 + 4,
        "{restart}..{last}"
    );

    let work = work_dir("pgtide-rw-oldslot-");
    let repo = path_in(&work, "repo");
    // No --create-slot: the slot exists.
    let args = [
        "wal",
        "stream",
        "--db",
        &pg.conninfo("postgres", "postgres"),
        "--repo",
        &repo,
        "--slot",
        "old",
        "--partial-interval",
        "1s",
        "--status-interval",
        "1s",
    ];
    let log = work.path().join("stream.log");
    let file = fs::File::create(&log).unwrap();
    let mut child = clean_command(PGTIDE_BIN)
        .args(args)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start wal stream");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    wait_until(
        &pg,
        "the streamer's slot becomes active",
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'old' AND active)",
    );
    // One more segment, written while the streamer runs.
    pg.execute("postgres", "INSERT INTO w VALUES (-2, 'streamed')");
    let last = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &last);
    drop(guard);
    let l = listing(&repo);
    let (tli, first) = parse_segment(&restart);
    let mut missing = Vec::new();
    for segno in first..=parse_segment(&last).1 {
        let name = segment_name(tli, segno);
        let dest = work.path().join(&name);
        let out = pgtide(&[
            "wal",
            "fetch",
            "--repo",
            &repo,
            "--prefetch",
            "0",
            &name,
            dest.to_str().unwrap(),
        ]);
        if out.code == Some(1) {
            missing.push(name);
        } else {
            out.assert_ok();
        }
    }
    assert!(
        missing.is_empty(),
        "WAL the slot retained since {restart} was never archived: {missing:?}\n{l:#}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    if major == 15 {
        crate::pitr::assert_waldump(&repo, &restart, &last);
    }
}

#[test]
fn wal_stream_archives_what_an_old_slot_retained_pg14() {
    stream_from_an_old_slot(14);
}

#[test]
fn wal_stream_archives_what_an_old_slot_retained_pg15() {
    stream_from_an_old_slot(15);
}

/// The archive ends long before the slot's restart point and the server has
/// removed the WAL in between (the streamer was down, its slot dropped and
/// created again): `wal stream` tries the archive's end, is told the WAL is
/// gone, says so, and archives from the slot's restart point instead of
/// giving up.
#[test]
fn wal_stream_continues_from_the_slot_after_a_gap() {
    let pg = PgCluster::start(15);
    pg.execute("postgres", "CREATE TABLE w (id int, pad text)");
    let work = work_dir("pgtide-rw-gap-");
    let repo = path_in(&work, "repo");
    let conn = pg.conninfo("postgres", "postgres");
    let active =
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 's' AND active)";
    let streamer = Streamer::start(&conn, &repo, "s", work.path());
    wait_until(&pg, "the streamer's slot becomes active", active);
    let first = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &first);
    streamer.stop();
    pg.execute("postgres", "SELECT pg_drop_replication_slot('s')");
    // Enough WAL and checkpoints for the server to remove what followed.
    for _ in 0..4 {
        pg.execute(
            "postgres",
            "INSERT INTO w SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
        );
        switch_wal(|q| pg.query_one("postgres", q));
        pg.execute("postgres", "CHECKPOINT");
    }
    let oldest = pg.query_one(
        "postgres",
        "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
    );
    assert!(
        parse_segment(&oldest).1 > parse_segment(&first).1 + 1,
        "the server still has the WAL after {first} (oldest {oldest})"
    );
    let streamer = Streamer::start(&conn, &repo, "s", work.path());
    wait_until(&pg, "the streamer's slot becomes active", active);
    pg.execute("postgres", "INSERT INTO w VALUES (-1, 'after the gap')");
    let last = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &last);
    let out = streamer.stop();
    assert!(
        out.contains("no longer has the WAL") && out.contains("gap"),
        "the gap was not reported\n{out}"
    );
}

// ---------------------------------------------------------------------------
// archive_command under load as the only WAL source
// ---------------------------------------------------------------------------

/// `archive_command = pgtide wal push` while writers run; a backup with
/// `--wal archive` during the load; then PITR to an xid (promote) and to
/// the end of the backup (`--target-immediate`, pause) using only what
/// archive_command pushed (no streamer anywhere).
#[test]
fn archive_command_under_load_is_enough_for_pitr() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-rw-push-");
    let repo = path_in(&work, "repo");
    fs::create_dir(&repo).unwrap();
    give_to_server_user(Path::new(&repo));
    pg.set_conf("archive_mode", "on");
    pg.set_conf(
        "archive_command",
        &format!("'{PGTIDE_BIN}' wal push --repo '{repo}' %p"),
    );
    pg.set_conf("archive_timeout", "0");
    pg.restart();
    pg.execute(
        "postgres",
        &format!(
            "CREATE TABLE t (id serial PRIMARY KEY, w int, v text);
             CREATE TABLE m (v text);
             {HASH_FN}"
        ),
    );
    let stop = AtomicBool::new(false);
    let b = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (pg, stop) = (&pg, &stop);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        pg.execute(
                            "postgres",
                            &format!(
                                "INSERT INTO t (w, v) SELECT {w}, repeat(md5(g::text), 2) FROM generate_series(1, 300) g"
                            ),
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let b = crate::pitr::backup(
            &pg.conninfo("postgres", "postgres"),
            &repo,
            &["--wal", "archive", "--wal-wait", "90s"],
        );
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer");
        }
        b
    });
    let xid = pg.query_one(
        "postgres",
        "INSERT INTO m VALUES ('at-xid') RETURNING txid_current()",
    );
    let expected = pg.query_one("postgres", "SELECT db_hash()");
    pg.execute("postgres", &marker_sql("after-xid"));
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_until(
        &pg,
        "archive_command archives the switched segment",
        &format!("SELECT coalesce(last_archived_wal >= '{switched}', false) FROM pg_stat_archiver"),
    );
    assert_eq!(
        pg.query_one("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "{}",
        pg.log()
    );
    let l = listing(&repo);
    assert!(l["wal"].as_array().map(Vec::len).unwrap_or(0) >= 1, "{l:#}");
    // Every segment from the backup's start to the switch is there.
    crate::pitr::assert_waldump(&repo, b["wal_start"].as_str().unwrap(), &switched);

    let r = restore(
        &repo,
        "latest",
        &["--target-xid", &xid],
        Some(pg.socket_dir()),
    );
    assert_eq!(r.markers(), ["at-xid"], "{}", r.log());
    assert_eq!(r.psql("SELECT db_hash()"), expected, "{}", r.log());
    drop(r);

    let r = restore(
        &repo,
        "latest",
        &["--target-immediate", "--target-action", "pause"],
        Some(pg.socket_dir()),
    );
    assert_eq!(r.psql("SELECT pg_is_in_recovery()"), "t", "{}", r.log());
    assert_eq!(r.markers(), Vec::<String>::new());
    drop(r);
}

// ---------------------------------------------------------------------------
// One repository, one cluster
// ---------------------------------------------------------------------------

/// A repository holding cluster A's backup: a standby of another cluster B
/// (whose backups and WAL would mix with A's) is refused by `backup` and
/// `wal stream` with one error line and exit 4, leaving nothing behind;
/// `wal fetch` of what the archive does not hold (a segment, a history
/// file PostgreSQL probes for with `recovery_target_timeline = latest`)
/// exits 1 and prints nothing.
#[test]
fn repository_refuses_a_standby_of_another_cluster() {
    let a = PgCluster::start(15);
    let b = PgCluster::start(15);
    let b_standby = Standby::create(&b);
    let work = work_dir("pgtide-rw-other-");
    let repo = path_in(&work, "repo");
    let first = crate::pitr::backup(&a.conninfo("postgres", "postgres"), &repo, &[]);
    let conn = conninfo_at(b_standby.port);
    pgtide(&["backup", "--db", &conn, "--repo", &repo])
        .assert_one_line_error(4, "belongs to the cluster with system identifier");
    pgtide(&[
        "wal",
        "stream",
        "--db",
        &conn,
        "--repo",
        &repo,
        "--slot",
        "s",
        "--create-slot",
    ])
    .assert_one_line_error(4, "belongs to the cluster with system identifier");
    assert_eq!(
        b_standby.one("SELECT count(*) FROM pg_replication_slots"),
        "0",
        "a refused command left a slot on the standby"
    );
    let l = listing(&repo);
    assert_eq!(l["backups"].as_array().map(Vec::len), Some(1), "{l:#}");
    assert_eq!(l["incomplete"].as_array().map(Vec::len), Some(0), "{l:#}");
    assert_eq!(l["backups"][0]["id"], first["id"]);

    let (tli, segno) = parse_segment(first["wal_end"].as_str().unwrap());
    for name in [
        segment_name(tli, segno + 50),
        "00000002.history".to_string(),
    ] {
        let dest = work.path().join(&name);
        let out = pgtide(&[
            "wal",
            "fetch",
            "--repo",
            &repo,
            &name,
            dest.to_str().unwrap(),
        ]);
        out.assert_exit(1);
        assert_eq!(out.stderr, "", "{out}");
        assert!(!dest.exists());
    }
}
