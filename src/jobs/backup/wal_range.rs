//! The WAL a base backup needs, streamed alongside it through a temporary
//! slot: the slot is created before BASE_BACKUP starts, so the server keeps
//! every segment from the backup's start; segments are archived as they
//! complete. The backup is not called complete until its range is archived.

use std::time::Duration;

use tokio::sync::watch;

use crate::jobs::wal::segment::SegmentAssembler;
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::Lsn;
use crate::pg::replication::{ReplError, ReplEvent, ReplicationClient};
use crate::repo::wal_archive::{WalArchive, WalError};

#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error(transparent)]
    Repl(#[from] ReplError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Assembly(#[from] crate::jobs::wal::segment::AssemblyError),
    #[error("the server ended timeline {0} while the backup's WAL was being streamed: take the backup again")]
    TimelineEnded(u32),
}

/// A connection holding a temporary slot, ready to stream.
pub struct RangeStreamer {
    client: ReplicationClient,
    start: Lsn,
    tli: u32,
}

impl RangeStreamer {
    /// Connect and create the temporary slot (it reserves WAL at once).
    pub async fn prepare(
        ci: &ConnInfo,
        tli: u32,
        seg_size: u64,
    ) -> Result<RangeStreamer, RangeError> {
        let mut client = ReplicationClient::connect(ci, "pgtide backup wal").await?;
        let slot = format!(
            "pgtide_backup_{}_{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        let lsn = client.create_physical_slot(&slot, true, true).await?;
        // 13-14 cannot report the slot's start: the server's position right
        // after creating it is at or after it, and before the backup's start.
        let lsn = match lsn {
            Some(l) => l,
            None => client.identify_system().await?.xlogpos,
        };
        let start = lsn.segment_start(seg_size);
        client.start_physical(Some(&slot), start, tli).await?;
        Ok(RangeStreamer { client, start, tli })
    }

    /// Archive complete segments until segment `until` (watched; `u64::MAX`
    /// while unknown) is archived. Reports the last archived segment number.
    pub async fn run(
        mut self,
        archive: WalArchive,
        mut until: watch::Receiver<u64>,
        archived: watch::Sender<Option<u64>>,
    ) -> Result<(), RangeError> {
        let seg_size = archive.seg_size();
        let mut asm = SegmentAssembler::new(self.start, self.tli, seg_size);
        let mut flushed = self.start;
        loop {
            if archived.borrow().is_some_and(|s| s >= *until.borrow()) {
                return Ok(());
            }
            let ev = tokio::select! {
                ev = self.client.recv_timeout(Duration::from_secs(5)) => ev?,
                // The backup gave up (its sender is gone): stop with it.
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
                        archived.send_replace(Some(seg.segno));
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
                    return Err(RangeError::TimelineEnded(self.tli))
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
