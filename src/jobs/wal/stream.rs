//! `pgtide wal stream`: continuous WAL archiving through a physical
//! replication slot.
//!
//! Invariants:
//! - The flush position reported to the server (which frees WAL held by the
//!   slot) is never beyond what the repository holds durably: the end of the
//!   last complete segment archived, or of the last `.partial` uploaded.
//! - Every (re)connection starts at a segment boundary at or before that
//!   position, so a segment is always assembled whole from contiguous data;
//!   segments already archived are re-sent identical and pushing them is a
//!   no-op.
//! - What the repository holds never shrinks: a `.partial` is only replaced
//!   by a longer one, also while a reconnection re-streams its segment.
//! - At the end of a timeline the partial last segment is stored as a
//!   `.partial`, the new timeline's history file is archived, and streaming
//!   continues on the new timeline.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::segment::SegmentAssembler;
use crate::jobs::JobError;
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::{history_name, segment_name, Lsn};
use crate::pg::replication::{parse_size_setting, ReplError, ReplEvent, ReplicationClient};
use crate::pipeline::Compression;
use crate::repo::wal_archive::{WalArchive, WalError};
use crate::repo::{RepoError, Repository};

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub conn: ConnInfo,
    pub slot: String,
    pub create_slot: bool,
    pub compression: Compression,
    /// Upload the tail of the current segment this often (0: never).
    pub partial_interval: Duration,
    /// Send a standby status update at least this often.
    pub status_interval: Duration,
    /// Stop once this LSN is archived (tests and one-shot catch-up).
    pub stop_at: Option<Lsn>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    pub segments: u64,
    pub partials: u64,
    pub reconnects: u64,
    pub timeline: u32,
    /// The flush position last reported to the server.
    pub flushed: Lsn,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Repl(#[from] ReplError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Assembly(#[from] super::segment::AssemblyError),
    /// The repository itself (binding it to the cluster on every
    /// (re)connection): a store that is down for a while must not end the
    /// stream.
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Job(#[from] JobError),
}

impl StreamError {
    fn is_retryable(&self) -> bool {
        match self {
            StreamError::Repl(e) => e.is_retryable(),
            StreamError::Wal(e) => e.is_retryable(),
            // A gap after a reconnect is resolved by reconnecting from the slot.
            StreamError::Assembly(_) => true,
            StreamError::Repo(RepoError::Storage(e)) => e.is_retryable(),
            StreamError::Repo(_) => false,
            StreamError::Job(_) => false,
        }
    }
}

impl From<StreamError> for JobError {
    fn from(e: StreamError) -> JobError {
        match e {
            StreamError::Repl(r) => JobError::Replication {
                context: "stream WAL",
                source: r,
            },
            StreamError::Job(j) => j,
            StreamError::Repo(r) => r.into(),
            other => JobError::Invalid(format!("stream WAL: {other}")),
        }
    }
}

/// Stream until cancelled (or `stop_at`), reconnecting with backoff after
/// errors that may pass (server restart, connection cut, storage outage).
pub async fn run(
    repo: &Repository,
    s: &StreamSettings,
    cancel: CancellationToken,
) -> Result<StreamReport, JobError> {
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    let mut report = StreamReport::default();
    let mut backoff = FIRST_BACKOFF;
    // A slot in use at the first connection belongs to another streamer: an
    // error. After we have streamed, it may be our own previous walsender
    // that the server has not yet noticed is gone (it lets go within
    // wal_sender_timeout): retry, for a while.
    let mut connected_once = false;
    let mut slot_busy_since: Option<Instant> = None;
    loop {
        let attempt_started = Instant::now();
        let result = session(repo, s, &cancel, &mut report).await;
        if let Err(StreamError::Repl(ReplError::SlotInUse { .. })) = &result {
            let since = *slot_busy_since.get_or_insert_with(Instant::now);
            if !connected_once || since.elapsed() > Duration::from_secs(180) {
                return Err(result.expect_err("matched an error").into());
            }
        } else {
            slot_busy_since = None;
            connected_once = true;
        }
        match result {
            Ok(()) => return Ok(report),
            Err(e) if e.is_retryable() && cancel.is_cancelled() => {
                // Told to stop while the server or the store was away (e.g.
                // both stopped at shutdown): a normal stop, nothing is lost
                // because the slot keeps what the repository does not hold.
                tracing::warn!("WAL stream stopped while interrupted: {e}");
                return Ok(report);
            }
            Err(e) if e.is_retryable() => {
                // A session that ran for a while was a success: after it,
                // retry quickly, not after the backoff of an older outage.
                if attempt_started.elapsed() > Duration::from_secs(60) {
                    backoff = FIRST_BACKOFF;
                }
                // Logged here, where it is handled: the stream goes on.
                tracing::warn!("WAL stream interrupted, reconnecting in {:?}: {e}", backoff);
                report.reconnects += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Ok(report),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One connection's worth of streaming. Ok(()) means: stop (cancelled or
/// `stop_at` reached).
async fn session(
    repo: &Repository,
    s: &StreamSettings,
    cancel: &CancellationToken,
    report: &mut StreamReport,
) -> Result<(), StreamError> {
    let mut client = ReplicationClient::connect(&s.conn, "pgtide wal stream").await?;
    let version = client.server_version();
    if !version.is_supported() {
        return Err(JobError::UnsupportedServer(version).into());
    }
    let sys = client.identify_system().await?;
    let seg_text = client.show("wal_segment_size").await?;
    let seg_size = parse_size_setting(&seg_text)
        .ok_or_else(|| JobError::Invalid(format!("unexpected wal_segment_size {seg_text:?}")))?;
    repo.bind_cluster(&sys.system_identifier, seg_size).await?;
    let archive = WalArchive::new(repo.storage().clone(), seg_size, s.compression);

    // Where to start: the slot's restart point, or after the newest archived
    // segment, whichever is later; on the timeline the archive is on.
    let slot = client.read_slot(&s.slot).await?;
    let mut created = None;
    if slot.is_none() {
        match client.create_physical_slot(&s.slot, false, true).await {
            Ok(lsn) if s.create_slot => created = lsn,
            Ok(_) => {
                // Only reached on servers without READ_REPLICATION_SLOT, where a
                // missing slot cannot be told from an existing one up front.
                let _ = client.drop_slot(&s.slot, false).await;
                return Err(JobError::Invalid(format!(
                    "replication slot {} does not exist (pass --create-slot to create it)",
                    s.slot
                ))
                .into());
            }
            Err(ReplError::SlotExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if created.is_none() && version.has_read_replication_slot() && !s.create_slot {
            return Err(JobError::Invalid(format!(
                "replication slot {} does not exist (pass --create-slot to create it)",
                s.slot
            ))
            .into());
        }
    }
    let held = archive.segments().await?;
    let (archive_tli, archive_next) = held
        .iter()
        .next_back()
        .and_then(|(tli, segs)| {
            segs.iter()
                .next_back()
                .map(|&n| (*tli, Lsn((n + 1) * seg_size)))
        })
        .unwrap_or((sys.timeline, Lsn::INVALID));
    // The slot's restart point when the server can tell (15+, or a slot
    // just created); otherwise only the archive knows where we were.
    let slot_start = slot.as_ref().and_then(|s| s.restart_lsn).or(created);
    let mut tli =
        slot.as_ref()
            .and_then(|s| s.restart_tli)
            .unwrap_or(if archive_tli <= sys.timeline {
                archive_tli
            } else {
                sys.timeline
            });
    if archive_tli > tli && archive_tli <= sys.timeline {
        tli = archive_tli;
    }
    let server_end = sys.xlogpos.segment_start(seg_size);
    let archive_next = (archive_tli == tli && archive_next != Lsn::INVALID)
        .then_some(archive_next.min(server_end));
    let start = match (slot_start, archive_next) {
        // Never before the slot (the server may have removed that WAL),
        // never re-streaming what the archive already holds whole.
        (Some(slot), Some(next)) => slot.segment_start(seg_size).max(next),
        (Some(slot), None) => slot.segment_start(seg_size),
        // No restart point (13-14, existing slot): continue the archive.
        (None, Some(next)) => next,
        (None, None) => server_end,
    };
    tracing::info!(slot = %s.slot, %start, tli, "starting WAL stream");
    client.start_physical(Some(&s.slot), start, tli).await?;
    let mut asm = SegmentAssembler::new(start, tli, seg_size);
    let mut flushed = start;
    let mut last_status = Instant::now();
    let mut last_partial = Instant::now();
    // Length of the partial of the current segment that the repository
    // holds: only a longer one is ever uploaded.
    let mut partial_len = stored_partial_len(&archive, &asm, seg_size).await?;
    report.timeline = tli;

    loop {
        let wait = s.status_interval.min(if s.partial_interval.is_zero() {
            s.status_interval
        } else {
            s.partial_interval
        });
        let ev = tokio::select! {
            ev = client.recv_timeout(wait) => ev?,
            _ = cancel.cancelled() => {
                // Flush what we have (if it is more than the repository
                // holds) and tell the server.
                if let Some((name, data)) = asm.partial().filter(|(_, d)| d.len() > partial_len) {
                    let end = asm.next_lsn();
                    archive.push_partial(&name, data).await?;
                    flushed = end;
                    report.partials += 1;
                }
                let _ = client.send_status(asm.next_lsn(), flushed, Lsn::INVALID, false).await;
                report.flushed = flushed;
                return Ok(());
            }
        };
        let mut reply_now = false;
        match ev {
            Some(ReplEvent::XLogData { start, data, .. }) => {
                for seg in asm.push(start, &data)? {
                    archive.push(&seg.name, seg.data).await?;
                    report.segments += 1;
                    flushed = Lsn((seg.segno + 1) * seg_size);
                    partial_len = 0;
                    reply_now = true;
                    tracing::debug!(segment = %seg.name, "archived");
                }
            }
            Some(ReplEvent::Keepalive {
                reply_requested, ..
            }) => reply_now = reply_requested,
            Some(ReplEvent::EndOfTimeline {
                next_tli,
                next_tli_start,
            }) => {
                if let Some((name, data)) = asm.partial().filter(|(_, d)| d.len() > partial_len) {
                    archive.push_partial(&name, data).await?;
                    report.partials += 1;
                }
                let (name, content) = client.timeline_history(next_tli).await?;
                let expected = history_name(next_tli);
                if name != expected {
                    tracing::warn!(%name, %expected, "server named the history file differently");
                }
                archive.push(&expected, content).await?;
                tracing::info!(from = tli, to = next_tli, at = %next_tli_start, "following timeline switch");
                tli = next_tli;
                report.timeline = tli;
                let seg_start = next_tli_start.segment_start(seg_size);
                client.start_physical(Some(&s.slot), seg_start, tli).await?;
                asm = SegmentAssembler::new(seg_start, tli, seg_size);
                partial_len = stored_partial_len(&archive, &asm, seg_size).await?;
                continue;
            }
            None => {}
        }
        // The tail of the current segment, on an interval.
        if !s.partial_interval.is_zero() && last_partial.elapsed() >= s.partial_interval {
            last_partial = Instant::now();
            if let Some((name, data)) = asm.partial() {
                if data.len() > partial_len {
                    partial_len = data.len();
                    archive.push_partial(&name, data).await?;
                    flushed = asm.next_lsn();
                    report.partials += 1;
                    reply_now = true;
                }
            }
        }
        if reply_now || last_status.elapsed() >= s.status_interval {
            client
                .send_status(asm.next_lsn(), flushed, Lsn::INVALID, false)
                .await?;
            last_status = Instant::now();
            report.flushed = flushed;
        }
        if s.stop_at.is_some_and(|stop| flushed >= stop) {
            return Ok(());
        }
    }
}

/// How much of the segment `asm` is about to fill the repository already
/// holds as a `.partial` (0: none), e.g. from before a crash or a SIGKILL.
/// A reconnection re-streams the segment from its start, and storing a
/// shorter partial would replace the longer one (`push_partial` keeps only
/// the newest), taking back WAL the slot may already have let go of. A
/// damaged partial counts as none: the next upload replaces it.
async fn stored_partial_len(
    archive: &WalArchive,
    asm: &SegmentAssembler,
    seg_size: u64,
) -> Result<usize, StreamError> {
    let name = segment_name(asm.timeline(), asm.next_lsn().segno(seg_size), seg_size);
    match archive.fetch_partial(&name).await {
        Ok(Some(data)) => Ok(data.len()),
        Ok(None) => Ok(0),
        Err(e @ WalError::Damaged { .. }) => {
            // Handled here: the stream goes on and overwrites it.
            tracing::warn!("ignoring a damaged partial of {name}: {e}");
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}
