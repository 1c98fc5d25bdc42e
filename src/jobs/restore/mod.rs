//! `pgtide restore <dump>`: load a logical dump into a database.
//!
//! Order: (create the database) → checks on the target → pre-data with
//! pg_restore → parallel COPY FROM of every table part → sequence values →
//! large objects → post-data with `pg_restore -j` (indexes, constraints,
//! triggers in parallel) → refresh of populated materialized views in
//! dependency order. Every chunk is checked (sizes, CRC32s) as it is read.

mod objects;
pub mod toc;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;

use super::{JobError, Progress};
use crate::pg::catalog;
use crate::pg::connect::{connect, ConnectError};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pattern::{selected, NamePattern};
use crate::pg::tools::{self, PgTools, ToolError};
use crate::pg::version::{tool_major, ServerVersion};
use crate::pg::{quote_ident, quote_literal, quote_qualified};
use crate::pipeline::ChunkReader;
use crate::repo::manifest::DumpManifest;
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
    let whole = s.tables.is_empty() && s.exclude_tables.is_empty();
    let do_schema = !s.data_only && m.schema.is_some();
    let do_data = !s.schema_only;
    let table_idx: Vec<usize> = (0..m.tables.len())
        .filter(|&i| {
            selected(
                &s.tables,
                &s.exclude_tables,
                &m.tables[i].schema,
                &m.tables[i].name,
            )
        })
        .collect();
    if !whole && table_idx.is_empty() {
        return Err(JobError::Invalid(format!(
            "no table in dump {} matches the --table/--exclude-table patterns",
            m.id
        )));
    }
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

    if s.create {
        progress.set_phase("creating the database");
        create_database(s, &m, &database, s.dry_run).await?;
        steps.push(format!("create database {database}"));
    }
    let target = match connect(&s.conn, "pgtide restore").await {
        Ok(c) => Some(c),
        Err(ConnectError::DatabaseMissing { .. }) if s.create && s.dry_run => None,
        Err(e) => return Err(e.into()),
    };
    let mut target_version = ServerVersion(0);
    if let Some(client) = &target {
        let info = catalog::server_info(client)
            .await
            .map_err(JobError::sql("read target server information"))?;
        if !info.version.is_supported() {
            return Err(JobError::UnsupportedServer(info.version));
        }
        target_version = info.version;
        check_target(client, &m, &table_idx, s, do_schema).await?;
    }

    let archive = match (&tools, &m.schema) {
        (Some(_), Some(a)) if !s.dry_run => {
            Some(write_archive(repo, &m, &a.stream, s.prefetch).await?)
        }
        _ => None,
    };
    let toc_list = match (&tools, &archive, whole) {
        (Some(t), Some(a), false) => {
            Some(toc::write_filtered_list(t, a.path(), &m, &table_idx).await?)
        }
        _ => None,
    };

    // Pre-data.
    if do_schema {
        if s.clean {
            steps.push("drop the objects the dump will create".into());
        }
        steps.push("restore pre-data (schemas, types, tables, functions) with pg_restore".into());
        if let (Some(t), Some(a), Some(c)) = (&tools, &archive, &target) {
            if s.clean {
                progress.set_phase("dropping existing objects");
                objects::drop_existing(t, a.path(), toc_list.as_ref().map(|l| l.path()), s, c)
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
            )
            .await?;
        }
    }

    // Data.
    let mut rows = 0;
    let mut bytes = 0;
    if do_data {
        let load: Vec<usize> = table_idx.clone();
        bytes = load.iter().map(|&i| m.tables[i].raw_bytes()).sum::<u64>();
        steps.push(format!(
            "load {} tables ({} rows, {} bytes) with {} workers",
            load.len(),
            load.iter().map(|&i| m.tables[i].rows()).sum::<u64>(),
            bytes,
            s.jobs
        ));
        if let (false, Some(c)) = (s.dry_run, &target) {
            progress.set_phase(format!("loading {} tables", load.len()));
            rows = load_tables(repo, &m, &load, s, c, &progress).await?;
        }
        let seqs = objects::selected_sequences(&m, &table_idx, whole);
        steps.push(format!("set {} sequence values", seqs.len()));
        if let (false, Some(c)) = (s.dry_run, &target) {
            objects::set_sequences(c, &seqs).await?;
        }
        if whole && !m.large_objects.items.is_empty() {
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
                toc_list.as_ref().map(|l| l.path()),
                "post-data",
                s.jobs,
                s,
                c,
                target_version,
            )
            .await?;
        }
    }
    if do_data && whole && !m.matviews.is_empty() {
        steps.push(format!("refresh {} materialized views", m.matviews.len()));
        if let (false, Some(c)) = (s.dry_run, &target) {
            progress.set_phase("refreshing materialized views");
            for mv in &m.matviews {
                let name = quote_qualified(&mv.schema, &mv.name);
                c.batch_execute(&format!("REFRESH MATERIALIZED VIEW {name}"))
                    .await
                    .map_err(JobError::sql(format!("refresh materialized view {name}")))?;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreReport {
        id: m.id.clone(),
        database,
        dry_run: s.dry_run,
        steps,
        tables: if do_data { table_idx.len() as u64 } else { 0 },
        rows,
        bytes,
        sequences: if do_data {
            objects::selected_sequences(&m, &table_idx, whole).len() as u64
        } else {
            0
        },
        large_objects: if do_data && whole {
            m.large_objects.items.len() as u64
        } else {
            0
        },
        seconds,
        mb_per_second: bytes as f64 / 1e6 / seconds.max(1e-9),
    })
}

/// Every pack the manifest names exists with the recorded size.
async fn check_packs(repo: &Repository, m: &DumpManifest) -> Result<(), JobError> {
    let listed: std::collections::HashMap<String, u64> = repo
        .storage()
        .list(&crate::repo::layout::dump_packs(&m.id))
        .await
        .map_err(|e| JobError::Repo(e.into()))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    for p in &m.packs {
        match listed.get(&p.key) {
            None => {
                return Err(JobError::Damaged {
                    id: m.id.clone(),
                    what: format!("pack {} is missing", p.key),
                })
            }
            Some(&size) if size != p.size => {
                return Err(JobError::Damaged {
                    id: m.id.clone(),
                    what: format!(
                        "pack {} has {size} bytes, the manifest records {}",
                        p.key, p.size
                    ),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

async fn create_database(
    s: &RestoreSettings,
    m: &DumpManifest,
    database: &str,
    dry_run: bool,
) -> Result<(), JobError> {
    let mut admin = None;
    for maint in ["postgres", "template1"] {
        match connect(&s.conn.with_dbname(maint), "pgtide restore").await {
            Ok(c) => {
                admin = Some(c);
                break;
            }
            Err(ConnectError::DatabaseMissing { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let admin = admin.ok_or_else(|| {
        JobError::Invalid("--create needs a postgres or template1 database to connect to".into())
    })?;
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
    if dry_run {
        return Ok(());
    }
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(database),
        quote_literal(&m.source.encoding),
        quote_literal(&m.source.collate),
        quote_literal(&m.source.ctype)
    );
    admin
        .batch_execute(&sql)
        .await
        .map_err(JobError::sql(format!("create database {database}")))
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
) -> Result<(), JobError> {
    let mut cmd = pg_restore_command(t, s);
    cmd.arg(format!("--section={section}"));
    if let Some(l) = list {
        cmd.arg("--use-list").arg(l);
    }
    if t.major >= 17 && !version.has_transaction_timeout() {
        cmd.arg("--file=-").arg(archive);
        let script = tools::output("pg_restore", cmd).await?;
        let script = script_for_server(&String::from_utf8_lossy(&script), version);
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
/// psql meta-commands (`\restrict`) and settings the server lacks removed.
pub fn script_for_server(script: &str, version: ServerVersion) -> String {
    script
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .filter(|l| version.has_transaction_timeout() || !l.starts_with("SET transaction_timeout"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn load_tables(
    repo: &Repository,
    m: &DumpManifest,
    load: &[usize],
    s: &RestoreSettings,
    target: &Client,
    progress: &Arc<Progress>,
) -> Result<u64, JobError> {
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
        }
    }
    items.sort_by_key(|i| std::cmp::Reverse(i.0));
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
        reader: ChunkReader::new(
            repo.storage().clone(),
            Arc::new(m.packs.clone()),
            m.compression,
            s.prefetch,
        ),
        queue: Mutex::new(items.into_iter().map(|(_, i)| i).collect()),
        parts_left: Mutex::new(parts_left),
        progress: progress.clone(),
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
