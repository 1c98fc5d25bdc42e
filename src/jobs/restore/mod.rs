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
mod database;
mod objects;
mod pg_restore;
pub mod toc;
mod worker;

use database::*;
pub use database::{alter_setting_sql, create_database_sql, database_property_statements};
use pg_restore::*;
pub use pg_restore::{script_encoding, script_for_server, TempFile};

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
    worker::check_binary_columns(target, &m.id, &loading).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_ascii_rows_load_unconverted_but_checked() {
        assert_eq!(load_encoding("SQL_ASCII", "UTF8"), "UTF8");
        assert_eq!(load_encoding("SQL_ASCII", "SQL_ASCII"), "SQL_ASCII");
        assert_eq!(load_encoding("LATIN1", "UTF8"), "LATIN1");
        assert_eq!(load_encoding("UTF8", "SQL_ASCII"), "UTF8");
    }
}
