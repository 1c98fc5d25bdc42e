//! `pgtide wal stream`: continuous WAL archiving through a physical
//! replication slot.
//!
//! Invariants:
//! - The flush position reported to the server (which frees WAL held by the
//!   slot, and releases commits waiting for a synchronous standby) is never
//!   beyond what the repository holds durably: the end of the last complete
//!   segment archived, or of the pieces of the current one whose PUT
//!   returned.
//! - Every (re)connection starts at a segment boundary at or before that
//!   position, so a segment is always assembled whole from contiguous data;
//!   segments already archived are re-sent identical and pushing them is a
//!   no-op.
//! - What the repository holds never shrinks: pieces only add bytes past
//!   what is held (`tail`), also while a reconnection re-streams a segment;
//!   they are removed only once a merged piece or the complete segment
//!   holds their bytes.
//! - Requests: one LIST of the current segment's pieces per connection,
//!   then at most one PUT per `--partial-interval` while WAL flows and
//!   none while it does not; one PUT and one batch delete per segment.
//! - `--synchronous`: new bytes go up as soon as nothing more is waiting
//!   on the connection and no upload runs (the next upload takes all that
//!   arrived meanwhile), and the flush position is sent right after.
//! - At the end of a timeline the rest of the last segment is stored as a
//!   piece, the new timeline's history file is archived, and streaming
//!   continues on the new timeline.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use super::segment::SegmentAssembler;
use super::start::{self, ServerTimelines, StartPoint};
use super::tail::{Tail, TailStats};
use crate::jobs::JobError;
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::{history_name, Lsn};
use crate::pg::proto::history;
use crate::pg::wire::{parse_size_setting, ReplEvent, WireClient, WireError};
use crate::pipeline::Compression;
use crate::repo::wal_archive::{WalArchive, WalError};
use crate::repo::{RepoError, Repository};

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub conn: ConnInfo,
    pub slot: String,
    pub create_slot: bool,
    pub compression: Compression,
    /// Upload the new bytes of the current segment as a piece this often
    /// (0: never; segments still go up whole).
    pub partial_interval: Duration,
    /// Upload new bytes as soon as they arrive and no upload is running,
    /// and report them flushed right after (a synchronous standby for
    /// `synchronous_standby_names`).
    pub synchronous: bool,
    /// `application_name` of the replication connection (the name
    /// `synchronous_standby_names` lists), unless the connection string
    /// names one.
    pub application_name: String,
    /// Send a standby status update at least this often.
    pub status_interval: Duration,
    /// Stop once this LSN is archived (tests and one-shot catch-up).
    pub stop_at: Option<Lsn>,
    /// Where the stream stands, for a supervisor's status and metrics.
    pub live: Option<Arc<StreamLive>>,
    /// Start at the slot's restart point when the archive ends before it,
    /// without first asking the server for the WAL where the archive ends:
    /// set after the slot was dropped on purpose to free that WAL (the
    /// daemon's slot guard), so the gap is accepted rather than the old WAL
    /// retained again.
    pub accept_gap: bool,
}

/// The stream's position as it goes, shared with whoever watches it (the
/// daemon's status and metrics). Updated on every message; reading it
/// never blocks the stream.
#[derive(Debug, Default)]
pub struct StreamLive {
    /// The LSN up to which the repository holds the WAL (what the slot was
    /// told is flushed).
    pub archived: AtomicU64,
    /// The server's end of WAL, as its last message said.
    pub server_end: AtomicU64,
    pub timeline: AtomicU32,
    /// A replication connection is streaming now.
    pub connected: AtomicBool,
    /// Unix time (ms) when the archive last held everything the server had
    /// sent word of: the lag in seconds is measured from it.
    pub caught_up_ms: AtomicI64,
}

impl StreamLive {
    fn archived_to(&self, lsn: Lsn) {
        self.archived.store(lsn.0, Ordering::Relaxed);
        self.check_caught_up();
    }

    fn server_at(&self, lsn: Lsn) {
        self.server_end.fetch_max(lsn.0, Ordering::Relaxed);
        self.check_caught_up();
    }

    fn check_caught_up(&self) {
        if self.archived.load(Ordering::Relaxed) >= self.server_end.load(Ordering::Relaxed) {
            self.caught_up_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        }
    }

    /// Bytes the server has that the archive does not.
    pub fn lag_bytes(&self) -> u64 {
        self.server_end
            .load(Ordering::Relaxed)
            .saturating_sub(self.archived.load(Ordering::Relaxed))
    }

    /// Seconds since the archive last held everything the server had.
    pub fn lag_seconds(&self, now_ms: i64) -> f64 {
        if self.lag_bytes() == 0 {
            return 0.0;
        }
        let since = self.caught_up_ms.load(Ordering::Relaxed);
        if since == 0 {
            return 0.0;
        }
        (now_ms - since).max(0) as f64 / 1000.0
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    pub segments: u64,
    /// Pieces uploaded (merged pieces included).
    pub partials: u64,
    /// WAL bytes uploaded in pieces (merged pieces included).
    pub piece_bytes: u64,
    /// Merged pieces uploaded (a slowly filling segment's pieces combined).
    pub merges: u64,
    /// Bytes of the WAL objects sent (segments and pieces, compressed).
    pub sent_bytes: u64,
    pub reconnects: u64,
    pub timeline: u32,
    /// The flush position last reported to the server.
    pub flushed: Lsn,
}

impl StreamReport {
    fn absorb(&mut self, stats: &mut TailStats) {
        let t = std::mem::take(stats);
        self.partials += t.pieces;
        self.piece_bytes += t.piece_bytes;
        self.merges += t.merges;
        self.sent_bytes += t.sent_bytes;
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Repl(#[from] WireError),
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
    /// Reconnect at once from another start point (already logged).
    #[error("restart the stream from another point")]
    Restart,
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
            StreamError::Restart => true,
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
            StreamError::Wal(w) => JobError::archive("stream WAL")(w),
            other => JobError::BadStream(format!("stream WAL: {other}")),
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
    // Set once the server said it no longer has the WAL where the archive
    // ends (that start, and where we went instead): later sessions that
    // would start there go to the fallback right away.
    let mut skip_to: Option<(StartPoint, StartPoint)> = None;
    loop {
        let attempt_started = Instant::now();
        let result = session(repo, s, &cancel, &mut report, &mut skip_to).await;
        if let Err(StreamError::Repl(WireError::SlotInUse { .. })) = &result {
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
            Err(StreamError::Restart) => continue,
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
    skip_to: &mut Option<(StartPoint, StartPoint)>,
) -> Result<(), StreamError> {
    let mut client = WireClient::connect(&s.conn, &s.application_name).await?;
    let version = client.server_version();
    if !version.is_supported() {
        return Err(JobError::UnsupportedServer(version).into());
    }
    let sys = client.identify_system().await?;
    let seg_text = client.show("wal_segment_size").await?;
    let seg_size = parse_size_setting(&seg_text)
        .ok_or_else(|| JobError::BadStream(format!("unexpected wal_segment_size {seg_text:?}")))?;
    repo.bind_cluster(&sys.system_identifier, seg_size).await?;
    let archive = repo.wal_archive(seg_size, s.compression);

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
            Err(WireError::SlotExists { .. }) => {}
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
    // The slot's restart point when the server can tell (15+, or a slot
    // just created); on 13/14 a plain SQL connection may read it from
    // pg_replication_slots.
    let slot_restart = match (&slot, created) {
        (Some(info), _) => info.restart_lsn.map(|l| (l, info.restart_tli)),
        (None, Some(lsn)) => Some((lsn, None)),
        (None, None) if !version.has_read_replication_slot() => {
            slot_restart_by_sql(&s.conn, &s.slot)
                .await
                .map(|l| (l, None))
        }
        (None, None) => None,
    };
    let timelines = ServerTimelines {
        ancestors: if sys.timeline > 1 {
            let (_, content) = client.timeline_history(sys.timeline).await?;
            history::parse_for_timeline(sys.timeline, &content).map_err(|e| {
                JobError::Invalid(format!(
                    "timeline history of timeline {} from the server: {e}",
                    sys.timeline
                ))
            })?
        } else {
            Vec::new()
        },
        current: sys.timeline,
    };
    let archived: Vec<(u32, Lsn)> = archive
        .segments()
        .await?
        .iter()
        .filter_map(|(tli, segs)| segs.last().map(|&n| (*tli, Lsn((n + 1) * seg_size))))
        .collect();
    let plan = start::plan(seg_size, &timelines, sys.xlogpos, &archived, slot_restart);
    if s.accept_gap && skip_to.is_none() {
        if let Some(f) = plan.fallback {
            tracing::error!(
                "the slot was given up: archiving from its restart point {} on timeline {} \
                 instead of from {}; the archive has a gap before it, so older backups cannot \
                 be restored past it (hint: take a new backup)",
                f.lsn,
                f.tli,
                plan.start.lsn
            );
            *skip_to = Some((plan.start, f));
        }
    }
    // The server no longer had the WAL at `plan.start` last time: go
    // straight to the later of the two fallbacks.
    let fallback = match (*skip_to, plan.fallback) {
        (Some((failed, old)), new) if failed == plan.start => {
            Some(new.filter(|n| n.lsn > old.lsn).unwrap_or(old))
        }
        (_, new) => new,
    };
    let (mut tli, mut start) = match *skip_to {
        Some((failed, _)) if failed == plan.start => {
            let f = fallback.expect("set with the failed start");
            (f.tli, f.lsn)
        }
        _ => (plan.start.tli, plan.start.lsn),
    };
    // What the repository holds of the first segment (one LIST). Pieces
    // holding a segment whole (a streamer stopped before pushing it) make
    // it a segment, and streaming starts after it.
    let mut tail = loop {
        let t = Tail::open(&archive, tli, start, seg_size).await?;
        if !t.is_whole() {
            break t;
        }
        match t.promote(&archive).await {
            Ok(()) => {}
            // A writer without the repository's key (public-key mode)
            // cannot open the pieces to push the segment whole; readers
            // take it from the pieces as they are.
            Err(WalError::Key(e)) => tracing::warn!(
                "a WAL segment before {start} stays as pieces, which cannot be merged without                  the repository's key: {e}"
            ),
            Err(e) => return Err(e.into()),
        }
        start = Lsn(start.0 + seg_size);
    };
    let fallback = fallback.filter(|f| f.lsn > start);
    // The history files of the timelines up to the one streamed: recovery
    // follows timelines through them (a switch seen while streaming
    // archives them too, but a start on a later timeline sees none).
    let histories = archive.histories().await?;
    for t in (2..=tli).filter(|t| timelines.knows(*t) && !histories.contains(t)) {
        match client.timeline_history(t).await {
            Ok((_, content)) => {
                archive.push(&history_name(t), content).await?;
                tracing::info!(timeline = t, "archived the timeline history file");
            }
            // A server recovered with restore_command keeps only its own
            // timeline's history file, which names every ancestor: enough.
            Err(WireError::Server { code, message, .. })
                if code == SqlState::UNDEFINED_FILE && t < sys.timeline =>
            {
                tracing::warn!(timeline = t, "the server no longer has this timeline's history file ({message}): not archived");
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(slot = %s.slot, %start, tli, "starting WAL stream");
    client.start_physical(Some(&s.slot), start, tli).await?;
    let live = s.live.clone().unwrap_or_default();
    live.connected.store(true, Ordering::Relaxed);
    live.timeline.store(tli, Ordering::Relaxed);
    live.archived_to(start);
    // Whatever way this session ends, it no longer streams.
    struct Disconnected(Arc<StreamLive>);
    impl Drop for Disconnected {
        fn drop(&mut self) {
            self.0.connected.store(false, Ordering::Relaxed);
        }
    }
    let _disconnected = Disconnected(live.clone());
    let mut asm = SegmentAssembler::new(start, tli, seg_size);
    // `tail`: what the repository holds of the segment being filled; only
    // bytes past it are uploaded, so what it holds never shrinks.
    // Synchronous: the segment pushed whole in the background (its pieces
    // already hold it), at most one at a time.
    let mut pushing: Option<Pushing> = None;
    let mut flushed = start;
    let mut last_status = Instant::now();
    // When the oldest byte the repository does not hold yet arrived: it
    // goes up as a piece before it has waited `partial_interval` (less the
    // time an upload takes), unless its segment completes first and goes
    // up whole. So a segment that fills within the interval is uploaded
    // once, as a segment, and a slower one in about one piece per interval.
    let mut oldest: Option<Instant> = None;
    let mut upload_time = Duration::ZERO;
    report.timeline = tli;
    // Whether any WAL arrived on this connection.
    let mut received = false;
    // Synchronous: bytes received and not yet uploaded make the next wait
    // zero, so an upload starts as soon as nothing more is waiting (group
    // commit: it takes everything that arrived meanwhile).
    const SYNC_BATCH: u64 = 1 << 20;

    loop {
        let pending = asm.next_lsn().0.saturating_sub(tail.held_lsn().0);
        let due = oldest.filter(|_| !s.partial_interval.is_zero()).map(|t| {
            t + s
                .partial_interval
                .saturating_sub(upload_time.min(s.partial_interval / 2))
        });
        let wait = if s.synchronous && pending > 0 {
            Duration::ZERO
        } else {
            let until_due = due.map_or(s.status_interval, |d| {
                d.saturating_duration_since(Instant::now())
            });
            s.status_interval
                .saturating_sub(last_status.elapsed())
                .min(until_due)
                .max(Duration::from_millis(1))
        };
        let ev = tokio::select! {
            ev = client.recv_timeout(wait) => match ev {
                // "requested WAL segment … has already been removed": 58P01
                // when the file is gone, or whatever errno was left when
                // the server saw it removed while reading.
                Err(WireError::Server { code, message, .. })
                    if (code == SqlState::UNDEFINED_FILE
                        || message.contains("has already been removed"))
                        && !received
                        && fallback.is_some() =>
                {
                    let fallback = fallback.expect("checked");
                    // Handled here: the stream goes on from what the server has.
                    tracing::error!(
                        "the server no longer has the WAL from {start} on timeline {tli} \
                         ({message}): archiving from the slot's restart point {} on timeline {} \
                         instead; the archive has a gap before it, so older backups cannot be \
                         restored past it (hint: take a new backup)",
                        fallback.lsn,
                        fallback.tli
                    );
                    *skip_to = Some((plan.start, fallback));
                    return Err(StreamError::Restart);
                }
                other => other?,
            },
            _ = cancel.cancelled() => {
                // Store what the repository does not hold yet and tell the
                // server.
                if let Some(p) = pushing.take() {
                    report.sent_bytes += p.finish().await?;
                }
                tail.upload(&archive, asm.filled()).await?;
                report.absorb(&mut tail.stats);
                flushed = flushed.max(tail.held_lsn().min(asm.next_lsn()));
                let _ = client.send_status(asm.next_lsn(), flushed, Lsn::INVALID, false).await;
                report.flushed = flushed;
                live.archived_to(flushed);
                archive.flush_index().await;
                return Ok(());
            }
        };
        let mut reply_now = false;
        let mut upload_now = false;
        match ev {
            Some(ReplEvent::XLogData { start, end, data }) => {
                received = true;
                live.server_at(end);
                for seg in asm.push(start, &data)? {
                    if s.synchronous {
                        let keys = tail.finish_segment(&archive, seg.segno, &seg.data).await?;
                        if let Some(p) = pushing.take() {
                            report.sent_bytes += p.finish().await?;
                        }
                        pushing = Some(Pushing::start(&archive, seg.name.clone(), seg.data, keys));
                    } else {
                        tail.complete(&archive, &seg.name, seg.segno, seg.data)
                            .await?;
                    }
                    report.absorb(&mut tail.stats);
                    report.segments += 1;
                    tracing::debug!(segment = %seg.name, "archived");
                }
                upload_now = s.synchronous
                    && asm.next_lsn().0.saturating_sub(tail.held_lsn().0) >= SYNC_BATCH;
            }
            Some(ReplEvent::Keepalive {
                end,
                reply_requested,
            }) => {
                live.server_at(end);
                reply_now = reply_requested;
            }
            Some(ReplEvent::EndOfTimeline {
                next_tli,
                next_tli_start,
            }) => {
                tail.upload(&archive, asm.filled()).await?;
                report.absorb(&mut tail.stats);
                let (name, content) = client.timeline_history(next_tli).await?;
                let expected = history_name(next_tli);
                if name != expected {
                    tracing::warn!(%name, %expected, "server named the history file differently");
                }
                archive.push(&expected, content).await?;
                tracing::info!(from = tli, to = next_tli, at = %next_tli_start, "following timeline switch");
                tli = next_tli;
                report.timeline = tli;
                live.timeline.store(tli, Ordering::Relaxed);
                let seg_start = next_tli_start.segment_start(seg_size);
                client.start_physical(Some(&s.slot), seg_start, tli).await?;
                asm = SegmentAssembler::new(seg_start, tli, seg_size);
                tail = Tail::open(&archive, tli, seg_start, seg_size).await?;
                continue;
            }
            // Nothing more waiting: a synchronous stream uploads now.
            None => upload_now = s.synchronous,
        }
        // New bytes of the current segment: at once when synchronous,
        // otherwise when the oldest of them is due.
        let pending = asm.next_lsn().0.saturating_sub(tail.held_lsn().0);
        if pending == 0 {
            oldest = None;
        } else if oldest.is_none() {
            oldest = Some(Instant::now());
        }
        if due.is_some_and(|d| Instant::now() >= d) {
            upload_now = true;
        }
        if upload_now && pending > 0 {
            let t0 = Instant::now();
            if tail.upload(&archive, asm.filled()).await?.is_some() {
                report.absorb(&mut tail.stats);
                upload_time = t0.elapsed();
            }
            oldest = None;
        }
        // The repository holds `[.., tail.held_lsn())`; a reconnection
        // re-streams from the segment start, so only what has arrived again
        // counts as flushed.
        let durable = tail.held_lsn().min(asm.next_lsn());
        if durable > flushed {
            flushed = durable;
            reply_now = true;
        }
        if reply_now || last_status.elapsed() >= s.status_interval {
            client
                .send_status(asm.next_lsn(), flushed, Lsn::INVALID, false)
                .await?;
            last_status = Instant::now();
            report.flushed = flushed;
            live.archived_to(flushed);
        }
        // Merging pieces (a slowly filling segment) waits until the server
        // has heard of the flush: it changes nothing of what is held.
        tail.merge_due(&archive, asm.filled()).await?;
        report.absorb(&mut tail.stats);
        if pushing.as_ref().is_some_and(Pushing::is_finished) {
            let p = pushing.take().expect("checked");
            report.sent_bytes += p.finish().await?;
        }
        if s.stop_at.is_some_and(|stop| flushed >= stop) {
            if let Some(p) = pushing.take() {
                report.sent_bytes += p.finish().await?;
            }
            archive.flush_index().await;
            return Ok(());
        }
    }
}

/// A complete segment pushed whole in the background (`--synchronous`),
/// then its pieces removed. Its bytes are durable in the pieces already,
/// so nothing waits for it but the next one; dropped, it is aborted (the
/// pieces stay, and the next session pushes the segment from them).
struct Pushing(tokio::task::JoinHandle<Result<u64, WalError>>);

impl Pushing {
    fn start(archive: &WalArchive, name: String, data: bytes::Bytes, keys: Vec<String>) -> Pushing {
        let archive = archive.clone();
        Pushing(tokio::spawn(async move {
            let (_, sent) = archive.push_segment(&name, data, &keys).await?;
            tracing::debug!(segment = %name, "archived");
            Ok(sent)
        }))
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Wait for it; the bytes sent.
    async fn finish(mut self) -> Result<u64, StreamError> {
        let r = (&mut self.0).await;
        match r {
            Ok(r) => Ok(r?),
            Err(e) => Err(WalError::Codec(format!("archive a segment: {e}")).into()),
        }
    }
}

impl Drop for Pushing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The restart point of physical slot `slot`, read with SQL over a normal
/// connection: PostgreSQL 13 and 14 have no `READ_REPLICATION_SLOT`. `None`
/// when the role may not connect to a database (pg_hba.conf lines for
/// `replication` only) or the slot has no restart point; the caller then
/// continues the archive, or starts at the server's position.
async fn slot_restart_by_sql(ci: &ConnInfo, slot: &str) -> Option<Lsn> {
    let read = async {
        let client = crate::pg::connect::connect(ci, "pgtide wal stream")
            .await
            .map_err(|e| e.to_string())?;
        let row = client
            .query_opt(
                "SELECT restart_lsn::text FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1 AND slot_type = 'physical'",
                &[&slot],
            )
            .await
            .map_err(|e| e.to_string())?;
        let text: Option<String> = row.and_then(|r| r.get(0));
        Ok::<_, String>(text.and_then(|t| t.parse::<Lsn>().ok()))
    };
    match read.await {
        Ok(lsn) => lsn,
        Err(e) => {
            // Handled here: the stream still starts, from the archive or the
            // server's position, so WAL the slot kept from before may be
            // left out.
            tracing::warn!(
                "could not read the restart point of slot {slot} (PostgreSQL 13/14 report it \
                 only over SQL): {e}; WAL the slot retained before now may not be archived \
                 (hint: let this role connect to the database named in --db)"
            );
            None
        }
    }
}
