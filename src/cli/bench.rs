//! `pgtide bench`: flags to settings, a progress bar while it runs, and the
//! report as a terminal table, `--json` or `--markdown`.
//!
//! # `--json` output
//!
//! One object, `BenchReport` (src/jobs/bench/report.rs). The list below is
//! read by the integration test `tests/it/bench.rs`, which checks that the
//! JSON has every field: one line per object, `- NAME: {FIELD, …}`; a field
//! with its own line (`NAME.FIELD`) is an object, or with `[]` an array of
//! such objects. Sizes are bytes, durations and CPU seconds. Figures a step
//! cannot have are `null`.
//!
//! - `bench`: {pgtide_version, pgtide_build, command, started_at, seconds, machine, server, tools[], database, settings, steps[], skipped[], targets[]}
//!   (`pgtide_build`: `release` or `debug`; `command`: the command line that reproduces the run; `seconds`: the whole run, generation included)
//! - `bench.machine`: {cores, cpu_model, memory_bytes, kernel, os}
//!   (`cores`: the CPUs this process may use)
//! - `bench.server`: {version, local, data_directory, cpu_unavailable}
//!   (`local`: on this machine with a readable data directory, so server CPU is measured; `cpu_unavailable`: why not, else null)
//! - `bench.tools[]`: {name, path, version}
//!   (the peers found: pg_dump, pg_restore, pg_basebackup, pg_receivewal, pgbackrest, tar, zstd; `version`: the first line of `--version`)
//! - `bench.database`: {name, generated_scale, size_bytes, cluster_size_bytes, tables}
//!   (`generated_scale`: the `--generate` SCALE it was made with, null for a database the bench did not make; `cluster_size_bytes`: all databases, what a physical backup reads)
//! - `bench.settings`: {jobs, scale_jobs[], runs, warmup, only[], wal_burst_bytes, page_cache_dropped, repository}
//!   (`scale_jobs`: the `--scale-jobs` worker counts, at which `pgtide dump`, `pg_dump` and `pgtide backup zstd:1` ran too, named with `-jN`; `page_cache_dropped`: each step started with an empty page cache, as root only)
//! - `bench.steps[]`: {name, kind, tool, family, jobs, command, runs[], wall_seconds, client_cpu_seconds, server_cpu_seconds, other_cpu_seconds, peak_rss_bytes, bytes_read, bytes_stored, mb_per_second, requests, ratios[], bound_by, matches_source}
//!   (`kind`: dump, restore, backup, physical-restore or wal; `tool`: pgtide, pg_dump, pg_restore, pg_basebackup, pgbackrest, tar or pg_receivewal; `family`: the step whatever its worker count (`pgtide dump`), `jobs`: its worker count, null for a tool without one; CPU and RSS: medians over the runs, RSS the largest; `client_cpu_seconds`: user + system of the tool and every process it waited for; `server_cpu_seconds`: every PostgreSQL process, from /proc, null when not local; `other_cpu_seconds`: what the rest of the machine used meanwhile; `peak_rss_bytes`: the largest single process of the tool's tree; `bytes_read`: the database's size (dump, restore), the cluster's (backup, physical restore) or the WAL burst's (wal); `bytes_stored`: what it wrote to the repository or its output directory, null for restores; `mb_per_second`: bytes_read / median wall, in 10^6 bytes; `requests`: the job's own `requests` object {put, get, list, head, delete}, null when the tool does not report one; `bound_by`: `client CPU`, `server CPU` (tool and server kept ≥ 80% of the cores busy, the larger named), `client CPU (one core)` or `server CPU (one core)` (one side kept one core ≥ 90% busy), `I/O or waiting`, or null when the figures do not tell; `matches_source`: logical restores only, the restored database holds the source's rows (count and hash of every row, per table), else null)
//! - `bench.steps[].wall_seconds`: {median, min, max}
//! - `bench.steps[].runs[]`: {wall_seconds, client_cpu_seconds, server_cpu_seconds, other_cpu_seconds, peak_rss_bytes}
//!   (every measured run, warm-up excluded)
//! - `bench.steps[].ratios[]`: {peer, ratio}
//!   (pgtide's steps only: median wall time over the peer's)
//! - `bench.targets[]`: {target, measured, met}
//!   (issue 13's targets this run has figures for: pgtide's dump ≤ 0.45 ×, restore ≤ 0.75 ×, backup zstd:1 ≤ 1.0 × and zstd:3 ≤ 0.75 × their peers' wall time at `--jobs`, and peak RSS ≤ 256 MiB in every pgtide step; as text, with `met` true or false)
//! - `bench.skipped[]`: {step, reason}
//!   (steps of the chosen groups that did not run: a peer not installed, pgBackRest without a local data directory, a peer that failed)

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::exit::{self, CliError};
use super::output::print_json;
use super::settings::{default_jobs, parse_size};
use super::{cancel_on_signal, check_jobs, conninfo, DbArg};
use crate::jobs::bench::{self, report, BenchError, BenchSettings, Group};
use crate::jobs::Progress;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server (and, without --generate, the database) to measure
    #[command(flatten)]
    pub db: DbArg,
    /// Repository for pgtide's dumps and backups [default: a scratch one in the work directory]
    #[arg(long)]
    pub repo: Option<String>,
    /// Parallel workers of every tool: pgtide --jobs, pg_dump/pg_restore -j, pgBackRest process-max
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
    /// Also measure pgtide dump, pg_dump and pgtide backup zstd:1 with these worker counts (comma-separated), to show how they scale
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    pub scale_jobs: Vec<usize>,
    /// Create database pgtide_bench with a reproducible data set of this scale (as pgbench: 100,000 accounts rows per unit, plus text, bytea, wide and 200 small tables); dropped and recreated each time
    #[arg(long, value_name = "SCALE", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub generate: Option<u32>,
    /// The steps to measure, comma-separated: dump, restore, backup, physical-restore, wal
    #[arg(long, default_value = "dump,restore,backup,physical-restore,wal")]
    pub only: String,
    /// Measured repetitions of every step, after one warm-up
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// No warm-up run before the measured ones
    #[arg(long)]
    pub no_warmup: bool,
    /// Keep the page cache: by default (as root) it is emptied before every step, for the whole machine
    #[arg(long)]
    pub no_drop_caches: bool,
    /// Measure a database pgtide bench did not create (it loads the server; restores go to scratch databases)
    #[arg(long)]
    pub yes: bool,
    /// WAL written for the wal steps (in a scratch database)
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub wal_burst: u64,
    /// Work directory for the peers' output and scratch restores [default: a new one in $TMPDIR, removed at the end]
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keep the work directory
    #[arg(long)]
    pub keep: bool,
    /// Directory of PostgreSQL's programs, searched before PATH (pgtide's own jobs get it as PGTIDE_PG_DUMP)
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
    /// Print the docs/BENCHMARKS.md section instead of the table
    #[arg(long)]
    pub markdown: bool,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

impl From<BenchError> for CliError {
    fn from(e: BenchError) -> Self {
        let code = match &e {
            BenchError::NotOurs { .. } | BenchError::Usage(_) => exit::USAGE,
            BenchError::Connect(_) => exit::CONNECT,
            BenchError::Sql { .. } => exit::SQL,
            BenchError::Io { .. } | BenchError::StepFailed { .. } => exit::FAILURE,
            BenchError::Interrupted => exit::INTERRUPTED,
        };
        CliError::new(code, e.to_string())
    }
}

/// The command line as typed, quoted where a shell needs it.
fn command_line() -> String {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    bench::display_command("pgtide", &args)
}

/// A bar of steps done, with the step running.
fn progress_bar(
    progress: Arc<Progress>,
    enabled: bool,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} steps, {elapsed}  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            b.set_length(Progress::get(&progress.units_total));
            b.set_position(Progress::get(&progress.units_done));
            b.set_message(progress.phase());
            b.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some((bar, task))
}

pub(super) async fn run(a: BenchArgs, json: bool) -> Result<(), CliError> {
    if json && a.markdown {
        return Err(CliError::new(
            exit::USAGE,
            "--json and --markdown cannot be combined",
        ));
    }
    let only = Group::parse_list(&a.only).map_err(|e| CliError::new(exit::USAGE, e))?;
    if a.runs == 0 || a.runs > 100 {
        return Err(CliError::new(
            exit::USAGE,
            "--runs must be between 1 and 100",
        ));
    }
    let s = BenchSettings {
        conn: conninfo(&a.db)?,
        repo: a.repo,
        jobs: check_jobs(a.jobs)?,
        scale_jobs: a
            .scale_jobs
            .iter()
            .map(|j| check_jobs(*j))
            .collect::<Result<_, _>>()?,
        generate: a.generate,
        only,
        runs: a.runs,
        warmup: !a.no_warmup,
        drop_caches: !a.no_drop_caches,
        yes: a.yes,
        wal_burst: a.wal_burst.max(1 << 20),
        work: a.work,
        keep: a.keep,
        pg_bin: a.pg_bin,
        command_line: command_line(),
    };
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(progress.clone(), !json && !a.markdown);
    let r = bench::run(&s, progress, cancel_on_signal()).await;
    if let Some((bar, task)) = bar {
        task.abort();
        bar.finish_and_clear();
    }
    let r = r?;
    if let Some(path) = &a.save {
        let text = serde_json::to_string_pretty(&r).expect("reports serialize");
        std::fs::write(path, text + "\n").map_err(|e| {
            CliError::new(
                exit::FAILURE,
                format!("write the report to {}: {e}", path.display()),
            )
        })?;
    }
    if json {
        print_json(&r);
    } else if a.markdown {
        print!("{}", report::markdown(&r));
    } else {
        print!("{}", report::terminal(&r));
    }
    // A database that changes while measured differs for that reason; the
    // bench's own data set does not change.
    let own = r.database.generated_scale.is_some();
    if let Some(s) = r
        .steps
        .iter()
        .find(|s| own && s.matches_source == Some(false))
    {
        return Err(CliError::new(
            exit::FAILURE,
            format!(
                "{}: the restored database differs from the source (see the log with -v)",
                s.name
            ),
        ));
    }
    Ok(())
}
