//! `list`, `info` and `delete`: what a repository holds, in detail, and
//! removing a dump.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::JobError;
use crate::pg::lsn::{segment_name, Lsn};
use crate::pipeline::Compression;
use crate::repo::manifest::{BackupManifest, DumpManifest};
use crate::repo::retention::{wal_to_remove, WalNeed};
use crate::repo::wal_archive::WAL_PREFIX;
use crate::repo::{FinishedDeletion, IncompleteDump, Repository, SetKind};

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
    /// When a `pgtide drill` of this dump last passed.
    pub proven_at: Option<DateTime<Utc>>,
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
            proven_at: None,
        }
    }
}

/// One line of `pgtide list` for a physical backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub id: String,
    pub name: Option<String>,
    pub server_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub wal_start: String,
    pub wal_end: String,
    pub files: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
    /// When a `pgtide drill` of this backup last passed.
    pub proven_at: Option<DateTime<Utc>>,
}

impl From<&BackupManifest> for BackupSummary {
    fn from(m: &BackupManifest) -> Self {
        BackupSummary {
            id: m.id.clone(),
            name: m.name.clone(),
            server_version: m.server_version.clone(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            timeline: m.timeline,
            start_lsn: m.start_lsn,
            end_lsn: m.end_lsn,
            wal_start: m.wal_start.clone(),
            wal_end: m.wal_end.clone(),
            files: m.stats.tables,
            bytes_raw: m.stats.raw_bytes,
            bytes_stored: m.stats.stored_bytes,
            proven_at: None,
        }
    }
}

/// What the drills recorded for one backup or dump (the newest records of
/// kind `drill`, `repo::runs::KEEP_PER_KIND` of them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillHistory {
    /// When a drill of it last passed.
    pub passed_at: Option<DateTime<Utc>>,
    /// When a drill of it last failed, and why.
    pub failed_at: Option<DateTime<Utc>>,
    pub failure: Option<String>,
}

/// The drill history of every backup and dump that has one, by id.
pub async fn drill_history(
    repo: &Repository,
) -> Result<std::collections::HashMap<String, DrillHistory>, JobError> {
    let mut out: std::collections::HashMap<String, DrillHistory> = Default::default();
    // Newest first: the first record seen of each outcome is the latest.
    for r in repo
        .recent_runs("drill", crate::repo::runs::KEEP_PER_KIND)
        .await?
    {
        let Some(id) = r.id.clone() else { continue };
        let h = out.entry(id).or_default();
        if r.ok && h.passed_at.is_none() {
            h.passed_at = Some(r.finished_at);
        } else if !r.ok && h.failed_at.is_none() {
            h.failed_at = Some(r.finished_at);
            h.failure = r.message.clone();
        }
    }
    Ok(out)
}

/// The WAL archive of one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct WalTimeline {
    pub timeline: u32,
    pub segments: u64,
    pub first: String,
    pub last: String,
    /// Segments missing between first and last.
    pub gaps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub repository: String,
    /// System identifier of the cluster whose backups and WAL this holds.
    pub system_identifier: Option<String>,
    /// The repository's Object Lock retention, if it has one.
    pub object_lock: Option<crate::repo::ObjectLock>,
    pub dumps: Vec<DumpSummary>,
    pub backups: Vec<BackupSummary>,
    pub wal: Vec<WalTimeline>,
    /// Dumps and backups without a manifest: running now, or failed.
    pub incomplete: Vec<IncompleteDump>,
    /// Dumps and backups whose deletion was interrupted: never restorable;
    /// the next `expire` or `delete` finishes them.
    pub deleting: Vec<IncompleteDump>,
}

pub async fn list(repo: &Repository) -> Result<Listing, JobError> {
    let dumps = repo.list_dumps().await?;
    let drills = drill_history(repo).await?;
    let proven = |id: &str| drills.get(id).and_then(|h| h.passed_at);
    let mut backups = Vec::new();
    for id in repo.ids(SetKind::Backup).await? {
        let m: BackupManifest = repo.load(SetKind::Backup, &id).await?;
        let mut b = BackupSummary::from(&m);
        b.proven_at = proven(&id);
        backups.push(b);
    }
    let cluster = repo.cluster().await?;
    let mut wal = Vec::new();
    if let Some(c) = &cluster {
        let archive = repo.wal_archive(c.wal_segment_size, Compression::None);
        // The index and the keys after it; the gaps it shows confirmed.
        let view = archive
            .checked_view()
            .await
            .map_err(JobError::archive("list the WAL archive"))?;
        for (tli, set) in view.segments {
            let (Some(first), Some(last)) = (set.first(), set.last()) else {
                continue;
            };
            let name = |n| segment_name(tli, n, c.wal_segment_size);
            wal.push(WalTimeline {
                timeline: tli,
                segments: set.len(),
                first: name(first),
                last: name(last),
                gaps: set
                    .gaps()
                    .flat_map(|(a, b)| a..=b)
                    .take(100)
                    .map(name)
                    .collect(),
            });
        }
    }
    let mut incomplete = repo.incomplete_dumps().await?;
    incomplete.extend(repo.incomplete(SetKind::Backup).await?);
    let mut deleting = repo.deleting(SetKind::Dump).await?;
    deleting.extend(repo.deleting(SetKind::Backup).await?);
    Ok(Listing {
        repository: repo.location(),
        system_identifier: cluster.map(|c| c.system_identifier),
        object_lock: repo.object_lock(),
        dumps: dumps
            .iter()
            .map(|m| DumpSummary {
                proven_at: proven(&m.id),
                ..DumpSummary::from(m)
            })
            .collect(),
        backups,
        wal,
        incomplete,
        deleting,
    })
}

/// A dump's or a backup's manifest.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Info {
    Dump(Box<DumpManifest>),
    Backup(Box<BackupManifest>),
}

/// `info`: the manifest, and (beside its fields) what drills recorded.
#[derive(Debug, Clone, Serialize)]
pub struct InfoReport {
    #[serde(flatten)]
    pub set: Info,
    pub drill: DrillHistory,
}

pub async fn info(repo: &Repository, id: &str) -> Result<InfoReport, JobError> {
    let id = repo.resolve_any(id).await?;
    let set = match SetKind::of_id(&id) {
        Some(SetKind::Backup) => Info::Backup(Box::new(repo.load(SetKind::Backup, &id).await?)),
        _ => Info::Dump(Box::new(repo.load_dump(&id).await?)),
    };
    let drill = drill_history(repo).await?.remove(&id).unwrap_or_default();
    Ok(InfoReport { set, drill })
}

#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    pub id: String,
    /// False when Object Lock retention kept the set (`locked_until`).
    pub deleted: bool,
    pub bytes_freed: u64,
    /// Object Lock: an object of the set is retained until then; nothing
    /// was deleted, and `delete` succeeds from then on.
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Interrupted deletions (of any set) finished first.
    pub finished_deletions: Vec<FinishedDeletion>,
}

/// Delete a dump or backup, after finishing every interrupted deletion. A
/// set under Object Lock retention is left whole: `deleted` false, with
/// the date.
pub async fn delete(repo: &Repository, id: &str) -> Result<DeleteReport, JobError> {
    let kind = SetKind::of_id(id).unwrap_or(SetKind::Dump);
    let finished_deletions = repo.finish_deletions().await?;
    let (bytes_freed, locked_until) = match finished_deletions.iter().find(|f| f.id == id) {
        Some(f) => (f.bytes_freed, None),
        None => match repo.delete(kind, id).await {
            Ok(b) => (b, None),
            Err(crate::repo::RepoError::Retained { until, .. }) => (0, Some(until)),
            Err(e) => return Err(e.into()),
        },
    };
    Ok(DeleteReport {
        id: id.to_string(),
        deleted: locked_until.is_none(),
        bytes_freed,
        locked_until,
        finished_deletions,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct WalDeleteReport {
    /// The first segment kept (the backup's first WAL segment).
    pub kept_from: String,
    pub objects: u64,
    pub bytes_freed: u64,
    /// Object Lock: objects that would go but are retained, their bytes,
    /// and the latest date one of them becomes deletable.
    pub retained_objects: u64,
    pub retained_bytes: u64,
    pub retained_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Delete archived WAL older than what backup `id` needs (the rule of
/// `repo::retention::wal_expendable`: segments, partials and `.backup` files
/// of its timeline and earlier ones, before its first segment; history files
/// stay). Refused while an older backup exists.
pub async fn delete_wal_before(repo: &Repository, id: &str) -> Result<WalDeleteReport, JobError> {
    let id = repo.resolve(SetKind::Backup, id).await?;
    let m: BackupManifest = repo.load(SetKind::Backup, &id).await?;
    let older: Vec<String> = repo
        .ids(SetKind::Backup)
        .await?
        .into_iter()
        .filter(|b| b[..15] < id[..15])
        .collect();
    if let Some(o) = older.first() {
        return Err(JobError::Invalid(format!(
            "backup {o} is older than {id} and needs that WAL: delete the older backups first"
        )));
    }
    let Some(need) = WalNeed::of_segment(&m.wal_start, m.wal_segment_size) else {
        return Err(JobError::Damaged {
            what: format!("its manifest names an invalid WAL segment {}", m.wal_start),
            id,
        });
    };
    let listing = repo
        .storage()
        .list(WAL_PREFIX)
        .await
        .map_err(|e| JobError::Repo(e.into()))?;
    let gone = wal_to_remove(
        &[need],
        listing.iter().map(|o| (o.key.as_str(), o.size)),
        m.wal_segment_size,
    );
    let (gone, retained, retained_until) =
        super::expire::split_retained(repo, gone, &listing, chrono::Utc::now()).await?;
    repo.wal_archive(m.wal_segment_size, Compression::None)
        .delete_listed(&listing, &gone.keys)
        .await
        .map_err(|e| JobError::Repo(e.into()))?;
    Ok(WalDeleteReport {
        kept_from: m.wal_start.clone(),
        objects: gone.keys.len() as u64,
        bytes_freed: gone.bytes,
        retained_objects: retained.keys.len() as u64,
        retained_bytes: retained.bytes,
        retained_until,
    })
}
