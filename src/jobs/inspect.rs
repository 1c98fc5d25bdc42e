//! `list`, `info` and `delete`: what a repository holds, in detail, and
//! removing a dump.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::JobError;
use crate::repo::manifest::DumpManifest;
use crate::repo::{IncompleteDump, Repository};

/// One line of `pgtide list`.
#[derive(Debug, Clone, Serialize)]
pub struct DumpSummary {
    pub id: String,
    pub kind: String,
    pub name: Option<String>,
    pub database: String,
    pub server_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tables: u64,
    pub rows: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
    pub schema_only: bool,
    pub data_only: bool,
}

impl From<&DumpManifest> for DumpSummary {
    fn from(m: &DumpManifest) -> Self {
        DumpSummary {
            id: m.id.clone(),
            kind: m.kind.clone(),
            name: m.name.clone(),
            database: m.source.database.clone(),
            server_version: m.source.server_version.clone(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            tables: m.stats.tables,
            rows: m.stats.rows,
            bytes_raw: m.stats.raw_bytes,
            bytes_stored: m.stats.stored_bytes,
            schema_only: m.options.schema_only,
            data_only: m.options.data_only,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub repository: String,
    pub dumps: Vec<DumpSummary>,
    /// Dumps without a manifest: running now, or failed and never cleaned.
    pub incomplete: Vec<IncompleteDump>,
}

pub async fn list(repo: &Repository) -> Result<Listing, JobError> {
    let dumps = repo.list_dumps().await?;
    Ok(Listing {
        repository: repo.location(),
        dumps: dumps.iter().map(DumpSummary::from).collect(),
        incomplete: repo.incomplete_dumps().await?,
    })
}

pub async fn info(repo: &Repository, id: &str) -> Result<DumpManifest, JobError> {
    let id = repo.resolve_dump(id).await?;
    Ok(repo.load_dump(&id).await?)
}

#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    pub id: String,
    pub bytes_freed: u64,
}

pub async fn delete(repo: &Repository, id: &str) -> Result<DeleteReport, JobError> {
    let bytes_freed = repo.delete_dump(id).await?;
    Ok(DeleteReport {
        id: id.to_string(),
        bytes_freed,
    })
}
