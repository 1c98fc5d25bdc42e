//! `pgtide restore <backup> --table PATTERN… --db CONN` and `restore
//! <backup> --database NAME --db CONN`: table- and database-level
//! point-in-time recovery into a live server.
//!
//! The backup is restored into a scratch directory with a private server
//! (the drill's: Unix socket inside the directory, no TCP, always torn
//! down, also on SIGINT/SIGTERM, and after a crash by the next run), its
//! other databases' relation files written as empty sparse files
//! (`physical_restore::sparse`); recovery runs to the target and the server
//! is promoted. Then:
//!
//! - `--table`: the chosen tables are staged, copied straight from the
//!   scratch server into the target through parallel COPY sessions, and
//!   swapped into place in one transaction ([`tables`], [`plan`]);
//! - `--database`: the database is dumped by the `dump` job into a
//!   repository inside the scratch directory and loaded by the logical
//!   `restore` job ([`database`]).
//!
//! Gather (nothing written: the backup for the target, the target server
//! reachable, the tools, the scratch space) → scratch restore → recovery →
//! the copy → the scratch directory removed. What cannot be known before
//! the scratch server runs (which tables the patterns match, whether the
//! database existed at the target) is checked before anything in the
//! target is changed. Never prints: returns a [`Report`].

mod copy;
mod database;
pub mod plan;
mod tables;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::drill::{checks, plan as scratch_plan, scratch};
use super::physical_restore::{self, select::Target, sparse, PitrSettings};
use super::{cancellable, JobError, Progress};
use crate::pg::catalog;
use crate::pg::connect::{connect, ConnectError};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pattern::NamePattern;
use crate::pg::quote_ident;
use crate::pg::tools::PgTools;
use crate::pg::version::ServerVersion;
use crate::pipeline::Compression;
use crate::repo::manifest::BackupManifest;
use crate::repo::wal_archive::WalArchive;
use crate::repo::{Repository, SetKind};
use crate::units::human_bytes;

/// What to restore.
#[derive(Debug, Clone)]
pub enum What {
    /// `--table` (and `--exclude-table`, `--into-schema`).
    Tables {
        include: Vec<NamePattern>,
        exclude: Vec<NamePattern>,
        into_schema: Option<String>,
    },
    /// `--database` without `--table`: the whole database (less
    /// `--exclude-table`).
    Database { exclude: Vec<NamePattern> },
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The target (`--db`): the live database the tables go into, or the
    /// database `--database` creates.
    pub conn: ConnInfo,
    /// A backup id (or a unique prefix), or `latest`: the newest backup
    /// that can reach the target.
    pub backup: String,
    pub target: Target,
    pub timeline: String,
    pub inclusive: bool,
    pub what: What,
    /// The backed-up cluster's database to read (`--database`); default:
    /// the database `--db` names.
    pub source_database: Option<String>,
    pub clean: bool,
    pub jobs: usize,
    /// Under which the scratch directory is made.
    pub scratch_base: PathBuf,
    pub pg_bin: Option<PathBuf>,
    pub pg_dump: Option<PathBuf>,
    pub os_user: Option<String>,
    pub superuser: Option<String>,
    pub no_owner: bool,
    pub no_privileges: bool,
    pub early_index_size: u64,
    pub repo_url: String,
    /// Key flags of an encrypted repository, for the scratch server's
    /// `restore_command`.
    pub secret_args: Vec<String>,
}

/// One restored table.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredTable {
    /// Its name in the backed-up database.
    pub source: String,
    /// Its name in the target.
    pub restored_as: String,
    pub rows: u64,
    /// A live table of that name was replaced (`--clean`).
    pub replaced: bool,
}

/// A foreign key the swap dealt with.
#[derive(Debug, Clone, Serialize)]
pub struct ForeignKeyOutcome {
    pub name: String,
    pub table: String,
    pub references: String,
    /// `created`; `not-valid` (rows violate it: created NOT VALID);
    /// `skipped` (the referenced table is not in the target, or the key
    /// cannot be made: the warning says why); `recreated` /
    /// `recreated-not-valid` for a live table's key to a replaced table.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backup: String,
    /// The recovery target, as text.
    pub target: String,
    /// "tables" or "database".
    pub kind: &'static str,
    /// The database of the backed-up cluster read.
    pub source_database: String,
    /// The target database.
    pub database: String,
    pub tables: Vec<RestoredTable>,
    /// `--database`: tables loaded (with `--table`: `tables.len()`).
    pub table_count: u64,
    pub rows: u64,
    pub sequences: u64,
    pub foreign_keys: Vec<ForeignKeyOutcome>,
    /// The scratch restore: files written and their bytes, and the
    /// relation files of other databases left as empty sparse files.
    pub files: u64,
    pub bytes: u64,
    pub sparse_files: u64,
    pub sparse_bytes: u64,
    /// What the scratch server said when recovery ended.
    pub recovery: String,
    /// Scratch directories of killed runs, removed first.
    pub cleaned_up: Vec<String>,
    pub seconds: f64,
}

/// Restore what `s` asks for. SIGINT/SIGTERM (`cancel`) stops the work,
/// removes the staging schemas from the target and the scratch directory.
pub async fn run(
    repo: &Repository,
    s: &Settings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Report, JobError> {
    use tracing::Instrument;
    let span = tracing::info_span!("job", kind = "restore-from-backup", backup = %s.backup);
    restore(repo, s, progress, cancel).instrument(span).await
}

/// What is known before anything is written.
struct Facts {
    m: BackupManifest,
    source_db: String,
    /// The drill's plan for the scratch directory (where, which settings).
    plan: scratch_plan::Plan,
    tools: PgTools,
    zero: BTreeSet<u32>,
    /// `--database`: the target database exists (and `--clean`).
    target_exists: bool,
}

async fn restore(
    repo: &Repository,
    s: &Settings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Report, JobError> {
    let t0 = Instant::now();
    // Nothing is written while gathering.
    let f = cancellable(&cancel, gather(repo, s, &progress)).await?;
    let cleaned_up = tokio::task::spawn_blocking(scratch::reap)
        .await
        .unwrap_or_default();
    for line in &cleaned_up {
        tracing::warn!("{line}");
    }
    let scr = scratch::Scratch::create(&f.plan.scratch, &f.m.id, s.os_user.clone())?;
    let prefix = format!("{}_{:08x}", plan::STAGING, fastrand::u32(..));
    // Every step of the flow stops on the token (the restores and the copy
    // stop their workers and await them): it returns soon after it fires.
    let outcome = flow(repo, s, &f, &scr, &prefix, &progress, &cancel).await;
    // Once the token fired, a failure is the interruption (see
    // `jobs::stopped`); a restore that got to its end stands.
    let interrupted = outcome.is_err() && cancel.is_cancelled();
    if matches!(s.what, What::Tables { .. }) && outcome.is_err() {
        drop_staging(&s.conn, &prefix).await;
    }
    progress.set_phase("stopping the scratch server and removing its directory");
    let removed = scr.remove(false).await;
    let mut report = match outcome {
        _ if interrupted => {
            if let Err(e) = removed {
                tracing::warn!("cleaning up the interrupted restore: {e}");
            }
            return Err(JobError::Interrupted);
        }
        Err(e) => {
            if let Err(r) = removed {
                tracing::warn!("cleaning up after the failed restore: {r}");
            }
            return Err(e);
        }
        Ok(r) => r,
    };
    removed?;
    report.cleaned_up = cleaned_up;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

async fn gather(repo: &Repository, s: &Settings, progress: &Progress) -> Result<Facts, JobError> {
    progress.set_phase("choosing the backup and checking the target");
    let id = if s.backup == "latest" {
        physical_restore::choose(repo, &s.target, &s.timeline).await??
    } else {
        repo.resolve(SetKind::Backup, &s.backup).await?
    };
    let m: BackupManifest = repo.load(SetKind::Backup, &id).await?;
    let source_db = s
        .source_database
        .clone()
        .or_else(|| s.conn.dbname.clone())
        .unwrap_or_default();
    let database = s.conn.dbname.clone().unwrap_or_default();
    let target_exists = match &s.what {
        // Checked now; the copy opens its own session once the scratch
        // server is ready (the download and the replay may take hours).
        What::Tables { .. } => {
            let c = connect(&s.conn, "pgtide restore").await?;
            supported(&c).await?;
            false
        }
        What::Database { .. } => {
            let admin = admin_session(&s.conn).await?;
            supported(&admin).await?;
            let exists: bool = admin
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                    &[&database],
                )
                .await
                .map_err(JobError::sql("look for the target database"))?
                .get(0);
            if exists && !s.clean {
                return Err(JobError::TargetDatabaseExists { name: database });
            }
            exists
        }
    };
    let tools = PgTools::find(s.pg_dump.as_deref())?;
    tools.check_server(ServerVersion(m.server_version_num))?;
    let major = m.server_version_num / 10000;
    physical_restore::find_server_tool(s.pg_bin.as_deref(), "pg_ctl", major)?;
    // The WAL of the backup itself: a gap is found now, not after the copy.
    if m.timeline == m.end_timeline {
        let archive = WalArchive::new(
            repo.storage().clone(),
            m.wal_segment_size,
            Compression::None,
        );
        if let Some(name) = archive
            .missing_in_range(m.timeline, m.start_lsn, m.end_lsn)
            .await
            .map_err(JobError::archive("list the WAL archive"))?
        {
            return Err(JobError::RecoveryShort(format!(
                "WAL segment {name} that backup {} needs is missing from the archive: the backup cannot be restored (run pgtide verify {})",
                m.id, m.id
            )));
        }
    }
    // Which databases need not be downloaded.
    let rows = physical_restore::database_rows(repo, &m).await?;
    let zero = match sparse::choose(&rows, &source_db, &physical_restore::database_dirs(&m)) {
        sparse::Choice::Zero(z) => z,
        sparse::Choice::Whole(why) => {
            tracing::info!("{why}");
            BTreeSet::new()
        }
    };
    let zeroed: u64 = m
        .files
        .iter()
        .filter(|f| sparse::is_zeroed(f, &zero))
        .map(|f| f.size)
        .sum();
    let dir = s.scratch_base.join(scratch::dir_name());
    let mut plan = scratch_plan::backup_plan(&m, &dir, &s.target, false);
    plan.needs_bytes = plan.needs_bytes.saturating_sub(zeroed);
    if matches!(s.what, What::Database { .. }) {
        // The dump the database goes through, uncompressed, beside it.
        plan.needs_bytes += m.stats.raw_bytes.saturating_sub(zeroed);
    }
    plan.check_socket_path().map_err(JobError::Invalid)?;
    std::fs::create_dir_all(&s.scratch_base).map_err(|e| JobError::Io {
        context: format!("create {}", s.scratch_base.display()),
        source: e,
    })?;
    let free = scratch::free_bytes(&s.scratch_base)?;
    if free < plan.needs_bytes {
        return Err(JobError::Invalid(format!(
            "{} has {} free, restoring from backup {} needs about {}: choose another --scratch",
            s.scratch_base.display(),
            human_bytes(free),
            m.id,
            human_bytes(plan.needs_bytes)
        )));
    }
    Ok(Facts {
        m,
        source_db,
        plan,
        tools,
        zero,
        target_exists,
    })
}

async fn supported(c: &Client) -> Result<(), JobError> {
    let info = catalog::server_info(c)
        .await
        .map_err(JobError::sql("read target server information"))?;
    if !info.version.is_supported() {
        return Err(JobError::UnsupportedServer(info.version));
    }
    Ok(())
}

/// A session in the target server's maintenance database.
async fn admin_session(conn: &ConnInfo) -> Result<Client, JobError> {
    for maint in ["postgres", "template1"] {
        match connect(&conn.with_dbname(maint), "pgtide restore").await {
            Ok(c) => return Ok(c),
            Err(ConnectError::DatabaseMissing { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(JobError::Invalid(
        "--database needs a postgres or template1 database in the target server to connect to"
            .into(),
    ))
}

/// The scratch server's session in the source database, and the conninfo
/// for more.
pub(super) struct Source {
    pub client: Client,
    pub conninfo: ConnInfo,
}

#[allow(clippy::too_many_arguments)]
async fn flow(
    repo: &Repository,
    s: &Settings,
    f: &Facts,
    scr: &scratch::Scratch,
    prefix: &str,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Report, JobError> {
    let plan = &f.plan;
    let mut settings = scratch_plan::server_settings(&plan.scratch, plan.major);
    // Nothing but pgtide reads the copy: no autovacuum worker, which would
    // also try the databases left as sparse files.
    settings.push(("autovacuum".into(), "off".into()));
    let ps = PitrSettings {
        pgdata: plan.data_dir.clone(),
        target: s.target.clone(),
        action: "promote".into(),
        timeline: s.timeline.clone(),
        inclusive: s.inclusive,
        force: false,
        jobs: s.jobs,
        tablespace_map: plan.tablespaces.clone(),
        start: false,
        pg_bin: s.pg_bin.clone(),
        os_user: s.os_user.clone(),
        repo_url: s.repo_url.clone(),
        secret_args: s.secret_args.clone(),
        settings,
        zero_databases: f.zero.clone(),
    };
    scr.write(scratch_plan::HBA_FILE, scratch_plan::HBA)?;
    scr.write(scratch_plan::IDENT_FILE, "")?;
    scr.give_to_server_user()?;
    let restored =
        physical_restore::run(repo, &f.m.id, &ps, progress.clone(), cancel.clone()).await?;
    if !plan.data_dir.join("postgresql.conf").exists() {
        scr.write_data_file("postgresql.conf", scratch_plan::NO_CONF)?;
    }
    progress.set_phase(format!(
        "recovering to {}: PostgreSQL replays the archived WAL",
        plan.target
    ));
    let (summary, _) = cancellable(cancel, physical_restore::start_and_wait(&ps, plan.major))
        .await
        .map_err(|e| match e.to_string() {
            m if m.contains("before configured recovery target was reached") => {
                JobError::RecoveryShort(format!(
                    "recovery ended before reaching {}: the archive lacks the WAL up to it",
                    plan.target
                ))
            }
            _ => e,
        })?;
    let source = cancellable(cancel, source_session(s, f)).await?;

    let mut report = Report {
        backup: f.m.id.clone(),
        target: plan.target.clone(),
        kind: "tables",
        source_database: f.source_db.clone(),
        database: s.conn.dbname.clone().unwrap_or_default(),
        tables: Vec::new(),
        table_count: 0,
        rows: 0,
        sequences: 0,
        foreign_keys: Vec::new(),
        files: restored.files - restored.sparse_files,
        bytes: restored.bytes,
        sparse_files: restored.sparse_files,
        sparse_bytes: restored.sparse_bytes,
        recovery: shorten(&summary),
        cleaned_up: Vec::new(),
        seconds: 0.0,
    };
    match &s.what {
        What::Tables {
            include,
            exclude,
            into_schema,
        } => {
            let target = cancellable(cancel, connect(&s.conn, "pgtide restore")).await?;
            let cx = tables::Cx {
                s,
                tools: &f.tools,
                source: &source,
                target: &target,
                scratch_dir: &plan.scratch,
                prefix,
                progress,
                recovery_target: &plan.target,
                source_db: &f.source_db,
                cancel,
            };
            let out = tables::restore(&cx, include, exclude, into_schema.as_deref()).await?;
            report.table_count = out.tables.len() as u64;
            report.rows = out.tables.iter().map(|t| t.rows).sum();
            report.tables = out.tables;
            report.sequences = out.sequences;
            report.foreign_keys = out.foreign_keys;
        }
        What::Database { exclude } => {
            report.kind = "database";
            let r = database::restore(
                s,
                &source,
                &plan.scratch,
                exclude,
                f.target_exists,
                progress,
                cancel,
            )
            .await?;
            report.table_count = r.tables;
            report.rows = r.rows;
            report.sequences = r.sequences;
        }
    }
    Ok(report)
}

/// "redo done at …; last completed transaction …" without PostgreSQL 15+'s
/// resource usage.
fn shorten(summary: &str) -> String {
    summary
        .split("; ")
        .map(|l| l.split(" system usage:").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A superuser session on the scratch server in the source database.
async fn source_session(s: &Settings, f: &Facts) -> Result<Source, JobError> {
    let plan = &f.plan;
    let users = checks::superusers(s.superuser.as_deref(), s.os_user.as_deref(), &plan.data_dir);
    let db = &f.source_db;
    let mut last = None;
    for user in &users {
        let ci = checks::scratch_conninfo(&plan.scratch, user, db)?;
        match connect(&ci, "pgtide restore").await {
            Ok(client) => {
                let oid: u32 = client
                    .query_one(
                        "SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()",
                        &[],
                    )
                    .await
                    .map_err(JobError::sql("read the scratch server's database"))?
                    .get(0);
                if f.zero.contains(&oid) {
                    return Err(JobError::Internal(format!(
                        "database {db} is database {oid} at the target, whose files the restore left out"
                    )));
                }
                return Ok(Source {
                    client,
                    conninfo: ci,
                });
            }
            Err(ConnectError::DatabaseMissing { .. }) => {
                return Err(JobError::NotAtTarget(format!(
                    "database {} did not exist at {} in the cluster of backup {}: nothing was restored",
                    crate::pg::display_ident(db),
                    plan.target,
                    f.m.id
                )))
            }
            Err(e @ ConnectError::Auth { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(JobError::Invalid(format!(
        "no superuser to connect to the scratch server as (tried {}{}): name the backed-up cluster's superuser with --superuser",
        users.join(", "),
        last.map(|e| format!("; {e}")).unwrap_or_default()
    )))
}

/// Drop the staging schemas a failed or interrupted restore left in the
/// target (those named with `prefix`). Best effort: a schema left behind
/// is named `pgtide_restore_…` and holds nothing live.
async fn drop_staging(conn: &ConnInfo, prefix: &str) {
    let r = async {
        let c = connect(conn, "pgtide restore").await?;
        let names: Vec<String> = c
            .query(
                "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE starts_with(nspname::text, $1)",
                &[&format!("{prefix}_")],
            )
            .await
            .map_err(JobError::sql("list the staging schemas"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for n in names {
            c.batch_execute(&format!(
                "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&n)
            ))
            .await
            .map_err(JobError::sql(format!("drop staging schema {n}")))?;
        }
        Ok::<(), JobError>(())
    };
    match tokio::time::timeout(Duration::from_secs(60), r).await {
        Ok(Ok(())) => {}
        // Handled here: the restore's own error is what the user sees.
        Ok(Err(e)) => tracing::warn!(
            "could not drop the staging schemas {prefix}_* from the target (drop them by hand): {e}"
        ),
        Err(_) => tracing::warn!(
            "dropping the staging schemas {prefix}_* from the target took too long (drop them by hand)"
        ),
    }
}
