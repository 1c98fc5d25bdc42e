//! The command line: the clap command tree, one function per command, and
//! error → exit code mapping (`exit.rs`). Nothing else lives here.

pub mod drill;
pub mod exit;
pub mod expire;
pub mod output;
pub mod service;
pub mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::jobs::{self, backup, dump, restore, verify, Progress};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pattern::NamePattern;
use crate::pipeline::{Compression, PipelineConfig};
use crate::repo::Repository;
use exit::CliError;
use output::{print_json, ProgressDisplay};
use settings::{
    default_jobs, default_repo, human_bytes, parse_duration, parse_size, CheckpointArg,
    CopyFormatArg, ManifestChecksumsArg, SplitByArg, TargetActionArg, WalSourceArg,
};

#[derive(Debug, Parser)]
#[command(
    name = "pgtide",
    version,
    about = "PostgreSQL backup engine: parallel logical dumps, physical base backups, continuous WAL archiving and point-in-time restore, through a chunked, compressed, checksummed repository",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print machine-readable JSON on stdout and no progress bars
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr: text, or json (one object per line, for log shippers)
    #[arg(long, global = true, env = "PGTIDE_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct RepoArg {
    /// Repository: a path, file:///path or s3://bucket/prefix?endpoint=URL&region=R&path_style=true
    /// [default: $XDG_DATA_HOME/pgtide/repo or ~/.local/share/pgtide/repo]
    #[arg(long, env = "PGTIDE_REPO")]
    pub repo: Option<String>,
}

impl RepoArg {
    fn url(&self) -> String {
        self.repo.clone().unwrap_or_else(default_repo)
    }
}

#[derive(Debug, Args)]
pub struct DbArg {
    /// Database: a libpq URL (postgres://user@host/db), a key=value string or a
    /// database name; unset parts come from PGHOST, PGPORT, PGUSER, PGPASSWORD,
    /// PGDATABASE, PGSSLMODE and ~/.pgpass
    #[arg(long, short = 'd')]
    pub db: Option<String>,
}

#[derive(Debug, Args)]
pub struct TableFilter {
    /// Only tables matching this pattern (psql rules: schema.name, * and ?, regular-expression classes, "Exact Name"); repeatable
    #[arg(long = "table", short = 't', value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Skip tables matching this pattern; repeatable
    #[arg(long = "exclude-table", short = 'T', value_name = "PATTERN")]
    pub exclude_tables: Vec<String>,
}

impl TableFilter {
    fn patterns(&self) -> Result<(Vec<NamePattern>, Vec<NamePattern>), CliError> {
        let p = |v: &[String]| {
            v.iter()
                .map(|s| NamePattern::parse(s).map_err(|e| CliError::new(exit::USAGE, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok((p(&self.tables)?, p(&self.exclude_tables)?))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a parallel, snapshot-consistent logical dump of a database
    Dump(DumpArgs),
    /// Take a physical base backup over the replication protocol
    Backup(BackupArgs),
    /// Restore a dump into a database, or a backup into a data directory (--pgdata) to a point in time
    Restore(RestoreArgs),
    /// List the dumps, backups and archived WAL of a repository
    List(RepoOnly),
    /// Show a dump or backup in detail: tables or files, bytes, LSNs, timings
    Info(IdArgs),
    /// Read every object of a dump or backup back and check every checksum (backups: their WAL too)
    Verify(VerifyArgs),
    /// Delete a dump or backup, or the archived WAL older than a backup
    Delete(DeleteArgs),
    /// Apply retention: remove the backups, dumps and WAL no --keep-* rule keeps (--dry-run says why)
    Expire(expire::ExpireArgs),
    /// WAL archiving: stream (replication slot), push (archive_command), fetch (restore_command)
    #[command(subcommand)]
    Wal(WalCommand),
    /// Run the service: continuous WAL archiving, scheduled backups and dumps, retention, HTTP status and metrics
    Daemon(service::DaemonArgs),
    /// Show the daemon's state (or, when none answers, what the repository records)
    Status(service::StatusArgs),
    /// Prove a backup or dump restores: restore it into a scratch directory with a private server, check it, remove it
    Drill(drill::DrillArgs),
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Archive one WAL file: archive_command = 'pgtide wal push --repo URL %p'
    Push {
        /// The file PostgreSQL passes as %p
        path: PathBuf,
        #[command(flatten)]
        repo: RepoArg,
        /// Compression of the stored segment
        #[arg(long, default_value = "zstd:1")]
        compress: Compression,
    },
    /// Fetch one WAL file: restore_command = 'pgtide wal fetch --repo URL %f %p'.
    /// Exits 1 quietly when the archive does not hold it.
    Fetch {
        /// The file name PostgreSQL asks for (%f)
        name: String,
        /// Where to write it (%p)
        dest: PathBuf,
        #[command(flatten)]
        repo: RepoArg,
        /// Prefetch spool directory [default: pg_wal/pgtide-prefetch inside a data directory]
        #[arg(long)]
        spool: Option<PathBuf>,
        /// Segments to prefetch after the one asked for (0: none)
        #[arg(long, default_value_t = 8)]
        prefetch: u64,
    },
    /// Archive WAL continuously through a replication slot
    Stream(StreamArgs),
    /// Fetch the segments after NAME into a spool (started by `wal fetch`)
    #[command(hide = true)]
    Prefetch {
        name: String,
        #[command(flatten)]
        repo: RepoArg,
        #[arg(long)]
        spool: PathBuf,
        #[arg(long, default_value_t = 8)]
        count: u64,
    },
}

#[derive(Debug, Args)]
pub struct RepoOnly {
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Dump or backup id (or `latest`: the newest of either)
    pub id: String,
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Dump or backup id
    #[arg(required_unless_present = "wal_before", conflicts_with = "wal_before")]
    pub id: Option<String>,
    /// Delete the archived WAL this backup and every newer one do not need
    /// (refused while an older backup still needs it)
    #[arg(long, value_name = "BACKUP_ID")]
    pub wal_before: Option<String>,
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Dump or backup id (or `latest`: the newest of either)
    pub id: String,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Objects read in parallel
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Parallel COPY workers (each one more connection)
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
    /// Compression of stored chunks: none, zstd or zstd:LEVEL (1-22)
    #[arg(long, default_value = "zstd:1")]
    pub compress: Compression,
    /// Uncompressed bytes per chunk (memory ≈ chunk size × 4 per worker)
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Split tables larger than this into parts that restore loads in parallel (0: never)
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub split_size: u64,
    /// How to split: output (one scan per table, its output cut into parts;
    /// spares the source's cache) or ctid (block ranges read by several
    /// workers at once, PostgreSQL 14+; faster on many cores, fills shared_buffers)
    #[arg(long, value_enum, default_value_t = SplitByArg::Output)]
    pub split_by: SplitByArg,
    /// Row format: auto (binary COPY for tables whose columns are all
    /// built-in types with a portable binary form, in UTF8 databases; text
    /// for the rest) or text (every table, as pg_dump)
    #[arg(long, value_enum, default_value_t = CopyFormatArg::Auto)]
    pub copy_format: CopyFormatArg,
    /// Only the schema (pg_dump --schema-only in the snapshot)
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Only the data: rows, sequence values, large objects
    #[arg(long)]
    pub data_only: bool,
    #[command(flatten)]
    pub filter: TableFilter,
    /// A name recorded in the manifest
    #[arg(long)]
    pub name: Option<String>,
    /// A description recorded in the manifest
    #[arg(long)]
    pub description: Option<String>,
    /// pg_dump to use for the schema (binary or its directory) [default: the newest found]
    #[arg(long, env = "PGTIDE_PG_DUMP")]
    pub pg_dump: Option<PathBuf>,
    /// Give up waiting for a table lock after this long
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lock_wait_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Server to back up (a replication connection is made; the role needs REPLICATION)
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Compression of stored chunks: none, zstd or zstd:LEVEL (1-22)
    #[arg(long, default_value = "zstd:1")]
    pub compress: Compression,
    /// Chunks compressed in parallel
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
    /// Uncompressed bytes per chunk
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Checkpoint at the start: fast (immediate) or spread
    #[arg(long, value_enum, default_value_t = CheckpointArg::Fast)]
    pub checkpoint: CheckpointArg,
    /// Checksum algorithm of PostgreSQL's backup_manifest
    #[arg(long, value_enum, default_value_t = ManifestChecksumsArg::Crc32c)]
    pub manifest_checksums: ManifestChecksumsArg,
    /// Server-side rate limit, e.g. 100MiB (per second)
    #[arg(long, value_parser = parse_size)]
    pub max_rate: Option<u64>,
    /// Compress on the server before sending (PostgreSQL 15+): zstd or zstd:LEVEL
    #[arg(long)]
    pub server_compress: Option<String>,
    /// A name recorded in the manifest
    #[arg(long)]
    pub name: Option<String>,
    /// Where the backup's WAL comes from: stream (a temporary slot, default) or
    /// archive (wait for `wal stream` / archive_command to deliver it)
    #[arg(long, value_enum, default_value_t = WalSourceArg::Stream)]
    pub wal: WalSourceArg,
    /// With --wal archive: how long to wait for the WAL
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub wal_wait: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Server to stream from (replication connection)
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Physical replication slot to stream through
    #[arg(long, default_value = "pgtide")]
    pub slot: String,
    /// Create the slot if it does not exist
    #[arg(long)]
    pub create_slot: bool,
    /// Compression of stored segments
    #[arg(long, default_value = "zstd:1")]
    pub compress: Compression,
    /// Upload the tail of the current segment this often (0 disables)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub partial_interval: std::time::Duration,
    /// Send standby status updates at least this often
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub status_interval: std::time::Duration,
    /// Exit once WAL up to this LSN is archived
    #[arg(long)]
    pub stop_at: Option<crate::pg::lsn::Lsn>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Dump or backup id, or `latest`
    pub id: String,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Parallel COPY workers and pg_restore -j for indexes and constraints
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
    /// Create the database named by --db first (it must not exist)
    #[arg(long)]
    pub create: bool,
    /// Replace what is there: drop the dump's objects first (with --data-only: empty the tables)
    #[arg(long)]
    pub clean: bool,
    /// Only the schema
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Only the data, into existing tables
    #[arg(long)]
    pub data_only: bool,
    #[command(flatten)]
    pub filter: TableFilter,
    /// Check the dump and the target and say what would be done, changing nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not restore ownership (objects belong to the restoring user)
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE)
    #[arg(long)]
    pub no_privileges: bool,
    /// Put every object in the target's default tablespace (tablespaces the target lacks are always skipped, with a warning)
    #[arg(long)]
    pub no_tablespaces: bool,
    /// Build the indexes and keys of each table holding at least this much
    /// data as soon as it is loaded, while other tables still load (smaller
    /// tables get theirs in the final post-data pass) [default: 32MiB]
    #[arg(long, value_parser = parse_size)]
    pub early_index_size: Option<u64>,
    /// pg_dump whose pg_restore to use (binary or its directory) [default: the newest found]
    #[arg(long, env = "PGTIDE_PG_DUMP")]
    pub pg_dump: Option<PathBuf>,
    /// Restore a physical backup into this data directory (point-in-time restore)
    #[arg(long, help_heading = "Physical restore")]
    pub pgdata: Option<PathBuf>,
    /// Recover to this time (with a UTC offset, e.g. '2026-11-20 14:03:00+00')
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_time: Option<String>,
    /// Recover to this LSN
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_lsn: Option<crate::pg::lsn::Lsn>,
    /// Recover to this transaction id
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_immediate: bool,
    /// What the server does at the target [default: promote]
    #[arg(long, help_heading = "Physical restore", value_enum)]
    pub target_action: Option<TargetActionArg>,
    /// Timeline to recover along: latest, current or a number [default: latest]
    #[arg(long, help_heading = "Physical restore")]
    pub target_timeline: Option<String>,
    /// Stop just before the target instead of just after it
    #[arg(long, help_heading = "Physical restore")]
    pub target_exclusive: bool,
    /// Replace the contents of a non-empty data or tablespace directory
    #[arg(long, help_heading = "Physical restore")]
    pub force: bool,
    /// Put tablespace OID (or original path) at DIR: OID=DIR; repeatable
    #[arg(long, help_heading = "Physical restore", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Start the server and wait until recovery ends
    #[arg(long, help_heading = "Physical restore")]
    pub start: bool,
    /// Directory of pg_ctl for --start [default: found by the backup's major version]
    #[arg(long, help_heading = "Physical restore")]
    pub pg_bin: Option<PathBuf>,
    /// When run as root: the OS user that owns the files and runs the server
    #[arg(long, help_heading = "Physical restore")]
    pub os_user: Option<String>,
    /// A server setting for the restored cluster, e.g. port=5433; repeatable
    #[arg(
        long = "set",
        help_heading = "Physical restore",
        value_name = "NAME=VALUE"
    )]
    pub settings: Vec<String>,
}

/// The repository's writer lock for a job run from the shell (a running
/// daemon holds it for its own jobs): exit 9 naming the holder when taken.
async fn writer_lock(
    repo: &Repository,
    purpose: &str,
) -> Result<crate::repo::lock::RepoLock, CliError> {
    Ok(crate::repo::lock::RepoLock::acquire(repo, purpose, Default::default()).await?)
}

async fn release(lock: crate::repo::lock::RepoLock) {
    if let Err(e) = lock.release().await {
        // Handled here: a lock left behind is taken over by the next writer.
        tracing::warn!("could not release the repository lock: {e}");
    }
}

fn conninfo(db: &DbArg) -> Result<ConnInfo, CliError> {
    ConnInfo::from_cli(db.db.as_deref()).map_err(|e| CliError::new(exit::USAGE, e.to_string()))
}

fn check_jobs(jobs: usize) -> Result<usize, CliError> {
    if jobs == 0 || jobs > 256 {
        return Err(CliError::new(
            exit::USAGE,
            "--jobs must be between 1 and 256",
        ));
    }
    Ok(jobs)
}

/// A token cancelled by the first SIGINT or SIGTERM, for jobs that clean up
/// after themselves when stopped.
fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    token
}

/// Run a job until it ends or the process is told to stop.
async fn interruptible<T>(
    fut: impl std::future::Future<Output = Result<T, jobs::JobError>>,
) -> Result<T, jobs::JobError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| jobs::JobError::Io {
            context: "install a signal handler".into(),
            source: e,
        })?;
        tokio::select! {
            r = fut => r,
            _ = tokio::signal::ctrl_c() => Err(jobs::JobError::Interrupted),
            _ = term.recv() => Err(jobs::JobError::Interrupted),
        }
    }
    #[cfg(not(unix))]
    {
        fut.await
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let json = cli.json;
    match cli.command {
        Command::Dump(a) => {
            let (tables, exclude_tables) = a.filter.patterns()?;
            let chunk_size = usize::try_from(a.chunk_size)
                .ok()
                .filter(|c| (64 << 10..=256 << 20).contains(c))
                .ok_or_else(|| {
                    CliError::new(exit::USAGE, "--chunk-size must be between 64KiB and 256MiB")
                })?;
            let s = dump::DumpSettings {
                conn: conninfo(&a.db)?,
                jobs: check_jobs(a.jobs)?,
                pipeline: PipelineConfig {
                    chunk_size,
                    compression: a.compress,
                    ..PipelineConfig::default()
                },
                schema_only: a.schema_only,
                data_only: a.data_only,
                tables,
                exclude_tables,
                name: a.name,
                description: a.description,
                split_size: a.split_size,
                split_by: a.split_by.into(),
                pg_dump: a.pg_dump,
                lock_timeout: a.lock_wait_timeout,
                copy_format: a.copy_format.into(),
            };
            let repo = Repository::open(&a.repo.url(), true).await?;
            let lock = writer_lock(&repo, "dump").await?;
            let progress = Arc::new(Progress::default());
            let _display = ProgressDisplay::start(progress.clone(), !json, "tables");
            let r = dump::run(&repo, &s, progress, cancel_on_signal()).await;
            release(lock).await;
            let r = r?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "dump {} of {}: {} tables, {} rows, {} sequences, {} large objects\n  {} in, {} stored, {:.1} s, {:.1} MB/s\n  repository {}",
                    r.id,
                    r.database,
                    r.tables,
                    r.rows,
                    r.sequences,
                    r.large_objects,
                    human_bytes(r.bytes_in),
                    human_bytes(r.bytes_stored),
                    r.seconds,
                    r.mb_per_second,
                    repo.location()
                );
            }
        }
        Command::Backup(a) => {
            let s = backup::BackupSettings {
                conn: conninfo(&a.db)?,
                pipeline: PipelineConfig {
                    chunk_size: usize::try_from(a.chunk_size)
                        .ok()
                        .filter(|c| (64 << 10..=256 << 20).contains(c))
                        .ok_or_else(|| {
                            CliError::new(
                                exit::USAGE,
                                "--chunk-size must be between 64KiB and 256MiB",
                            )
                        })?,
                    compression: a.compress,
                    in_flight: check_jobs(a.jobs)?,
                    ..PipelineConfig::default()
                },
                fast_checkpoint: a.checkpoint == CheckpointArg::Fast,
                manifest_checksums: a.manifest_checksums.as_str().to_string(),
                max_rate_kbps: a.max_rate.map(|r| (r / 1024).clamp(32, 1_048_576) as u32),
                server_compression: match a.server_compress {
                    None => None,
                    Some(c)
                        if c == "zstd"
                            || c.strip_prefix("zstd:")
                                .is_some_and(|l| l.parse::<u8>().is_ok()) =>
                    {
                        Some(c)
                    }
                    Some(c) => {
                        return Err(CliError::new(
                            exit::USAGE,
                            format!("--server-compress {c:?}: use zstd or zstd:LEVEL"),
                        ))
                    }
                },
                name: a.name,
                wal: a.wal.into(),
                wal_wait: a.wal_wait,
            };
            let repo = Repository::open(&a.repo.url(), true).await?;
            let lock = writer_lock(&repo, "backup").await?;
            let progress = Arc::new(Progress::default());
            let _display = ProgressDisplay::start(progress.clone(), !json, "files");
            let r = backup::run(&repo, &s, progress, cancel_on_signal()).await;
            release(lock).await;
            let r = r?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "backup {} of system {}: timeline {}, {} to {}, WAL {}..{}\n  {} files, {} in, {} stored, {:.1} s, {:.1} MB/s",
                    r.id,
                    r.system_identifier,
                    r.timeline,
                    r.start_lsn,
                    r.end_lsn,
                    r.wal_start,
                    r.wal_end,
                    r.files,
                    human_bytes(r.bytes_in),
                    human_bytes(r.bytes_stored),
                    r.seconds,
                    r.mb_per_second
                );
            }
        }
        Command::Restore(a) if a.pgdata.is_some() => {
            check_restore_flags(&a)?;
            return restore_physical(a, json).await;
        }
        Command::Restore(a) => {
            check_restore_flags(&a)?;
            let (tables, exclude_tables) = a.filter.patterns()?;
            let s = restore::RestoreSettings {
                conn: conninfo(&a.db)?,
                jobs: check_jobs(a.jobs)?,
                create: a.create,
                clean: a.clean,
                schema_only: a.schema_only,
                data_only: a.data_only,
                tables,
                exclude_tables,
                dry_run: a.dry_run,
                no_owner: a.no_owner,
                no_privileges: a.no_privileges,
                no_tablespaces: a.no_tablespaces,
                early_index_size: a.early_index_size.unwrap_or(32 << 20),
                pg_dump: a.pg_dump,
                prefetch: 4,
            };
            let repo = Repository::open(&a.repo.url(), false).await?;
            let id = repo.resolve_dump(&a.id).await?;
            let progress = Arc::new(Progress::default());
            let _display = ProgressDisplay::start(progress.clone(), !json, "tables");
            let r = interruptible(restore::run(&repo, &id, &s, progress)).await?;
            if json {
                print_json(&r);
            } else if r.dry_run {
                println!("restore of dump {} into {} would:", r.id, r.database);
                for step in &r.plan {
                    println!("  - {}", step.summary);
                    // The tables of a load, the entries of a pg_restore
                    // run: what the step touches.
                    if step.kind != "create-database" && step.kind != "database-properties" {
                        for o in &step.objects {
                            println!("      {o}");
                        }
                    }
                }
                println!("dump and target checked: nothing was changed");
            } else {
                println!(
                    "restored dump {} into {}: {} tables, {} rows, {} sequences, {} large objects\n  {}, {:.1} s, {:.1} MB/s",
                    r.id,
                    r.database,
                    r.tables,
                    r.rows,
                    r.sequences,
                    r.large_objects,
                    human_bytes(r.bytes),
                    r.seconds,
                    r.mb_per_second
                );
            }
        }
        Command::List(a) => {
            let repo = Repository::open(&a.repo.url(), false).await?;
            let l = jobs::inspect::list(&repo).await?;
            if json {
                print_json(&l);
            } else {
                print_listing(&l);
            }
        }
        Command::Info(a) => {
            let repo = Repository::open(&a.repo.url(), false).await?;
            let m = jobs::inspect::info(&repo, &a.id).await?;
            match (&m.set, json) {
                (_, true) => print_json(&m),
                (jobs::inspect::Info::Dump(d), false) => print_info(d),
                (jobs::inspect::Info::Backup(b), false) => print_backup_info(b),
            }
            if !json {
                drill::print_history(&m.drill);
            }
        }
        Command::Verify(a) => {
            let repo = Repository::open(&a.repo.url(), false).await?;
            let id = repo.resolve_any(&a.id).await?;
            let progress = Arc::new(Progress::default());
            let display = ProgressDisplay::start(progress.clone(), !json, "streams");
            let r = interruptible(verify::run(&repo, &id, check_jobs(a.jobs)?, progress)).await?;
            drop(display);
            if json {
                print_json(&r);
            } else if r.ok {
                println!(
                    "{} {} is intact: {} packs, {} chunks, {} stored, {} of data checked in {:.1} s",
                    crate::repo::SetKind::of_id(&r.id).map_or("dump", |k| k.noun()),
                    r.id,
                    r.packs,
                    r.chunks,
                    human_bytes(r.bytes_stored),
                    human_bytes(r.bytes_raw),
                    r.seconds
                );
            }
            if !r.ok {
                for p in &r.problems {
                    eprintln!("damaged: {p}");
                }
                return Err(CliError::new(
                    exit::DAMAGED,
                    format!(
                        "{} {} is damaged: {} problems found",
                        crate::repo::SetKind::of_id(&r.id).map_or("dump", |k| k.noun()),
                        r.id,
                        r.problems.len()
                    ),
                ));
            }
        }
        Command::Delete(DeleteArgs {
            wal_before: Some(before),
            repo,
            ..
        }) => {
            let repo = Repository::open(&repo.url(), false).await?;
            let r = jobs::inspect::delete_wal_before(&repo, &before).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "deleted {} WAL objects before {} ({} freed)",
                    r.objects,
                    r.kept_from,
                    human_bytes(r.bytes_freed)
                );
            }
        }
        Command::Delete(a) => {
            let repo = Repository::open(&a.repo.url(), false).await?;
            let id = a.id.unwrap_or_default();
            let r = jobs::inspect::delete(&repo, &id).await?;
            if json {
                print_json(&r);
            } else {
                for f in r.finished_deletions.iter().filter(|f| f.id != r.id) {
                    println!("finished the interrupted deletion of {}", f.id);
                }
                println!(
                    "deleted {} {} ({} freed)",
                    crate::repo::SetKind::of_id(&r.id).map_or("dump", |k| k.noun()),
                    r.id,
                    human_bytes(r.bytes_freed)
                );
            }
        }
        Command::Expire(a) => return expire::run(a, json).await,
        Command::Wal(w) => return run_wal(w, json).await,
        Command::Daemon(a) => return service::run_daemon(a, cli.log_format).await,
        Command::Status(a) => return service::run_status(a, json).await,
        Command::Drill(a) => return drill::run(a, json).await,
    }
    Ok(())
}

async fn run_wal(cmd: WalCommand, json: bool) -> Result<(), CliError> {
    use crate::jobs::wal::{fetch, push};
    match cmd {
        WalCommand::Push {
            path,
            repo,
            compress,
        } => {
            let repo = Repository::open(&repo.url(), true).await?;
            let r = push::push(&repo, &path, compress).await?;
            if json {
                print_json(&r);
            }
            tracing::info!(name = %r.name, outcome = r.outcome, "wal push");
        }
        WalCommand::Fetch {
            name,
            dest,
            repo,
            spool,
            prefetch,
        } => {
            // Anything but "not in the archive" must stop recovery rather
            // than end it early: exit codes above 125 do that.
            let abort = |e: CliError| CliError::new(exit::RECOVERY_ABORT, e.message);
            let url = repo.url();
            let repo = Repository::open(&url, false)
                .await
                .map_err(|e| abort(e.into()))?;
            let spool = spool.or_else(fetch::default_spool);
            match fetch::fetch(&repo, &name, &dest, spool.as_deref())
                .await
                .map_err(|e| abort(e.into()))?
            {
                fetch::Fetched::NotFound => return Err(CliError::new(exit::FAILURE, "")),
                fetch::Fetched::Served { .. } => {
                    if let (Some(spool), true) = (spool, prefetch > 0) {
                        if name.len() == 24 {
                            fetch::spawn_prefetcher(&url, &name, &spool, prefetch);
                        }
                    }
                }
            }
        }
        WalCommand::Stream(a) => {
            let s = crate::jobs::wal::stream::StreamSettings {
                conn: conninfo(&a.db)?,
                slot: a.slot,
                create_slot: a.create_slot,
                compression: a.compress,
                partial_interval: a.partial_interval,
                status_interval: a.status_interval.max(std::time::Duration::from_millis(100)),
                stop_at: a.stop_at,
                live: None,
                accept_gap: false,
            };
            let repo = Repository::open(&a.repo.url(), true).await?;
            let r = crate::jobs::wal::stream::run(&repo, &s, cancel_on_signal()).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "wal stream stopped: {} segments and {} partials archived, {} reconnects, flushed to {} on timeline {}",
                    r.segments, r.partials, r.reconnects, r.flushed, r.timeline
                );
            }
        }
        WalCommand::Prefetch {
            name,
            repo,
            spool,
            count,
        } => {
            let repo = Repository::open(&repo.url(), false).await?;
            fetch::prefetch(&repo, &name, &spool, count).await?;
        }
    }
    Ok(())
}

/// `restore` serves a dump (into --db) and a backup (into --pgdata): a flag
/// of the other kind would be silently ignored, and a point-in-time target
/// without --pgdata would restore the latest dump instead. Refuse both.
fn check_restore_flags(a: &RestoreArgs) -> Result<(), CliError> {
    let physical = [
        ("--target-time", a.target_time.is_some()),
        ("--target-lsn", a.target_lsn.is_some()),
        ("--target-xid", a.target_xid.is_some()),
        ("--target-name", a.target_name.is_some()),
        ("--target-immediate", a.target_immediate),
        ("--target-action", a.target_action.is_some()),
        ("--target-timeline", a.target_timeline.is_some()),
        ("--target-exclusive", a.target_exclusive),
        ("--force", a.force),
        ("--tablespace-map", !a.tablespace_map.is_empty()),
        ("--start", a.start),
        ("--pg-bin", a.pg_bin.is_some()),
        ("--os-user", a.os_user.is_some()),
        ("--set", !a.settings.is_empty()),
    ];
    let logical = [
        ("--create", a.create),
        ("--clean", a.clean),
        ("--schema-only", a.schema_only),
        ("--data-only", a.data_only),
        ("--table", !a.filter.tables.is_empty()),
        ("--exclude-table", !a.filter.exclude_tables.is_empty()),
        ("--dry-run", a.dry_run),
        ("--no-owner", a.no_owner),
        ("--no-privileges", a.no_privileges),
        ("--no-tablespaces", a.no_tablespaces),
        ("--early-index-size", a.early_index_size.is_some()),
        ("--db", a.db.db.is_some()),
    ];
    let first =
        |flags: &[(&'static str, bool)]| flags.iter().find(|(_, set)| *set).map(|(f, _)| *f);
    match (&a.pgdata, first(&physical), first(&logical)) {
        (None, Some(flag), _) => Err(CliError::new(
            exit::USAGE,
            format!("{flag} applies to restoring a physical backup: add --pgdata DIR (without it, restore loads a dump into --db)"),
        )),
        (Some(_), _, Some(flag)) => Err(CliError::new(
            exit::USAGE,
            format!("{flag} applies to restoring a dump into --db, not to a physical restore into --pgdata"),
        )),
        _ => Ok(()),
    }
}

async fn restore_physical(a: RestoreArgs, json: bool) -> Result<(), CliError> {
    use crate::jobs::pitr::request;
    let req = request::Request {
        backup: a.id.clone(),
        pgdata: a.pgdata.clone().expect("checked by the caller"),
        target: request::TargetFlags {
            time: a.target_time.clone(),
            lsn: a.target_lsn,
            xid: a.target_xid.clone(),
            name: a.target_name.clone(),
            immediate: a.target_immediate,
        },
        action: a.target_action.map(|t| t.as_str().to_string()),
        timeline: a.target_timeline.clone(),
        exclusive: a.target_exclusive,
        force: a.force,
        jobs: check_jobs(a.jobs)?,
        tablespace_map: a.tablespace_map.clone(),
        start: a.start,
        pg_bin: a.pg_bin.clone(),
        os_user: a.os_user.clone(),
        repo_url: a.repo.url(),
        settings: a.settings.clone(),
    };
    // Bad flags are refused before the repository is opened.
    let s = request::settings(&req)?;
    let repo = Repository::open(&req.repo_url, false).await?;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), !json, "files");
    let r = interruptible(request::run(&repo, &req.backup, &s, progress)).await?;
    drop(display);
    if json {
        print_json(&r);
    } else {
        println!(
            "restored backup {} into {}: {} files, {}, {:.1} s",
            r.backup,
            r.pgdata,
            r.files,
            human_bytes(r.bytes),
            r.seconds
        );
        match &r.recovery {
            Some(summary) => println!(
                "recovery ended{}: {}",
                r.timeline
                    .map(|t| format!(" on timeline {t}"))
                    .unwrap_or_default(),
                if summary.is_empty() {
                    "see pgtide-recovery.log"
                } else {
                    summary
                }
            ),
            None => println!(
                "start the server to recover (recovery.signal and restore_command are in place)"
            ),
        }
    }
    Ok(())
}

fn print_backup_info(m: &crate::repo::manifest::BackupManifest) {
    println!("backup      {}", m.id);
    if let Some(n) = &m.name {
        println!("name        {n}");
    }
    println!(
        "system      {} (PostgreSQL {})",
        m.system_identifier, m.server_version
    );
    println!("label       {}", m.label);
    println!("started     {}", m.started_at.to_rfc3339());
    println!(
        "finished    {} ({:.1} s)",
        m.finished_at.to_rfc3339(),
        m.stats.seconds
    );
    println!("timeline    {} (ends on {})", m.timeline, m.end_timeline);
    println!("lsn         {} to {}", m.start_lsn, m.end_lsn);
    println!("wal needed  {} .. {}", m.wal_start, m.wal_end);
    println!(
        "storage     {} packs, {} stored, {} of data, {}",
        m.packs.len(),
        human_bytes(m.stats.stored_bytes),
        human_bytes(m.stats.raw_bytes),
        m.compression
    );
    println!("files       {}", m.stats.tables);
    for t in &m.tablespaces {
        println!("tablespace  {} at {}", t.oid, t.location);
    }
}

fn print_listing(l: &jobs::inspect::Listing) {
    if l.dumps.is_empty() {
        println!("no dumps in {}", l.repository);
    } else {
        println!(
            "{:<20} {:<16} {:<10} {:>7} {:>12} {:>10} {:>10}  NAME",
            "ID", "DATABASE", "SERVER", "TABLES", "ROWS", "DATA", "STORED"
        );
        for d in &l.dumps {
            let mut name = d.name.clone().unwrap_or_default();
            if d.schema_only {
                name.push_str(" (schema only)");
            }
            if d.data_only {
                name.push_str(" (data only)");
            }
            println!(
                "{:<20} {:<16} {:<10} {:>7} {:>12} {:>10} {:>10}  {}",
                d.id,
                d.database,
                d.server_version.split_whitespace().next().unwrap_or(""),
                d.tables,
                d.rows,
                human_bytes(d.bytes_raw),
                human_bytes(d.bytes_stored),
                name.trim()
            );
        }
    }
    if !l.backups.is_empty() {
        println!();
        println!(
            "{:<20} {:<8} {:>4} {:>14} {:>14} {:>10} {:>10}  NAME",
            "BACKUP", "SERVER", "TLI", "START LSN", "END LSN", "DATA", "STORED"
        );
        for b in &l.backups {
            println!(
                "{:<20} {:<8} {:>4} {:>14} {:>14} {:>10} {:>10}  {}",
                b.id,
                b.server_version,
                b.timeline,
                b.start_lsn.to_string(),
                b.end_lsn.to_string(),
                human_bytes(b.bytes_raw),
                human_bytes(b.bytes_stored),
                b.name.clone().unwrap_or_default()
            );
        }
    }
    drill::print_proven(l);
    for w in &l.wal {
        println!(
            "wal timeline {}: {} segments, {} .. {}{}",
            w.timeline,
            w.segments,
            w.first,
            w.last,
            if w.gaps.is_empty() {
                String::new()
            } else {
                format!(", {} missing (first {})", w.gaps.len(), w.gaps[0])
            }
        );
    }
    for i in &l.deleting {
        println!(
            "being deleted: {} ({} objects, {} left): an interrupted deletion, never restorable (the next pgtide expire or delete finishes it)",
            i.id,
            i.objects,
            human_bytes(i.bytes)
        );
    }
    for i in &l.incomplete {
        println!(
            "incomplete: {} ({} objects, {}) has no manifest: running now, or failed (pgtide delete {} removes it)",
            i.id,
            i.objects,
            human_bytes(i.bytes),
            i.id
        );
    }
}

fn print_info(m: &crate::repo::manifest::DumpManifest) {
    println!("dump        {}", m.id);
    if let Some(n) = &m.name {
        println!("name        {n}");
    }
    if let Some(d) = &m.description {
        println!("description {d}");
    }
    println!(
        "source      {} on PostgreSQL {} ({})",
        m.source.database, m.source.server_version, m.source.connection
    );
    println!(
        "encoding    {} (collate {}, ctype {})",
        m.source.encoding, m.source.collate, m.source.ctype
    );
    println!("started     {}", m.started_at.to_rfc3339());
    println!(
        "finished    {} ({:.1} s)",
        m.finished_at.to_rfc3339(),
        m.stats.seconds
    );
    println!("snapshot    {}", m.source.snapshot);
    println!(
        "storage     {} packs, {} stored, {} of data, {}, chunks of {}",
        m.packs.len(),
        human_bytes(m.stats.stored_bytes),
        human_bytes(m.stats.raw_bytes),
        m.compression,
        human_bytes(m.options.chunk_size)
    );
    if let Some(s) = &m.schema {
        println!(
            "schema      {} ({} chunks, {})",
            s.pg_dump_version,
            s.stream.chunks.len(),
            human_bytes(s.stream.raw_bytes)
        );
    }
    println!(
        "contents    {} tables, {} rows, {} sequences, {} large objects, {} materialized views to refresh",
        m.tables.len(),
        m.stats.rows,
        m.sequences.len(),
        m.large_objects.items.len(),
        m.matviews.len()
    );
    if !m.tables.is_empty() {
        println!();
        println!(
            "{:<40} {:>12} {:>10} {:>10} {:>6} {:>7}",
            "TABLE", "ROWS", "DATA", "STORED", "PARTS", "CHUNKS"
        );
        for t in &m.tables {
            println!(
                "{:<40} {:>12} {:>10} {:>10} {:>6} {:>7}",
                t.qualified(),
                t.rows(),
                human_bytes(t.raw_bytes()),
                human_bytes(t.stored_bytes()),
                t.parts.len(),
                t.parts.iter().map(|p| p.stream.chunks.len()).sum::<usize>()
            );
        }
    }
}

impl Cli {
    /// The log format: `--log-format`/`PGTIDE_LOG_FORMAT`, else (for the
    /// daemon) the config file's `[log] format`, else text.
    pub fn log_format(&self) -> String {
        if let Some(f) = &self.log_format {
            return f.clone();
        }
        if let Command::Daemon(a) = &self.command {
            if let Some(f) = a.config.as_deref().and_then(config_log_format) {
                return f;
            }
        }
        "text".into()
    }

    /// The daemon logs its runs at info level unless told otherwise.
    pub fn log_level(&self) -> u8 {
        match self.command {
            Command::Daemon(_) => self.verbose.max(1),
            _ => self.verbose,
        }
    }
}

/// `[log] format` of a config file, read before anything else so that the
/// daemon's first lines already have the right format. Errors are left to
/// the full load that follows.
fn config_log_format(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table
        .get("log")?
        .get("format")?
        .as_str()
        .map(str::to_string)
}

/// Logs go to stderr; `-v` raises the level, `RUST_LOG` overrides it;
/// `json` writes one JSON object per line.
pub fn init_tracing(verbose: u8, format: &str) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("pgtide={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if format == "json" {
        builder.json().with_current_span(true).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
