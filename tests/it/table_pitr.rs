//! Table- and database-level point-in-time recovery from a physical backup
//! into a live server (`restore <backup> --table … --db …`, `--database`),
//! against a real PostgreSQL 15 cluster that keeps writing meanwhile; and
//! foreign keys to tables left out of a logical `restore --table`.
//!
//! Oracles: every restored table's rows hash the same as the table did at
//! the target time; its indexes, constraints and sequence value are there;
//! the live tables not restored hash the same before and after; a refused
//! restore changes nothing (same hashes, no staging schema left); no
//! scratch directory and no server is left behind.
//!
//! Each run points `TMPDIR` at the test's work directory, so the scratch
//! directories are the test's alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::cli::{Cli, CliOutput, PGTIDE_BIN};
use crate::harness::pg::{pg_bin_dir, pg_dump_bin, PgCluster};
use crate::pitr::{
    clean_command, json, path_in, switch_wal, wait_archived, wait_until, work_dir, Streamer,
};

/// `count/md5` of a table's rows as text, sorted (TimeZone UTC).
fn hash(pg: &PgCluster, db: &str, table: &str) -> String {
    let rows = pg.query(
        db,
        &format!(
            "SET TimeZone = 'UTC'; SELECT count(*)::text || '/' || \
             coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM ONLY {table} t"
        ),
    );
    rows.last()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_else(|| panic!("no hash of {table}"))
}

/// The indexes and constraints of a table, as `name:definition` lines.
fn structure(pg: &PgCluster, db: &str, table: &str) -> Vec<String> {
    let mut v: Vec<String> = pg
        .query(
            db,
            &format!(
                "SELECT 'index ' || c.relname || ': ' || regexp_replace(pg_get_indexdef(i.indexrelid), ' ON \\S+', ' ON t') \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = '{table}'::regclass \
                 UNION ALL \
                 SELECT 'constraint ' || conname || ': ' || pg_get_constraintdef(oid) || \
                        CASE WHEN convalidated THEN '' ELSE ' NOT VALID' END \
                 FROM pg_constraint WHERE conrelid = '{table}'::regclass"
            ),
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    v.sort();
    v
}

/// A sequence's value after recovery: at least what it was at the target.
/// It may be further: PostgreSQL logs sequence values 32 ahead, and
/// `nextval` is not transactional, so recovery to a time also replays the
/// values taken after it by a transaction that commits after it. A
/// restored sequence never hands out a value its rows hold.
fn assert_seq(pg: &PgCluster, db: &str, seq: &str, at_target: &str) {
    let v: i64 = pg
        .query_one(db, &format!("SELECT last_value FROM {seq}"))
        .parse()
        .unwrap();
    let t: i64 = at_target.parse().unwrap();
    assert!(v >= t, "{seq} is {v}, it was {t} at the target");
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

/// Staging schemas left in the target.
fn staging(pg: &PgCluster, db: &str) -> Vec<String> {
    pg.query(
        db,
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgtide\\_restore%'",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap_or_default())
    .collect()
}

/// The live cluster, its repository and the work directory.
struct Scene {
    pg: PgCluster,
    work: tempfile::TempDir,
    repo: String,
}

impl Scene {
    /// `pgtide restore --json ARGS… --repo REPO --pg-bin …` with TMPDIR in
    /// the work directory.
    fn restore(&self, args: &[&str]) -> CliOutput {
        let mut cli = Cli::new(["restore", "--json", "--repo", &self.repo]);
        cli.arg("--pg-bin").arg(pg_bin_dir(self.pg.major()));
        for a in args {
            cli.arg(a);
        }
        cli.env("TMPDIR", self.work.path())
            .env("PGTIDE_PG_DUMP", pg_dump_bin(15))
            .timeout(Duration::from_secs(600));
        let out = cli.run();
        let left = scratch_dirs(self.work.path());
        assert!(left.is_empty(), "scratch directories left: {left:?}\n{out}");
        out
    }

    fn db(&self, name: &str) -> String {
        self.pg.conninfo("postgres", name)
    }
}

const SCHEMA: &str = "
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 200) g;
    CREATE TABLE orders (
        id bigserial PRIMARY KEY,
        customer_id int NOT NULL REFERENCES customers (id),
        total numeric(12,2) NOT NULL CHECK (total >= 0),
        note text DEFAULT 'none',
        at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00');
    CREATE INDEX orders_customer ON orders (customer_id);
    CREATE UNIQUE INDEX orders_note_at ON orders (note, at, id);
    INSERT INTO orders (customer_id, total, note)
        SELECT 1 + g % 200, g * 1.25, 'order ' || g FROM generate_series(1, 3000) g;
    CREATE TABLE order_items (
        id serial PRIMARY KEY,
        order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
        qty int NOT NULL CHECK (qty > 0),
        sku text);
    CREATE INDEX order_items_order ON order_items (order_id);
    INSERT INTO order_items (order_id, qty, sku)
        SELECT 1 + g % 3000, 1 + g % 7, md5(g::text) FROM generate_series(1, 8000) g;
    CREATE TABLE audit (id bigserial PRIMARY KEY, what text);";

/// The target time and what the tables held then.
struct AtTarget {
    time: String,
    orders: String,
    order_items: String,
    customers: String,
    orders_seq: String,
    items_seq: String,
    orders_structure: Vec<String>,
    items_structure: Vec<String>,
}

/// PostgreSQL 15 with database `app` (customers ← orders ← order_items,
/// audit) and a bigger database `other`; `wal stream` archiving; one base
/// backup; more writes; the target time; then orders change and
/// order_items is dropped. While a writer keeps inserting into `app`:
/// errors first (nothing matches, a target before the backup, a database
/// that did not exist), then order_items comes back, a second try is
/// refused (6), orders comes back beside the live one (`--into-schema`)
/// and then in its place (`--clean`), and `app` comes back whole as a new
/// database (`--database`), which a second try refuses (6).
#[test]
fn tables_and_a_database_come_back_from_a_backup_into_a_live_server() {
    let pg = PgCluster::start(15);
    pg.create_db("app");
    pg.execute("app", SCHEMA);
    pg.create_db("bulk");
    pg.execute(
        "bulk",
        "CREATE TABLE big (id bigint PRIMARY KEY, pad text);
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 300000) g;",
    );
    pg.create_db("other");
    pg.execute(
        "other",
        "CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 20) AS pad FROM generate_series(1, 60000) g",
    );
    let work = work_dir("pgtide-table-pitr-");
    let repo = path_in(&work, "repo");
    let conn = pg.conninfo("postgres", "postgres");
    let streamer = Streamer::start(&conn, &repo, "s", work.path());
    wait_until(
        &pg,
        "the streamer's slot becomes active",
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 's' AND active)",
    );
    let out = Cli::new(["backup", "--json", "--db", &conn, "--repo", &repo]).run();
    out.assert_ok();
    let backup_id = json(&out)["id"].as_str().unwrap().to_string();
    // Replayed after the backup: more orders and items.
    pg.execute(
        "app",
        "INSERT INTO orders (customer_id, total, note) SELECT 1 + g % 200, g, 'late ' || g FROM generate_series(1, 500) g;
         INSERT INTO order_items (order_id, qty, sku) SELECT 3000 + g, 2, 'late' FROM generate_series(1, 500) g;",
    );
    let sc = Scene { pg, work, repo };
    let pg = &sc.pg;
    std::thread::sleep(Duration::from_millis(1200));
    let t = AtTarget {
        time: pg.query_one("app", "SELECT now()::text"),
        orders: hash(pg, "app", "public.orders"),
        order_items: hash(pg, "app", "public.order_items"),
        customers: hash(pg, "app", "public.customers"),
        orders_seq: pg.query_one("app", "SELECT last_value::text FROM orders_id_seq"),
        items_seq: pg.query_one("app", "SELECT last_value::text FROM order_items_id_seq"),
        orders_structure: structure(pg, "app", "public.orders"),
        items_structure: structure(pg, "app", "public.order_items"),
    };
    std::thread::sleep(Duration::from_millis(1200));
    // After the target: orders change, order_items is dropped.
    pg.execute(
        "app",
        "UPDATE orders SET note = 'changed' WHERE id % 10 = 0;
         INSERT INTO orders (customer_id, total) SELECT 1, 1 FROM generate_series(1, 100);
         DROP TABLE order_items;",
    );
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&sc.repo, &switched);

    // The live database keeps writing while the restores run.
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                pg.execute("app", "INSERT INTO audit (what) VALUES ('live write')");
                written.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scenarios(&sc, &t, &backup_id)
        }));
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("the live writer");
        if let Err(p) = r {
            std::panic::resume_unwind(p);
        }
    });
    let n = written.load(Ordering::Relaxed);
    assert!(n > 0, "the live writer wrote nothing");
    assert_eq!(
        pg.query_one("app", "SELECT count(*)::text FROM audit"),
        n.to_string()
    );
    streamer.stop();
}

fn scenarios(sc: &Scene, t: &AtTarget, backup_id: &str) {
    let pg = &sc.pg;
    let app = sc.db("app");
    let live_customers = hash(pg, "app", "public.customers");
    let live_orders = hash(pg, "app", "public.orders");
    assert_eq!(live_customers, t.customers);
    assert_ne!(live_orders, t.orders);

    // A pattern that matches nothing: refused before anything is copied.
    sc.restore(&[
        "latest",
        "--target-time",
        &t.time,
        "--table",
        "public.nope",
        "--db",
        &app,
    ])
    .assert_one_line_error(2, "no table of database app at time")
    .assert_one_line_error(2, "matches --table public.nope: nothing was restored");
    // A target before the oldest backup: refused before any download.
    sc.restore(&[
        "latest",
        "--target-time",
        "2000-01-01 00:00:00+00",
        "--table",
        "public.orders",
        "--db",
        &app,
    ])
    .assert_exit(4);
    // A database that did not exist at the target.
    sc.restore(&[
        backup_id,
        "--target-time",
        &t.time,
        "--database",
        "nosuch",
        "--db",
        &sc.db("nosuch_copy"),
    ])
    .assert_one_line_error(2, "database nosuch did not exist at time");

    // The dropped table comes back, as it was at the target, with its
    // indexes, constraints (its foreign key to the live orders) and
    // sequence value; the other tables are untouched.
    let out = sc.restore(&[
        "latest",
        "--target-time",
        &t.time,
        "--table",
        "public.order_items",
        "--db",
        &app,
    ]);
    out.assert_ok();
    let r = json(&out);
    assert_eq!(r["backup"], backup_id, "{r:#}");
    assert_eq!(r["kind"], "tables", "{r:#}");
    assert_eq!(r["tables"][0]["restored_as"], "public.order_items", "{r:#}");
    assert_eq!(r["tables"][0]["replaced"], false, "{r:#}");
    assert_eq!(r["foreign_keys"][0]["outcome"], "created", "{r:#}");
    assert_eq!(r["sequences"], 1, "{r:#}");
    // Database `other` was not downloaded.
    assert!(r["sparse_files"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["sparse_bytes"].as_u64().unwrap() > 5 << 20, "{r:#}");
    assert_eq!(hash(pg, "app", "public.order_items"), t.order_items);
    assert_eq!(
        structure(pg, "app", "public.order_items"),
        t.items_structure
    );
    assert_seq(pg, "app", "order_items_id_seq", &t.items_seq);
    assert_eq!(hash(pg, "app", "public.orders"), live_orders);
    assert_eq!(hash(pg, "app", "public.customers"), live_customers);
    assert!(staging(pg, "app").is_empty());

    // Again: the table exists now. Refused with 6, nothing changed.
    sc.restore(&[
        "latest",
        "--target-time",
        &t.time,
        "--table",
        "public.order_items",
        "--db",
        &app,
    ])
    .assert_one_line_error(
        6,
        "table public.order_items already exists in the target database",
    );
    assert_eq!(hash(pg, "app", "public.order_items"), t.order_items);
    assert!(staging(pg, "app").is_empty());

    // Beside the live table: --into-schema.
    let out = sc.restore(&[
        "latest",
        "--target-time",
        &t.time,
        "--table",
        "public.orders",
        "--into-schema",
        "restored",
        "--db",
        &app,
    ]);
    out.assert_ok();
    let r = json(&out);
    assert_eq!(r["tables"][0]["restored_as"], "restored.orders", "{r:#}");
    assert_eq!(hash(pg, "app", "restored.orders"), t.orders);
    assert_eq!(hash(pg, "app", "public.orders"), live_orders);
    assert_eq!(
        structure(pg, "app", "restored.orders"),
        t.orders_structure,
        "indexes and constraints of the restored copy"
    );
    assert_seq(pg, "app", "restored.orders_id_seq", &t.orders_seq);
    // Its default takes values from its own sequence.
    assert_eq!(
        pg.query_one(
            "app",
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'restored.orders'::regclass AND adnum = 1"
        ),
        "nextval('restored.orders_id_seq'::regclass)"
    );

    // A view over the live table: --clean cannot replace it. Refused (6)
    // by the swap, rolled back: nothing changed, no staging schema left.
    pg.execute(
        "app",
        "CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100",
    );
    sc.restore(&["latest", "--target-time", &t.time, "--table", "public.orders", "--clean", "--db", &app])
        .assert_one_line_error(6, "cannot replace public.orders: cannot drop table public.orders because other objects depend on it");
    assert_eq!(hash(pg, "app", "public.orders"), live_orders);
    assert_eq!(
        structure(pg, "app", "public.order_items"),
        t.items_structure
    );
    assert!(staging(pg, "app").is_empty());
    pg.execute("app", "DROP VIEW big_orders");

    // Replacing the live table: --clean. The foreign key of the live
    // order_items to it is recreated.
    let out = sc.restore(&[
        "latest",
        "--target-time",
        &t.time,
        "--table",
        "public.orders",
        "--clean",
        "--db",
        &app,
    ]);
    out.assert_ok();
    let r = json(&out);
    assert_eq!(r["tables"][0]["replaced"], true, "{r:#}");
    assert_eq!(hash(pg, "app", "public.orders"), t.orders);
    assert_eq!(structure(pg, "app", "public.orders"), t.orders_structure);
    assert_seq(pg, "app", "orders_id_seq", &t.orders_seq);
    let outcomes: Vec<(String, String)> = r["foreign_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["table"].as_str().unwrap().to_string(),
                k["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("public.order_items".into(), "recreated".into())),
        "{r:#}"
    );
    assert_eq!(
        structure(pg, "app", "public.order_items"),
        t.items_structure
    );
    assert_eq!(hash(pg, "app", "public.customers"), live_customers);
    assert!(staging(pg, "app").is_empty());

    // The whole database, as a new one.
    let copy = sc.db("app_at_t");
    let out = sc.restore(&[
        backup_id,
        "--target-time",
        &t.time,
        "--database",
        "app",
        "--db",
        &copy,
    ]);
    out.assert_ok();
    let r = json(&out);
    assert_eq!(r["kind"], "database", "{r:#}");
    assert_eq!(hash(pg, "app_at_t", "public.order_items"), t.order_items);
    assert_eq!(hash(pg, "app_at_t", "public.orders"), t.orders);
    assert_eq!(hash(pg, "app_at_t", "public.customers"), t.customers);
    assert_eq!(
        structure(pg, "app_at_t", "public.orders"),
        t.orders_structure
    );
    // It exists now: refused before anything is downloaded.
    sc.restore(&[
        backup_id,
        "--target-time",
        &t.time,
        "--database",
        "app",
        "--db",
        &copy,
    ])
    .assert_one_line_error(6, "database app_at_t already exists");

    // Tables of another database (--database with --table) into a database
    // without the table they reference: the foreign key is skipped, with a
    // warning naming it.
    pg.create_db("items_only");
    let out = sc.restore(&[
        backup_id,
        "--target-time",
        &t.time,
        "--database",
        "app",
        "--table",
        "public.order_items",
        "--db",
        &sc.db("items_only"),
    ]);
    out.assert_ok();
    let r = json(&out);
    assert_eq!(r["source_database"], "app", "{r:#}");
    assert_eq!(r["database"], "items_only", "{r:#}");
    assert_eq!(r["foreign_keys"][0]["outcome"], "skipped", "{r:#}");
    assert!(
        out.stderr.contains(
            "foreign key order_items_order_id_fkey of public.order_items (references public.orders) is not created"
        ),
        "{out}"
    );
    assert_eq!(hash(pg, "items_only", "public.order_items"), t.order_items);

    // SIGINT once the target has a staging schema: exit 130, the staging
    // schema dropped, the scratch directory removed, no server left.
    let log = sc.work.path().join("interrupted.log");
    let file = fs::File::create(&log).unwrap();
    let mut child = clean_command(PGTIDE_BIN)
        .args([
            "restore",
            backup_id,
            "--repo",
            &sc.repo,
            "--table",
            "public.big",
        ])
        .args(["--into-schema", "restored"])
        .arg("--db")
        .arg(sc.db("bulk"))
        .arg("--pg-bin")
        .arg(pg_bin_dir(15))
        .env("TMPDIR", sc.work.path())
        .env("PGTIDE_PG_DUMP", pg_dump_bin(15))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while staging(pg, "bulk").is_empty() {
        assert!(
            child.try_wait().unwrap().is_none() && Instant::now() < deadline,
            "no staging schema seen\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dirs = scratch_dirs(sc.work.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = child.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(staging(pg, "bulk").is_empty(), "{text}");
    assert!(scratch_dirs(sc.work.path()).is_empty(), "{text}");
    assert!(
        !processes_naming(&dirs[0]),
        "a server runs on {}",
        dirs[0].display()
    );
    assert_eq!(
        pg.query_one(
            "bulk",
            "SELECT count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'restored' AND c.relname = 'big'"
        ),
        "0"
    );
}

/// Whether a process's command line names `path` (a server on a scratch
/// directory).
fn processes_naming(path: &Path) -> bool {
    let needle = path.display().to_string();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
}

/// A logical `restore --table` of a dump: a foreign key to a table that is
/// neither restored nor in the target is skipped with a warning naming it
/// (pg_restore failed on it); one to a restored table is created.
#[test]
fn restore_table_of_a_dump_skips_foreign_keys_to_missing_tables() {
    let pg = PgCluster::start(15);
    pg.create_db("app");
    pg.execute("app", SCHEMA);
    let work = work_dir("pgtide-fk-");
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

    let restore = |db: &str, tables: &[&str]| {
        let mut cli = Cli::new(["restore", "--json", &id, "--repo", &repo, "--create"]);
        cli.arg("--db").arg(pg.conninfo("postgres", db));
        for t in tables {
            cli.arg("--table").arg(t);
        }
        cli.env("PGTIDE_PG_DUMP", pg_dump_bin(15));
        cli.run()
    };
    let out = restore("items_only", &["public.order_items"]);
    out.assert_ok();
    assert!(
        out.stderr
            .contains("foreign key order_items_order_id_fkey on public.order_items (references public.orders) is not created"),
        "{out}"
    );
    let r = json(&out);
    assert_eq!(
        r["skipped_foreign_keys"],
        serde_json::json!(["foreign key order_items_order_id_fkey on public.order_items (references public.orders)"]),
        "{r:#}"
    );
    assert_eq!(
        hash(&pg, "items_only", "public.order_items"),
        hash(&pg, "app", "public.order_items")
    );
    assert!(structure(&pg, "items_only", "public.order_items")
        .iter()
        .all(|l| !l.contains("FOREIGN KEY")));

    // Both tables: the key is created.
    let out = restore(
        "both",
        &["public.orders", "public.order_items", "public.customers"],
    );
    out.assert_ok();
    assert_eq!(json(&out)["skipped_foreign_keys"], serde_json::json!([]));
    assert_eq!(
        structure(&pg, "both", "public.order_items"),
        structure(&pg, "app", "public.order_items")
    );
}

/// The scratch server runs the backup's version; the target may be
/// another: PostgreSQL 13 tables into 17, and 17 into 13 (pg_dump and
/// pg_restore 18), recovered to the end of the backup's own WAL.
#[test]
fn tables_come_back_across_major_versions() {
    for (from, to) in [(13, 17), (17, 13)] {
        let src = PgCluster::start(from);
        src.create_db("app");
        src.execute("app", SCHEMA);
        let dst = PgCluster::start(to);
        dst.create_db("app");
        dst.execute(
            "app",
            "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 200) g;",
        );
        let work = work_dir("pgtide-table-pitr-versions-");
        let repo = path_in(&work, "repo");
        let out = Cli::new([
            "backup",
            "--json",
            "--db",
            &src.conninfo("postgres", "postgres"),
            "--repo",
            &repo,
        ])
        .run();
        out.assert_ok();
        let id = json(&out)["id"].as_str().unwrap().to_string();
        let out = Cli::new([
            "restore",
            "--json",
            &id,
            "--repo",
            &repo,
            "--table",
            "public.orders",
            "--table",
            "public.order_items",
        ])
        .arg("--db")
        .arg(dst.conninfo("postgres", "app"))
        .arg("--pg-bin")
        .arg(pg_bin_dir(from))
        .env("TMPDIR", work.path())
        .env("PGTIDE_PG_DUMP", pg_dump_bin(18))
        .timeout(Duration::from_secs(600))
        .run();
        out.assert_ok();
        let r = json(&out);
        assert_eq!(
            r["foreign_keys"][0]["outcome"], "created",
            "{from} → {to}: {r:#}"
        );
        for t in ["public.orders", "public.order_items"] {
            assert_eq!(
                hash(&dst, "app", t),
                hash(&src, "app", t),
                "{from} → {to}: {t}"
            );
            assert_eq!(
                structure(&dst, "app", t),
                structure(&src, "app", t),
                "{from} → {to}: {t}"
            );
        }
        assert!(scratch_dirs(work.path()).is_empty());
    }
}
