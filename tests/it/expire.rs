//! `pgtide expire` against a real PostgreSQL 15 server and a local
//! repository: backups under a continuous `wal stream` archive, dumps of two
//! databases, then retention.
//!
//! Oracles: `--dry-run` leaves every file of the repository as it was and
//! says which rule keeps or drops each set; `--keep-last 1` removes the older
//! backups and exactly the WAL before the kept one's first segment; the kept
//! backup still verifies and restores to the end of the archive with every
//! marker row; a deletion interrupted by hand (marker written, manifest
//! gone or not) is never listed or read as complete and is finished by the
//! next `expire`. The calendar rules (daily … yearly) depend on the clock and
//! are unit-tested in `src/repo/retention.rs`; here: keep_last, min_keep,
//! max_age and the per-database dump policy.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::harness::cli::pgtide;
use crate::harness::pg::PgCluster;
use crate::pitr::{
    backup, json, listing, path_in, restore, switch_wal, wait_archived, wait_until, work_dir,
    Streamer,
};

/// Every file under `dir` (relative path → size): the repository's state.
fn tree(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let e = e.expect("dir entry");
            let p = e.path();
            if e.file_type().expect("file type").is_dir() {
                todo.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string();
                out.insert(rel, e.metadata().expect("metadata").len());
            }
        }
    }
    out
}

/// `pgtide expire --json --repo REPO ARGS…`, asserted ok.
fn expire(repo: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["expire", "--json", "--repo", repo];
    a.extend_from_slice(args);
    let out = pgtide(&a);
    out.assert_ok();
    json(&out)
}

/// `(keep, reasons)` of set `id` in an expire report.
fn fate(r: &serde_json::Value, id: &str) -> (bool, Vec<String>) {
    let s = r["sets"]
        .as_array()
        .expect("sets")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no set {id} in the report\n{r:#}"));
    let reasons = s["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r.as_str().expect("reason string").to_string())
        .collect();
    (s["keep"].as_bool().expect("keep"), reasons)
}

fn ids(l: &serde_json::Value, key: &str) -> Vec<String> {
    l[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {l:#}"))
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

fn dump(pg: &PgCluster, repo: &str, db: &str) -> String {
    let out = pgtide(&[
        "dump",
        "--json",
        "--db",
        &pg.conninfo("postgres", db),
        "--repo",
        repo,
    ]);
    out.assert_ok();
    json(&out)["id"].as_str().expect("dump id").to_string()
}

#[test]
fn expire_keeps_the_newest_backup_and_its_wal_and_finishes_interrupted_deletions() {
    let pg = PgCluster::start(15);
    pg.execute("postgres", "CREATE TABLE m (v text)");
    pg.create_db("app");
    pg.execute(
        "app",
        "CREATE TABLE a (x int); INSERT INTO a VALUES (1), (2)",
    );
    let work = work_dir("pgtide-expire-");
    let repo_path = path_in(&work, "repo");
    let repo = repo_path.as_str();
    let conn = pg.conninfo("postgres", "postgres");
    let streamer = Streamer::start(&conn, repo, "s", work.path());
    wait_until(
        &pg,
        "the streamer's slot becomes active",
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 's' AND active)",
    );

    // Four backups, a marker row and a new segment after each; three dumps
    // (two of postgres, one of app).
    let mut b = Vec::new();
    for i in 1..=4 {
        let r = backup(&conn, repo, &[]);
        b.push((
            r["id"].as_str().expect("backup id").to_string(),
            r["wal_start"].as_str().expect("wal_start").to_string(),
        ));
        pg.execute("postgres", &format!("INSERT INTO m VALUES ('m{i}')"));
        switch_wal(|q| pg.query_one("postgres", q));
    }
    let d_old = dump(&pg, repo, "postgres");
    let d_new = dump(&pg, repo, "postgres");
    let d_app = dump(&pg, repo, "app");
    let last = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(repo, &last);
    streamer.stop();
    let (b1, b2, b3, b4) = (
        b[0].0.as_str(),
        b[1].0.as_str(),
        b[2].0.as_str(),
        b[3].0.as_str(),
    );
    let b4_wal = b[3].1.as_str();
    let repo_dir = Path::new(repo);

    // Dry runs: nothing changes, every decision says why.
    let before = tree(repo_dir);
    let r = expire(
        repo,
        &["--dry-run", "--keep-last", "1", "--dump-keep-last", "1"],
    );
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        fate(&r, b4),
        (true, vec!["keep_last".into(), "newest".into()])
    );
    for id in [b1, b2, b3] {
        assert_eq!(
            fate(&r, id),
            (false, vec!["not among the newest 1 (keep_last)".into()]),
            "{r:#}"
        );
    }
    assert_eq!(r["newest_restorable_backup"], b4);
    assert_eq!(
        fate(&r, &d_new),
        (true, vec!["keep_last".into(), "newest".into()])
    );
    assert!(!fate(&r, &d_old).0, "{r:#}");
    // The dump policy applies per database: app's only dump stays.
    assert!(fate(&r, &d_app).0, "{r:#}");
    assert_eq!(r["backups_expired"], 3);
    assert_eq!(r["dumps_expired"], 1);
    assert!(r["wal"]["objects"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["wal"]["kept_from"], b4_wal);

    std::thread::sleep(Duration::from_millis(1100));
    let r = expire(
        repo,
        &["--dry-run", "--keep-max-age", "1s", "--keep-min", "2"],
    );
    assert_eq!(
        fate(&r, b4),
        (true, vec!["min_keep".into(), "newest".into()])
    );
    assert_eq!(fate(&r, b3), (true, vec!["min_keep".into()]));
    assert_eq!(
        fate(&r, b1),
        (false, vec!["older than max_age 1s".into()]),
        "{r:#}"
    );
    // No dump rule: every dump stays.
    assert_eq!(fate(&r, &d_old), (true, vec!["no retention rule".into()]));
    let r = expire(
        repo,
        &[
            "--dry-run",
            "--keep-max-age",
            "1h",
            "--dump-keep-max-age",
            "1s",
        ],
    );
    for id in [b1, b2, b3] {
        assert_eq!(fate(&r, id), (true, vec!["max_age 1h".into()]), "{r:#}");
    }
    assert_eq!(fate(&r, &d_new), (true, vec!["newest".into()]));
    assert_eq!(fate(&r, &d_app), (true, vec!["newest".into()]));
    assert_eq!(
        fate(&r, &d_old),
        (false, vec!["older than max_age 1s".into()])
    );

    // The human form: one line per set, and no change either.
    let out = pgtide(&["expire", "--dry-run", "--keep-last", "1", "--repo", repo]);
    out.assert_ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("EXPIRE") && l.contains(b1) && l.contains("keep_last")),
        "{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("KEEP") && l.contains(b4) && l.contains("newest")),
        "{out}"
    );
    assert!(out.stdout.contains("dry run: nothing was changed"), "{out}");
    assert_eq!(tree(repo_dir), before, "a dry run changed the repository");

    // Two deletions interrupted by hand: b1 after its manifest went, b2
    // right after the marker went in (its manifest still there).
    for id in [b1, b2] {
        fs::write(
            repo_dir.join(format!("backups/{id}/deleting.json")),
            br#"{"deleting_since": "2026-12-06T00:00:00Z", "pgtide_version": "0.1.0"}"#,
        )
        .expect("write the deleting marker");
    }
    fs::remove_file(repo_dir.join(format!("backups/{b1}/manifest.json"))).expect("rm manifest");
    let l = listing(repo);
    assert_eq!(ids(&l, "backups"), [b3, b4], "{l:#}");
    assert_eq!(ids(&l, "deleting"), [b1, b2], "{l:#}");
    assert!(ids(&l, "incomplete").is_empty(), "{l:#}");
    let out = pgtide(&["list", "--repo", repo]);
    out.assert_ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("being deleted:") && l.contains(b2)),
        "{out}"
    );
    pgtide(&["verify", b2, "--repo", repo]).assert_one_line_error(4, "is being deleted");
    pgtide(&["verify", b1, "--repo", repo]).assert_one_line_error(4, "no backup");
    pgtide(&["info", b2, "--repo", repo]).assert_one_line_error(4, "is being deleted");

    // The real run: both finished, b3 expired, b4 and its WAL kept.
    let r = expire(repo, &["--keep-last", "1", "--dump-keep-last", "1"]);
    assert_eq!(r["dry_run"], false);
    assert_eq!(ids(&r, "finished_deletions"), [b1, b2], "{r:#}");
    assert_eq!(r["sets"].as_array().unwrap().len(), 2 + 3, "{r:#}");
    assert!(!fate(&r, b3).0 && fate(&r, b4).0, "{r:#}");
    assert_eq!(r["backups_expired"], 1);
    assert_eq!(r["dumps_expired"], 1);
    assert!(r["bytes_freed"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["wal"]["objects"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["wal"]["kept_from"], b4_wal);
    // (The local driver may leave empty directories: objects are files.)
    for id in [b1, b2, b3] {
        let dir = repo_dir.join("backups").join(id);
        assert!(
            !dir.exists() || tree(&dir).is_empty(),
            "objects of backups/{id} are still there: {:?}",
            tree(&dir)
        );
    }
    let l = listing(repo);
    assert_eq!(ids(&l, "backups"), [b4], "{l:#}");
    assert_eq!(ids(&l, "dumps"), [d_new.as_str(), d_app.as_str()], "{l:#}");
    assert!(ids(&l, "deleting").is_empty() && ids(&l, "incomplete").is_empty());
    let wal = l["wal"].as_array().expect("wal");
    assert_eq!(wal.len(), 1, "{l:#}");
    assert_eq!(wal[0]["first"], b4_wal, "{l:#}");
    assert_eq!(wal[0]["gaps"].as_array().map(Vec::len), Some(0), "{l:#}");
    assert!(
        repo_dir.join("wal/00000001").is_dir(),
        "the kept backup's WAL is gone"
    );

    // A second run has nothing left to do.
    let again = tree(repo_dir);
    let r = expire(repo, &["--keep-last", "1", "--dump-keep-last", "1"]);
    assert_eq!(r["backups_expired"], 0);
    assert_eq!(r["dumps_expired"], 0);
    assert_eq!(r["wal"]["objects"], 0);
    assert_eq!(tree(repo_dir), again);

    // What is kept still verifies and restores to the end of the archive.
    pgtide(&["verify", "latest", "--repo", repo]).assert_ok();
    pgtide(&["verify", b4, "--repo", repo]).assert_ok();
    let restored = restore(repo, "latest", &[], Some(pg.socket_dir()));
    assert_eq!(restored.report["backup"], b4);
    assert_eq!(
        restored.markers(),
        ["m1", "m2", "m3", "m4"],
        "{}",
        restored.log()
    );
}
