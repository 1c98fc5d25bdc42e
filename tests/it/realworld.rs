//! Logical dump → restore round trips on real-world-shaped databases that
//! the rich fixture of `dump_load` does not build: identifiers that need
//! quoting everywhere (database, schema, table, column and role names),
//! tables without columns, a 50 MiB value, thousands of tables, extension
//! types and indexes, schema-qualified enum/composite/range types,
//! sub-partitioned tables referenced by a foreign key, inheritance across
//! schemas, NOT VALID constraints, exclusion constraints, circular
//! deferrable foreign keys, matviews over views over matviews, triggers that
//! must not fire on load, a non-superuser database owner with objects owned
//! by several roles and grants, and the selective restore and exclude
//! patterns on such names.
//!
//! Oracles: `assert_same_database` (same `pg_dump --schema-only`, same rows,
//! sequences and large objects) plus targeted catalog checks for what
//! `pg_dump --schema-only` without `--create` does not show (the database's
//! owner, grants and settings).

use crate::harness::cli::{pgtide_env, CliOutput};
use crate::harness::oracle::assert_same_database;
use crate::harness::pg::{give_to_server_user, pg_bin_dir, PgCluster};

/// Roles of the cluster: a non-superuser database owner, a role whose name
/// needs quoting, and a login role that owns some objects.
const ROLES_SQL: &str = r#"
CREATE ROLE app_owner LOGIN;
CREATE ROLE "Report Writer";
CREATE ROLE etl_user LOGIN;
"#;

/// The source database: run in a database named [`SRC_DB`] (the statements
/// that name the database use that name).
const SHOP_SQL: &str = r#"
-- The database belongs to a non-superuser, with its own grants and settings.
ALTER DATABASE "Shop Ünï ""DB""" OWNER TO app_owner;
REVOKE CONNECT, TEMPORARY ON DATABASE "Shop Ünï ""DB""" FROM PUBLIC;
GRANT CONNECT ON DATABASE "Shop Ünï ""DB""" TO etl_user, "Report Writer";
GRANT CREATE ON DATABASE "Shop Ünï ""DB""" TO etl_user WITH GRANT OPTION;
COMMENT ON DATABASE "Shop Ünï ""DB""" IS 'the shop''s database';
ALTER DATABASE "Shop Ünï ""DB""" SET search_path = "$user", public, ext;
-- ALTER ROLE … IN DATABASE … SET is not carried by restore --create yet
-- (issue 2 note); this fixture leaves it out so the rest stays checked.

-- Identifiers that need quoting.
CREATE SCHEMA "Sales Dept" AUTHORIZATION app_owner;
CREATE SCHEMA "schema.with.dots";
CREATE SCHEMA "ünïcødé";
CREATE SCHEMA "select";
CREATE SCHEMA ext;
CREATE SCHEMA types AUTHORIZATION etl_user;

CREATE TABLE "Sales Dept"."Order Items" (
    "Item ID" serial PRIMARY KEY,
    "unit.price" numeric(10,2) NOT NULL DEFAULT 0,
    "qty""x" int,
    "ORDER" text,
    "üñí côdé" text,
    "end" timestamptz
);
ALTER TABLE "Sales Dept"."Order Items" OWNER TO "Report Writer";
INSERT INTO "Sales Dept"."Order Items" ("unit.price", "qty""x", "ORDER", "üñí côdé", "end")
    SELECT g / 7.0, g, 'o' || g, 'ü' || g, '2026-01-01'::timestamptz + g * interval '1 hour'
    FROM generate_series(1, 500) g;
COMMENT ON COLUMN "Sales Dept"."Order Items"."unit.price" IS 'price per unit';
CREATE INDEX "Order Items by ORDER" ON "Sales Dept"."Order Items" ("ORDER");
ALTER TABLE "Sales Dept"."Order Items" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Writers see cheap items" ON "Sales Dept"."Order Items" FOR SELECT
    TO "Report Writer" USING ("unit.price" < 50);
CREATE POLICY etl_all ON "Sales Dept"."Order Items" TO etl_user USING (true) WITH CHECK (true);

CREATE TABLE "schema.with.dots"."table.with.dots" ("col.with.dots" int, "a""b" text);
INSERT INTO "schema.with.dots"."table.with.dots" VALUES (1, 'x'), (2, NULL);
CREATE TABLE "ünïcødé"."日本語テーブル" ("列" text PRIMARY KEY, "émoji 🎉" text);
INSERT INTO "ünïcødé"."日本語テーブル" VALUES ('一', '🎉'), ('二', E'tab\there');
CREATE TABLE "select"."from" ("where" int, "group" text, "user" text, "table" boolean);
INSERT INTO "select"."from" VALUES (1, 'g', 'u', true), (NULL, NULL, NULL, NULL);
CREATE TABLE public."  padded  " (" x " int);
INSERT INTO public."  padded  " VALUES (1), (2), (NULL);
CREATE TABLE public."back\slash" ("tab	col" int, "new
line" text);
INSERT INTO public."back\slash" VALUES (1, E'a\nb\\c');
CREATE TABLE public.Été (Ünïcode int);
INSERT INTO public.Été VALUES (1);

-- Tables without columns: all dropped, or only a generated one.
CREATE TABLE public.only_dropped (a int, b text);
INSERT INTO public.only_dropped SELECT g, 'x' FROM generate_series(1, 5) g;
ALTER TABLE public.only_dropped DROP COLUMN a, DROP COLUMN b;
CREATE TABLE public.only_generated (a int, g int GENERATED ALWAYS AS (7) STORED);
INSERT INTO public.only_generated (a) SELECT g FROM generate_series(1, 4) g;
ALTER TABLE public.only_generated DROP COLUMN a;

-- Extensions, one in its own schema, their types in columns and indexes.
CREATE EXTENSION hstore SCHEMA ext;
CREATE EXTENSION citext SCHEMA ext;
CREATE EXTENSION pg_trgm;
CREATE EXTENSION btree_gist;
CREATE TABLE public.products (
    id int PRIMARY KEY,
    sku ext.citext UNIQUE,
    name text NOT NULL,
    attrs ext.hstore,
    attr_keys text[] GENERATED ALWAYS AS (ext.akeys(attrs)) STORED
);
INSERT INTO public.products (id, sku, name, attrs)
    SELECT g, 'SKU-' || g, 'product number ' || g,
           ext.hstore(ARRAY['color', 'size', 'we"ird => key'], ARRAY['c' || (g % 5), (g % 3)::text, NULL])
    FROM generate_series(1, 1000) g;
CREATE INDEX products_name_trgm ON public.products USING gin (name gin_trgm_ops);
CREATE INDEX products_attrs ON public.products USING gist (attrs ext.gist_hstore_ops);
ALTER TABLE public.products OWNER TO app_owner;
COMMENT ON TABLE public.products IS E'Products.\n\\\\fileserver\\catalog holds the images\nSET client_encoding = ''LATIN1'';\n-- the end';

-- Schema-qualified enum, composite, range and domain types in columns.
CREATE TYPE types."Status" AS ENUM ('new', 'in progress', 'done, really', 'ü');
CREATE TYPE types.address AS (street text, "zip code" text, geo point);
CREATE TYPE types.floatrange AS RANGE (subtype = float8);
CREATE DOMAIN types.pos_int AS int CONSTRAINT pos_int_check CHECK (VALUE > 0);
CREATE DOMAIN types.legacy_int AS int;
CREATE TABLE types.uses (
    id int PRIMARY KEY,
    st types."Status" NOT NULL DEFAULT 'new',
    addr types.address,
    fr types.floatrange,
    fmr types.floatmultirange,
    addrs types.address[],
    sts types."Status"[],
    qty types.pos_int
);
INSERT INTO types.uses VALUES
    (1, 'in progress', ROW('1 Main St', '12 345', point(1.5, -2)), '[1.5,2.5)', '{[1,2),[3,4]}',
     ARRAY[ROW('a"b', NULL, NULL)::types.address, ROW(NULL, 'z,z', '(0,0)')::types.address],
     '{new,"done, really"}', 5),
    (2, 'ü', ROW(NULL, NULL, NULL), 'empty', '{}', '{}', NULL, NULL);
ALTER TYPE types."Status" OWNER TO app_owner;

-- Partitioned by list, sub-partitioned by range, default partitions, a
-- partition in another schema; a primary key and a foreign key onto it.
CREATE TABLE public.measurements (id bigint, region text, at date, val numeric,
    PRIMARY KEY (id, region, at)) PARTITION BY LIST (region);
CREATE TABLE public.measurements_eu PARTITION OF public.measurements
    FOR VALUES IN ('eu') PARTITION BY RANGE (at);
CREATE TABLE public.measurements_eu_2025 PARTITION OF public.measurements_eu
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.measurements_eu_other PARTITION OF public.measurements_eu DEFAULT;
CREATE TABLE "Sales Dept"."Measurements US" PARTITION OF public.measurements FOR VALUES IN ('us');
CREATE TABLE public.measurements_default PARTITION OF public.measurements DEFAULT;
CREATE INDEX ON public.measurements (val);

-- Triggers that would change the rows if they fired on load.
CREATE TABLE public.audit_log (id bigserial PRIMARY KEY, tbl text NOT NULL, op text NOT NULL);
CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.audit_log (tbl, op) VALUES (TG_TABLE_NAME, TG_OP);
    RETURN NEW;
END $$;
CREATE FUNCTION public.shout() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.v := upper(NEW.v) || '!';
    RETURN NEW;
END $$;
CREATE TABLE public.audited (id int PRIMARY KEY, v text);
CREATE TRIGGER audited_log AFTER INSERT ON public.audited FOR EACH ROW EXECUTE FUNCTION public.audit();
CREATE TRIGGER audited_shout BEFORE INSERT OR UPDATE ON public.audited
    FOR EACH ROW EXECUTE FUNCTION public.shout();
ALTER TABLE public.audited ENABLE ALWAYS TRIGGER audited_shout;
INSERT INTO public.audited SELECT g, 'v' || g FROM generate_series(1, 100) g;
CREATE TRIGGER measurements_audit AFTER INSERT ON public.measurements
    FOR EACH ROW EXECUTE FUNCTION public.audit();
INSERT INTO public.measurements
    SELECT g, (ARRAY['eu', 'us', 'apac'])[1 + g % 3], date '2025-06-01' + (g % 400), g * 1.5
    FROM generate_series(1, 3000) g;
CREATE TABLE public.measurement_notes (id serial PRIMARY KEY, m_id bigint, m_region text, m_at date,
    note text, FOREIGN KEY (m_id, m_region, m_at) REFERENCES public.measurements ON DELETE CASCADE);
INSERT INTO public.measurement_notes (m_id, m_region, m_at, note)
    SELECT id, region, at, 'note ' || id FROM public.measurements WHERE id % 10 = 0;
CREATE CONSTRAINT TRIGGER notes_audit AFTER INSERT ON public.measurement_notes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.audit();

-- Inheritance with a child in another schema.
CREATE TABLE public.vehicle (id int, wheels int);
CREATE TABLE "Sales Dept".truck (payload int) INHERITS (public.vehicle);
INSERT INTO public.vehicle VALUES (1, 2);
INSERT INTO "Sales Dept".truck VALUES (2, 6, 1000);

-- Constraints the existing rows violate (NOT VALID), exclusion constraints,
-- circular deferrable and self-referencing foreign keys.
CREATE TABLE public.legacy (id int, amount int, parent_id int, qty types.legacy_int);
INSERT INTO public.legacy VALUES (1, -5, 99, -1), (2, 10, NULL, 3);
ALTER TABLE public.legacy ADD CONSTRAINT legacy_pk PRIMARY KEY (id);
ALTER TABLE public.legacy ADD CONSTRAINT amount_positive CHECK (amount > 0) NOT VALID;
ALTER TABLE public.legacy ADD CONSTRAINT legacy_parent_fk FOREIGN KEY (parent_id)
    REFERENCES public.legacy (id) NOT VALID;
ALTER DOMAIN types.legacy_int ADD CONSTRAINT legacy_int_positive CHECK (VALUE > 0) NOT VALID;
CREATE TABLE public.bookings (id serial PRIMARY KEY, room int, during tstzrange,
    EXCLUDE USING gist (room WITH =, during WITH &&));
INSERT INTO public.bookings (room, during)
    SELECT g % 10, tstzrange('2026-01-01'::timestamptz + g * interval '1 day',
                             '2026-01-01'::timestamptz + (g + 1) * interval '1 day')
    FROM generate_series(1, 200) g;
CREATE TABLE public.husband (id int PRIMARY KEY, wife_id int NOT NULL);
CREATE TABLE public.wife (id int PRIMARY KEY,
    husband_id int NOT NULL REFERENCES public.husband DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE public.husband ADD CONSTRAINT husband_wife_fk FOREIGN KEY (wife_id)
    REFERENCES public.wife DEFERRABLE INITIALLY DEFERRED;
BEGIN;
INSERT INTO public.husband SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO public.wife SELECT g, g FROM generate_series(1, 50) g;
COMMIT;
CREATE TABLE public.employee (id int PRIMARY KEY, manager_id int REFERENCES public.employee);
INSERT INTO public.employee SELECT g, NULLIF(g / 2, 0) FROM generate_series(1, 100) g;

-- A default calling a sequence another table owns; identity with options.
CREATE TABLE public.ticket_source (id serial PRIMARY KEY, label text);
CREATE TABLE public.ticket (id int PRIMARY KEY DEFAULT nextval('public.ticket_source_id_seq'), title text);
INSERT INTO public.ticket_source (label) SELECT 's' FROM generate_series(1, 5);
INSERT INTO public.ticket (title) SELECT 't' || g FROM generate_series(1, 20) g;
CREATE TABLE public.ident (id bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 1000 INCREMENT BY 10), v text);
INSERT INTO public.ident (v) SELECT 'v' || g FROM generate_series(1, 7) g;

-- Views and materialized views that depend on each other, across owners.
CREATE VIEW public.v_eu AS SELECT id, at, val FROM public.measurements WHERE region = 'eu';
CREATE MATERIALIZED VIEW public.mv_eu_daily AS SELECT at, sum(val) AS total FROM public.v_eu GROUP BY at;
CREATE UNIQUE INDEX ON public.mv_eu_daily (at);
CREATE VIEW "Sales Dept"."V on MV" AS SELECT * FROM public.mv_eu_daily WHERE total > 10;
CREATE MATERIALIZED VIEW "Sales Dept"."MV of V" AS
    SELECT count(*) AS n, max(total) AS top FROM "Sales Dept"."V on MV";
GRANT SELECT ON "Sales Dept"."V on MV" TO app_owner;
ALTER MATERIALIZED VIEW "Sales Dept"."MV of V" OWNER TO app_owner;
CREATE VIEW public.v_similar AS SELECT id, similarity(name, 'product 42') AS sim FROM public.products;
CREATE MATERIALIZED VIEW public.mv_never AS SELECT 1 AS x WITH NO DATA;

-- Storage parameters, per-column storage and statistics, unlogged.
CREATE TABLE public.tuned (id int PRIMARY KEY, body text, blob bytea)
    WITH (fillfactor = 70, autovacuum_enabled = false, toast_tuple_target = 256);
ALTER TABLE public.tuned ALTER COLUMN body SET STORAGE EXTERNAL,
    ALTER COLUMN body SET STATISTICS 500, ALTER COLUMN blob SET STORAGE MAIN;
ALTER TABLE public.tuned ALTER COLUMN id SET (n_distinct = -1);
CREATE INDEX tuned_body ON public.tuned (body) WITH (fillfactor = 50);
ALTER TABLE public.tuned CLUSTER ON tuned_pkey;
ALTER TABLE public.tuned REPLICA IDENTITY FULL;
INSERT INTO public.tuned SELECT g, repeat('b', g * 5), decode(md5(g::text), 'hex') FROM generate_series(1, 300) g;
CREATE UNLOGGED TABLE public.sessions (id uuid PRIMARY KEY, data jsonb);
INSERT INTO public.sessions SELECT md5(g::text)::uuid, jsonb_build_object('n', g) FROM generate_series(1, 50) g;

-- Column types whose text form has traps.
CREATE FUNCTION public.digits_only(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT string_agg(m[1], '') FROM regexp_matches(t, '(
\d+
)', 'gx') AS m
$f$;
CREATE TABLE public.exotic (
    id int PRIMARY KEY, m money, bv bit varying(20), b4 bit(4), tsv tsvector, tsq tsquery,
    x xml, lsn pg_lsn, ivs interval[], md int[], md3 text[], net cidr, host inet,
    mac macaddr, mac8 macaddr8, pt point, poly polygon, ln line, seg lseg, bx box,
    circ circle, pth path, u uuid, ch "char", nm name, tz timetz, snap pg_snapshot,
    oids oid[], rc regclass, rt regtype, rp regprocedure, cfg regconfig
);
ALTER TABLE public.exotic OWNER TO etl_user;
INSERT INTO public.exotic VALUES
    (1, '-1234.56', B'10101', B'1100', $$a:1A fat:2B,4C cat:5D 'quoted lexeme':3 'back\\slash'$$,
     'fat & (rat | !cat)', '<doc a="1">text &amp; more</doc>', '16/B374D848',
     ARRAY['1 day', '-2 hours 3 min', '1 year 2 mons']::interval[], '[0:1][-1:0]={{1,2},{3,4}}',
     '{{{a,b},{c,NULL}},{{"d e",f},{"",g}}}', '192.168.0.0/16', '2001:db8::1/64',
     '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', '(1.5,-2)', '((0,0),(1,1),(1,0))',
     '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '<(0,0),2>', '[(0,0),(1,1),(2,0)]',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'x', 'a name', '12:34:56+05:30', '10:20:10,14,15',
     '{1,2,4294967295}', 'public.products', 'types."Status"', 'public.digits_only(text)', 'english'),
    (2, '0', B'', B'0000', '', 'a', 'content <b>fragment</b> without a root', '0/0',
     '{}', '{{NULL}}', '{}', '::/0', '::1', '00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff:ff:ff',
     '(NaN,Infinity)', '((0,0))', '{0,1,0}', '[(0,0),(0,0)]', '(0,0),(0,0)', '<(0,0),0>',
     '((0,0))', '00000000-0000-0000-0000-000000000000', E'\\', '', '00:00:00-15:59', '1:1:',
     '{}', '"Sales Dept"."Order Items"', 'types.address[]', 'public.audit()', 'simple'),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL);

-- Grants across roles, column grants, default privileges.
GRANT USAGE ON SCHEMA "Sales Dept", types, ext TO "Report Writer";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO "Report Writer";
GRANT SELECT ("Item ID", "ORDER"), UPDATE ("ORDER") ON "Sales Dept"."Order Items" TO etl_user;
GRANT INSERT, UPDATE ON public.products TO etl_user WITH GRANT OPTION;
GRANT USAGE ON SEQUENCE public.ticket_source_id_seq TO etl_user;
GRANT EXECUTE ON FUNCTION public.digits_only(text) TO "Report Writer";
REVOKE EXECUTE ON FUNCTION public.audit() FROM PUBLIC;
ALTER FUNCTION public.digits_only(text) OWNER TO etl_user;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA "Sales Dept" GRANT SELECT ON TABLES TO "Report Writer";
ALTER DEFAULT PRIVILEGES FOR ROLE etl_user REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- A large object owned by another role.
SELECT lo_from_bytea(555001, 'a large object');
ALTER LARGE OBJECT 555001 OWNER TO etl_user;
"#;

/// Name of the source database (quotes, spaces and non-ASCII).
const SRC_DB: &str = "Shop Ünï \"DB\"";

/// A 50 MiB bytea value (100 MiB of COPY text) and 11 MB of text full of
/// characters COPY escapes, each in one row.
const WIDE_SQL: &str = r#"
CREATE TABLE public.wide (id int PRIMARY KEY, payload bytea, doc text);
ALTER TABLE public.wide ALTER COLUMN payload SET STORAGE EXTERNAL;
INSERT INTO public.wide SELECT 1, decode(repeat(md5('seed'), 3276800), 'hex'), 'one';
INSERT INTO public.wide VALUES (2, '\x', repeat(E'line\n\ttab\\', 1000000));
"#;

/// libpq key=value conninfo for `db` as the superuser, the name quoted.
fn conninfo(pg: &PgCluster, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname='{}'",
        pg.port(),
        db.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

fn json(out: &CliOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"))
}

/// `pgtide dump --json ARGS`; the dump's id.
fn dump(repo: &str, db: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut args = vec!["dump", "--json", "--repo", repo, "--db", db, "--jobs", "2"];
    args.extend_from_slice(extra);
    let out = pgtide_env(&args, env);
    out.assert_ok();
    json(&out)["id"].as_str().expect("dump id").to_string()
}

/// `pgtide restore ID --repo REPO --db DB ARGS`.
fn restore(repo: &str, id: &str, db: &str, extra: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut args = vec!["restore", id, "--repo", repo, "--db", db, "--jobs", "2"];
    args.extend_from_slice(extra);
    pgtide_env(&args, env)
}

/// A PostgreSQL 15 cluster with the roles and the shop database (tests
/// rename it `src` before the oracle, whose pg_dump needs a plain name).
fn shop_cluster(wide: bool) -> PgCluster {
    let pg = PgCluster::start(15);
    pg.execute("postgres", ROLES_SQL);
    pg.create_db(SRC_DB);
    pg.execute(SRC_DB, SHOP_SQL);
    if wide {
        pg.execute(SRC_DB, WIDE_SQL);
    }
    pg
}

/// Owner, ACL, comment and settings (per role too) of database `db`.
fn database_properties(pg: &PgCluster, db: &str) -> Vec<Vec<Option<String>>> {
    let lit = db.replace('\'', "''");
    pg.query(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(d.datdba)::text, d.datacl::text, \
                    shobj_description(d.oid, 'pg_database'), \
                    (SELECT string_agg(coalesce(pg_get_userbyid(NULLIF(s.setrole, 0))::text, '*') \
                            || ':' || s.setconfig::text, ' ' ORDER BY s.setrole) \
                     FROM pg_db_role_setting s WHERE s.setdatabase = d.oid) \
             FROM pg_database d WHERE d.datname = '{lit}'"
        ),
    )
}

/// Dump the shop database with the default pg_dump (15), restore it with
/// --create into a database whose name needs quoting, compare everything.
#[test]
fn realworld_shop_round_trip() {
    let pg = shop_cluster(true);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let id = dump(repo, &conninfo(&pg, SRC_DB), &["--split-size", "8MiB"], &[]);
    let dst = "Réplica 'dst' \"1\"";
    restore(repo, &id, &conninfo(&pg, dst), &["--create"], &[]).assert_ok();

    pg.execute(
        "postgres",
        &format!(
            "ALTER DATABASE \"{}\" RENAME TO src; ALTER DATABASE \"{}\" RENAME TO dst",
            SRC_DB.replace('"', "\"\""),
            dst.replace('"', "\"\"")
        ),
    );
    assert_same_database(&pg, "src", &pg, "dst");
    // Triggers did not fire on load and the wide rows came back whole.
    assert_eq!(
        pg.query_one(
            "dst",
            "SELECT count(*) || '/' || min(v) FROM public.audited"
        ),
        "100/V1!"
    );
    assert_eq!(
        pg.query_one(
            "dst",
            "SELECT octet_length(payload) || '/' || md5(payload) FROM public.wide WHERE id = 1"
        ),
        pg.query_one(
            "src",
            "SELECT octet_length(payload) || '/' || md5(payload) FROM public.wide WHERE id = 1"
        )
    );
    // NOT VALID constraints stay NOT VALID, with their violating rows.
    assert_eq!(
        pg.query_one(
            "dst",
            "SELECT string_agg(conname || '=' || convalidated, ',' ORDER BY conname) \
             FROM pg_constraint WHERE NOT convalidated"
        ),
        "amount_positive=false,legacy_int_positive=false,legacy_parent_fk=false"
    );
    // What pg_dump --schema-only does not compare: the database itself.
    let (a, b) = (
        database_properties(&pg, "src"),
        database_properties(&pg, "dst"),
    );
    assert_eq!(a[0][0].as_deref(), Some("app_owner"));
    assert_eq!(
        a, b,
        "database owner, grants, comment or settings differ (source, then target)"
    );
}

/// The same database through PostgreSQL 18's pg_dump and pg_restore, which
/// pgtide picks on any machine where they are installed: for a 15 server
/// pg_restore writes scripts that pgtide runs itself.
#[test]
fn realworld_shop_round_trip_with_pg_dump_18() {
    let pg = shop_cluster(false);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let pg18 = pg_bin_dir(18);
    let env = [("PGTIDE_PG_DUMP", pg18.to_str().unwrap())];
    let id = dump(repo, &conninfo(&pg, SRC_DB), &[], &env);
    restore(repo, &id, &conninfo(&pg, "dst"), &["--create"], &env).assert_ok();
    pg.execute(
        "postgres",
        &format!(
            "ALTER DATABASE \"{}\" RENAME TO src",
            SRC_DB.replace('"', "\"\"")
        ),
    );
    assert_same_database(&pg, "src", &pg, "dst");
}

/// Thousands of small tables, each with a serial primary key, in a few
/// schemas: what a multi-tenant application looks like, with the server's
/// default lock table (pgtide's leader, pg_dump and the workers each lock
/// every table).
#[test]
fn realworld_many_tables() {
    const TABLES: u32 = 3000;
    let pg = PgCluster::start(15);
    pg.create_db("src");
    pg.execute(
        "src",
        "CREATE SCHEMA tenant_0; CREATE SCHEMA tenant_1; CREATE SCHEMA tenant_2",
    );
    // In batches: one transaction creating them all would outgrow the lock table.
    for batch in 0..TABLES / 300 {
        pg.execute(
            "src",
            &format!(
                "DO $$ BEGIN FOR i IN {}..{} LOOP \
                   EXECUTE format('CREATE TABLE tenant_%s.%I (id serial PRIMARY KEY, v text)', \
                                  i % 3, 'T' || i); \
                   EXECUTE format('INSERT INTO tenant_%s.%I (v) VALUES (%L), (NULL)', \
                                  i % 3, 'T' || i, i); \
                 END LOOP; END $$",
                batch * 300 + 1,
                batch * 300 + 300
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let started = std::time::Instant::now();
    let id = dump(repo, &conninfo(&pg, "src"), &[], &[]);
    let dumped = started.elapsed();
    restore(repo, &id, &conninfo(&pg, "dst"), &["--create"], &[]).assert_ok();
    eprintln!(
        "{TABLES} tables: dump {dumped:?}, restore {:?}",
        started.elapsed() - dumped
    );
    let (a, b) = (
        crate::harness::oracle::schema(&pg, "src"),
        crate::harness::oracle::schema(&pg, "dst"),
    );
    if let Some((x, y)) = a.lines().zip(b.lines()).find(|(x, y)| x != y) {
        panic!("schemas differ; first difference:\n- {x}\n+ {y}");
    }
    assert_eq!(a.len(), b.len(), "schemas differ in length");
    // Every table's rows and every sequence in one query per database (the
    // generic oracle opens a connection per relation).
    let contents = |db: &str| {
        pg.query_one(
            db,
            "SELECT md5(string_agg(x, ',' ORDER BY x)) || '/' || count(*) FROM ( \
               SELECT format('%I.%I', schemaname, tablename) || ':' || \
                      (xpath('/row/c/text()', query_to_xml(format( \
                         'SELECT count(*) || md5(string_agg(t::text, '','' ORDER BY t::text)) AS c \
                          FROM %I.%I t', schemaname, tablename), false, true, '')))[1]::text AS x \
               FROM pg_tables WHERE schemaname LIKE 'tenant%' \
               UNION ALL \
               SELECT format('%I.%I', schemaname, sequencename) || ':' || last_value \
               FROM pg_sequences WHERE schemaname LIKE 'tenant%') s",
        )
    };
    let (a, b) = (contents("src"), contents("dst"));
    assert!(a.ends_with(&format!("/{}", 2 * TABLES)), "{a}");
    assert_eq!(a, b, "table contents or sequences differ");
}

/// The selective restore's fixture: names with spaces, a non-ASCII name
/// created unquoted, an owner whose name needs quoting, a partitioned
/// table, views, types and functions, tables to exclude, a large object;
/// and in database `mvs`, a populated matview over an unpopulated one.
const SELECT_SQL: &str = r#"
CREATE ROLE "Shop Owner";
CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept"."Order Items" ("Item ID" serial PRIMARY KEY, "unit.price" numeric DEFAULT 1, note text);
INSERT INTO "Sales Dept"."Order Items" (note) SELECT 'n' || g FROM generate_series(1, 100) g;
CREATE INDEX "Order Items note" ON "Sales Dept"."Order Items" (note);
CREATE TABLE public."CamelCase" (id serial PRIMARY KEY, v text CHECK (v <> ''));
INSERT INTO public."CamelCase" (v) SELECT 'c' || g FROM generate_series(1, 30) g;
CREATE INDEX "CamelCase v" ON public."CamelCase" (v);
COMMENT ON TABLE public."CamelCase" IS 'a table';
COMMENT ON COLUMN public."CamelCase".v IS 'the value';
GRANT SELECT ON public."CamelCase" TO "Shop Owner";
CREATE TABLE public."Line Items" (id serial PRIMARY KEY, "unit.price" numeric DEFAULT 1);
INSERT INTO public."Line Items" DEFAULT VALUES;
COMMENT ON COLUMN public."Line Items"."unit.price" IS 'dotted';
CREATE TABLE public.owned (id serial PRIMARY KEY, v text);
INSERT INTO public.owned (v) VALUES ('a'), ('b');
ALTER TABLE public.owned OWNER TO "Shop Owner";
CREATE TABLE public.Été (id int PRIMARY KEY);
INSERT INTO public.Été VALUES (1), (2);
CREATE TABLE public.events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.events SELECT g, date '2025-06-01' + g FROM generate_series(1, 300) g;
CREATE TABLE public.tmp_a (x int);
CREATE TABLE public.tmp_b (x int);
CREATE TABLE public.tmp_c (x int);
CREATE TABLE public."cache$1" (x int);
CREATE TABLE public."cache$2" (x int);
INSERT INTO public.tmp_a VALUES (1);
INSERT INTO public.tmp_b VALUES (2);
INSERT INTO public."cache$1" VALUES (1);
CREATE TYPE public.mood AS ENUM ('sad', 'happy');
CREATE TABLE public.keep (id int PRIMARY KEY, m public.mood);
INSERT INTO public.keep VALUES (1, 'happy');
CREATE VIEW public.keep_view AS SELECT * FROM public.keep;
CREATE MATERIALIZED VIEW public.keep_mv AS SELECT count(*) AS n FROM public.keep;
CREATE FUNCTION public.answer() RETURNS int LANGUAGE sql AS 'SELECT 42';
CREATE SEQUENCE public.invoice_numbers START 1000;
SELECT nextval('public.invoice_numbers');
CREATE TABLE public.docs (id int PRIMARY KEY, body xml);
INSERT INTO public.docs VALUES (1, '<a>doc</a>'), (2, 'a content <b>fragment</b>');
SELECT lo_from_bytea(777001, 'large');
"#;

const MATVIEWS_SQL: &str = r#"
CREATE TABLE public.t (x int);
INSERT INTO public.t VALUES (1), (2);
CREATE MATERIALIZED VIEW public.mv1 AS SELECT * FROM public.t;
CREATE MATERIALIZED VIEW public.mv2 AS SELECT count(*) AS n FROM public.mv1;
REFRESH MATERIALIZED VIEW public.mv1 WITH NO DATA;
"#;

/// A cluster with [`SELECT_SQL`] in `src` and [`MATVIEWS_SQL`] in `mvs`,
/// a repository, and a full dump of `src`.
fn select_cluster() -> (PgCluster, tempfile::TempDir, String) {
    let pg = PgCluster::start(15);
    pg.create_db("src");
    pg.execute("src", SELECT_SQL);
    pg.create_db("mvs");
    pg.execute("mvs", MATVIEWS_SQL);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap().to_string();
    let id = dump(&repo, &conninfo(&pg, "src"), &[], &[]);
    (pg, dir, id)
}

/// What a selective restore keeps of one table: rows, owner, grants,
/// comments, constraints, indexes, defaults.
fn table_shape(pg: &PgCluster, db: &str, table: &str) -> String {
    let lit = table.replace('\'', "''");
    pg.query_one(
        db,
        &format!(
            "SELECT 'rows=' || (SELECT count(*) FROM {table}) || \
                    ' owner=' || pg_get_userbyid(c.relowner) || \
                    ' acl=' || coalesce(c.relacl::text, '-') || \
                    ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-') || \
                    ' constraints=' || coalesce((SELECT string_agg(contype::text, '' ORDER BY contype) \
                                                 FROM pg_constraint WHERE conrelid = c.oid), '-') || \
                    ' indexes=' || (SELECT count(*) FROM pg_index WHERE indrelid = c.oid) || \
                    ' defaults=' || (SELECT count(*) FROM pg_attrdef WHERE adrelid = c.oid) || \
                    ' column comments=' || coalesce((SELECT string_agg(col_description(c.oid, attnum), ',') \
                                                     FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0), '-') \
             FROM pg_class c WHERE c.oid = '{lit}'::regclass"
        ),
    )
}

/// `restore --table` of one table into a fresh database (with the schema
/// "Sales Dept"); `Err` with what differs from the source.
fn restore_one_table(
    pg: &PgCluster,
    repo: &str,
    id: &str,
    db: &str,
    table: &str,
) -> Result<(), String> {
    pg.create_db(db);
    pg.execute(db, "CREATE SCHEMA \"Sales Dept\"");
    let out = restore(repo, id, &conninfo(pg, db), &["--table", table], &[]);
    if !out.status.success() {
        return Err(format!("{table}: restore failed\n{out}"));
    }
    let (a, b) = (table_shape(pg, "src", table), table_shape(pg, db, table));
    if a != b {
        return Err(format!("{table}:\n  source   {a}\n  restored {b}"));
    }
    Ok(())
}

/// `restore --table` of a mixed-case table: its primary key, check,
/// default, index, comments, grants and owned sequence come along.
#[test]
fn realworld_selective_restore_mixed_case() {
    let (pg, dir, id) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    let r = restore_one_table(&pg, repo, &id, "sel", "public.\"CamelCase\"");
    assert_eq!(r, Ok(()));
    assert_eq!(
        pg.query_one("sel", "SELECT last_value FROM public.\"CamelCase_id_seq\""),
        "30"
    );
}

/// `restore --table` of tables whose schema, name or owner holds spaces,
/// and a column name with a dot: pg_restore's list is split on spaces.
#[test]
fn realworld_selective_restore_names_with_spaces() {
    let (pg, dir, id) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    let failures: Vec<String> = [
        "\"Sales Dept\".\"Order Items\"",
        "public.\"Line Items\"",
        "public.owned",
    ]
    .iter()
    .enumerate()
    .filter_map(|(n, table)| restore_one_table(&pg, repo, &id, &format!("sel{n}"), table).err())
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--table` patterns follow psql: an unquoted non-ASCII letter keeps its
/// case, as PostgreSQL folds ASCII letters only (`CREATE TABLE Été` makes
/// "Été").
#[test]
fn realworld_selective_restore_unquoted_non_ascii_name() {
    let (pg, dir, id) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    pg.create_db("sel");
    restore(
        repo,
        &id,
        &conninfo(&pg, "sel"),
        &["--table", "public.Été"],
        &[],
    )
    .assert_ok();
    assert_eq!(
        pg.query_one("sel", "SELECT count(*) FROM public.\"Été\""),
        "2"
    );
}

/// `--table` patterns follow psql, where regular-expression character
/// classes work (`[ab]`), `$` being the one character matched literally.
#[test]
fn realworld_table_patterns_take_character_classes() {
    let (pg, dir, id) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    pg.create_db("sel");
    restore(
        repo,
        &id,
        &conninfo(&pg, "sel"),
        &["--table", "public.tmp_[ab]"],
        &[],
    )
    .assert_ok();
    assert_eq!(
        pg.query_one(
            "sel",
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class \
             WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ),
        "tmp_a,tmp_b"
    );
}

/// A pattern that matches a partitioned table and its partitions restores
/// all three, with the rows.
#[test]
fn realworld_selective_restore_partitioned_table() {
    let (pg, dir, id) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    pg.create_db("sel");
    restore(
        repo,
        &id,
        &conninfo(&pg, "sel"),
        &["--table", "public.events*"],
        &[],
    )
    .assert_ok();
    assert_eq!(
        pg.query_one(
            "sel",
            "SELECT count(*) || '/' || (SELECT count(*) FROM pg_inherits) FROM public.events"
        ),
        "300/4"
    );
}

/// Relations and other objects of `db` after an exclude-table restore or
/// dump of the selection fixture.
fn check_excluded(pg: &PgCluster, db: &str) {
    let rels = pg.query_one(
        db,
        "SELECT string_agg(format('%I.%I', relnamespace::regnamespace, relname), ',' \
                           ORDER BY relnamespace::regnamespace::text, relname) \
         FROM pg_class WHERE relkind IN ('r', 'p', 'v', 'm') \
           AND relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema')",
    );
    assert_eq!(
        rels,
        "public.\"CamelCase\",public.\"Line Items\",public.\"cache$2\",public.docs,\
         public.events,public.events_2025,public.events_2026,public.keep,public.keep_mv,\
         public.keep_view,public.owned,public.\"Été\"",
        "relations of {db}"
    );
    assert_eq!(
        pg.query_one(
            db,
            "SELECT (SELECT relispopulated FROM pg_class WHERE oid = 'public.keep_mv'::regclass) \
                    || '/' || coalesce((SELECT last_value::text FROM pg_sequences \
                                        WHERE sequencename = 'invoice_numbers'), 'unset') \
                    || '/' || (SELECT count(*) FROM pg_largeobject_metadata) \
                    || '/' || (SELECT count(*) FROM public.events) \
                    || '/' || (SELECT count(*) FROM pg_proc WHERE proname = 'answer')"
        ),
        "true/1000/1/300/1",
        "matview populated / sequence / large objects / partition rows / functions of {db}"
    );
}

const EXCLUDES: [&str; 6] = [
    "--exclude-table",
    "public.tmp_?",
    "--exclude-table",
    "public.\"cache$1\"",
    "--exclude-table",
    "\"Sales Dept\".*",
];

/// `restore --exclude-table` leaves out those tables only: schemas, types,
/// views, functions, sequences, matviews and large objects are restored.
#[test]
fn realworld_restore_exclude_table_keeps_everything_else() {
    let (pg, dir, id) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    let mut args = vec!["--create"];
    args.extend_from_slice(&EXCLUDES);
    restore(repo, &id, &conninfo(&pg, "excl"), &args, &[]).assert_ok();
    check_excluded(&pg, "excl");
}

/// `dump --exclude-table` leaves out those tables only: the large objects
/// stay in the dump, as with `pg_dump --exclude-table`.
#[test]
fn realworld_dump_exclude_table_keeps_large_objects() {
    let (pg, dir, _) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    let id = dump(repo, &conninfo(&pg, "src"), &EXCLUDES, &[]);
    restore(repo, &id, &conninfo(&pg, "excl"), &["--create"], &[]).assert_ok();
    check_excluded(&pg, "excl");
}

/// pg_dump's scripts say `SET xmloption = content`: XML content that is not
/// a document loads whatever the target's default xmloption is.
#[test]
fn realworld_restore_into_database_with_xmloption_document() {
    let (pg, dir, id) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    pg.create_db("xmldoc");
    pg.execute("postgres", "ALTER DATABASE xmldoc SET xmloption = document");
    restore(repo, &id, &conninfo(&pg, "xmldoc"), &[], &[]).assert_ok();
    assert_same_database(&pg, "src", &pg, "xmldoc");
}

/// A populated matview that reads an unpopulated one cannot be refreshed:
/// pg_dump leaves it unpopulated, and the restore succeeds.
#[test]
fn realworld_matview_over_unpopulated_matview() {
    let (pg, dir, _) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    let id = dump(repo, &conninfo(&pg, "mvs"), &[], &[]);
    restore(repo, &id, &conninfo(&pg, "mvs_copy"), &["--create"], &[]).assert_ok();
    assert_eq!(
        pg.query_one(
            "mvs_copy",
            "SELECT (SELECT count(*) FROM public.t) || '/' || string_agg(relname || '=' || \
                    relispopulated, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'm'"
        ),
        "2/mv1=false,mv2=false"
    );
}

/// A non-superuser that owns its database and everything in it (trusted
/// extensions included) dumps it and restores it with --create as itself.
#[test]
fn realworld_non_superuser_owner_round_trip() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE ROLE app_owner LOGIN CREATEDB PASSWORD 'owner-pw'",
    );
    pg.execute("postgres", "CREATE DATABASE appdb OWNER app_owner");
    pg.execute(
        "postgres",
        "REVOKE ALL ON DATABASE appdb FROM PUBLIC; \
         COMMENT ON DATABASE appdb IS 'owned by the app'",
    );
    pg.execute(
        "appdb",
        r#"
        SET ROLE app_owner;
        CREATE EXTENSION hstore;
        CREATE EXTENSION citext;
        CREATE EXTENSION pg_trgm;
        CREATE SCHEMA app;
        CREATE TABLE app.items (id serial PRIMARY KEY, sku citext UNIQUE, name text, attrs hstore);
        INSERT INTO app.items (sku, name, attrs)
            SELECT 'SKU' || g, 'item ' || g, hstore('k', g::text) FROM generate_series(1, 500) g;
        CREATE INDEX items_name_trgm ON app.items USING gin (name gin_trgm_ops);
        CREATE MATERIALIZED VIEW app.item_count AS SELECT count(*) AS n FROM app.items;
        CREATE TABLE app.secret (owner_name text, v text);
        ALTER TABLE app.secret ENABLE ROW LEVEL SECURITY;
        CREATE POLICY mine ON app.secret USING (owner_name = current_user);
        INSERT INTO app.secret VALUES ('app_owner', 'a'), ('other', 'b');
        SELECT lo_from_bytea(888001, 'owned large object');
        ALTER DATABASE appdb SET work_mem = '9MB';
        "#,
    );
    let as_owner = |db: &str| {
        format!(
            "host=127.0.0.1 port={} user=app_owner password=owner-pw dbname={db}",
            pg.port()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let id = dump(repo, &as_owner("appdb"), &[], &[]);
    restore(repo, &id, &as_owner("appdb_copy"), &["--create"], &[]).assert_ok();
    assert_same_database(&pg, "appdb", &pg, "appdb_copy");
    assert_eq!(
        database_properties(&pg, "appdb"),
        database_properties(&pg, "appdb_copy")
    );
}

/// A dump of tables and indexes in a tablespace restores into a cluster
/// that does not have it (a copy of production on a laptop): pgtide puts
/// what it restores in the target's default tablespace.
#[test]
fn realworld_restore_where_the_source_tablespace_is_missing() {
    let (pg, dir, _) = select_cluster();
    let repo = dir.path().to_str().unwrap();
    let location = tempfile::tempdir().unwrap();
    give_to_server_user(location.path());
    pg.execute(
        "postgres",
        &format!(
            "CREATE TABLESPACE fast_disk LOCATION '{}'",
            location.path().display()
        ),
    );
    pg.create_db("tsdb");
    pg.execute(
        "tsdb",
        "CREATE TABLE public.hot (id int PRIMARY KEY USING INDEX TABLESPACE fast_disk, v text) \
             TABLESPACE fast_disk; \
         CREATE INDEX hot_v ON public.hot (v) TABLESPACE fast_disk; \
         INSERT INTO public.hot SELECT g, 'v' || g FROM generate_series(1, 100) g",
    );
    let id = dump(repo, &conninfo(&pg, "tsdb"), &[], &[]);
    // The target cluster has no such tablespace.
    pg.execute(
        "tsdb",
        "ALTER TABLE public.hot SET TABLESPACE pg_default; \
         ALTER INDEX public.hot_pkey SET TABLESPACE pg_default; \
         ALTER INDEX public.hot_v SET TABLESPACE pg_default",
    );
    pg.execute("postgres", "DROP TABLESPACE fast_disk");
    restore(repo, &id, &conninfo(&pg, "tsdb_copy"), &["--create"], &[]).assert_ok();
    assert_same_database(&pg, "tsdb", &pg, "tsdb_copy");
}
