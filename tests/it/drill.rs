//! `pgtide drill` against real servers: a good backup and a good dump are
//! proven (every step ok, recorded, shown by `list`/`info`); a damaged
//! chunk fails with 5, a gap in the backup's WAL with 4, a false `--sql`
//! check with 10; SIGINT leaves no server and no scratch directory; a
//! SIGKILLed drill's server and directory are removed by the next drill.
//! One physical drill per PostgreSQL version 13–18.
//!
//! Each test points `TMPDIR` at its own work directory, so the drill's
//! scratch directories and its registry of running drills are the test's
//! alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::cli::{Cli, CliOutput, PGTIDE_BIN};
use crate::harness::pg::{pg_bin_dir, pg_dump_bin, PgCluster, PASSWORD, SCRAM_USER};
use crate::harness::s3::{s3_env, S3Server};
use crate::pitr::{clean_command, json, path_in, work_dir};

const DEADLINE: Duration = Duration::from_secs(120);

/// What is unusual about a scene's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quirk {
    None,
    /// The bootstrap superuser is `dba`, not `postgres` (renamed by
    /// `scram_user`, made a superuser, who then takes the backup): the
    /// drill must find the name in `pg_authid`.
    RenamedSuperuser,
    /// postgresql.conf lives outside the data directory (as Debian's
    /// clusters): the backup has none.
    ConfOutside,
    /// The repository is in S3 (moto): the scratch server's
    /// restore_command reads it with the drill's credentials.
    S3,
}

/// A cluster with two databases of tables with indexes, and one physical
/// backup of it in a local repository.
struct Scene {
    pg: PgCluster,
    work: tempfile::TempDir,
    repo: String,
    /// The repository's environment (S3 credentials).
    env: Vec<(&'static str, &'static str)>,
    id: String,
}

fn fill(pg: &PgCluster) {
    pg.execute(
        "postgres",
        "CREATE TABLE t (id serial PRIMARY KEY, v text);
         INSERT INTO t (v) SELECT 'row ' || g FROM generate_series(1, 5000) g;
         CREATE INDEX ON t (v);
         CREATE TABLE wide (a int, b text);
         INSERT INTO wide SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 50) g;",
    );
    pg.create_db("app");
    pg.execute(
        "app",
        "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);
         INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 1000) g;",
    );
}

impl Scene {
    fn new(major: u32) -> Scene {
        Scene::with(major, Quirk::None)
    }

    fn with(major: u32, quirk: Quirk) -> Scene {
        let pg = PgCluster::start(major);
        fill(&pg);
        let work = work_dir("pgtide-drill-it-");
        let (repo, env) = if quirk == Quirk::S3 {
            (S3Server::moto().fresh_bucket_blocking().url, s3_env())
        } else {
            (path_in(&work, "repo"), Vec::new())
        };
        if quirk == Quirk::ConfOutside {
            fs::remove_file(pg.data_dir().join("postgresql.conf")).unwrap();
        }
        let conn = if quirk == Quirk::RenamedSuperuser {
            pg.execute("postgres", &format!("ALTER ROLE {SCRAM_USER} SUPERUSER"));
            pg.query_as(SCRAM_USER, "postgres", "ALTER ROLE postgres RENAME TO dba");
            format!(
                "postgres://{SCRAM_USER}:{PASSWORD}@127.0.0.1:{}/postgres",
                pg.port()
            )
        } else {
            pg.conninfo("postgres", "postgres")
        };
        let mut cli = Cli::new(["backup", "--json", "--db", &conn, "--repo", &repo]);
        for (k, v) in &env {
            cli.env(k, v);
        }
        let out = cli.run();
        out.assert_ok();
        let id = json(&out)["id"].as_str().expect("backup id").to_string();
        Scene {
            pg,
            work,
            repo,
            env,
            id,
        }
    }

    /// `pgtide drill --json --repo REPO --pg-bin BIN ARGS…` with TMPDIR in
    /// the work directory.
    fn drill(&self, args: &[&str]) -> CliOutput {
        let mut cli = drill_cmd(self.work.path(), &self.repo, self.pg.major(), args);
        for (k, v) in &self.env {
            cli.env(k, v);
        }
        cli.run()
    }
}

fn drill_cmd(work: &Path, repo: &str, major: u32, args: &[&str]) -> Cli {
    let mut cli = Cli::new(["drill", "--json", "--repo", repo]);
    cli.arg("--pg-bin").arg(pg_bin_dir(major));
    for a in args {
        cli.arg(a);
    }
    cli.env("TMPDIR", work)
        .env("PGTIDE_PG_DUMP", pg_dump_bin(15))
        .timeout(Duration::from_secs(600));
    cli
}

/// The step named `name` of a drill's JSON report.
fn step<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {r:#}"))
}

/// Scratch directories (`pgtide-drill-*`) under `work`.
fn scratch_dirs(work: &Path) -> Vec<PathBuf> {
    fs::read_dir(work)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("pgtide-drill-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line names `path` (a server on a scratch dir).
fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    out
}

fn assert_passed(out: &CliOutput) -> serde_json::Value {
    out.assert_ok();
    let r = json(out);
    assert_eq!(r["ok"], true, "{r:#}");
    for s in r["steps"].as_array().expect("steps") {
        assert_eq!(s["ok"], true, "{s:#}");
        assert!(s["seconds"].as_f64().is_some(), "{s:#}");
    }
    r
}

fn assert_cleaned(work: &Path) {
    let left = scratch_dirs(work);
    assert!(left.is_empty(), "scratch directories left: {left:?}");
    let procs = processes_naming(work);
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

/// A good backup is proven: recovery point, amcheck (heap and B-tree),
/// every table read, the --sql checks; the run is recorded and `list` and
/// `info` show it. A false --sql check fails with 10.
#[test]
fn drill_proves_a_good_backup_and_fails_a_false_sql_check() {
    let sc = Scene::new(15);
    let sql = sc.work.path().join("checks.sql");
    fs::write(
        &sql,
        "SELECT count(*) = 5000 FROM t;\nSELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'app');\n",
    )
    .unwrap();
    let out = sc.drill(&["latest", "--sql", sql.to_str().unwrap()]);
    let r = assert_passed(&out);
    assert_eq!(r["id"], sc.id.as_str());
    assert_eq!(r["kind"], "backup");
    let names: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "preflight",
            "restore",
            "recovery",
            "recovery_point",
            "amcheck",
            "tables_readable",
            "sql",
            "cleanup"
        ],
        "{r:#}"
    );
    let am = step(&r, "amcheck");
    assert_eq!(am["skipped"], false, "{am:#}");
    assert!(
        am["detail"].as_str().unwrap().contains("B-tree indexes"),
        "{am:#}"
    );
    assert!(
        step(&r, "tables_readable")["detail"]
            .as_str()
            .unwrap()
            .contains("databases"),
        "{r:#}"
    );
    assert_eq!(
        step(&r, "sql")["detail"],
        "2 checks true in database postgres"
    );
    assert_cleaned(sc.work.path());

    // Recorded: list and info say when it was proven.
    let l = crate::pitr::listing(&sc.repo);
    let b = &l["backups"][0];
    assert!(b["proven_at"].is_string(), "{l:#}");
    let info = Cli::new(["info", "--json", &sc.id, "--repo", &sc.repo]).run();
    info.assert_ok();
    assert!(json(&info)["drill"]["passed_at"].is_string(), "{info}");
    let text = Cli::new(["info", &sc.id, "--repo", &sc.repo]).run();
    assert!(text.stdout.contains("proven      20"), "{text}");

    // A check that is false: exit 10, naming it; still cleaned up. (Text
    // output: one line per step.)
    fs::write(&sql, "SELECT true;\nSELECT count(*) = 1 FROM t;\n").unwrap();
    let out = Cli::new(["drill", &sc.id, "--repo", &sc.repo, "--sql"])
        .arg(&sql)
        .env("TMPDIR", sc.work.path())
        .run();
    out.assert_one_line_error(10, "check 2 of the --sql file returned f");
    let lines = out.stdout_lines();
    assert!(
        lines[0].starts_with(&format!("drill of backup {}", sc.id)),
        "{out}"
    );
    for (mark, name) in [
        ("ok", "amcheck"),
        ("ok", "tables_readable"),
        ("FAIL", "sql"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with(mark) && l.contains(name)),
            "no `{mark} {name}` line\n{out}"
        );
    }
    assert_cleaned(sc.work.path());
    let info = Cli::new(["info", &sc.id, "--repo", &sc.repo]).run();
    assert!(info.stdout.contains("proven      20"), "{info}");
}

/// A dump is restored into a fresh scratch cluster and every table's row
/// count matches its manifest.
#[test]
fn drill_proves_a_dump() {
    let pg = PgCluster::start(15);
    fill(&pg);
    let work = work_dir("pgtide-drill-it-");
    let repo = path_in(&work, "repo");
    let out = Cli::new([
        "dump",
        "--json",
        "--db",
        &pg.conninfo("postgres", "app"),
        "--repo",
        &repo,
    ])
    .env("PGTIDE_PG_DUMP", pg_dump_bin(15))
    .run();
    out.assert_ok();
    let id = json(&out)["id"].as_str().unwrap().to_string();
    // --dry-run: the pre-flight and the plan, nothing written or recorded.
    let out = Cli::new(["drill", &id, "--repo", &repo, "--dry-run"])
        .env("TMPDIR", work.path())
        .run();
    out.assert_ok();
    assert!(
        out.stdout
            .contains("then check: row_counts, amcheck\nnothing was changed"),
        "{out}"
    );
    assert!(scratch_dirs(work.path()).is_empty());
    assert!(crate::pitr::listing(&repo)["dumps"][0]["proven_at"].is_null());
    let out = drill_cmd(work.path(), &repo, 15, &[&id]).run();
    let r = assert_passed(&out);
    assert_eq!(r["kind"], "dump");
    assert!(
        step(&r, "row_counts")["detail"]
            .as_str()
            .unwrap()
            .contains("1 tables, 1000 rows"),
        "{r:#}"
    );
    assert_eq!(step(&r, "amcheck")["skipped"], false, "{r:#}");
    assert_cleaned(work.path());
    let l = crate::pitr::listing(&repo);
    assert!(l["dumps"][0]["proven_at"].is_string(), "{l:#}");

    // A manifest that counts one row more than the data holds: the row
    // count check fails (10).
    let manifest = Path::new(&repo)
        .join("dumps")
        .join(&id)
        .join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    let t = m["tables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == "orders")
        .expect("orders in the manifest");
    t["parts"][0]["rows"] = serde_json::json!(1001);
    fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = drill_cmd(work.path(), &repo, 15, &[&id]).run();
    out.assert_one_line_error(10, "expected 1001 rows, loaded 1000");
    assert_cleaned(work.path());

    // A data-only dump cannot be drilled: refused before anything is made.
    let out = Cli::new([
        "dump",
        "--json",
        "--data-only",
        "--db",
        &pg.conninfo("postgres", "app"),
        "--repo",
        &repo,
    ])
    .run();
    out.assert_ok();
    let data_only = json(&out)["id"].as_str().unwrap().to_string();
    let out = drill_cmd(work.path(), &repo, 15, &[&data_only]).run();
    out.assert_one_line_error(2, "holds only data");
    assert_cleaned(work.path());
}

/// A flipped byte in a pack fails the drill with 5; a missing segment of
/// the backup's WAL with 4. Nothing is left behind either way, and the
/// failure is recorded.
#[test]
fn drill_fails_a_damaged_chunk_and_a_wal_gap() {
    let sc = Scene::new(15);
    let packs_dir = Path::new(&sc.repo)
        .join("backups")
        .join(&sc.id)
        .join("packs");
    let mut packs: Vec<PathBuf> = fs::read_dir(&packs_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    let original = fs::read(&packs[0]).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    fs::write(&packs[0], &bad).unwrap();
    let out = sc.drill(&[&sc.id]);
    out.assert_exit(5);
    let r = json(&out);
    assert_eq!(step(&r, "restore")["code"], 5, "{r:#}");
    assert_cleaned(sc.work.path());
    fs::write(&packs[0], &original).unwrap();

    // A target the archive does not reach: PostgreSQL ends recovery short
    // of it, which is WAL missing (4).
    let out = sc.drill(&[&sc.id, "--target-time", "2099-01-01 00:00:00+00"]);
    out.assert_one_line_error(4, "recovery ended before reaching time 2099");
    assert_eq!(step(&json(&out), "recovery")["code"], 4);
    assert_cleaned(sc.work.path());

    // Remove the backup's first WAL segment from the archive.
    let wal_start = {
        let info = Cli::new(["info", "--json", &sc.id, "--repo", &sc.repo]).run();
        json(&info)["wal_start"].as_str().unwrap().to_string()
    };
    let mut removed = false;
    for e in walk(&Path::new(&sc.repo).join("wal")) {
        if e.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with(&wal_start) && !n.contains("partial") && !n.contains(".backup")
        }) {
            fs::remove_file(&e).unwrap();
            removed = true;
        }
    }
    assert!(removed, "segment {wal_start} not found in the repository");
    let out = sc.drill(&[&sc.id]);
    out.assert_one_line_error(4, &wal_start);
    assert_eq!(step(&json(&out), "preflight")["code"], 4);
    assert_cleaned(sc.work.path());
    let l = crate::pitr::listing(&sc.repo);
    assert!(l["backups"][0]["proven_at"].is_null(), "{l:#}");
}

/// amcheck is not a formality: an expression index whose "immutable"
/// function changed after it was built no longer matches its heap, which
/// `bt_index_check(heapallindexed)` finds (10); the other checks pass.
#[test]
fn drill_amcheck_finds_an_index_that_does_not_match_its_table() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE FUNCTION f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
         CREATE TABLE c (a int);
         INSERT INTO c SELECT generate_series(1, 1000);
         CREATE INDEX c_f ON c (f(a));
         CREATE OR REPLACE FUNCTION f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT -$1';",
    );
    let work = work_dir("pgtide-drill-it-");
    let repo = path_in(&work, "repo");
    let out = Cli::new([
        "backup",
        "--json",
        "--db",
        &pg.conninfo("postgres", "postgres"),
        "--repo",
        &repo,
    ])
    .run();
    out.assert_ok();
    let out = drill_cmd(work.path(), &repo, 15, &["latest"]).run();
    out.assert_one_line_error(10, "lacks matching index tuple");
    let r = json(&out);
    let am = step(&r, "amcheck");
    assert_eq!(am["code"], 10, "{am:#}");
    assert!(am["detail"].as_str().unwrap().contains("c_f"), "{am:#}");
    assert_eq!(step(&r, "tables_readable")["ok"], true, "{r:#}");
    assert_cleaned(work.path());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A drill in the background, stdout and stderr into a file.
fn spawn_drill(sc: &Scene) -> (Child, PathBuf) {
    spawn_drill_paused(sc, "")
}

/// The same, held at the debug-build hook `PGTIDE_TEST_PAUSE` = `pause`
/// (none when empty).
fn spawn_drill_paused(sc: &Scene, pause: &str) -> (Child, PathBuf) {
    let log = sc
        .work
        .path()
        .join(format!("drill-{}.log", fastrand::u32(..)));
    let f = fs::File::create(&log).unwrap();
    let child = clean_command(PGTIDE_BIN)
        .args(["drill", "--repo", &sc.repo, &sc.id, "--pg-bin"])
        .arg(pg_bin_dir(sc.pg.major()))
        .env("TMPDIR", sc.work.path())
        .env("PGTIDE_TEST_PAUSE", pause)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null())
        .spawn()
        .expect("start pgtide drill");
    (child, log)
}

/// Waits until a scratch server runs (its postmaster.pid exists); returns
/// the scratch directory.
fn wait_for_server(work: &Path, log: &Path) -> PathBuf {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(d) = scratch_dirs(work)
            .into_iter()
            .find(|d| d.join("data/postmaster.pid").exists())
        {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "no scratch server started within {DEADLINE:?}\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, log: &Path) -> Option<i32> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "drill did not exit within {DEADLINE:?}\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// SIGINT or SIGTERM while the scratch server runs: exit 130, no server,
/// no directory. SIGINT while the restore writes the files (held there by
/// `PGTIDE_TEST_PAUSE`): its workers stop, then the directory goes.
/// SIGKILL: the server stays up, and the next drill stops it, removes the
/// directory and says so, then proves the backup.
#[test]
fn drill_cleans_up_after_sigint_and_after_a_killed_drill() {
    let sc = Scene::new(15);
    for sig in ["-INT", "-TERM"] {
        let (mut child, log) = spawn_drill(&sc);
        let dir = wait_for_server(sc.work.path(), &log);
        signal(child.id(), sig);
        let code = wait_exit(&mut child, &log);
        let text = fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(code, Some(130), "{text}");
        assert!(!dir.exists(), "{} left after {sig}\n{text}", dir.display());
        assert_cleaned(sc.work.path());
    }

    let (mut child, log) = spawn_drill_paused(&sc, "physical-restore-file");
    let deadline = Instant::now() + DEADLINE;
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("pgtide test pause: physical-restore-file")
    {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the drill never reached its restore\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(scratch_dirs(sc.work.path()).len(), 1);
    signal(child.id(), "-INT");
    let code = wait_exit(&mut child, &log);
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(130), "{text}");
    assert!(text.contains("error: interrupted"), "{text}");
    assert!(!text.contains("cleaning up"), "{text}");
    assert_cleaned(sc.work.path());

    let (mut child, log) = spawn_drill(&sc);
    let dir = wait_for_server(sc.work.path(), &log);
    signal(child.id(), "-KILL");
    let _ = wait_exit(&mut child, &log);
    // Give the server a moment to get going: it must be running on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_naming(&dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !processes_naming(&dir).is_empty(),
        "no server on {} after pgtide was killed",
        dir.display()
    );
    let out = drill_cmd(sc.work.path(), &sc.repo, 15, &[&sc.id, "--keep"]).run();
    let r = assert_passed(&out);
    let cleaned = r["cleaned_up"].as_array().unwrap();
    assert_eq!(cleaned.len(), 1, "{r:#}");
    let line = cleaned[0].as_str().unwrap();
    assert!(
        line.contains("stopped its server") && line.contains(&dir.display().to_string()),
        "{line}"
    );
    assert!(!dir.exists());
    // --keep: the directory stays, its server stopped, and the next drill
    // leaves it alone (no marker).
    let kept = PathBuf::from(r["scratch"].as_str().unwrap());
    assert_eq!(r["kept"], true);
    assert!(kept.join("data/PG_VERSION").exists(), "{r:#}");
    assert!(processes_naming(&kept).is_empty());
    let r = assert_passed(&sc.drill(&[&sc.id]));
    assert_eq!(r["cleaned_up"].as_array().map(Vec::len), Some(0), "{r:#}");
    assert!(kept.exists());
    fs::remove_dir_all(&kept).unwrap();
    assert_cleaned(sc.work.path());
}

/// One physical drill per PostgreSQL version (15 is above).
fn version_round(major: u32, args: &[&str]) {
    version_round_with(major, Quirk::None, args);
}

fn version_round_with(major: u32, quirk: Quirk, args: &[&str]) {
    let sc = Scene::with(major, quirk);
    let r = assert_passed(&sc.drill(args));
    let am = step(&r, "amcheck");
    assert_eq!(am["skipped"], false, "{am:#}");
    let point = step(&r, "recovery_point")["detail"].as_str().unwrap();
    assert!(point.contains("replayed to"), "{r:#}");
    if args.contains(&"--target-immediate") {
        assert!(
            point.contains("recovery stopping after reaching consistency"),
            "{r:#}"
        );
    }
    assert_cleaned(sc.work.path());
}

#[test]
fn drill_pg13() {
    version_round(13, &["latest"]);
}

#[test]
fn drill_pg14() {
    // A cluster whose configuration file is not in its data directory.
    version_round_with(14, Quirk::ConfOutside, &["latest"]);
}

#[test]
fn drill_pg16() {
    // A cluster whose superuser is not called postgres.
    version_round_with(16, Quirk::RenamedSuperuser, &["latest"]);
}

#[test]
fn drill_pg17() {
    // A target: recovery must stop there ("recovery stopping").
    version_round(17, &["latest", "--target-immediate"]);
}

#[test]
fn drill_pg18() {
    version_round_with(18, Quirk::S3, &["latest"]);
}
