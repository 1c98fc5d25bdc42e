//! Exit codes are API: scripts branch on them. One table, one place.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | bad command line or settings |
//! | 3 | cannot connect to PostgreSQL: unreachable, authentication, database missing |
//! | 4 | repository or storage problem: not a repository, format too new, bucket missing, access denied, no such dump, WAL a backup needs missing from the archive |
//! | 5 | damaged data: a corrupt or missing chunk or pack (verify found problems) |
//! | 6 | the target is not empty or already exists (restore without --clean), or its tables cannot take the dump's binary rows |
//! | 7 | pg_dump / pg_restore missing, too old, or failed |
//! | 8 | PostgreSQL refused a statement or the server version is unsupported |
//! | 9 | the repository is locked by another writer (a running daemon, backup, dump or expire) |
//! | 10 | a `drill` check failed on the restored copy: a `--sql` statement not true, row counts that differ from the dump's, amcheck found corruption, a table unreadable |
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
pub const RECOVERY_ABORT: u8 = 126;
pub const INTERRUPTED: u8 = 130;

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

fn repl_code(e: &crate::pg::replication::ReplError) -> u8 {
    use crate::pg::replication::ReplError as R;
    match e {
        R::Connect(_)
        | R::Auth { .. }
        | R::NoReplicationPrivilege { .. }
        | R::NoWalSenders { .. } => CONNECT,
        R::ConnectionLost { .. } => CONNECT,
        R::SlotInUse { .. } | R::SlotExists { .. } => TARGET_NOT_EMPTY,
        _ => SQL,
    }
}

fn repo_code(e: &RepoError) -> u8 {
    match e {
        RepoError::BadObject { .. } => DAMAGED,
        RepoError::Locked { .. } => LOCKED,
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
            PipelineError::Codec(_) => FAILURE,
        },
        JobError::Archive { source, .. } => {
            use crate::repo::wal_archive::WalError as W;
            match source {
                W::Storage(_) => REPOSITORY,
                W::Damaged { .. } => DAMAGED,
                W::Conflict { .. } => TARGET_NOT_EMPTY,
                W::BadName { .. } | W::Codec(_) => FAILURE,
            }
        }
        JobError::WalMissing(_) => REPOSITORY,
        JobError::BadStream(_) => FAILURE,
        JobError::Tool(_) => TOOL,
        JobError::TargetNotEmpty { .. }
        | JobError::TargetHasSchema { .. }
        | JobError::TargetIncompatible(_) => TARGET_NOT_EMPTY,
        JobError::Damaged { .. } => DAMAGED,
        JobError::DatabaseExists { .. } | JobError::DirectoryNotEmpty { .. } => TARGET_NOT_EMPTY,
        JobError::Invalid(_) => USAGE,
        JobError::Io { .. } => FAILURE,
        JobError::DrillCheck(_) => DRILL_CHECK,
        JobError::Interrupted => INTERRUPTED,
    }
}

impl From<JobError> for CliError {
    fn from(e: JobError) -> Self {
        CliError::new(classify(&e), e.to_string())
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
        assert_eq!(classify(&JobError::WalMissing("x".into())), REPOSITORY);
        assert_eq!(classify(&JobError::BadStream("x".into())), FAILURE);
        assert_eq!(classify(&JobError::Invalid("x".into())), USAGE);
    }
}
