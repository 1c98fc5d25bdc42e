//! The benchmark's data set: SQL that fills a new database server-side,
//! the same rows for the same SCALE on every run (no `random()`, no
//! `now()`), and the comment that marks a database as the bench's own.
//!
//! Per SCALE unit: 100,000 `bench_accounts` rows (pgbench's shape, about
//! 13 MB), and 1,150 rows each of `bench_docs` (text, about 2 kB a row),
//! `bench_blobs` (bytea, about 1 kB, half repetitive and half hash output)
//! and `bench_wide` (13 columns of mixed types); plus `bench_branches`
//! (SCALE rows), `bench_tellers` (10 × SCALE) and 200 small tables of 100
//! rows each, whatever the scale. About 19 MB on disk per SCALE unit, plus
//! about 20 MB (the small tables and the catalogs).
//!
//! Owns: the SQL text. Must never: connect (the caller runs the statements).

/// The database `--generate` creates (dropped and made again each time).
pub const GENERATED_DB: &str = "pgtide_bench";

/// Prefix of the comment on a database the bench created.
pub const MARK: &str = "created by pgtide bench";

/// Scratch databases the bench creates and drops start with this.
pub const SCRATCH_PREFIX: &str = "pgtide_bench_";

/// Rows of the text, bytea and wide tables per SCALE unit.
const EXTRA_ROWS_PER_SCALE: u64 = 1150;

/// Small tables made whatever the scale.
const SMALL_TABLES: u32 = 200;

/// True when a database's comment says the bench created it.
pub fn is_ours(comment: Option<&str>) -> bool {
    comment.is_some_and(|c| c.starts_with(MARK))
}

/// The comment `--generate SCALE` puts on its database.
pub fn mark(scale: u32) -> String {
    format!("{MARK} --generate {scale}: it drops and recreates this database")
}

/// The SCALE a marked database was generated with.
pub fn scale_of(comment: Option<&str>) -> Option<u32> {
    let rest = comment?.strip_prefix(MARK)?.strip_prefix(" --generate ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The statements that fill the database, in order; each runs on its own
/// (the last ones are VACUUM, which cannot run in a transaction).
pub fn statements(scale: u32) -> Vec<String> {
    let accounts = u64::from(scale) * 100_000;
    let extra = u64::from(scale) * EXTRA_ROWS_PER_SCALE;
    vec![
        "CREATE TABLE bench_branches (bid int PRIMARY KEY, bbalance int, filler char(88))".into(),
        format!("INSERT INTO bench_branches SELECT g, 0, '' FROM generate_series(1, {scale}) g"),
        "CREATE TABLE bench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84))"
            .into(),
        format!(
            "INSERT INTO bench_tellers SELECT g, (g - 1) / 10 + 1, 0, '' FROM generate_series(1, {}) g",
            u64::from(scale) * 10
        ),
        "CREATE TABLE bench_accounts (aid int, bid int, abalance int, filler char(84))".into(),
        format!(
            "INSERT INTO bench_accounts SELECT g, (g - 1) / 100000 + 1, (g::bigint * 7919 % 100000)::int - 50000, '' \
             FROM generate_series(1, {accounts}) g"
        ),
        "ALTER TABLE bench_accounts ADD PRIMARY KEY (aid)".into(),
        "CREATE TABLE bench_docs (id bigint PRIMARY KEY, title text, body text)".into(),
        format!(
            "INSERT INTO bench_docs SELECT g, 'title ' || g, \
             repeat(md5(g::text) || ' lorem ipsum dolor sit amet ', 28) FROM generate_series(1, {extra}) g"
        ),
        "CREATE INDEX bench_docs_title ON bench_docs (title)".into(),
        "CREATE TABLE bench_blobs (id bigint PRIMARY KEY, data bytea)".into(),
        format!(
            "INSERT INTO bench_blobs SELECT g, decode(repeat(md5(g::text), 31), 'hex') || \
             (SELECT string_agg(sha512(((g * 8 + i)::text)::bytea), ''::bytea) FROM generate_series(1, 8) i) \
             FROM generate_series(1, {extra}) g"
        ),
        "CREATE TABLE bench_wide (id bigint PRIMARY KEY, a int, b bigint, c numeric, d double precision, \
         e timestamptz, f date, g boolean, h uuid, i jsonb, j text[], k interval, l text)"
            .into(),
        format!(
            "INSERT INTO bench_wide SELECT g, g % 1000, g * 31, g / 7.0, g * 0.001, \
             timestamptz '2026-01-01 00:00:00+00' - g * interval '1 second', date '2026-01-01' - (g % 3650)::int, \
             g % 2 = 0, md5(g::text)::uuid, jsonb_build_object('k', g, 'v', md5(g::text)), \
             ARRAY['x' || g, 'y'], g * interval '1 minute', repeat('w', (200 + g % 300)::int) \
             FROM generate_series(1, {extra}) g"
        ),
        format!(
            "DO $$ BEGIN FOR i IN 1..{SMALL_TABLES} LOOP \
             EXECUTE format('CREATE TABLE bench_small_%s (id int PRIMARY KEY, name text, at date)', lpad(i::text, 3, '0')); \
             EXECUTE format('INSERT INTO bench_small_%s SELECT g, ''row '' || g, date ''2026-01-01'' + g \
             FROM generate_series(1, 100) g', lpad(i::text, 3, '0')); \
             END LOOP; END $$"
        ),
        "VACUUM ANALYZE".into(),
    ]
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a quoted SQL literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_set_is_deterministic_and_scales() {
        let one = statements(1).join(";\n");
        assert_eq!(one, statements(1).join(";\n"));
        assert!(!one.contains("random()") && !one.contains("now()"));
        assert!(one.contains("generate_series(1, 100000)"));
        assert!(statements(5)
            .join(";")
            .contains("generate_series(1, 500000)"));
    }

    #[test]
    fn only_marked_databases_are_ours() {
        assert!(is_ours(Some(&mark(3))));
        assert!(!is_ours(Some("the shop's orders")));
        assert!(!is_ours(None));
        assert_eq!(scale_of(Some(&mark(12))), Some(12));
        assert_eq!(scale_of(Some("created by pgtide bench")), None);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
