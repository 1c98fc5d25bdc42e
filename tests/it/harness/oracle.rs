//! Round-trip oracles: the schema as `pg_dump --schema-only` prints it, and
//! a hash of every table's rows, compared between source and target. On a
//! mismatch, both sides are printed.

use super::pg::{pg_dump_bin, PgCluster};

/// `pg_dump --schema-only` of `db`, without the lines that differ between
/// any two runs (`\restrict` keys, version banners).
pub fn schema(pg: &PgCluster, db: &str) -> String {
    schema_with(pg, db, pg.major().max(15))
}

/// [`schema`] with the pg_dump of major version `dump_major`.
pub fn schema_with(pg: &PgCluster, db: &str, dump_major: u32) -> String {
    let out = std::process::Command::new(pg_dump_bin(dump_major))
        .args(["--schema-only", "--no-password", "--dbname"])
        .arg(pg.conninfo("postgres", db))
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump --schema-only {db} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.starts_with("-- Dumped")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every user table (and matview) with the md5 of its rows in text form,
/// sorted, plus sequence values and large object contents.
pub fn contents(pg: &PgCluster, db: &str) -> Vec<(String, String)> {
    let rels = pg.query(
        db,
        "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text, c.relispopulated::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1",
    );
    let mut out = Vec::new();
    for r in rels {
        let name = r[0].clone().expect("name");
        let kind = r[1].clone().expect("kind");
        if r[2].as_deref() == Some("false") {
            out.push((name, "unpopulated".into()));
            continue;
        }
        let sql = if kind == "S" {
            format!("SELECT last_value::text || '/' || is_called::text FROM {name}")
        } else {
            format!(
                "SELECT count(*)::text || '/' || coalesce(md5(string_agg(x, E'\\n' ORDER BY x)), '') \
                 FROM (SELECT t::text AS x FROM ONLY {name} t) s"
            )
        };
        out.push((name, one(pg, db, &sql)));
    }
    let lo = one(
        pg,
        db,
        "SELECT count(*)::text || '/' || coalesce(md5(string_agg(m.oid::text || ':' || \
                pg_get_userbyid(m.lomowner) || ':' || coalesce(m.lomacl::text, '') || ':' || \
                md5(lo_get(m.oid)), ',' ORDER BY m.oid)), '') \
         FROM pg_largeobject_metadata m",
    );
    out.push(("<large objects>".into(), lo));
    out
}

/// One value, read with the session in UTC so timestamptz text compares
/// equal whatever the database's TimeZone setting.
fn one(pg: &PgCluster, db: &str, sql: &str) -> String {
    let rows = pg.query(db, &format!("SET TimeZone = 'UTC'; {sql}"));
    match rows.last().and_then(|r| r.first()) {
        Some(Some(v)) => v.clone(),
        _ => panic!("`{sql}` returned {rows:?}, not one value"),
    }
}

/// Assert source and target hold the same schema and the same rows.
pub fn assert_same_database(src: &PgCluster, src_db: &str, dst: &PgCluster, dst_db: &str) {
    let (a, b) = (schema(src, src_db), schema(dst, dst_db));
    if a != b {
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(20)
            .map(|(x, y)| format!("- {x}\n+ {y}"))
            .collect();
        panic!(
            "schemas differ ({} vs {} lines); first differing lines:\n{}",
            a.lines().count(),
            b.lines().count(),
            diff.join("\n")
        );
    }
    let (a, b) = (contents(src, src_db), contents(dst, dst_db));
    if a != b {
        let diff: Vec<String> = a
            .iter()
            .zip(b.iter())
            .filter(|(x, y)| x != y)
            .map(|(x, y)| format!("source {x:?}\ntarget {y:?}"))
            .collect();
        panic!(
            "contents differ ({} vs {} relations):\n{}",
            a.len(),
            b.len(),
            diff.join("\n")
        );
    }
}
