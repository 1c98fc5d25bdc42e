//! Every command's `--json` output parses and holds the fields that
//! `src/cli/output.rs` documents: the documentation is read from that file,
//! so that it cannot drift from the code.

use std::collections::BTreeMap;

use crate::harness::cli::pgtide;
use crate::harness::pg::PgCluster;
use crate::pitr::{json, path_in, work_dir};

/// `- COMMAND: {FIELD, …}` lines of the module documentation of
/// src/cli/output.rs, by command.
fn documented() -> BTreeMap<String, Vec<String>> {
    include_str!("../../src/cli/output.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//! - "))
        .filter_map(|l| {
            let (cmd, fields) = l.split_once(": {")?;
            let fields = fields.strip_suffix('}')?;
            Some((
                cmd.replace('`', ""),
                fields.split(", ").map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// Checks `value` against the fields documented for `cmd` (and, for each
/// `name[]` field, its first element against `cmd.name[]` when that is
/// documented); records `cmd` as checked.
fn check(
    docs: &BTreeMap<String, Vec<String>>,
    checked: &mut Vec<String>,
    cmd: &str,
    value: &serde_json::Value,
) {
    let fields = docs
        .get(cmd)
        .unwrap_or_else(|| panic!("src/cli/output.rs documents no JSON for `{cmd}`"));
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("`{cmd}` printed no JSON object: {value:#}"));
    for f in fields {
        let name = f.trim_end_matches("[]");
        let v = obj
            .get(name)
            .unwrap_or_else(|| panic!("`{cmd}` JSON has no field {name:?}: {value:#}"));
        if f.ends_with("[]") {
            let items = v
                .as_array()
                .unwrap_or_else(|| panic!("`{cmd}` field {name:?} is not an array: {value:#}"));
            let sub = format!("{cmd}.{f}");
            if docs.contains_key(&sub) {
                let first = items.first().unwrap_or_else(|| {
                    panic!("`{cmd}` field {name:?} is empty: cannot check {sub}\n{value:#}")
                });
                check(docs, checked, &sub, first);
            }
        }
    }
    checked.push(cmd.to_string());
}

#[test]
fn every_command_prints_the_documented_json() {
    let docs = documented();
    assert!(docs.len() >= 10, "too few entries parsed: {docs:?}");
    let mut checked = Vec::new();
    let mut run = |cmd: &str, args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = pgtide(&all);
        out.assert_ok();
        let v = json(&out);
        check(&docs, &mut checked, cmd, &v);
        v
    };

    let pg = PgCluster::start(15);
    pg.create_db("shop");
    pg.execute(
        "shop",
        "CREATE TABLE items (id serial PRIMARY KEY, name text);
         INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 1000) g;
         CREATE TABLE notes (item int REFERENCES items (id), note text);
         INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 10) g;",
    );
    let work = work_dir("pgtide-json-");
    let repo = path_in(&work, "repo");
    let db = pg.conninfo("postgres", "shop");
    let server = pg.conninfo("postgres", "postgres");

    let dump = run("dump", &["dump", "--db", &db, "--repo", &repo]);
    let dump_id = dump["id"].as_str().unwrap().to_string();
    let copy = pg.conninfo("postgres", "shop_copy");
    run(
        "restore",
        &[
            "restore", &dump_id, "--repo", &repo, "--db", &copy, "--create",
        ],
    );
    run("info of a dump", &["info", &dump_id, "--repo", &repo]);
    run("verify", &["verify", &dump_id, "--repo", &repo]);

    let backup = run("backup", &["backup", "--db", &server, "--repo", &repo]);
    let backup_id = backup["id"].as_str().unwrap().to_string();
    run("info of a backup", &["info", &backup_id, "--repo", &repo]);
    let copied = path_in(&work, "copied");
    run("copy", &["copy", "all", "--from", &repo, "--to", &copied]);

    // A dump that never finished, for `incomplete`.
    let stale = std::path::Path::new(&repo).join("dumps/20200101-000000D");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("started.json"), "{\"kind\": \"dump\"}").unwrap();
    // And one whose deletion was interrupted, for `deleting`.
    let gone = std::path::Path::new(&repo).join("dumps/20200102-000000D");
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::write(gone.join("started.json"), "{\"kind\": \"dump\"}").unwrap();
    std::fs::write(gone.join("deleting.json"), "{}").unwrap();
    run("list", &["list", "--repo", &repo]);
    run(
        "expire",
        &["expire", "--dry-run", "--keep-last", "1", "--repo", &repo],
    );
    let nobody = crate::pitr::free_port().to_string();
    run(
        "status",
        &[
            "status",
            "--repo",
            &repo,
            "--listen",
            &format!("127.0.0.1:{nobody}"),
        ],
    );

    run(
        "restore --table",
        &[
            "restore",
            &backup_id,
            "--repo",
            &repo,
            "--table",
            "public.notes",
            "--into-schema",
            "restored",
            "--db",
            &db,
        ],
    );

    let pgdata = work.path().join("restored");
    run(
        "restore --pgdata",
        &[
            "restore",
            &backup_id,
            "--repo",
            &repo,
            "--pgdata",
            pgdata.to_str().unwrap(),
        ],
    );

    let lsn = pg.query_one("postgres", "SELECT pg_current_wal_lsn()::text");
    run(
        "wal stream",
        &[
            "wal",
            "stream",
            "--db",
            &server,
            "--repo",
            &repo,
            "--slot",
            "json",
            "--create-slot",
            "--partial-interval",
            "1s",
            "--stop-at",
            &lsn,
        ],
    );
    let history = work.path().join("00000009.history");
    std::fs::write(&history, "8\t0/9000000\tno recovery target specified\n").unwrap();
    run(
        "wal push",
        &["wal", "push", history.to_str().unwrap(), "--repo", &repo],
    );
    run(
        "delete --wal-before",
        &["delete", "--wal-before", &backup_id, "--repo", &repo],
    );
    run("delete", &["delete", &dump_id, "--repo", &repo]);

    // Keys of an encrypted repository.
    let k1 = work.path().join("one.key");
    let k2 = work.path().join("two.key");
    let r1 = run(
        "key generate",
        &["key", "generate", "--output", k1.to_str().unwrap()],
    );
    let r2 = run(
        "key generate",
        &["key", "generate", "--output", k2.to_str().unwrap()],
    );
    let sealed = path_in(&work, "sealed");
    run(
        "init",
        &[
            "init",
            "--repo",
            &sealed,
            "--recipient",
            r1["recipient"].as_str().unwrap(),
        ],
    );
    run(
        "key add",
        &[
            "key",
            "add",
            "--repo",
            &sealed,
            "--recipient",
            r2["recipient"].as_str().unwrap(),
            "--identity",
            k1.to_str().unwrap(),
        ],
    );
    run(
        "key remove",
        &[
            "key",
            "remove",
            "--repo",
            &sealed,
            "--recipient",
            r1["recipient"].as_str().unwrap(),
        ],
    );
    run("key list", &["key", "list", "--repo", &sealed]);

    let missing: Vec<&String> = docs.keys().filter(|k| !checked.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "documented in src/cli/output.rs but not checked here: {missing:?}"
    );
}
