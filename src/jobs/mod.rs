//! The jobs a user runs. Each takes validated settings, talks to PostgreSQL
//! through `pg`, moves bytes through `pipeline`, and names objects through
//! `repo`. Jobs never print: they update a `Progress` and return a report.
//!
//! Stopping: every job that runs for long takes a `CancellationToken` (the
//! CLI's is cancelled by SIGINT/SIGTERM, the daemon's at shutdown) and
//! nobody stops a job by dropping its future from outside. A job stops at
//! its await points: one that owns no background work (a statement, a
//! read, a child process killed on drop) goes through [`cancellable`];
//! spawned workers are joined with [`join_all`], which on the token (or the
//! first error) aborts them and waits until each has ended; work on the
//! blocking pool that writes is tracked and awaited too. A dump or backup
//! drops its whole work at once (its writes are packs, which
//! `PackSet::settle` awaits) but owns its workers' set, and shuts it down
//! first. Only then does the job clean up (a dump or backup settles its
//! packs and purges the set once; a physical restore puts back the
//! directories it was writing; a drill or a restore from a backup removes
//! its scratch directory) and return [`JobError::Interrupted`] (exit 130).

pub mod backup;
pub mod bench;
pub mod copy;
pub mod drill;
pub mod dump;
pub mod expire;
pub mod inspect;
pub mod logical_restore;
pub mod physical_restore;
pub mod table_pitr;
pub mod verify;
pub mod wal;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::pg::connect::ConnectError;
use crate::pg::tools::ToolError;
use crate::pg::version::ServerVersion;
use crate::pipeline::PipelineError;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{context}: {source}")]
    Replication {
        context: &'static str,
        #[source]
        source: crate::pg::wire::WireError,
    },
    /// A statement of a session on pgtide's own client (a dump worker's
    /// COPY), with what it was doing.
    #[error("{context}: {source}")]
    Session {
        context: String,
        #[source]
        source: crate::pg::wire::WireError,
    },
    #[error("{context}: {}", pg_message(.source))]
    Sql {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{context}: {source}")]
    Pipeline {
        context: String,
        #[source]
        source: PipelineError,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("PostgreSQL {0} is not supported: pgtide supports PostgreSQL 13 and later")]
    UnsupportedServer(ServerVersion),
    #[error("table {table} in the target already holds rows: restore into an empty database, or pass --clean to replace its contents")]
    TargetNotEmpty { table: String },
    #[error("target database already has {object}: restore into an empty database, use --create, or pass --clean")]
    TargetHasSchema { object: String },
    /// The WAL archive could not be read or written (`context` says what
    /// for).
    #[error("{context}: {source}")]
    Archive {
        context: String,
        #[source]
        source: crate::repo::wal_archive::WalError,
    },
    /// A WAL segment a backup needs is not in the archive.
    #[error("WAL segment {segment} that the backup needs is not in the archive")]
    WalMissing { segment: String },
    /// A restore drill's recovery stopped short of where the archive should
    /// take it (the WAL it needed is not there): the message says where.
    #[error("{0}")]
    RecoveryShort(String),
    /// The WAL a backup needs did not reach the archive in time.
    #[error("the WAL the backup needs ({first} to {last}, {missing} first) did not reach the archive within {waited_secs} s: is `pgtide wal stream` or archive_command running? (or use --wal stream)")]
    WalNotArchived {
        first: String,
        last: String,
        missing: String,
        waited_secs: u64,
    },
    /// `--table` / `--exclude-table` select no table of the dump.
    #[error("no table in dump {id} matches the --table/--exclude-table patterns (hint: pgtide info {id} lists its tables)")]
    NoTableMatches { id: String },
    /// The server sent a stream pgtide cannot use (a base backup's archive,
    /// for one): neither a bad command line nor a repository problem.
    #[error("{0}")]
    BadStream(String),
    /// A column of the target cannot take the dump's binary rows: it is of
    /// another type than the one they were dumped from.
    #[error("column {column:?} of table {table} is {target_type} in the target but was dumped as binary COPY of type oid {dumped_oid}: binary rows load only into the type they came from (hint: restore into the dump's schema, or dump again with --copy-format text)")]
    TargetIncompatible {
        table: String,
        column: String,
        target_type: String,
        dumped_oid: u32,
    },
    #[error("{what}: expected {expected} rows, loaded {loaded}")]
    RowCount {
        what: String,
        expected: u64,
        loaded: u64,
    },
    #[error("{0}")]
    Invalid(String),
    /// No backup can reach the recovery target (`restore --pgdata latest`).
    #[error(transparent)]
    NoBackupForTarget(#[from] crate::jobs::physical_restore::select::SelectError),
    #[error("{} {id} is damaged: {what} (run pgtide verify {id})", set_word(id))]
    Damaged { id: String, what: String },
    #[error("database {name} already exists: drop it, or restore into it without --create")]
    DatabaseExists { name: String },
    /// `restore --table` / `--database` from a backup: the database or the
    /// tables asked for are not there at the recovery target.
    #[error("{0}")]
    NotAtTarget(String),
    /// `restore --table` from a backup: a table (or an index or sequence
    /// that comes with one) already exists where it would be created.
    #[error("{what} already exists in the target database: pass --clean to replace it, or --into-schema SCHEMA to restore beside it (nothing was changed)")]
    RelationExists { what: String },
    /// `restore --database` from a backup: the target database exists.
    #[error("database {name} already exists: name another database in --db, or pass --clean to restore into it (the objects it shares with the backed-up database are dropped first)")]
    TargetDatabaseExists { name: String },
    /// `restore --table --clean`: the live table cannot be replaced, as
    /// other objects depend on it (the message says which).
    #[error("{0}")]
    TargetInUse(String),
    #[error("{what} {path} is not empty: restore into an empty directory, or pass --force to replace its contents")]
    DirectoryNotEmpty { what: &'static str, path: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A check of `pgtide drill` on the restored copy failed: a `--sql`
    /// statement was not true, row counts differ from the dump's, amcheck
    /// found corruption, a table could not be read.
    #[error("{0}")]
    DrillCheck(String),
    #[error("interrupted")]
    Interrupted,
    /// A bug: a worker panicked or an invariant of pgtide's own does not
    /// hold (exit 70).
    #[error("internal error: {0} (please report this)")]
    Internal(String),
}

/// "backup" or "dump", from the kind letter that ends a set id.
fn set_word(id: &str) -> &'static str {
    if id.ends_with('F') {
        "backup"
    } else {
        "dump"
    }
}

/// The server's own words for an error (`ERROR: …` message and detail).
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(" (");
                s.push_str(d);
                s.push(')');
            }
            s
        }
        None => {
            let s = e.to_string();
            if s == "db error" || s.is_empty() {
                "connection to the server was lost".into()
            } else {
                s
            }
        }
    }
}

impl JobError {
    pub fn sql(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> JobError {
        let context = context.into();
        move |source| JobError::Sql { context, source }
    }

    pub fn archive(
        context: impl Into<String>,
    ) -> impl FnOnce(crate::repo::wal_archive::WalError) -> JobError {
        let context = context.into();
        move |source| JobError::Archive { context, source }
    }

    pub fn pipeline(context: impl Into<String>) -> impl FnOnce(PipelineError) -> JobError {
        let context = context.into();
        move |source| JobError::Pipeline { context, source }
    }

    /// True when the error means a stored object is damaged or missing.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            JobError::Pipeline {
                source: PipelineError::Corrupt { .. } | PipelineError::UnknownPack(_),
                ..
            }
        ) || matches!(
            self,
            JobError::Pipeline {
                source: PipelineError::Storage(crate::storage::StorageError::NotFound { .. }),
                ..
            }
        )
    }
}

/// Default worker count: the cores, at most 4 (memory stays bounded).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4)
}

/// Counters a job updates and the CLI draws. Totals may be estimates.
#[derive(Debug, Default)]
pub struct Progress {
    pub total_bytes: AtomicU64,
    pub done_bytes: AtomicU64,
    pub rows: AtomicU64,
    pub units_total: AtomicU64,
    pub units_done: AtomicU64,
    phase: Mutex<String>,
}

impl Progress {
    pub fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().expect("progress lock") = phase.into();
        tracing::info!("{}", self.phase());
    }

    pub fn phase(&self) -> String {
        self.phase.lock().expect("progress lock").clone()
    }

    pub fn add_bytes(&self, n: u64) {
        self.done_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }
}

/// The path of this pgtide binary, for commands PostgreSQL or pgtide itself
/// will run later (restore_command, the prefetcher). When the binary was
/// replaced while running (an upgrade), Linux names the old inode
/// "… (deleted)": the path itself, if it exists, is the one to call.
pub fn pgtide_executable() -> std::io::Result<String> {
    let exe = std::env::current_exe()?.display().to_string();
    Ok(match exe.strip_suffix(" (deleted)") {
        Some(p) if std::path::Path::new(p).is_file() => p.to_string(),
        _ => exe,
    })
}

/// A task that panicked (or was cancelled behind its owner's back): a bug.
pub(crate) fn task_failed(what: &str, e: tokio::task::JoinError) -> JobError {
    if e.is_panic() {
        JobError::Internal(format!("{what} panicked"))
    } else {
        JobError::Internal(format!("{what} was cancelled"))
    }
}

/// Test hook, in debug builds only: panics when `PGTIDE_TEST_PANIC` names
/// this point, so that tests can prove a panic exits 70.
#[inline]
#[track_caller]
pub(crate) fn panic_point(_name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("PGTIDE_TEST_PANIC").is_ok_and(|v| v == _name) {
        panic!("test panic at {_name}");
    }
}

/// Test hook, in debug builds only: when `PGTIDE_TEST_PAUSE` names this
/// point, says so on stderr (`pgtide test pause: NAME`) and then waits an
/// hour, as a slow server or store would, so that tests can stop a job at
/// a known place. The wait is an ordinary await point: it ends only the
/// way the job's real work there would end.
pub(crate) async fn pause_point(_name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("PGTIDE_TEST_PAUSE").is_ok_and(|v| v == _name) {
        eprintln!("pgtide test pause: {_name}");
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// Await `fut` unless `cancel` fires first, in which case `fut` is dropped
/// where it waits and the job is [`JobError::Interrupted`]. Only for work
/// that leaves nothing running when dropped (no spawned tasks of its own):
/// a statement, a read, a child process killed on drop. Once `cancel` has
/// fired, `fut` does not start at all.
pub(crate) async fn cancellable<T, E: Into<JobError>>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, JobError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(JobError::Interrupted),
        r = fut => r.map_err(Into::into),
    }
}

/// The error a job ends with, as the user sees it: once `cancel` has fired
/// any failure is the interruption, since a child process (pg_restore,
/// initdb) that got the same SIGINT from the terminal fails at the moment
/// the token fires, and the user asked to stop.
pub(crate) fn stopped(cancel: &CancellationToken, e: JobError) -> JobError {
    if cancel.is_cancelled() {
        return JobError::Interrupted;
    }
    e
}

/// `Interrupted` once `cancel` has fired: between steps that must not be
/// dropped half-way (file system work, whose blocking calls would go on).
pub(crate) fn stop_if_cancelled(cancel: &CancellationToken) -> Result<(), JobError> {
    if cancel.is_cancelled() {
        return Err(JobError::Interrupted);
    }
    Ok(())
}

/// Wait for every task of `set`. The first error, or `cancel`, stops the
/// others: they are aborted and awaited, so that none outlives the call,
/// and that error (`Interrupted` for `cancel`) is returned. The caller owns
/// the set: if this future is itself dropped (a sibling of a `try_join!`
/// failed), the caller shuts the set down (`JoinSet::shutdown`).
pub(crate) async fn join_all<T: 'static>(
    set: &mut tokio::task::JoinSet<Result<T, JobError>>,
    what: &str,
    cancel: &CancellationToken,
) -> Result<Vec<T>, JobError> {
    let mut out = Vec::with_capacity(set.len());
    loop {
        let r = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(JobError::Interrupted),
            r = set.join_next() => match r {
                None => return Ok(out),
                Some(r) => r.map_err(|e| task_failed(what, e)).and_then(|r| r),
            },
        };
        match r {
            Ok(v) => out.push(v),
            Err(e) => {
                set.shutdown().await;
                return Err(e);
            }
        }
    }
}
