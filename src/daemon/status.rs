//! What `GET /status` and `pgtide status` print: one JSON document, built
//! either from a running daemon's state (live stream position, running
//! jobs, next runs) or, when no daemon answers, from the repository alone
//! (the last runs it recorded, the lock holder, the WAL archive).
//!
//! The document (`StatusReport`), field by field:
//! - `source`: `daemon` (live) or `repository` (read from the store).
//! - `repository`: the repository's location.
//! - `daemon`: `{pid, host, started_at, version, config}` of the daemon
//!   that answered (absent when read from the repository).
//! - `lock`: who holds the repository's writer lock, one line (or null).
//! - `wal`: `enabled`, `streaming`, `archived_lsn`, `server_lsn`,
//!   `lag_bytes`, `lag_seconds`, `timeline`, `slot`,
//!   `slot_retained_bytes`, `slot_over_warn`, `slot_resets`, `restarts`,
//!   `last_error`, and `archive`: per timeline the first and last segment
//!   and the missing ones (`gaps`).
//! - `jobs`: per kind (`full`, `dump`, `expire`, `wal`, `slot`, `drill`):
//!   `last_success` and `last_failure` (run records: `started_at`,
//!   `finished_at`, `seconds`, `bytes`, `id`, `trigger`, `message`),
//!   `running` (`job_id`, `started_at`, `trigger`) and `next_run`.
//! - `errors`: the last errors, newest first (`at`, `kind`, `message`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::jobs::inspect::WalTimeline;
use crate::pg::lsn::Lsn;
use crate::repo::runs::RunRecord;
use crate::repo::Repository;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub source: String,
    pub repository: String,
    pub daemon: Option<DaemonInfo>,
    pub lock: Option<String>,
    pub wal: WalStatus,
    pub jobs: BTreeMap<String, KindStatus>,
    pub errors: Vec<ErrorLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub version: String,
    pub config: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WalStatus {
    pub enabled: bool,
    pub streaming: bool,
    pub archived_lsn: Option<String>,
    pub server_lsn: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub timeline: Option<u32>,
    pub slot: Option<String>,
    pub slot_retained_bytes: Option<u64>,
    pub slot_over_warn: bool,
    pub slot_resets: u64,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub archive: Vec<ArchiveTimeline>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveTimeline {
    pub timeline: u32,
    pub segments: u64,
    pub first: String,
    pub last: String,
    pub gaps: Vec<String>,
}

impl From<&WalTimeline> for ArchiveTimeline {
    fn from(w: &WalTimeline) -> Self {
        ArchiveTimeline {
            timeline: w.timeline,
            segments: w.segments,
            first: w.first.clone(),
            last: w.last.clone(),
            gaps: w.gaps.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KindStatus {
    pub last_success: Option<RunRecord>,
    pub last_failure: Option<RunRecord>,
    pub running: Option<RunningJob>,
    pub next_run: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningJob {
    pub job_id: String,
    pub started_at: DateTime<Utc>,
    pub trigger: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorLine {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

/// The repository-wide facts that are costly to read (a listing of every
/// object), refreshed in the background.
#[derive(Debug, Clone)]
pub struct ArchiveSummary {
    pub timelines: Vec<ArchiveTimeline>,
    pub at: DateTime<Utc>,
}

/// The live report of a running daemon.
pub fn live(shared: &Shared) -> StatusReport {
    let cfg = shared.cfg();
    let st = shared.state();
    let live = &shared.live;
    let archived = live.archived.load(Relaxed);
    let server = live.server_end.load(Relaxed);
    let mut jobs: BTreeMap<String, KindStatus> = BTreeMap::new();
    for kind in crate::repo::runs::KINDS {
        let (ok, failed) = st.last.get(*kind).cloned().unwrap_or_default();
        jobs.insert(
            kind.to_string(),
            KindStatus {
                last_success: ok,
                last_failure: failed,
                running: None,
                next_run: None,
            },
        );
    }
    for (kind, r) in &st.running {
        jobs.entry(kind.to_string()).or_default().running = Some(RunningJob {
            job_id: r.job_id.clone(),
            started_at: r.started_at,
            trigger: r.trigger.clone(),
        });
    }
    for (key, at) in &st.next_runs {
        let kind = if key.starts_with("dump") {
            "dump"
        } else {
            key.as_str()
        };
        let e = jobs.entry(kind.to_string()).or_default();
        if e.next_run.is_none_or(|n| *at < n) {
            e.next_run = Some(*at);
        }
    }
    StatusReport {
        source: "daemon".into(),
        repository: shared.repo.location(),
        daemon: Some(DaemonInfo {
            pid: std::process::id(),
            host: shared.host.clone(),
            started_at: shared.started_at,
            version: env!("CARGO_PKG_VERSION").into(),
            config: cfg.path.as_ref().map(|p| p.display().to_string()),
        }),
        lock: Some(format!(
            "pgtide daemon (pid {} on {}, since {})",
            std::process::id(),
            shared.host,
            shared.started_at.format("%Y-%m-%dT%H:%M:%SZ")
        )),
        wal: WalStatus {
            enabled: cfg.wal.stream,
            streaming: live.connected.load(Relaxed),
            archived_lsn: (archived > 0).then(|| Lsn(archived).to_string()),
            server_lsn: (server > 0).then(|| Lsn(server).to_string()),
            lag_bytes: cfg.wal.stream.then(|| live.lag_bytes()),
            lag_seconds: cfg
                .wal
                .stream
                .then(|| live.lag_seconds(Utc::now().timestamp_millis())),
            timeline: Some(live.timeline.load(Relaxed)).filter(|t| *t > 0),
            slot: cfg.wal.stream.then(|| cfg.wal.slot.clone()),
            slot_retained_bytes: st.slot.retained_bytes,
            slot_over_warn: st.slot.over_warn,
            slot_resets: st.slot.resets,
            restarts: st.wal.restarts,
            last_error: st.wal.last_error.clone(),
            archive: st
                .archive
                .as_ref()
                .map(|a| a.timelines.clone())
                .unwrap_or_default(),
        },
        jobs,
        errors: st
            .errors
            .iter()
            .map(|e| ErrorLine {
                at: e.at,
                kind: e.kind.clone(),
                message: e.message.clone(),
            })
            .collect(),
    }
}

/// The report read from the repository alone (no daemon answered).
pub async fn from_repository(repo: &Repository) -> Result<StatusReport, crate::jobs::JobError> {
    let mut jobs = BTreeMap::new();
    let mut errors = Vec::new();
    for kind in crate::repo::runs::KINDS {
        let (ok, failed) = repo.last_runs(kind).await?;
        if let Some(f) = &failed {
            errors.push(ErrorLine {
                at: f.finished_at,
                kind: kind.to_string(),
                message: f.message.clone().unwrap_or_default(),
            });
        }
        jobs.insert(
            kind.to_string(),
            KindStatus {
                last_success: ok,
                last_failure: failed,
                running: None,
                next_run: None,
            },
        );
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.at));
    let listing = crate::jobs::inspect::list(repo).await?;
    let lock = crate::repo::lock::holder(repo)
        .await?
        .map(|h| h.describe(Utc::now()));
    Ok(StatusReport {
        source: "repository".into(),
        repository: repo.location(),
        daemon: None,
        lock,
        wal: WalStatus {
            archive: listing.wal.iter().map(ArchiveTimeline::from).collect(),
            ..WalStatus::default()
        },
        jobs,
        errors,
    })
}

/// Refresh the costly repository facts every minute until the daemon stops.
pub async fn refresher(shared: Arc<Shared>) {
    loop {
        match summarize(&shared.repo).await {
            Ok((timelines, size)) => {
                let mut st = shared.state();
                st.archive = Some(ArchiveSummary {
                    timelines,
                    at: Utc::now(),
                });
                st.repository_size = Some(size);
            }
            Err(e) => {
                // Handled here: tried again at the next refresh.
                tracing::warn!("could not summarize the repository: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shared.cancel.cancelled() => return,
        }
    }
}

async fn summarize(
    repo: &Repository,
) -> Result<(Vec<ArchiveTimeline>, u64), crate::jobs::JobError> {
    let listing = crate::jobs::inspect::list(repo).await?;
    let size = repo
        .storage()
        .list("")
        .await
        .map_err(|e| crate::jobs::JobError::Repo(e.into()))?
        .iter()
        .map(|o| o.size)
        .sum();
    Ok((
        listing.wal.iter().map(ArchiveTimeline::from).collect(),
        size,
    ))
}

/// Human-readable status, for `pgtide status` on a terminal.
pub fn print_human(r: &StatusReport) {
    match &r.daemon {
        Some(d) => println!(
            "daemon      pid {} on {}, up since {} (pgtide {})",
            d.pid,
            d.host,
            d.started_at.format("%Y-%m-%d %H:%M:%SZ"),
            d.version
        ),
        None => println!("daemon      not answering: read from the repository"),
    }
    println!("repository  {}", r.repository);
    println!("lock        {}", r.lock.as_deref().unwrap_or("free"));
    let w = &r.wal;
    if r.daemon.is_some() {
        if w.enabled {
            println!(
                "wal         {} slot {}, archived to {}, lag {} bytes / {:.1} s{}",
                if w.streaming {
                    "streaming through"
                } else {
                    "NOT streaming;"
                },
                w.slot.as_deref().unwrap_or("-"),
                w.archived_lsn.as_deref().unwrap_or("-"),
                w.lag_bytes.unwrap_or(0),
                w.lag_seconds.unwrap_or(0.0),
                w.slot_retained_bytes
                    .map(|b| format!(", slot retains {b} bytes"))
                    .unwrap_or_default()
            );
        } else {
            println!("wal         streaming off");
        }
        if let Some(e) = &w.last_error {
            println!("            last stream error: {e}");
        }
    }
    for t in &w.archive {
        println!(
            "archive     timeline {}: {} segments, {} .. {}{}",
            t.timeline,
            t.segments,
            t.first,
            t.last,
            if t.gaps.is_empty() {
                String::new()
            } else {
                format!(", {} missing (first {})", t.gaps.len(), t.gaps[0])
            }
        );
    }
    for (kind, k) in &r.jobs {
        let when = |x: &Option<RunRecord>| {
            x.as_ref().map_or("never".to_string(), |r| {
                format!(
                    "{}{}",
                    r.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
                    r.id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default()
                )
            })
        };
        let mut line = format!(
            "{kind:<11} last success {}, last failure {}",
            when(&k.last_success),
            when(&k.last_failure)
        );
        if let Some(run) = &k.running {
            line.push_str(&format!(", running {}", run.job_id));
        }
        if let Some(n) = k.next_run {
            line.push_str(&format!(", next {}", n.format("%Y-%m-%d %H:%M:%SZ")));
        }
        println!("{line}");
    }
    for e in r.errors.iter().take(5) {
        println!(
            "error       {} {}: {}",
            e.at.format("%Y-%m-%d %H:%M:%SZ"),
            e.kind,
            e.message
        );
    }
}
