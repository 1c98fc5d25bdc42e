//! `pgtide bench`: flags to settings, a progress bar while it runs, and the
//! report as a terminal table, `--json` or `--markdown`.

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
    /// Directory of PostgreSQL's programs, searched before PATH
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
    /// Print the docs/BENCHMARKS.md section instead of the table
    #[arg(long)]
    pub markdown: bool,
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
fn progress_bar(progress: Arc<Progress>, enabled: bool) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
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
        return Err(CliError::new(exit::USAGE, "--json and --markdown cannot be combined"));
    }
    let only = Group::parse_list(&a.only).map_err(|e| CliError::new(exit::USAGE, e))?;
    if a.runs == 0 || a.runs > 100 {
        return Err(CliError::new(exit::USAGE, "--runs must be between 1 and 100"));
    }
    let s = BenchSettings {
        conn: conninfo(&a.db)?,
        repo: a.repo,
        jobs: check_jobs(a.jobs)?,
        generate: a.generate,
        only,
        runs: a.runs,
        warmup: !a.no_warmup,
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
    if json {
        print_json(&r);
    } else if a.markdown {
        print!("{}", report::markdown(&r));
    } else {
        print!("{}", report::terminal(&r));
    }
    Ok(())
}
