//! The command line: the clap command tree, one function per command, and
//! error → exit code mapping (`exit.rs`). Nothing else lives here.

mod args;
pub mod bench;
pub mod drill;
pub mod exit;
pub mod expire;
pub mod init;
mod keys;
mod logging;
pub mod output;
mod print;
mod restore_physical;
mod restore_tables;
pub mod service;
pub mod settings;
mod wal;

pub use logging::init_tracing;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::jobs::{self, backup, dump, logical_restore, verify, Progress};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pattern::NamePattern;
use crate::pipeline::{Compression, PipelineConfig};
use crate::repo::Repository;
pub use args::*;
use exit::CliError;
use output::{print_json, ProgressDisplay};
use settings::{
    default_jobs, default_repo, human_bytes, parse_application_name, parse_duration, parse_size,
    CheckpointArg, CopyFormatArg, ManifestChecksumsArg, SplitByArg, TargetActionArg, WalSourceArg,
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
    /// Repository: a path, file:///path, s3://bucket/prefix?endpoint=URL&region=R&path_style=true,
    /// az://container/prefix?account=NAME or gs://bucket/prefix
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
    /// Restore a dump into a database, a backup into a data directory (--pgdata) to a point in time, or tables or a database of a backup into a live database (--table / --database with --db)
    Restore(RestoreArgs),
    /// List the dumps, backups and archived WAL of a repository
    List(RepoOnly),
    /// Show a dump or backup in detail: tables or files, bytes, LSNs, timings
    Info(IdArgs),
    /// Read every object of a dump or backup back and check every checksum (backups: their WAL too)
    Verify(VerifyArgs),
    /// Delete a dump or backup, or the archived WAL older than a backup
    Delete(DeleteArgs),
    /// Copy complete backups and dumps (and the WAL backups need) into another repository, checked, resumable
    Copy(CopyArgs),
    /// Apply retention: remove the backups, dumps and WAL no --keep-* rule keeps (--dry-run says why)
    Expire(expire::ExpireArgs),
    /// WAL archiving: stream (replication slot), push (archive_command), fetch (restore_command)
    #[command(subcommand)]
    Wal(WalCommand),
    /// Run the service: continuous WAL archiving, scheduled backups and dumps, retention, HTTP status and metrics
    Daemon(service::DaemonArgs),
    /// Show the daemon's state (or, when none answers, what the repository records)
    Status(service::StatusArgs),
    /// Measure pgtide's dump, restore, backup, physical restore and WAL streaming against pg_dump, pg_restore, pg_basebackup, pgBackRest and pg_receivewal on the same data
    Bench(bench::BenchArgs),
    /// Prove a backup or dump restores: restore it into a scratch directory with a private server, check it, remove it
    Drill(drill::DrillArgs),
    /// Create a repository: plain, or encrypted for age recipients (--recipient) or a passphrase; with --object-lock, every object kept is retained (S3 Object Lock, Azure immutability, GCS object retention)
    Init(keys::InitArgs),
    /// Encryption keys: generate an identity; list, add or remove a repository's keys
    #[command(subcommand)]
    Key(keys::KeyCommand),
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
        #[command(flatten)]
        secrets: keys::SecretArgs,
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
        #[command(flatten)]
        secrets: keys::SecretArgs,
        #[arg(long)]
        spool: PathBuf,
        #[arg(long, default_value_t = 8)]
        count: u64,
    },
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

/// A token cancelled by the first SIGINT or SIGTERM: how every job is told
/// to stop (it cleans up after itself and returns `Interrupted`, exit 130).
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
            restore_physical::check_flags(&a)?;
            return restore_physical::run(a, json).await;
        }
        Command::Restore(a) if restore_tables::wanted(&a) => {
            return restore_tables::run(a, json).await;
        }
        Command::Restore(a) => {
            restore_physical::check_flags(&a)?;
            let (tables, exclude_tables) = a.filter.patterns()?;
            let s = logical_restore::RestoreSettings {
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
            let repo = keys::open_for_reading(&a.repo.url(), &a.secrets).await?;
            let id = repo.resolve_dump(&a.id).await?;
            let progress = Arc::new(Progress::default());
            let _display = ProgressDisplay::start(progress.clone(), !json, "tables");
            let r = logical_restore::run(&repo, &id, &s, progress, cancel_on_signal()).await?;
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
                print::listing(&l);
            }
        }
        Command::Info(a) => {
            let repo = Repository::open(&a.repo.url(), false).await?;
            let m = jobs::inspect::info(&repo, &a.id).await?;
            match (&m.set, json) {
                (_, true) => print_json(&m),
                (jobs::inspect::Info::Dump(d), false) => print::dump_info(d),
                (jobs::inspect::Info::Backup(b), false) => print::backup_info(b),
            }
            if !json {
                drill::print_history(&m.drill);
            }
        }
        Command::Verify(a) => {
            let repo = keys::open_for_reading(&a.repo.url(), &a.secrets).await?;
            let id = repo.resolve_any(&a.id).await?;
            let progress = Arc::new(Progress::default());
            let display = ProgressDisplay::start(progress.clone(), !json, "streams");
            let readers = check_jobs(a.jobs)?;
            let r = verify::run(&repo, &id, readers, progress, cancel_on_signal()).await?;
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
                if let Some(until) = r.retained_until {
                    println!(
                        "{} more WAL objects ({}) are under Object Lock retention: the last of them can be deleted from {}",
                        r.retained_objects,
                        human_bytes(r.retained_bytes),
                        until.format("%Y-%m-%dT%H:%M:%SZ")
                    );
                }
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
            }
            if let Some(until) = r.locked_until {
                let e = crate::repo::RepoError::Retained {
                    kind: crate::repo::SetKind::of_id(&r.id).map_or("dump", |k| k.noun()),
                    id: r.id.clone(),
                    until,
                };
                return Err(e.into());
            }
            if !json {
                println!(
                    "deleted {} {} ({} freed)",
                    crate::repo::SetKind::of_id(&r.id).map_or("dump", |k| k.noun()),
                    r.id,
                    human_bytes(r.bytes_freed)
                );
            }
        }
        Command::Copy(a) => {
            let from = Repository::open(&a.from, false).await?;
            let target = crate::storage::open(&a.to)
                .await
                .map_err(crate::repo::RepoError::from)?;
            let to = Repository::open_copy_target(target, &from).await?;
            let selection = jobs::copy::Selection::parse(&a.what);
            let jobs_n = check_jobs(a.jobs)?;
            let guard = writer_lock(&to, "copy").await?;
            let progress = Arc::new(Progress::default());
            let display = ProgressDisplay::start(progress.clone(), !json, "bytes");
            let r = jobs::copy::run(
                &from,
                &to,
                &selection,
                false,
                jobs_n,
                progress,
                cancel_on_signal(),
            )
            .await;
            drop(display);
            release(guard).await;
            let r = r?;
            if json {
                print_json(&r);
            } else {
                print::copy_report(&r);
            }
        }
        Command::Expire(a) => return expire::run(a, json).await,
        Command::Wal(w) => return wal::run(w, json).await,
        Command::Daemon(a) => return service::run_daemon(a, cli.log_format).await,
        Command::Status(a) => return service::run_status(a, json).await,
        Command::Drill(a) => return drill::run(a, json).await,
        Command::Bench(a) => return bench::run(a, json).await,
        Command::Init(a) => return keys::run_init(a, json).await,
        Command::Key(k) => return keys::run_key(k, json).await,
    }
    Ok(())
}
