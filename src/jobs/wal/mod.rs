//! WAL jobs: `wal push` (archive_command), `wal fetch` (restore_command,
//! with prefetch into a local spool) and `wal stream` (a replication-slot
//! receiver).

pub mod fetch;
pub mod push;
pub mod segment;
pub mod start;
pub mod stream;
pub mod tail;

use crate::repo::wal_archive::WalError;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum WalJobError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a WAL segment: {reason}")]
    NotSegment { path: String, reason: String },
}

impl WalJobError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalJobError {
        let context = context.into();
        move |source| WalJobError::Io { context, source }
    }
}
