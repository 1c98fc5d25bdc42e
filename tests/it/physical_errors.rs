//! Physical backup, WAL streaming and point-in-time restore refusing what
//! they cannot do: each ends in one `error: ` line with the exit code of
//! src/cli/exit.rs, never a hang or a panic.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::harness::cli::pgtide;
use crate::harness::pg::{PgCluster, MD5_USER, PASSWORD};
use crate::pitr::{backup, json, path_in, restore, stop_server, wait_until, work_dir, Streamer};

/// `backup` and `wal stream` both fail with `code` and `contains`.
fn both_refused(conn: &str, repo: &str, code: i32, contains: &str) {
    pgtide(&["backup", "--db", conn, "--repo", repo]).assert_one_line_error(code, contains);
    pgtide(&[
        "wal",
        "stream",
        "--db",
        conn,
        "--repo",
        repo,
        "--slot",
        "s",
        "--create-slot",
    ])
    .assert_one_line_error(code, contains);
}

/// A role that may log in but lacks REPLICATION: exit 3, saying so.
#[test]
fn role_without_replication_is_refused() {
    let pg = PgCluster::start(15);
    pg.execute("postgres", &format!("ALTER ROLE {MD5_USER} NOREPLICATION"));
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    let conn = format!(
        "postgres://{MD5_USER}:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port()
    );
    both_refused(&conn, &repo, 3, "REPLICATION");
    // A fresh role (pg_hba's catch-all md5 lines cover replication too).
    pg.execute("postgres", "CREATE ROLE plain LOGIN PASSWORD 'plain-pw'");
    let conn = format!("postgres://plain:plain-pw@127.0.0.1:{}/postgres", pg.port());
    both_refused(&conn, &repo, 3, "REPLICATION");
}

/// `max_wal_senders = 0`, then `wal_level = minimal`: exit 3, naming the
/// setting to change.
#[test]
fn server_without_replication_is_refused() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    let conn = pg.conninfo("postgres", "postgres");
    pg.set_conf("max_wal_senders", "0");
    pg.restart();
    both_refused(&conn, &repo, 3, "max_wal_senders");

    // wal_level = minimal needs max_wal_senders = 0 and no archiving.
    pg.set_conf("wal_level", "minimal");
    pg.set_conf("archive_mode", "off");
    pg.restart();
    assert_eq!(pg.query_one("postgres", "SHOW wal_level"), "minimal");
    both_refused(&conn, &repo, 3, "wal_level = replica");
    assert!(
        !Path::new(&repo).join("backups").exists()
            || fs::read_dir(Path::new(&repo).join("backups"))
                .unwrap()
                .next()
                .is_none(),
        "a refused backup left objects behind"
    );
}

/// Two `wal stream` on one slot: the second must fail (exit 6, "in use")
/// rather than wait forever.
#[test]
fn second_streamer_on_an_active_slot_fails() {
    let pg = PgCluster::start(15);
    // A short sender timeout: a bounded retry (waiting for a dead walsender
    // to be noticed) would also end well within the limit below.
    pg.set_conf("wal_sender_timeout", "5s");
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    let conn = pg.conninfo("postgres", "postgres");
    let first = Streamer::start(&conn, &repo, "s", work.path());
    wait_until(
        &pg,
        "the first streamer's slot becomes active",
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 's' AND active)",
    );
    let second = Streamer::start(&conn, &repo, "s", work.path());
    match second.wait_exit(Duration::from_secs(60)) {
        Ok((code, out)) => {
            assert_eq!(code, Some(6), "{out}");
            let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
            assert_eq!(errors.len(), 1, "{out}");
            assert!(errors[0].contains("in use"), "{out}");
        }
        Err(out) => panic!("the second `wal stream` on slot s was still running after 60 s\n{out}"),
    }
    first.stop();
}

/// Backups and WAL of cluster B into cluster A's repository: exit 4.
#[test]
fn repository_of_another_cluster_is_refused() {
    let a = PgCluster::start(15);
    let b = PgCluster::start(15);
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    backup(&a.conninfo("postgres", "postgres"), &repo, &[]);
    let conn_b = b.conninfo("postgres", "postgres");
    both_refused(
        &conn_b,
        &repo,
        4,
        "belongs to the cluster with system identifier",
    );
    // A segment of B handed to archive_command.
    let seg = b.query_one("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    let copy_dir = work_dir("pgtide-phys-err-seg-");
    let copy = copy_dir.path().join(&seg);
    fs::copy(b.data_dir().join("pg_wal").join(&seg), &copy).expect("copy B's segment");
    pgtide(&["wal", "push", "--repo", &repo, copy.to_str().unwrap()])
        .assert_one_line_error(4, "belongs to the cluster with system identifier");
    let l = crate::pitr::listing(&repo);
    assert_eq!(l["backups"].as_array().map(Vec::len), Some(1), "{l:#}");
}

/// Restores that cannot be done: a non-empty --pgdata (exit 6), a target
/// before the oldest backup (exit 4), a target past the end of the archive
/// (recovery refuses to end early: exit 1, PostgreSQL's reason).
#[test]
fn restore_refuses_what_it_cannot_reach() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    let b = backup(&pg.conninfo("postgres", "postgres"), &repo, &[]);
    let id = b["id"].as_str().unwrap().to_string();

    // Non-empty --pgdata without --force; with it, the contents go.
    let pgdata = work.path().join("data");
    fs::create_dir(&pgdata).unwrap();
    fs::write(pgdata.join("precious"), b"keep me").unwrap();
    let pgdata_s = pgdata.to_str().unwrap();
    pgtide(&["restore", "latest", "--repo", &repo, "--pgdata", pgdata_s])
        .assert_one_line_error(6, "--force");
    assert_eq!(fs::read(pgdata.join("precious")).unwrap(), b"keep me");
    pgtide(&[
        "restore", &id, "--repo", &repo, "--pgdata", pgdata_s, "--force",
    ])
    .assert_ok();
    assert!(!pgdata.join("precious").exists());
    assert!(pgdata.join("PG_VERSION").is_file());

    // Before the oldest backup, by time and by LSN.
    let fresh = path_in(&work, "fresh");
    pgtide(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--pgdata",
        &fresh,
        "--target-time",
        "2001-02-03 04:05:06+00",
    ])
    .assert_one_line_error(4, "before the oldest base backup");
    pgtide(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--pgdata",
        &fresh,
        "--target-lsn",
        "0/10",
    ])
    .assert_one_line_error(4, "before the oldest base backup");
    assert!(
        !Path::new(&fresh).exists(),
        "a refused restore wrote {fresh}"
    );

    // A target after the end of the archive: PostgreSQL 13+ will not end
    // recovery before it, and pgtide reports why.
    let future = pg.query_one(
        "postgres",
        "SELECT (now() + interval '1 day')::timestamptz(0)::text",
    );
    let late = work_dir("pgtide-phys-err-late-");
    let late_data = late.path().join("data");
    /// Stops a server left running on a failed assertion.
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            stop_server(self.0);
        }
    }
    let _stop = Stop(&late_data);
    let port = crate::pitr::free_port();
    let out = pgtide(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--pgdata",
        late_data.to_str().unwrap(),
        "--target-time",
        &future,
        "--start",
        "--set",
        &format!("port={port}"),
    ]);
    out.assert_one_line_error(1, "recovery target was reached");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while late_data.join("postmaster.pid").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server must not be left running\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The same with a restore that succeeds (bounded by the harness timeout).
    let ok = restore(
        &repo,
        "latest",
        &["--target-immediate"],
        Some(pg.socket_dir()),
    );
    assert_eq!(ok.report["started"], true);
}

/// A damaged WAL object that a backup needs: `verify` reports it (exit 5),
/// `wal fetch` refuses to serve it (exit 126).
#[test]
fn corrupt_wal_object_is_reported() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    let b = backup(&pg.conninfo("postgres", "postgres"), &repo, &[]);
    let id = b["id"].as_str().unwrap().to_string();
    let wal_start = b["wal_start"].as_str().unwrap().to_string();
    pgtide(&["verify", &id, "--repo", &repo]).assert_ok();

    let stored = Path::new(&repo)
        .join("wal")
        .join(&wal_start[..8])
        .join(&wal_start);
    let mut obj = fs::read(&stored).expect("the backup's first WAL object");
    let at = obj.len() / 2;
    obj[at] ^= 0x01;
    fs::write(&stored, &obj).unwrap();

    let out = pgtide(&["verify", "--json", &id, "--repo", &repo]);
    out.assert_exit(5);
    let report = json(&out);
    assert_eq!(report["ok"], false);
    let problems = report["problems"].to_string();
    assert!(problems.contains(&wal_start), "{out}");
    pgtide(&["verify", &id, "--repo", &repo]).assert_one_line_error(5, "damaged");

    let dest = work.path().join(&wal_start);
    pgtide(&[
        "wal",
        "fetch",
        "--repo",
        &repo,
        "--prefetch",
        "0",
        &wal_start,
        dest.to_str().unwrap(),
    ])
    .assert_one_line_error(126, "damaged");
    assert!(!dest.exists());
}

/// A damaged base backup: a flipped byte in a pack and a truncated pack are
/// both refused by `restore --pgdata` with exit 5, naming the pack, and by
/// `verify`.
#[test]
fn corrupt_backup_pack_is_refused_by_restore() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-phys-corrupt-");
    let repo = path_in(&work, "repo");
    let b = backup(&pg.conninfo("postgres", "postgres"), &repo, &[]);
    let id = b["id"].as_str().unwrap().to_string();
    let packs_dir = Path::new(&repo).join("backups").join(&id).join("packs");
    let mut packs: Vec<_> = fs::read_dir(&packs_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    let largest = packs[0].clone();
    let original = fs::read(&largest).unwrap();

    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    fs::write(&largest, &bad).unwrap();
    pgtide(&["verify", &id, "--repo", &repo]).assert_one_line_error(5, "damaged");
    let out = pgtide(&[
        "restore",
        &id,
        "--repo",
        &repo,
        "--pgdata",
        &path_in(&work, "flipped"),
    ]);
    out.assert_exit(5);
    let line = out.error_line().unwrap();
    assert!(
        line.contains("corrupt chunk") && line.contains(".pack"),
        "{out}"
    );

    fs::write(&largest, &original[..original.len() / 2]).unwrap();
    let out = pgtide(&[
        "restore",
        &id,
        "--repo",
        &repo,
        "--pgdata",
        &path_in(&work, "truncated"),
    ]);
    out.assert_one_line_error(5, "backup ");
    assert!(out.stderr.contains("is damaged: pack"), "{out}");

    // Put back, the same restore succeeds and pg_verifybackup agrees.
    fs::write(&largest, &original).unwrap();
    let good = path_in(&work, "good");
    pgtide(&["restore", &id, "--repo", &repo, "--pgdata", &good]).assert_ok();
    let out = std::process::Command::new(pg.bin_dir().join("pg_verifybackup"))
        .args(["-n", &good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_verifybackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A slot name PostgreSQL would refuse is a bad command line (exit 2),
/// refused before any slot is created.
#[test]
fn invalid_slot_name_is_a_usage_error() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    let conn = pg.conninfo("postgres", "postgres");
    pgtide(&[
        "wal",
        "stream",
        "--db",
        &conn,
        "--repo",
        &repo,
        "--slot",
        "Bad-Slot",
        "--create-slot",
    ])
    .assert_one_line_error(2, "invalid replication slot name \"Bad-Slot\"");
    assert_eq!(
        pg.query_one("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

/// A connection lost in the middle of a base backup is not "cannot connect"
/// (exit 3): the connection was made, then broke (exit 1).
#[test]
fn connection_lost_mid_backup_exits_1() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-phys-err-");
    let repo = path_in(&work, "repo");
    let relay = crate::harness::cut::Relay::start(pg.port());
    // A fresh cluster's base backup is over 20 MB: cut after 2 MB.
    relay.cut_after_server_bytes(2 << 20);
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        relay.port()
    );
    pgtide(&["backup", "--db", &conn, "--repo", &repo]).assert_one_line_error(1, "was lost");
    assert_eq!(relay.cuts(), 1);
}
