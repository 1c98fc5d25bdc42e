//! Bad input and faults: each ends in one `error: ` line, a fixed exit code
//! (src/cli/exit.rs), no panic, and nothing listed as a complete dump that
//! is not one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::cli::{pgtide, pgtide_env, PGTIDE_BIN};
use crate::harness::pg::{pg_dump_bin, PgCluster, PASSWORD, SCRAM_USER};
use crate::harness::s3::{s3_env, S3Server};

fn json(out: &crate::harness::cli::CliOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"))
}

fn small_db(pg: &PgCluster) {
    pg.create_db("shop");
    pg.execute(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20000) g;
         CREATE TABLE orders (id int, item int, qty int);
         INSERT INTO orders SELECT g, g % 100, g % 7 FROM generate_series(1, 20000) g;",
    );
}

/// Dump `shop` into a fresh local repository; returns (repo dir, dump id).
fn dumped(pg: &PgCluster) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = pgtide(&[
        "dump",
        "--json",
        "--db",
        &pg.conninfo("postgres", "shop"),
        "--repo",
        dir.path().to_str().unwrap(),
        "--chunk-size",
        "64KiB",
    ]);
    out.assert_ok();
    let id = json(&out)["id"].as_str().unwrap().to_string();
    (dir, id)
}

fn packs(repo: &Path, id: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo.join("dumps").join(id).join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn connection_errors_are_one_line_with_exit_3() {
    let pg = PgCluster::start(15);
    small_db(&pg);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let wrong = format!(
        "postgres://{SCRAM_USER}:not-{PASSWORD}@127.0.0.1:{}/shop",
        pg.port()
    );
    pgtide(&["dump", "--db", &wrong, "--repo", repo])
        .assert_one_line_error(3, "password authentication failed");
    let missing = pg.conninfo("postgres", "no_such_db");
    pgtide(&["dump", "--db", &missing, "--repo", repo]).assert_one_line_error(3, "no_such_db");
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable =
        format!("host=127.0.0.1 port={port} user=postgres dbname=shop connect_timeout=5");
    pgtide(&["dump", "--db", &unreachable, "--repo", repo])
        .assert_one_line_error(3, "could not connect");
    // PG* environment variables are honoured when --db is absent.
    let out = pgtide_env(
        &["dump", "--json", "--repo", repo],
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &pg.port().to_string()),
            ("PGUSER", SCRAM_USER),
            ("PGPASSWORD", PASSWORD),
            ("PGDATABASE", "shop"),
        ],
    );
    // scram_user may not read every table, but it can connect: the failure,
    // if any, is not a connection failure.
    assert_ne!(out.code, Some(3), "{out}");
    // Nothing above left a dump behind.
    let l = json(&pgtide(&["list", "--json", "--repo", repo]));
    assert!(l["incomplete"].as_array().unwrap().is_empty(), "{l}");
}

#[test]
fn repository_errors_are_one_line_with_exit_4() {
    let pg = PgCluster::start(15);
    small_db(&pg);
    let db = pg.conninfo("postgres", "shop");
    // Missing bucket.
    let moto = S3Server::moto();
    let url = moto.url("no-such-bucket-pgtide", "x");
    pgtide_env(&["dump", "--db", &db, "--repo", &url], &s3_env())
        .assert_one_line_error(4, "no-such-bucket-pgtide");
    // Bad credentials (s3s-fs checks signatures).
    let s3s = S3Server::s3s_fs();
    let bucket = s3s.fresh_bucket_blocking();
    let bad = [
        ("AWS_ACCESS_KEY_ID", "wrong"),
        ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    pgtide_env(&["list", "--repo", &bucket.url], &bad).assert_one_line_error(4, "access denied");
    // Not a repository, and a repository of a newer format.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    pgtide(&["list", "--repo", repo]).assert_one_line_error(4, "no pgtide repository");
    pgtide(&["dump", "--db", &db, "--repo", repo]).assert_ok();
    let marker = dir.path().join("pgtide.json");
    let text = std::fs::read_to_string(&marker)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    std::fs::write(&marker, text).unwrap();
    pgtide(&["list", "--repo", repo]).assert_one_line_error(4, "newer than this pgtide supports");
    pgtide(&["restore", "latest", "--repo", repo, "--db", &db])
        .assert_one_line_error(4, "newer than this pgtide supports");
    // No such dump.
    let (dir, _) = dumped(&pg);
    pgtide(&[
        "info",
        "20200101-000000D",
        "--repo",
        dir.path().to_str().unwrap(),
    ])
    .assert_one_line_error(4, "no dump 20200101-000000D");
    pgtide(&["info", "../../etc", "--repo", dir.path().to_str().unwrap()])
        .assert_one_line_error(4, "not a valid dump id");
}

#[test]
fn corrupt_and_truncated_packs_are_found_by_verify_and_restore() {
    let pg = PgCluster::start(15);
    small_db(&pg);
    let (dir, id) = dumped(&pg);
    let repo = dir.path().to_str().unwrap();
    let target = pg.conninfo("postgres", "copy");

    // Flip one byte in the middle of every pack.
    let originals: Vec<(PathBuf, Vec<u8>)> = packs(dir.path(), &id)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    for (p, b) in &originals {
        let mut bad = b.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x5a;
        std::fs::write(p, bad).unwrap();
    }
    let out = pgtide(&["verify", &id, "--repo", repo]);
    out.assert_one_line_error(5, "is damaged");
    assert!(
        out.stderr.contains("damaged: ") && out.stderr.contains(".pack at offset"),
        "{out}"
    );
    let out = pgtide(&["restore", &id, "--repo", repo, "--db", &target, "--create"]);
    out.assert_exit(5);
    assert!(out.error_line().unwrap().contains("corrupt chunk"), "{out}");

    // Put them back, then truncate the largest.
    for (p, b) in &originals {
        std::fs::write(p, b).unwrap();
    }
    pgtide(&["verify", &id, "--repo", repo]).assert_ok();
    let (largest, bytes) = originals.iter().max_by_key(|(_, b)| b.len()).unwrap();
    std::fs::write(largest, &bytes[..bytes.len() / 2]).unwrap();
    let out = pgtide(&["verify", &id, "--repo", repo]);
    out.assert_one_line_error(5, "is damaged");
    assert!(out.stderr.contains("bytes, the manifest records"), "{out}");
    pgtide(&[
        "restore",
        &id,
        "--repo",
        repo,
        "--db",
        &pg.conninfo("postgres", "copy2"),
        "--create",
    ])
    .assert_one_line_error(5, "is damaged");
    // A missing pack.
    std::fs::remove_file(largest).unwrap();
    pgtide(&["verify", &id, "--repo", repo]).assert_one_line_error(5, "is damaged");
}

/// A cluster whose database `big` holds one table long enough to stop a
/// dump in the middle of it.
fn cluster_with_a_big_table() -> PgCluster {
    let pg = PgCluster::start(15);
    pg.create_db("big");
    pg.execute(
        "big",
        "CREATE TABLE t (id bigint, pad text);
         INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400000) g;",
    );
    pg
}

/// `pgtide dump --jobs 1 --chunk-size 64KiB EXTRA…` of `db` into `repo`,
/// running in the background, its stderr piped.
fn spawn_dump(db: &str, repo: &str, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(PGTIDE_BIN)
        .args([
            "dump",
            "--db",
            db,
            "--repo",
            repo,
            "--jobs",
            "1",
            "--chunk-size",
            "64KiB",
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGKILL leaves objects without a manifest: never listed as a dump,
/// reported as incomplete, removable. SIGTERM cleans up after itself.
#[test]
fn a_dump_killed_half_way_is_never_listed_complete() {
    let pg = cluster_with_a_big_table();
    let db = pg.conninfo("postgres", "big");
    for (signal, incomplete_left) in [("KILL", 1usize), ("TERM", 0usize)] {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().to_str().unwrap().to_string();
        let mut child = spawn_dump(&db, &repo, &[]);
        // Wait until the dump has started writing, then stop it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.path().join("dumps").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "dump finished before it could be stopped: make the table bigger"
        );
        if signal == "TERM" {
            assert_eq!(status.code(), Some(130), "SIGTERM should exit 130");
        }
        let l = json(&pgtide(&["list", "--json", "--repo", &repo]));
        assert!(l["dumps"].as_array().unwrap().is_empty(), "{l}");
        assert_eq!(
            l["incomplete"].as_array().unwrap().len(),
            incomplete_left,
            "{l}"
        );
        pgtide(&[
            "restore",
            "latest",
            "--repo",
            &repo,
            "--db",
            &pg.conninfo("postgres", "x"),
        ])
        .assert_one_line_error(4, "no complete dump");
        if incomplete_left > 0 {
            let id = l["incomplete"][0]["id"].as_str().unwrap();
            pgtide(&["delete", id, "--repo", &repo]).assert_ok();
            let l = json(&pgtide(&["list", "--json", "--repo", &repo]));
            assert!(l["incomplete"].as_array().unwrap().is_empty(), "{l}");
        }
    }
}

#[test]
fn a_pg_dump_older_than_the_server_is_refused_clearly() {
    let pg = PgCluster::start(16);
    small_db(&pg);
    let dir = tempfile::tempdir().unwrap();
    let old = pg_dump_bin(15);
    let out = pgtide(&[
        "dump",
        "--db",
        &pg.conninfo("postgres", "shop"),
        "--repo",
        dir.path().to_str().unwrap(),
        "--pg-dump",
        old.to_str().unwrap(),
    ]);
    out.assert_one_line_error(7, "older than the server");
    // --data-only needs no pg_dump and works.
    pgtide(&[
        "dump",
        "--data-only",
        "--db",
        &pg.conninfo("postgres", "shop"),
        "--repo",
        dir.path().to_str().unwrap(),
        "--pg-dump",
        old.to_str().unwrap(),
    ])
    .assert_ok();
}

#[test]
fn bad_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    pgtide(&["dump", "--repo", repo, "--compress", "gzip"]).assert_exit(2);
    pgtide(&[
        "dump",
        "--repo",
        repo,
        "--jobs",
        "0",
        "--db",
        "host=127.0.0.1 port=1",
    ])
    .assert_one_line_error(2, "--jobs");
    pgtide(&[
        "dump",
        "--repo",
        "ftp://x/y",
        "--db",
        "host=127.0.0.1 port=1",
    ])
    .assert_one_line_error(4, "invalid repository location");
    pgtide(&["dump", "--repo", repo, "--db", "host=127.0.0.1 bogus=1"])
        .assert_one_line_error(2, "bogus");
    // A point-in-time target without --pgdata would otherwise restore the
    // latest dump; a dump's flag with --pgdata would be ignored.
    pgtide(&[
        "restore",
        "latest",
        "--repo",
        repo,
        "--target-time",
        "2026-11-20 14:03:00+00",
    ])
    .assert_one_line_error(2, "--target-time applies to restoring a physical backup");
    pgtide(&[
        "restore", "latest", "--repo", repo, "--pgdata", "/tmp/x", "--create",
    ])
    .assert_one_line_error(2, "--create applies to restoring a dump");
    // Every flag of the other kind, also those with a default.
    for (flag, value) in [
        ("--no-tablespaces", None),
        ("--early-index-size", Some("1MB")),
        ("--db", Some("host=127.0.0.1 port=1")),
    ] {
        let mut args = vec![
            "restore", "latest", "--repo", repo, "--pgdata", "/tmp/x", flag,
        ];
        args.extend(value);
        pgtide(&args).assert_one_line_error(2, &format!("{flag} applies to restoring a dump"));
    }
    for (flag, value) in [("--target-action", "pause"), ("--target-timeline", "1")] {
        pgtide(&["restore", "latest", "--repo", repo, flag, value])
            .assert_one_line_error(2, &format!("{flag} applies to restoring a physical backup"));
    }
    // Tables or a database from a backup into --db: refused before the
    // repository is read.
    pgtide(&["restore", "20260101-000000F", "--repo", repo, "--db", "x"])
        .assert_one_line_error(2, "20260101-000000F is a backup: add --pgdata DIR");
    let t = ["--table", "public.t", "--db", "x"];
    for (extra, error) in [
        (
            &["--into-schema", "s"][..],
            "--into-schema applies to --table",
        ),
        (
            &["--target-action", "pause", "--table", "t"][..],
            "--target-action does not apply to restoring tables or a database of a backup",
        ),
        (
            &["--create", "--database", "app"][..],
            "--create does not apply",
        ),
        (
            &[
                "--database",
                "app",
                "--early-index-size",
                "1MB",
                "--table",
                "t",
            ][..],
            "--early-index-size applies to --database",
        ),
    ] {
        let mut args = vec!["restore", "20260101-000000F", "--repo", repo, "--db", "x"];
        args.extend_from_slice(extra);
        pgtide(&args).assert_one_line_error(2, error);
    }
    let mut args = vec![
        "restore",
        "20260101-000000D",
        "--repo",
        repo,
        "--into-schema",
        "s",
    ];
    args.extend_from_slice(&t);
    pgtide(&args).assert_one_line_error(2, "20260101-000000D is a dump");
    pgtide(&[
        "restore",
        "latest",
        "--repo",
        repo,
        "--pgdata",
        "/tmp/x",
        "--into-schema",
        "s",
    ])
    .assert_one_line_error(
        2,
        "--into-schema applies to restoring tables or a database of a backup",
    );
}

/// The server ends a dump worker's session in the middle of its COPY
/// (`pg_terminate_backend`): the dump stops with one error line naming the
/// table, removes what it wrote, and lists nothing.
#[test]
fn a_dump_whose_worker_is_terminated_mid_copy_fails_cleanly() {
    let pg = cluster_with_a_big_table();
    let db = pg.conninfo("postgres", "big");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let child = spawn_dump(&db, &repo, &["--compress", "zstd:19"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let terminated = loop {
        let n = pg.query_one(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'pgtide dump worker' AND query LIKE 'COPY%'",
        );
        if n != "0" || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        terminated, "1",
        "the worker's COPY was never seen\n{stderr}"
    );
    assert!(!out.status.success(), "the dump succeeded\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("error: dump table public.t: "),
        "{stderr}"
    );
    let l = json(&pgtide(&["list", "--json", "--repo", &repo]));
    assert!(l["dumps"].as_array().unwrap().is_empty(), "{l}");
    assert!(l["incomplete"].as_array().unwrap().is_empty(), "{l}");
}

/// A panic in a worker is a bug, not a bad command line: exit 70 with one
/// `internal error` line, and no dump left listed as complete.
#[test]
fn a_panicking_worker_exits_70() {
    let pg = PgCluster::start(15);
    small_db(&pg);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let db = pg.conninfo("postgres", "shop");
    // (Without RUST_BACKTRACE, which keeps the default panic output.)
    let out = crate::harness::cli::Cli::new(["dump", "--db", &db, "--repo", repo])
        .env("PGTIDE_TEST_PANIC", "dump-worker")
        .env_remove("RUST_BACKTRACE")
        .run();
    out.assert_one_line_error(70, "internal error: test panic at dump-worker");
    assert!(
        out.error_line().unwrap().ends_with("(please report this)"),
        "{out}"
    );
    let l = json(&pgtide(&["list", "--json", "--repo", repo]));
    assert!(l["dumps"].as_array().unwrap().is_empty(), "{l}");
    assert!(l["incomplete"].as_array().unwrap().is_empty(), "{l}");
}
