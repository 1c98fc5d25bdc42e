//! `pgtide bench` end to end on a real server: every step on a small
//! generated data set, its JSON holding every field `src/cli/bench.rs`
//! documents, the scratch databases and slots gone afterwards; and the
//! refusal to load a database the bench did not create.

use std::collections::BTreeMap;

use crate::harness::cli::{pgtide, Cli};
use crate::harness::pg::PgCluster;
use crate::pitr::{json, path_in, work_dir};

/// `- NAME: {FIELD, …}` lines of src/cli/bench.rs's documentation.
fn documented() -> BTreeMap<String, Vec<String>> {
    include_str!("../../src/cli/bench.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//! - "))
        .filter_map(|l| {
            let (name, fields) = l.split_once(": {")?;
            let fields = fields.strip_suffix('}')?;
            Some((
                name.replace('`', ""),
                fields.split(", ").map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// Every documented field of `name` is in `value`; fields with their own
/// line are checked in turn (an array's every element).
fn check(
    docs: &BTreeMap<String, Vec<String>>,
    seen: &mut Vec<String>,
    name: &str,
    value: &serde_json::Value,
) {
    let fields = &docs[name];
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("{name} is not an object: {value:#}"));
    for f in fields {
        let key = f.trim_end_matches("[]");
        let v = obj
            .get(key)
            .unwrap_or_else(|| panic!("{name} has no field {key:?}: {value:#}"));
        let sub = format!("{name}.{f}");
        if f.ends_with("[]") {
            let items = v
                .as_array()
                .unwrap_or_else(|| panic!("{name}.{key} is not an array: {value:#}"));
            if docs.contains_key(&sub) {
                for item in items {
                    check(docs, seen, &sub, item);
                }
            }
        } else if docs.contains_key(&sub) {
            check(docs, seen, &sub, v);
        }
    }
    seen.push(name.to_owned());
}

#[test]
fn bench_runs_every_step_and_documents_its_json() {
    let pg = PgCluster::start(15);
    let work = work_dir("pgtide-bench-it-");
    let out = pgtide(&[
        "--json",
        "bench",
        "--db",
        &pg.url("postgres", "postgres"),
        "--generate",
        "1",
        "--runs",
        "1",
        "--no-warmup",
        // The page cache is the whole machine's: the other tests need it.
        "--no-drop-caches",
        "--wal-burst",
        "16MiB",
        "--pg-bin",
        pg.bin_dir().to_str().unwrap(),
        "--repo",
        &path_in(&work, "repo"),
    ]);
    out.assert_ok();
    let report = json(&out);
    let docs = documented();
    assert!(docs.len() >= 8, "too few documented objects: {docs:?}");
    let mut seen = Vec::new();
    check(&docs, &mut seen, "bench", &report);
    // Objects only reached through non-empty arrays: the steps' runs and
    // ratios are, `skipped` may be empty.
    let missing: Vec<&String> = docs
        .keys()
        .filter(|k| !seen.contains(k) && k.as_str() != "bench.skipped[]")
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not checked: {missing:?}"
    );

    let steps = report["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    for pgtide_step in [
        "pgtide dump -j2",
        "pgtide restore -j2",
        "pgtide backup zstd:1",
        "pgtide backup zstd:3",
        "pgtide restore --pgdata",
        "pgtide wal stream",
    ] {
        assert!(
            names.contains(&pgtide_step),
            "{pgtide_step} missing: {report:#}"
        );
    }
    // The peers of PostgreSQL's own bin directory are there (pgBackRest
    // and zstd may not be installed: then they are listed as skipped, with
    // the reason).
    for peer in [
        "pg_dump -Fd -j2",
        "pg_restore -j2",
        "pg_basebackup -Ft client-zstd:1",
        "pg_receivewal",
    ] {
        assert!(names.contains(&peer), "{peer} missing: {report:#}");
    }
    let skipped = report["skipped"].as_array().unwrap();
    for s in skipped {
        let step = s["step"].as_str().unwrap();
        assert!(
            step.starts_with("pgbackrest") || step.starts_with("tar "),
            "only pgBackRest and tar + zstd may be skipped here: {report:#}"
        );
    }
    for s in steps {
        assert!(s["wall_seconds"]["median"].as_f64().unwrap() > 0.0);
        assert!(s["peak_rss_bytes"].as_u64().unwrap() > 0, "{s:#}");
        assert!(
            s["server_cpu_seconds"].is_number(),
            "the server is local: {s:#}"
        );
    }
    let dump = steps
        .iter()
        .find(|s| s["name"] == "pgtide dump -j2")
        .unwrap();
    assert_eq!(dump["ratios"][0]["peer"], "pg_dump -Fd -j2");
    assert!(dump["bytes_stored"].as_u64().unwrap() > 0);
    for restore in ["pgtide restore -j2", "pg_restore -j2"] {
        let s = steps.iter().find(|s| s["name"] == restore).unwrap();
        assert_eq!(s["matches_source"], true, "{s:#}");
    }
    assert_eq!(report["database"]["name"], "pgtide_bench");
    assert_eq!(report["database"]["generated_scale"], 1);
    assert!(report["database"]["size_bytes"].as_u64().unwrap() > 10 << 20);
    assert_eq!(
        pg.query_one("pgtide_bench", "SELECT count(*) FROM bench_accounts"),
        "100000"
    );
    assert_eq!(
        pg.query_one(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgtide_bench_%'"
        ),
        "0",
        "scratch databases are dropped"
    );
    assert_eq!(
        pg.query_one("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "the bench's slots are dropped"
    );

    // The generated database is the bench's own: measured again without
    // --generate and without --yes; the markdown names the command.
    let out = pgtide(&[
        "bench",
        "--db",
        &pg.url("postgres", "pgtide_bench"),
        "--only",
        "dump",
        "--scale-jobs",
        "1",
        "--runs",
        "1",
        "--no-warmup",
        "--no-drop-caches",
        "--pg-bin",
        pg.bin_dir().to_str().unwrap(),
        "--markdown",
    ]);
    out.assert_ok();
    assert!(out.stdout.contains("| pgtide dump -j1 | "), "{out}");
    assert!(
        out.stdout
            .contains("ratio of pgtide dump -j1 to pg_dump -Fd -j1"),
        "{out}"
    );
    assert!(out.stdout.contains("## pgtide bench, "), "{out}");
    assert!(out.stdout.contains("| pgtide dump -j2 | "), "{out}");
    assert!(out.stdout.contains("(`--generate 1`)"), "{out}");
}

#[test]
fn bench_refuses_a_database_it_did_not_create() {
    let pg = PgCluster::start(15);
    pg.create_db("shop");
    pgtide(&["bench", "--db", &pg.url("postgres", "shop"), "--runs", "1"])
        .assert_one_line_error(2, "database shop was not created by pgtide bench");
    // Nor a database of that name it did not make, under --generate.
    pg.create_db("pgtide_bench");
    pgtide(&[
        "bench",
        "--db",
        &pg.url("postgres", "postgres"),
        "--generate",
        "1",
    ])
    .assert_one_line_error(2, "database pgtide_bench was not created by pgtide bench");
    assert_eq!(
        pg.query_one(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'pgtide_bench'"
        ),
        "1"
    );
    Cli::new([
        "bench",
        "--db",
        &pg.url("postgres", "shop"),
        "--only",
        "dumps",
    ])
    .run()
    .assert_one_line_error(2, "--only \"dumps\"");
}
