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
//! Three parts: `gather` reads and checks the facts (the manifest, the
//! schema archive and its table of contents, the target), and changes
//! nothing; `plan::build` decides the steps from them (pure, printed by
//! `--dry-run`); `execute` runs the steps, and never asks whether it is a
//! dry run.
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
mod load;
mod objects;
mod pg_restore;
pub mod plan;
pub mod toc;
pub(crate) mod worker;

use database::*;
pub use database::{alter_setting_sql, create_database_sql, database_property_statements};
pub use load::load_encoding;
use load::{load_with_early_builds, Load};
pub(crate) use objects::set_sequences;
pub(crate) use pg_restore::PgRestore;
use pg_restore::*;
pub use pg_restore::{script_encoding, script_for_server, TempFile};
use plan::{Plan, PlanEntry, Selection, Step, TargetFacts};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, TryFutureExt};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::{cancellable, JobError, Progress};
use crate::pg::catalog::{self, LocaleSupport};
use crate::pg::connect::{connect, ConnectError};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pattern::NamePattern;
use crate::pg::tools::{self, PgTools, ToolError};
use crate::pg::version::{tool_major, ServerVersion};
use crate::pg::{quote_ident, quote_literal, quote_qualified};
use crate::pipeline::ChunkReader;
use crate::repo::manifest::{
    DatabaseProperties, DumpManifest, MatviewEntry, SequenceEntry, SourceInfo,
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
    /// What was (or, with --dry-run, would be) done, in order: one line a
    /// step (the `summary` of each of `plan`).
    pub steps: Vec<String>,
    /// The same steps with what each touches.
    pub plan: Vec<PlanEntry>,
    pub tables: u64,
    pub rows: u64,
    pub bytes: u64,
    pub sequences: u64,
    pub large_objects: u64,
    pub seconds: f64,
    pub mb_per_second: f64,
    /// Foreign keys of the restored tables that were not created: the table
    /// they reference is neither restored nor in the target (one line each).
    pub skipped_foreign_keys: Vec<String>,
}

/// Restore dump `id` as `s` asks. When `cancel` fires, the step running
/// stops (its COPY workers aborted and awaited, a pg_restore killed) and
/// `Interrupted` is returned. The target keeps what was done before: each
/// table part loads in a transaction of its own, so a table holds all the
/// rows of a part or none of them, but the restore as a whole is not
/// undone (run it again with `--clean`, or drop the database `--create`
/// made).
pub async fn run(
    repo: &Repository,
    id: &str,
    s: &RestoreSettings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<RestoreReport, JobError> {
    restore(repo, id, s, progress, &cancel)
        .await
        .map_err(|e| super::stopped(&cancel, e))
}

async fn restore(
    repo: &Repository,
    id: &str,
    s: &RestoreSettings,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<RestoreReport, JobError> {
    let started = Instant::now();
    // Gathering only reads (and writes temporary files that go with it).
    let facts = cancellable(cancel, gather(repo, id, s, &progress)).await?;
    let plan = plan::build(&facts.m, facts.toc.as_ref(), &facts.sel, s, &facts.target);
    let missing = &facts.target.missing_tablespaces;
    if !missing.is_empty() {
        let names = missing
            .iter()
            .map(|t| quote_ident(t))
            .collect::<Vec<_>>()
            .join(", ");
        let (noun, verb) = match missing.len() {
            1 => ("tablespace", "does"),
            _ => ("tablespaces", "do"),
        };
        // The restore goes on: the operator learns here that the placement
        // of the source was not kept.
        tracing::warn!(
            "{noun} {names} of the dump {verb} not exist in the target: every object is restored into the target's default tablespace (hint: create the {noun} first to keep the placement, or pass --no-tablespaces)"
        );
    }
    let described = plan.describe(&facts.m.id, &facts.m, facts.toc.as_ref());
    let m_id = facts.m.id.clone();
    let skipped_foreign_keys = facts.skipped_foreign_keys.clone();
    let rows = if s.dry_run {
        0
    } else {
        execute(repo, &plan, facts, s, &progress, cancel).await?
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreReport {
        id: m_id,
        database: plan.database.clone(),
        dry_run: s.dry_run,
        steps: described.iter().map(|e| e.summary.clone()).collect(),
        plan: described,
        tables: plan.tables(),
        rows,
        bytes: plan.bytes,
        sequences: plan.sequences(),
        large_objects: plan.large_objects(),
        seconds,
        mb_per_second: plan.bytes as f64 / 1e6 / seconds.max(1e-9),
        skipped_foreign_keys,
    })
}

/// What a restore is planned from, read and checked before anything is
/// changed (a dry run reads and checks the same).
struct Facts {
    m: DumpManifest,
    /// pg_dump's tools, when the schema is restored.
    tools: Option<PgTools>,
    /// The schema archive as a file (pg_restore -j needs one).
    archive: Option<TempFile>,
    toc: Option<archive::Toc<String>>,
    sel: Selection,
    target: TargetFacts,
    target_version: ServerVersion,
    /// `--create`: a session in the maintenance database, which creates it.
    admin: Option<Client>,
    /// Without `--create`: the target's session.
    client: Option<Client>,
    /// Foreign keys left out (`outward_foreign_keys`), described.
    skipped_foreign_keys: Vec<String>,
}

async fn gather(
    repo: &Repository,
    id: &str,
    s: &RestoreSettings,
    progress: &Progress,
) -> Result<Facts, JobError> {
    let m = repo.load_dump(id).await?;
    // --table makes a selective restore of tables; --exclude-table alone
    // restores everything else (large objects and matviews too), as
    // pg_dump's options of the same names do.
    let include = !s.tables.is_empty();
    let filtered = include || !s.exclude_tables.is_empty();
    let do_schema = !s.data_only && m.schema.is_some();
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

    // Check the dump's objects exist with the sizes the manifest says.
    progress.set_phase("checking the dump");
    check_packs(repo, &m).await?;

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
    if include && !needs_conversion && Selection::new(&m, toc.as_ref(), s).is_empty() {
        return Err(no_match());
    }
    // With --create, the server converts the names through its maintenance
    // database, and answers for the target server: the database is made
    // only once all is checked.
    let (admin, client) = match s.create {
        true => (Some(admin_connection(s).await?), None),
        false => (None, Some(connect(&s.conn, "pgtide restore").await?)),
    };
    let session = admin.as_ref().or(client.as_ref()).expect("one session");
    if let (Some(raw), true) = (&raw_toc, needs_conversion) {
        toc = Some(decode_toc(session, raw).await?);
    }
    let mut sel = Selection::new(&m, toc.as_ref(), s);
    if include && sel.is_empty() {
        return Err(no_match());
    }
    // A filtered restore's foreign keys that point at a table it does not
    // restore are created only where the target has that table.
    let mut skipped_foreign_keys = Vec::new();
    if let (Some(t), Some(keep), true) = (&toc, sel.keep.as_mut(), do_schema) {
        for k in toc::outward_foreign_keys(t, keep) {
            if table_exists(client.as_ref(), &k.references).await? {
                continue;
            }
            keep[k.entry] = false;
            let what = k.describe();
            // Handled here: the restore goes on without it.
            tracing::warn!(
                "{what} is not created: that table is neither restored nor in the target (create the key once it is)"
            );
            skipped_foreign_keys.push(what);
        }
    }
    let mut target = TargetFacts::default();
    if admin.is_some() {
        progress.set_phase("checking the target server");
        target.create_sql = Some(create_database_sql_checked(session, &m, &database).await?);
    }
    let info = catalog::server_info(session)
        .await
        .map_err(JobError::sql("read target server information"))?;
    if !info.version.is_supported() {
        return Err(JobError::UnsupportedServer(info.version));
    }
    check_target(client.as_ref(), &m, &sel.tables, s, do_schema).await?;
    if let (Some(t), true, false) = (&toc, do_schema, s.no_tablespaces) {
        let all = vec![true; t.entries.len()];
        let used = toc::tablespaces(t, sel.keep.as_deref().unwrap_or(&all));
        target.missing_tablespaces = missing(session, used).await?;
    }
    Ok(Facts {
        m,
        tools,
        archive,
        toc,
        sel,
        target,
        target_version: info.version,
        admin,
        client,
        skipped_foreign_keys,
    })
}

/// Whether the target (`None`: a database about to be created, empty) has
/// table `(schema, name)`.
pub(crate) async fn table_exists(
    c: Option<&Client>,
    (schema, name): &(String, String),
) -> Result<bool, JobError> {
    let Some(c) = c else { return Ok(false) };
    Ok(c.query_one(
        "SELECT to_regclass($1) IS NOT NULL",
        &[&quote_qualified(schema, name)],
    )
    .await
    .map_err(JobError::sql("inspect the target database"))?
    .get(0))
}

/// Run the plan; the rows loaded. Each step stops where it waits when
/// `cancel` fires; the table load stops its workers and awaits them.
async fn execute(
    repo: &Repository,
    plan: &Plan,
    facts: Facts,
    s: &RestoreSettings,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<u64, JobError> {
    let Facts {
        m,
        tools,
        archive,
        toc,
        admin,
        client,
        target_version,
        ..
    } = facts;
    let database = &plan.database;
    // With --create, the target's session opens once the database exists.
    if let Some(admin) = admin {
        for step in &plan.steps {
            if let Step::CreateDatabase { sql } = step {
                progress.set_phase("creating the database");
                let create = admin
                    .batch_execute(sql)
                    .map_err(JobError::sql(format!("create database {database}")));
                cancellable(cancel, create).await?;
            }
        }
    }
    let c = match client {
        Some(c) => c,
        None => cancellable(cancel, connect(&s.conn, "pgtide restore")).await?,
    };
    let c = &c;
    // pg_restore, for the steps of the schema archive (which has a file
    // and pg_dump's tools whenever the plan has such steps).
    let pg_restore = match (&tools, &archive) {
        (Some(tools), Some(a)) => Some(PgRestore {
            tools,
            archive: a.path(),
            conn: &s.conn,
            no_owner: s.no_owner,
            no_privileges: s.no_privileges,
            no_tablespaces: plan.no_tablespaces,
            target: c,
            version: target_version,
            encoding: &m.source.encoding,
        }),
        _ => None,
    };
    let schema_step = || {
        pg_restore
            .as_ref()
            .expect("a plan restores the schema only from an archive")
    };
    let toc = toc.as_ref();
    let mut rows = 0;
    for step in &plan.steps {
        // The table load owns workers: it stops them itself.
        if let Step::LoadTables {
            tables,
            jobs,
            early,
        } = step
        {
            progress.set_phase(format!("loading {} tables", tables.len()));
            let mut lists = HashMap::new();
            for b in early {
                lists.insert(b.table, list_file(toc, Some(&b.list)).await?);
            }
            let cx = Load {
                repo,
                m: &m,
                s,
                target: c,
                progress,
            };
            rows = load_with_early_builds(&cx, tables, *jobs, &lists, pg_restore.as_ref(), cancel)
                .await?;
            continue;
        }
        // The other steps run statements or pg_restore (killed when
        // dropped) and leave nothing running when stopped.
        let run = async {
            match step {
                Step::ReadDump { .. }
                | Step::CreateDatabase { .. }
                | Step::DefaultTablespace { .. }
                | Step::LoadTables { .. } => {}
                Step::DropExisting { list } => {
                    progress.set_phase("dropping existing objects");
                    let l = list_file(toc, list.as_deref()).await?;
                    objects::drop_existing(schema_step(), l.as_ref().map(|l| l.path())).await?;
                }
                Step::PreData { list } => {
                    progress.set_phase("restoring pre-data");
                    let l = list_file(toc, list.as_deref()).await?;
                    schema_step()
                        .section("pre-data", l.as_ref().map(|l| l.path()), 1)
                        .await?;
                }
                Step::Sequences { sequences } => {
                    let seqs: Vec<&SequenceEntry> =
                        sequences.iter().map(|&i| &m.sequences[i]).collect();
                    objects::set_sequences(c, &seqs).await?;
                }
                Step::LargeObjects { .. } => {
                    progress.set_phase("restoring large objects");
                    let reader = ChunkReader::new(
                        repo.storage().clone(),
                        Arc::new(m.packs.clone()),
                        m.compression,
                        s.prefetch,
                    )
                    .with_cipher(repo.set_cipher(crate::repo::SetKind::Dump, &m.id)?);
                    objects::restore_large_objects(c, &m, &reader, s).await?;
                }
                Step::PostData { list, jobs } => {
                    progress.set_phase("restoring post-data (indexes, constraints)");
                    let l = list_file(toc, list.as_deref()).await?;
                    schema_step()
                        .section("post-data", l.as_ref().map(|l| l.path()), *jobs)
                        .await?;
                }
                Step::RefreshMatviews { matviews } => {
                    progress.set_phase("refreshing materialized views");
                    let list: Vec<&MatviewEntry> =
                        matviews.iter().map(|&i| &m.matviews[i]).collect();
                    refresh_matviews(c, &list).await?;
                }
                Step::DatabaseProperties { statements } => {
                    progress.set_phase("setting the database's properties");
                    c.batch_execute(&format!("BEGIN; {}; COMMIT", statements.join("; ")))
                        .await
                        .map_err(JobError::sql(format!(
                            "set the properties of database {database} (all else is restored; --no-owner and --no-privileges skip its owner and grants)"
                        )))?;
                }
            }
            Ok::<(), JobError>(())
        };
        cancellable(cancel, run).await?;
    }
    Ok(rows)
}

/// The list file for `pg_restore --use-list` of the entries `list`
/// (`None`: no list, the whole section).
async fn list_file(
    toc: Option<&archive::Toc<String>>,
    list: Option<&[bool]>,
) -> Result<Option<TempFile>, JobError> {
    match (toc, list) {
        (Some(t), Some(keep)) => Ok(Some(toc::write_list(t, keep).await?)),
        _ => Ok(None),
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
pub(crate) async fn decode_toc(
    c: &Client,
    raw: &archive::RawToc,
) -> Result<archive::Toc<String>, JobError> {
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
pub(crate) async fn missing(
    c: &Client,
    used: BTreeSet<String>,
) -> Result<BTreeSet<String>, JobError> {
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
/// `c`: `None` for a database about to be created (it has no tables).
async fn check_target(
    c: Option<&Client>,
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
        let Some(c) = c else {
            if !do_schema && !s.schema_only {
                return Err(JobError::Invalid(format!(
                    "table {} does not exist in the target: restore the schema too (drop --data-only)",
                    t.qualified()
                )));
            }
            continue;
        };
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
