//! The command line: the clap command tree, one function per command, and
//! error → exit code mapping (`exit.rs`). Nothing else lives here.

pub mod exit;
pub mod output;
pub mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::jobs::{self, dump, restore, verify, Progress};
use crate::pg::conninfo::ConnInfo;
use crate::pg::pattern::NamePattern;
use crate::pipeline::{Compression, PipelineConfig};
use crate::repo::Repository;
use exit::CliError;
use output::{print_json, ProgressDisplay};
use settings::{default_jobs, default_repo, human_bytes, parse_duration, parse_size};

#[derive(Debug, Parser)]
#[command(
    name = "pgtide",
    version,
    about = "PostgreSQL backup engine: parallel snapshot-consistent logical dumps and restores through a chunked, compressed, checksummed repository",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print machine-readable JSON on stdout and no progress bars
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Only tables matching this pattern (psql rules: schema.name, * and ?); repeatable
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
    /// Restore a dump into a database
    Restore(RestoreArgs),
    /// List the dumps in a repository
    List(RepoOnly),
    /// Show a dump in detail: tables, rows, bytes, checksums, timings
    Info(IdArgs),
    /// Read every object of a dump back and check every checksum
    Verify(VerifyArgs),
    /// Delete a dump from the repository
    Delete(IdArgs),
    /// WAL archiving: push (archive_command), fetch (restore_command)
    #[command(subcommand)]
    Wal(WalCommand),
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
    /// Dump id (or `latest`)
    pub id: String,
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Dump id (or `latest`)
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
    #[arg(long, default_value = "zstd:3")]
    pub compress: Compression,
    /// Uncompressed bytes per chunk (memory ≈ chunk size × 4 per worker)
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Split tables larger than this into ctid ranges copied in parallel (0: never)
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub split_size: u64,
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
pub struct RestoreArgs {
    /// Dump id or `latest`
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
    /// pg_dump whose pg_restore to use (binary or its directory) [default: the newest found]
    #[arg(long, env = "PGTIDE_PG_DUMP")]
    pub pg_dump: Option<PathBuf>,
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
                pg_dump: a.pg_dump,
                lock_timeout: a.lock_wait_timeout,
            };
            let repo = Repository::open(&a.repo.url(), true).await?;
            let progress = Arc::new(Progress::default());
            let _display = ProgressDisplay::start(progress.clone(), !json, "tables");
            let r = dump::run(&repo, &s, progress, cancel_on_signal()).await?;
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
        Command::Restore(a) => {
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
                for step in &r.steps {
                    println!("  - {step}");
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
            if json {
                print_json(&m);
            } else {
                print_info(&m);
            }
        }
        Command::Verify(a) => {
            let repo = Repository::open(&a.repo.url(), false).await?;
            let id = repo.resolve_dump(&a.id).await?;
            let progress = Arc::new(Progress::default());
            let display = ProgressDisplay::start(progress.clone(), !json, "streams");
            let r = interruptible(verify::run(&repo, &id, check_jobs(a.jobs)?, progress)).await?;
            drop(display);
            if json {
                print_json(&r);
            } else if r.ok {
                println!(
                    "dump {} is intact: {} packs, {} chunks, {} stored, {} of data checked in {:.1} s",
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
                        "dump {} is damaged: {} problems found",
                        r.id,
                        r.problems.len()
                    ),
                ));
            }
        }
        Command::Delete(a) => {
            let repo = Repository::open(&a.repo.url(), false).await?;
            let r = jobs::inspect::delete(&repo, &a.id).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "deleted dump {} ({} freed)",
                    r.id,
                    human_bytes(r.bytes_freed)
                );
            }
        }
        Command::Wal(w) => return run_wal(w, json).await,
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

/// Logs go to stderr; `-v` raises the level, `RUST_LOG` overrides it.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("pgtide={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
