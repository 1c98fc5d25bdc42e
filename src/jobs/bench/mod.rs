//! `pgtide bench`: pgtide's jobs and their peers (pg_dump, pg_restore,
//! pg_basebackup, pgBackRest, pg_receivewal) on the same data, on the same
//! machine, in the same invocation: a warm-up, then `--runs` repetitions,
//! and a report of what each cost.
//!
//! Every step is a child process — pgtide's jobs run as this executable
//! with `--json`, the peers as found on PATH (or `--pg-bin`) — reaped with
//! `wait4` for its CPU and peak RSS (`measure.rs`). Before each step: a
//! `CHECKPOINT` and (as root) an empty page cache. The server's CPU comes
//! from `/proc` when it runs here. Dumps and backups only read the measured
//! database; restores go into scratch databases and directories the bench
//! creates and drops; the WAL burst writes into a scratch database.
//!
//! Plan: gather facts (server, tools) → choose the steps (`steps.rs`; an
//! absent peer is skipped, with the reason in the report) → run them →
//! summarise (`report.rs`). The job never prints: it updates a `Progress`
//! and returns a `BenchReport`.

mod data;
mod exec;
mod machine;
mod measure;
mod pgbackrest;
pub mod report;
mod steps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::Progress;
use crate::pg::connect::{connect, ConnectError};
use crate::pg::conninfo::ConnInfo;
pub use data::{GENERATED_DB, MARK};
use exec::{Bench, Measured};
use report::{BenchReport, RunCost, Skipped};
pub use steps::display as display_command;
pub use steps::Group;
use steps::{Step, Task};

#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub conn: ConnInfo,
    /// The repository pgtide's dumps and backups go to; a scratch one in
    /// the work directory when unset.
    pub repo: Option<String>,
    pub jobs: usize,
    /// Worker counts at which dumps and backups are measured too.
    pub scale_jobs: Vec<usize>,
    pub generate: Option<u32>,
    pub only: Vec<Group>,
    pub runs: usize,
    /// One unrecorded run of every step first.
    pub warmup: bool,
    /// Empty the page cache before every step (root only; it empties the
    /// whole machine's).
    pub drop_caches: bool,
    /// Measure a database the bench did not create.
    pub yes: bool,
    /// WAL written for the `wal` steps, in bytes.
    pub wal_burst: u64,
    /// Where peers write; a new directory under the temporary directory
    /// (removed at the end) when unset.
    pub work: Option<PathBuf>,
    pub keep: bool,
    /// Where to look for PostgreSQL's programs before PATH.
    pub pg_bin: Option<PathBuf>,
    /// The command line, as the report records it.
    pub command_line: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("database {database} was not created by pgtide bench, and the benchmark loads its server with dumps, backups and a WAL burst (hint: --yes to measure it anyway, or --generate SCALE for a data set of its own)")]
    NotOurs { database: String },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{context}: {}", sql_text(.source))]
    Sql {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} failed (exit {code}): {tail}")]
    StepFailed {
        step: String,
        code: i32,
        tail: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("interrupted")]
    Interrupted,
}

/// What the server said (its message, detail and hint), or the client's
/// error when there was no server answer.
fn sql_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => e.to_string(),
    }
}

pub(crate) fn sql_err(
    context: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Sql { context, source }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

/// The database to measure: generated, or the given one when it is the
/// bench's own or `--yes` says so. Returns its name, and the scale it was
/// generated with.
async fn choose_database(s: &BenchSettings) -> Result<(String, Option<u32>), BenchError> {
    let comment_sql =
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1";
    let Some(scale) = s.generate else {
        let c = connect(&s.conn, "pgtide bench").await?;
        let name: String = c
            .query_one("SELECT current_database()", &[])
            .await
            .map_err(sql_err("read the database name"))?
            .get(0);
        let comment: Option<String> = c
            .query_one(comment_sql, &[&name])
            .await
            .map_err(sql_err("read the database comment"))?
            .get(0);
        if !data::is_ours(comment.as_deref()) && !s.yes {
            return Err(BenchError::NotOurs { database: name });
        }
        return Ok((name, data::scale_of(comment.as_deref())));
    };
    let admin_db = match s.conn.dbname.as_deref() {
        Some(GENERATED_DB) | None => "postgres",
        Some(db) => db,
    };
    let admin = connect(&s.conn.with_dbname(admin_db), "pgtide bench").await?;
    let existing = admin
        .query_opt(comment_sql, &[&GENERATED_DB])
        .await
        .map_err(sql_err("look for an earlier data set"))?;
    if let Some(row) = existing {
        let comment: Option<String> = row.get(0);
        if !data::is_ours(comment.as_deref()) && !s.yes {
            return Err(BenchError::NotOurs {
                database: GENERATED_DB.to_owned(),
            });
        }
        admin
            .batch_execute(&format!(
                "DROP DATABASE {}",
                data::quote_ident(GENERATED_DB)
            ))
            .await
            .map_err(sql_err(format!("drop the earlier {GENERATED_DB}")))?;
    }
    let ident = data::quote_ident(GENERATED_DB);
    admin
        .batch_execute(&format!("CREATE DATABASE {ident}"))
        .await
        .map_err(sql_err(format!("create database {GENERATED_DB}")))?;
    admin
        .batch_execute(&format!(
            "COMMENT ON DATABASE {ident} IS {}",
            data::quote_literal(&data::mark(scale))
        ))
        .await
        .map_err(sql_err("mark the database as the bench's"))?;
    let c = connect(&s.conn.with_dbname(GENERATED_DB), "pgtide bench").await?;
    for stmt in data::statements(scale) {
        c.batch_execute(&stmt)
            .await
            .map_err(sql_err(format!("generate the data set (scale {scale})")))?;
    }
    Ok((GENERATED_DB.to_owned(), Some(scale)))
}

/// Runs the benchmark. Scratch databases, slots and (unless `keep`) the
/// work directory are removed whatever the outcome.
pub async fn run(
    s: &BenchSettings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<BenchReport, BenchError> {
    if s.runs == 0 {
        return Err(BenchError::Usage("--runs must be at least 1".into()));
    }
    let started_at = chrono::Utc::now();
    let t0 = Instant::now();
    progress.set_phase(match s.generate {
        Some(scale) => format!("generating the data set (scale {scale})"),
        None => "checking the database".to_owned(),
    });
    let (database, scale) = choose_database(s).await?;
    let mut bench = Bench::prepare(s, &database, scale, cancel.clone()).await?;
    let result = measure_all(&mut bench, s, &progress, &cancel).await;
    progress.set_phase("cleaning up");
    bench.clean_up(s.keep).await;
    let (recorded, skipped, matches) = result?;
    Ok(bench.report(
        s,
        started_at,
        t0.elapsed().as_secs_f64(),
        recorded,
        skipped,
        matches,
    ))
}

type Recorded = BTreeMap<Task, (Vec<RunCost>, Option<Measured>)>;

/// The tasks of the chosen steps: each at `--jobs`, and the steps that
/// scale also at every `--scale-jobs` count.
fn tasks(chosen: &[Step], s: &BenchSettings) -> Vec<Task> {
    let mut out = Vec::new();
    for &step in chosen {
        out.push(Task { step, jobs: s.jobs });
        if step.scales() {
            for &jobs in s.scale_jobs.iter().filter(|j| **j != s.jobs) {
                out.push(Task { step, jobs });
            }
        }
    }
    out
}

/// The warm-up and the runs, group by group; peers and pgtide take turns
/// going first.
async fn measure_all(
    bench: &mut Bench,
    s: &BenchSettings,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<(Recorded, Vec<Skipped>, BTreeMap<Step, bool>), BenchError> {
    let (chosen, mut skipped) = bench.choose_steps(s);
    let selected = tasks(&chosen, s);
    // Producers a selected step needs but --only left out run once,
    // untimed, in the warm-up.
    let mut producers: Vec<Task> = Vec::new();
    for step in &chosen {
        let p = match step {
            Step::PgtideRestore => Step::PgtideDump,
            Step::PgRestore => Step::PgDump,
            Step::PgtidePhysicalRestore => Step::PgtideBackup1,
            Step::PgbackrestRestore => Step::PgbackrestBackup,
            Step::TarExtract => Step::Basebackup1,
            _ => continue,
        };
        let p = Task {
            step: p,
            jobs: s.jobs,
        };
        if !selected.contains(&p) && !producers.contains(&p) {
            producers.push(p);
        }
    }
    let first = if s.warmup { 0 } else { 1 };
    let total = (selected.len() * (s.runs + 1 - first) + producers.len()) as u64;
    progress
        .units_total
        .store(total, std::sync::atomic::Ordering::Relaxed);
    let mut recorded: Recorded = BTreeMap::new();
    let mut failed: Vec<Task> = Vec::new();
    let mut old_sets: Vec<String> = Vec::new();
    let mut matches = BTreeMap::new();
    for run in first..=s.runs {
        let mut this_run = Vec::new();
        for group in Group::ALL {
            let mut group_tasks: Vec<Task> = producers
                .iter()
                .filter(|_| run == first)
                .chain(selected.iter())
                .copied()
                .filter(|t| t.step.group() == group && !failed.contains(t))
                .collect();
            if group_tasks.is_empty() {
                continue;
            }
            if run % 2 == 1 {
                group_tasks.reverse();
            }
            if group == Group::Wal {
                progress.set_phase(format!("{}: WAL burst", run_label(run, s.runs)));
                bench.wal_burst(s.wal_burst).await?;
            }
            for task in group_tasks {
                if cancel.is_cancelled() {
                    return Err(BenchError::Interrupted);
                }
                let name = task.name(s.jobs);
                progress.set_phase(format!("{}: {name}", run_label(run, s.runs)));
                match bench.measure(task).await {
                    Ok(m) => {
                        if let Some(id) = &m.set_id {
                            this_run.push(id.clone());
                        }
                        if run > 0 && !producers.contains(&task) {
                            let e = recorded.entry(task).or_default();
                            e.0.push(m.cost.clone());
                            e.1 = Some(m);
                        }
                    }
                    Err(BenchError::StepFailed {
                        step: n,
                        code,
                        tail,
                    }) if !task.step.is_pgtide() => {
                        // A peer that fails here is reported, not fatal:
                        // pgtide's figures still stand.
                        failed.push(task);
                        recorded.remove(&task);
                        skipped.push(Skipped {
                            step: n,
                            reason: format!("failed (exit {code}): {tail}"),
                        });
                    }
                    Err(e) => return Err(e),
                }
                progress
                    .units_done
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // What a group leaves in the cluster goes before the next one
            // (a physical backup would read it): the restored databases,
            // checked against the source after the last run first, and the
            // WAL burst's database and slots.
            if group == Group::Restore {
                if run == s.runs {
                    progress.set_phase("checking the restored databases against the source");
                    let restored: Vec<Step> = recorded
                        .keys()
                        .filter(|t| t.step.group() == Group::Restore)
                        .map(|t| t.step)
                        .collect();
                    matches = bench.restores_match(&restored).await?;
                }
                bench.drop_restored().await?;
            }
            if group == Group::Wal {
                bench.wal_done().await?;
            }
        }
        // Keep only the newest dumps and backups: the repository does not
        // grow with --runs.
        for id in old_sets.drain(..) {
            bench.delete_set(&id).await;
        }
        old_sets = this_run;
    }
    Ok((recorded, skipped, matches))
}

fn run_label(run: usize, runs: usize) -> String {
    if run == 0 {
        "warm-up".to_owned()
    } else {
        format!("run {run} of {runs}")
    }
}

/// A session for the bench's own statements.
pub(crate) async fn session(ci: &ConnInfo) -> Result<Client, BenchError> {
    Ok(connect(ci, "pgtide bench").await?)
}
