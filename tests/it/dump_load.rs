//! Logical dump → restore round trips against a real PostgreSQL, through a
//! local and an S3 repository. Oracle: same `pg_dump --schema-only`, same
//! rows in every table, same sequences and large objects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::harness::cli::{pgtide, pgtide_env};
use crate::harness::oracle::assert_same_database;
use crate::harness::pg::PgCluster;
use crate::harness::s3::{s3_env, S3Server};

pub const RICH_SQL: &str = include_str!("fixtures/rich.sql");

/// A cluster with database `src` holding the rich fixture.
pub fn rich_cluster() -> PgCluster {
    let pg = PgCluster::start(15);
    pg.create_db("src");
    pg.execute(
        "src",
        "ALTER DATABASE src SET TimeZone = 'America/New_York'",
    );
    pg.execute("src", RICH_SQL);
    pg
}

fn json(out: &crate::harness::cli::CliOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"))
}

/// dump → list → info → verify → restore --create, then compare.
pub fn round_trip(
    pg: &PgCluster,
    repo: &str,
    env: &[(&str, &str)],
    dump_extra: &[&str],
    restore_extra: &[&str],
) {
    let mut args = vec![
        "dump",
        "--json",
        "--db",
        &*Box::leak(pg.conninfo("postgres", "src").into_boxed_str()),
        "--repo",
        repo,
        "--jobs",
        "3",
    ];
    args.extend_from_slice(dump_extra);
    let out = pgtide_env(&args, env);
    out.assert_ok();
    let report = json(&out);
    let id = report["id"].as_str().expect("id").to_string();
    assert!(report["rows"].as_u64().unwrap() > 60_000, "{out}");
    assert_eq!(report["large_objects"].as_u64(), Some(3), "{out}");

    let list = pgtide_env(&["list", "--json", "--repo", repo], env);
    list.assert_ok();
    let l = json(&list);
    assert_eq!(l["dumps"][0]["id"].as_str(), Some(id.as_str()), "{list}");
    assert_eq!(l["incomplete"].as_array().map(Vec::len), Some(0), "{list}");
    pgtide_env(&["list", "--repo", repo], env).assert_ok();
    let info = pgtide_env(&["info", &id, "--repo", repo], env);
    info.assert_ok();
    assert!(info.stdout.contains("public.big"), "{info}");
    pgtide_env(&["verify", &id, "--repo", repo], env).assert_ok();

    let dst = pg.conninfo("postgres", "dst");
    let mut args = vec![
        "restore", "latest", "--repo", repo, "--db", &dst, "--create", "--jobs", "3",
    ];
    args.extend_from_slice(restore_extra);
    let out = pgtide_env(&args, env);
    out.assert_ok();
    assert_same_database(pg, "src", pg, "dst");
}

#[test]
fn round_trip_local_repository_with_split_tables_and_small_chunks() {
    let pg = rich_cluster();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    round_trip(
        &pg,
        repo.to_str().unwrap(),
        &[],
        &[
            "--split-size",
            "256KiB",
            "--chunk-size",
            "64KiB",
            "--compress",
            "zstd:1",
        ],
        // Indexes and keys of every table built as soon as it is loaded.
        &["--early-index-size", "1KiB"],
    );
    // The big table was split into several ctid ranges.
    let info = pgtide(&["info", "latest", "--json", "--repo", repo.to_str().unwrap()]);
    let m = json(&info);
    let big = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "big")
        .expect("big table in manifest");
    assert!(
        big["parts"].as_array().unwrap().len() > 1,
        "big was not split"
    );
    // Tables of built-in types travel in binary COPY; one with an enum in
    // text.
    let binary = |name: &str| {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the manifest"))["binary"]
            .as_bool()
            .unwrap_or(false)
    };
    for t in ["big", "binary_sink", "binary_more"] {
        assert!(binary(t), "{t} was not dumped in binary");
    }
    assert!(!binary("kitchen_sink"), "kitchen_sink has an enum column");
    // 3, not 2: its sequences name their owning tables (docs/FORMAT.md).
    assert_eq!(m["format_version"], 3);
}

/// `--copy-format text` dumps every table as COPY text.
#[test]
fn copy_format_text_round_trip() {
    let pg = rich_cluster();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    round_trip(
        &pg,
        repo.to_str().unwrap(),
        &[],
        &["--copy-format", "text"],
        &[],
    );
    let m = json(&pgtide(&[
        "info",
        "latest",
        "--json",
        "--repo",
        repo.to_str().unwrap(),
    ]));
    assert!(
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("binary").is_none()),
        "{m:#}"
    );
    // Not 2 (binary COPY): 3 only for its sequences' owners.
    assert_eq!(m["format_version"], 3);
}

#[test]
fn round_trip_s3_repository() {
    let pg = rich_cluster();
    let bucket = S3Server::moto().fresh_bucket_blocking();
    round_trip(
        &pg,
        &bucket.url,
        &s3_env(),
        &[
            "--compress",
            "none",
            "--split-by",
            "ctid",
            "--split-size",
            "256KiB",
        ],
        &[],
    );
}

/// Transfers commit continuously while the dump runs: every worker reads
/// the same snapshot, so debits and credits balance in the restored copy.
#[test]
fn dump_is_snapshot_consistent_under_concurrent_writes() {
    let pg = PgCluster::start(15);
    pg.create_db("bank");
    pg.execute(
        "bank",
        "CREATE TABLE debits (id bigserial, amount int, pad text);
         CREATE TABLE credits (id bigserial, amount int, pad text);
         INSERT INTO debits (amount, pad) SELECT 1, repeat('d', 200) FROM generate_series(1, 100000);
         INSERT INTO credits (amount, pad) SELECT 1, repeat('c', 200) FROM generate_series(1, 100000);",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits) = (stop.clone(), commits.clone());
        let cfg = pg.pg_config("postgres", "bank");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                let mut n = 0u64;
                // Bounded: stops when told, or after 200k transfers.
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    client
                        .batch_execute(
                            "BEGIN; INSERT INTO debits (amount) VALUES (7); \
                             INSERT INTO credits (amount) VALUES (7); COMMIT",
                        )
                        .await
                        .unwrap();
                    n += 1;
                    commits.store(n, Ordering::Relaxed);
                }
            })
        })
    };
    while commits.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let src = pg.conninfo("postgres", "bank");
    pgtide(&[
        "dump",
        "--db",
        &src,
        "--repo",
        &repo,
        "--jobs",
        "2",
        "--split-size",
        "1MiB",
    ])
    .assert_ok();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(commits.load(Ordering::Relaxed) > 200);
    pgtide(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--db",
        &pg.conninfo("postgres", "bank_copy"),
        "--create",
    ])
    .assert_ok();
    let sums = pg.query_one(
        "bank_copy",
        "SELECT (SELECT sum(amount) FROM debits)::text || '=' || (SELECT sum(amount) FROM credits)::text",
    );
    let (d, c) = sums.split_once('=').unwrap();
    assert_eq!(d, c, "restored debits and credits do not balance");
}

#[test]
fn selective_schema_only_data_only_clean_and_dry_run() {
    let pg = rich_cluster();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let src = pg.conninfo("postgres", "src");

    // A full dump, then a restore of two tables only.
    let out = pgtide(&[
        "dump",
        "--json",
        "--db",
        &src,
        "--repo",
        &repo,
        "--name",
        "nightly",
        "--description",
        "all of it",
    ]);
    out.assert_ok();
    let id = json(&out)["id"].as_str().unwrap().to_string();
    pg.create_db("sel");
    pg.execute("sel", "CREATE SCHEMA app");
    let sel = pg.conninfo("postgres", "sel");
    pgtide(&[
        "restore",
        &id,
        "--repo",
        &repo,
        "--db",
        &sel,
        "--table",
        "public.parent",
        "--table",
        "public.child",
    ])
    .assert_ok();
    let tables = pg.query_one(
        "sel",
        "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r' \
         AND relnamespace IN ('public'::regnamespace, 'app'::regnamespace)",
    );
    assert_eq!(tables, "child,parent");
    assert_eq!(pg.query_one("sel", "SELECT count(*) FROM child"), "100");
    // The foreign key and the owned sequences came along, with their values.
    assert_eq!(
        pg.query_one(
            "sel",
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        "1"
    );
    assert_eq!(
        pg.query_one("sel", "SELECT last_value FROM child_id_seq"),
        "100"
    );

    // Into non-empty tables: refused without --clean, one line, exit 6.
    pgtide(&[
        "restore",
        &id,
        "--repo",
        &repo,
        "--db",
        &sel,
        "--data-only",
        "--table",
        "public.child",
    ])
    .assert_one_line_error(6, "public.child");
    // --data-only --clean replaces the rows.
    pg.execute("sel", "ALTER TABLE child DROP CONSTRAINT child_parent_id_fkey; DELETE FROM child WHERE id < 50; INSERT INTO child (parent_id) VALUES (3)");
    pgtide(&[
        "restore",
        &id,
        "--repo",
        &repo,
        "--db",
        &sel,
        "--data-only",
        "--clean",
        "--table",
        "public.child",
    ])
    .assert_ok();
    assert_eq!(
        pg.query_one("sel", "SELECT count(*) || '/' || sum(id) FROM child"),
        "100/5050"
    );

    // A full restore into a database that has the tables: refused, then --clean.
    let out = pgtide(&["restore", &id, "--repo", &repo, "--db", &sel]);
    out.assert_one_line_error(6, "--clean");
    pg.execute(
        "sel",
        "DROP TABLE child; DROP TABLE parent; DROP SCHEMA app",
    );
    pg.create_db("full");
    let full = pg.conninfo("postgres", "full");
    pgtide(&["restore", &id, "--repo", &repo, "--db", &full]).assert_ok();
    pg.execute(
        "full",
        "UPDATE public.big SET payload = 'changed' WHERE id < 10; DELETE FROM public.child",
    );
    pgtide(&[
        "restore", &id, "--repo", &repo, "--db", &full, "--clean", "--jobs", "2",
    ])
    .assert_ok();
    assert_same_database(&pg, "src", &pg, "full");

    // Dry run: says what it would do and changes nothing.
    pg.create_db("dry");
    let dry = pg.conninfo("postgres", "dry");
    let out = pgtide(&["restore", &id, "--repo", &repo, "--db", &dry, "--dry-run"]);
    out.assert_ok();
    assert!(out.stdout.contains("would"), "{out}");
    // The plan, with what each step touches: the tables and their parts.
    assert!(out.stdout.contains("      public.big ("), "{out}");
    let out = pgtide(&[
        "restore",
        &id,
        "--repo",
        &repo,
        "--db",
        &dry,
        "--dry-run",
        "--json",
    ]);
    out.assert_ok();
    let r = json(&out);
    let kinds: Vec<&str> = r["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"read-dump"), "{r:#}");
    for k in ["pre-data", "load", "sequences", "post-data"] {
        assert!(kinds.contains(&k), "{k}: {r:#}");
    }
    assert_eq!(r["steps"].as_array().unwrap().len(), kinds.len(), "{r:#}");
    assert_eq!(
        pg.query_one(
            "dry",
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ),
        "0"
    );

    // Schema-only dump restores an empty copy of the schema.
    let out = pgtide(&[
        "dump",
        "--json",
        "--schema-only",
        "--db",
        &src,
        "--repo",
        &repo,
    ]);
    out.assert_ok();
    let schema_id = json(&out)["id"].as_str().unwrap().to_string();
    pgtide(&[
        "restore",
        &schema_id,
        "--repo",
        &repo,
        "--db",
        &pg.conninfo("postgres", "schema_copy"),
        "--create",
    ])
    .assert_ok();
    assert_eq!(
        pg.query_one("schema_copy", "SELECT count(*) FROM public.big"),
        "0"
    );

    // Data-only dump, table filter, into the schema-only copy.
    let out = pgtide(&[
        "dump",
        "--json",
        "--data-only",
        "--table",
        "public.big",
        "--db",
        &src,
        "--repo",
        &repo,
    ]);
    out.assert_ok();
    let data_id = json(&out)["id"].as_str().unwrap().to_string();
    pgtide(&[
        "restore",
        &data_id,
        "--repo",
        &repo,
        "--db",
        &pg.conninfo("postgres", "schema_copy"),
    ])
    .assert_ok();
    assert_eq!(
        pg.query_one("schema_copy", "SELECT count(*) FROM public.big"),
        "60000"
    );

    // Delete removes a dump and list no longer shows it.
    pgtide(&["delete", &data_id, "--repo", &repo]).assert_ok();
    let l = json(&pgtide(&["list", "--json", "--repo", &repo]));
    assert!(l["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["id"] != data_id.as_str()));
    assert_eq!(l["dumps"][0]["name"], "nightly");
}

/// Binary COPY rows load only into the types they were dumped from: a
/// `--data-only` restore into a table whose integer column became text is
/// refused before anything loads (binary integers would load as garbage
/// characters), while a text dump of the same table loads.
#[test]
fn data_only_restore_refuses_changed_column_types_for_binary_rows() {
    let pg = PgCluster::start(15);
    pg.create_db("src");
    pg.execute(
        "src",
        "CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    pg.create_db("dst");
    pg.execute("dst", "CREATE TABLE t (id text, v text)");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let src = pg.conninfo("postgres", "src");
    let dst = pg.conninfo("postgres", "dst");
    pgtide(&[
        "dump",
        "--db",
        &src,
        "--repo",
        repo,
        "--data-only",
        "--name",
        "bin",
    ])
    .assert_ok();
    let out = pgtide(&[
        "restore",
        "latest",
        "--db",
        &dst,
        "--repo",
        repo,
        "--data-only",
    ]);
    out.assert_one_line_error(6, "column \"id\" of table public.t is text in the target");
    assert_eq!(pg.query_one("dst", "SELECT count(*) FROM t"), "0");

    pgtide(&[
        "dump",
        "--db",
        &src,
        "--repo",
        repo,
        "--data-only",
        "--copy-format",
        "text",
    ])
    .assert_ok();
    pgtide(&[
        "restore",
        "latest",
        "--db",
        &dst,
        "--repo",
        repo,
        "--data-only",
    ])
    .assert_ok();
    assert_eq!(
        pg.query_one("dst", "SELECT count(*) || '/' || max(id::int) FROM t"),
        "100/100"
    );
}

/// A sequence's owner is two names, not `schema.table` joined: table
/// `a."b.c"` and table `"a.b".c` are told apart when a data-only dump is
/// restored with `--table` (which restores the chosen tables' sequences).
#[test]
fn sequence_owners_with_dots_in_their_names_are_not_confused() {
    let pg = PgCluster::start(15);
    pg.create_db("dots");
    pg.execute(
        "dots",
        "CREATE SCHEMA a; CREATE SCHEMA \"a.b\";
         CREATE TABLE a.\"b.c\" (id serial PRIMARY KEY, v int);
         CREATE TABLE \"a.b\".c (id serial PRIMARY KEY, v int);
         INSERT INTO a.\"b.c\" (v) SELECT g FROM generate_series(1, 5) g;
         INSERT INTO \"a.b\".c (v) SELECT g FROM generate_series(1, 9) g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let src = pg.conninfo("postgres", "dots");
    let out = pgtide(&[
        "dump",
        "--json",
        "--schema-only",
        "--db",
        &src,
        "--repo",
        repo,
    ]);
    out.assert_ok();
    let schema_id = json(&out)["id"].as_str().unwrap().to_string();
    let out = pgtide(&[
        "dump",
        "--json",
        "--data-only",
        "--db",
        &src,
        "--repo",
        repo,
    ]);
    out.assert_ok();
    let data_id = json(&out)["id"].as_str().unwrap().to_string();
    let m = json(&pgtide(&["info", &data_id, "--json", "--repo", repo]));
    let owners: Vec<&serde_json::Value> = m["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| &q["owned_by"])
        .collect();
    assert!(
        owners.contains(&&serde_json::json!({"schema": "a", "table": "b.c"})),
        "{m:#}"
    );
    let target = pg.conninfo("postgres", "dots_copy");
    pgtide(&[
        "restore", &schema_id, "--repo", repo, "--db", &target, "--create",
    ])
    .assert_ok();
    pgtide(&[
        "restore",
        &data_id,
        "--repo",
        repo,
        "--db",
        &target,
        "--table",
        "a.\"b.c\"",
    ])
    .assert_ok();
    assert_eq!(
        pg.query_one(
            "dots_copy",
            "SELECT last_value || ' ' || is_called FROM a.\"b.c_id_seq\""
        ),
        "5 true"
    );
    // The other table's sequence is untouched.
    assert_eq!(
        pg.query_one(
            "dots_copy",
            "SELECT last_value || ' ' || is_called FROM \"a.b\".c_id_seq"
        ),
        "1 false"
    );
}
