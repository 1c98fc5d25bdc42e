//! One way to stop: a logical restore, a verify and a physical restore
//! stopped by SIGINT or SIGTERM in the middle of their work (held there by
//! the debug-build hook `PGTIDE_TEST_PAUSE`, as a slow server or store would
//! hold them) exit 130 with `error: interrupted`, once their workers have
//! ended, and leave what the README says: the logical restore's target as
//! it stood (the part being loaded rolled back, no session of pgtide left),
//! nothing changed by verify, the physical restore's directories as the
//! restore found them. The drill and the table restore are stopped in
//! drill.rs and table_pitr.rs.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::cli::{pgtide, Cli};
use crate::harness::pg::{pg_dump_bin, PgCluster};
use crate::pitr::{backup, json, path_in, work_dir};

/// The one `error: interrupted` line and exit 130.
#[track_caller]
fn assert_interrupted(out: &crate::harness::cli::CliOutput) {
    out.assert_one_line_error(130, "interrupted");
    assert_eq!(out.error_line(), Some("error: interrupted"), "{out}");
}

/// Every file under `dir`, relative, sorted (directories too).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Sessions of pgtide on the server, waited for (a backend notices that
/// its client is gone when it next reads) for up to 30 s.
fn wait_no_pgtide_session(pg: &PgCluster) {
    let sql = "SELECT count(*)::text FROM pg_stat_activity \
               WHERE application_name LIKE 'pgtide %'";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = pg.query_one("postgres", sql);
        if n == "0" {
            return;
        }
        assert!(Instant::now() < deadline, "{n} sessions of pgtide left");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A dump stopped mid-COPY: the table being loaded stays empty (its
/// transaction rolled back), the workers' sessions are gone, no temporary
/// file is left; restoring again with --clean gives every row. Verify
/// stopped mid-read changes nothing.
#[test]
fn a_logical_restore_and_a_verify_stop_on_a_signal() {
    let pg = PgCluster::start(15);
    pg.create_db("src");
    pg.execute(
        "src",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 30000) g;
         CREATE TABLE u (id int);
         INSERT INTO u SELECT generate_series(1, 1000);",
    );
    let work = work_dir("pgtide-stop-");
    let repo = path_in(&work, "repo");
    let tmp = work.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let pg_dump = pg_dump_bin(15);
    let pg_dump = pg_dump.to_str().unwrap();
    let out = pgtide(&[
        "dump",
        "--json",
        "--db",
        &pg.conninfo("postgres", "src"),
        "--repo",
        &repo,
        "--chunk-size",
        "64KiB",
        "--pg-dump",
        pg_dump,
    ]);
    out.assert_ok();
    let id = json(&out)["id"].as_str().unwrap().to_string();

    for signal in ["INT", "TERM"] {
        let db = format!("dst_{}", signal.to_lowercase());
        let mut cli = Cli::new([
            "restore",
            &id,
            "--repo",
            &repo,
            "--db",
            &pg.conninfo("postgres", &db),
            "--create",
            "--jobs",
            "2",
            "--pg-dump",
            pg_dump,
        ]);
        cli.env("TMPDIR", &tmp);
        let out = cli.spawn_paused("restore-copy").signal(signal);
        assert_interrupted(&out);
        wait_no_pgtide_session(&pg);
        // Created, the schema in place, the interrupted loads rolled back.
        assert_eq!(pg.query_one(&db, "SELECT count(*)::text FROM t"), "0");
        assert!(tree(&tmp).is_empty(), "{:?}", tree(&tmp));
        // As the README says: again with --clean.
        pgtide(&[
            "restore",
            &id,
            "--repo",
            &repo,
            "--db",
            &pg.conninfo("postgres", &db),
            "--clean",
            "--pg-dump",
            pg_dump,
        ])
        .assert_ok();
        assert_eq!(pg.query_one(&db, "SELECT count(*)::text FROM t"), "30000");
    }

    let before = tree(Path::new(&repo));
    let out = Cli::new(["verify", &id, "--repo", &repo])
        .spawn_paused("verify-chunk")
        .signal("INT");
    assert_interrupted(&out);
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(tree(Path::new(&repo)), before);
    pgtide(&["verify", &id, "--repo", &repo]).assert_ok();
}

/// A backup stopped once its files are in (its WAL still streaming) leaves
/// nothing of itself and no replication slot. A physical restore stopped
/// while it writes files: a data directory it created is gone, one that
/// was there (empty) is empty again, and the next restore into it needs no
/// --force.
#[test]
fn a_backup_and_a_physical_restore_stop_on_a_signal() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE TABLE t (id int, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
    let work = work_dir("pgtide-stop-");
    let repo = path_in(&work, "repo");
    let conn = pg.conninfo("postgres", "postgres");
    let b = backup(&conn, &repo, &[]);
    let id = b["id"].as_str().unwrap().to_string();

    let out = Cli::new(["backup", "--db", &conn, "--repo", &repo])
        .spawn_paused("backup-received")
        .signal("INT");
    assert_interrupted(&out);
    let l = json(&pgtide(&["list", "--json", "--repo", &repo]));
    assert_eq!(l["backups"].as_array().unwrap().len(), 1, "{l:#}");
    assert!(l["incomplete"].as_array().unwrap().is_empty(), "{l:#}");
    // Objects, that is: the local store leaves empty directories.
    let backups = Path::new(&repo).join("backups");
    let objects: Vec<String> = tree(&backups)
        .into_iter()
        .filter(|p| backups.join(p).is_file())
        .collect();
    assert!(objects.iter().all(|p| p.starts_with(&id)), "{objects:?}");
    assert_eq!(
        pg.query_one(
            "postgres",
            "SELECT count(*)::text FROM pg_replication_slots"
        ),
        "0"
    );

    let restore = |pgdata: &Path| {
        Cli::new([
            "restore",
            &id,
            "--repo",
            &repo,
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--jobs",
            "2",
        ])
    };

    // Created by the restore: removed.
    let created = work.path().join("created");
    let out = restore(&created)
        .spawn_paused("physical-restore-file")
        .signal("INT");
    assert_interrupted(&out);
    assert!(!created.exists(), "{:?}", tree(&created));

    // There before, empty: emptied again, and restored into as it is.
    let existing = work.path().join("existing");
    fs::create_dir(&existing).unwrap();
    let out = restore(&existing)
        .spawn_paused("physical-restore-file")
        .signal("TERM");
    assert_interrupted(&out);
    assert!(existing.is_dir());
    assert!(tree(&existing).is_empty(), "{:?}", tree(&existing));
    restore(&existing).run().assert_ok();
    assert!(existing.join("PG_VERSION").is_file());
    assert!(existing.join("recovery.signal").is_file());
}
