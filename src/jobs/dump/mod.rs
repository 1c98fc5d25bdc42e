//! `pgtide dump`: a parallel, snapshot-consistent logical dump.
//!
//! The leader opens a REPEATABLE READ transaction, lists and locks the
//! tables, and exports its snapshot. `pg_dump --schema-only -Fc` runs in that
//! snapshot; `jobs` workers import it and COPY tables (or ctid block ranges of
//! big tables) largest first, each through its own pack writer. The leader
//! reads sequence values and large objects, keeps its transaction open until
//! every worker and pg_dump are done, then the manifest is written, last.
//!
//! Rows and the schema archive are in the database's own encoding, as
//! pg_dump writes them (the manifest's `data_encoding`); the sessions
//! themselves stay in UTF8 (see `pg::session`). The database's locale
//! provider and the properties `pg_dump --create` carries are recorded for
//! `restore --create`.

pub mod plan;
pub(crate) mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{JobError, Progress};
use crate::pg::catalog::{self, Relation};
use crate::pg::connect::connect;
use crate::pg::conninfo::ConnInfo;
use crate::pg::copy_binary;
use crate::pg::pattern::{selected, NamePattern};
use crate::pg::tools::{tail_lines, PgTools, ToolError};
use crate::pg::{quote_ident, quote_qualified, session};
use crate::pipeline::{PackSet, PackWriter, PipelineConfig};
use crate::repo::manifest::{
    dump_format_version, DatabaseProperties, DumpManifest, DumpOptions, DumpStats,
    LargeObjectEntry, LargeObjects, LoGrant, MatviewEntry, OwnedBy, SchemaArchive, SequenceEntry,
    SourceInfo, StreamRef, TableEntry, TablePart, KIND_DUMP,
};
use crate::repo::{Repository, SetKind};

/// Everything `dump` needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct DumpSettings {
    pub conn: ConnInfo,
    pub jobs: usize,
    pub pipeline: PipelineConfig,
    pub schema_only: bool,
    pub data_only: bool,
    pub tables: Vec<NamePattern>,
    pub exclude_tables: Vec<NamePattern>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Tables bigger than this are split into parts (0 = never).
    pub split_size: u64,
    pub split_by: plan::SplitBy,
    pub pg_dump: Option<PathBuf>,
    pub lock_timeout: Duration,
    pub copy_format: CopyFormat,
}

/// How table rows travel (`--copy-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Binary COPY for tables whose every column type has a portable binary
    /// form (`pg::copy_binary`) in a UTF8 database; text for the rest.
    Auto,
    /// COPY text for every table, as pg_dump does.
    Text,
}

/// What `dump` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    pub id: String,
    pub database: String,
    pub tables: u64,
    pub rows: u64,
    pub sequences: u64,
    pub large_objects: u64,
    pub bytes_in: u64,
    pub bytes_stored: u64,
    pub seconds: f64,
    pub mb_per_second: f64,
}

const APP: &str = "pgtide dump";

/// Take a dump. When `cancel` fires (SIGINT/SIGTERM), the work stops and
/// what was written is deleted: a dump is complete or absent.
pub async fn run(
    repo: &Repository,
    s: &DumpSettings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<DumpReport, JobError> {
    let started = Instant::now();
    let started_at = Utc::now();
    progress.set_phase("connecting");
    let leader = connect(&s.conn, APP).await?;
    let info = catalog::server_info(&leader)
        .await
        .map_err(JobError::sql("read server information"))?;
    if !info.version.is_supported() {
        return Err(JobError::UnsupportedServer(info.version));
    }
    let tools = if s.data_only {
        None
    } else {
        let t = PgTools::find(s.pg_dump.as_deref())?;
        t.check_server(info.version)?;
        Some(t)
    };

    session::configure(&leader, info.version, s.lock_timeout)
        .await
        .map_err(JobError::sql("configure the session"))?;
    let db = catalog::database_info(&leader, info.version)
        .await
        .map_err(JobError::sql("read the database's properties"))?;
    session::begin_snapshot(&leader)
        .await
        .map_err(JobError::sql("begin the snapshot transaction"))?;
    progress.set_phase("reading the catalog");
    let rels = catalog::relations(&leader)
        .await
        .map_err(JobError::sql("list relations"))?;
    let sel = Selection::new(&rels, s);
    let data_tables: Vec<&Relation> = if s.schema_only {
        Vec::new()
    } else {
        sel.data_tables()
    };
    lock_tables(&leader, &data_tables).await?;
    let snapshot = session::export_snapshot(&leader)
        .await
        .map_err(JobError::sql("export the snapshot"))?;
    tracing::info!(%snapshot, tables = data_tables.len(), "snapshot exported");

    let oids: Vec<u32> = data_tables.iter().map(|r| r.oid).collect();
    let mut columns = catalog::columns(&leader, &oids)
        .await
        .map_err(JobError::sql("read column lists"))?;
    let mut indexes = catalog::indexes(&leader, &oids)
        .await
        .map_err(JobError::sql("read index lists"))?;
    // Binary COPY carries text in the session's encoding (UTF8): only a
    // UTF8 database's rows come out unchanged that way.
    let binary_ok = s.copy_format == CopyFormat::Auto
        && info.encoding.eq_ignore_ascii_case(session::CLIENT_ENCODING);
    let mut types = if binary_ok {
        catalog::column_base_types(&leader, &oids)
            .await
            .map_err(JobError::sql("read column types"))?
    } else {
        HashMap::new()
    };
    let mut tables: Vec<TableEntry> = data_tables
        .iter()
        .map(|r| TableEntry {
            oid: r.oid,
            schema: r.schema.clone(),
            name: r.name.clone(),
            columns: columns.remove(&r.oid).unwrap_or_default(),
            relation_bytes: r.bytes,
            filter: r.extension_filter.clone(),
            indexes: indexes.remove(&r.oid).unwrap_or_default(),
            column_types: types
                .remove(&r.oid)
                .filter(|t| copy_binary::safe_for_binary(t, info.version))
                .unwrap_or_default(),
            binary: false,
            parts: Vec::new(),
        })
        .map(|t| TableEntry {
            binary: !t.column_types.is_empty(),
            ..t
        })
        .collect();

    let id = repo
        .begin_dump(&serde_json::json!({
            "kind": KIND_DUMP,
            "started_at": started_at,
            "database": info.database,
            "connection": s.conn.display(),
            "pgtide_version": env!("CARGO_PKG_VERSION"),
        }))
        .await?;
    let span = tracing::info_span!("job", kind = "dump", id = %id, db = %info.database);
    let packs = PackSet::new(repo.storage().clone(), repo.pack_keys(SetKind::Dump, &id))
        .with_cipher(repo.new_set_cipher(&id)?);

    // The COPY workers, owned here so that they are stopped and awaited
    // whatever ends the dump.
    let mut workers = tokio::task::JoinSet::new();
    let result = tokio::select! {
        r = dump_contents(
            s,
            &leader,
            &info,
            &sel,
            &mut tables,
            &snapshot,
            tools.as_ref(),
            &packs,
            &progress,
            &mut workers,
            &cancel,
        ).instrument(span.clone()) => r,
        _ = cancel.cancelled() => Err(JobError::Interrupted),
    };
    let contents = match result {
        Ok(c) => c,
        Err(e) => {
            // Best effort: leave no half-dump behind, once no worker runs
            // and no pack can appear any more. A dump killed outright
            // leaves objects without a manifest; `list` reports those.
            workers.shutdown().await;
            packs.settle().await;
            repo.purge(SetKind::Dump, &id).await;
            return Err(e);
        }
    };
    leader
        .batch_execute("COMMIT")
        .await
        .map_err(JobError::sql("end the snapshot transaction"))?;

    let seconds = started.elapsed().as_secs_f64();
    let pack_list = packs.packs();
    let mut stats = DumpStats {
        tables: tables.len() as u64,
        rows: tables.iter().map(TableEntry::rows).sum(),
        raw_bytes: 0,
        stored_bytes: pack_list.iter().map(|p| p.size).sum(),
        seconds,
    };
    let manifest = DumpManifest {
        format_version: dump_format_version(&tables, &contents.sequences),
        kind: KIND_DUMP.into(),
        id: id.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        pgtide_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        finished_at: Utc::now(),
        source: SourceInfo {
            server_version: info.version_string.clone(),
            server_version_num: info.version.0,
            database: info.database.clone(),
            connection: s.conn.display(),
            system_identifier: info.system_identifier.clone(),
            encoding: info.encoding.clone(),
            collate: info.collate.clone(),
            ctype: info.ctype.clone(),
            snapshot,
            locale_provider: db.locale_provider.clone(),
            locale: db.locale.clone(),
            icu_rules: db.icu_rules.clone(),
        },
        options: DumpOptions {
            compression: s.pipeline.compression,
            chunk_size: s.pipeline.chunk_size as u64,
            jobs: s.jobs as u32,
            schema_only: s.schema_only,
            data_only: s.data_only,
            tables: s.tables.iter().map(|p| p.original.clone()).collect(),
            exclude_tables: s
                .exclude_tables
                .iter()
                .map(|p| p.original.clone())
                .collect(),
            split_threshold: s.split_size,
        },
        compression: s.pipeline.compression,
        // The workers' COPY streams are in the database's own encoding.
        data_encoding: info.encoding.clone(),
        database: database_properties(db),
        schema: contents.schema,
        tables,
        sequences: contents.sequences,
        large_objects: contents.large_objects,
        matviews: contents.matviews,
        packs: pack_list,
        stats: DumpStats::default(),
    };
    stats.raw_bytes = manifest.streams().iter().map(|(_, s)| s.raw_bytes).sum();
    let manifest = DumpManifest { stats, ..manifest };
    progress.set_phase("writing the manifest");
    if let Err(e) = repo.commit_dump(&manifest).await {
        repo.purge(SetKind::Dump, &id).await;
        return Err(e.into());
    }
    let st = &manifest.stats;
    Ok(DumpReport {
        id,
        database: info.database,
        tables: st.tables,
        rows: st.rows,
        sequences: manifest.sequences.len() as u64,
        large_objects: manifest.large_objects.items.len() as u64,
        bytes_in: st.raw_bytes,
        bytes_stored: st.stored_bytes,
        seconds,
        mb_per_second: st.raw_bytes as f64 / 1e6 / seconds.max(1e-9),
    })
}

/// What `restore --create` needs to recreate the database as
/// `pg_dump --create` would: owner, comment, settings, limits and grants.
fn database_properties(db: catalog::DatabaseInfo) -> DatabaseProperties {
    DatabaseProperties {
        owner: Some(db.owner),
        comment: db.comment,
        settings: db.settings,
        connection_limit: (db.connection_limit != -1).then_some(db.connection_limit),
        is_template: db.is_template,
        grants: db.grants.map(|g| {
            g.into_iter()
                .map(|(grantee, privilege, grantable)| LoGrant {
                    grantee,
                    privilege,
                    grantable,
                })
                .collect()
        }),
    }
}

/// Which relations the dump covers, after --table/--exclude-table.
struct Selection<'a> {
    rels: Vec<&'a Relation>,
    /// Exact names to hand to pg_dump (`-t`), or empty for the whole database.
    pg_dump_tables: Vec<String>,
    pg_dump_excludes: Vec<String>,
    whole_database: bool,
}

impl<'a> Selection<'a> {
    fn new(all: &'a [Relation], s: &DumpSettings) -> Selection<'a> {
        // As pg_dump: only --table (a selective dump) leaves large objects out.
        let whole_database = s.tables.is_empty();
        let included: HashSet<u32> = all
            .iter()
            .filter(|r| selected(&s.tables, &s.exclude_tables, &r.schema, &r.name))
            .map(|r| r.oid)
            .collect();
        // Sequences owned by an included table come with it, as in pg_dump.
        let rels: Vec<&Relation> = all
            .iter()
            .filter(|r| {
                included.contains(&r.oid)
                    || (r.kind == 'S'
                        && r.owned_by.is_some_and(|o| included.contains(&o))
                        && !s
                            .exclude_tables
                            .iter()
                            .any(|p| p.matches(&r.schema, &r.name)))
            })
            .collect();
        let exact = |r: &Relation| format!("{}.{}", quote_ident(&r.schema), quote_ident(&r.name));
        let pg_dump_tables = if s.tables.is_empty() {
            Vec::new()
        } else {
            rels.iter().map(|r| exact(r)).collect()
        };
        let pg_dump_excludes = if s.tables.is_empty() {
            all.iter()
                .filter(|r| !included.contains(&r.oid))
                .map(exact)
                .collect()
        } else {
            Vec::new()
        };
        Selection {
            rels,
            pg_dump_tables,
            pg_dump_excludes,
            whole_database,
        }
    }

    /// Tables whose rows are copied: plain tables and leaf partitions
    /// (relkind r, unlogged too), not those an extension creates itself.
    fn data_tables(&self) -> Vec<&'a Relation> {
        self.rels
            .iter()
            .copied()
            .filter(|r| r.kind == 'r' && !r.extension_member)
            .collect()
    }
}

async fn lock_tables(leader: &Client, tables: &[&Relation]) -> Result<(), JobError> {
    for batch in tables.chunks(500) {
        let list = batch
            .iter()
            .map(|r| format!("ONLY {}", quote_qualified(&r.schema, &r.name)))
            .collect::<Vec<_>>()
            .join(", ");
        leader
            .batch_execute(&format!("LOCK TABLE {list} IN ACCESS SHARE MODE"))
            .await
            .map_err(JobError::sql(
                "lock the tables to dump (see --lock-wait-timeout)",
            ))?;
    }
    Ok(())
}

/// The COPY workers of a dump: the parts each wrote.
type Workers = tokio::task::JoinSet<Result<Vec<(usize, usize, TablePart)>, JobError>>;

struct Contents {
    schema: Option<SchemaArchive>,
    sequences: Vec<SequenceEntry>,
    large_objects: LargeObjects,
    matviews: Vec<MatviewEntry>,
}

#[allow(clippy::too_many_arguments)]
async fn dump_contents(
    s: &DumpSettings,
    leader: &Client,
    info: &catalog::ServerInfo,
    sel: &Selection<'_>,
    tables: &mut [TableEntry],
    snapshot: &str,
    tools: Option<&PgTools>,
    packs: &PackSet,
    progress: &Arc<Progress>,
    workers: &mut Workers,
    cancel: &CancellationToken,
) -> Result<Contents, JobError> {
    // Work plan for the data.
    let sizes: Vec<plan::TableSize> = tables
        .iter()
        .map(|t| plan::TableSize {
            bytes: t.relation_bytes,
            splittable: t.filter.is_none(),
        })
        .collect();
    let (items, items_per_table) = plan::plan(
        &sizes,
        info.block_size,
        s.split_size,
        s.split_by,
        info.version.has_tid_range_scan(),
    );
    progress
        .total_bytes
        .store(items.iter().map(|i| i.est_bytes).sum(), Ordering::Relaxed);
    progress
        .units_total
        .store(tables.len() as u64, Ordering::Relaxed);
    progress.set_phase(format!(
        "dumping {} tables with {} workers",
        tables.len(),
        s.jobs.min(items.len()).max(1)
    ));

    let schema_fut = async {
        match tools {
            Some(t) => dump_schema(s, t, sel, snapshot, &info.encoding, packs)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let shared = Arc::new(worker::Shared {
        conn: s.conn.clone(),
        version: info.version,
        lock_timeout: s.lock_timeout,
        snapshot: snapshot.to_string(),
        data_encoding: info.encoding.clone(),
        tables: tables
            .iter()
            .map(|t| worker::TableSpec {
                schema: t.schema.clone(),
                name: t.name.clone(),
                columns: t.columns.clone(),
                filter: t.filter.clone(),
                binary: t.binary,
            })
            .collect(),
        queue: Mutex::new(items.into_iter().collect()),
        items_left: Mutex::new(items_per_table),
        progress: progress.clone(),
    });
    // Workers are tasks of their own: a COPY stream's batches are handled
    // where its connection runs, not handed to this task row by row.
    for n in 0..s.jobs.min(shared.queue.lock().expect("queue").len()) {
        workers.spawn(worker::run(
            n,
            shared.clone(),
            PackWriter::new(packs.clone(), s.pipeline),
        ));
    }
    let data_fut = crate::jobs::join_all(workers, "dump worker", cancel);
    let meta_fut = async {
        // Sequence values and matview contents are data, as in pg_dump.
        let (sequences, matviews) = if s.schema_only {
            (Vec::new(), Vec::new())
        } else {
            (
                dump_sequences(leader, sel).await?,
                matviews(leader, sel).await?,
            )
        };
        let large_objects = if sel.whole_database && !s.schema_only {
            dump_large_objects(leader, PackWriter::new(packs.clone(), s.pipeline), progress).await?
        } else {
            LargeObjects::default()
        };
        Ok::<_, JobError>((sequences, matviews, large_objects))
    };
    let (schema, results, (sequences, matviews, large_objects)) =
        futures::try_join!(schema_fut, data_fut, meta_fut)?;

    for t in tables.iter_mut() {
        t.parts.clear();
    }
    let mut by_table: HashMap<usize, Vec<(usize, TablePart)>> = HashMap::new();
    for (table, part, p) in results.into_iter().flatten() {
        by_table.entry(table).or_default().push((part, p));
    }
    for (i, t) in tables.iter_mut().enumerate() {
        let mut parts = by_table.remove(&i).unwrap_or_default();
        parts.sort_by_key(|(n, _)| *n);
        if parts.is_empty() || parts.iter().enumerate().any(|(k, (n, _))| k != *n) {
            return Err(JobError::Internal(format!(
                "table {} has parts {:?}",
                t.qualified(),
                parts.iter().map(|(n, _)| n).collect::<Vec<_>>()
            )));
        }
        t.parts = parts.into_iter().map(|(_, p)| p).collect();
    }
    Ok(Contents {
        schema,
        sequences,
        large_objects,
        matviews,
    })
}

async fn dump_schema(
    s: &DumpSettings,
    tools: &PgTools,
    sel: &Selection<'_>,
    snapshot: &str,
    encoding: &str,
    packs: &PackSet,
) -> Result<SchemaArchive, JobError> {
    let mut cmd = tokio::process::Command::new(&tools.pg_dump);
    // The database's own encoding, like the rows (pg_dump's default, which
    // a PGCLIENTENCODING in the environment would otherwise change).
    cmd.arg("--schema-only")
        .arg("--format=custom")
        .arg(format!("--encoding={encoding}"))
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!(
            "--lock-wait-timeout={}",
            s.lock_timeout.as_millis().max(1)
        ))
        .arg("--no-password");
    for t in &sel.pg_dump_tables {
        cmd.arg("--table").arg(t);
    }
    for t in &sel.pg_dump_excludes {
        cmd.arg("--exclude-table").arg(t);
    }
    cmd.arg("--dbname").arg(s.conn.to_libpq_string());
    if let Some(pw) = &s.conn.password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ToolError::Spawn {
        tool: "pg_dump",
        source,
    })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut buf).await;
        buf
    });
    let mut writer = PackWriter::new(packs.clone(), s.pipeline);
    let stream = tokio_util::io::ReaderStream::with_capacity(stdout, 256 << 10);
    let info = writer.write_stream(stream).await;
    let status = child.wait().await.map_err(|source| ToolError::Spawn {
        tool: "pg_dump",
        source,
    })?;
    let stderr = err_task.await.unwrap_or_default();
    if !status.success() {
        writer.abort().await;
        return Err(ToolError::Failed {
            tool: "pg_dump",
            status: status.to_string(),
            stderr: tail_lines(&stderr, 3),
        }
        .into());
    }
    let info = info.map_err(JobError::pipeline("store the schema archive"))?;
    writer
        .finish()
        .await
        .map_err(JobError::pipeline("store the schema archive"))?;
    Ok(SchemaArchive {
        pg_dump_version: tools.version.clone(),
        stream: info.into(),
    })
}

async fn dump_sequences(
    leader: &Client,
    sel: &Selection<'_>,
) -> Result<Vec<SequenceEntry>, JobError> {
    let seqs: Vec<&Relation> = sel
        .rels
        .iter()
        .copied()
        .filter(|r| r.kind == 'S' && !r.extension_member)
        .collect();
    let names: Vec<(String, String)> = seqs
        .iter()
        .map(|r| (r.schema.clone(), r.name.clone()))
        .collect();
    let values = catalog::sequence_values(leader, &names)
        .await
        .map_err(JobError::sql("read sequence values"))?;
    let owners: HashMap<u32, OwnedBy> = sel
        .rels
        .iter()
        .map(|r| {
            let owner = OwnedBy::Table {
                schema: r.schema.clone(),
                table: r.name.clone(),
            };
            (r.oid, owner)
        })
        .collect();
    Ok(seqs
        .iter()
        .zip(values)
        .map(|(r, (last_value, is_called))| SequenceEntry {
            schema: r.schema.clone(),
            name: r.name.clone(),
            last_value,
            is_called,
            owned_by: r.owned_by.and_then(|o| owners.get(&o).cloned()),
        })
        .collect())
}

/// The matviews to refresh after a restore, in dependency order: those
/// populated in the source, except any that reads an unpopulated matview of
/// the dump (pg_dump leaves those unpopulated too: their REFRESH would fail).
async fn matviews(leader: &Client, sel: &Selection<'_>) -> Result<Vec<MatviewEntry>, JobError> {
    let dumped: Vec<&Relation> = sel
        .rels
        .iter()
        .copied()
        .filter(|r| r.kind == 'm' && !r.extension_member)
        .collect();
    if !dumped.iter().any(|r| r.populated) {
        return Ok(Vec::new());
    }
    let deps = catalog::view_dependencies(leader)
        .await
        .map_err(JobError::sql("read materialized view dependencies"))?;
    let by_oid: HashMap<u32, &Relation> = dumped.iter().map(|r| (r.oid, *r)).collect();
    let considered: HashSet<u32> = by_oid.keys().copied().collect();
    let populated: Vec<u32> = dumped
        .iter()
        .filter(|r| r.populated)
        .map(|r| r.oid)
        .collect();
    let refresh = catalog::refreshable(&populated, &considered, &deps);
    Ok(catalog::refresh_order(&refresh, &deps)
        .into_iter()
        .map(|o| MatviewEntry {
            schema: by_oid[&o].schema.clone(),
            name: by_oid[&o].name.clone(),
        })
        .collect())
}

/// Large objects: metadata from the catalog, contents read in pieces with
/// `lo_get` inside the snapshot and streamed through the pipeline as one
/// stream, in oid order. Memory holds one piece at a time.
async fn dump_large_objects(
    leader: &Client,
    mut writer: PackWriter,
    progress: &Arc<Progress>,
) -> Result<LargeObjects, JobError> {
    const PIECE: i32 = 1 << 20;
    let metas = catalog::large_objects(leader)
        .await
        .map_err(JobError::sql("list large objects"))?;
    if metas.is_empty() {
        return Ok(LargeObjects::default());
    }
    let mut grants = catalog::large_object_grants(leader)
        .await
        .map_err(JobError::sql("read large object privileges"))?;
    let stmt = leader
        .prepare("SELECT pg_catalog.lo_get($1, $2, $3)")
        .await
        .map_err(JobError::sql("read large objects"))?;
    let oids: Vec<u32> = metas.iter().map(|m| m.oid).collect();
    let sizes: Arc<Mutex<Vec<u64>>> = Arc::default();
    struct State {
        idx: usize,
        offset: i64,
    }
    let stream = futures::stream::try_unfold(State { idx: 0, offset: 0 }, |mut st| {
        let (stmt, oids, sizes) = (&stmt, &oids, &sizes);
        async move {
            while st.idx < oids.len() {
                let oid = oids[st.idx];
                let row = leader
                    .query_one(stmt, &[&oid, &st.offset, &PIECE])
                    .await
                    .map_err(|e| {
                        JobError::sql(format!("read large object {oid}"))(e).to_string()
                    })?;
                let data: Vec<u8> = row.get(0);
                st.offset += data.len() as i64;
                if data.len() < PIECE as usize {
                    sizes.lock().expect("sizes lock").push(st.offset as u64);
                    st.idx += 1;
                    st.offset = 0;
                }
                if !data.is_empty() {
                    progress.add_bytes(data.len() as u64);
                    return Ok(Some((bytes::Bytes::from(data), st)));
                }
            }
            Ok::<_, String>(None)
        }
    });
    let info = writer
        .write_stream(Box::pin(stream))
        .await
        .map_err(JobError::pipeline("store large objects"))?;
    writer
        .finish()
        .await
        .map_err(JobError::pipeline("store large objects"))?;
    let sizes = std::mem::take(&mut *sizes.lock().expect("sizes lock"));
    let items = metas
        .into_iter()
        .zip(sizes)
        .map(|(m, size)| LargeObjectEntry {
            oid: m.oid,
            owner: m.owner,
            grants: if m.default_acl {
                None
            } else {
                Some(
                    grants
                        .remove(&m.oid)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(grantee, privilege, grantable)| LoGrant {
                            grantee,
                            privilege,
                            grantable,
                        })
                        .collect(),
                )
            },
            comment: m.comment,
            size,
        })
        .collect();
    Ok(LargeObjects {
        items,
        stream: StreamRef::from(info),
    })
}
