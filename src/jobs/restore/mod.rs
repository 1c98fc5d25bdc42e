//! `pgtide restore <dump>`: load a logical dump into a database.
//!
//! Order: the schema archive written to a file and its table of contents
//! read ([`archive`]) → (create the database) → checks on the target → pre-data
//! with pg_restore → parallel COPY FROM of every table part → sequence values
//! → large objects → post-data with `pg_restore -j` (indexes, constraints,
//! triggers in parallel) → refresh of populated materialized views in
//! dependency order → (with --create) the database's own properties. Every
//! chunk is checked (sizes, CRC32s) as it is read.
//!
//! `--table` / `--exclude-table`: pg_restore runs the entries [`toc`]
//! selects (`--use-list`); the manifest says which rows, sequence values,
//! large objects and matview refreshes go with them. Tablespaces of the
//! dump that the target lacks are left out (`--no-tablespaces`), with a
//! warning.
//!
//! Encodings: pgtide's sessions stay in UTF8 (see `pg::session`); the rows
//! are loaded with `COPY … (ENCODING '<the dump's data encoding>')` so the
//! target converts them into its own encoding, and pg_restore scripts, which
//! are in the archive's encoding, are decoded to UTF-8 before they are run.

use crate::pg::dump_archive as archive;
mod objects;
pub mod toc;
mod worker;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;

use super::{JobError, Progress};
use crate::pg::catalog::{self, LocaleSupport};
use crate::pg::connect::{connect, ConnectError};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pattern::{selected, NamePattern};
use crate::pg::tools::{self, PgTools, ToolError};
use crate::pg::version::{tool_major, ServerVersion};
use crate::pg::{quote_ident, quote_literal, quote_qualified};
use crate::pipeline::ChunkReader;
use crate::repo::manifest::{
    DatabaseProperties, DumpManifest, MatviewEntry, OwnedBy, SequenceEntry, SourceInfo,
};
use crate::repo::Repository;

#[derive(Debug, Clone)]
pub struct RestoreSettings {
    pub conn: ConnInfo,
    pub jobs: usize,
    pub create: bool,
    pub clean: bool,
    pub schema_only: bool,
    pub data_only: bool,
    pub tables: Vec<NamePattern>,
    pub exclude_tables: Vec<NamePattern>,
    pub dry_run: bool,
    pub no_owner: bool,
    pub no_privileges: bool,
    /// Put every object in the target's default tablespace
    /// (`pg_restore --no-tablespaces`).
    pub no_tablespaces: bool,
    /// Tables with at least this many bytes of rows get their own indexes
    /// and keys built as soon as they are loaded, while the rest still
    /// loads (one pg_restore run each; below it, the final post-data pass
    /// is cheaper).
    pub early_index_size: u64,
    pub pg_dump: Option<PathBuf>,
    /// Chunks fetched ahead per stream.
    pub prefetch: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_for_older_servers_lose_what_they_cannot_run() {
        let script = "\\restrict abc\nSET statement_timeout = 0;\nSET transaction_timeout = 0;\nCREATE TABLE t ();\n\\unrestrict abc";
        assert_eq!(
            script_for_server(script, ServerVersion(130000)),
            "SET statement_timeout = 0;\nCREATE TABLE t ();"
        );
        assert_eq!(
            script_for_server(script, ServerVersion(170000)),
            "SET statement_timeout = 0;\nSET transaction_timeout = 0;\nCREATE TABLE t ();"
        );
        let latin1 = "SET client_encoding = 'LATIN1';\nCREATE TABLE \"données\" ();";
        assert_eq!(
            script_for_server(latin1, ServerVersion(150000)),
            "CREATE TABLE \"données\" ();"
        );
    }

    #[test]
    fn sql_ascii_rows_load_unconverted_but_checked() {
        assert_eq!(load_encoding("SQL_ASCII", "UTF8"), "UTF8");
        assert_eq!(load_encoding("SQL_ASCII", "SQL_ASCII"), "SQL_ASCII");
        assert_eq!(load_encoding("LATIN1", "UTF8"), "LATIN1");
        assert_eq!(load_encoding("UTF8", "SQL_ASCII"), "UTF8");
    }

    #[test]
    fn script_encoding_comes_from_its_set_line() {
        let script = b"SET statement_timeout = 0;\nSET client_encoding = 'LATIN1';\n\n-- Name: t\nCREATE TABLE \"caf\xe9\" ();\n";
        assert_eq!(script_encoding(script), Some("LATIN1"));
        assert_eq!(
            script_encoding(b"-- Name: t\nSET client_encoding = 'X';"),
            None
        );
        assert_eq!(script_encoding(b""), None);
    }

    fn source(provider: Option<&str>, locale: Option<&str>, rules: Option<&str>) -> SourceInfo {
        SourceInfo {
            server_version: "15.18".into(),
            server_version_num: 150018,
            database: "src".into(),
            connection: "postgres@localhost:5432/src".into(),
            system_identifier: String::new(),
            encoding: "UTF8".into(),
            collate: "C".into(),
            ctype: "C".into(),
            snapshot: String::new(),
            locale_provider: provider.map(String::from),
            locale: locale.map(String::from),
            icu_rules: rules.map(String::from),
        }
    }

    #[test]
    fn create_database_carries_the_locale_provider_the_target_can_create() {
        let v = ServerVersion;
        // A source without providers (before 15) into 14 and into 15+.
        assert_eq!(
            create_database_sql("d b", &source(None, None, None), v(140011)).unwrap(),
            r#"CREATE DATABASE "d b" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"#
        );
        assert_eq!(
            create_database_sql("d", &source(None, None, None), v(150000)).unwrap(),
            r#"CREATE DATABASE "d" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER libc LC_COLLATE 'C' LC_CTYPE 'C'"#
        );
        let icu = source(Some("icu"), Some("und"), None);
        assert_eq!(
            create_database_sql("d", &icu, v(170000)).unwrap(),
            r#"CREATE DATABASE "d" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu LC_COLLATE 'C' LC_CTYPE 'C' ICU_LOCALE 'und'"#
        );
        let e = create_database_sql("d", &icu, v(140011)).unwrap_err();
        assert!(
            e.contains("icu locale provider") && e.contains("PostgreSQL 14.11"),
            "{e}"
        );
        let rules = source(Some("icu"), Some("und"), Some("&a < b"));
        assert!(create_database_sql("d", &rules, v(150000)).is_err());
        assert!(create_database_sql("d", &rules, v(160000))
            .unwrap()
            .ends_with("ICU_LOCALE 'und' ICU_RULES '&a < b'"));
        let builtin = source(Some("builtin"), Some("C.UTF-8"), None);
        assert!(create_database_sql("d", &builtin, v(160004)).is_err());
        assert!(create_database_sql("d", &builtin, v(170000))
            .unwrap()
            .contains(
                "LOCALE_PROVIDER builtin LC_COLLATE 'C' LC_CTYPE 'C' BUILTIN_LOCALE 'C.UTF-8'"
            ));
    }

    #[test]
    fn settings_are_written_as_pg_dump_writes_them() {
        assert_eq!(
            alter_setting_sql("db", "work_mem=7MB").unwrap(),
            r#"ALTER DATABASE "db" SET "work_mem" TO '7MB'"#
        );
        assert_eq!(
            alter_setting_sql("db", r#"search_path="$user", public, "we""ird, s""#).unwrap(),
            r#"ALTER DATABASE "db" SET "search_path" TO '$user', 'public', 'we"ird, s'"#
        );
        assert_eq!(
            alter_setting_sql("db", "app.note=it's").unwrap(),
            r#"ALTER DATABASE "db" SET "app.note" TO 'it''s'"#
        );
        assert_eq!(alter_setting_sql("db", "nonsense"), None);
        assert_eq!(split_guc_list(""), Some(vec![]));
        assert_eq!(split_guc_list(r#""unterminated"#), None);
        assert_eq!(split_guc_list("a b"), None);
    }

    #[test]
    fn database_properties_follow_no_owner_and_no_privileges() {
        let p = DatabaseProperties {
            owner: Some("app".into()),
            comment: Some("l'appli".into()),
            settings: vec!["work_mem=7MB".into()],
            connection_limit: Some(20),
            is_template: true,
            grants: Some(vec![crate::repo::manifest::LoGrant {
                grantee: None,
                privilege: "CONNECT".into(),
                grantable: false,
            }]),
        };
        assert_eq!(
            database_property_statements("d", &p, false, false),
            vec![
                r#"ALTER DATABASE "d" OWNER TO "app""#,
                r#"REVOKE ALL ON DATABASE "d" FROM PUBLIC"#,
                r#"REVOKE ALL ON DATABASE "d" FROM "app""#,
                r#"GRANT CONNECT ON DATABASE "d" TO PUBLIC"#,
                r#"COMMENT ON DATABASE "d" IS 'l''appli'"#,
                r#"ALTER DATABASE "d" SET "work_mem" TO '7MB'"#,
                r#"ALTER DATABASE "d" CONNECTION LIMIT 20"#,
                r#"ALTER DATABASE "d" IS_TEMPLATE true"#,
            ]
        );
        let s = database_property_statements("d", &p, true, true);
        assert!(
            s.iter()
                .all(|l| !l.contains("OWNER") && !l.contains("GRANT")),
            "{s:?}"
        );
        assert_eq!(s.len(), 4);
        assert!(
            database_property_statements("d", &DatabaseProperties::default(), false, false)
                .is_empty()
        );
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub database: String,
    pub dry_run: bool,
    /// What was (or, with --dry-run, would be) done, in order.
    pub steps: Vec<String>,
    pub tables: u64,
    pub rows: u64,
    pub bytes: u64,
    pub sequences: u64,
    pub large_objects: u64,
    pub seconds: f64,
    pub mb_per_second: f64,
}

pub async fn run(
    repo: &Repository,
    id: &str,
    s: &RestoreSettings,
    progress: Arc<Progress>,
) -> Result<RestoreReport, JobError> {
    let started = Instant::now();
    let m = repo.load_dump(id).await?;
    // --table makes a selective restore of tables; --exclude-table alone
    // restores everything else (large objects and matviews too), as
    // pg_dump's options of the same names do.
    let include = !s.tables.is_empty();
    let filtered = include || !s.exclude_tables.is_empty();
    let do_schema = !s.data_only && m.schema.is_some();
    let do_data = !s.schema_only;
    let tools = if do_schema {
        let t = PgTools::find(s.pg_dump.as_deref())?;
        let archive_major = m
            .schema
            .as_ref()
            .and_then(|a| tool_major(&a.pg_dump_version))
            .unwrap_or(0);
        if t.major < archive_major {
            return Err(ToolError::Unusable {
                path: t.pg_restore.display().to_string(),
                reason: format!(
                    "the dump's schema was written by pg_dump {archive_major}; pg_restore {} cannot read it (name a newer one with --pg-dump or PGTIDE_PG_DUMP)",
                    t.major
                ),
            }
            .into());
        }
        Some(t)
    } else {
        None
    };
    let database = s.conn.dbname.clone().unwrap_or_default();
    let mut steps = Vec::new();

    // Check the dump's objects exist with the sizes the manifest says.
    progress.set_phase("checking the dump");
    check_packs(repo, &m).await?;
    steps.push(format!(
        "read dump {} ({} packs, {} bytes)",
        m.id,
        m.packs.len(),
        m.packs.iter().map(|p| p.size).sum::<u64>()
    ));

    // The schema archive (pg_restore -j needs a file) and its table of
    // contents: what a filtered restore runs, and the tablespaces it uses.
    let archive = match (&tools, &m.schema) {
        (Some(_), Some(a)) => Some(write_archive(repo, &m, &a.stream, s.prefetch).await?),
        _ => None,
    };
    let raw_toc = match &archive {
        Some(a) => read_archive_toc(&m.id, a.path(), filtered).await?,
        None => None,
    };
    // A --table that matches nothing is refused before anything is created
    // (when the names read without the server's help: see `decode_toc`).
    let needs_conversion = raw_toc
        .as_ref()
        .is_some_and(|t| !t.needs_conversion().is_empty());
    let mut toc = raw_toc.as_ref().map(|t| t.decode(&HashMap::new()));
    let no_match = || JobError::NoTableMatches { id: m.id.clone() };
    let mut decoded = !needs_conversion;
    // With --create, the server converts the names through its maintenance
    // database, so that a pattern matching nothing creates nothing either.
    let admin = match s.create {
        true => Some(admin_connection(s).await?),
        false => None,
    };
    if let (Some(raw), Some(c), false) = (&raw_toc, &admin, decoded) {
        toc = Some(decode_toc(c, raw).await?);
        decoded = true;
    }
    if include && decoded && Selection::new(&m, toc.as_ref(), s).is_empty() {
        return Err(no_match());
    }

    if let Some(admin) = &admin {
        progress.set_phase("creating the database");
        create_database(admin, &m, &database, s.dry_run).await?;
        steps.push(format!("create database {database}"));
    }
    drop(admin);
    let target = match connect(&s.conn, "pgtide restore").await {
        Ok(c) => Some(c),
        Err(ConnectError::DatabaseMissing { .. }) if s.create && s.dry_run => None,
        Err(e) => return Err(e.into()),
    };
    if let (Some(raw), Some(c), false) = (&raw_toc, &target, decoded) {
        toc = Some(decode_toc(c, raw).await?);
    }
    let sel = Selection::new(&m, toc.as_ref(), s);
    if include && sel.is_empty() {
        return Err(no_match());
    }
    let mut target_version = ServerVersion(0);
    let mut missing_tablespaces = BTreeSet::new();
    if let Some(client) = &target {
        let info = catalog::server_info(client)
            .await
            .map_err(JobError::sql("read target server information"))?;
        if !info.version.is_supported() {
            return Err(JobError::UnsupportedServer(info.version));
        }
        target_version = info.version;
        check_target(client, &m, &sel.tables, s, do_schema).await?;
        if let (Some(t), true, false) = (&toc, do_schema, s.no_tablespaces) {
            let all = vec![true; t.entries.len()];
            let used = toc::tablespaces(t, sel.keep.as_deref().unwrap_or(&all));
            missing_tablespaces = missing(client, used).await?;
        }
    }
    // Objects of the source's tablespaces that the target lacks go in the
    // target's default tablespace, as with --no-tablespaces: a copy of
    // production on a machine without its disks should restore.
    let s_defaults;
    let s = if missing_tablespaces.is_empty() {
        s
    } else {
        let names = missing_tablespaces
            .iter()
            .map(|t| quote_ident(t))
            .collect::<Vec<_>>()
            .join(", ");
        let (noun, verb) = match missing_tablespaces.len() {
            1 => ("tablespace", "does"),
            _ => ("tablespaces", "do"),
        };
        // The restore goes on: the operator learns here that the placement
        // of the source was not kept.
        tracing::warn!(
            "{noun} {names} of the dump {verb} not exist in the target: every object is restored into the target's default tablespace (hint: create the {noun} first to keep the placement, or pass --no-tablespaces)"
        );
        steps.push(format!(
            "restore into the default tablespace (the target lacks {names})"
        ));
        s_defaults = RestoreSettings {
            no_tablespaces: true,
            ..s.clone()
        };
        &s_defaults
    };

    let toc_list = match (&toc, &sel.keep) {
        (Some(t), Some(keep)) if !s.dry_run => Some(toc::write_list(t, keep).await?),
        _ => None,
    };
    // The indexes and keys of big tables, built as soon as each is loaded
    // (by table index in the manifest, a pg_restore list each), and the
    // list of the post-data pass that does the rest.
    let mut early: HashMap<usize, TempFile> = HashMap::new();
    let mut post_list: Option<TempFile> = None;
    if let (Some(t), true, true, false) = (&toc, do_schema, do_data, s.dry_run) {
        let all = vec![true; t.entries.len()];
        let keep = sel.keep.as_deref().unwrap_or(&all);
        let own = toc::own_index_entries(t, keep);
        let mut rest = keep.to_vec();
        for &i in &sel.tables {
            let table = &m.tables[i];
            if table.raw_bytes() < s.early_index_size {
                continue;
            }
            let Some(entries) = own.get(&(table.schema.clone(), table.name.clone())) else {
                continue;
            };
            let mut only = vec![false; t.entries.len()];
            for &e in entries {
                only[e] = true;
                rest[e] = false;
            }
            early.insert(i, toc::write_list(t, &only).await?);
        }
        if !early.is_empty() {
            post_list = Some(toc::write_list(t, &rest).await?);
        }
    }
    let post_list = post_list.as_ref().or(toc_list.as_ref()).map(|l| l.path());
    let archive = archive.filter(|_| !s.dry_run);

    // Pre-data.
    if do_schema {
        if s.clean {
            steps.push("drop the objects the dump will create".into());
        }
        steps.push("restore pre-data (schemas, types, tables, functions) with pg_restore".into());
        if let (Some(t), Some(a), Some(c)) = (&tools, &archive, &target) {
            if s.clean {
                progress.set_phase("dropping existing objects");
                objects::drop_existing(
                    t,
                    a.path(),
                    toc_list.as_ref().map(|l| l.path()),
                    s,
                    c,
                    &m.source.encoding,
                )
                .await?;
            }
            progress.set_phase("restoring pre-data");
            pg_restore(
                t,
                a.path(),
                toc_list.as_ref().map(|l| l.path()),
                "pre-data",
                1,
                s,
                c,
                target_version,
                &m.source.encoding,
            )
            .await?;
        }
    }

    // Data.
    let mut rows = 0;
    let mut bytes = 0;
    if do_data {
        let load: Vec<usize> = sel.tables.clone();
        bytes = load.iter().map(|&i| m.tables[i].raw_bytes()).sum::<u64>();
        steps.push(format!(
            "load {} tables ({} rows, {} bytes) with {} workers",
            load.len(),
            load.iter().map(|&i| m.tables[i].rows()).sum::<u64>(),
            bytes,
            s.jobs
        ));
        if !early.is_empty() {
            steps.push(format!(
                "build the indexes and keys of {} big tables as soon as each is loaded",
                early.len()
            ));
        }
        if let (false, Some(c)) = (s.dry_run, &target) {
            progress.set_phase(format!("loading {} tables", load.len()));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            // A big table's own indexes and keys are built while the other
            // tables load (pg_restore of its entries), up to --jobs tables
            // at a time.
            let m_ref = &m;
            let build = |i: usize| {
                let (list, t, a, m) = (&early[&i], tools.as_ref(), archive.as_ref(), m_ref);
                async move {
                    let (Some(t), Some(a)) = (t, a) else {
                        return Ok(());
                    };
                    tracing::info!(table = %m.tables[i].qualified(), "building its indexes and keys");
                    pg_restore(
                        t,
                        a.path(),
                        Some(list.path()),
                        "post-data",
                        1,
                        s,
                        c,
                        target_version,
                        &m.source.encoding,
                    )
                    .await
                }
            };
            let early_builds = async {
                let mut running = futures::stream::FuturesUnordered::new();
                let mut open = true;
                while open || !running.is_empty() {
                    tokio::select! {
                        i = rx.recv(), if open && running.len() < s.jobs => match i {
                            Some(i) if early.contains_key(&i) => running.push(build(i)),
                            Some(_) => {}
                            None => open = false,
                        },
                        Some(r) = futures::StreamExt::next(&mut running), if !running.is_empty() => r?,
                    }
                }
                Ok::<(), JobError>(())
            };
            let tx = (!early.is_empty()).then_some(tx);
            (rows, ()) = tokio::try_join!(
                load_tables(repo, &m, &load, s, c, &progress, tx),
                early_builds
            )?;
        }
        let seqs: Vec<&SequenceEntry> = sel.sequences.iter().map(|&i| &m.sequences[i]).collect();
        steps.push(format!("set {} sequence values", seqs.len()));
        if let (false, Some(c)) = (s.dry_run, &target) {
            objects::set_sequences(c, &seqs).await?;
        }
        if sel.large_objects && !m.large_objects.items.is_empty() {
            steps.push(format!(
                "restore {} large objects",
                m.large_objects.items.len()
            ));
            if let (false, Some(c)) = (s.dry_run, &target) {
                progress.set_phase("restoring large objects");
                let reader = ChunkReader::new(
                    repo.storage().clone(),
                    Arc::new(m.packs.clone()),
                    m.compression,
                    s.prefetch,
                );
                objects::restore_large_objects(c, &m, &reader, s).await?;
            }
        }
    }

    // Post-data, then matviews (they may need the indexes of what they read).
    if do_schema {
        steps.push(format!(
            "restore post-data (indexes, constraints, triggers) with pg_restore -j {}",
            s.jobs
        ));
        if let (Some(t), Some(a), Some(c)) = (&tools, &archive, &target) {
            progress.set_phase("restoring post-data (indexes, constraints)");
            pg_restore(
                t,
                a.path(),
                post_list,
                "post-data",
                s.jobs,
                s,
                c,
                target_version,
                &m.source.encoding,
            )
            .await?;
        }
    }
    if do_data && !sel.matviews.is_empty() {
        steps.push(format!("refresh {} materialized views", sel.matviews.len()));
        if let (false, Some(c)) = (s.dry_run, &target) {
            progress.set_phase("refreshing materialized views");
            let list: Vec<&MatviewEntry> = sel.matviews.iter().map(|&i| &m.matviews[i]).collect();
            refresh_matviews(c, &list).await?;
        }
    }
    // The database's own properties come last, as pg_dumpall used to put
    // them: a setting such as default_transaction_read_only or a connection
    // limit must not get in the way of the restore's own sessions.
    if s.create {
        let sql = database_property_statements(&database, &m.database, s.no_owner, s.no_privileges);
        if !sql.is_empty() {
            steps.push(format!(
                "set the properties of database {database} ({} statements: owner, grants, comment, settings, limits)",
                sql.len()
            ));
        }
        if let (false, Some(c), false) = (s.dry_run, &target, sql.is_empty()) {
            progress.set_phase("setting the database's properties");
            c.batch_execute(&format!("BEGIN; {}; COMMIT", sql.join("; ")))
                .await
                .map_err(JobError::sql(format!(
                    "set the properties of database {database} (all else is restored; --no-owner and --no-privileges skip its owner and grants)"
                )))?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreReport {
        id: m.id.clone(),
        database,
        dry_run: s.dry_run,
        steps,
        tables: if do_data { sel.tables.len() as u64 } else { 0 },
        rows,
        bytes,
        sequences: if do_data {
            sel.sequences.len() as u64
        } else {
            0
        },
        large_objects: if do_data && sel.large_objects {
            m.large_objects.items.len() as u64
        } else {
            0
        },
        seconds,
        mb_per_second: bytes as f64 / 1e6 / seconds.max(1e-9),
    })
}

/// What a restore covers: from the patterns, the manifest and (when the
/// schema is restored) the schema archive's table of contents.
#[derive(Debug)]
struct Selection {
    /// Tables whose rows are loaded (indexes into the manifest's tables).
    tables: Vec<usize>,
    /// Sequences whose values are set (indexes into the manifest's).
    sequences: Vec<usize>,
    /// Materialized views to refresh (indexes into the manifest's).
    matviews: Vec<usize>,
    large_objects: bool,
    /// Entries of the table of contents to restore; `None`: all.
    keep: Option<Vec<bool>>,
    /// Tables the schema part restores, partitioned ones included.
    schema_tables: usize,
}

impl Selection {
    fn new(m: &DumpManifest, toc: Option<&archive::Toc<String>>, s: &RestoreSettings) -> Selection {
        let include = !s.tables.is_empty();
        let excluded =
            |schema: &str, name: &str| s.exclude_tables.iter().any(|p| p.matches(schema, name));
        let tables: Vec<usize> = (0..m.tables.len())
            .filter(|&i| {
                selected(
                    &s.tables,
                    &s.exclude_tables,
                    &m.tables[i].schema,
                    &m.tables[i].name,
                )
            })
            .collect();
        let toc_sel = toc
            .filter(|_| include || !s.exclude_tables.is_empty())
            .map(|t| toc::select(t, &s.tables, &s.exclude_tables));
        // With --table: the sequences the schema part restores (those the
        // chosen tables own); without a schema, those the manifest says the
        // chosen tables own.
        let owned_by_chosen = |o: &OwnedBy| {
            tables
                .iter()
                .any(|&i| o.is(&m.tables[i].schema, &m.tables[i].name))
        };
        let sequences = (0..m.sequences.len())
            .filter(|&i| {
                let q = &m.sequences[i];
                !excluded(&q.schema, &q.name)
                    && (!include
                        || match &toc_sel {
                            Some(t) => t.sequences.contains(&(q.schema.clone(), q.name.clone())),
                            None => q.owned_by.as_ref().is_some_and(owned_by_chosen),
                        })
            })
            .collect();
        let matviews = (0..m.matviews.len())
            .filter(|&i| !include && !excluded(&m.matviews[i].schema, &m.matviews[i].name))
            .collect();
        Selection {
            tables,
            sequences,
            matviews,
            large_objects: !include,
            schema_tables: toc_sel.as_ref().map_or(0, |t| t.tables.len()),
            keep: toc_sel.map(|t| t.keep),
        }
    }

    /// Nothing to restore from any table.
    fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.schema_tables == 0
    }
}

/// Read the table of contents of the schema archive at `path`. Needed for
/// a filtered restore; otherwise (only the tablespace check uses it) an
/// archive pgtide cannot read is restored whole, with a warning.
async fn read_archive_toc(
    id: &str,
    path: &Path,
    needed: bool,
) -> Result<Option<archive::RawToc>, JobError> {
    let bytes = tokio::fs::read(path).await.map_err(|e| JobError::Io {
        context: format!("read {}", path.display()),
        source: e,
    })?;
    match archive::read_toc(&bytes) {
        Ok(t) => Ok(Some(t)),
        Err(e) if !needed => {
            tracing::warn!(
                "cannot read the table of contents of the schema archive of dump {id} ({e}): the target's tablespaces are not checked"
            );
            Ok(None)
        }
        Err(e @ archive::ArchiveError::Version { .. }) => Err(JobError::Invalid(format!(
            "dump {id}: cannot select tables in its schema archive: {e} (hint: restore it without --table/--exclude-table)"
        ))),
        Err(e) => Err(JobError::Damaged {
            id: id.to_string(),
            what: format!("its schema archive: {e}"),
        }),
    }
}

/// The table of contents with the names of a non-UTF-8 archive converted
/// to text by the target server, which knows every encoding.
async fn decode_toc(c: &Client, raw: &archive::RawToc) -> Result<archive::Toc<String>, JobError> {
    let need = raw.needs_conversion();
    let encoding = raw.encoding.clone().unwrap_or_default();
    // To UTF8 as bytes: the same in any database, whatever its encoding.
    let rows = c
        .query(
            "SELECT pg_catalog.convert(u.b, $2::text::name, 'UTF8') \
             FROM unnest($1::bytea[]) WITH ORDINALITY AS u(b, n) ORDER BY u.n",
            &[&need, &encoding],
        )
        .await
        .map_err(JobError::sql(format!(
            "convert the names of the schema archive from {encoding}"
        )))?;
    let converted: HashMap<Vec<u8>, String> = need
        .into_iter()
        .zip(
            rows.iter()
                .map(|r| String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)).into_owned()),
        )
        .collect();
    Ok(raw.decode(&converted))
}

/// Of the tablespaces `used`, those the target does not have.
async fn missing(c: &Client, used: BTreeSet<String>) -> Result<BTreeSet<String>, JobError> {
    if used.is_empty() {
        return Ok(used);
    }
    let have: HashSet<String> = c
        .query("SELECT spcname::text FROM pg_catalog.pg_tablespace", &[])
        .await
        .map_err(JobError::sql("list the target's tablespaces"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(used.into_iter().filter(|t| !have.contains(t)).collect())
}

/// Refresh `list` (in dependency order). A matview that reads, directly or
/// through views, a matview the target leaves unpopulated is skipped with a
/// warning, as pg_dump leaves such a matview unpopulated: its REFRESH would
/// fail. Dumps by this pgtide never list one; older dumps may.
async fn refresh_matviews(c: &Client, list: &[&MatviewEntry]) -> Result<(), JobError> {
    let ctx = "read the target's materialized views";
    let rows = c
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relispopulated \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'm'",
            &[],
        )
        .await
        .map_err(JobError::sql(ctx))?;
    let mut oids: HashMap<(String, String), u32> = HashMap::new();
    let mut populated: Vec<u32> = Vec::new();
    for r in &rows {
        let oid: u32 = r.get(0);
        oids.insert((r.get(1), r.get(2)), oid);
        if r.get::<_, bool>(3) {
            populated.push(oid);
        }
    }
    let oid_of = |mv: &MatviewEntry| oids.get(&(mv.schema.clone(), mv.name.clone())).copied();
    populated.extend(list.iter().filter_map(|mv| oid_of(mv)));
    let deps = catalog::view_dependencies(c)
        .await
        .map_err(JobError::sql(ctx))?;
    let considered: HashSet<u32> = oids.values().copied().collect();
    let ok: HashSet<u32> = catalog::refreshable(&populated, &considered, &deps)
        .into_iter()
        .collect();
    for mv in list {
        let name = quote_qualified(&mv.schema, &mv.name);
        if oid_of(mv).is_some_and(|o| !ok.contains(&o)) {
            // Left unpopulated, as pg_dump would have left it.
            tracing::warn!(
                "materialized view {name} reads a materialized view that is not populated: it is left unpopulated (REFRESH it once that one is)"
            );
            continue;
        }
        c.batch_execute(&format!("REFRESH MATERIALIZED VIEW {name}"))
            .await
            .map_err(JobError::sql(format!("refresh materialized view {name}")))?;
    }
    Ok(())
}

/// Every pack the manifest names exists with the recorded size.
async fn check_packs(repo: &Repository, m: &DumpManifest) -> Result<(), JobError> {
    repo.check_packs(crate::repo::SetKind::Dump, &m.id, &m.packs)
        .await?
        .map_err(|what| JobError::Damaged {
            id: m.id.clone(),
            what,
        })
}

/// A session in the target server's maintenance database (`postgres`, or
/// `template1`), for `--create`.
async fn admin_connection(s: &RestoreSettings) -> Result<Client, JobError> {
    for maint in ["postgres", "template1"] {
        match connect(&s.conn.with_dbname(maint), "pgtide restore").await {
            Ok(c) => return Ok(c),
            Err(ConnectError::DatabaseMissing { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(JobError::Invalid(
        "--create needs a postgres or template1 database to connect to".into(),
    ))
}

async fn create_database(
    admin: &Client,
    m: &DumpManifest,
    database: &str,
    dry_run: bool,
) -> Result<(), JobError> {
    let exists: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&database],
        )
        .await
        .map_err(JobError::sql("look for the target database"))?
        .get(0);
    if exists {
        return Err(JobError::DatabaseExists {
            name: database.to_string(),
        });
    }
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(JobError::sql("read target server information"))?
        .get(0);
    // Checked before anything is created, in a dry run too.
    let sql = create_database_sql(database, &m.source, ServerVersion(version.max(0) as u32))
        .map_err(JobError::Invalid)?;
    if dry_run {
        return Ok(());
    }
    admin
        .batch_execute(&sql)
        .await
        .map_err(JobError::sql(format!("create database {database}")))
}

/// `CREATE DATABASE` for `restore --create`, as `pg_dump --create` writes
/// it: from template0, with the source's encoding, LC_COLLATE and LC_CTYPE,
/// and on targets that have locale providers (15+) the source's provider
/// (libc for sources older than 15), its ICU or builtin locale and ICU rules.
///
/// A target that cannot create the source's provider (ICU before 15, ICU
/// rules before 16, builtin before 17) is refused here, before anything is
/// created, instead of falling back to libc with a warning: the provider
/// decides how every text index, ORDER BY and comparison sorts, and a silent
/// change would be found by the applications, not by the operator. Whoever
/// wants a libc copy creates the database and restores without --create.
pub fn create_database_sql(
    database: &str,
    src: &SourceInfo,
    target: ServerVersion,
) -> Result<String, String> {
    let can = LocaleSupport::of(target);
    let provider = src.locale_provider.as_deref().unwrap_or("libc");
    let refuse = |what: &str, needs: u32| {
        format!(
            "the dump's database uses {what}, which PostgreSQL {target} cannot create (it needs PostgreSQL {needs} or later): create database {database} yourself and restore into it without --create",
        )
    };
    if !can.can_create(provider) {
        return Err(match provider {
            "icu" => refuse("the icu locale provider", 15),
            "builtin" => refuse("the builtin locale provider", 17),
            other => format!(
                "the dump's database uses the locale provider {other:?}, which pgtide does not know: create database {database} yourself and restore into it without --create"
            ),
        });
    }
    let rules = src.icu_rules.as_deref().filter(|r| !r.is_empty());
    if rules.is_some() && !can.icu_rules {
        return Err(refuse("ICU collation rules", 16));
    }
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {}",
        quote_ident(database),
        quote_literal(&src.encoding)
    );
    // Say libc out loud: a target whose template0 uses ICU would otherwise
    // make the copy an ICU database.
    if can.provider {
        sql.push_str(&format!(" LOCALE_PROVIDER {provider}"));
    }
    sql.push_str(&format!(
        " LC_COLLATE {} LC_CTYPE {}",
        quote_literal(&src.collate),
        quote_literal(&src.ctype)
    ));
    match (provider, &src.locale) {
        ("icu", Some(l)) => sql.push_str(&format!(" ICU_LOCALE {}", quote_literal(l))),
        ("builtin", Some(l)) => sql.push_str(&format!(" BUILTIN_LOCALE {}", quote_literal(l))),
        _ => {}
    }
    if let Some(r) = rules {
        sql.push_str(&format!(" ICU_RULES {}", quote_literal(r)));
    }
    Ok(sql)
}

/// Settings whose value is a list of names, each quoted on its own by
/// `ALTER … SET` (PostgreSQL's GUC_LIST_QUOTE; pg_dump's
/// `variable_is_guc_list_quote`).
const LIST_QUOTE_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "oauth_validator_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Split a stored list setting (`"$user", public`) into its names, as
/// PostgreSQL's `SplitGUCList` does; `None` when it does not parse.
fn split_guc_list(value: &str) -> Option<Vec<String>> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let mut out = Vec::new();
    let mut rest = value.trim_start_matches(is_space);
    if rest.is_empty() {
        return Some(out);
    }
    loop {
        let name;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut n = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) if quoted[i + 1..].starts_with('"') => {
                        n.push('"');
                        chars.next();
                    }
                    Some((i, '"')) => break i + 1,
                    Some((_, c)) => n.push(c),
                    None => return None,
                }
            };
            name = n;
            rest = &quoted[end..];
        } else {
            let end = rest
                .find(|c: char| c == ',' || is_space(c))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            name = rest[..end].to_string();
            rest = &rest[end..];
        }
        out.push(name);
        rest = rest.trim_start_matches(is_space);
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start_matches(is_space),
            None if rest.is_empty() => return Some(out),
            None => return None,
        }
    }
}

/// `ALTER DATABASE … SET` for one stored `name=value` setting, as pg_dump's
/// `makeAlterConfigCommand` writes it; `None` for an entry without `=`.
pub fn alter_setting_sql(database: &str, setting: &str) -> Option<String> {
    let (name, value) = setting.split_once('=')?;
    let list = LIST_QUOTE_SETTINGS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
        .then(|| split_guc_list(value))
        .flatten();
    let value = match list {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| quote_literal(n))
            .collect::<Vec<_>>()
            .join(", "),
        _ => quote_literal(value),
    };
    Some(format!(
        "ALTER DATABASE {} SET {} TO {value}",
        quote_ident(database),
        quote_ident(name)
    ))
}

/// What `pg_restore --create` does to the database after creating it:
/// owner (unless --no-owner), grants (unless --no-privileges, the same
/// rule as for large objects), comment, `ALTER DATABASE … SET` settings,
/// connection limit and template flag. ALLOW_CONNECTIONS is never false in
/// a source pgtide could connect to, and the tablespace is the target's
/// default, as for every other object pgtide restores.
pub fn database_property_statements(
    database: &str,
    p: &DatabaseProperties,
    no_owner: bool,
    no_privileges: bool,
) -> Vec<String> {
    let db = quote_ident(database);
    let mut out = Vec::new();
    let owner = p.owner.as_deref().filter(|_| !no_owner);
    if let Some(o) = owner {
        out.push(format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(o)));
    }
    if let (Some(grants), false) = (&p.grants, no_privileges) {
        out.extend(objects::grant_statements(
            &format!("DATABASE {db}"),
            owner,
            grants,
        ));
    }
    if let Some(c) = &p.comment {
        out.push(format!("COMMENT ON DATABASE {db} IS {}", quote_literal(c)));
    }
    out.extend(
        p.settings
            .iter()
            .filter_map(|s| alter_setting_sql(database, s)),
    );
    if let Some(n) = p.connection_limit {
        out.push(format!("ALTER DATABASE {db} CONNECTION LIMIT {n}"));
    }
    if p.is_template {
        out.push(format!("ALTER DATABASE {db} IS_TEMPLATE true"));
    }
    out
}

/// Refuse to mix a dump's rows into tables that hold rows, and a full
/// restore into a database that already has the dump's tables.
async fn check_target(
    c: &Client,
    m: &DumpManifest,
    table_idx: &[usize],
    s: &RestoreSettings,
    do_schema: bool,
) -> Result<(), JobError> {
    if s.clean {
        return Ok(());
    }
    for &i in table_idx {
        let t = &m.tables[i];
        let name = quote_qualified(&t.schema, &t.name);
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await
            .map_err(JobError::sql("inspect the target database"))?
            .get(0);
        if !exists {
            if !do_schema && !s.schema_only {
                return Err(JobError::Invalid(format!(
                    "table {} does not exist in the target: restore the schema too (drop --data-only)",
                    t.qualified()
                )));
            }
            continue;
        }
        if do_schema {
            return Err(JobError::TargetHasSchema {
                object: format!("table {}", t.qualified()),
            });
        }
        let has_rows: bool = c
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM ONLY {name})"), &[])
            .await
            .map_err(JobError::sql(format!("inspect table {}", t.qualified())))?
            .get(0);
        if has_rows && !s.schema_only {
            return Err(JobError::TargetNotEmpty {
                table: t.qualified(),
            });
        }
    }
    Ok(())
}

/// A temporary file removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn new(suffix: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!(
            "pgtide-{}-{:016x}{suffix}",
            std::process::id(),
            fastrand::u64(..)
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// pg_restore needs a seekable file for -j: materialize the schema archive.
async fn write_archive(
    repo: &Repository,
    m: &DumpManifest,
    stream: &crate::repo::manifest::StreamRef,
    prefetch: usize,
) -> Result<TempFile, JobError> {
    let tmp = TempFile::new(".dump");
    let io = |e| JobError::Io {
        context: format!("write {}", tmp.path().display()),
        source: e,
    };
    let mut f = tokio::fs::File::create(tmp.path()).await.map_err(io)?;
    let reader = ChunkReader::new(
        repo.storage().clone(),
        Arc::new(m.packs.clone()),
        m.compression,
        prefetch,
    );
    let mut chunks = reader.stream(stream.chunks.clone());
    while let Some(c) = chunks.next().await {
        let c = c.map_err(JobError::pipeline("read the schema archive"))?;
        f.write_all(&c).await.map_err(io)?;
    }
    f.flush().await.map_err(io)?;
    Ok(tmp)
}

pub(crate) fn pg_restore_command(t: &PgTools, s: &RestoreSettings) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&t.pg_restore);
    cmd.arg("--no-password");
    if s.no_owner {
        cmd.arg("--no-owner");
    }
    if s.no_privileges {
        cmd.arg("--no-privileges");
    }
    if s.no_tablespaces {
        cmd.arg("--no-tablespaces");
    }
    if let Some(pw) = &s.conn.password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd
}

/// Run one section of the schema archive into the target. A pg_restore of
/// 17 or later always sends `SET transaction_timeout`, which older servers
/// reject: for those, pg_restore writes the section as a script, and pgtide
/// runs it over its own connection (in one transaction, without the
/// settings the server does not know).
#[allow(clippy::too_many_arguments)]
async fn pg_restore(
    t: &PgTools,
    archive: &Path,
    list: Option<&Path>,
    section: &str,
    jobs: usize,
    s: &RestoreSettings,
    target: &Client,
    version: ServerVersion,
    encoding: &str,
) -> Result<(), JobError> {
    let mut cmd = pg_restore_command(t, s);
    cmd.arg(format!("--section={section}"));
    if let Some(l) = list {
        cmd.arg("--use-list").arg(l);
    }
    if t.major >= 17 && !version.has_transaction_timeout() {
        cmd.arg("--file=-").arg(archive);
        let script = tools::output("pg_restore", cmd).await?;
        let script = script_text(target, script, encoding, &t.pg_dump).await?;
        let script = script_for_server(&script, version);
        return target
            .batch_execute(&script)
            .await
            .map_err(JobError::sql(format!("restore {section}")));
    }
    cmd.arg("--exit-on-error")
        .arg(format!("--jobs={}", jobs.max(1)))
        .arg("--dbname")
        .arg(s.conn.to_libpq_string())
        .arg(archive);
    tools::run("pg_restore", cmd).await?;
    Ok(())
}

/// A pg_restore script made runnable over a plain connection to `version`:
/// psql meta-commands (`\restrict`) and settings the server lacks removed,
/// and its `SET client_encoding`, since `script_text` made it UTF-8 for
/// pgtide's UTF8 session.
pub fn script_for_server(script: &str, version: ServerVersion) -> String {
    // Only pg_restore's own lines are touched: the preamble before the first
    // object and the `\unrestrict KEY` matching its `\restrict KEY`; lines
    // of function bodies and string literals stay as they are.
    let mut preamble = true;
    let mut unrestrict: Option<String> = None;
    let mut out = Vec::new();
    for l in script.lines() {
        if l.starts_with("-- Name:") {
            preamble = false;
        }
        let drop = if preamble {
            if let Some(key) = l.strip_prefix("\\restrict ") {
                unrestrict = Some(format!("\\unrestrict {key}"));
            }
            l.starts_with('\\')
                || l.starts_with("SET client_encoding")
                || (!version.has_transaction_timeout() && l.starts_with("SET transaction_timeout"))
        } else {
            unrestrict.as_deref() == Some(l)
        };
        if !drop {
            out.push(l);
        }
    }
    out.join("\n")
}

/// The encoding a pg_restore script says it is in (its
/// `SET client_encoding = '…';` line, which comes before any object).
pub fn script_encoding(script: &[u8]) -> Option<&str> {
    const SET: &[u8] = b"SET client_encoding = '";
    script
        .split(|&b| b == b'\n')
        .take_while(|l| !l.starts_with(b"-- Name:"))
        .find_map(|l| l.strip_prefix(SET))
        .and_then(|rest| rest.split(|&b| b == b'\'').next())
        .and_then(|e| std::str::from_utf8(e).ok())
}

/// A pg_restore script as UTF-8 text, for pgtide's UTF8 session. pg_restore
/// writes scripts in the archive's encoding (the source database's, or what
/// its `SET client_encoding` line says); tokio-postgres sends `&str`. Text
/// that is already UTF-8 is used as it is (always for UTF8 and for ASCII;
/// SQL_ASCII has no conversion, so it must be); other encodings are
/// converted by the target server (`convert_from`), which fails cleanly if
/// its own encoding cannot hold the text.
pub(crate) async fn script_text(
    c: &Client,
    script: Vec<u8>,
    archive_encoding: &str,
    pg_dump: &Path,
) -> Result<String, JobError> {
    let encoding = script_encoding(&script)
        .unwrap_or(archive_encoding)
        .to_string();
    let no_conversion =
        encoding.eq_ignore_ascii_case("UTF8") || encoding.eq_ignore_ascii_case("SQL_ASCII");
    if no_conversion || script.is_ascii() {
        return String::from_utf8(script).map_err(|_| {
            ToolError::Unusable {
                path: pg_dump.display().to_string(),
                reason: format!(
                    "its pg_restore writes a script for servers older than 17, and the script of this {encoding} dump holds bytes that are not UTF-8, which pgtide cannot send (name the pg_dump of the target's major version with --pg-dump)"
                ),
            }
            .into()
        });
    }
    Ok(c.query_one(
        "SELECT pg_catalog.convert_from($1::bytea, $2::text::name)",
        &[&script, &encoding],
    )
    .await
    .map_err(JobError::sql(format!(
        "convert the pg_restore script from {encoding}"
    )))?
    .get(0))
}

/// The encoding to load the dump's rows in: the dump's data encoding,
/// which the target converts into its own, except for SQL_ASCII.
/// SQL_ASCII means "bytes, no conversion", and `COPY … (ENCODING
/// 'SQL_ASCII')` into a database with a real encoding stores the bytes
/// without checking them: a UTF8 database would silently hold text that is
/// not UTF-8 and fails later, in every query that converts it. Loading the
/// bytes as the target's own encoding still converts nothing, but the server
/// checks them, and a byte sequence the target cannot hold stops the load
/// with the server's own error.
pub fn load_encoding(data_encoding: &str, target_encoding: &str) -> String {
    if data_encoding.eq_ignore_ascii_case("SQL_ASCII") {
        target_encoding.to_string()
    } else {
        data_encoding.to_string()
    }
}

async fn load_tables(
    repo: &Repository,
    m: &DumpManifest,
    load: &[usize],
    s: &RestoreSettings,
    target: &Client,
    progress: &Arc<Progress>,
    table_done: Option<tokio::sync::mpsc::UnboundedSender<usize>>,
) -> Result<u64, JobError> {
    let loading: Vec<&crate::repo::manifest::TableEntry> =
        load.iter().map(|&i| &m.tables[i]).collect();
    worker::check_binary_columns(target, &loading).await?;
    // FREEZE needs the TRUNCATE privilege (owner or granted).
    let mut can_truncate = Vec::with_capacity(load.len());
    for &i in load {
        let t = &m.tables[i];
        let ok: bool = target
            .query_one(
                "SELECT has_table_privilege($1, 'TRUNCATE')",
                &[&quote_qualified(&t.schema, &t.name)],
            )
            .await
            .map_err(JobError::sql(format!("inspect table {}", t.qualified())))?
            .get(0);
        can_truncate.push(ok);
    }
    // --data-only --clean on a split table: empty it once, before its parts load.
    for (k, &i) in load.iter().enumerate() {
        let t = &m.tables[i];
        if s.data_only && s.clean && (t.parts.len() > 1 || !can_truncate[k]) {
            target
                .batch_execute(&format!(
                    "TRUNCATE ONLY {}",
                    quote_qualified(&t.schema, &t.name)
                ))
                .await
                .map_err(JobError::sql(format!("empty table {}", t.qualified())))?;
        }
    }
    let mut items: Vec<(u64, worker::LoadItem)> = Vec::new();
    let mut parts_left = vec![0; m.tables.len()];
    for (k, &i) in load.iter().enumerate() {
        let t = &m.tables[i];
        parts_left[i] = t.parts.len();
        let freeze = t.parts.len() == 1 && can_truncate[k] && (!s.data_only || s.clean);
        for (p, part) in t.parts.iter().enumerate() {
            items.push((
                part.stream.raw_bytes,
                worker::LoadItem {
                    table: i,
                    part: p,
                    freeze,
                },
            ));
        }
        if t.parts.is_empty() {
            progress.units_done.fetch_add(1, Ordering::Relaxed);
            if let Some(tx) = &table_done {
                let _ = tx.send(i);
            }
        }
    }
    // Biggest tables first, each table's parts together: the biggest table
    // is complete early and its indexes (the longest build) go up while
    // the smaller tables load, instead of after them. Measured on the
    // benchmark (docs/BENCHMARKS.md), three interleaved rounds: 10.3-10.8 s
    // against 10.2-11.8 s with the largest parts first.
    items.sort_by_key(|(_, it)| {
        (
            std::cmp::Reverse(m.tables[it.table].raw_bytes()),
            it.table,
            it.part,
        )
    });
    progress
        .total_bytes
        .store(items.iter().map(|i| i.0).sum(), Ordering::Relaxed);
    progress
        .units_total
        .store(load.len() as u64, Ordering::Relaxed);
    let info = catalog::server_info(target)
        .await
        .map_err(JobError::sql("read target server information"))?;
    let shared = Arc::new(worker::Shared {
        conn: s.conn.clone(),
        version: info.version,
        tables: m.tables.clone(),
        data_encoding: load_encoding(&m.data_encoding, &info.encoding),
        reader: ChunkReader::new(
            repo.storage().clone(),
            Arc::new(m.packs.clone()),
            m.compression,
            s.prefetch,
        ),
        queue: Mutex::new(items.into_iter().map(|(_, i)| i).collect()),
        parts_left: Mutex::new(parts_left),
        progress: progress.clone(),
        table_done,
    });
    let n = s.jobs.min(shared.queue.lock().expect("queue").len());
    let mut workers = tokio::task::JoinSet::new();
    for k in 0..n {
        workers.spawn(worker::run(k, shared.clone()));
    }
    Ok(crate::jobs::join_all(workers, "restore worker")
        .await?
        .into_iter()
        .sum())
}
