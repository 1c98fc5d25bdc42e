//! `expire`: apply the retention policies to a repository. The CLI's
//! `pgtide expire` and the daemon both call [`run`].
//!
//! Owns: gathering the facts the pure rules of `repo::retention` decide on,
//! and carrying the decisions out in a crash-safe order. Must never: decide
//! what to keep itself (that is `retention::decide`), or delete a set any
//! way other than `Repository::delete`.
//!
//! Order of work:
//! 1. Finish every deletion an earlier run left half-done (a set with a
//!    `deleting` marker).
//! 2. Gather facts: every complete backup (its finish time; whether the
//!    archive holds the WAL from its start to its end, newest first until
//!    one does: that one is the newest restorable backup and is never
//!    removed) and every complete dump (grouped by database: the dump policy
//!    applies to each database's dumps on their own, and the newest dump of
//!    each database is never removed).
//! 3. Decide (pure), then delete the expired backups and dumps.
//! 4. Only then the WAL: read the backups that remain again and remove the
//!    archived WAL none of them needs (`retention::wal_to_remove`).
//!
//! Object Lock: between 2 and 3, every set the rules let go is asked for
//! its manifest's retain-until date (the manifest, written last, is
//! retained longest); one still retained is kept with the reason
//! `object lock until T` (`retention::hold_retained`). Should `delete` still
//! meet a retained object, the set is kept the same way. In step 4, WAL
//! objects still retained stay and are reported with their latest date.
//!
//! With `dry_run`, steps 1, 3 and 4 report what they would do and change
//! nothing. Manifests of a newer format than this pgtide reads are left
//! alone (neither counted nor removed), with a warning.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobError;
use crate::pipeline::Compression;
use crate::repo::manifest::{BackupManifest, DumpManifest};
use crate::repo::retention::{self, Decision, Policy, Reason, SetFacts, WalNeed};
use crate::repo::wal_archive::WAL_PREFIX;
use crate::repo::{layout, FinishedDeletion, RepoError, Repository, SetKind};

/// The two policies: the `[retention]` table of the configuration file,
/// whose `backups` and `dumps` tables are each a [`Policy`].
#[derive(Deserialize, Serialize, Default, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExpirePolicy {
    pub backups: Policy,
    pub dumps: Policy,
}

/// The fate of one backup or dump.
#[derive(Debug, Clone, Serialize)]
pub struct SetDecision {
    pub id: String,
    /// `backup` or `dump`.
    pub kind: &'static str,
    /// Dumps: the database dumped (the dump policy applies per database).
    pub database: Option<String>,
    pub finished_at: DateTime<Utc>,
    pub keep: bool,
    /// Kept: every rule that keeps it (`keep_last`, `daily 2026-12-05`,
    /// `weekly 2026-W49`, `monthly 2026-12`, `yearly 2026`, `max_age 30d`,
    /// `min_keep`, `newest`, `no retention rule`). Expired: why each rule of
    /// the policy passed it over.
    pub reasons: Vec<Reason>,
    /// Bytes the set's objects take in the repository (its manifest's count).
    pub bytes: u64,
    /// Object Lock: the rules let it go, but its objects are retained until
    /// then; it is kept (`keep` true, first reason `object lock until …`)
    /// and goes at the first expire after this time.
    pub locked_until: Option<DateTime<Utc>>,
}

/// The archived WAL that no kept backup needs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalExpiry {
    /// The first WAL segment of the oldest remaining backup: the start of
    /// the point-in-time window (`None` when no backup remains, and then no
    /// WAL is removed).
    pub kept_from: Option<String>,
    /// WAL objects (segments, partials, `.backup` files) removed, or that
    /// would be with `dry_run`.
    pub objects: u64,
    pub bytes: u64,
    /// The first and last object names removed, in key order.
    pub first: Option<String>,
    pub last: Option<String>,
    /// Object Lock: WAL objects no kept backup needs that stay, retained,
    /// their bytes, and the latest date they become deletable.
    pub retained_objects: u64,
    pub retained_bytes: u64,
    pub retained_until: Option<DateTime<Utc>>,
}

/// What `expire` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    pub repository: String,
    pub dry_run: bool,
    /// The clock the rules were applied with.
    pub now: DateTime<Utc>,
    pub policy: ExpirePolicy,
    /// Interrupted deletions finished before anything else (with `dry_run`:
    /// found, left as they are).
    pub finished_deletions: Vec<FinishedDeletion>,
    /// The newest backup whose WAL range the archive holds; never removed.
    pub newest_restorable_backup: Option<String>,
    /// Every complete backup (newest first), then every complete dump (by
    /// database, newest first).
    pub sets: Vec<SetDecision>,
    pub backups_expired: u64,
    pub dumps_expired: u64,
    /// Bytes of the expired backups and dumps (with `dry_run`: what their
    /// manifests count).
    pub bytes_freed: u64,
    /// Object Lock: sets the rules let go that stay, retained (each with
    /// its `locked_until`).
    pub sets_retained: u64,
    pub wal: WalExpiry,
}

/// Apply `policy` to the repository at the clock `now`.
pub async fn run(
    repo: &Repository,
    policy: &ExpirePolicy,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<ExpireReport, JobError> {
    // 1. Half-done deletions first: they hold no complete set, but their
    // objects (and, for backups, a claim on no WAL) should not linger.
    let finished_deletions = if dry_run {
        let mut v = Vec::new();
        for kind in [SetKind::Backup, SetKind::Dump] {
            v.extend(
                repo.deleting(kind)
                    .await?
                    .into_iter()
                    .map(|d| FinishedDeletion {
                        id: d.id,
                        objects: d.objects,
                        bytes_freed: d.bytes,
                    }),
            );
        }
        v
    } else {
        repo.finish_deletions().await?
    };

    // 2. Facts.
    let backups = load_backups(repo).await?;
    let newest_restorable_backup = newest_restorable(repo, &backups).await?;
    let dumps = load_dumps(repo).await?;

    // 3. Decisions.
    let mut sets = Vec::new();
    let facts: Vec<SetFacts> = backups.iter().map(facts_of_backup).collect();
    let by_id: BTreeMap<&str, &BackupManifest> =
        backups.iter().map(|m| (m.id.as_str(), m)).collect();
    let decided = retention::decide(
        &policy.backups,
        &facts,
        now,
        newest_restorable_backup.as_deref(),
    );
    for d in hold_retained(repo, SetKind::Backup, decided, now).await? {
        let bytes = by_id.get(d.id.as_str()).map_or(0, |m| m.stats.stored_bytes);
        sets.push(set_decision(d, "backup", None, bytes));
    }
    let mut by_db: BTreeMap<&str, Vec<&DumpManifest>> = BTreeMap::new();
    for m in &dumps {
        by_db.entry(m.source.database.as_str()).or_default().push(m);
    }
    for (db, group) in by_db {
        let facts: Vec<SetFacts> = group
            .iter()
            .map(|m| SetFacts {
                id: m.id.clone(),
                finished_at: m.finished_at,
            })
            .collect();
        // Every complete dump restores on its own: the newest is protected.
        let newest = group
            .iter()
            .max_by(|a, b| a.finished_at.cmp(&b.finished_at).then(a.id.cmp(&b.id)))
            .map(|m| m.id.as_str());
        let decided = retention::decide(&policy.dumps, &facts, now, newest);
        for d in hold_retained(repo, SetKind::Dump, decided, now).await? {
            let bytes = group
                .iter()
                .find(|m| m.id == d.id)
                .map_or(0, |m| m.stats.stored_bytes);
            sets.push(set_decision(d, "dump", Some(db.to_string()), bytes));
        }
    }

    let mut report = ExpireReport {
        repository: repo.location(),
        dry_run,
        now,
        policy: policy.clone(),
        finished_deletions,
        newest_restorable_backup,
        backups_expired: 0,
        dumps_expired: 0,
        bytes_freed: 0,
        sets_retained: 0,
        sets,
        wal: WalExpiry::default(),
    };

    // Deleting: backups first, oldest first, then dumps.
    for kind in [SetKind::Backup, SetKind::Dump] {
        for s in report
            .sets
            .iter_mut()
            .filter(|s| !s.keep && s.kind == kind.noun())
            .rev()
        {
            let freed = if dry_run {
                s.bytes
            } else {
                match repo.delete(kind, &s.id).await {
                    Ok(b) => {
                        tracing::info!("expired {} {}", s.kind, s.id);
                        b
                    }
                    // Gone meanwhile (another expire): nothing left to free.
                    Err(RepoError::NoSuch { .. }) => 0,
                    // An object retained longer than the manifest said:
                    // kept, untouched, like the others.
                    Err(RepoError::Retained { until, .. }) => {
                        s.keep = true;
                        s.reasons.insert(0, Reason::ObjectLock(until));
                        s.locked_until = Some(until);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            match kind {
                SetKind::Backup => report.backups_expired += 1,
                SetKind::Dump => report.dumps_expired += 1,
            }
            report.bytes_freed += freed;
        }
    }

    report.sets_retained = report
        .sets
        .iter()
        .filter(|s| s.locked_until.is_some())
        .count() as u64;

    // 4. WAL, from the backups that remain.
    let remaining: Vec<BackupManifest> = if dry_run {
        backups
            .into_iter()
            .filter(|m| report.sets.iter().any(|s| s.id == m.id && s.keep))
            .collect()
    } else {
        load_backups(repo).await?
    };
    report.wal = expire_wal(repo, &remaining, dry_run, now).await?;
    Ok(report)
}

fn set_decision(
    d: Decision,
    kind: &'static str,
    database: Option<String>,
    bytes: u64,
) -> SetDecision {
    SetDecision {
        id: d.id,
        kind,
        database,
        finished_at: d.finished_at,
        keep: d.keep,
        reasons: d.reasons,
        bytes,
        locked_until: d.locked_until,
    }
}

/// Object Lock: ask the store until when each set the rules let go is
/// retained (its manifest's date), and keep those retained past `now`.
async fn hold_retained(
    repo: &Repository,
    kind: SetKind,
    decisions: Vec<Decision>,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, JobError> {
    if repo.object_lock().is_none() {
        return Ok(decisions);
    }
    let mut retained = BTreeMap::new();
    for d in decisions.iter().filter(|d| !d.keep) {
        if let Some(t) = repo.manifest_retained_until(kind, &d.id).await? {
            retained.insert(d.id.clone(), t);
        }
    }
    Ok(retention::hold_retained(decisions, &retained, now))
}

fn facts_of_backup(m: &BackupManifest) -> SetFacts {
    SetFacts {
        id: m.id.clone(),
        finished_at: m.finished_at,
    }
}

/// Every complete backup this pgtide can read, oldest first.
async fn load_backups(repo: &Repository) -> Result<Vec<BackupManifest>, JobError> {
    let mut out = Vec::new();
    for id in repo.ids(SetKind::Backup).await? {
        match repo.load::<BackupManifest>(SetKind::Backup, &id).await {
            Ok(m) => out.push(m),
            // Left alone, and said so once, here.
            Err(e @ RepoError::FormatTooNew { .. }) => {
                tracing::warn!("retention leaves backup {id} alone: {e}");
            }
            // Deleted meanwhile, or being deleted: not a set to decide on.
            Err(RepoError::NoSuch { .. } | RepoError::BeingDeleted { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

async fn load_dumps(repo: &Repository) -> Result<Vec<DumpManifest>, JobError> {
    let mut out = Vec::new();
    for id in repo.dump_ids().await? {
        match repo.load_dump(&id).await {
            Ok(m) => out.push(m),
            Err(e @ RepoError::FormatTooNew { .. }) => {
                tracing::warn!("retention leaves dump {id} alone: {e}");
            }
            Err(RepoError::NoSuch { .. } | RepoError::BeingDeleted { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The newest backup whose WAL range (start to end LSN on its timeline) the
/// archive holds.
async fn newest_restorable(
    repo: &Repository,
    backups: &[BackupManifest],
) -> Result<Option<String>, JobError> {
    let mut newest_first: Vec<&BackupManifest> = backups.iter().collect();
    newest_first.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then(b.id.cmp(&a.id)));
    for m in newest_first {
        let archive = repo.wal_archive(m.wal_segment_size, Compression::None);
        let missing = archive
            .missing_in_range(m.timeline, m.start_lsn, m.end_lsn)
            .await
            .map_err(JobError::archive("list the WAL archive"))?;
        match missing {
            None => return Ok(Some(m.id.clone())),
            Some(name) => tracing::warn!(
                "backup {} is not restorable: WAL segment {name} is missing from the archive",
                m.id
            ),
        }
    }
    Ok(None)
}

/// Remove (or, with `dry_run`, count) the archived WAL no backup of
/// `remaining` needs, and that is not retained past `now`.
async fn expire_wal(
    repo: &Repository,
    remaining: &[BackupManifest],
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<WalExpiry, JobError> {
    let Some(cluster) = repo.cluster().await? else {
        return Ok(WalExpiry::default());
    };
    let seg = cluster.wal_segment_size;
    let mut needs = Vec::new();
    for m in remaining {
        let need = WalNeed::of_segment(&m.wal_start, seg).ok_or_else(|| RepoError::BadObject {
            key: layout::set_manifest(SetKind::Backup, &m.id),
            reason: format!(
                "invalid first WAL segment {:?} (no WAL was removed)",
                m.wal_start
            ),
        })?;
        needs.push((m, need));
    }
    let kept_from = needs
        .iter()
        .min_by(|a, b| {
            a.0.finished_at
                .cmp(&b.0.finished_at)
                .then(a.0.id.cmp(&b.0.id))
        })
        .map(|(m, _)| m.wal_start.clone());
    let needs: Vec<WalNeed> = needs.into_iter().map(|(_, n)| n).collect();
    let listing = repo
        .storage()
        .list(WAL_PREFIX)
        .await
        .map_err(|e| JobError::Repo(e.into()))?;
    let gone = retention::wal_to_remove(
        &needs,
        listing.iter().map(|o| (o.key.as_str(), o.size)),
        seg,
    );
    let (gone, retained, retained_until) = split_retained(repo, gone, &listing, now).await?;
    if !dry_run && !gone.keys.is_empty() {
        repo.wal_archive(seg, Compression::None)
            .delete_listed(&listing, &gone.keys)
            .await
            .map_err(|e| JobError::Repo(e.into()))?;
        tracing::info!("expired {} WAL objects", gone.keys.len());
    }
    let name = |k: &String| k.rsplit('/').next().unwrap_or(k).to_string();
    Ok(WalExpiry {
        kept_from,
        objects: gone.keys.len() as u64,
        bytes: gone.bytes,
        first: gone.keys.first().map(name),
        last: gone.keys.last().map(name),
        retained_objects: retained.keys.len() as u64,
        retained_bytes: retained.bytes,
        retained_until,
    })
}

/// Object Lock: of the WAL objects to remove, those still retained at
/// `now` stay (`retention::split_retained`), asked object by object.
pub(crate) async fn split_retained(
    repo: &Repository,
    removal: retention::WalRemoval,
    listing: &[crate::storage::ObjectMeta],
    now: DateTime<Utc>,
) -> Result<
    (
        retention::WalRemoval,
        retention::WalRemoval,
        Option<DateTime<Utc>>,
    ),
    JobError,
> {
    if repo.object_lock().is_none() {
        return Ok((removal, Default::default(), None));
    }
    let sizes: BTreeMap<String, u64> = listing.iter().map(|o| (o.key.clone(), o.size)).collect();
    let retained = repo.retained_until_each(&removal.keys).await?;
    Ok(retention::split_retained(removal, &retained, &sizes, now))
}
