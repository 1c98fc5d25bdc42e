//! The daemon's jobs: one run of a backup, dumps, retention or a drill —
//! the same job functions the CLI calls — recorded when it ends, retried
//! with backoff when a scheduled one failed, and retention after each
//! success, and after each backup or dump a copy into every copy
//! repository (`[[repository]]` with `copy = true`, then its own retention).
//! Never two of a kind at once (`Shared::request` sees to that).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::config::{self, DaemonConfig};
use super::{schedule_key, JobKind, Request, Shared};
use crate::jobs::{backup, dump, JobError, Progress};
use crate::pipeline::PipelineConfig;
use crate::repo::runs::RunRecord;
use crate::repo::SetKind;

/// A job's task panicked: a bug. Record it as a failed run, free its kind
/// for the next run, and keep the daemon going (the panic is handled here,
/// so it does not turn the process's exit code into 70 later).
pub(super) async fn job_panicked(shared: &Shared, label: &'static str, e: &tokio::task::JoinError) {
    if !e.is_panic() {
        shared.state().running.remove(label);
        return;
    }
    let what =
        crate::cli::exit::take_panic().unwrap_or_else(|| format!("the {label} job panicked"));
    let message = crate::cli::exit::internal_message(&what);
    tracing::error!(kind = label, "{message}");
    shared.state().running.remove(label);
    let now = Utc::now();
    shared
        .finish(shared.failure(label, now, "supervisor", message))
        .await;
}

/// Run one job to its end and record it.
pub(super) async fn run_job(shared: Arc<Shared>, req: Request, cancel: CancellationToken) {
    let label = req.kind.label();
    let started = Utc::now();
    let t0 = Instant::now();
    let span = tracing::info_span!("job", kind = label, id = %req.job_id, trigger = req.trigger);
    let outcome =
        tracing::Instrument::instrument(run_kind(&shared, &req.kind, &cancel), span).await;
    let cfg = shared.cfg();
    let record =
        |ok: bool, id: Option<String>, bytes: u64, message: Option<String>, database| RunRecord {
            kind: label.to_string(),
            ok,
            started_at: started,
            finished_at: Utc::now(),
            seconds: t0.elapsed().as_secs_f64(),
            bytes,
            id,
            trigger: req.trigger.to_string(),
            message,
            database,
            host: shared.host.clone(),
        };
    let mut succeeded = false;
    let mut failed = false;
    let mut made: Vec<String> = Vec::new();
    match outcome {
        Ok(done) => {
            for d in done {
                match d {
                    Ok((id, bytes, database)) => {
                        tracing::info!(
                            kind = label,
                            id = id.as_deref().unwrap_or(""),
                            "run succeeded"
                        );
                        succeeded = true;
                        made.extend(id.clone());
                        shared.finish(record(true, id, bytes, None, database)).await;
                    }
                    Err((e, database)) if cancel.is_cancelled() => {
                        tracing::warn!(kind = label, "run abandoned at shutdown: {e}");
                        let _ = database;
                    }
                    Err((e, database)) => {
                        failed = true;
                        let message = shared.redact(&e.to_string());
                        tracing::error!(kind = label, "run failed: {message}");
                        shared
                            .finish(record(false, None, 0, Some(message), database))
                            .await;
                    }
                }
            }
        }
        Err(e) => {
            failed = true;
            let message = shared.redact(&e.to_string());
            tracing::error!(kind = label, "run failed: {message}");
            shared
                .finish(record(false, None, 0, Some(message), None))
                .await;
        }
    }
    // Into every copy repository, before the primary's retention runs.
    if matches!(req.kind, JobKind::Backup | JobKind::Dump(_)) && !made.is_empty() {
        for c in &cfg.copies {
            if cancel.is_cancelled() {
                break;
            }
            copy_to(&shared, c, &made, req.trigger, &cancel).await;
        }
    }
    let again = {
        let mut st = shared.state();
        st.running.remove(label);
        req.kind == JobKind::Expire && std::mem::take(&mut st.expire_again)
    };
    if matches!(req.kind, JobKind::Backup | JobKind::Dump(Some(_))) && !cancel.is_cancelled() {
        schedule_retry(&shared, &req.kind, failed);
    }
    // Retention after each successful backup or dump.
    let has_policy = cfg.retention_backups.has_rules() || cfg.retention_dumps.has_rules();
    if ((succeeded && req.kind != JobKind::Expire) || again) && has_policy && !cancel.is_cancelled()
    {
        if let Err(r) = shared.request_or(JobKind::Expire, "after-success", |st| {
            st.expire_again = true
        }) {
            tracing::info!(
                "retention already runs ({}): it runs again when done",
                r.job_id
            );
        }
    }
}

/// After a failed backup or dump, run it again sooner than its schedule:
/// 1 min, then 2, 4, … up to 30 min after each failure in a row, but never
/// later than the next regular run. A success resets the count.
fn schedule_retry(shared: &Shared, kind: &JobKind, failed: bool) {
    let key = schedule_key(kind);
    let mut st = shared.state();
    if !failed {
        st.failures.remove(&key);
        return;
    }
    let n = {
        let n = st.failures.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let delay = retry_delay(n);
    let retry = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    if st
        .next_runs
        .get(&key)
        .is_none_or(|regular| retry < *regular)
    {
        tracing::info!(
            "{} failed {n} time(s) in a row: trying again in {}",
            kind.label(),
            crate::units::format_duration(delay)
        );
        st.next_runs.insert(key, retry);
    }
}

/// The wait before the retry after `n` failures in a row.
fn retry_delay(n: u32) -> Duration {
    Duration::from_secs(60 << n.saturating_sub(1).min(5)).min(Duration::from_secs(1800))
}

/// (set id, bytes, database) of each successful unit of a job.
type Done = Result<(Option<String>, u64, Option<String>), (JobError, Option<String>)>;

async fn run_kind(
    shared: &Shared,
    kind: &JobKind,
    cancel: &CancellationToken,
) -> Result<Vec<Done>, JobError> {
    let cfg = shared.cfg();
    match kind {
        JobKind::Backup => {
            let s = backup::BackupSettings {
                conn: cfg.db.clone(),
                pipeline: PipelineConfig {
                    compression: cfg.backup.compression,
                    in_flight: cfg.backup.jobs,
                    ..PipelineConfig::default()
                },
                fast_checkpoint: cfg.backup.fast_checkpoint,
                manifest_checksums: "CRC32C".into(),
                max_rate_kbps: cfg.backup.max_rate_kbps,
                server_compression: None,
                name: None,
                wal: if cfg.backup.stream_wal {
                    backup::WalSource::Stream
                } else {
                    backup::WalSource::Archive
                },
                wal_wait: Duration::from_secs(600),
            };
            let r = backup::run(
                &shared.repo,
                &s,
                Arc::new(Progress::default()),
                cancel.clone(),
            )
            .await;
            Ok(vec![r
                .map(|r| (Some(r.id), r.bytes_stored, None))
                .map_err(|e| (e, None))])
        }
        JobKind::Dump(which) => {
            let mut out = Vec::new();
            for (i, d) in cfg.dumps.iter().enumerate() {
                if which.is_some_and(|w| w != i) {
                    continue;
                }
                if cancel.is_cancelled() {
                    break;
                }
                let s = dump::DumpSettings {
                    conn: cfg.db.with_dbname(&d.database),
                    jobs: d.jobs,
                    pipeline: PipelineConfig {
                        compression: d.compression,
                        ..PipelineConfig::default()
                    },
                    schema_only: false,
                    data_only: false,
                    tables: Vec::new(),
                    exclude_tables: Vec::new(),
                    name: None,
                    description: Some("scheduled by pgtide daemon".into()),
                    split_size: 256 << 20,
                    split_by: dump::plan::SplitBy::Output,
                    pg_dump: d.pg_dump.clone(),
                    lock_timeout: Duration::from_secs(30),
                    copy_format: dump::CopyFormat::Auto,
                };
                let r = dump::run(
                    &shared.repo,
                    &s,
                    Arc::new(Progress::default()),
                    cancel.clone(),
                )
                .await;
                out.push(
                    r.map(|r| (Some(r.id), r.bytes_stored, Some(d.database.clone())))
                        .map_err(|e| (e, Some(d.database.clone()))),
                );
            }
            Ok(out)
        }
        JobKind::Expire => {
            let r = expire(shared, &cfg).await;
            Ok(vec![r
                .map(|bytes| (None, bytes, None))
                .map_err(|e| (e, None))])
        }
        JobKind::Drill => Ok(vec![drill(shared, &cfg, cancel)
            .await
            .map_err(|e| (e, None))]),
    }
}

/// A restore drill of what `[drill] what` names; a failed check is an
/// error of the run (its message says which step).
async fn drill(
    shared: &Shared,
    cfg: &DaemonConfig,
    cancel: &CancellationToken,
) -> Result<(Option<String>, u64, Option<String>), JobError> {
    use crate::jobs::drill::{self, DrillSettings};
    let repo = &shared.repo;
    // An encrypted repository is read with the keys of the daemon's
    // environment (PGTIDE_IDENTITY_FILE, PGTIDE_PASSPHRASE_FILE,
    // PGTIDE_PASSPHRASE); without one the drill fails with a key error.
    let secrets = crate::crypt::Secrets::gather(None, None).map_err(JobError::Invalid)?;
    repo.require_unlocked(&secrets)?;
    let id = match cfg.drill.what {
        config::DrillWhat::Backup => repo.resolve(SetKind::Backup, "latest").await?,
        config::DrillWhat::Dump => repo.resolve(SetKind::Dump, "latest").await?,
        config::DrillWhat::Latest => repo.resolve_any("latest").await?,
    };
    let sql = match &cfg.drill.sql_file {
        Some(p) => Some(
            tokio::fs::read_to_string(p)
                .await
                .map_err(|e| JobError::Io {
                    context: format!("read the drill's sql_file {}", p.display()),
                    source: e,
                })?,
        ),
        None => None,
    };
    let s = DrillSettings {
        scratch_base: cfg.drill.scratch.clone().unwrap_or_else(std::env::temp_dir),
        keep: false,
        dry_run: false,
        target: crate::jobs::physical_restore::select::Target::End,
        sql,
        sql_database: None,
        pg_bin: None,
        pg_dump: None,
        os_user: None,
        superuser: None,
        jobs: cfg.backup.jobs,
        repo_url: cfg.repo.clone(),
        secret_args: crate::crypt::secrets::pass_on(None, None),
    };
    let r = drill::run(repo, &id, &s, Arc::new(Progress::default()), cancel.clone()).await?;
    if r.ok {
        Ok((Some(r.id.clone()), 0, None))
    } else {
        Err(JobError::DrillCheck(format!(
            "drill of {}: {}",
            r.id,
            r.message()
        )))
    }
}

/// Copy the sets `ids` and every WAL object it lacks into copy repository
/// `c` (holding its writer lock), then apply its retention; record the run
/// (kind `copy`). A failure is recorded and logged: the primary's run
/// stays a success, and the next one copies what is missing.
async fn copy_to(
    shared: &Shared,
    c: &config::CopyConfig,
    ids: &[String],
    trigger: &str,
    cancel: &CancellationToken,
) {
    use crate::jobs::copy;
    let started = Utc::now();
    let t0 = Instant::now();
    let cfg = shared.cfg();
    let result: Result<u64, JobError> = async {
        let to = crate::repo::Repository::open_copy_target(
            crate::storage::open(&c.url)
                .await
                .map_err(crate::repo::RepoError::from)?,
            &shared.repo,
        )
        .await?;
        let lock = crate::repo::lock::RepoLock::acquire(
            &to,
            "daemon copy",
            crate::repo::lock::LockTimings {
                heartbeat: cfg.lock_heartbeat,
                stale_after: cfg.lock_stale_after,
            },
        )
        .await?;
        let work = async {
            let mut bytes = 0;
            for id in ids {
                let r = copy::run(
                    &shared.repo,
                    &to,
                    &copy::Selection::Id(id.clone()),
                    true,
                    cfg.backup.jobs.min(4),
                    Arc::new(Progress::default()),
                    cancel.clone(),
                )
                .await?;
                bytes += r.bytes_copied;
            }
            if c.retention_backups.has_rules() || c.retention_dumps.has_rules() {
                let policy = crate::jobs::expire::ExpirePolicy {
                    backups: c.retention_backups.clone(),
                    dumps: c.retention_dumps.clone(),
                };
                crate::jobs::expire::run(&to, &policy, false, Utc::now()).await?;
            }
            Ok::<u64, JobError>(bytes)
        }
        .await;
        if let Err(e) = lock.release().await {
            // Handled here: a lock left behind is taken over once stale.
            tracing::warn!("could not release the lock of {}: {e}", c.url);
        }
        work
    }
    .await;
    let (ok, bytes, message) = match result {
        Ok(b) => {
            tracing::info!(to = %c.url, "copy succeeded");
            (true, b, format!("copied to {}", c.url))
        }
        Err(e) => {
            let m = format!("copy to {}: {e}", c.url);
            tracing::error!("run failed: {}", shared.redact(&m));
            (false, 0, m)
        }
    };
    shared
        .finish(RunRecord {
            kind: "copy".into(),
            ok,
            started_at: started,
            finished_at: Utc::now(),
            seconds: t0.elapsed().as_secs_f64(),
            bytes,
            id: ids.last().cloned(),
            trigger: trigger.to_string(),
            message: Some(message),
            database: None,
            host: shared.host.clone(),
        })
        .await;
}

/// Retention with the configured policies; returns the bytes freed.
async fn expire(shared: &Shared, cfg: &DaemonConfig) -> Result<u64, JobError> {
    let policy = crate::jobs::expire::ExpirePolicy {
        backups: cfg.retention_backups.clone(),
        dumps: cfg.retention_dumps.clone(),
    };
    let r = crate::jobs::expire::run(&shared.repo, &policy, false, Utc::now()).await?;
    Ok(r.bytes_freed + r.wal.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_half_an_hour() {
        let secs: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 960, 1800, 1800, 1800]);
    }
}
