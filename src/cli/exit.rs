//! Exit codes are API: scripts branch on them. One table, one place.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success |
//! | 1 | any other failure: also bytes from the server pgtide cannot use, a connection lost after it was established |
//! | 2 | bad command line or settings; a `--table` pattern that matches no table, a database a backup did not hold at the recovery target; `bench` on a database it did not create, without `--yes` |
//! | 3 | cannot connect to PostgreSQL: unreachable, authentication, database missing |
//! | 4 | repository or storage problem: not a repository, format too new, bucket missing, access denied, no such dump, WAL a backup needs missing from the archive |
//! | 5 | damaged data: a corrupt or missing chunk or pack (verify found problems) |
//! | 6 | the target is not empty or already exists (restore without --clean; a table `restore --table` would create, a database `restore --database` would create), its tables cannot take the dump's binary rows, or a table `--clean` would replace has objects depending on it |
//! | 7 | pg_dump / pg_restore missing, too old, or failed; no pg_ctl for `restore --start` |
//! | 8 | PostgreSQL refused a statement or the server version is unsupported |
//! | 9 | the repository is locked by another writer (a running daemon, backup, dump or expire) |
//! | 10 | a `drill` check failed on the restored copy: a `--sql` statement not true, row counts that differ from the dump's, amcheck found corruption, a table unreadable |
//! | 11 | encryption key missing, wrong, or removed: the repository is encrypted and no key given opens what was asked for |
//! | 12 | Object Lock: what `delete` was asked to remove is retained until a date it names; nothing was deleted |
//! | 70 | internal error: a panic or a broken invariant in pgtide (a bug: please report it); 126 in `wal fetch` |
//! | 126 | `wal fetch` could not serve a segment for a reason other than its absence: PostgreSQL aborts recovery on codes above 125 instead of ending it early |
//! | 130 | interrupted (SIGINT / SIGTERM) |

use crate::jobs::JobError;
use crate::pipeline::PipelineError;
use crate::repo::RepoError;

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const CONNECT: u8 = 3;
pub const REPOSITORY: u8 = 4;
pub const DAMAGED: u8 = 5;
pub const TARGET_NOT_EMPTY: u8 = 6;
pub const TOOL: u8 = 7;
pub const SQL: u8 = 8;
pub const LOCKED: u8 = 9;
pub const DRILL_CHECK: u8 = 10;
pub const KEY: u8 = 11;
pub const RETAINED: u8 = 12;
/// `EX_SOFTWARE` of sysexits.h.
pub const INTERNAL: u8 = 70;
pub const RECOVERY_ABORT: u8 = 126;
pub const INTERRUPTED: u8 = 130;

/// The first panic not yet handled, as "message at file:line".
static PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The exit code of a panic: `INTERNAL`, except for `wal fetch`.
static PANIC_CODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(INTERNAL);

/// The exit code a panic ends this process with. `wal fetch` sets
/// `RECOVERY_ABORT`: PostgreSQL takes any code up to 125 from a
/// restore_command as "no such segment" and would end recovery early.
pub fn set_panic_code(code: u8) {
    PANIC_CODE.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// See [`set_panic_code`].
pub fn panic_code() -> u8 {
    PANIC_CODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Replaces the default panic output (several lines on stderr) by a note
/// that `main` turns into one `internal error` line and exit code 70,
/// whichever task panicked and however its failure was reported: a panic
/// is a bug, never a bad command line or a failed job. A panic on the main
/// thread, which no task boundary catches, exits at once. With
/// `RUST_BACKTRACE` set, the default output (and backtrace) is kept.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let what = match info.location() {
            Some(l) => format!("{msg} at {}:{}", l.file(), l.line()),
            None => msg,
        };
        if let Ok(mut p) = PANIC.lock() {
            p.get_or_insert_with(|| what.clone());
        }
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
        if std::thread::current().name() == Some("main") {
            eprintln!("error: {}", internal_message(&what));
            std::process::exit(i32::from(panic_code()));
        }
    }));
}

/// The first panic of the process not yet handled, if any: `main` exits
/// with [`panic_code`] when there is one, whatever the job returned.
pub fn panicked() -> Option<String> {
    PANIC.lock().ok().and_then(|p| p.clone())
}

/// Marks the panic as handled: for a supervisor (the daemon) that caught a
/// task's panic, reported it and restarted the task, so that the process
/// does not exit 70 for it later.
pub fn take_panic() -> Option<String> {
    PANIC.lock().ok().and_then(|mut p| p.take())
}

/// The text of an internal error.
pub fn internal_message(what: &str) -> String {
    format!("internal error: {what} (please report this)")
}

/// An error the CLI can print, with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
}

fn repl_code(e: &crate::pg::wire::WireError) -> u8 {
    use crate::pg::wire::WireError as R;
    match e {
        R::Connect(_)
        | R::Auth { .. }
        | R::NoReplicationPrivilege { .. }
        | R::NoWalSenders { .. } => CONNECT,
        // Lost after the connection was established (the client reports a
        // connection lost during startup as `Connect`).
        R::ConnectionLost { .. } | R::Protocol(_) => FAILURE,
        R::SlotInUse { .. } | R::SlotExists { .. } => TARGET_NOT_EMPTY,
        R::InvalidSlotName { .. } => USAGE,
        R::Busy { .. } | R::InvalidSetting { .. } => INTERNAL,
        R::WalLevelMinimal { .. }
        | R::SlotMissing { .. }
        | R::Unsupported { .. }
        | R::Server { .. } => SQL,
    }
}

fn repo_code(e: &RepoError) -> u8 {
    match e {
        RepoError::BadObject { .. } | RepoError::Tampered { .. } => DAMAGED,
        RepoError::Locked { .. } => LOCKED,
        RepoError::Key(crate::crypt::keys::KeyError::Bad(_)) => USAGE,
        RepoError::Key(_) | RepoError::EpochLocked { .. } => KEY,
        RepoError::NotEncrypted { .. } => USAGE,
        RepoError::Retained { .. }
        | RepoError::Storage(crate::storage::StorageError::Retained { .. }) => RETAINED,
        _ => REPOSITORY,
    }
}

pub fn classify(e: &JobError) -> u8 {
    match e {
        JobError::Connect(_) => CONNECT,
        JobError::Replication { source, .. } | JobError::Session { source, .. } => {
            repl_code(source)
        }
        JobError::Sql { .. } | JobError::UnsupportedServer(_) | JobError::RowCount { .. } => SQL,
        JobError::Repo(r) => repo_code(r),
        JobError::Pipeline { source, .. } => match source {
            PipelineError::Corrupt { .. } | PipelineError::UnknownPack(_) => DAMAGED,
            PipelineError::Storage(s) if s.is_not_found() => DAMAGED,
            PipelineError::Storage(_) => REPOSITORY,
            PipelineError::Source(_) => SQL,
            PipelineError::Codec(_) | PipelineError::Stopped => FAILURE,
        },
        JobError::Archive { source, .. } => {
            use crate::repo::wal_archive::WalError as W;
            match source {
                W::Storage(_) => REPOSITORY,
                W::Damaged { .. } => DAMAGED,
                W::Conflict { .. } => TARGET_NOT_EMPTY,
                W::BadName { .. } | W::Codec(_) => FAILURE,
                W::Key(r) => repo_code(r),
            }
        }
        JobError::WalMissing { .. }
        | JobError::WalNotArchived { .. }
        | JobError::RecoveryShort(_)
        | JobError::NoBackupForTarget(_) => REPOSITORY,
        JobError::BadStream(_) => FAILURE,
        JobError::Tool(_) => TOOL,
        JobError::TargetNotEmpty { .. }
        | JobError::TargetHasSchema { .. }
        | JobError::TargetIncompatible { .. } => TARGET_NOT_EMPTY,
        JobError::Damaged { .. } => DAMAGED,
        JobError::DatabaseExists { .. } | JobError::DirectoryNotEmpty { .. } => TARGET_NOT_EMPTY,
        JobError::Invalid(_) | JobError::NoTableMatches { .. } | JobError::NotAtTarget(_) => USAGE,
        JobError::RelationExists { .. }
        | JobError::TargetDatabaseExists { .. }
        | JobError::TargetInUse(_) => TARGET_NOT_EMPTY,
        JobError::Io { .. } => FAILURE,
        JobError::DrillCheck(_) => DRILL_CHECK,
        JobError::Interrupted => INTERRUPTED,
        JobError::Internal(_) => INTERNAL,
    }
}

impl From<JobError> for CliError {
    fn from(e: JobError) -> Self {
        let code = classify(&e);
        let message = match &e {
            JobError::Internal(_) => e.to_string(),
            _ if code == INTERNAL => internal_message(&e.to_string()),
            _ => e.to_string(),
        };
        CliError::new(code, message)
    }
}

impl From<RepoError> for CliError {
    fn from(e: RepoError) -> Self {
        CliError::new(repo_code(&e), e.to_string())
    }
}

pub fn classify_wal(e: &crate::jobs::wal::WalJobError) -> u8 {
    use crate::jobs::wal::WalJobError as W;
    use crate::repo::wal_archive::WalError;
    match e {
        W::Repo(r) => repo_code(r),
        W::Wal(WalError::Damaged { .. }) => DAMAGED,
        W::Wal(WalError::Conflict { .. }) => TARGET_NOT_EMPTY,
        W::Wal(WalError::BadName { .. }) | W::NotSegment { .. } => USAGE,
        W::Wal(WalError::Storage(s)) if s.is_not_found() => DAMAGED,
        W::Wal(WalError::Storage(_)) => REPOSITORY,
        W::Wal(WalError::Codec(_)) | W::Io { .. } => FAILURE,
        W::Wal(WalError::Key(r)) => repo_code(r),
    }
}

impl From<crate::jobs::wal::WalJobError> for CliError {
    fn from(e: crate::jobs::wal::WalJobError) -> Self {
        CliError::new(classify_wal(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::wal_archive::WalError;
    use crate::storage::StorageError;

    #[test]
    fn archive_and_stream_errors_are_not_usage_errors() {
        let archive = |source| JobError::Archive {
            context: "list the WAL archive".into(),
            source,
        };
        assert_eq!(
            classify(&archive(WalError::Storage(StorageError::NotFound {
                key: "wal/x".into()
            }))),
            REPOSITORY
        );
        assert_eq!(
            classify(&archive(WalError::Damaged {
                key: "wal/x".into(),
                reason: "bad crc".into()
            })),
            DAMAGED
        );
        assert_eq!(
            classify(&archive(WalError::Conflict { name: "x".into() })),
            TARGET_NOT_EMPTY
        );
        assert_eq!(
            classify(&JobError::WalMissing {
                segment: "x".into()
            }),
            REPOSITORY
        );
        assert_eq!(classify(&JobError::BadStream("x".into())), FAILURE);
        assert_eq!(
            classify(&JobError::NoBackupForTarget(
                crate::jobs::physical_restore::select::SelectError::NoBackups
            )),
            REPOSITORY
        );
        assert_eq!(classify(&JobError::Internal("x".into())), INTERNAL);
        assert_eq!(classify(&JobError::Invalid("x".into())), USAGE);
    }

    #[test]
    fn internal_errors_say_so() {
        let busy = JobError::Replication {
            context: "stream WAL",
            source: crate::pg::wire::WireError::Busy {
                doing: "streaming",
                wanted: "identify the system",
            },
        };
        let e = CliError::from(busy);
        assert_eq!(e.code, INTERNAL);
        assert_eq!(
            e.message,
            "internal error: stream WAL: the connection is streaming, so it cannot identify the system (please report this)"
        );
        let e = CliError::from(JobError::Internal("table t has parts [1]".into()));
        assert_eq!(
            e.message,
            "internal error: table t has parts [1] (please report this)"
        );
    }

    #[test]
    fn replication_errors_by_kind() {
        use crate::pg::proto::ProtoError;
        use crate::pg::wire::WireError;
        let repl = |source| JobError::Replication {
            context: "stream WAL",
            source,
        };
        let server = crate::pg::conninfo::Target {
            host: "h".into(),
            hostaddr: None,
            port: 5432,
        };
        assert_eq!(
            classify(&repl(WireError::Protocol(ProtoError::malformed(
                "x",
                "y".to_string()
            )))),
            FAILURE
        );
        assert_eq!(
            classify(&repl(WireError::ConnectionLost {
                server,
                reason: "reset".into()
            })),
            FAILURE
        );
        assert_eq!(
            classify(&repl(WireError::InvalidSlotName { slot: "A".into() })),
            USAGE
        );
        assert_eq!(
            classify(&repl(WireError::Busy {
                doing: "streaming",
                wanted: "identify the system"
            })),
            INTERNAL
        );
    }
}
