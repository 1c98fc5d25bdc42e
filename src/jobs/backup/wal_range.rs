//! The WAL a base backup needs, streamed alongside it through a temporary
//! slot: the slot is created before BASE_BACKUP starts, so the server keeps
//! every segment from the backup's start; streaming starts at the segment of
//! the backup's start LSN as soon as the server reports it, and segments are
//! archived as they complete. The backup is not called complete until its
//! range is archived.
//!
//! The range ends at the backup's end LSN. On a primary, the server switches
//! to a new segment right after it, so the last segment completes at once
//! and is awaited whole. A standby cannot switch segments: its backup ends
//! inside a segment that only completes when the primary writes on (never,
//! on an idle primary). There, once everything up to the end LSN has
//! arrived and the segment has stayed incomplete for `COMPLETE_GRACE` (2 s), its
//! tail is stored as a `.partial` (which `wal fetch` serves zero-padded)
//! and the range counts as archived.

use std::time::Duration;

use tokio::sync::watch;

use crate::jobs::wal::segment::SegmentAssembler;
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::Lsn;
use crate::pg::wire::{ReplEvent, WireClient, WireError};
use crate::repo::wal_archive::{WalArchive, WalError};

/// How long the last segment may stay incomplete, once everything up to the
/// backup's end LSN has arrived, before its tail is stored as a `.partial`.
const COMPLETE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error(transparent)]
    Repl(#[from] WireError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Assembly(#[from] crate::jobs::wal::segment::AssemblyError),
    #[error("the server ended timeline {0} while the backup's WAL was being streamed: take the backup again")]
    TimelineEnded(u32),
}

/// A connection holding a temporary slot, ready to stream.
pub struct RangeStreamer {
    client: WireClient,
    slot: String,
    /// The server is a standby: its backup may end inside a segment that
    /// only the primary can complete. A primary switches segments at the
    /// end of a backup, so there the last segment is always awaited whole.
    standby: bool,
}

/// Where the range begins, as BASE_BACKUP reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeStart {
    pub lsn: Lsn,
    pub tli: u32,
}

impl RangeStreamer {
    /// Connect and create the temporary slot (it reserves WAL at once, from
    /// the last checkpoint's or restartpoint's redo LSN: at or before any
    /// backup started afterwards).
    pub async fn prepare(ci: &ConnInfo) -> Result<RangeStreamer, RangeError> {
        let mut client = WireClient::connect(ci, "pgtide backup wal").await?;
        let slot = format!(
            "pgtide_backup_{}_{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        client.create_physical_slot(&slot, true, true).await?;
        // Read-only transactions are forced during recovery (a primary with
        // default_transaction_read_only = on is taken for a standby, which
        // only means its last segment may be stored as a .partial).
        let standby = client.show("transaction_read_only").await? == "on";
        Ok(RangeStreamer {
            client,
            slot,
            standby,
        })
    }

    /// Wait for the backup's start (`start`), then archive WAL until the
    /// archive holds everything up to the end LSN (`until`; `None` while
    /// unknown). `archived` reports how far the archive holds the range (the
    /// end of the last complete segment, or of the stored `.partial`).
    /// Returns when that reaches the end LSN, or when the backup gives up
    /// (its senders are dropped).
    pub async fn run(
        mut self,
        archive: WalArchive,
        mut start: watch::Receiver<Option<RangeStart>>,
        mut until: watch::Receiver<Option<Lsn>>,
        archived: watch::Sender<Lsn>,
    ) -> Result<(), RangeError> {
        let seg_size = archive.seg_size();
        let range_start = loop {
            if let Some(s) = *start.borrow() {
                break s;
            }
            if start.changed().await.is_err() {
                return Ok(());
            }
        };
        let first = range_start.lsn.segment_start(seg_size);
        tracing::debug!(slot = %self.slot, start = %first, tli = range_start.tli, "streaming the backup's WAL");
        self.client
            .start_physical(Some(&self.slot), first, range_start.tli)
            .await?;
        let mut asm = SegmentAssembler::new(first, range_start.tli, seg_size);
        let mut flushed = first;
        // When everything up to the end LSN had arrived with the last
        // segment still incomplete.
        let mut reached_end_at: Option<tokio::time::Instant> = None;
        loop {
            let end = *until.borrow();
            if let Some(end) = end {
                if *archived.borrow() >= end {
                    return Ok(());
                }
                if self.standby && asm.next_lsn() >= end {
                    let since = *reached_end_at.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= COMPLETE_GRACE {
                        if let Some((name, data)) = asm.partial() {
                            archive.push_partial(&name, data).await?;
                            flushed = asm.next_lsn();
                            archived.send_replace(flushed);
                            tracing::info!(segment = %name, end = %end, "the backup ends inside a segment the server has not completed: its tail is archived as a .partial");
                        }
                        continue;
                    }
                }
            }
            let wait = match reached_end_at {
                Some(t) => COMPLETE_GRACE.saturating_sub(t.elapsed()),
                None => Duration::from_secs(5),
            };
            let ev = tokio::select! {
                ev = self.client.recv_timeout(wait) => ev?,
                // The end LSN became known, or the backup gave up (its
                // sender is gone): look again.
                r = until.changed() => match r {
                    Ok(()) => continue,
                    Err(_) => return Ok(()),
                },
            };
            match ev {
                Some(ReplEvent::XLogData { start, data, .. }) => {
                    for seg in asm.push(start, &data)? {
                        archive.push(&seg.name, seg.data).await?;
                        flushed = asm.next_lsn().segment_start(seg_size);
                        archived.send_replace(flushed);
                        reached_end_at = None;
                    }
                }
                Some(ReplEvent::Keepalive {
                    reply_requested, ..
                }) => {
                    if reply_requested {
                        self.client
                            .send_status(asm.next_lsn(), flushed, Lsn::INVALID, false)
                            .await?;
                    }
                }
                Some(ReplEvent::EndOfTimeline { .. }) => {
                    return Err(RangeError::TimelineEnded(asm.timeline()))
                }
                None => {
                    self.client
                        .send_status(asm.next_lsn(), flushed, Lsn::INVALID, false)
                        .await?;
                }
            }
        }
    }
}
